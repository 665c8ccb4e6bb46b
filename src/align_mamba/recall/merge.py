"""Merge one GPU allocation's pack into a study folder, refusing anything that is not a whole GPU cell.

`python -m align_mamba.recall.merge --pack DIR --study results/study [--allocation N]`

DIR is what `tools/gpu_allocation.sh pack DIR` wrote: `allocation.tgz` (the scratch copy's
`results/cells/**.json`, training summaries and logs) and `allocation.log`. Every metrics file and
confirm file in the archive is checked before anything is written:
- it parses as this code's schema (`CellMetrics`, `Confirm`), with accuracies in [0, 1];
- its cell is a cell of the study's `params.yaml`, with the same model and training settings (a pack
  from an older preset whose settings differ is refused, never merged under a new id);
- it was trained and evaluated on a GPU with the `kernels` backend (the study's cells all are);
- a file already in the study is either byte-identical (skipped) or a conflict (refused).
Then the files go into `STUDY/cells/` (each written atomically), and `STUDY/allocations/N/` keeps
`runs.tgz` (the archive), `allocation.log`, and `setup.txt` and `cells_asked.txt` where the pack
has them (in DIR or as the archive's `logs/setup.txt` and `logs/cells.txt`). Plan the next
allocation and regenerate the report afterwards; the last lines printed give both commands.

Worked example: a pack holding `results/cells/mamba2/np64-ds64-lr0.01-s0.json` from an H200 merges
into `results/study/cells/mamba2/np64-ds64-lr0.01-s0.json` and `results/study/allocations/7/`;
the same pack merged again changes nothing; a pack holding that cell with another accuracy stops
with one line naming the file, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from align_mamba.core.atomic import atomic_write_bytes
from align_mamba.core.cli import OneLineParser, setup_logging
from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.recall.metrics import CellMetrics, Confirm
from align_mamba.recall.params import CONFIRM_FILE_SUFFIX, Cell, load_recall_params

log = logging.getLogger("align_mamba.recall.merge")
CELLS_PREFIX = "results/cells/"


@dataclass(frozen=True)
class PackedFile:
    """One metrics or confirm file of a pack: its path under cells/ and its bytes."""

    relative: str  # e.g. mamba2/np64-ds64-lr0.01-s0.json
    data: bytes


def read_pack(archive: Path) -> tuple[list[PackedFile], dict[str, bytes]]:
    """(the cells' JSON files, the logs' setup.txt / cells.txt if present) of allocation.tgz."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            files, extras = [], {}
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                name = member.name.removeprefix("./")
                if name.startswith(CELLS_PREFIX) and name.endswith(".json"):
                    relative = name[len(CELLS_PREFIX) :]
                    if ".." in Path(relative).parts:
                        raise DataIntegrityError(f"{archive}: a member path leaves the cells folder: {name}")
                    files.append(PackedFile(relative, tar.extractfile(member).read()))
                elif name in ("logs/setup.txt", "logs/cells.txt"):
                    extras[Path(name).name] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as err:
        raise DataIntegrityError(f"{archive}: not a readable gzip tar archive ({err})") from None
    return sorted(files, key=lambda f: f.relative), extras


def _gpu_metrics(metrics: CellMetrics, where: str) -> None:
    for stage, backend, device in (
        ("trained", metrics.train_backend, metrics.train_device),
        ("evaluated", metrics.backend, metrics.device),
    ):
        if backend != "kernels" or not device.startswith("cuda"):
            raise DataIntegrityError(
                f"{where}: {stage} with backend {backend!r} on {device!r}; a study cell runs the kernels on a GPU"
            )


def parse(relative: str, raw: bytes, where: str) -> tuple[str, CellMetrics | None, int, str]:
    """(cell id, metrics, budget factor, reason) of a metrics or confirm file named `relative` under
    cells/; metrics None: a confirm that decided no rerun was needed (its reason says why)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataIntegrityError(f"{where}: not JSON ({err})") from None
    if relative.endswith(CONFIRM_FILE_SUFFIX):
        confirm = Confirm.from_json(data, where)
        return relative[: -len(CONFIRM_FILE_SUFFIX)], confirm.metrics, confirm.budget_factor, confirm.reason
    return relative[: -len(".json")], CellMetrics.from_json(data, where), 1, ""


def check_file(packed: PackedFile, cells: dict[str, Cell], where: str) -> None:
    """Raise unless `packed` is a whole GPU metrics (or confirm) file of one of `cells`."""
    cell_id, metrics, budget, _ = parse(packed.relative, packed.data, where)
    cell = cells.get(cell_id)
    if cell is None:
        raise ConfigError(f"{where}: {cell_id} is not a cell of the study's params.yaml")
    if metrics is None:
        return  # a confirm that decided no rerun was needed: nothing was trained
    if metrics.cell.id != cell_id:
        raise DataIntegrityError(f"{where}: the file is named for {cell_id} but holds cell {metrics.cell.id}")
    # a confirm's rerun is the cell at `budget` times its steps, nothing else changed
    train = dataclasses.replace(cell.train, steps=cell.train.steps * budget)
    if metrics.cell.model != cell.model or metrics.cell.train != train:
        raise ConfigError(
            f"{where}: trained with other settings than the study's {cell_id} (a pack of another preset?)"
        )
    _gpu_metrics(metrics, where)


def describe(packed: PackedFile) -> str:
    """One line on a merged file: its cell, test and best validation accuracy, steps trained."""
    _, m, _, reason = parse(packed.relative, packed.data, packed.relative)
    name = packed.relative.removesuffix(".json")
    if m is None:
        return f"{name}: no 2x rerun ({reason})"
    return f"{name}: test {m.accuracy:.3f}, validation {m.val_accuracy:.3f}, {m.steps_trained} steps ({m.stop_reason})"


def _as_ids(cells_txt: bytes) -> bytes:
    """logs/cells.txt's `results/cells/ARCH/STEM.json` lines as cell ids, `ARCH/STEM`."""
    lines = cells_txt.decode().split()
    return "".join(f"{line.removeprefix(CELLS_PREFIX).removesuffix('.json')}\n" for line in lines).encode()


def next_allocation(study: Path) -> int:
    numbers = [int(p.name) for p in (study / "allocations").glob("*") if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=0) + 1


def merge(pack: Path, study: Path, allocation: int | None = None) -> tuple[list[str], list[str], Path]:
    """Merge `pack` into `study`. Returns (files added, files already there, the allocation folder)."""
    archive = pack / "allocation.tgz"
    for required in (archive, pack / "allocation.log", study / "params.yaml"):
        if not required.is_file():
            raise ConfigError(f"no {required}")
    cells = {cell.id: cell for cell in load_recall_params(study / "params.yaml").cells}
    files, extras = read_pack(archive)
    if not files:
        raise DataIntegrityError(f"{archive}: no metrics files under {CELLS_PREFIX} (nothing finished?)")
    added, present = [], []
    for packed in files:
        where = f"{archive}:{CELLS_PREFIX}{packed.relative}"
        check_file(packed, cells, where)
        target = study / "cells" / packed.relative
        if target.is_file():
            if target.read_bytes() != packed.data:
                raise DataIntegrityError(f"{where} differs from {target}, already in the study; nothing was merged")
            present.append(packed.relative)
        else:
            added.append(packed.relative)
    number = allocation if allocation is not None else next_allocation(study)
    folder = study / "allocations" / str(number)
    if added and folder.exists():
        raise ConfigError(f"{folder} exists: name another allocation with --allocation")
    by_name = {f.relative: f for f in files}
    for relative in added:
        atomic_write_bytes(study / "cells" / relative, by_name[relative].data)
    if added:
        folder.mkdir(parents=True)
        shutil.copyfile(archive, folder / "runs.tgz")
        shutil.copyfile(pack / "allocation.log", folder / "allocation.log")
        for name, asked_name in (("setup.txt", "setup.txt"), ("cells_asked.txt", "cells.txt")):
            if (pack / name).is_file():
                shutil.copyfile(pack / name, folder / name)
            elif asked_name in extras:
                atomic_write_bytes(
                    folder / name, _as_ids(extras[asked_name]) if name == "cells_asked.txt" else extras[asked_name]
                )
    return added, present, folder


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.recall.merge", description=__doc__.split("\n")[0])
    parser.add_argument("--pack", required=True, type=Path, help="the folder `tools/gpu_allocation.sh pack` wrote")
    parser.add_argument(
        "--study", required=True, type=Path, help="the study folder (params.yaml, cells/, allocations/)"
    )
    parser.add_argument("--allocation", type=int, help="the allocation's number (default: the next free one)")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    added, present, folder = merge(args.pack, args.study, args.allocation)
    confirms = sum(name.endswith(CONFIRM_FILE_SUFFIX) for name in added)
    if not added:
        log.info("nothing new: all %d file(s) of the pack are already in %s", len(present), args.study)
        return 0
    log.info(
        "merged %d metrics file(s) and %d confirm file(s) into %s/cells (%d already there); the pack is kept in %s",
        len(added) - confirms,
        confirms,
        args.study,
        len(present),
        folder,
    )
    for relative in added:
        log.info("  %s", describe(PackedFile(relative, (args.study / "cells" / relative).read_bytes())))
    s = args.study
    print(
        f"next: python -m align_mamba.recall.schedule --params {s}/params.yaml --cells {s}/cells "
        f"--order {s}/queue.txt --out {s}/queue.txt\n"
        f"      python -m align_mamba.report --params {s}/params.yaml --cells {s}/cells --out {s} --partial"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
