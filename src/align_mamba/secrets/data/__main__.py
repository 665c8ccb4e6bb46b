"""``python -m align_mamba.secrets.data``: write a secret-span dataset; flags mirror SecretDataConfig's fields.

Every flag takes either spelling (``--train-files`` or ``--train_files``, the second is how DVC
unpacks params.yaml keys). Example::

    python -m align_mamba.secrets.data --out data/secrets --seed 0 --train-files 200 --val-files 40 \\
        --test-files 40 --unseen-files 40 --decoy-files 40 --length-buckets 1024 8192 65536 1048576 \\
        --train-max-length 8192 --heldout-formats gitlab_pat stripe_live --secrets-per-file 1 4 --decoys-per-file 2 \\
        --hard-fraction 0.25
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
import logging
import sys
from pathlib import Path

from align_mamba.core.cli import OneLineParser, flag_names, parse_with_params, setup_logging
from align_mamba.core.errors import run_cli
from align_mamba.core.lock import output_lock
from align_mamba.secrets.data.config import SECRET_SPLITS, SecretDataConfig
from align_mamba.secrets.data.formats import FORMAT_NAMES
from align_mamba.secrets.data.kinds import CARRIER_KINDS
from align_mamba.secrets.data.storage import read_secret_manifest, write_secret_dataset

log = logging.getLogger("align_mamba.secrets.data")

_FIELDS = tuple(f.name for f in dataclasses.fields(SecretDataConfig))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SecretDataConfig) if f.default is not dataclasses.MISSING}
_COUNTS = ("train_files", "val_files", "test_files", "unseen_files", "decoy_files", "decoys_per_file")


def _build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m align_mamba.secrets.data",
                           description="Secret-span files: carriers with planted secrets and decoys.")

    def option(name: str, **kwargs) -> None:
        if name in _DEFAULTS:
            default = _DEFAULTS[name]
            kwargs.setdefault("default", list(default) if isinstance(default, tuple) else default)
            kwargs["help"] = f"{kwargs.get('help', '')} (default %(default)s)".strip()
        parser.add_argument(*flag_names(name), dest=name, **kwargs)

    option("out", type=Path, required=True, help="dataset directory (replaced if it holds a secrets dataset)")
    option("seed", type=int, required=True)
    for name in _COUNTS:
        option(name, type=int)
    option("length_buckets", type=int, nargs="+", help="target file lengths in bytes")
    option("train_max_length", type=int, help="train/validation use only length buckets <= this")
    option("length_jitter", type=float, help="file length within ±this fraction of its bucket")
    option("secrets_per_file", type=int, nargs=2, metavar=("MIN", "MAX"))
    option("hard_fraction", type=float, help="probability that a secret is written as a hard case (split, encoded)")
    option("heldout_formats", nargs="*", help=f"formats only in test_unseen, any of {' '.join(FORMAT_NAMES)}")
    option("kinds", nargs="+", help=f"carrier kinds, any of {' '.join(CARRIER_KINDS)}")
    return parser


def _settings(args) -> dict:
    from align_mamba.secrets.settings import load_secrets

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(load_secrets(args.params).data).items()}


def main(argv: list[str] | None = None) -> int:
    """Validate the flags as a SecretDataConfig, write the dataset and log a one-line summary."""
    args = parse_with_params(_build_parser(), argv, _settings)
    setup_logging(args.log)
    config = SecretDataConfig(**{name: getattr(args, name) for name in _FIELDS})
    with output_lock(args.out):
        out = write_secret_dataset(config, args.out)
    splits = read_secret_manifest(out)["splits"]
    counts = ", ".join(f"{split}={splits[split]['files']} files/{splits[split]['bytes'] / 1e6:.2f} MB/"
                       f"{splits[split]['spans']} spans ({splits[split]['hard_spans']} hard)"
                       for split in SECRET_SPLITS)
    log.info("wrote secret-span dataset to %s: %s; %d in-distribution formats, held out: %s", out, counts,
             len(config.train_formats), ", ".join(config.heldout_formats) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
