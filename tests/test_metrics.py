import math
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from gendiag.evaluate.metrics import (
    CI_COLUMNS,
    METRICS,
    bootstrap_ci,
    classification_metrics,
    evaluate_predictions,
)

# Four malicious, six legitimate. At threshold 0.5: TP=3 (0.9, 0.8, 0.6), FN=1 (0.3),
# FP=2 (0.7, and 0.5 which sits on the threshold), TN=4.
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
SCORES = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.5]


def test_hand_computed_example():
    m = classification_metrics(LABELS, SCORES)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["accuracy"] == pytest.approx(7 / 10)
    # Positive/negative pairs ranked correctly: 6 + 6 + 5 + 3 of 4 * 6.
    assert m["auroc"] == pytest.approx(20 / 24)


def test_threshold_moves_the_decision_not_the_auroc():
    m = classification_metrics(LABELS, SCORES, threshold=0.65)
    assert m["precision"] == pytest.approx(2 / 3)  # 0.9, 0.8 and the 0.7 false positive
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["auroc"] == pytest.approx(20 / 24)


def test_matches_scikit_learn_including_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 80))
        y = rng.integers(0, 2, n)
        p = np.round(rng.random(n), 1)  # coarse scores: many ties
        pred = (p >= 0.5).astype(int)
        m = classification_metrics(y, p)
        assert m["f1"] == pytest.approx(f1_score(y, pred, zero_division=0))
        assert m["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
        assert m["recall"] == pytest.approx(recall_score(y, pred, zero_division=0))
        assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
        if len(set(y)) == 2:
            assert m["auroc"] == pytest.approx(roc_auc_score(y, p))


def test_perfect_predictor_has_degenerate_interval():
    y = np.array([0, 1] * 20)
    p = y.astype(float)
    m = classification_metrics(y, p)
    assert m["f1"] == 1.0 and m["auroc"] == 1.0
    ci = bootstrap_ci(y, p, n_resamples=200, seed=1)
    assert (ci["f1_ci_low"], ci["f1_ci_high"]) == (1.0, 1.0)
    assert (ci["auroc_ci_low"], ci["auroc_ci_high"]) == (1.0, 1.0)


def test_single_class_auroc_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])
        ci = bootstrap_ci([0, 0, 0], [0.1, 0.2, 0.3], n_resamples=50)
    assert math.isnan(m["auroc"])
    assert math.isnan(ci["auroc_ci_low"]) and math.isnan(ci["auroc_ci_high"])
    # Nothing predicted positive: precision (and F1, recall) are 0, not an error or a warning.
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1, 1], [0.2, 0.8], "same length"),
        ([0, 2, 1], [0.2, 0.8, 0.5], "labels must be 0 or 1"),
        (["a", "b"], [0.2, 0.8], "labels must be integers"),
        (pd.Series(["0", "1"], dtype=object), [0.2, 0.8], "labels must be integers"),
        ([0, 1], ["0.2", "0.8"], "p_malicious must be floats"),
        ([0, 1], [0.2, 1.5], r"in \[0, 1\]"),
        ([0, 1], [0.2, float("nan")], "finite"),
        ([], [], "at least one"),
        ([[0, 1]], [[0.2, 0.8]], "1-D"),
    ],
)
def test_bad_input_names_the_problem(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(labels, scores)


def test_bad_bootstrap_settings():
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(LABELS, SCORES, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(LABELS, SCORES, confidence=95)
    with pytest.raises(ValueError, match="threshold"):
        classification_metrics(LABELS, SCORES, threshold=2)


def _random_example(n=400, seed=7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-rng.normal(2.0 * (2 * y - 1), 2.0)))
    return y, p


def test_bootstrap_is_deterministic_per_seed_and_contains_the_estimate():
    y, p = _random_example()
    a = bootstrap_ci(y, p, n_resamples=500, seed=11)
    b = bootstrap_ci(y, p, n_resamples=500, seed=11)
    c = bootstrap_ci(y, p, n_resamples=500, seed=12)
    assert a == b
    assert a != c
    assert set(a) == set(CI_COLUMNS)
    point = classification_metrics(y, p)
    for name in METRICS:
        assert a[f"{name}_ci_low"] < point[name] < a[f"{name}_ci_high"], name
        assert a[f"{name}_ci_high"] - a[f"{name}_ci_low"] < 0.2, name


def test_bootstrap_equals_naive_resampling():
    """The count-matrix shortcut gives what resampling the rows and rescoring them would."""
    y, p = _random_example(n=60)
    y[:3] = 1  # keep both classes in every resample likely; NaNs are checked elsewhere
    n_resamples = 40
    index = np.random.default_rng(5).integers(0, len(y), size=(n_resamples, len(y)))
    naive = {name: [] for name in METRICS}
    for row in index:
        for name, value in classification_metrics(y[row], p[row]).items():
            naive[name].append(value)
    ci = bootstrap_ci(y, p, n_resamples=n_resamples, seed=5)
    for name in METRICS:
        low, high = np.nanquantile(naive[name], [0.025, 0.975])
        assert ci[f"{name}_ci_low"] == pytest.approx(low)
        assert ci[f"{name}_ci_high"] == pytest.approx(high)


def test_bootstrap_is_fast():
    y, p = _random_example(n=300)
    start = time.perf_counter()
    bootstrap_ci(y, p, n_resamples=1000)
    assert time.perf_counter() - start < 0.5


def test_evaluate_predictions():
    df = pd.DataFrame(
        {
            "uid": [f"m{i}" for i in range(len(LABELS))],
            "label": LABELS,
            "p_malicious": SCORES,
            "pred": [int(s >= 0.5) for s in SCORES],
        }
    )
    out = evaluate_predictions(df, n_resamples=100, seed=0)
    assert list(out) == ["n", *METRICS, *CI_COLUMNS]
    assert out["n"] == 10
    assert out["f1"] == pytest.approx(2 / 3)


def test_evaluate_predictions_rejects_bad_tables():
    df = pd.DataFrame({"uid": ["a", "a"], "label": [0, 1], "p_malicious": [0.1, 0.9]})
    with pytest.raises(ValueError, match="duplicated uid"):
        evaluate_predictions(df, n_resamples=10, seed=0)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['p_malicious'\]"):
        evaluate_predictions(df.drop(columns="p_malicious"), n_resamples=10, seed=0)


def test_evaluate_predictions_warns_when_pred_disagrees_with_threshold(caplog):
    df = pd.DataFrame({"uid": ["a", "b"], "label": [0, 1], "p_malicious": [0.1, 0.9], "pred": [1, 1]})
    with caplog.at_level("WARNING", logger="gendiag"):
        evaluate_predictions(df, n_resamples=10, seed=0)
    assert "1 of 2 rows have 'pred'" in caplog.text
