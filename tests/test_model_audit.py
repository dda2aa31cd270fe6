"""The same-model label audit and its comparison with the confident-learning audit."""

import json

import numpy as np
import pandas as pd
import pytest

from gendiag.data.audit import estimate_label_noise
from gendiag.data.model_audit import (
    MODEL_AUDIT_COLUMNS,
    compare_audits,
    model_label_audit,
    model_suspects,
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
