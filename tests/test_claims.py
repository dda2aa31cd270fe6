"""claims.csv and summary.md: which claims the runs can answer, their tests, and the sentences."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from gendiag.evaluate.claims import CLAIM_COLUMNS, Group, claim_specs, evaluate_claims, format_finding
from gendiag.evaluate.significance import adjust_p_values
from gendiag.report.summary import study_summary

TESTSETS = ["corporate", "credential_phish", "mailing_list"]
IN_DOMAIN = {"specialist": ["corporate"], "generalist": TESTSETS}
SETTINGS = {"metric": "f1", "confidence": 0.95, "resamples": 500, "correction": "holm", "alpha": 0.05}


def groups(archs=("gemma2", "llama"), paradigms=("standard",), zeroshot=True):
    out = [Group(a, r, p) for a in archs for r in ("specialist", "generalist") for p in paradigms]
    return out + ([Group(a, "none", "zeroshot") for a in archs] if zeroshot else [])


def test_claim_specs_cover_recipes_paradigms_and_architecture_pairs():
    specs = claim_specs(groups(paradigms=("standard", "fticl")), TESTSETS, IN_DOMAIN, "specialist", "generalist")
    by_family = {f: [s for s in specs if s.family == f] for f in ("recipe", "paradigm", "architecture")}
    # per arch x tuned paradigm: generalist > specialist out of domain, specialist > generalist in domain
    assert len(by_family["recipe"]) == 2 * 2 * 2
    ood = [s for s in by_family["recipe"] if s.scope == "out of domain"]
    assert all(s.testsets == ("credential_phish", "mailing_list") and s.a.recipe == "generalist" for s in ood)
    # per arch x recipe: fticl > standard and standard > zeroshot
    assert len(by_family["paradigm"]) == 2 * 2 * 2
    generalist = [s for s in by_family["paradigm"] if s.a.recipe == "generalist"]
    assert all(s.scope == "all test sets" and s.testsets == tuple(TESTSETS) for s in generalist)
    assert {s.b.paradigm for s in by_family["paradigm"]} == {"standard", "zeroshot"}
    # one pair of architectures per (recipe, paradigm) and for zero-shot
    assert len(by_family["architecture"]) == 2 * 2 + 1
    assert all(s.direction == "observed" for s in by_family["architecture"])


BASELINE = [Group("classical", r, "tfidf") for r in ("specialist", "generalist")]


def test_every_fine_tuned_llm_is_compared_with_the_classical_baseline_of_its_recipe():
    specs = claim_specs(groups(paradigms=("standard", "fticl")) + BASELINE, TESTSETS, IN_DOMAIN, "specialist",
                        "generalist")
    baseline = [s for s in specs if s.family == "baseline"]
    # per arch x tuned paradigm: specialist out of and in domain, generalist (trained on every test set) on all
    assert len(baseline) == 2 * 2 * 3
    assert all(s.b == Group("classical", s.a.recipe, "tfidf") and s.direction == "hypothesis" for s in baseline)
    assert {s.a.paradigm for s in baseline} == {"standard", "fticl"}  # never the zero-shot models
    scopes = {(s.a.recipe, s.scope): s.testsets for s in baseline}
    assert scopes == {("specialist", "out of domain"): ("credential_phish", "mailing_list"),
                      ("specialist", "in domain"): ("corporate",), ("generalist", "all test sets"): tuple(TESTSETS)}
    claims = {(s.arch, s.a.recipe, s.a.paradigm, s.scope): s.claim for s in baseline}
    expected = "LLM (fticl) > classical baseline in domain (specialist)"
    assert claims["llama", "specialist", "fticl", "in domain"] == expected
    # The baseline is no architecture to pair with the LLMs, nor a paradigm of theirs; it has its own recipe claims.
    assert not any("classical" in (s.a.arch, s.b.arch) for s in specs if s.family in ("architecture", "paradigm"))
    recipe = [s for s in specs if s.family == "recipe" and s.arch == "classical"]
    assert [s.claim for s in recipe] == ["generalist > specialist out of domain", "specialist > generalist in domain"]
    # Without a baseline run (classical.enabled: false) there is no baseline claim.
    assert not [s for s in claim_specs(groups(), TESTSETS, IN_DOMAIN, "specialist", "generalist")
                if s.family == "baseline"]


def test_baseline_claims_are_answered_and_summarised():
    quality = {**QUALITY, ("classical", "specialist", "tfidf"): 0.6, ("classical", "generalist", "tfidf"): 0.6}
    specs = claim_specs(groups() + BASELINE, TESTSETS, IN_DOMAIN, "specialist", "generalist")
    claims = evaluate_claims(predictions(quality), specs, n_resamples=300)
    rows = claims[claims["family"] == "baseline"].set_index(["arch", "scope"])
    assert rows.loc[("gemma2", "all test sets"), "claim"] == "LLM (standard) > classical baseline on all test sets " \
                                                              "(generalist)"
    better, same = rows.loc[("gemma2", "all test sets")], rows.loc[("llama", "all test sets")]
    assert better["effect"] > 0.2 and better["ci_low"] > 0 and better["p_value"] < 0.01  # 97% vs 60% right
    assert same["ci_low"] < 0 < same["ci_high"] and same["verdict"] == "not significant"  # 60% vs 60%
    assert rows.loc[("gemma2", "all test sets"), "b"] == "classical/generalist/tfidf"
    text = study_summary(claims, pd.DataFrame({"testset": ["corporate"], "arch": ["classical"],
                                               "recipe": ["generalist"], "paradigm": ["tfidf"], "f1": [0.8]}),
                         SETTINGS)
    assert "## Fine-tuned LLMs vs the classical baseline" in text
    for row in claims[claims["family"] == "baseline"].to_dict("records"):
        assert f"- {format_finding(row)}" in text


def predictions(quality: dict[tuple[str, str, str], float], n=120, seeds=(0,)) -> pd.DataFrame:
    """Every group scores the same messages; `quality` is the share of messages each gets right."""
    rng = np.random.default_rng(0)
    frames = []
    for testset in TESTSETS:
        labels = rng.integers(0, 2, n)
        uids = [f"{testset}-{i:04d}" for i in range(n)]
        for (arch, recipe, paradigm), share in quality.items():
            for seed in seeds if paradigm != "zeroshot" else (0,):
                stream = zlib.crc32(f"{arch}/{recipe}/{paradigm}/{seed}/{testset}".encode())
                right = np.random.default_rng(stream).random(n) < share
                p = np.where(right == (labels == 1), 0.9, 0.1)
                frames.append(pd.DataFrame({"uid": uids, "label": labels, "p_malicious": p, "arch": arch,
                                            "recipe": recipe, "paradigm": paradigm, "seed": seed,
                                            "testset": testset}))
    return pd.concat(frames, ignore_index=True)


QUALITY = {
    ("gemma2", "specialist", "standard"): 0.6, ("gemma2", "generalist", "standard"): 0.97,
    ("llama", "specialist", "standard"): 0.6, ("llama", "generalist", "standard"): 0.6,
    ("gemma2", "none", "zeroshot"): 0.5, ("llama", "none", "zeroshot"): 0.5,
}


def test_claims_are_tested_pairwise_corrected_together_and_get_verdicts():
    specs = claim_specs(groups(), TESTSETS, IN_DOMAIN, "specialist", "generalist")
    claims = evaluate_claims(predictions(QUALITY), specs, n_resamples=500)
    assert list(claims.columns) == list(CLAIM_COLUMNS)
    np.testing.assert_allclose(claims["p_adjusted"], adjust_p_values(claims["p_value"].to_numpy(), "holm"))
    row = claims[(claims["claim"] == "generalist > specialist out of domain")].set_index("arch")
    assert row.loc["gemma2", "verdict"] == "supported" and row.loc["gemma2", "ci_low"] > 0.2
    assert row.loc["llama", "verdict"] == "not significant"
    # Architecture claims are oriented by the data: the better one is named first.
    arch = claims[(claims["family"] == "architecture") & claims["claim"].str.contains("generalist")].iloc[0]
    assert arch["claim"].startswith("gemma2 > llama") and arch["effect"] > 0 and arch["a"].startswith("gemma2/")
    assert arch["metric_a"] > arch["metric_b"]


def test_claims_with_several_seeds_report_a_seed_interval():
    specs = claim_specs(groups(zeroshot=False), TESTSETS, IN_DOMAIN, "specialist", "generalist")
    claims = evaluate_claims(predictions({k: v for k, v in QUALITY.items() if k[2] != "zeroshot"}, seeds=(0, 1, 2)),
                             specs, n_resamples=300)
    assert (claims["n_seeds"] == 3).all() and (claims["seed_ci_method"] == "paired_t").all()
    assert claims["seed_ci_low"].notna().all()


def test_a_claim_on_different_messages_is_refused():
    data = predictions(QUALITY)
    data.loc[(data["arch"] == "llama") & (data["recipe"] == "specialist"), "uid"] += "x"
    specs = claim_specs(groups(), TESTSETS, IN_DOMAIN, "specialist", "generalist")
    with pytest.raises(ValueError, match="scored different messages"):
        evaluate_claims(data, specs, n_resamples=100)


def test_findings_read_like_the_paper_and_come_from_the_numbers():
    row = {"claim": "generalist > specialist out of domain", "family": "recipe", "arch": "gemma2",
           "metric": "f1", "effect": 0.2104, "ci_low": 0.151, "ci_high": 0.268, "p_adjusted": 0.0004,
           "verdict": "supported", "n_seeds": 3, "seed_ci_low": 0.12, "seed_ci_high": 0.30}
    assert format_finding(row) == ("generalist > specialist out of domain for gemma2: +0.21 F1 [0.15, 0.27], "
                                   "p_adj < 0.001 — supported (over 3 seeds: [0.12, 0.30])")
    assert "p_adj = 0.034" in format_finding({**row, "p_adjusted": 0.0341})

    specs = claim_specs(groups(), TESTSETS, IN_DOMAIN, "specialist", "generalist")
    claims = evaluate_claims(predictions(QUALITY), specs, n_resamples=300)
    cross = pd.DataFrame({"testset": ["corporate", "corporate"], "arch": ["llama", "gemma2"],
                          "recipe": ["generalist"] * 2, "paradigm": ["standard"] * 2, "f1": [0.8, 0.9]})
    text = study_summary(claims, cross, SETTINGS)
    for row in claims.to_dict("records"):
        assert format_finding(row) in text
    assert "corporate: best gemma2/generalist/standard F1 0.90" in text
    changed = claims.copy()
    changed.loc[0, "effect"] += 0.1
    assert study_summary(changed, cross, SETTINGS) != text


def test_seed_summary_puts_the_seed_interval_next_to_the_bootstrap_interval():
    from scipy import stats

    from gendiag.report.tables import seed_summary_table

    f1 = [0.70, 0.74, 0.79]
    cross = pd.DataFrame({"arch": "llama", "recipe": "generalist", "paradigm": "standard", "seed": [0, 1, 2],
                          "testset": "corporate", "in_domain": True, "f1": f1, "f1_ci_low": [0.6, 0.62, 0.7],
                          "f1_ci_high": [0.8, 0.82, 0.9]})
    row = seed_summary_table(cross).iloc[0]
    low, high = stats.t.interval(0.95, df=2, loc=np.mean(f1), scale=stats.sem(f1))
    assert row["n_seeds"] == 3 and row["f1_mean"] == pytest.approx(np.mean(f1))
    assert (row["f1_seed_ci_low"], row["f1_seed_ci_high"]) == pytest.approx((low, high))
    assert (row["f1_bootstrap_ci_low"], row["f1_bootstrap_ci_high"]) == pytest.approx((0.64, 0.84))
    one = seed_summary_table(cross.iloc[:1]).iloc[0]
    assert one["n_seeds"] == 1 and np.isnan(one["f1_seed_ci_low"])
