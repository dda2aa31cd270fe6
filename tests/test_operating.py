"""Operating-point and calibration metrics: checked against scikit-learn and against hand computations."""

import logging
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_curve

from gendiag.evaluate.metrics import CI_COLUMNS, METRICS, bootstrap_ci, evaluate_predictions
from gendiag.evaluate.operating import (
    OPERATING_CI_COLUMNS,
    OPERATING_METRICS,
    RETUNED_COLUMNS,
    UndefinedMetricWarning,
    average_precision,
    best_f1_threshold,
    brier_score,
    calibration_bins,
    ece_bins,
    evaluate_operating,
    expected_calibration_error,
    fpr_at_recall,
    operating_bootstrap_ci,
    operating_metrics,
    recall_at_fpr,
    retuned_threshold_f1,
    undefined_reason,
)

# scikit-learn's documented example, small enough to work out by hand.
Y4, P4 = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
# Ties across classes (0.5, 0.7, 0.2 appear in both), so tie handling is exercised too.
Y_TIES = [0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0]
P_TIES = [0.5, 0.5, 0.9, 0.7, 0.7, 0.2, 0.1, 0.2, 0.95, 0.05, 0.6, 0.3]


def _sklearn_reference(y, p):
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return {
        "average_precision": average_precision_score(y, p),
        "fpr_at_recall_90": fpr[tpr >= 0.90].min(),
        "fpr_at_recall_95": fpr[tpr >= 0.95].min(),
        "recall_at_fpr_1": tpr[fpr <= 0.01].max(),
        "brier": brier_score_loss(y, p),
    }


def _random_example(n=300, seed=3, rounding=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.round(1 / (1 + np.exp(-rng.normal(1.5 * (2 * y - 1), 1.5))), rounding)  # rounded: many ties
    return y, p


# --- hand-built cases against scikit-learn ------------------------------------------------------


def test_hand_example_worked_out():
    # Thresholds 0.8 (tp 1, fp 0), 0.4 (1, 1), 0.35 (2, 1), 0.1 (2, 2).
    assert average_precision(Y4, P4) == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    assert fpr_at_recall(Y4, P4, 0.90) == 0.5  # recall 1 is first reached at 0.35, with one false alarm
    assert recall_at_fpr(Y4, P4, 0.01) == 0.5  # only the 0.8 threshold has no false alarm
    assert brier_score(Y4, P4) == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)


@pytest.mark.parametrize(("y", "p"), [(Y4, P4), (Y_TIES, P_TIES), _random_example(), _random_example(40, 9, 1)])
def test_matches_scikit_learn(y, p):
    expected = _sklearn_reference(y, p)
    got = operating_metrics(y, p)
    assert list(got) == list(OPERATING_METRICS)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert average_precision(y, p) == pytest.approx(expected["average_precision"])
    assert fpr_at_recall(y, p, 0.95) == pytest.approx(expected["fpr_at_recall_95"])
    assert recall_at_fpr(y, p, 0.01) == pytest.approx(expected["recall_at_fpr_1"])
    assert brier_score(y, p) == pytest.approx(expected["brier"])


@pytest.mark.parametrize("target", [0.1, 0.5, 0.75, 0.9, 0.95, 1.0])
def test_fpr_at_recall_is_the_smallest_fpr_reaching_the_target(target):
    y, p = _random_example(80, seed=4)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    assert fpr_at_recall(y, p, target) == pytest.approx(fpr[tpr >= target].min())


@pytest.mark.parametrize("max_fpr", [0.0, 0.01, 0.05, 0.2, 1.0])
def test_recall_at_fpr_is_the_largest_recall_within_the_budget(max_fpr):
    y, p = _random_example(80, seed=5)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    assert recall_at_fpr(y, p, max_fpr) == pytest.approx(tpr[fpr <= max_fpr].max())


def test_a_target_recall_reached_exactly_counts():
    # 9 of 10 malicious messages above every legitimate one: recall 0.9 costs no false alarm.
    y = [1] * 10 + [0] * 5
    p = [0.9] * 9 + [0.1] + [0.2, 0.3, 0.4, 0.5, 0.6]
    assert fpr_at_recall(y, p, 0.90) == 0.0
    assert fpr_at_recall(y, p, 0.95) == 1.0  # the last malicious message scores below every legitimate one
    assert recall_at_fpr(y, p, 0.01) == 0.9


def test_recall_at_fpr_is_zero_when_the_top_message_is_legitimate():
    assert recall_at_fpr([0, 1, 1], [0.9, 0.8, 0.7], 0.01) == 0.0


# --- ECE against a hand computation -------------------------------------------------------------


ECE_Y = [0, 0, 1, 1, 0, 1, 0, 1, 1]
ECE_P = [0.05, 0.15, 0.12, 0.25, 0.3, 0.55, 0.58, 0.95, 1.0]


def test_ece_by_hand():
    # bin 0: {0.05 -> 0}             gap 0.05,  n 1
    # bin 1: {0.15 -> 0, 0.12 -> 1}  mean p 0.135, share 0.5, gap 0.365, n 2
    # bin 2: {0.25 -> 1}             gap 0.75,  n 1
    # bin 3: {0.3 -> 0}              gap 0.3,   n 1   (0.3 sits on an edge and belongs to bin 3)
    # bin 5: {0.55 -> 1, 0.58 -> 0}  mean p 0.565, share 0.5, gap 0.065, n 2
    # bin 9: {0.95 -> 1, 1.0 -> 1}   mean p 0.975, share 1, gap 0.025, n 2   (p = 1 is in the last bin)
    by_hand = (0.05 + 2 * 0.365 + 0.75 + 0.3 + 2 * 0.065 + 2 * 0.025) / 9
    assert expected_calibration_error(ECE_Y, ECE_P) == pytest.approx(by_hand)
    assert operating_metrics(ECE_Y, ECE_P)["ece"] == pytest.approx(by_hand)

    table = calibration_bins(ECE_Y, ECE_P)
    assert list(table["n"]) == [1, 2, 1, 1, 0, 2, 0, 0, 0, 2]
    assert table.loc[1, "mean_p"] == pytest.approx(0.135) and table.loc[1, "frac_malicious"] == 0.5
    assert math.isnan(table.loc[4, "gap"])  # empty bins have no gap and add nothing
    assert (table["n"] * table["gap"].fillna(0)).sum() / table["n"].sum() == pytest.approx(by_hand)
    assert table["low"].tolist()[:3] == [0.0, 0.1, 0.2] and table["high"].iloc[-1] == 1.0


def test_ece_bin_edges():
    assert ece_bins(np.array([0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 0.9999, 1.0])).tolist() == [0, 1, 2, 3, 6, 7, 9, 9, 9]
    assert ece_bins(np.array([0.0, 0.5, 1.0]), n_bins=2).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="n_bins"):
        ece_bins(np.array([0.5]), n_bins=0)


def test_ece_of_perfect_and_of_constant_forecasts():
    # Half malicious, everyone told 0.5: calibrated. Everyone told 0.9: off by 0.4.
    y = [0, 1] * 10
    assert expected_calibration_error(y, [0.5] * 20) == pytest.approx(0.0)
    assert expected_calibration_error(y, [0.9] * 20) == pytest.approx(0.4)
    # Fewer bins merge them: one bin is |mean label - mean p| overall.
    assert expected_calibration_error(ECE_Y, ECE_P, n_bins=1) == pytest.approx(abs(np.mean(ECE_Y) - np.mean(ECE_P)))


# --- degenerate cases ---------------------------------------------------------------------------


def test_single_class_ranking_metrics_are_nan_with_a_reason():
    legit = ([0, 0, 0], [0.1, 0.2, 0.9])
    with pytest.warns(UndefinedMetricWarning, match="without malicious messages"):
        assert math.isnan(average_precision(*legit))
    with pytest.warns(UndefinedMetricWarning, match="without malicious"):
        assert math.isnan(fpr_at_recall(*legit))
    with pytest.warns(UndefinedMetricWarning, match="without legitimate messages"):
        assert math.isnan(recall_at_fpr([1, 1], [0.3, 0.8]))
    # Average precision needs only malicious mail; Brier and ECE need neither class in particular.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert average_precision([1, 1], [0.3, 0.8]) == 1.0
        assert brier_score(*legit) == pytest.approx((0.01 + 0.04 + 0.81) / 3)
        assert expected_calibration_error([0, 0], [0.1, 0.2]) == pytest.approx(0.15)
        m = operating_metrics(*legit)  # the table function stays quiet
    assert [name for name, v in m.items() if math.isnan(v)] == [
        "average_precision", "fpr_at_recall_90", "fpr_at_recall_95", "recall_at_fpr_1"]
    assert undefined_reason([0, 0], "fpr_at_recall_95").startswith("fpr_at_recall_95 is undefined without malicious")
    assert undefined_reason([1, 1], "average_precision") is None
    assert undefined_reason([1, 1], "recall_at_fpr_1").endswith("(all 2 are malicious)")
    assert undefined_reason([0, 1], "ece") is None


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="same length"):
        operating_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        brier_score([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_calibration_error([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match=r"target must be a number in \(0, 1\]"):
        fpr_at_recall(Y4, P4, 0.0)
    with pytest.raises(ValueError, match="max_fpr"):
        recall_at_fpr(Y4, P4, 5)
    with pytest.raises(ValueError, match="metric must be one of"):
        undefined_reason([0, 1], "f1")
    with pytest.raises(ValueError, match="n_resamples"):
        operating_bootstrap_ci(Y4, P4, n_resamples=0)


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_equals_naive_resampling_scored_by_scikit_learn():
    """The weighted kernel gives, per resample, what rescoring the drawn messages with sklearn gives."""
    y, p = _random_example(n=50, seed=8)
    n_resamples = 40
    index = np.random.default_rng(2).integers(0, len(y), size=(n_resamples, len(y)))  # = resample_counts' draws
    naive = {name: [] for name in OPERATING_METRICS}
    for row in index:
        yy, pp = y[row], p[row]
        both = 0 < yy.sum() < len(yy)
        reference = _sklearn_reference(yy, pp) if both else dict.fromkeys(OPERATING_METRICS, math.nan)
        reference["brier"] = brier_score_loss(yy, pp)
        table = calibration_bins(yy, pp)
        reference["ece"] = float((table["n"] * table["gap"].fillna(0)).sum() / len(yy))
        for name in OPERATING_METRICS:
            naive[name].append(reference[name])
    ci = operating_bootstrap_ci(y, p, n_resamples=n_resamples, seed=2)
    assert list(ci) == list(OPERATING_CI_COLUMNS)
    for name in OPERATING_METRICS:
        low, high = np.nanquantile(naive[name], [0.025, 0.975])
        assert ci[f"{name}_ci_low"] == pytest.approx(low), name
        assert ci[f"{name}_ci_high"] == pytest.approx(high), name


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    y, p = _random_example(n=400, seed=1, rounding=4)
    a = operating_bootstrap_ci(y, p, n_resamples=300, seed=4)
    assert a == operating_bootstrap_ci(y, p, n_resamples=300, seed=4)
    assert a != operating_bootstrap_ci(y, p, n_resamples=300, seed=5)
    point = operating_metrics(y, p)
    for name in OPERATING_METRICS:
        assert a[f"{name}_ci_low"] <= point[name] <= a[f"{name}_ci_high"], name


def test_bootstrap_of_a_single_class_is_nan_for_ranking_metrics_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = operating_bootstrap_ci([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], n_resamples=30)
    assert math.isnan(ci["average_precision_ci_low"]) and math.isnan(ci["recall_at_fpr_1_ci_high"])
    assert ci["brier_ci_low"] <= ci["brier_ci_high"]


# --- re-tuned threshold -------------------------------------------------------------------------


def test_best_f1_threshold_by_hand_and_by_brute_force():
    # Thresholds 0.7: F1 2/4; 0.6: 4/5; 0.3: 4/6; 0.2: 6/7; 0.1: 6/8.
    val_y, val_p = [0, 0, 1, 1, 1], [0.1, 0.3, 0.2, 0.6, 0.7]
    threshold, f1 = best_f1_threshold(val_y, val_p)
    assert threshold == 0.2 and f1 == pytest.approx(6 / 7)
    y, p = _random_example(120, seed=6)
    threshold, f1 = best_f1_threshold(y, p)
    brute = {t: f1_score(y, (p >= t).astype(int)) for t in np.unique(p)}
    assert f1 == pytest.approx(max(brute.values()))
    assert threshold == max(t for t, v in brute.items() if v == pytest.approx(f1))


def test_best_f1_threshold_breaks_ties_towards_the_higher_threshold():
    # 0.9 (tp 1, fp 0) and 0.6 (tp 2, fp 2) both give F1 2/3: the one with fewer false alarms wins.
    assert best_f1_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) == (0.9, pytest.approx(2 / 3))


def test_retuned_threshold_f1_applies_the_validation_threshold_to_the_test_split():
    out = retuned_threshold_f1([0, 0, 1, 1, 1], [0.1, 0.3, 0.2, 0.6, 0.7], [0, 1, 1, 0], [0.25, 0.22, 0.15, 0.1])
    # Test at p >= 0.2: predicted [1, 1, 0, 0]: tp 1, fp 1, fn 1.
    assert out == {"retuned_threshold": 0.2, "retuned_val_f1": pytest.approx(6 / 7), "f1_retuned": pytest.approx(0.5)}
    assert out["f1_retuned"] == pytest.approx(f1_score([0, 1, 1, 0], [1, 1, 0, 0]))


def test_retuned_threshold_needs_both_classes_in_validation():
    with pytest.warns(UndefinedMetricWarning, match="without malicious"):
        out = retuned_threshold_f1([0, 0], [0.1, 0.2], [0, 1], [0.1, 0.9])
    assert all(math.isnan(v) for v in out.values())
    with pytest.warns(UndefinedMetricWarning, match="without legitimate"):
        assert math.isnan(best_f1_threshold([1, 1], [0.1, 0.2])[0])


# --- one prediction file ------------------------------------------------------------------------


def _predictions(n, seed, prefix, shift=0.0):
    y, p = _random_example(n, seed, rounding=3)
    return pd.DataFrame({"uid": [f"{prefix}{i}" for i in range(n)], "label": y,
                         "p_malicious": np.clip(p + shift, 0, 1)})


def test_evaluate_predictions_with_operating_metrics_and_retuned_threshold():
    test = _predictions(200, 1, "t", shift=0.4)  # a shifted model: 0.5 is the wrong threshold here
    val = _predictions(100, 2, "v", shift=0.4)
    plain = evaluate_predictions(test, n_resamples=100, seed=3)
    assert list(plain) == ["n", *METRICS, *CI_COLUMNS]  # unchanged without the new options
    out = evaluate_predictions(test, n_resamples=100, seed=3, operating=True, val=val)
    assert list(out) == ["n", *METRICS, *CI_COLUMNS, *OPERATING_METRICS, *OPERATING_CI_COLUMNS, *RETUNED_COLUMNS]
    assert {k: out[k] for k in plain} == plain
    assert out["average_precision"] == pytest.approx(average_precision_score(test["label"], test["p_malicious"]))
    assert out["retuned_threshold"] > 0.5 and out["f1_retuned"] > out["f1"]
    # The re-tuned F1's interval: the usual F1 bootstrap (same draws) at the re-tuned threshold.
    ci = bootstrap_ci(test["label"], test["p_malicious"], n_resamples=100, seed=3, threshold=out["retuned_threshold"])
    assert (out["f1_retuned_ci_low"], out["f1_retuned_ci_high"]) == (ci["f1_ci_low"], ci["f1_ci_high"])
    assert out["f1_retuned_ci_low"] <= out["f1_retuned"] <= out["f1_retuned_ci_high"]
    without_val = evaluate_predictions(test, n_resamples=100, seed=3, operating=True)
    assert list(without_val) == list(out)[: -len(RETUNED_COLUMNS)]


def test_evaluate_operating_rejects_miswired_inputs():
    test, val = _predictions(30, 1, "t"), _predictions(30, 2, "v")
    with pytest.raises(ValueError, match="share 30 uid"):
        evaluate_operating(test, n_resamples=10, seed=0, val=test)
    with pytest.raises(ValueError, match=r"validation predictions are missing column\(s\) \['p_malicious'\]"):
        evaluate_operating(test, n_resamples=10, seed=0, val=val.drop(columns="p_malicious"))
    with pytest.raises(TypeError, match="DataFrame"):
        evaluate_operating(test.to_dict(), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="only used with operating=True"):
        evaluate_predictions(test, n_resamples=10, seed=0, val=val)


def test_evaluate_operating_on_a_single_class_test_set_logs_why(caplog):
    test = pd.DataFrame({"uid": ["a", "b", "c"], "label": [1, 1, 1], "p_malicious": [0.2, 0.7, 0.9]})
    val = _predictions(40, 2, "v")
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="gendiag.evaluate.operating"):
        warnings.simplefilter("error")
        out = evaluate_operating(test, n_resamples=20, seed=0, val=val)
    assert out["average_precision"] == 1.0
    assert math.isnan(out["fpr_at_recall_90"]) and math.isnan(out["recall_at_fpr_1_ci_low"])
    assert "without legitimate messages" in caplog.text
    assert not math.isnan(out["f1_retuned"])
