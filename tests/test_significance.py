import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

import gendiag.evaluate.significance as significance
from gendiag.evaluate.metrics import METRICS, bootstrap_ci, classification_metrics
from gendiag.evaluate.significance import (
    adjust_p_values,
    bootstrap_p_value,
    mcnemar_test,
    paired_bootstrap,
    paired_comparison,
    seed_summary,
    verdict,
)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _correctness(b, c, both_right=5, both_wrong=3):
    """Correct/incorrect vectors with b messages only A gets right and c only B gets right."""
    a = [1] * b + [0] * c + [1] * both_right + [0] * both_wrong
    bb = [0] * b + [1] * c + [1] * both_right + [0] * both_wrong
    return np.array(a), np.array(bb)


def _two_models(n=300, seed=7, strength_a=2.0, strength_b=2.0, shared=0.0):
    """Labels and two models' probabilities; `shared` correlates the models' noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    common = rng.normal(0.0, 2.0, n)
    sign = 2 * y - 1

    def model(strength):
        noise = shared * common + math.sqrt(1 - shared**2) * rng.normal(0.0, 2.0, n)
        return 1 / (1 + np.exp(-(strength * sign + noise)))

    return y, model(strength_a), model(strength_b)


def _slow_differences(y, runs_a, runs_b, metric, n_resamples, seed, threshold=0.5):
    """Resample rows with the generator the library uses, rescore every run, average per side."""
    index = np.random.default_rng(seed).integers(0, len(y), size=(n_resamples, len(y)))
    out = []
    for row in index:
        a = np.mean([classification_metrics(y[row], r[row], threshold)[metric] for r in runs_a])
        b = np.mean([classification_metrics(y[row], r[row], threshold)[metric] for r in runs_b])
        out.append(a - b)
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------


def test_mcnemar_counts_discordant_messages():
    a, b = _correctness(7, 2)
    out = mcnemar_test(a, b)
    assert (out["b"], out["c"], out["n"]) == (7, 2, 7 + 2 + 5 + 3)
    assert out["method"] == "exact"
    assert set(out) == {"b", "c", "n", "statistic", "p_value", "method"}
    # booleans are accepted as well as 0/1
    assert mcnemar_test(a.astype(bool), b.astype(bool)) == out


@pytest.mark.parametrize(("b", "c"), [(0, 1), (1, 0), (3, 9), (10, 2), (12, 12), (0, 24), (5, 6), (40, 17), (2, 60)])
def test_mcnemar_exact_matches_statsmodels_and_binomtest(b, c):
    a, bb = _correctness(b, c)
    out = mcnemar_test(a, bb, exact=True)
    reference = sm_mcnemar([[5, b], [c, 3]], exact=True)
    assert out["method"] == "exact"
    assert out["statistic"] == reference.statistic == min(b, c)
    assert out["p_value"] == pytest.approx(reference.pvalue, rel=1e-12)
    assert out["p_value"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


@pytest.mark.parametrize(("b", "c"), [(0, 1), (3, 9), (10, 2), (5, 6), (40, 17), (2, 60), (300, 260), (25, 0)])
def test_mcnemar_chi2_matches_statsmodels_with_continuity_correction(b, c):
    a, bb = _correctness(b, c)
    out = mcnemar_test(a, bb, exact=False)
    reference = sm_mcnemar([[5, b], [c, 3]], exact=False, correction=True)
    assert out["method"] == "chi2"
    assert out["statistic"] == pytest.approx(reference.statistic, rel=1e-12)
    assert out["p_value"] == pytest.approx(reference.pvalue, rel=1e-12)


def test_mcnemar_chi2_with_equal_discordant_counts_applies_no_correction():
    # Documented departure from statsmodels (which reports 1 / (b + c)), as in R's mcnemar.test.
    a, b = _correctness(20, 20)
    out = mcnemar_test(a, b, exact=False)
    assert (out["statistic"], out["p_value"]) == (0.0, 1.0)
    assert sm_mcnemar([[5, 20], [20, 3]], exact=False).statistic == pytest.approx(1 / 40)


def test_mcnemar_picks_exact_below_25_discordant_messages():
    assert mcnemar_test(*_correctness(20, 4))["method"] == "exact"
    assert mcnemar_test(*_correctness(20, 5))["method"] == "chi2"
    assert mcnemar_test(*_correctness(20, 5), exact=True)["method"] == "exact"
    assert mcnemar_test(*_correctness(2, 1), exact=False)["method"] == "chi2"


@pytest.mark.parametrize("exact", [True, False, None])
def test_mcnemar_without_discordant_messages_has_p_one(exact):
    a, b = _correctness(0, 0)
    out = mcnemar_test(a, b, exact=exact)
    assert (out["b"], out["c"], out["statistic"], out["p_value"]) == (0, 0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1, 0, 1], [1, 0], {}, "same messages; got 3 and 2"),
        ([1, 2, 1], [1, 0, 1], {}, "correct_a must be 0 or 1"),
        ([1, 0, 1], [1, 0, 0.5], {}, "correct_b must be 0 or 1"),
        (["y", "n"], [1, 0], {}, "correct_a must be 0/1 integers or booleans"),
        ([], [], {}, "at least one message"),
        ([[1, 0]], [[1, 0]], {}, "1-D"),
        ([1, 0], [1, np.nan], {}, "correct_b must be 0 or 1"),
        ([1, 0], [1, 0], {"exact": "yes"}, "exact must be None"),
    ],
)
def test_mcnemar_rejects_bad_input(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mcnemar_test(a, b, **kwargs)


# ---------------------------------------------------------------------------------------------
# bootstrap p-value and paired bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_p_value_definition():
    # 1 + #{d <= 0} = 1, 1 + #{d >= 0} = 4, B = 3  ->  2 * 1 / 4
    assert bootstrap_p_value([1.0, 2.0, 3.0]) == 0.5
    assert bootstrap_p_value([-1.0, 0.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 * 3 / 7)  # 0 counts on both sides
    assert bootstrap_p_value([-1.0, 0.0, 2.0, 3.0]) == 1.0  # 2 * 3 / 5 capped at 1
    assert bootstrap_p_value(np.ones(999)) == pytest.approx(2 / 1000)  # the floor 2 / (B + 1)
    assert bootstrap_p_value(np.zeros(50)) == 1.0
    assert bootstrap_p_value([1.0, np.nan, 2.0, 3.0]) == 0.5  # NaN resamples are left out
    assert math.isnan(bootstrap_p_value([np.nan, np.nan]))


def test_clearly_better_model_is_significant():
    y, p_a, p_b = _two_models(n=400, strength_a=3.0, strength_b=0.5)
    out = paired_bootstrap(y, p_a, p_b, n_resamples=2000, seed=1)
    assert out["effect"] == pytest.approx(out["metric_a"] - out["metric_b"])
    assert out["metric_a"] == pytest.approx(classification_metrics(y, p_a)["f1"])
    assert out["effect"] > 0.2
    assert 0 < out["ci_low"] < out["effect"] < out["ci_high"]
    assert out["p_value"] == pytest.approx(2 / 2001)
    # and the other way round
    back = paired_bootstrap(y, p_b, p_a, n_resamples=2000, seed=1)
    assert back["effect"] == pytest.approx(-out["effect"])
    assert back["ci_high"] < 0
    assert back["p_value"] == pytest.approx(2 / 2001)


def test_identical_models_are_not_different():
    y, p_a, _ = _two_models()
    out = paired_bootstrap(y, p_a, p_a, n_resamples=500, seed=2)
    assert (out["effect"], out["ci_low"], out["ci_high"], out["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_equally_good_models_give_large_p_values():
    """Under the null (same strength, independent noise) p-values spread out; few fall below 0.05."""
    p_values = []
    for seed in range(30):
        y, p_a, p_b = _two_models(n=200, seed=100 + seed, shared=0.5)
        out = paired_bootstrap(y, p_a, p_b, n_resamples=400, seed=seed)
        assert out["ci_low"] <= out["effect"] <= out["ci_high"]
        p_values.append(out["p_value"])
    p_values = np.array(p_values)
    assert np.mean(p_values < 0.05) <= 0.15
    assert 0.3 < np.mean(p_values) < 0.7
    assert np.max(p_values) > 0.8


@pytest.mark.parametrize("metric", METRICS)
def test_paired_bootstrap_equals_slow_resampling_with_the_same_draws(metric):
    y, p_a, p_b = _two_models(n=60, seed=11, strength_a=2.5, strength_b=1.5)
    n_resamples, seed = 60, 5
    slow = _slow_differences(y, [p_a], [p_b], metric, n_resamples, seed)
    out = paired_bootstrap(y, p_a, p_b, metric=metric, n_resamples=n_resamples, seed=seed, confidence=0.9)
    low, high = np.nanquantile(slow, [0.05, 0.95])
    assert out["ci_low"] == pytest.approx(low, abs=1e-12)
    assert out["ci_high"] == pytest.approx(high, abs=1e-12)
    assert out["p_value"] == pytest.approx(bootstrap_p_value(slow), abs=1e-12)
    point = classification_metrics(y, p_a)[metric] - classification_metrics(y, p_b)[metric]
    assert out["effect"] == pytest.approx(point)


@pytest.mark.parametrize("metric", ["f1", "accuracy"])
def test_threshold_is_applied_to_both_models(metric):
    y, p_a, p_b = _two_models(n=80, seed=3)
    slow = _slow_differences(y, [p_a], [p_b], metric, 30, 4, threshold=0.8)
    out = paired_bootstrap(y, p_a, p_b, metric=metric, n_resamples=30, seed=4, threshold=0.8)
    expected = classification_metrics(y, p_a, 0.8)[metric] - classification_metrics(y, p_b, 0.8)[metric]
    assert out["effect"] == pytest.approx(expected)
    low, high = np.quantile(slow, [0.025, 0.975])
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert out["ci_low"] != paired_bootstrap(y, p_a, p_b, metric=metric, n_resamples=30, seed=4)["ci_low"]


def test_draws_are_those_of_metrics_bootstrap_ci():
    # Against a model that never predicts malicious (F1 = 0 on every resample) the differences are
    # model A's resampled F1, so the interval must be bootstrap_ci's for the same seed.
    y, p_a, _ = _two_models(n=150, seed=12)
    out = paired_bootstrap(y, p_a, np.zeros_like(p_a), n_resamples=400, seed=6)
    ci = bootstrap_ci(y, p_a, n_resamples=400, seed=6)
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(ci["f1_ci_low"]), pytest.approx(ci["f1_ci_high"]))


def test_paired_bootstrap_is_deterministic_and_chunking_does_not_change_it(monkeypatch):
    y, p_a, p_b = _two_models(n=150, seed=4, strength_a=2.2)
    first = paired_bootstrap(y, p_a, p_b, n_resamples=300, seed=9)
    assert paired_bootstrap(y, p_a, p_b, n_resamples=300, seed=9) == first
    assert paired_bootstrap(y, p_a, p_b, n_resamples=300, seed=10) != first
    monkeypatch.setattr(significance, "_MAX_CELLS_PER_CHUNK", 150 * 7)  # 7 resamples per chunk
    assert paired_bootstrap(y, p_a, p_b, n_resamples=300, seed=9) == first


def test_paired_bootstrap_result_keys_and_auroc_single_class():
    out = paired_bootstrap([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], metric="auroc", n_resamples=20)
    assert list(out) == [
        "metric", "effect", "metric_a", "metric_b", "ci_low", "ci_high", "confidence", "p_value",
        "n_messages", "n_resamples",
    ]
    assert math.isnan(out["effect"]) and math.isnan(out["ci_low"]) and math.isnan(out["p_value"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [0, 1, 2]}, "labels must be 0 or 1"),
        ({"labels": ["a", "b", "c"]}, "labels must be 0/1"),
        ({"p_a": [0.1, 0.2]}, "p_a must have one probability per message: expected 3 values, got 2"),
        ({"p_b": [0.1, 1.2, 0.3]}, r"p_b must be finite probabilities in \[0, 1\]"),
        ({"p_b": [0.1, np.nan, 0.3]}, "p_b must be finite"),
        ({"p_a": ["0.1", "0.2", "0.3"]}, "p_a must be floats"),
        ({"metric": "mcc"}, r"metric must be one of \['f1'"),
        ({"n_resamples": 0}, "n_resamples must be a positive integer; got 0"),
        ({"n_resamples": 10.5}, "n_resamples"),
        ({"n_resamples": True}, "n_resamples"),
        ({"seed": -1}, "seed must be a non-negative integer; got -1"),
        ({"seed": None}, "seed must be a non-negative integer"),
        ({"confidence": 95}, "confidence must be a number strictly between 0 and 1"),
        ({"confidence": 1.0}, "confidence"),
        ({"threshold": 1.5}, r"threshold must be a number in \[0, 1\]"),
    ],
)
def test_paired_bootstrap_rejects_bad_input(kwargs, message):
    args = {"labels": [0, 1, 1], "p_a": [0.1, 0.8, 0.6], "p_b": [0.3, 0.4, 0.9], "n_resamples": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(**args)


# ---------------------------------------------------------------------------------------------
# multiple comparisons
# ---------------------------------------------------------------------------------------------


def _random_p_values(seed, size=40):
    rng = np.random.default_rng(seed)
    p = rng.random(size) ** 3  # many small values
    p[rng.integers(0, size, 6)] = 1.0
    p[rng.integers(0, size, 4)] = 0.0
    p[: size // 4] = np.round(p[: size // 4], 1)  # ties
    p[size // 4 : size // 2] = p[-1]  # more ties
    return p


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_adjust_p_values_matches_statsmodels(method):
    for seed in range(15):
        p = _random_p_values(seed, size=int(np.random.default_rng(seed).integers(1, 60)))
        expected = multipletests(p, method=method)[1]
        np.testing.assert_allclose(adjust_p_values(p, method=method), expected, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(adjust_p_values([0.01, 0.04, 0.03], method), multipletests([0.01, 0.04, 0.03],
                                                                                              method=method)[1])


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_nan_p_values_stay_nan_and_are_not_counted(method):
    p = _random_p_values(3, size=20)
    with_nan = p.copy()
    missing = [0, 7, 19]
    with_nan[missing] = np.nan
    out = adjust_p_values(with_nan, method=method)
    assert np.isnan(out[missing]).all()
    kept = np.setdiff1d(np.arange(20), missing)
    np.testing.assert_allclose(out[kept], multipletests(p[kept], method=method)[1], rtol=1e-15, atol=0)
    assert np.isnan(adjust_p_values([np.nan, np.nan], method)).all()
    assert adjust_p_values([], method).shape == (0,)


def test_holm_hand_example():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(.., 2 * 0.03), max(.., 1 * 0.04)
    np.testing.assert_allclose(adjust_p_values([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    np.testing.assert_allclose(adjust_p_values([0.04, 0.01, 0.03], "bonferroni"), [0.12, 0.03, 0.09])
    np.testing.assert_allclose(adjust_p_values([0.04, 0.01, 0.03], "fdr_bh"), [0.04, 0.03, 0.04])


@pytest.mark.parametrize(
    ("p", "method", "message"),
    [
        ([0.1, 0.2], "hochberg", r"method must be one of \['holm', 'bonferroni', 'fdr_bh'\]; got 'hochberg'"),
        ([0.1, 1.2], "holm", r"p_values must lie in \[0, 1\]"),
        ([0.1, -0.01], "holm", r"p_values must lie in \[0, 1\]"),
        ([0.1, np.inf], "holm", r"p_values must lie in \[0, 1\]"),
        ([[0.1, 0.2]], "holm", "1-D"),
        (["0.1"], "holm", "p_values must be floats"),
    ],
)
def test_adjust_p_values_rejects_bad_input(p, method, message):
    with pytest.raises(ValueError, match=message):
        adjust_p_values(p, method=method)


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_seed_summary_matches_scipy(confidence):
    values = [0.81, 0.86, 0.79, 0.90, 0.84]
    out = seed_summary(values, confidence=confidence)
    mean, sem = np.mean(values), stats.sem(values)
    low, high = stats.t.interval(confidence, df=4, loc=mean, scale=sem)
    assert out["n"] == 5
    assert out["mean"] == pytest.approx(mean)
    assert out["std"] == pytest.approx(np.std(values, ddof=1))
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_seed_summary_single_seed_and_identical_seeds():
    one = seed_summary([0.8])
    assert one["mean"] == 0.8 and one["n"] == 1
    assert math.isnan(one["std"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    same = seed_summary([0.7, 0.7, 0.7])
    assert (same["std"], same["ci_low"], same["ci_high"]) == (0.0, 0.7, 0.7)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "at least one seed"),
        ([[0.1, 0.2]], {}, "1-D"),
        ([0.1, np.nan], {}, "values must be finite"),
        (["a"], {}, "values must be numbers"),
        ([0.1, 0.2], {"confidence": 0}, "confidence"),
    ],
)
def test_seed_summary_rejects_bad_input(values, kwargs, message):
    with pytest.raises(ValueError, match=message):
        seed_summary(values, **kwargs)


# ---------------------------------------------------------------------------------------------
# paired comparison over seeds
# ---------------------------------------------------------------------------------------------


def _seeded_runs(n=120, k=3, seed=21, strength=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    runs = [1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 2.0, n)))) for _ in range(k)]
    return y, np.stack(runs)


def test_single_runs_reproduce_paired_bootstrap():
    y, p_a, p_b = _two_models(n=200, strength_a=2.5)
    single = paired_bootstrap(y, p_a, p_b, n_resamples=300, seed=3)
    out = paired_comparison(y, p_a, p_b, n_resamples=300, seed=3)
    for key, value in single.items():
        assert out[key] == value, key
    assert out["test"] == "paired_bootstrap"
    assert (out["n_seeds"], out["n_seeds_a"], out["n_seeds_b"]) == (1, 1, 1)
    assert out["seed_ci_method"] == "none" and math.isnan(out["seed_ci_low"]) and math.isnan(out["seed_ci_high"])
    assert out["seed_effect_mean"] == out["effect"]


def test_several_seeds_average_the_per_seed_metric():
    y, runs_a = _seeded_runs(k=3, seed=21, strength=2.6)
    _, runs_b = _seeded_runs(k=3, seed=21, strength=1.6)
    out = paired_comparison(y, runs_a, runs_b, metric="f1", n_resamples=40, seed=8)
    per_a = [classification_metrics(y, r)["f1"] for r in runs_a]
    per_b = [classification_metrics(y, r)["f1"] for r in runs_b]
    assert out["seed_metrics_a"] == pytest.approx(per_a) and out["seed_metrics_b"] == pytest.approx(per_b)
    assert out["effect"] == pytest.approx(np.mean(per_a) - np.mean(per_b))
    assert out["seed_effect_mean"] == out["effect"]
    slow = _slow_differences(y, runs_a, runs_b, "f1", 40, 8)
    low, high = np.quantile(slow, [0.025, 0.975])
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert out["p_value"] == pytest.approx(bootstrap_p_value(slow))
    # paired by position: the per-seed differences' t-interval, i.e. scipy's paired t-test interval
    assert out["seed_ci_method"] == "paired_t"
    ci = stats.ttest_rel(per_a, per_b).confidence_interval(0.95)
    assert (out["seed_ci_low"], out["seed_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert (out["n_seeds"], out["n_seeds_a"], out["n_seeds_b"], out["n_messages"]) == (3, 3, 3, 120)


def test_mappings_pair_by_seed_and_fall_back_to_welch_when_seeds_differ():
    y, runs_a = _seeded_runs(k=3, seed=5, strength=2.4)
    _, runs_b = _seeded_runs(k=3, seed=6)
    by_seed_a = {2: runs_a[2], 0: runs_a[0], 1: runs_a[1]}  # insertion order does not matter
    by_seed_b = {0: runs_b[0], 1: runs_b[1], 2: runs_b[2]}
    keyed = paired_comparison(y, by_seed_a, by_seed_b, n_resamples=50)
    positional = paired_comparison(y, runs_a, runs_b, n_resamples=50)
    assert keyed == positional and keyed["seed_ci_method"] == "paired_t"

    other = {3: runs_b[0], 4: runs_b[1]}
    welch = paired_comparison(y, by_seed_a, other, n_resamples=50)
    per_a = [classification_metrics(y, r)["f1"] for r in runs_a]
    per_b = [classification_metrics(y, r)["f1"] for r in runs_b[:2]]
    ci = stats.ttest_ind(per_a, per_b, equal_var=False).confidence_interval(0.95)
    assert welch["seed_ci_method"] == "welch_t"
    assert (welch["seed_ci_low"], welch["seed_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert (welch["n_seeds"], welch["n_seeds_a"], welch["n_seeds_b"]) == (3, 3, 2)
    # unequal numbers of rows cannot be paired either
    assert paired_comparison(y, runs_a, runs_b[:2], n_resamples=50)["seed_ci_method"] == "welch_t"


def test_single_baseline_run_is_held_fixed():
    y, runs_a = _seeded_runs(k=4, seed=9, strength=2.5)
    _, baseline = _seeded_runs(k=1, seed=10, strength=0.5)
    out = paired_comparison(y, runs_a, baseline[0], metric="accuracy", n_resamples=50)
    per_a = [classification_metrics(y, r)["accuracy"] for r in runs_a]
    base = classification_metrics(y, baseline[0])["accuracy"]
    expected = seed_summary(np.array(per_a) - base)
    assert out["seed_ci_method"] == "one_sample_t"
    assert (out["seed_ci_low"], out["seed_ci_high"]) == (pytest.approx(expected["ci_low"]),
                                                         pytest.approx(expected["ci_high"]))
    assert out["effect"] == pytest.approx(expected["mean"])
    flipped = paired_comparison(y, baseline, runs_a, metric="accuracy", n_resamples=50)
    assert flipped["seed_ci_method"] == "one_sample_t"
    assert flipped["seed_ci_low"] == pytest.approx(-out["seed_ci_high"])


def test_mcnemar_option_uses_mcnemar_p_and_bootstrap_interval():
    y, p_a, p_b = _two_models(n=300, strength_a=2.5)
    out = paired_comparison(y, p_a, p_b, metric="accuracy", test="mcnemar", n_resamples=200, seed=4)
    expected = mcnemar_test((p_a >= 0.5) == y, (p_b >= 0.5) == y)["p_value"]
    assert out["test"] == "mcnemar" and out["p_value"] == expected
    boot = paired_bootstrap(y, p_a, p_b, metric="accuracy", n_resamples=200, seed=4)
    assert (out["effect"], out["ci_low"], out["ci_high"]) == (boot["effect"], boot["ci_low"], boot["ci_high"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test": "wilcoxon"}, r"test must be one of \['paired_bootstrap', 'mcnemar'\]"),
        ({"test": "mcnemar", "metric": "f1"}, "metric must be 'accuracy'"),
        ({"test": "mcnemar", "metric": "accuracy", "p_a_by_seed": [[0.1, 0.8, 0.6]] * 2}, "one run per side, got 2"),
        ({"p_a_by_seed": [[0.1, 0.8, 0.6], [0.2, 0.3]]}, "every run must score the same 3 messages"),
        ({"p_a_by_seed": [[0.1, 0.8, 0.6], [0.2, 0.3, 0.1, 0.5]]}, "every run must score the same 3 messages"),
        ({"p_a_by_seed": np.zeros((1, 1, 3))}, r"got shape \(1, 1, 3\)"),
        ({"p_a_by_seed": {}}, "at least one run"),
        ({"p_a_by_seed": np.zeros((0, 3))}, "at least one run"),
        ({"p_b_by_seed": {0: [0.1, 0.2, 0.3], 1: [0.1, 0.2]}}, r"p_b_by_seed\[1\] must have one probability"),
        ({"p_b_by_seed": [[0.1, 0.2, 0.3], [0.1, 0.2, 1.3]]}, r"p_b_by_seed\[1\] must be finite probabilities"),
        ({"labels": [0, 1]}, r"p_a_by_seed\[0\] must have one probability per message: expected 2 values, got 3"),
        ({"metric": "F1"}, "metric must be one of"),
        ({"n_resamples": -1}, "n_resamples"),
        ({"seed": 1.5}, "seed"),
        ({"confidence": 0.0}, "confidence"),
        ({"threshold": -0.1}, "threshold"),
    ],
)
def test_paired_comparison_rejects_bad_input(kwargs, message):
    args = {"labels": [0, 1, 1], "p_a_by_seed": [0.1, 0.8, 0.6], "p_b_by_seed": [0.3, 0.4, 0.9], "n_resamples": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        paired_comparison(**args)


# ---------------------------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("effect", "low", "high", "p", "expected"),
    [
        (0.05, 0.02, 0.08, 0.01, "supported"),
        (-0.05, -0.08, -0.02, 0.01, "reversed"),
        (0.05, 0.02, 0.08, 0.2, "not significant"),  # interval excludes 0 but adjusted p does not
        (0.05, 0.0, 0.08, 0.01, "not significant"),  # interval touches 0
        (0.01, -0.02, 0.04, 0.5, "not significant"),
        (-0.01, 0.02, 0.04, 0.01, "not significant"),  # effect's sign disagrees with its interval
        (0.05, 0.02, 0.08, 0.05, "supported"),  # p == alpha counts as significant
        (math.nan, math.nan, math.nan, math.nan, "not significant"),
        (0.05, 0.02, 0.08, math.nan, "not significant"),
    ],
)
def test_verdict(effect, low, high, p, expected):
    assert verdict(effect, low, high, p) == expected


def test_verdict_alpha():
    assert verdict(0.05, 0.02, 0.08, 0.02, alpha=0.01) == "not significant"
    assert verdict(0.05, 0.02, 0.08, 0.02, alpha=0.05) == "supported"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0.05, 0.02, 0.08, 0.01), {"alpha": 0.0}, "alpha must be strictly between 0 and 1"),
        ((0.05, 0.02, 0.08, 0.01), {"alpha": 5}, "alpha"),
        ((0.05, 0.02, 0.08, 1.2), {}, r"p_adjusted must be in \[0, 1\]"),
        ((0.05, 0.08, 0.02, 0.01), {}, "ci_low must not exceed ci_high"),
        (("big", 0.02, 0.08, 0.01), {}, "effect must be a number; got 'big'"),
        ((0.05, None, 0.08, 0.01), {}, "ci_low must be a number"),
    ],
)
def test_verdict_rejects_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        verdict(*args, **kwargs)


def test_macro_comparison_of_one_test_set_is_the_paired_comparison():
    y, p_a, p_b = _two_models(n=200, strength_a=3.0)
    one = significance.macro_paired_comparison({"only": (y, {0: p_a}, {0: p_b})}, n_resamples=500, seed=3)
    ref = significance.paired_comparison(y, {0: p_a}, {0: p_b}, n_resamples=500, seed=3)
    for key in ("effect", "ci_low", "ci_high", "p_value", "metric_a", "metric_b", "n_messages"):
        assert one[key] == ref[key], key
    assert one["n_testsets"] == 1


def test_macro_comparison_averages_test_sets_equally_and_resamples_within_each():
    y1, a1, b1 = _two_models(n=400, seed=1, strength_a=3.0)
    y2, a2, b2 = _two_models(n=60, seed=2, strength_b=3.0)
    seeds_a = {0: a1, 1: np.clip(a1 + 0.05, 0, 1)}
    seeds_b = {0: b1, 1: np.clip(b1 - 0.05, 0, 1)}
    seeds_a2 = {0: a2, 1: np.clip(a2 + 0.05, 0, 1)}
    seeds_b2 = {0: b2, 1: np.clip(b2 - 0.05, 0, 1)}
    out = significance.macro_paired_comparison(
        {"big": (y1, seeds_a, seeds_b), "small": (y2, seeds_a2, seeds_b2)}, n_resamples=400, seed=5
    )
    per_set = [significance.paired_comparison(y, a, b, n_resamples=10)["effect"]
               for y, a, b in ((y1, seeds_a, seeds_b), (y2, seeds_a2, seeds_b2))]
    assert out["effect"] == pytest.approx(np.mean(per_set), abs=1e-12)  # not weighted by size
    slow = [
        np.asarray(_slow_differences(y, np.stack(list(a.values())), np.stack(list(b.values())), "f1", 400, 5 + i))
        for i, (y, a, b) in enumerate(((y1, seeds_a, seeds_b), (y2, seeds_a2, seeds_b2)))
    ]
    low, high = np.quantile((slow[0] + slow[1]) / 2, [0.025, 0.975])
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert out["n_messages"] == 460 and out["n_testsets"] == 2 and out["seed_ci_method"] == "paired_t"


def test_macro_comparison_needs_the_same_runs_in_every_test_set():
    y, p_a, p_b = _two_models(n=50)
    with pytest.raises(ValueError, match="same seeds on each side"):
        significance.macro_paired_comparison({"x": (y, {0: p_a}, {0: p_b}), "y": (y, {0: p_a, 1: p_a}, {0: p_b})})
    with pytest.raises(ValueError, match="strata must map at least one test set"):
        significance.macro_paired_comparison({})
