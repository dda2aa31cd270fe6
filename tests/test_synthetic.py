import json
import re

import numpy as np
import pandas as pd
import pytest

from gendiag.data.synthetic import VocabularyError, cue_spans, generate_style, load_vocabulary


def test_at_least_four_styles_with_both_labels(vocab):
    assert len(vocab["styles"]) >= 4
    for style in vocab["styles"]:
        frame = generate_style(vocab, style, 200, seed=1)
        assert set(frame["label"]) == {0, 1}
        assert frame["label"].mean() == pytest.approx(0.5, abs=0.01)
        assert frame["text"].str.len().min() > 50


def test_deterministic_per_seed(vocab):
    a = generate_style(vocab, "credential_phish", 100, seed=3)
    b = generate_style(vocab, "credential_phish", 100, seed=3)
    c = generate_style(vocab, "credential_phish", 100, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert (a["text"] != c["text"]).mean() > 0.9


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).casefold()


def test_every_planted_span_points_at_its_phrase(vocab):
    phrase_sets = {c: {_squash(p) for p in vocab["shared_cues"][c]} for c in ("urgency", "credential_request")}
    for style in vocab["styles"]:
        frame = generate_style(vocab, style, 150, seed=2)
        style_cues = {_squash(p) for p in vocab["styles"][style]["style_cues"] if "{" not in p}
        for _, row in frame.iterrows():
            spans = json.loads(row["cue_spans"])
            ends = sorted((s["start"], s["end"]) for s in spans)
            assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False)), "spans overlap"
            for span in spans:
                piece = row["text"][span["start"] : span["end"]]
                assert piece and piece == piece.strip()
                if span["category"] in phrase_sets:
                    assert _squash(piece) in phrase_sets[span["category"]], (style, piece)
                if span["category"] == "style" and style_cues and "{" not in piece:
                    assert _squash(piece) in style_cues or style == "credential_phish", (style, piece)


def test_cues_only_in_malicious_and_decoys_only_in_legitimate(vocab):
    frame = generate_style(vocab, "mailing_list", 300, seed=7)
    n_cues = frame.apply(lambda r: len(cue_spans(r, "cue")), axis=1)
    n_decoys = frame.apply(lambda r: len(cue_spans(r, "decoy")), axis=1)
    assert (n_cues[frame["label_true"] == 1] >= 1).all()
    assert (n_cues[frame["label_true"] == 0] == 0).all()
    assert (n_decoys[frame["label_true"] == 1] == 0).all()
    assert n_decoys[frame["label_true"] == 0].sum() > 0


def test_shared_cue_rates_differ_by_style(vocab):
    """The planted distribution shift: credential requests are rare in 2000s corporate spam."""
    def share(style):
        frame = generate_style(vocab, style, 600, seed=1)
        spans = [cue_spans(r, "cue") for _, r in frame[frame["label"] == 1].iterrows()]
        return np.mean([any(s["category"] == "credential_request" for s in row) for row in spans])

    assert share("credential_phish") > 0.5 > 0.1 > share("corporate")


def test_length_does_not_give_the_label_away(vocab):
    from sklearn.metrics import roc_auc_score

    for style in vocab["styles"]:
        frame = generate_style(vocab, style, 600, seed=1)
        assert 0.4 < roc_auc_score(frame["label"], frame["text"].str.len()) < 0.6, style


def test_malicious_sender_is_a_recorded_cue(vocab):
    frame = generate_style(vocab, "credential_phish", 50, seed=0)
    for _, row in frame.iterrows():
        senders = [s for s in cue_spans(row) if s["category"] == "suspicious_sender"]
        assert len(senders) == row["label_true"]
        if senders:
            assert row["text"][senders[0]["start"] : senders[0]["end"]] == row["sender"]


def test_label_noise_rate_and_bookkeeping(vocab):
    frame = generate_style(vocab, "advance_fee", 2000, label_noise=0.2, seed=0)
    assert frame["label_flipped"].mean() == pytest.approx(0.2, abs=0.03)
    flipped = frame["label_flipped"]
    assert (frame.loc[flipped, "label"] == 1 - frame.loc[flipped, "label_true"]).all()
    assert (frame.loc[~flipped, "label"] == frame.loc[~flipped, "label_true"]).all()


def test_corporate_style_carries_enron_artefacts(vocab):
    frame = generate_style(vocab, "corporate", 50, seed=0)
    assert (frame["text"] == frame["text"].str.lower()).all()
    assert frame["text"].str.contains(" , | \\. ").mean() > 0.9


def test_bad_inputs_fail_clearly(vocab, tmp_path):
    with pytest.raises(ValueError, match="unknown style 'nope'"):
        generate_style(vocab, "nope", 10)
    with pytest.raises(ValueError, match="label_noise must be in"):
        generate_style(vocab, "corporate", 10, label_noise=2)
    broken = tmp_path / "styles.yaml"
    broken.write_text("slots: {}\nshared_cues: {}\n")
    with pytest.raises(VocabularyError, match=f"{broken}: missing top-level key 'decoys'"):
        load_vocabulary(broken)
    broken.write_text("slots: [a, {b]\n")
    with pytest.raises(VocabularyError, match="not valid YAML"):
        load_vocabulary(broken)
