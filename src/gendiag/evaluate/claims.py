"""The study's claims, each answered with an effect, its interval, a corrected p-value and a verdict.

A claim compares two groups of training runs (one architecture, recipe and paradigm each, over
its seeds) on the same test messages. Three families, built from whatever the config ran:

- **recipe**: generalist > specialist out of domain (the seed study's headline), and specialist >
  generalist in domain (its narrow-domain finding), per architecture and paradigm;
- **paradigm**: every fine-tuning paradigm against `standard`, and `standard` against the
  zero-shot baseline, per architecture and recipe, out of domain of that recipe;
- **architecture**: every pair of architectures on the same recipe and paradigm, oriented by the
  observed difference (no architecture is hypothesised better, and the test is two-sided);
- **baseline**: every fine-tuned LLM (each architecture and paradigm) against the classical
  TF-IDF + logistic regression baseline trained on the same recipe, out of domain and in domain
  of that recipe (or on every test set for a recipe that trains on all of them).

"Out of domain" means the test sets the recipe was not trained on (the generalisation-gap table's
definition); a recipe trained on every corpus has none, and its claims use every test set. The
effect is the metric averaged over those test sets (each counts once) and over seeds; the
interval and p-value come from `significance.macro_paired_comparison`, and the p-values of every
claim are adjusted together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gendiag.evaluate.classical import ARCH as CLASSICAL_ARCH
from gendiag.evaluate.classical import PARADIGM as CLASSICAL_PARADIGM
from gendiag.evaluate.significance import adjust_p_values, macro_paired_comparison, verdict

ZEROSHOT = "zeroshot"
STANDARD = "standard"
BASELINE = "classical baseline"
PREDICTION_KEYS: tuple[str, ...] = ("arch", "recipe", "paradigm", "seed", "testset")
CLAIM_COLUMNS: tuple[str, ...] = (
    "claim", "family", "arch", "a", "b", "scope", "testsets", "metric", "effect", "ci_low", "ci_high",
    "p_value", "p_adjusted", "verdict", "metric_a", "metric_b", "n_messages", "n_testsets", "n_seeds",
    "seed_effect_mean", "seed_ci_low", "seed_ci_high", "seed_ci_method", "direction",
)


@dataclass(frozen=True)
class Group:
    """The runs of one model configuration: every seed of (arch, recipe, paradigm)."""

    arch: str
    recipe: str
    paradigm: str

    def __str__(self) -> str:
        return f"{self.arch}/{self.recipe}/{self.paradigm}"


@dataclass(frozen=True)
class ClaimSpec:
    family: str
    claim: str
    arch: str
    a: Group
    b: Group
    scope: str
    testsets: tuple[str, ...]
    direction: str  # "hypothesis": a > b was stated beforehand; "observed": oriented by the data


def _said(scope: str) -> str:
    return "on all test sets" if scope == "all test sets" else scope


def _scope(recipe_testsets: Sequence[str], testsets: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    ood = tuple(t for t in testsets if t not in recipe_testsets)
    return ("out of domain", ood) if ood else ("all test sets", tuple(testsets))


def claim_specs(
    groups: Sequence[Group],
    testsets: Sequence[str],
    in_domain: Mapping[str, Sequence[str]],
    specialist: str,
    generalist: str,
) -> list[ClaimSpec]:
    """Every claim the runs in `groups` can answer, in a stable order."""
    present = set(groups)
    archs = sorted({g.arch for g in groups if g.arch != CLASSICAL_ARCH})
    tuned = sorted({g.paradigm for g in groups if g.paradigm not in (ZEROSHOT, CLASSICAL_PARADIGM)})
    recipes = sorted({g.recipe for g in groups if g.paradigm != ZEROSHOT})
    specs: list[ClaimSpec] = []

    spec_ood = tuple(t for t in testsets if t not in in_domain.get(specialist, []))
    spec_in = tuple(t for t in testsets if t in in_domain.get(specialist, []))
    # The classical baseline enters the recipe family too: does training-set diversity help it?
    with_baseline = [*itertools.product(archs, tuned), (CLASSICAL_ARCH, CLASSICAL_PARADIGM)]
    for arch, paradigm in with_baseline:
        gen, spec = Group(arch, generalist, paradigm), Group(arch, specialist, paradigm)
        if gen in present and spec in present:
            if spec_ood:
                specs.append(ClaimSpec("recipe", f"{generalist} > {specialist} out of domain", arch, gen, spec,
                                       "out of domain", spec_ood, "hypothesis"))
            if spec_in:
                specs.append(ClaimSpec("recipe", f"{specialist} > {generalist} in domain", arch, spec, gen,
                                       "in domain", spec_in, "hypothesis"))

    for arch, recipe in itertools.product(archs, recipes):
        scope, scoped = _scope(in_domain.get(recipe, []), testsets)
        standard = Group(arch, recipe, STANDARD)
        if standard not in present:
            continue
        for paradigm in tuned:
            other = Group(arch, recipe, paradigm)
            if paradigm != STANDARD and other in present:
                specs.append(ClaimSpec("paradigm", f"{paradigm} > {STANDARD} {_said(scope)} ({recipe})", arch, other,
                                       standard, scope, scoped, "hypothesis"))
        zeroshot = [g for g in groups if g.arch == arch and g.paradigm == ZEROSHOT]
        if zeroshot:
            specs.append(ClaimSpec("paradigm", f"{STANDARD} > {ZEROSHOT} {_said(scope)} ({recipe})", arch, standard,
                                   zeroshot[0], scope, scoped, "hypothesis"))

    for arch, recipe, paradigm in itertools.product(archs, recipes, tuned):
        llm, baseline = Group(arch, recipe, paradigm), Group(CLASSICAL_ARCH, recipe, CLASSICAL_PARADIGM)
        if llm not in present or baseline not in present:
            continue
        inside = tuple(t for t in testsets if t in in_domain.get(recipe, []))
        outside = tuple(t for t in testsets if t not in inside)
        scopes = ([("out of domain", outside)] + ([("in domain", inside)] if inside else []) if outside
                  else [("all test sets", tuple(testsets))])
        for scope, scoped in scopes:
            specs.append(ClaimSpec("baseline", f"LLM ({paradigm}) > {BASELINE} {_said(scope)} ({recipe})", arch, llm,
                                   baseline, scope, scoped, "hypothesis"))

    settings = sorted({(g.recipe, g.paradigm) for g in groups if g.arch != CLASSICAL_ARCH})
    for recipe, paradigm in settings:
        scope, scoped = (_scope(in_domain.get(recipe, []), testsets) if paradigm != ZEROSHOT
                         else ("all test sets", tuple(testsets)))
        with_runs = [a for a in archs if Group(a, recipe, paradigm) in present]
        for first, second in itertools.combinations(with_runs, 2):
            where = f"{paradigm}" if paradigm == ZEROSHOT else f"{recipe}, {paradigm}"
            specs.append(ClaimSpec("architecture", f"{{a}} > {{b}} {_said(scope)} ({where})", f"{first} vs {second}",
                                   Group(first, recipe, paradigm), Group(second, recipe, paradigm), scope, scoped,
                                   "observed"))
    return specs


RunsOnTestset = tuple[pd.Series, dict[int, np.ndarray]]


def _runs_by_seed(by_group: Mapping[tuple, pd.DataFrame], group: Group, testset: str) -> RunsOnTestset:
    rows = by_group.get((group.arch, group.recipe, group.paradigm, testset))
    if rows is None:
        raise ValueError(f"no predictions of {group} on test set {testset!r}; run its predict job first")
    labels, runs = None, {}
    for seed, run in rows.groupby("seed", sort=True):
        run = run.sort_values("uid", kind="stable")
        duplicated = run["uid"][run["uid"].duplicated()]
        if len(duplicated):
            raise ValueError(f"{group} seed {seed} on {testset}: duplicate uids {duplicated.head(3).tolist()}")
        if labels is None:
            labels = run.set_index("uid")["label"]
        elif run["uid"].tolist() != labels.index.tolist():
            raise ValueError(f"{group}: seeds scored different messages of {testset}")
        runs[int(seed)] = run["p_malicious"].to_numpy(dtype=np.float64)
    return labels, runs


def _strata(runs_of, spec: ClaimSpec) -> dict[str, tuple[Any, Any, Any]]:
    strata = {}
    for testset in spec.testsets:
        labels_a, runs_a = runs_of(spec.a, testset)
        labels_b, runs_b = runs_of(spec.b, testset)
        if labels_a.index.tolist() != labels_b.index.tolist() or not labels_a.equals(labels_b):
            raise ValueError(
                f"{spec.a} and {spec.b} scored different messages (or labels) of {testset}; a paired test needs "
                "the same test set for both: rerun their predict jobs on the current test sets"
            )
        strata[testset] = (labels_a.to_numpy(), runs_a, runs_b)
    return strata


def _reversed(result: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison B vs A from A vs B: effects negated, intervals mirrored, sides swapped."""
    return {**result, "effect": -result["effect"], "ci_low": -result["ci_high"], "ci_high": -result["ci_low"],
            "metric_a": result["metric_b"], "metric_b": result["metric_a"],
            "seed_effect_mean": -result["seed_effect_mean"], "seed_ci_low": -result["seed_ci_high"],
            "seed_ci_high": -result["seed_ci_low"]}


def evaluate_claims(
    predictions: pd.DataFrame,
    specs: Sequence[ClaimSpec],
    metric: str = "f1",
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
    alpha: float = 0.05,
    correction: str = "holm",
) -> pd.DataFrame:
    """One row per claim (`CLAIM_COLUMNS`); p-values adjusted over all of them together.

    `predictions` is the long table of every prediction file: `PREDICTION_KEYS` plus ``uid``,
    ``label`` and ``p_malicious``.
    """
    missing = [c for c in (*PREDICTION_KEYS, "uid", "label", "p_malicious") if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions table is missing column(s) {missing}; got {list(predictions.columns)}")
    if not specs:
        raise ValueError("no claim can be tested: the study needs at least two models scored on the same test sets")
    # Each group's runs on each test set are read once, whatever the number of claims they enter.
    by_group = dict(tuple(predictions.groupby(["arch", "recipe", "paradigm", "testset"], sort=False)))
    cache: dict[tuple[Group, str], RunsOnTestset] = {}

    def runs_of(group: Group, testset: str) -> RunsOnTestset:
        if (group, testset) not in cache:
            cache[group, testset] = _runs_by_seed(by_group, group, testset)
        return cache[group, testset]

    rows = []
    for spec in specs:
        result = macro_paired_comparison(_strata(runs_of, spec), metric=metric, n_resamples=n_resamples,
                                         seed=seed, confidence=confidence, threshold=threshold)
        a, b = spec.a, spec.b
        if spec.direction == "observed" and result["effect"] < 0:
            a, b, result = b, a, _reversed(result)
        rows.append({
            "claim": spec.claim.format(a=a.arch, b=b.arch), "family": spec.family, "arch": spec.arch,
            "a": str(a), "b": str(b), "scope": spec.scope, "testsets": " ".join(spec.testsets),
            "direction": spec.direction,
            **{k: result[k] for k in ("metric", "effect", "ci_low", "ci_high", "p_value", "metric_a", "metric_b",
                                      "n_messages", "n_testsets", "n_seeds", "seed_effect_mean", "seed_ci_low",
                                      "seed_ci_high", "seed_ci_method")},
        })
    table = pd.DataFrame(rows)
    table["p_adjusted"] = adjust_p_values(table["p_value"].to_numpy(), method=correction)
    table["verdict"] = [verdict(r.effect, r.ci_low, r.ci_high, r.p_adjusted, alpha=alpha)
                        for r in table.itertuples()]
    return table[list(CLAIM_COLUMNS)]


def format_p(p: float) -> str:
    if math.isnan(p):
        return "p_adj n/a"
    return "p_adj < 0.001" if p < 0.001 else f"p_adj = {p:.3f}"


def format_finding(row: Mapping[str, Any]) -> str:
    """One claim as a sentence a reviewer can check against claims.csv."""
    digits = 2 if abs(row["effect"]) >= 0.01 else 3
    metric = str(row["metric"]).upper() if row["metric"] in ("f1", "auroc") else str(row["metric"])
    subject = f" for {row['arch']}" if row["family"] != "architecture" else ""
    text = (f"{row['claim']}{subject}: {row['effect']:+.{digits}f} {metric} "
            f"[{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}], {format_p(row['p_adjusted'])}"
            f" — {row['verdict']}")
    if row["n_seeds"] > 1 and not math.isnan(row["seed_ci_low"]):
        text += (f" (over {row['n_seeds']} seeds: [{row['seed_ci_low']:.{digits}f}, "
                 f"{row['seed_ci_high']:.{digits}f}])")
    return text
