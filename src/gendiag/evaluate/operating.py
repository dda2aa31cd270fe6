"""Operating-point and calibration metrics, with percentile-bootstrap CIs like `metrics`.

F1 at the study's fixed threshold mixes two things: how well a model ranks malicious above
legitimate mail, and where its threshold happens to fall on a new corpus. These metrics pull them
apart. The positive class is 1 (malicious); "legitimate" is 0.

- ``average_precision`` (PR-AUC): ``sum_k (R_k - R_{k-1}) P_k`` over the thresholds, as
  `sklearn.metrics.average_precision_score` (no interpolation).
- ``fpr_at_recall_90`` / ``_95``: the smallest false-positive rate (share of legitimate mail
  flagged) among the thresholds whose recall is at least 0.90 / 0.95: what it costs in false
  alarms to catch that share of the malicious mail.
- ``recall_at_fpr_1``: the largest recall among the thresholds whose FPR is at most 0.01. The
  threshold above every score (recall 0 at FPR 0) always qualifies, so it is never undefined
  when both classes are present.
- ``brier``: mean of ``(p_malicious - label)^2``, as `sklearn.metrics.brier_score_loss`.
- ``ece``: expected calibration error of p(malicious) in `ECE_BINS` = 10 equal-width bins over
  [0, 1]; bin ``b`` holds ``b/10 <= p < (b+1)/10`` and the last bin also holds p = 1. ECE is
  ``sum_b (n_b / n) |mean label in b - mean p in b|``: the bins are weighted by their count and
  empty bins add nothing. It is the calibration of the malicious-class probability itself (a
  reliability diagram of p), not the "top-label" ECE of ``max(p, 1 - p)``.

The suffix of a column names its target in percent: ``_90`` is recall 0.90, ``_1`` is FPR 0.01.
The candidate thresholds are the distinct scores (a message is flagged when ``p >= t``; tied
messages move together), i.e. the points of ``sklearn.metrics.roc_curve(...,
drop_intermediate=False)`` plus the threshold above every score. Comparisons with a target
allow 1e-12 of floating-point slack, so 9 of 10 positives count as recall 0.90.

Undefined cases return NaN, never raise: the ranking metrics need both classes (FPR needs
legitimate mail, recall and average precision need malicious mail); Brier and ECE are defined
for one class too. The scalar functions warn with `UndefinedMetricWarning` saying why; the
bootstrap and table functions stay quiet (a single-class resample simply has no value and is left
out of the interval, as `metrics.bootstrap_ci` does for AUROC) and `evaluate_operating` logs the
reason once. Unlike scikit-learn, average precision without malicious messages is NaN, not 0.

`retuned_threshold_f1` answers "how much of a cross-domain F1 drop is the threshold": the
threshold is re-tuned to maximise F1 on the target corpus's validation split and applied to its
test split.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from gendiag.evaluate.metrics import (
    PREDICTION_COLUMNS,
    _examples,
    _safe_ratio,
    _validate,
    bootstrap_ci,
    classification_metrics,
    percentile_intervals,
)

log = logging.getLogger("gendiag.evaluate.operating")

RECALL_TARGETS: tuple[float, ...] = (0.90, 0.95)
FPR_TARGET = 0.01
ECE_BINS = 10
OPERATING_METRICS: tuple[str, ...] = (
    "average_precision",
    *(f"fpr_at_recall_{round(100 * r)}" for r in RECALL_TARGETS),
    f"recall_at_fpr_{round(100 * FPR_TARGET)}",
    "brier",
    "ece",
)
OPERATING_CI_COLUMNS: tuple[str, ...] = tuple(
    f"{m}_ci_{side}" for m in OPERATING_METRICS for side in ("low", "high")
)
RETUNED_COLUMNS: tuple[str, ...] = (
    "retuned_threshold", "retuned_val_f1", "f1_retuned", "f1_retuned_ci_low", "f1_retuned_ci_high",
)
_SLACK = 1e-12


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is NaN because the messages do not define it (e.g. only one class is present)."""


# ---------------------------------------------------------------------------------------------
# Validation and the reasons a metric is undefined
# ---------------------------------------------------------------------------------------------


def _check_fraction(value: Any, name: str, *, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (value > 0.0 if open_low else value >= 0.0) and value <= 1.0
    if not ok:
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must be a number in {interval}; got {value!r}")
    return value


def _prepare(labels: Any, p_malicious: Any) -> tuple[np.ndarray, np.ndarray]:
    return _validate(labels, p_malicious, 0.5)


def _class_counts(positive: np.ndarray) -> tuple[int, int]:
    n_pos = int(positive.sum())
    return n_pos, len(positive) - n_pos


def _undefined(positive: np.ndarray, what: str, needs_legitimate: bool) -> str | None:
    n_pos, n_neg = _class_counts(positive)
    if n_pos == 0:
        return f"{what} is undefined without malicious messages (all {n_neg} are legitimate)"
    if needs_legitimate and n_neg == 0:
        return f"{what} is undefined without legitimate messages (all {n_pos} are malicious)"
    return None


def undefined_reason(labels: Any, metric: str) -> str | None:
    """Why `metric` (a name of `OPERATING_METRICS`) is NaN for these labels, or None if it is defined."""
    if metric not in OPERATING_METRICS:
        raise ValueError(f"metric must be one of {list(OPERATING_METRICS)}; got {metric!r}")
    y = np.asarray(labels)
    positive, _ = _prepare(y, np.zeros(y.shape))
    if metric in ("brier", "ece"):
        return None
    return _undefined(positive, metric, needs_legitimate=metric != "average_precision")


def _warn(reason: str | None) -> None:
    if reason is not None:
        warnings.warn(f"{reason}; returning NaN", UndefinedMetricWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# One code path for the point estimate and the bootstrap: metrics of weighted messages
# ---------------------------------------------------------------------------------------------


def ece_bins(p_malicious: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """The calibration bin of each probability: ``floor(p * n_bins)``, with p = 1 in the last bin.

    ``p * n_bins`` of a probability printed as ``b / n_bins`` is never rounded below ``b`` in
    float64 for ``n_bins = 10`` (0.3 * 10 is 3.0000000000000004), so bin edges are where they read.
    """
    if not (isinstance(n_bins, (int, np.integer)) and not isinstance(n_bins, bool) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    return np.minimum(np.floor(np.asarray(p_malicious, dtype=np.float64) * n_bins), n_bins - 1).astype(np.int64)


def _weighted_operating_metrics(
    weights: np.ndarray, positive: np.ndarray, scores: np.ndarray, bins: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """`OPERATING_METRICS` for every row of `weights` (resamples x messages) at once.

    Messages are sorted by decreasing score once and tied scores collapsed into groups, so the
    cumulative weighted true and false positives at each distinct threshold are two cumulative
    sums; a resample's metric is then what rescoring the resampled messages would give.
    """
    total = weights.sum(axis=1)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w_sorted = weights[:, order]
    pos_sorted = positive[order]
    pos_per_group = np.add.reduceat(w_sorted * pos_sorted, starts, axis=1)
    neg_per_group = np.add.reduceat(w_sorted * ~pos_sorted, starts, axis=1)
    tp = np.cumsum(pos_per_group, axis=1)
    fp = np.cumsum(neg_per_group, axis=1)
    n_pos = tp[:, -1]
    n_neg = fp[:, -1]
    has_pos = n_pos > 0
    has_both = has_pos & (n_neg > 0)
    out: dict[str, np.ndarray] = {}

    # Average precision: every group adds (its positives / P) x the precision at its threshold.
    precision = _safe_ratio(tp, tp + fp)
    ap = np.full(len(total), np.nan)
    np.divide((pos_per_group * precision).sum(axis=1), n_pos, out=ap, where=has_pos)
    out["average_precision"] = ap

    tpr = _safe_ratio(tp, n_pos[:, None])
    fpr = _safe_ratio(fp, n_neg[:, None])
    for target in RECALL_TARGETS:
        # Recall and FPR only grow as the threshold falls: the first group reaching the target
        # recall has the smallest FPR of all the thresholds that reach it.
        first = np.argmax(tpr >= target - _SLACK, axis=1)
        value = fpr[np.arange(len(total)), first]
        out[f"fpr_at_recall_{round(100 * target)}"] = np.where(has_both, value, np.nan)
    allowed = fpr <= FPR_TARGET + _SLACK
    best = np.where(allowed, tpr, 0.0).max(axis=1)  # 0: the threshold above every score
    out[f"recall_at_fpr_{round(100 * FPR_TARGET)}"] = np.where(has_both, best, np.nan)

    y = positive.astype(np.float64)
    out["brier"] = _safe_ratio(weights @ (scores - y) ** 2, total)
    onehot = np.zeros((len(scores), n_bins))
    onehot[np.arange(len(scores)), bins] = 1.0
    observed = weights @ (onehot * y[:, None])
    predicted = weights @ (onehot * scores[:, None])
    out["ece"] = _safe_ratio(np.abs(observed - predicted).sum(axis=1), total)
    return out


def _point(labels: Any, p_malicious: Any, metric: str) -> float:
    positive, scores = _prepare(labels, p_malicious)
    _warn(undefined_reason(positive.astype(int), metric))
    values = _weighted_operating_metrics(np.ones((1, len(scores))), positive, scores, ece_bins(scores))
    return float(values[metric][0])


# ---------------------------------------------------------------------------------------------
# Scalar metrics
# ---------------------------------------------------------------------------------------------


def average_precision(labels: Any, p_malicious: Any) -> float:
    """Average precision (area under the precision-recall curve, step-wise, no interpolation).

    Equals `sklearn.metrics.average_precision_score`; NaN (with a warning) without malicious mail.
    """
    return _point(labels, p_malicious, "average_precision")


def fpr_at_recall(labels: Any, p_malicious: Any, target: float = 0.90) -> float:
    """The smallest FPR among the thresholds whose recall is at least `target` (in (0, 1]).

    Equals ``fpr[tpr >= target].min()`` of ``sklearn.metrics.roc_curve(labels, p,
    drop_intermediate=False)``. NaN (with a warning) unless both classes are present.
    """
    target = _check_fraction(target, "target", open_low=True)
    positive, scores = _prepare(labels, p_malicious)
    reason = _undefined(positive, f"FPR at recall {target:g}", needs_legitimate=True)
    if reason is not None:
        _warn(reason)
        return math.nan
    tpr, fpr = _roc_points(positive, scores)
    return float(fpr[tpr >= target - _SLACK].min())


def recall_at_fpr(labels: Any, p_malicious: Any, max_fpr: float = FPR_TARGET) -> float:
    """The largest recall among the thresholds whose FPR is at most `max_fpr` (in [0, 1]).

    Equals ``tpr[fpr <= max_fpr].max()`` of ``sklearn.metrics.roc_curve(labels, p,
    drop_intermediate=False)``; the threshold above every score (recall 0, FPR 0) always counts.
    NaN (with a warning) unless both classes are present.
    """
    max_fpr = _check_fraction(max_fpr, "max_fpr")
    positive, scores = _prepare(labels, p_malicious)
    reason = _undefined(positive, f"recall at FPR {max_fpr:g}", needs_legitimate=True)
    if reason is not None:
        _warn(reason)
        return math.nan
    tpr, fpr = _roc_points(positive, scores)
    return float(tpr[fpr <= max_fpr + _SLACK].max())


def _roc_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPR and FPR at the threshold above every score and at each distinct score, descending."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last message of each tie group
    tp = np.cumsum(positive[order])[last]
    fp = np.cumsum(~positive[order])[last]
    return np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]


def brier_score(labels: Any, p_malicious: Any) -> float:
    """Mean squared difference between p(malicious) and the label (`sklearn.metrics.brier_score_loss`)."""
    return _point(labels, p_malicious, "brier")


def expected_calibration_error(labels: Any, p_malicious: Any, n_bins: int = ECE_BINS) -> float:
    """ECE of p(malicious): ``sum_b (n_b / n) |mean label - mean p|`` over `n_bins` equal-width bins.

    Bin ``b`` holds ``b / n_bins <= p < (b + 1) / n_bins`` (the last bin includes p = 1); bins are
    weighted by how many messages they hold, and empty bins add nothing. This is the calibration
    of the malicious-class probability (not the top-label ECE of ``max(p, 1 - p)``); it is defined
    for a single class too (then it is the mean distance of p from that label, bin by bin).
    """
    positive, scores = _prepare(labels, p_malicious)
    bins = ece_bins(scores, n_bins)
    values = _weighted_operating_metrics(np.ones((1, len(scores))), positive, scores, bins, n_bins)
    return float(values["ece"][0])


def calibration_bins(labels: Any, p_malicious: Any, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """The reliability table behind `expected_calibration_error`, one row per bin (empty ones too).

    Columns: ``bin``, ``low``, ``high`` (the bin's edges), ``n``, ``mean_p`` and ``frac_malicious``
    (NaN for an empty bin) and ``gap`` = ``|frac_malicious - mean_p|``. ECE is
    ``sum(n * gap) / sum(n)``.
    """
    positive, scores = _prepare(labels, p_malicious)
    bins = ece_bins(scores, n_bins)
    n = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=scores, minlength=n_bins)
    sum_y = np.bincount(bins, weights=positive.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(n > 0, sum_p / n, np.nan)
        frac = np.where(n > 0, sum_y / n, np.nan)
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"bin": np.arange(n_bins), "low": edges[:-1], "high": edges[1:], "n": n,
                         "mean_p": mean_p, "frac_malicious": frac, "gap": np.abs(frac - mean_p)})


def operating_metrics(labels: Any, p_malicious: Any) -> dict[str, float]:
    """Every metric of `OPERATING_METRICS` (NaN where undefined, without warnings)."""
    positive, scores = _prepare(labels, p_malicious)
    values = _weighted_operating_metrics(np.ones((1, len(scores))), positive, scores, ece_bins(scores))
    return {name: float(values[name][0]) for name in OPERATING_METRICS}


def operating_bootstrap_ci(
    labels: Any, p_malicious: Any, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Percentile-bootstrap CIs of `OPERATING_METRICS`: ``{metric}_ci_low`` and ``{metric}_ci_high``.

    The resamples are those of `metrics.bootstrap_ci` with the same `seed` (`metrics.resample_counts`),
    so F1's interval and these describe the same draws. Resamples where a metric is undefined (a
    single class) are left out of its interval; NaN if every resample is like that.
    """
    positive, scores = _prepare(labels, p_malicious)
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise ValueError(f"n_resamples must be a positive integer; got {n_resamples!r}")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1; got {confidence!r}")
    bins = ece_bins(scores)
    return percentile_intervals(
        lambda counts: _weighted_operating_metrics(counts, positive, scores, bins), OPERATING_METRICS, len(scores),
        n_resamples, seed, confidence,
    )


# ---------------------------------------------------------------------------------------------
# Threshold re-tuned on the target corpus
# ---------------------------------------------------------------------------------------------


def best_f1_threshold(labels: Any, p_malicious: Any) -> tuple[float, float]:
    """The threshold that maximises F1 on these messages, and that F1.

    The candidates are the distinct scores (flag ``p >= t``); among thresholds with the same,
    maximal F1 the highest is chosen (the fewest false alarms). NaN, NaN (with a warning) unless
    both classes are present: without malicious mail every threshold has F1 0, and without
    legitimate mail the "best" threshold merely flags everything.
    """
    positive, scores = _prepare(labels, p_malicious)
    n_pos, n_neg = _class_counts(positive)
    if n_pos == 0 or n_neg == 0:
        which = "malicious" if n_pos == 0 else "legitimate"
        warnings.warn(f"cannot tune a threshold without {which} messages (got {n_pos} malicious, "
                      f"{n_neg} legitimate); returning NaN", UndefinedMetricWarning, stacklevel=2)
        return math.nan, math.nan
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(positive[order])[last].astype(np.float64)
    fp = np.cumsum(~positive[order])[last].astype(np.float64)
    f1 = 2.0 * tp / (tp + fp + n_pos)  # 2tp / (2tp + fp + fn), fn = n_pos - tp
    best = int(np.argmax(f1))  # first maximum in descending score order: the highest threshold
    return float(s[last][best]), float(f1[best])


def retuned_threshold_f1(val_labels: Any, val_scores: Any, test_labels: Any, test_scores: Any) -> dict[str, float]:
    """F1 on a test split at the threshold that maximises F1 on the same corpus's validation split.

    Compare ``f1_retuned`` with F1 at the fixed threshold: the difference is the part of a
    cross-domain drop a new threshold would recover. Returns ``{"retuned_threshold",
    "retuned_val_f1", "f1_retuned"}``; all NaN (with a warning) when the validation split lacks a
    class. Test F1 follows `metrics.classification_metrics` (0 without malicious test mail).
    """
    threshold, val_f1 = best_f1_threshold(val_labels, val_scores)
    positive, scores = _prepare(test_labels, test_scores)
    f1 = math.nan if math.isnan(threshold) else classification_metrics(positive.astype(int), scores, threshold)["f1"]
    return {"retuned_threshold": threshold, "retuned_val_f1": val_f1, "f1_retuned": f1}


# ---------------------------------------------------------------------------------------------
# One prediction file
# ---------------------------------------------------------------------------------------------


def _check_predictions(df: Any, what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of {what}; got {type(df).__name__}")
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{what} are missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)}, "
                         f"got {list(df.columns)}")


def evaluate_operating(
    df: pd.DataFrame, n_resamples: int, seed: int, *, val: pd.DataFrame | None = None, confidence: float = 0.95
) -> dict[str, Any]:
    """`OPERATING_METRICS` and their bootstrap CIs for one prediction file (+ re-tuned F1 given `val`).

    `df` holds a model's predictions on a test set (``uid``, ``label``, ``p_malicious``). `val`,
    when given, holds the same model's predictions on the validation split of the corpus the test
    set comes from (the target corpus, not the model's training recipe); it adds
    `RETUNED_COLUMNS`, whose CI resamples the test messages at the re-tuned threshold (the
    threshold's own sampling variation is not included). Metrics a single-class test set leaves
    undefined are NaN and logged once.
    """
    _check_predictions(df, "test predictions")
    positive, scores = _prepare(df["label"], df["p_malicious"])
    out: dict[str, Any] = operating_metrics(positive.astype(int), scores)
    reasons = [r for m in OPERATING_METRICS if (r := undefined_reason(positive.astype(int), m))]
    if reasons:
        log.info("%d of %d operating metrics are NaN: %s", len(reasons), len(OPERATING_METRICS), "; ".join(reasons))
    out.update(operating_bootstrap_ci(positive.astype(int), scores, n_resamples=n_resamples,
                                      confidence=confidence, seed=seed))
    if val is None:
        return out
    _check_predictions(val, "validation predictions")
    shared = np.intersect1d(df["uid"].astype(str).to_numpy(), val["uid"].astype(str).to_numpy())
    if len(shared):
        raise ValueError(
            f"validation and test predictions share {len(shared)} uid(s), e.g. {_examples(shared)}; `val` must be "
            "the predictions on the target corpus's validation split, not on its test set"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        retuned = retuned_threshold_f1(val["label"], val["p_malicious"], positive.astype(int), scores)
    threshold = retuned["retuned_threshold"]
    if math.isnan(threshold):
        log.info("no re-tuned threshold: the validation split has a single class")
        low = high = math.nan
    else:
        ci = bootstrap_ci(positive.astype(int), scores, n_resamples=n_resamples, confidence=confidence,
                          seed=seed, threshold=threshold)
        low, high = ci["f1_ci_low"], ci["f1_ci_high"]
    out.update(retuned, f1_retuned_ci_low=low, f1_retuned_ci_high=high)
    return out
