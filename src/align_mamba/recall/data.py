"""Command line: ``python -m align_mamba.recall.data --out DIR --num-pairs N (--seq-len L | --seq-len-per-pair K) ...``

Flags take either spelling, ``--num-pairs`` or ``--num_pairs`` (the second is how DVC unpacks
params.yaml keys).
"""

from __future__ import annotations

import logging
import sys

from align_mamba.core.cli import OneLineParser, flag_names, parse_with_params, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.core.lock import output_lock
from align_mamba.recall.mqar import FILLERS, LAYOUTS, SPLITS, MQARConfig
from align_mamba.recall.params import load_recall_params
from align_mamba.recall.storage import write_mqar

log = logging.getLogger("align_mamba.recall.data")


def _build_parser() -> OneLineParser:
    mqar = OneLineParser(
        prog="python -m align_mamba.recall.data",
        description="Generate a multi-query associative recall (MQAR) dataset.",
    )

    def option(name: str, **kwargs) -> None:
        mqar.add_argument(*flag_names(name), dest=name, **kwargs)

    option("out", required=True, help="dataset directory (replaced if it holds a dataset)")
    option("num_pairs", type=int, required=True, help="key-value pairs per example (N)")
    length = mqar.add_mutually_exclusive_group(required=True)
    length.add_argument(*flag_names("seq_len"), dest="seq_len", type=int, help="decoder-layout sequence length (L)")
    length.add_argument(
        *flag_names("seq_len_per_pair"),
        dest="seq_len_per_pair",
        type=int,
        help="L = this × N (the Mamba-2 paper uses 4)",
    )
    option(
        "num_queries",
        type=MQARConfig.parse_num_queries,
        default=16,
        help="queries per example (M), or 'all' for M = N (default 16)",
    )
    option(
        "num_keys",
        type=int,
        default=None,
        help="distinct keys (and values): a vocabulary of 10+2K tokens (default: the full 8192)",
    )
    option("filler", default="pad", help=f"non-query positions: {' or '.join(FILLERS)}")
    option("power_a", type=float, default=0.01, help="gap power law exponent (default 0.01)")
    option("train_size", type=int, required=True)
    option("val_size", type=int, required=True)
    option("test_size", type=int, required=True)
    option("seed", type=int, required=True)
    option("layouts", nargs="+", default=list(LAYOUTS), help=f"any of {' '.join(LAYOUTS)}")
    return mqar


def _settings(args) -> dict:
    """The flags' values from params.yaml's `data:` section (see align_mamba.recall.params.DataSettings)."""
    data = load_recall_params(args.params).data
    return {
        "seq_len_per_pair": data.seq_len_per_pair,
        "filler": data.filler,
        "power_a": data.power_a,
        "num_queries": None if data.num_queries == "all" else data.num_queries,
        "num_keys": data.num_keys,
        "train_size": data.train_size,
        "val_size": data.val_size,
        "test_size": data.test_size,
        "seed": data.seed,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, validate the config, write the dataset and log a one-line summary."""
    args = parse_with_params(_build_parser(), argv, _settings)
    setup_logging(args.log)
    if args.seq_len_per_pair is not None and args.seq_len_per_pair < 1:
        raise ConfigError(f"seq_len_per_pair must be >= 1, got {args.seq_len_per_pair}")
    seq_len = args.seq_len if args.seq_len is not None else args.seq_len_per_pair * args.num_pairs
    config = MQARConfig(
        num_pairs=args.num_pairs,
        seq_len=seq_len,
        num_queries=args.num_queries,
        num_keys=args.num_keys,
        filler=args.filler,
        power_a=args.power_a,
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        seed=args.seed,
        layouts=tuple(args.layouts),
    )
    with output_lock(args.out):
        out = write_mqar(config, args.out)
    counts = ", ".join(f"{split}={config.split_size(split)}" for split in SPLITS)
    log.info(
        "wrote MQAR dataset to %s: %s examples, N=%d, M=%d, L=%d, layouts=%s",
        out,
        counts,
        config.num_pairs,
        config.queries_per_example,
        config.seq_len,
        ",".join(config.layouts),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
