"""Binary classification metrics with percentile-bootstrap confidence intervals.

The positive class is 1 (malicious). Every metric is computed from per-message weights:
the point estimate uses weight 1 for every message, a bootstrap resample uses how often each
message was drawn. One code path therefore serves both, and the bootstrap is a handful of
matrix products over a (resamples x messages) count matrix instead of a Python loop.

Zero-division convention (same as scikit-learn's ``zero_division=0``): precision is 0 when
nothing is predicted positive, recall is 0 when there are no positives, F1 is 0 when there is
no true positive. AUROC is NaN when only one class is present.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("gendiag.evaluate.metrics")

METRICS: tuple[str, ...] = ("f1", "precision", "recall", "accuracy", "auroc")
CI_COLUMNS: tuple[str, ...] = tuple(f"{m}_ci_{side}" for m in METRICS for side in ("low", "high"))
PREDICTION_COLUMNS: tuple[str, ...] = ("uid", "label", "p_malicious")

# Upper bound on resamples x messages held in memory at once (~40 MB of float64); larger test
# sets are processed in chunks of resamples so real corpora with 10^4+ messages still fit.
_MAX_CELLS_PER_CHUNK = 5_000_000


def _examples(values: np.ndarray, k: int = 5) -> str:
    shown = [v.item() if hasattr(v, "item") else v for v in values[:k]]
    return repr(shown) + (" ..." if len(values) > k else "")


def _validate(labels: Any, p_malicious: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Return labels as bool and probabilities as float64, or raise ValueError saying what is wrong."""
    y = np.asarray(labels)
    p = np.asarray(p_malicious)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(
            f"labels and p_malicious must be 1-D; got shapes {y.shape} and {p.shape}"
        )
    if len(y) != len(p):
        raise ValueError(
            f"labels and p_malicious must have the same length; got {len(y)} labels "
            f"and {len(p)} probabilities"
        )
    if len(y) == 0:
        raise ValueError("expected at least one prediction; got 0 labels")
    # Object arrays (pandas nullable dtypes) are fine, but text must not be parsed into numbers:
    # a label column read as strings means the file was written wrong.
    if y.dtype.kind not in "biufO" or (y.dtype.kind == "O" and any(isinstance(v, (str, bytes)) for v in y)):
        raise ValueError(
            f"labels must be integers 0/1 (1 = malicious); got {y.dtype} values, e.g. {_examples(y)}"
        )
    if p.dtype.kind not in "biufO" or (p.dtype.kind == "O" and any(isinstance(v, (str, bytes)) for v in p)):
        raise ValueError(
            f"p_malicious must be floats in [0, 1]; got {p.dtype} values, e.g. {_examples(p)}"
        )
    try:
        y = y.astype(np.float64)
        p = p.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"labels and p_malicious must be numeric without missing values: {err}") from err

    bad_y = ~np.isin(y, (0.0, 1.0))
    if bad_y.any():
        raise ValueError(
            f"labels must be 0 or 1 (1 = malicious); got {int(bad_y.sum())} value(s) outside "
            f"{{0, 1}}, e.g. {_examples(y[bad_y])}"
        )
    bad_p = ~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))
    if bad_p.any():
        raise ValueError(
            f"p_malicious must be finite probabilities in [0, 1]; got {int(bad_p.sum())} value(s) "
            f"outside, e.g. {_examples(p[bad_p])}"
        )
    if not (isinstance(threshold, (int, float, np.floating)) and 0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1]; got {threshold!r}")
    return y == 1.0, p


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _weighted_metrics(
    weights: np.ndarray, positive: np.ndarray, scores: np.ndarray, predicted: np.ndarray
) -> dict[str, np.ndarray]:
    """Metrics for every row of `weights` (shape resamples x messages) at once."""
    tp = weights @ (positive & predicted).astype(np.float64)
    fp = weights @ (~positive & predicted).astype(np.float64)
    fn = weights @ (positive & ~predicted).astype(np.float64)
    total = weights.sum(axis=1)
    n_pos = tp + fn

    precision = _safe_ratio(tp, tp + fp)
    recall = _safe_ratio(tp, n_pos)
    f1 = _safe_ratio(2.0 * tp, 2.0 * tp + fp + fn)
    accuracy = _safe_ratio(total - fp - fn, total)

    # AUROC as the Mann-Whitney statistic on weighted data: sort the scores once, collapse ties
    # into groups, then for each group count positives times (negatives strictly below + half of
    # the negatives tied with them). Identical to roc_auc_score, including its tie handling.
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w_sorted = weights[:, order]
    pos_sorted = positive[order]
    pos_per_group = np.add.reduceat(w_sorted * pos_sorted, starts, axis=1)
    neg_per_group = np.add.reduceat(w_sorted * ~pos_sorted, starts, axis=1)
    neg_below = np.cumsum(neg_per_group, axis=1) - neg_per_group
    concordant = (pos_per_group * (neg_below + 0.5 * neg_per_group)).sum(axis=1)
    n_neg = total - n_pos
    pairs = n_pos * n_neg
    auroc = np.full_like(concordant, np.nan)
    np.divide(concordant, pairs, out=auroc, where=pairs > 0)

    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": accuracy, "auroc": auroc}


def classification_metrics(labels: Any, p_malicious: Any, threshold: float = 0.5) -> dict[str, float]:
    """F1, precision, recall, accuracy and AUROC for the malicious class.

    A message is predicted malicious when ``p_malicious >= threshold``.
    """
    positive, scores = _validate(labels, p_malicious, threshold)
    predicted = scores >= threshold
    values = _weighted_metrics(np.ones((1, len(scores))), positive, scores, predicted)
    return {name: float(values[name][0]) for name in METRICS}


def resample_counts(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's resamples of `n` messages as count matrices, a chunk of resamples at a time.

    Each yielded float64 matrix has one row per resample and one column per message: how often
    the message was drawn (with replacement, `n` draws per resample) from a generator seeded with
    `seed`. `bootstrap_ci` and `gendiag.evaluate.operating` draw through here, so the same `seed`
    gives them the same resamples (and `significance` draws the same way).
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CELLS_PER_CHUNK // n)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        index = rng.integers(0, n, size=(b, n))
        # How often each message was drawn in each resample: one bincount over offset indices.
        offsets = (np.arange(b, dtype=np.int64) * n)[:, None]
        counts = np.bincount((index + offsets).ravel(), minlength=b * n).reshape(b, n)
        yield counts.astype(np.float64)


def bootstrap_ci(
    labels: Any,
    p_malicious: Any,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Percentile-bootstrap confidence intervals for every metric in `METRICS`.

    Messages are resampled with replacement, `n_resamples` times, from a generator seeded with
    `seed`, so the result is a pure function of its arguments. Resamples that contain a single
    class have no AUROC and are left out of its interval (NaN if every resample is like that).
    Returns ``{metric}_ci_low`` and ``{metric}_ci_high``.
    """
    positive, scores = _validate(labels, p_malicious, threshold)
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise ValueError(f"n_resamples must be a positive integer; got {n_resamples!r}")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1; got {confidence!r}")

    predicted = scores >= threshold
    return percentile_intervals(
        lambda counts: _weighted_metrics(counts, positive, scores, predicted), METRICS, len(scores), n_resamples,
        seed, confidence,
    )


def percentile_intervals(weighted_metrics, names: Sequence[str], n: int, n_resamples: int, seed: int,
                         confidence: float) -> dict[str, float]:
    """``{name}_ci_low``/``{name}_ci_high`` percentile intervals of the metrics `weighted_metrics`
    computes from each chunk of `resample_counts(n, n_resamples, seed)` ({name: one value per
    resample}); resamples where a metric is undefined (NaN) are left out of its interval."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for counts in resample_counts(n, n_resamples, seed):
        for name, values in weighted_metrics(counts).items():
            parts[name].append(values)
    alpha = (1.0 - confidence) / 2.0
    out: dict[str, float] = {}
    for name in names:
        values = np.concatenate(parts[name])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> NaN interval
            low, high = np.nanquantile(values, [alpha, 1.0 - alpha])
        out[f"{name}_ci_low"] = float(low)
        out[f"{name}_ci_high"] = float(high)
    return out


def evaluate_predictions(
    df: pd.DataFrame,
    n_resamples: int,
    seed: int,
    threshold: float = 0.5,
    *,
    operating: bool = False,
    val: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Metrics and their bootstrap CIs for one prediction file.

    `df` needs ``uid``, ``label`` and ``p_malicious``; the decision is re-derived from
    ``p_malicious >= threshold`` so that every model is scored at the same threshold. If a
    ``pred`` column disagrees with that decision, a warning says how often.
    Returns ``{"n": ..., <METRICS>, <CI_COLUMNS>}``; with `operating`, followed by
    `operating.OPERATING_METRICS` and `operating.OPERATING_CI_COLUMNS` (PR-AUC, FPR at recall
    0.90/0.95, recall at FPR 0.01, Brier, ECE, on the same bootstrap draws). `val`, the same
    model's predictions on the validation split of the test set's own corpus, adds
    `operating.RETUNED_COLUMNS` (F1 at the threshold re-tuned on that split); it needs `operating`.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of predictions; got {type(df).__name__}")
    if val is not None and not operating:
        raise ValueError("val (predictions for the re-tuned threshold) is only used with operating=True")
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"prediction table is missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)} "
            f"(+ optional 'pred'), got {list(df.columns)}"
        )
    duplicated = df["uid"][df["uid"].duplicated()]
    if len(duplicated):
        raise ValueError(
            f"prediction table has {len(duplicated)} duplicated uid(s), e.g. "
            f"{_examples(duplicated.unique())}; each message must be scored once"
        )

    point = classification_metrics(df["label"], df["p_malicious"], threshold=threshold)
    if "pred" in df.columns:
        recomputed = (df["p_malicious"].to_numpy(dtype=np.float64) >= threshold).astype(int)
        disagree = int((recomputed != df["pred"].to_numpy()).sum())
        if disagree:
            log.warning(
                "%d of %d rows have 'pred' != (p_malicious >= %g); metrics use the threshold",
                disagree, len(df), threshold,
            )
    ci = bootstrap_ci(
        df["label"], df["p_malicious"], n_resamples=n_resamples, seed=seed, threshold=threshold
    )
    out = {"n": len(df), **point, **ci}
    if operating:
        from gendiag.evaluate.operating import evaluate_operating  # imports this module

        out.update(evaluate_operating(df, n_resamples=n_resamples, seed=seed, val=val))
    return out


def prediction_files(
    runs: Sequence[Sequence[Any]], testsets: Sequence[str], paths: Sequence[str]
) -> list[tuple[str, str, str, int, str, str]]:
    """``(arch, recipe, paradigm, seed, testset, path)`` for prediction files listed runs x test sets.

    The workflow lists a rule's prediction inputs in the order of its `runs` and `testsets` params;
    each path is checked against its key so that a reordering can never mislabel a file.
    """
    keys = [(*run, testset) for run in runs for testset in testsets]
    if len(keys) != len(paths):
        raise RuntimeError(f"{len(paths)} prediction files for {len(keys)} runs x test sets")
    out = []
    for (arch, recipe, paradigm, seed, testset), path in zip(keys, paths, strict=True):
        if Path(path).stem != testset or f"/{arch}/{recipe}/{paradigm}/seed{seed}/" not in str(path):
            raise RuntimeError(
                f"prediction file {path} does not belong to {arch}/{recipe}/{paradigm}/seed{seed}/{testset}"
            )
        out.append((arch, recipe, paradigm, int(seed), testset, str(path)))
    return out
