"""The learning rate chosen on validation, as Zoology reports MQAR: best over rates, per cell.

Grid entries that build the same model and differ only in training settings (an entry's own `lr`)
form a *family*. Per (family, num_pairs, d_state, seed), the member with the highest validation
accuracy (`best_val_accuracy`, measured on the validation split during training) is kept and its
test accuracy reported. The test split never takes part in the choice. Selecting per seed and then
averaging keeps the seeds' spread as the interval, as for every other row of the report.
"""

from __future__ import annotations

import pandas as pd

from align_mamba.report import tables

CELL = ["family", "num_pairs", "d_state", "seed"]


def family_names(cells: pd.DataFrame) -> dict[str, str]:
    """model_key → its shortest member name, for families of ≥ 2 entries."""
    members = cells.groupby("model_key")["architecture"].unique()
    return {key: min(sorted(names), key=len) for key, names in members.items() if len(names) >= 2}


def family_labels(cells: pd.DataFrame) -> dict[str, str]:
    """model_key → "<shortest member name> (best of N on validation)", for families of ≥ 2 entries."""
    sizes = cells.groupby("model_key")["architecture"].nunique()
    return {key: f"{name} (best of {sizes[key]} on validation)" for key, name in family_names(cells).items()}


def select_on_validation(cells: pd.DataFrame) -> pd.DataFrame:
    """The chosen cells: one row per (family, num_pairs, d_state, seed) that some member ran.

    Adds `family` (its label), `family_name` (its shortest member name) and `compared` (members that
    ran this seed). Ties on validation accuracy go to the first architecture name in sort order.
    Empty when no family exists.
    """
    labels = family_labels(cells)
    rows = cells[cells["model_key"].isin(list(labels))]
    if rows.empty:
        return rows.assign(family=pd.Series(dtype=str), family_name=pd.Series(dtype=str),
                           compared=pd.Series(dtype=int))
    rows = rows.assign(family=rows["model_key"].map(labels), family_name=rows["model_key"].map(family_names(cells)))
    ordered = rows.sort_values(["best_val_accuracy", "architecture"], ascending=[False, True], kind="stable")
    chosen = ordered.groupby(CELL, sort=False).head(1)
    compared = rows.groupby(CELL).size().rename("compared").reset_index()
    return chosen.merge(compared, on=CELL).sort_values(CELL, ignore_index=True)


def _chosen_text(group: pd.DataFrame) -> str:
    """`mamba2-lr1e-2 (lr 0.01) ×2, mamba2 (lr 0.001) ×1`: which member won how many seeds."""
    counts = group.groupby(["architecture", "lr"], dropna=False).size().sort_values(ascending=False, kind="stable")
    return ", ".join(f"{arch} (lr {'—' if pd.isna(lr) else f'{lr:g}'}) ×{n}" for (arch, lr), n in counts.items())


def selection_display(chosen: pd.DataFrame) -> pd.DataFrame:
    """Per (family, num_pairs, d_state): test accuracy of the chosen cells, mean ± CI over seeds,
    with the winners and how many members each seed compared."""
    rows = []
    for (family, num_pairs, d_state), group in chosen.groupby(CELL[:-1], sort=True):
        rows.append({"family": family, "num_pairs": num_pairs, "d_state": d_state,
                     "test accuracy (mean ± 95% CI)": tables.format_mean_ci(*tables.mean_ci(group["accuracy"])),
                     "validation accuracy (mean)": f"{group['best_val_accuracy'].mean():.3f}",
                     "chosen (seeds)": _chosen_text(group),
                     "members compared": ", ".join(str(n) for n in sorted(set(group["compared"])))})
    return pd.DataFrame(rows)


def _family_capacity(chosen: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """capacity_table of the chosen cells, the family label standing in for the architecture."""
    return tables.capacity_table(tables.summarize(chosen.assign(architecture=chosen["family"])), threshold)


def family_capacity(chosen: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The capacity table of the chosen cells, formatted, one family standing in for its members."""
    return tables.capacity_display(_family_capacity(chosen, threshold), threshold)


def family_metrics(chosen: pd.DataFrame, threshold: float) -> dict[str, int]:
    """`capacity.<shortest member>-best-lr.ds<d>` for `dvc exp show` (0 = none), beside the members' own."""
    short = dict(zip(chosen["family"], chosen["family_name"]))
    capacity = _family_capacity(chosen, threshold)
    return {f"capacity.{short[family]}-best-lr.ds{d_state}": int(cap)
            for family, d_state, cap in capacity[["architecture", "d_state", "capacity"]].values}
