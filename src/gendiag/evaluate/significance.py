"""Significance tests for the study's claims: is model A better than model B on the same messages?

Every claim of the study ("generalist > specialist out of domain for gemma2", "cot vs standard",
"llama vs mistral") compares two models, or two groups of training runs (seeds), on the SAME test
messages. The tests here are therefore paired: they resample or count messages, never the two
models independently, so the message-to-message variation both models share cancels out.

- `mcnemar_test`: the classic test for two classifiers' correct/incorrect decisions on the same
  messages (equal accuracy); exact binomial for few discordant messages, chi-square otherwise.
- `paired_bootstrap`: any metric of `metrics.METRICS` (F1 by default, which McNemar cannot test);
  the messages are resampled jointly and the difference of the metric is recomputed.
- `paired_comparison`: the same for several seeds per side, plus the seed-level view.
- `adjust_p_values`: Holm, Bonferroni or Benjamini-Hochberg over the family of claims.
- `seed_summary`: mean and t-interval of a quantity across training seeds.
- `verdict`: one word per claim from the effect, its interval and the adjusted p-value.

Effects are always ``a - b``: a positive effect means A scores higher.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from gendiag.evaluate.metrics import (
    _MAX_CELLS_PER_CHUNK,
    METRICS,
    _examples,
    _safe_ratio,
    _weighted_metrics,
    classification_metrics,
)

ADJUST_METHODS: tuple[str, ...] = ("holm", "bonferroni", "fdr_bh")
TESTS: tuple[str, ...] = ("paired_bootstrap", "mcnemar")
VERDICTS: tuple[str, ...] = ("supported", "reversed", "not significant")

# Below this many discordant messages the chi-square approximation of McNemar's statistic is poor
# and the exact binomial test is used (the usual rule of thumb, e.g. statsmodels' documentation).
MCNEMAR_EXACT_BELOW = 25


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _is_text(values: np.ndarray) -> bool:
    return values.dtype.kind not in "biufO" or (
        values.dtype.kind == "O" and any(isinstance(v, (str, bytes)) for v in values)
    )


def _as_binary(values: Any, name: str) -> np.ndarray:
    """A non-empty 1-D array of 0/1 (or booleans) as bool, or ValueError."""
    x = np.asarray(values)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} must hold at least one message; got 0 values")
    if _is_text(x):
        raise ValueError(f"{name} must be 0/1 integers or booleans; got {x.dtype} values, e.g. {_examples(x)}")
    try:
        x = x.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be 0/1 without missing values: {err}") from err
    bad = ~np.isin(x, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"{name} must be 0 or 1; got {int(bad.sum())} value(s) outside {{0, 1}}, e.g. {_examples(x[bad])}"
        )
    return x == 1.0


def _as_probabilities(values: Any, name: str, n: int) -> np.ndarray:
    """A 1-D float array of `n` probabilities in [0, 1], or ValueError."""
    p = np.asarray(values)
    if p.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {p.shape}")
    if len(p) != n:
        raise ValueError(f"{name} must have one probability per message: expected {n} values, got {len(p)}")
    if _is_text(p):
        raise ValueError(f"{name} must be floats in [0, 1]; got {p.dtype} values, e.g. {_examples(p)}")
    try:
        p = p.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric without missing values: {err}") from err
    bad = ~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))
    if bad.any():
        raise ValueError(
            f"{name} must be finite probabilities in [0, 1]; got {int(bad.sum())} value(s) outside, "
            f"e.g. {_examples(p[bad])}"
        )
    return p


def _as_runs(values: Any, name: str, n: int) -> tuple[np.ndarray, tuple[Any, ...] | None]:
    """Probabilities of one or several runs as a (runs x messages) array, and the seed keys if any.

    Accepts a mapping ``{seed: probabilities}`` (rows in sorted seed order), a 2-D array or a list
    of equally long arrays (one row per seed), or a single 1-D array (one run).
    """
    keys: tuple[Any, ...] | None = None
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{name} must hold at least one run; got an empty mapping")
        keys = tuple(sorted(values))
        rows = [values[k] for k in keys]
    else:
        try:
            array = np.asarray(values)
        except ValueError as err:  # ragged list of runs
            raise ValueError(f"{name}: every run must score the same {n} messages: {err}") from err
        if array.ndim == 1:
            rows = [array]
        elif array.ndim == 2:
            rows = list(array)
        else:
            raise ValueError(
                f"{name} must be one run (1-D), several runs (2-D: seeds x messages) or a mapping "
                f"{{seed: probabilities}}; got shape {array.shape}"
            )
        if not rows:
            raise ValueError(f"{name} must hold at least one run; got 0")
    label = (lambda i: f"{name}[{keys[i]!r}]") if keys is not None else (lambda i: f"{name}[{i}]")
    return np.stack([_as_probabilities(r, label(i), n) for i, r in enumerate(rows)]), keys


def _check_n_resamples(n_resamples: Any) -> None:
    if isinstance(n_resamples, bool) or not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise ValueError(f"n_resamples must be a positive integer; got {n_resamples!r}")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")


def _check_confidence(confidence: Any) -> None:
    if isinstance(confidence, bool) or not (
        isinstance(confidence, (int, float, np.floating)) and 0.0 < float(confidence) < 1.0
    ):
        raise ValueError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95); got {confidence!r}")


def _check_threshold(threshold: Any) -> None:
    if isinstance(threshold, bool) or not (
        isinstance(threshold, (int, float, np.floating)) and 0.0 <= float(threshold) <= 1.0
    ):
        raise ValueError(f"threshold must be a number in [0, 1]; got {threshold!r}")


def _check_metric(metric: Any) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}; got {metric!r}")


def _as_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number; got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------


def mcnemar_test(correct_a: Any, correct_b: Any, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test that two classifiers are equally accurate on the same messages.

    Only the discordant messages carry information: ``b`` = A right and B wrong, ``c`` = A wrong
    and B right. Under the null each discordant message is a fair coin, so

    - ``method="exact"``: statistic ``min(b, c)``, p = ``min(1, 2 * Binom(b + c, 1/2).cdf(min(b, c)))``
      (identical to ``scipy.stats.binomtest(b, b + c).pvalue``);
    - ``method="chi2"``: statistic ``(|b - c| - 1)^2 / (b + c)`` (Edwards' continuity correction),
      p from chi-square with one degree of freedom.

    Both equal ``statsmodels.stats.contingency_tables.mcnemar`` (``exact=True`` / ``exact=False,
    correction=True``) with one deliberate exception: when ``b == c`` the observed difference is
    already zero, so no correction is applied (statistic 0, p = 1, as R's ``mcnemar.test`` does);
    statsmodels subtracts 1 anyway and reports ``1 / (b + c)``. With no discordant message at
    all there is no evidence either way: statistic 0, p = 1.

    `exact=None` picks the exact test when ``b + c < 25`` (where the chi-square approximation is
    poor) and chi-square otherwise; True/False force one. Returns ``{"b", "c", "n", "statistic",
    "p_value", "method"}`` where ``n`` is the number of messages.
    """
    a = _as_binary(correct_a, "correct_a")
    b_ = _as_binary(correct_b, "correct_b")
    if len(a) != len(b_):
        raise ValueError(
            f"correct_a and correct_b must score the same messages; got {len(a)} and {len(b_)} values"
        )
    if exact is not None and not isinstance(exact, (bool, np.bool_)):
        raise ValueError(f"exact must be None (automatic), True or False; got {exact!r}")

    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    n_discordant = b + c
    use_exact = n_discordant < MCNEMAR_EXACT_BELOW if exact is None else bool(exact)
    method = "exact" if use_exact else "chi2"
    if n_discordant == 0:
        statistic, p_value = 0.0, 1.0
    elif use_exact:
        statistic = float(min(b, c))
        p_value = float(min(1.0, 2.0 * stats.binom.cdf(min(b, c), n_discordant, 0.5)))
    else:
        statistic = 0.0 if b == c else (abs(b - c) - 1.0) ** 2 / n_discordant
        p_value = float(stats.chi2.sf(statistic, 1))
    return {"b": b, "c": c, "n": len(a), "statistic": statistic, "p_value": p_value, "method": method}


# ---------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------


def _bootstrap_mean_differences(
    positive: np.ndarray,
    runs_a: np.ndarray,
    runs_b: np.ndarray,
    metric: str,
    threshold: float,
    n_resamples: int,
    seed: int,
) -> np.ndarray:
    """Per resample: mean metric over A's runs minus mean metric over B's runs.

    Every run of both sides is scored on the same resample of messages (one count matrix per
    chunk, as in `metrics.bootstrap_ci`, and the same random draws for the same `seed`).
    """
    n = len(positive)
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CELLS_PER_CHUNK // n)
    parts: list[np.ndarray] = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        index = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size, dtype=np.int64) * n)[:, None]
        counts = np.bincount((index + offsets).ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        sides = [np.mean(_resampled_metric(counts, positive, runs, metric, threshold), axis=0)
                 for runs in (runs_a, runs_b)]
        parts.append(sides[0] - sides[1])
    return np.concatenate(parts)


def _resampled_metric(
    counts: np.ndarray, positive: np.ndarray, runs: np.ndarray, metric: str, threshold: float
) -> np.ndarray:
    """`metric` of every run (rows of `runs`) on every resample (rows of `counts`): runs x resamples.

    AUROC goes through `metrics._weighted_metrics`. The threshold metrics need only the weighted
    confusion counts, which one matrix product gives for all runs at once; the formulas and
    zero-division conventions are those of `metrics._weighted_metrics` (the tests check that
    both agree with rescoring each resample by `classification_metrics`).
    """
    if metric == "auroc":
        return np.stack([_weighted_metrics(counts, positive, s, s >= threshold)["auroc"] for s in runs])
    predicted = runs >= threshold
    indicators = np.concatenate([predicted & positive, predicted & ~positive, ~predicted & positive])
    tp, fp, fn = np.split((counts @ indicators.T.astype(np.float64)).T, 3)
    if metric == "f1":
        return _safe_ratio(2.0 * tp, 2.0 * tp + fp + fn)
    if metric == "precision":
        return _safe_ratio(tp, tp + fp)
    if metric == "recall":
        return _safe_ratio(tp, tp + fn)
    total = counts.sum(axis=1)[None, :]
    return _safe_ratio(total - fp - fn, np.broadcast_to(total, fp.shape))  # accuracy


def _percentile_interval(differences: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every resample NaN -> NaN interval
        low, high = np.nanquantile(differences, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_p_value(differences: Any) -> float:
    """Two-sided p-value of "no difference" from resampled differences ``d_1 .. d_B``.

    ``p = min(1, 2 * min(1 + #{d <= 0}, 1 + #{d >= 0}) / (1 + B))``

    This is the percentile-interval test: p is (up to the +1 terms and quantile interpolation)
    the smallest alpha at which the two-sided ``1 - alpha`` percentile interval excludes 0, so the
    p-value and the interval reported next to it agree. The +1 terms count the observed sample as
    one of the resamples, so p is never 0: its smallest value is ``2 / (B + 1)``. Choose
    ``B`` so that this floor, times the number of claims that will be corrected together, stays
    well below alpha (B = 10 000 allows 2.0e-4). Resamples whose difference is NaN (e.g. AUROC of
    a single-class resample) are left out, and B counts the rest; with none left, p is NaN.
    Identical models (every difference 0) get p = 1.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan
    below = 1 + int(np.sum(d <= 0.0))
    above = 1 + int(np.sum(d >= 0.0))
    return float(min(1.0, 2.0 * min(below, above) / (1 + len(d))))


def paired_bootstrap(
    labels: Any,
    p_a: Any,
    p_b: Any,
    metric: str = "f1",
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Paired bootstrap of ``metric(A) - metric(B)`` over messages.

    Each resample draws messages with replacement and scores BOTH models on that same draw, so
    the difference keeps the pairing (the easy and hard messages are shared). `metric` is any of
    `metrics.METRICS` (malicious class; a message is predicted malicious when ``p >= threshold``).
    The effect is the difference on the full sample, the interval is the percentile interval of
    the resampled differences, and the p-value is `bootstrap_p_value` (the test that agrees with
    that interval). Deterministic given `seed`; the draws are those of `metrics.bootstrap_ci`
    with the same seed. Returns ``{"metric", "effect", "metric_a", "metric_b", "ci_low",
    "ci_high", "confidence", "p_value", "n_messages", "n_resamples"}``.
    """
    positive = _as_binary(labels, "labels")
    a = _as_probabilities(p_a, "p_a", len(positive))
    b = _as_probabilities(p_b, "p_b", len(positive))
    _check_metric(metric)
    _check_n_resamples(n_resamples)
    _check_seed(seed)
    _check_confidence(confidence)
    _check_threshold(threshold)

    y = positive.astype(np.int64)
    metric_a = classification_metrics(y, a, threshold=threshold)[metric]
    metric_b = classification_metrics(y, b, threshold=threshold)[metric]
    diffs = _bootstrap_mean_differences(positive, a[None, :], b[None, :], metric, threshold, int(n_resamples), seed)
    low, high = _percentile_interval(diffs, confidence)
    return {
        "metric": metric,
        "effect": metric_a - metric_b,
        "metric_a": metric_a,
        "metric_b": metric_b,
        "ci_low": low,
        "ci_high": high,
        "confidence": float(confidence),
        "p_value": bootstrap_p_value(diffs),
        "n_messages": len(positive),
        "n_resamples": int(n_resamples),
    }


# ---------------------------------------------------------------------------------------------
# Multiple comparisons
# ---------------------------------------------------------------------------------------------


def adjust_p_values(p_values: Any, method: str = "holm") -> np.ndarray:
    """Adjust a family of p-values for multiple comparisons.

    - ``"holm"``: Holm's step-down; controls the family-wise error rate under any dependence and
      is never less powerful than Bonferroni. The default because the claims of the study share
      models and test sets, so they are dependent.
    - ``"bonferroni"``: ``min(1, m * p)``.
    - ``"fdr_bh"``: Benjamini-Hochberg; controls the false discovery rate (independent or
      positively dependent tests), for exploratory sweeps over many cells.

    Values equal those of ``statsmodels.stats.multitest.multipletests(p, method=method)[1]``.
    NaN marks a comparison that could not be tested (e.g. an undefined metric): it stays NaN and
    is not counted in the family size ``m``, so it neither gets nor costs a correction. Returns a
    float array in the input's order.
    """
    if method not in ADJUST_METHODS:
        raise ValueError(f"method must be one of {list(ADJUST_METHODS)}; got {method!r}")
    p = np.asarray(p_values)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D; got shape {p.shape}")
    if _is_text(p):
        raise ValueError(f"p_values must be floats in [0, 1] (NaN allowed); got {p.dtype} values, e.g. {_examples(p)}")
    try:
        p = p.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"p_values must be numeric (NaN for untested comparisons): {err}") from err
    tested = ~np.isnan(p)
    bad = tested & ~((p >= 0.0) & (p <= 1.0))
    if bad.any():
        raise ValueError(
            f"p_values must lie in [0, 1] (NaN allowed); got {int(bad.sum())} value(s) outside, "
            f"e.g. {_examples(p[bad])}"
        )

    out = np.full(len(p), np.nan)
    values = p[tested]
    m = len(values)
    if m == 0:
        return out
    order = np.argsort(values)
    ranked = values[order]
    if method == "bonferroni":
        adjusted = ranked * float(m)
    elif method == "holm":
        adjusted = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
    else:  # fdr_bh: the arithmetic of statsmodels' fdrcorrection, so the values are identical
        adjusted = np.minimum.accumulate((ranked / (np.arange(1, m + 1) / float(m)))[::-1])[::-1]
    adjusted = np.minimum(adjusted, 1.0)
    unsorted = np.empty(m)
    unsorted[order] = adjusted
    out[tested] = unsorted
    return out


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def _t_interval(mean: float, scale: float, df: float, confidence: float) -> tuple[float, float]:
    if not (df > 0 and math.isfinite(scale)):
        return math.nan, math.nan
    if scale == 0.0:  # every run agrees: the interval collapses onto the mean (scipy would give NaN)
        return mean, mean
    low, high = stats.t.interval(confidence, df=df, loc=mean, scale=scale)
    return float(low), float(high)


def seed_summary(values: Any, confidence: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation and Student-t interval of one quantity across training seeds.

    Seeds are a small sample of the training randomness (initialisation, data order), so the
    interval uses Student's t with ``n - 1`` degrees of freedom and the standard error
    ``std / sqrt(n)`` (``std`` with ``ddof=1``), i.e. ``scipy.stats.t.interval(confidence,
    df=n-1, loc=mean, scale=sem)``. With a single seed the spread is unknown, so ``std`` and the
    interval are NaN (not zero: one run says nothing about how much a rerun would differ). When
    every seed gives the same value the interval is ``[mean, mean]``. Returns ``{"mean", "std",
    "n", "ci_low", "ci_high"}``.
    """
    x = np.asarray(values)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D (one value per seed); got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("values must hold at least one seed's value; got 0")
    if _is_text(x):
        raise ValueError(f"values must be numbers; got {x.dtype} values, e.g. {_examples(x)}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"values must be finite; got {int(bad.sum())} non-finite value(s), e.g. {_examples(x[bad])}")
    _check_confidence(confidence)

    n = len(x)
    if n == 1:
        return {"mean": float(x[0]), "std": math.nan, "n": 1, "ci_low": math.nan, "ci_high": math.nan}
    if np.all(x == x[0]):  # exactly: np.mean and np.std would round to x[0] +- 1e-16 and spread ~1e-16
        mean, std = float(x[0]), 0.0
    else:
        mean, std = float(np.mean(x)), float(np.std(x, ddof=1))
    low, high = _t_interval(mean, std / math.sqrt(n), n - 1, confidence)
    return {"mean": mean, "std": std, "n": n, "ci_low": low, "ci_high": high}


def _seed_interval(
    metrics_a: np.ndarray, metrics_b: np.ndarray, keys_a: Any, keys_b: Any, confidence: float
) -> tuple[float, float, str]:
    """Seed-level interval for ``mean(metrics_a) - mean(metrics_b)`` and the method used."""
    k_a, k_b = len(metrics_a), len(metrics_b)
    if not (np.all(np.isfinite(metrics_a)) and np.all(np.isfinite(metrics_b))) or k_a + k_b <= 2:
        return math.nan, math.nan, "none"
    if k_b == 1 or k_a == 1:
        # One side is a single (typically deterministic, e.g. zero-shot) run: treat it as a fixed
        # reference and ask how the other side's runs vary around it.
        diffs = metrics_a - metrics_b[0] if k_b == 1 else metrics_a[0] - metrics_b
        s = seed_summary(diffs, confidence)
        return s["ci_low"], s["ci_high"], "one_sample_t"
    paired_keys = keys_a is not None and keys_b is not None and keys_a == keys_b
    positional = keys_a is None and keys_b is None and k_a == k_b
    if paired_keys or positional:
        # Same seed on both sides: same data order and adapter initialisation stream, so the
        # per-seed differences are the natural unit (and valid even if the pairing is weak).
        s = seed_summary(metrics_a - metrics_b, confidence)
        return s["ci_low"], s["ci_high"], "paired_t"
    # Different seeds on the two sides: independent samples, Welch's unequal-variance interval.
    va, vb = np.var(metrics_a, ddof=1) / k_a, np.var(metrics_b, ddof=1) / k_b
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (k_a - 1) + vb**2 / (k_b - 1)) if se > 0 else 1.0
    low, high = _t_interval(float(np.mean(metrics_a) - np.mean(metrics_b)), se, df, confidence)
    return low, high, "welch_t"


def _run_metrics(positive: np.ndarray, runs: np.ndarray, metric: str, threshold: float) -> np.ndarray:
    """`metric` of each run (rows of `runs`) on the full sample."""
    y = positive.astype(np.int64)
    return np.array([classification_metrics(y, r, threshold=threshold)[metric] for r in runs], dtype=np.float64)


def _comparison(
    metric: str, test: str, metrics_a: np.ndarray, metrics_b: np.ndarray, differences: np.ndarray, p_value: float,
    confidence: float, n_messages: int, n_resamples: int, keys_a: Any, keys_b: Any,
) -> dict[str, Any]:
    """The result of a comparison from each run's metric and the resampled differences of the means."""
    metric_a, metric_b = float(np.mean(metrics_a)), float(np.mean(metrics_b))
    effect = metric_a - metric_b
    low, high = _percentile_interval(differences, confidence)
    seed_low, seed_high, seed_method = _seed_interval(metrics_a, metrics_b, keys_a, keys_b, confidence)
    return {
        "metric": metric,
        "test": test,
        "effect": effect,
        "metric_a": metric_a,
        "metric_b": metric_b,
        "ci_low": low,
        "ci_high": high,
        "confidence": float(confidence),
        "p_value": p_value,
        "n_messages": n_messages,
        "n_resamples": int(n_resamples),
        "n_seeds": max(len(metrics_a), len(metrics_b)),
        "n_seeds_a": len(metrics_a),
        "n_seeds_b": len(metrics_b),
        "seed_metrics_a": [float(v) for v in metrics_a],
        "seed_metrics_b": [float(v) for v in metrics_b],
        "seed_effect_mean": effect,
        "seed_ci_low": seed_low,
        "seed_ci_high": seed_high,
        "seed_ci_method": seed_method,
    }


def paired_comparison(
    labels: Any,
    p_a_by_seed: Any,
    p_b_by_seed: Any,
    metric: str = "f1",
    test: str = "paired_bootstrap",
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Compare two models, each trained with one or several seeds, on the same messages.

    `p_a_by_seed` / `p_b_by_seed`: ``{seed: p_malicious}``, a (seeds x messages) array or list of
    arrays, or one 1-D array (a single run, e.g. the deterministic zero-shot baseline). Every
    run must score the same messages in the same order as `labels`.

    Design. The quantity compared is the one the study's tables report: the metric of each run,
    averaged over that side's seeds. ``effect = mean_i metric(a_i) - mean_j metric(b_j)``.
    We deliberately do not average the probabilities across seeds first: that scores a soft-vote
    ensemble nobody trained, whose F1 differs from (usually exceeds) the per-seed mean in the
    tables, and it would need the same number of seeds on both sides. Two sources of uncertainty
    are then reported side by side, because they answer different questions:

    - messages (``ci_low``, ``ci_high``, ``p_value``): a paired bootstrap over messages in which
      every run of both sides is rescored on each resample ("would the claim hold on another
      test set from the same source, for these trained models?"). With ``test="mcnemar"``
      (accuracy only, one run per side) the p-value is McNemar's instead; the interval is still
      the bootstrap's.
    - seeds (``seed_effect_mean``, ``seed_ci_low``, ``seed_ci_high``): a Student-t interval over
      training runs ("would it hold if we retrained?"). ``seed_ci_method`` says which:
      ``paired_t`` on per-seed differences when both sides have the same seeds (same mapping keys,
      or the same number of rows); ``one_sample_t`` when one side is a single run (held fixed);
      ``welch_t`` when the seeds differ; ``none`` (NaN) with one run per side. By construction
      ``seed_effect_mean == effect``; only the interval differs.

    A claim is robust when both intervals exclude 0; `verdict` uses the message-level one with
    the adjusted p-value. Returns ``{"metric", "test", "effect", "metric_a", "metric_b",
    "ci_low", "ci_high", "confidence", "p_value", "n_messages", "n_resamples", "n_seeds",
    "n_seeds_a", "n_seeds_b", "seed_metrics_a", "seed_metrics_b", "seed_effect_mean",
    "seed_ci_low", "seed_ci_high", "seed_ci_method"}``; ``n_seeds`` is the larger side's count.
    """
    positive = _as_binary(labels, "labels")
    n = len(positive)
    runs_a, keys_a = _as_runs(p_a_by_seed, "p_a_by_seed", n)
    runs_b, keys_b = _as_runs(p_b_by_seed, "p_b_by_seed", n)
    _check_metric(metric)
    if test not in TESTS:
        raise ValueError(f"test must be one of {list(TESTS)}; got {test!r}")
    _check_n_resamples(n_resamples)
    _check_seed(seed)
    _check_confidence(confidence)
    _check_threshold(threshold)
    if test == "mcnemar":
        if metric != "accuracy":
            raise ValueError(
                f"test='mcnemar' compares error rates, so metric must be 'accuracy'; got {metric!r} "
                "(use test='paired_bootstrap' for other metrics)"
            )
        if len(runs_a) != 1 or len(runs_b) != 1:
            raise ValueError(
                "test='mcnemar' compares two single classifiers' decisions; expected one run per side, "
                f"got {len(runs_a)} and {len(runs_b)} (use test='paired_bootstrap' for several seeds)"
            )

    metrics_a = _run_metrics(positive, runs_a, metric, threshold)
    metrics_b = _run_metrics(positive, runs_b, metric, threshold)
    diffs = _bootstrap_mean_differences(positive, runs_a, runs_b, metric, threshold, int(n_resamples), seed)
    if test == "mcnemar":
        p_value = mcnemar_test((runs_a[0] >= threshold) == positive, (runs_b[0] >= threshold) == positive)["p_value"]
    else:
        p_value = bootstrap_p_value(diffs)
    return _comparison(metric, test, metrics_a, metrics_b, diffs, p_value, confidence, n, n_resamples, keys_a, keys_b)


# ---------------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------------


def verdict(effect: float, ci_low: float, ci_high: float, p_adjusted: float, alpha: float = 0.05) -> str:
    """One word for a directional claim "A > B" (effect = A - B).

    - ``"supported"``: ``p_adjusted <= alpha``, ``effect > 0`` and the interval lies above 0
      (``ci_low > 0``);
    - ``"reversed"``: ``p_adjusted <= alpha``, ``effect < 0`` and the interval lies below 0
      (``ci_high < 0``): B is significantly better, the opposite of the claim;
    - ``"not significant"``: anything else, including a significant p whose interval still
      touches 0 (the test and the interval disagree only at the margin; we side with caution),
      an effect whose sign disagrees with its interval, and NaN inputs (an untestable comparison is no evidence).

    Requiring both the adjusted p-value and the interval guards against a p-value that survives
    correction while the reported interval says the sign is uncertain. "Not significant" is not
    evidence of equality: that needs an equivalence test with a chosen margin.
    """
    values = {
        name: _as_number(v, name)
        for name, v in (("effect", effect), ("ci_low", ci_low), ("ci_high", ci_high), ("p_adjusted", p_adjusted))
    }
    a = _as_number(alpha, "alpha")
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1 (e.g. 0.05); got {alpha!r}")
    p = values["p_adjusted"]
    if not math.isnan(p) and not 0.0 <= p <= 1.0:
        raise ValueError(f"p_adjusted must be in [0, 1] (or NaN); got {p_adjusted!r}")
    low, high = values["ci_low"], values["ci_high"]
    if low > high:
        raise ValueError(f"ci_low must not exceed ci_high; got ci_low={ci_low!r} > ci_high={ci_high!r}")
    if any(math.isnan(v) for v in values.values()) or p > a:
        return "not significant"
    if values["effect"] > 0.0 and low > 0.0:
        return "supported"
    if values["effect"] < 0.0 and high < 0.0:
        return "reversed"
    return "not significant"


def macro_paired_comparison(
    strata: Mapping[str, tuple[Any, Any, Any]],
    metric: str = "f1",
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """`paired_comparison` over several test sets at once, the metric averaged across them.

    `strata` maps each test set to ``(labels, p_a_by_seed, p_b_by_seed)`` as `paired_comparison`
    takes them, with the same seeds on each side in every test set. The compared quantity is the
    one the generalisation-gap table reports: for each run, its metric averaged over the test sets
    (each test set counts once, whatever its size), then averaged over that side's seeds.

    The bootstrap is stratified: each resample draws messages within every test set
    independently (as a new test set from each source would), and the macro-averaged difference
    is recomputed. The seed-level interval is `paired_comparison`'s, on the per-run macro metric.
    Returns the keys of `paired_comparison` plus ``n_testsets``; ``n_messages`` is the total.
    """
    if not isinstance(strata, Mapping) or not strata:
        raise ValueError(f"strata must map at least one test set to (labels, p_a, p_b); got {strata!r}")
    _check_metric(metric)
    _check_n_resamples(n_resamples)
    _check_seed(seed)
    _check_confidence(confidence)
    _check_threshold(threshold)
    names = sorted(strata)
    diffs, per_run_a, per_run_b, seed_keys, n_messages = [], [], [], None, 0
    for i, name in enumerate(names):
        try:
            labels, p_a, p_b = strata[name]
        except (TypeError, ValueError):
            raise ValueError(f"strata[{name!r}] must be (labels, p_a_by_seed, p_b_by_seed)") from None
        positive = _as_binary(labels, f"labels of {name}")
        runs_a, keys_a = _as_runs(p_a, f"p_a_by_seed of {name}", len(positive))
        runs_b, keys_b = _as_runs(p_b, f"p_b_by_seed of {name}", len(positive))
        if seed_keys is None:
            seed_keys = (keys_a, keys_b, len(runs_a), len(runs_b))
        elif seed_keys != (keys_a, keys_b, len(runs_a), len(runs_b)):
            raise ValueError(
                f"test set {name!r} has other runs than {names[0]!r}; every test set must be scored by the "
                "same seeds on each side"
            )
        per_run_a.append(_run_metrics(positive, runs_a, metric, threshold))
        per_run_b.append(_run_metrics(positive, runs_b, metric, threshold))
        # A distinct stream per test set: the same draws as a one-test-set comparison for the first.
        diffs.append(_bootstrap_mean_differences(positive, runs_a, runs_b, metric, threshold, int(n_resamples),
                                                 seed + i))
        n_messages += len(positive)
    metrics_a = np.mean(np.array(per_run_a, dtype=np.float64), axis=0)
    metrics_b = np.mean(np.array(per_run_b, dtype=np.float64), axis=0)
    macro = np.mean(np.stack(diffs), axis=0)
    result = _comparison(metric, "paired_bootstrap", metrics_a, metrics_b, macro, bootstrap_p_value(macro), confidence,
                         n_messages, n_resamples, seed_keys[0], seed_keys[1])
    return {**result, "n_testsets": len(names)}
