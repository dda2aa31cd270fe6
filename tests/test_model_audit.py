"""The same-model label audit and its comparison with the confident-learning audit."""

import json

import numpy as np
import pandas as pd
import pytest

from gendiag.data.audit import estimate_label_noise
from gendiag.data.model_audit import (
    MODEL_AUDIT_COLUMNS,
    MODEL_AUDIT_TABLE_COLUMNS,
    audit_sample,
    compare_audits,
    injected_noise_of,
    model_audit_table,
    model_label_audit,
    model_suspects,
    run_model_audit,
    summarise_model_audit,
)
from gendiag.data.synthetic import generate_style
from gendiag.evaluate.classical import TfidfSettings, predict_classical, train_tfidf_baseline

PREDICTIONS = pd.DataFrame({
    "uid": ["a", "b", "c", "d", "e"],
    "label": [1, 1, 0, 0, 1],
    "p_malicious": [0.05, 0.1, 0.95, 0.5, 0.9],
    "pred": [0, 0, 1, 1, 1],  # extra columns of a prediction file are ignored
})


def test_flags_confident_contradictions():
    audit = model_label_audit(PREDICTIONS, threshold=0.9)
    assert tuple(audit.columns) == MODEL_AUDIT_COLUMNS
    assert audit["contradiction"].tolist() == pytest.approx([0.95, 0.9, 0.95, 0.5, 0.1])
    # b sits exactly on the threshold (1 - 0.1 = 0.9) and counts; d (0.5) is no contradiction.
    assert audit["flagged"].tolist() == [True, True, True, False, False]
    assert model_label_audit(PREDICTIONS, threshold=0.92)["flagged"].tolist() == [True, False, True, False, False]
    assert not model_label_audit(PREDICTIONS, threshold=1.0)["flagged"].any()


def test_suspects_follow_the_confident_learning_format():
    audit = model_label_audit(PREDICTIONS, threshold=0.9)
    suspects = model_suspects(audit)
    assert [s["uid"] for s in suspects] == ["a", "c", "b"]  # most confident first, ties in table order
    assert suspects[0] == {"index": 0, "uid": "a", "label": 1, "p_malicious": 0.05, "self_confidence": 0.05}
    assert [s["uid"] for s in model_suspects(audit, top=1)] == ["a"]
    summary = summarise_model_audit(audit, 0.9)
    assert summary["n"] == 5 and summary["n_flagged"] == 3 and summary["flagged_share"] == 0.6
    assert summary["flagged_given_label"] == {"0": 1, "1": 2}
    json.dumps(summary)  # plain JSON


@pytest.mark.parametrize("threshold", [0.5, 0.3, 1.2, True, "0.9"])
def test_threshold_must_be_a_contradiction(threshold):
    with pytest.raises(ValueError, match=r"threshold must be a probability in \(0.5, 1\]"):
        model_label_audit(PREDICTIONS, threshold=threshold)


def test_bad_predictions_are_refused():
    with pytest.raises(ValueError, match=r"lack column\(s\) \['p_malicious'\]; expected the fine-tuned model"):
        model_label_audit(PREDICTIONS.drop(columns="p_malicious"))
    with pytest.raises(ValueError, match=r"label must be 0 \(legitimate\) or 1"):
        model_label_audit(PREDICTIONS.assign(label=[1, 2, 0, 0, 1]))
    with pytest.raises(ValueError, match=r"p_malicious must be probabilities in \[0, 1\]"):
        model_label_audit(PREDICTIONS.assign(p_malicious=[0.1, 1.5, 0.2, 0.3, 0.4]))
    with pytest.raises(ValueError, match="duplicated uid"):
        model_label_audit(PREDICTIONS.assign(uid=["a", "a", "c", "d", "e"]))
    with pytest.raises(TypeError, match="DataFrame"):
        model_label_audit(PREDICTIONS.to_dict("list"))
    with pytest.raises(ValueError, match="output of model_label_audit"):
        model_suspects(PREDICTIONS)


# --- compare_audits ----------------------------------------------------------------------------


NOISE = pd.DataFrame({"uid": list("abcdef"), "label_flipped": [True, True, False, True, False, False]})


def test_compare_by_hand():
    model = model_label_audit(pd.DataFrame({"uid": list("abcdef"), "label": [1, 1, 1, 0, 0, 0],
                                            "p_malicious": [0.01, 0.02, 0.03, 0.2, 0.3, 0.4]}))  # flags a, b, c
    cleanlab = [{"index": 1, "uid": "b"}, {"index": 2, "uid": "c"}, {"index": 3, "uid": "d"}]
    out = compare_audits(model, cleanlab, injected_noise=NOISE)
    assert {k: out[k] for k in ("n_model", "n_cleanlab", "n_both", "n_model_only", "n_cleanlab_only", "n_either")} == {
        "n_model": 3, "n_cleanlab": 3, "n_both": 2, "n_model_only": 1, "n_cleanlab_only": 1, "n_either": 4}
    assert out["jaccard"] == 0.5 and out["n_injected"] == 3  # noise: a, b, d
    assert (out["model_precision"], out["model_recall"]) == (2 / 3, 2 / 3)  # a, b of a, b, c
    assert (out["cleanlab_precision"], out["cleanlab_recall"]) == (2 / 3, 2 / 3)  # b, d of b, c, d
    assert (out["both_precision"], out["both_recall"]) == (1 / 2, 1 / 3)  # b of b, c
    assert (out["either_precision"], out["either_recall"]) == (3 / 4, 1.0)
    json.dumps(out)
    # The same with plain uid lists, and with the noise given as label vs label_true.
    truth = pd.DataFrame({"uid": list("abcdef"), "label": [1, 1, 0, 0, 0, 1], "label_true": [0, 0, 0, 1, 0, 1]})
    assert compare_audits(["a", "b", "c"], {"b", "c", "d"}, injected_noise=truth) == out
    assert compare_audits(["a", "b", "c"], ["b", "c", "d"], injected_noise=["a", "b", "d"]) == out


def test_compare_without_noise_and_with_nothing_flagged():
    out = compare_audits(["a"], [])
    assert out["n_injected"] is None and out["model_precision"] is None and out["cleanlab_recall"] is None
    assert out["jaccard"] == 0.0
    empty = compare_audits([], [], injected_noise=NOISE)
    assert empty["jaccard"] is None and empty["model_precision"] is None and empty["model_recall"] == 0.0


def test_universe_restricts_both_audits_and_the_noise():
    out = compare_audits(["a", "b", "x"], ["b", "y", "z"], injected_noise=NOISE, universe=list("abcdef"))
    assert out["n_universe"] == 6
    assert (out["model_outside_universe"], out["cleanlab_outside_universe"]) == (1, 2)
    assert (out["n_model"], out["n_cleanlab"], out["n_both"]) == (2, 1, 1)
    assert out["model_precision"] == 1.0 and out["cleanlab_recall"] == pytest.approx(1 / 3)
    with pytest.raises(TypeError, match="universe"):
        compare_audits(["a"], ["b"], universe="abc")


def test_compare_refuses_unmatchable_input():
    with pytest.raises(ValueError, match="run the audit with uids"):
        compare_audits(["a"], [{"index": 0, "uid": None}])
    with pytest.raises(ValueError, match="label_flipped"):
        compare_audits(["a"], ["b"], injected_noise=pd.DataFrame({"uid": ["a"]}))
    with pytest.raises(ValueError, match="'uid' column"):
        compare_audits(pd.DataFrame({"flagged": [True]}), ["b"])
    with pytest.raises(TypeError, match="list of uids"):
        compare_audits("a", ["b"])


def test_on_a_noisy_synthetic_corpus(vocab):
    """The two audits on injected noise: both precise; a model that fits its training labels flags fewer."""
    styles = ("corporate", "credential_phish")
    corpus = pd.concat([generate_style(vocab, s, 400, seed=1, label_noise=0.15) for s in styles], ignore_index=True)
    cleanlab = estimate_label_noise(corpus["text"], corpus["label"], uids=corpus["uid"], seed=0)

    def audit_of(C):
        model = train_tfidf_baseline(corpus, None, TfidfSettings(C=C))  # a model trained on these very labels
        return model_label_audit(predict_classical(model, corpus), threshold=0.6)

    smooth_audit = audit_of(0.3)
    assert set(model_suspects(smooth_audit)[0]) == set(cleanlab["suspects"][0])  # one suspect format
    smooth = compare_audits(smooth_audit, cleanlab["suspects"], injected_noise=corpus, universe=corpus["uid"])
    assert smooth["n_injected"] == int(corpus["label_flipped"].sum())
    assert smooth["model_precision"] >= 0.9 and smooth["model_recall"] >= 0.6, smooth
    assert smooth["cleanlab_precision"] >= 0.9 and smooth["cleanlab_recall"] >= 0.85, smooth
    assert smooth["jaccard"] >= 0.5 and smooth["n_both"] >= 0.9 * smooth["n_model"]
    flexible = compare_audits(audit_of(4.0), cleanlab["suspects"], injected_noise=corpus)
    assert flexible["n_model"] < smooth["n_model"]  # it memorised some flipped labels
    assert np.isclose(flexible["cleanlab_precision"], smooth["cleanlab_precision"])


# --- one run's audit and the study's table -----------------------------------------------------


def test_audit_sample_keeps_the_label_shares():
    train = pd.DataFrame({"uid": [f"m{i}" for i in range(100)], "label": [1] * 30 + [0] * 70})
    assert audit_sample(train, None, seed=0).equals(train)
    assert audit_sample(train, 500, seed=0).equals(train)
    sample = audit_sample(train, 20, seed=0)
    assert len(sample) == 20 and sample["label"].sum() == 6 and sample["uid"].is_unique
    assert sample.equals(audit_sample(train, 20, seed=0)) and not sample.equals(audit_sample(train, 20, seed=1))
    with pytest.raises(ValueError, match="max_messages must be at least 2"):
        audit_sample(train, 1, seed=0)


def test_run_audit_and_table_by_hand():
    scored = pd.DataFrame({"uid": list("abcdef"), "label": [1, 1, 1, 0, 0, 0],
                           "p_malicious": [0.01, 0.02, 0.03, 0.2, 0.3, 0.95]})  # flags a, b, c, f
    train = scored.assign(label_flipped=[True, True, False, True, False, False])
    assert injected_noise_of(scored) is None and injected_noise_of(train.assign(label_flipped=None)) is None
    audit, summary = run_model_audit(scored, 0.9, ["b", "d", "zz"], injected_noise_of(train), top_suspects=2)
    assert audit["flagged"].tolist() == [True, True, True, False, False, True]
    assert [s["uid"] for s in summary["suspects"]] == ["a", "b"]
    c = summary["comparison"]
    assert (c["n_model"], c["n_cleanlab"], c["n_both"], c["cleanlab_outside_universe"]) == (4, 2, 1, 1)
    assert (c["model_precision"], c["model_recall"], c["cleanlab_precision"]) == (0.5, 2 / 3, 1.0)
    json.dumps(summary)
    _, real = run_model_audit(scored, 0.9, ["b"])
    table = model_audit_table([{**real, "arch": "llama", "recipe": "r", "seed": 0},
                               {**summary, "arch": "gemma", "recipe": "r", "seed": 0}])
    assert tuple(table.columns) == MODEL_AUDIT_TABLE_COLUMNS and table["arch"].tolist() == ["gemma", "llama"]
    assert table.loc[0, "model_precision"] == 0.5 and table.loc[0, "noise_ground_truth"] == "injected (synthetic)"
    assert np.isnan(table.loc[1, "model_precision"]) and table.loc[1, "noise_ground_truth"] == "none (real labels)"
    assert table.loc[1, "jaccard"] == 0.25 and table.loc[1, "model_flagged_share"] == pytest.approx(4 / 6)


def test_the_summary_states_both_audits_in_words():
    from gendiag.report.summary import _label_audit_text

    scored = pd.DataFrame({"uid": list("abcdef"), "label": [1, 1, 1, 0, 0, 0],
                           "p_malicious": [0.01, 0.02, 0.03, 0.2, 0.3, 0.95]})
    noise = scored.assign(label_flipped=[True, True, False, True, False, False])
    _, synthetic = run_model_audit(scored, 0.9, ["b", "d"], injected_noise_of(noise))
    _, real = run_model_audit(scored, 0.9, ["b"])
    rows = model_audit_table([{**synthetic, "arch": "llama", "recipe": "specialist", "seed": 0},
                              {**real, "arch": "llama", "recipe": "generalist", "seed": 0}]).to_dict("records")
    assert _label_audit_text(rows[1]) == (
        "llama/specialist: the model contradicts 4 of its 6 training labels at p ≥ 0.9; confident learning flags 2, "
        "both 1; against the 3 injected label flips, same-model precision 50% and recall 67%, confident learning "
        "100% and 67%")
    assert _label_audit_text(rows[0]).endswith("both 1 (real labels: no injected noise to score them against)")
