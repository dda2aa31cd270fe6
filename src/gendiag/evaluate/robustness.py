"""Prompt robustness: the F1 difference between each prompt variant and the main prompt.

A variant's effect is its F1 minus the main prompt's on the same messages, with a paired
bootstrap CI over messages (every seed rescored on each resample), per test set and averaged over
test sets (stratified). The variants themselves are built by `gendiag.evaluate.variants`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from gendiag.evaluate.significance import macro_paired_comparison

ALL_TESTSETS = "all test sets"
ROBUSTNESS_COLUMNS = ["arch", "recipe", "paradigm", "variant", "testset", "f1_main", "f1_variant", "delta_f1",
                      "ci_low", "ci_high", "p_value", "n_messages", "n_seeds"]


def robustness_table(
    main: pd.DataFrame,
    variants: pd.DataFrame,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """F1 with each variant minus F1 with the main prompt, per model, test set and over all test sets.

    `main` and `variants` hold prediction rows (uid, label, p_malicious) with arch, recipe,
    paradigm, seed, testset, and `variant` in `variants`. Messages are matched by uid; a variant
    file that scores other messages than the main one is an error.
    """
    rows = []
    models = ["arch", "recipe", "paradigm"]
    main_of = dict(tuple(main.groupby([*models, "testset"], sort=False)))
    for keys, variant_rows in variants.groupby([*models, "variant"], sort=True):
        model, variant = keys[:3], keys[3]
        strata = {}
        for testset, rows_v in variant_rows.groupby("testset", sort=True):
            rows_m = main_of.get((*model, testset), main.iloc[:0])
            strata[testset] = _stratum(rows_m, rows_v, "/".join(map(str, (*model, testset))), variant)
        for name, chosen in [*((t, {t: s}) for t, s in strata.items()), (ALL_TESTSETS, strata)]:
            result = macro_paired_comparison(chosen, "f1", n_resamples, seed, confidence, threshold)
            rows.append({
                **dict(zip(models, model, strict=True)), "variant": variant, "testset": name,
                "f1_main": result["metric_b"], "f1_variant": result["metric_a"], "delta_f1": result["effect"],
                "ci_low": result["ci_low"], "ci_high": result["ci_high"], "p_value": result["p_value"],
                "n_messages": result["n_messages"], "n_seeds": result["n_seeds"],
            })
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


def _stratum(main: pd.DataFrame, variant: pd.DataFrame, where: str, name: str) -> tuple[Any, dict, dict]:
    """(labels, {seed: p} of the variant, {seed: p} of the main prompt), aligned by uid."""
    order = main[main["seed"] == main["seed"].min()].sort_values("uid")
    uids = order["uid"].to_numpy()

    def by_seed(frame: pd.DataFrame, what: str) -> dict[int, Any]:
        out = {}
        for seed, rows in frame.groupby("seed"):
            rows = rows.set_index("uid")
            if set(rows.index) != set(uids) or len(rows) != len(uids):
                raise ValueError(f"{where}: the {what} predictions of seed {seed} score other messages than the"
                                 " main prompt's; rerun the predictions of both")
            out[int(seed)] = rows.loc[uids, "p_malicious"].to_numpy()
        return out

    return order["label"].to_numpy(), by_seed(variant, f"'{name}'"), by_seed(main, "main-prompt")


def variant_files(
    runs: Sequence[Sequence[Any]], variants: Sequence[str], testsets: Sequence[str], paths: Sequence[str]
) -> list[tuple[str, str, str, int, str, str, str]]:
    """``(arch, recipe, paradigm, seed, variant, testset, path)`` of the variant files, each checked."""
    keys = [(*run, variant, testset) for run in runs for variant in variants for testset in testsets]
    if len(keys) != len(paths):
        raise RuntimeError(f"{len(paths)} variant prediction files for {len(keys)} runs x variants x test sets")
    out = []
    for (arch, recipe, paradigm, seed, variant, testset), path in zip(keys, paths, strict=True):
        if not str(path).endswith(f"/{arch}/{recipe}/{paradigm}/seed{seed}/{variant}/{testset}.parquet"):
            raise RuntimeError(f"variant file {path} does not belong to {arch}/{recipe}/{paradigm}/seed{seed}"
                               f" {variant} {testset}")
        out.append((arch, recipe, paradigm, int(seed), variant, testset, str(path)))
    return out
