"""The study's tables, and one writer that emits each table as CSV, Markdown and LaTeX.

CSV keeps full precision for machines; Markdown and LaTeX round floats for people. The LaTeX
is a self-contained booktabs ``table`` environment meant to be ``\\input`` into a paper that
loads ``booktabs``. A missing value is a dash, or, in a cell a table marks as having no ground
truth (a cue metric of a corpus without planted cues), `NO_PLANTED_CUES`; the CSV keeps NaN.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gendiag.evaluate.metrics import CI_COLUMNS
from gendiag.evaluate.operating import OPERATING_METRICS, RETUNED_COLUMNS
from gendiag.io import write_csv, write_text

KEY_COLUMNS: tuple[str, ...] = ("arch", "recipe", "paradigm", "seed", "testset")
NO_PLANTED_CUES = "n/a (no planted cues)"
CROSS_DATASET_COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS,
    "in_domain",
    "n",
    "f1",
    "f1_ci_low",
    "f1_ci_high",
    "precision",
    "recall",
    "accuracy",
    "auroc",
    *(c for c in CI_COLUMNS if not c.startswith("f1_")),
)
# Operating-point and calibration metrics (`evaluate_predictions(..., operating=True, val=...)`): each
# metric next to its interval, then the re-tuned threshold's F1; in this order when present.
OPERATING_COLUMNS: tuple[str, ...] = (
    *(c for m in OPERATING_METRICS for c in (m, f"{m}_ci_low", f"{m}_ci_high")),
    "f1_retuned", "f1_retuned_ci_low", "f1_retuned_ci_high",
    *(c for c in RETUNED_COLUMNS if not c.startswith("f1_retuned")),
)
GAP_COLUMNS: tuple[str, ...] = (
    "arch",
    "paradigm",
    "specialist",
    "generalist",
    "n_testsets_out_of_domain",
    "specialist_ood_f1",
    "generalist_ood_f1",
    "delta_f1",
    "specialist_in_domain_f1",
    "generalist_in_domain_f1",
)


def cross_dataset_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The cross-dataset generalisation matrix in long form: one row per model run x test set.

    Each dict holds the identifiers in `KEY_COLUMNS`, ``in_domain`` (was the test set drawn from
    the corpora the recipe trains on) and the output of `evaluate_predictions`. Columns follow
    `CROSS_DATASET_COLUMNS`, then the `OPERATING_COLUMNS` the rows have (NaN in a row without
    them, e.g. the re-tuned F1 of a test set whose corpus has no validation split); any other
    keys are kept, after them, in alphabetical order.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("cross_dataset_table needs at least one row; got none")
    for i, row in enumerate(rows):
        missing = [c for c in CROSS_DATASET_COLUMNS if c not in row]
        if missing:
            ident = {k: row[k] for k in KEY_COLUMNS if k in row}
            raise ValueError(
                f"row {i} {ident} is missing key(s) {missing}; every row needs "
                f"{list(CROSS_DATASET_COLUMNS)}"
            )
    df = pd.DataFrame(rows)
    dup = df.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        shown = df.loc[dup, list(KEY_COLUMNS)].drop_duplicates().head(5).to_dict("records")
        raise ValueError(
            f"{int(dup.sum())} rows share their ({', '.join(KEY_COLUMNS)}) with another row, "
            f"e.g. {shown}; each model run must be evaluated once per test set"
        )
    operating = [c for c in OPERATING_COLUMNS if c in df.columns]
    extras = sorted(c for c in df.columns if c not in CROSS_DATASET_COLUMNS and c not in OPERATING_COLUMNS)
    df = df[[*CROSS_DATASET_COLUMNS, *operating, *extras]]
    df = df.astype({"in_domain": bool, "n": int, "seed": int})
    return df.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


def _mean_f1_per_testset(rows: pd.DataFrame, testsets: list[str]) -> float:
    """Mean over test sets of the mean over seeds, so a missing seed does not reweight test sets."""
    if not testsets:
        return math.nan
    per_testset = rows[rows["testset"].isin(testsets)].groupby("testset")["f1"].mean()
    return float(per_testset.mean())


def generalisation_gap_table(cross: pd.DataFrame, specialist: str, generalist: str) -> pd.DataFrame:
    """Specialist vs generalist recipe, out of domain and in domain, per (arch, paradigm).

    Out of domain means the test sets on which the specialist's rows have ``in_domain`` False;
    both recipes are scored on those same test sets, so ``delta_f1 = generalist - specialist``
    isolates the effect of the training data. In-domain F1 is the mean over the specialist's
    in-domain test sets. Every F1 is a mean over test sets of the mean over seeds.
    (arch, paradigm) pairs where either recipe is absent (the zero-shot baseline) are skipped.
    """
    missing = [c for c in (*KEY_COLUMNS, "in_domain", "f1") if c not in cross.columns]
    if missing:
        raise ValueError(f"cross-dataset table is missing column(s) {missing}; got {list(cross.columns)}")
    if specialist == generalist:
        raise ValueError(f"specialist and generalist must be different recipes; got {specialist!r} twice")
    present = sorted(cross["recipe"].unique())
    for role, recipe in (("specialist", specialist), ("generalist", generalist)):
        if recipe not in present:
            raise ValueError(
                f"{role} recipe {recipe!r} is not in the cross-dataset table; recipes: {present}"
            )

    out = []
    for (arch, paradigm), group in cross.groupby(["arch", "paradigm"], sort=True):
        spec = group[group["recipe"] == specialist]
        gen = group[group["recipe"] == generalist]
        if spec.empty or gen.empty:
            continue
        in_domain_flags = spec.groupby("testset")["in_domain"].agg(["min", "max"])
        inconsistent = in_domain_flags.index[in_domain_flags["min"] != in_domain_flags["max"]]
        if len(inconsistent):
            raise ValueError(
                f"{arch}/{specialist}/{paradigm}: in_domain differs between seeds on test set(s) "
                f"{list(inconsistent)}"
            )
        ood = sorted(in_domain_flags.index[~in_domain_flags["max"].astype(bool)])
        ind = sorted(in_domain_flags.index[in_domain_flags["max"].astype(bool)])
        absent = sorted(set(ood + ind) - set(gen["testset"]))
        if absent:
            raise ValueError(
                f"{arch}/{generalist}/{paradigm} was not evaluated on test set(s) {absent} that "
                f"{specialist} was; both recipes must be scored on the same test sets"
            )
        spec_ood = _mean_f1_per_testset(spec, ood)
        gen_ood = _mean_f1_per_testset(gen, ood)
        out.append(
            {
                "arch": arch,
                "paradigm": paradigm,
                "specialist": specialist,
                "generalist": generalist,
                "n_testsets_out_of_domain": len(ood),
                "specialist_ood_f1": spec_ood,
                "generalist_ood_f1": gen_ood,
                "delta_f1": gen_ood - spec_ood,
                "specialist_in_domain_f1": _mean_f1_per_testset(spec, ind),
                "generalist_in_domain_f1": _mean_f1_per_testset(gen, ind),
            }
        )
    if not out:
        raise ValueError(
            f"no (arch, paradigm) has both {specialist!r} and {generalist!r} rows; "
            f"nothing to compare"
        )
    return pd.DataFrame(out, columns=list(GAP_COLUMNS))


SEED_SUMMARY_COLUMNS: tuple[str, ...] = (
    "arch", "recipe", "paradigm", "testset", "in_domain", "n_seeds", "f1_mean", "f1_seed_ci_low",
    "f1_seed_ci_high", "f1_std", "f1_bootstrap_ci_low", "f1_bootstrap_ci_high",
)


def seed_summary_table(cross: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per model and test set: F1 over seeds (mean, std, t-interval) next to the bootstrap interval.

    The two intervals answer different questions: the seed interval is how much F1 moves when the
    model is retrained, the bootstrap interval (averaged over seeds) how much it moves with another
    sample of test messages. One seed has no seed interval (NaN), never a zero-width one.
    """
    from gendiag.evaluate.significance import seed_summary

    missing = [c for c in (*KEY_COLUMNS, "in_domain", "f1", "f1_ci_low", "f1_ci_high") if c not in cross.columns]
    if missing:
        raise ValueError(f"cross-dataset table is missing column(s) {missing}; got {list(cross.columns)}")
    rows = []
    for (arch, recipe, paradigm, testset), group in cross.groupby(["arch", "recipe", "paradigm", "testset"],
                                                                   sort=True):
        stats = seed_summary(group["f1"].to_numpy(), confidence)
        rows.append({"arch": arch, "recipe": recipe, "paradigm": paradigm, "testset": testset,
                     "in_domain": bool(group["in_domain"].iloc[0]), "n_seeds": int(stats["n"]),
                     "f1_mean": stats["mean"], "f1_seed_ci_low": stats["ci_low"], "f1_seed_ci_high": stats["ci_high"],
                     "f1_std": stats["std"], "f1_bootstrap_ci_low": float(group["f1_ci_low"].mean()),
                     "f1_bootstrap_ci_high": float(group["f1_ci_high"].mean())})
    return pd.DataFrame(rows, columns=list(SEED_SUMMARY_COLUMNS))


# --- writers -----------------------------------------------------------------------------------

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def counted(n: Any, noun: str) -> str:
    """'1 pair', '3 pairs': a count with its noun, as figures and the summary write it."""
    return f"{int(n)} {noun}" + ("" if int(n) == 1 else "s")


def _is_missing(value: Any) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _format_cell(value: Any, float_format: str, missing: str) -> str:
    if _is_missing(value):
        return missing
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return float_format.format(float(value))
    return str(value)


def _missing_texts(df: pd.DataFrame, default: str,
                   no_ground_truth: Mapping[str, Sequence[bool]] | None) -> list[list[str]]:
    """Per row, per column: what a missing value is written as."""
    texts = [[default] * len(df.columns) for _ in range(len(df))]
    for column, mask in (no_ground_truth or {}).items():
        if column not in df.columns:
            raise ValueError(f"no_ground_truth names column {column!r}, which the table lacks; columns: "
                             f"{list(df.columns)}")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(df),):
            raise ValueError(f"no_ground_truth[{column!r}] has {mask.size} flags for a table of {len(df)} rows")
        j = list(df.columns).index(column)
        for i in np.flatnonzero(mask):
            texts[i][j] = NO_PLANTED_CUES
    return texts


def _numeric_columns(df: pd.DataFrame) -> list[bool]:
    return [
        pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns
    ]


def to_markdown(df: pd.DataFrame, float_format: str = "{:.3f}",
                no_ground_truth: Mapping[str, Sequence[bool]] | None = None) -> str:
    """GitHub pipe table; numeric columns right-aligned, booleans as yes/no, NaN as an em dash, or as
    `NO_PLANTED_CUES` in the cells `no_ground_truth` ({column: a flag per row}) marks."""
    numeric = _numeric_columns(df)
    missing = _missing_texts(df, "—", no_ground_truth)

    def cell(text: str) -> str:
        return text.replace("|", r"\|").replace("\n", " ")

    header = "| " + " | ".join(cell(str(c)) for c in df.columns) + " |"
    rule = "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"
    body = [
        "| " + " | ".join(cell(_format_cell(v, float_format, gap)) for v, gap in zip(row, gaps, strict=True)) + " |"
        for row, gaps in zip(df.itertuples(index=False, name=None), missing, strict=True)
    ]
    return "\n".join([header, rule, *body]) + "\n"


def to_latex(
    df: pd.DataFrame,
    float_format: str = "{:.3f}",
    caption: str | None = None,
    label: str | None = None,
    no_ground_truth: Mapping[str, Sequence[bool]] | None = None,
) -> str:
    """A booktabs ``table`` environment; text is escaped, the label is used verbatim; missing values
    as in `to_markdown`, with "--" for the dash."""
    numeric = _numeric_columns(df)
    missing = _missing_texts(df, "--", no_ground_truth)
    spec = "".join("r" if num else "l" for num in numeric)
    lines = [
        "% Generated by gendiag.report.tables; needs \\usepackage{booktabs}.",
        "\\begin{table}[htbp]",
        "\\centering",
    ]
    if caption:
        lines.append(f"\\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in df.columns) + " \\\\",
        "\\midrule",
    ]
    for row, gaps in zip(df.itertuples(index=False, name=None), missing, strict=True):
        # "--" (an en dash in LaTeX) marks a missing value; escaping leaves it alone.
        cells = (latex_escape(_format_cell(v, float_format, gap)) for v, gap in zip(row, gaps, strict=True))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def with_intervals(df: pd.DataFrame, float_format: str = "{:.3f}") -> pd.DataFrame:
    """The table as a reader sees it: each metric that has ``{metric}_ci_low`` and ``{metric}_ci_high``
    columns becomes one cell "value [low, high]" and its two bound columns go; a missing value stays
    missing (a missing bound is written as a dash)."""
    def cell(value: Any) -> str:
        return _format_cell(value, float_format, "—")

    out = df.copy()
    for column in df.columns:
        low, high = f"{column}_ci_low", f"{column}_ci_high"
        if low not in df.columns or high not in df.columns:
            continue
        out[column] = [None if _is_missing(v) else f"{cell(v)} [{cell(lo)}, {cell(hi)}]"
                       for v, lo, hi in zip(df[column], df[low], df[high], strict=True)]
        out = out.drop(columns=[low, high])
    return out


def write_table(
    df: pd.DataFrame,
    stem: str | os.PathLike,
    float_format: str = "{:.3f}",
    caption: str | None = None,
    label: str | None = None,
    no_ground_truth: Mapping[str, Sequence[bool]] | None = None,
    intervals: bool = False,
) -> list[Path]:
    """Write ``{stem}.csv`` (full precision, NaN where a value is missing), ``{stem}.md`` and
    ``{stem}.tex``; return their paths. `no_ground_truth` ({column: a flag per row}) marks the
    missing cells that Markdown and LaTeX show as `NO_PLANTED_CUES` rather than a dash.
    `intervals` writes Markdown and LaTeX with each confidence interval in its metric's cell
    (`with_intervals`), for tables too wide to read otherwise; the CSV keeps every column."""
    stem = Path(stem)
    float_format.format(0.5)  # fail here, not halfway through the writes, on a bad format string
    _missing_texts(df, "", no_ground_truth)  # likewise on flags that do not fit the table
    if intervals and no_ground_truth:
        raise ValueError("intervals and no_ground_truth cannot be combined: the interval view merges columns")
    shown = with_intervals(df, float_format) if intervals else df
    csv_path, md_path, tex_path = (stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex"))
    write_csv(df, csv_path)
    write_text(to_markdown(shown, float_format, no_ground_truth), md_path)
    write_text(to_latex(shown, float_format, caption=caption, label=label, no_ground_truth=no_ground_truth), tex_path)
    return [csv_path, md_path, tex_path]
