"""The TF-IDF + logistic regression baseline: learns, is deterministic, round-trips, fails clearly."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from gendiag.data.synthetic import generate_style
from gendiag.evaluate.classical import (
    ARCH,
    CLASSICAL_PREDICTION_COLUMNS,
    PARADIGM,
    TfidfBaseline,
    TfidfSettings,
    load_tfidf_baseline,
    predict_classical,
    save_tfidf_baseline,
    train_tfidf_baseline,
)
from gendiag.evaluate.metrics import classification_metrics

PHISH = ["verify your account password now", "urgent: confirm your bank login", "your account is suspended, click",
         "reset your password at this link", "confirm billing details urgently", "login to verify your identity"]
LEGIT = ["minutes of the budget meeting", "lunch on friday with the team", "draft agenda for the quarterly review",
         "the project schedule is attached", "notes from the design meeting", "team lunch moved to thursday"]
TOY = TfidfSettings(min_df=1, C=10.0)


def frame(texts, labels, prefix="m"):
    return pd.DataFrame({"uid": [f"{prefix}{i}" for i in range(len(texts))], "text": texts, "label": labels})


def toy_split(prefix="train"):
    return frame(PHISH + LEGIT, [1] * len(PHISH) + [0] * len(LEGIT), prefix)


HELD_OUT = frame(["please verify your password", "confirm your account login now",
                  "agenda for the team meeting", "friday lunch schedule"], [1, 1, 0, 0], "test")


def test_learns_a_separable_toy_set():
    model = train_tfidf_baseline(toy_split(), toy_split("val"), TOY)
    assert isinstance(model, TfidfBaseline) and model.n_train == 12
    out = predict_classical(model, HELD_OUT)
    assert out["pred"].tolist() == [1, 1, 0, 0]
    assert classification_metrics(out["label"], out["p_malicious"])["auroc"] == 1.0
    assert model.validation["f1"] == 1.0 and model.validation["n"] == 12 and model.validation["C"] == 10.0
    # Both blocks are present: word uni/bigrams and char_wb 3-5-grams.
    vectorizers = dict(model.pipeline.named_steps["features"].transformer_list)
    assert "verify your" in vectorizers["word"].vocabulary_
    assert " pas" in vectorizers["char"].vocabulary_ and vectorizers["char"].analyzer == "char_wb"


def test_prediction_table_matches_the_llm_prediction_files():
    from gendiag.evaluate.predict import prediction_table

    model = train_tfidf_baseline(toy_split(), None, TOY)
    ours = predict_classical(model, HELD_OUT)
    llm = prediction_table(HELD_OUT, ours["log_odds"].to_numpy())
    assert tuple(ours.columns) == CLASSICAL_PREDICTION_COLUMNS == tuple(llm.columns)
    assert (ours.dtypes == llm.dtypes).all()
    pd.testing.assert_frame_equal(ours, llm, check_exact=False, rtol=1e-12)
    assert (ARCH, PARADIGM) == ("classical", "tfidf")


def test_is_deterministic():
    a = train_tfidf_baseline(toy_split(), toy_split("val"), TfidfSettings(min_df=1, seed=3))
    b = train_tfidf_baseline(toy_split(), toy_split("val"), TfidfSettings(min_df=1, seed=3))
    assert np.array_equal(a.pipeline.named_steps["clf"].coef_, b.pipeline.named_steps["clf"].coef_)
    assert predict_classical(a, HELD_OUT).equals(predict_classical(b, HELD_OUT))


def test_save_and_load_round_trip(tmp_path):
    model = train_tfidf_baseline(toy_split(), toy_split("val"), TfidfSettings(min_df=1, C_grid=(0.1, 10.0)))
    path = save_tfidf_baseline(model, tmp_path / "model.npz")
    assert path == tmp_path / "model.npz" and not list(tmp_path.glob(".*tmp"))
    loaded = load_tfidf_baseline(path)
    assert loaded.settings == model.settings and loaded.n_train == model.n_train
    assert loaded.validation == json.loads(json.dumps(model.validation))
    pd.testing.assert_frame_equal(predict_classical(loaded, HELD_OUT), predict_classical(model, HELD_OUT),
                                  check_exact=True)
    # No pickled objects inside: the file opens with allow_pickle=False, arrays and a JSON header only.
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"meta", "word_idf", "char_idf", "coef", "intercept"}
        assert all(data[k].dtype != object for k in data.files)


def test_load_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train it first"):
        load_tfidf_baseline(tmp_path / "absent.npz")
    other = tmp_path / "other.npz"
    np.savez(other, coef=np.zeros(3))
    with pytest.raises(ValueError, match="not a TF-IDF baseline"):
        load_tfidf_baseline(other)
    text = tmp_path / "model.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a TF-IDF baseline"):
        load_tfidf_baseline(text)


def test_c_grid_picks_the_lowest_validation_log_loss():
    model = train_tfidf_baseline(toy_split(), toy_split("val"), TfidfSettings(min_df=1, C_grid=(0.01, 1.0, 100.0)))
    losses = {float(c): v for c, v in model.validation["C_grid_log_loss"].items()}
    assert model.validation["C"] == min(losses, key=losses.get)
    assert model.validation["C"] == model.pipeline.named_steps["clf"].C


def test_on_a_synthetic_corpus(vocab, caplog):
    corpus = pd.concat([generate_style(vocab, s, 300, seed=2) for s in ("corporate", "credential_phish")],
                       ignore_index=True).sample(frac=1.0, random_state=0)
    train, val, test = corpus.iloc[:360], corpus.iloc[360:480], corpus.iloc[480:]
    with caplog.at_level(logging.INFO, logger="gendiag.evaluate.classical"):
        model = train_tfidf_baseline(train, val)
    assert "validation log-loss" in caplog.text
    scores = classification_metrics(test["label"], predict_classical(model, test)["p_malicious"])
    assert scores["auroc"] > 0.9 and scores["f1"] > 0.8, scores


# --- errors ------------------------------------------------------------------------------------


def test_missing_columns_name_the_column_and_the_fix():
    with pytest.raises(ValueError, match=r"training split lacks column\(s\) \['text'\]; expected a recipe split"):
        train_tfidf_baseline(toy_split().drop(columns="text"))
    with pytest.raises(ValueError, match=r"validation split lacks column\(s\) \['label'\]"):
        train_tfidf_baseline(toy_split(), toy_split().drop(columns="label"), TOY)
    model = train_tfidf_baseline(toy_split(), None, TOY)
    with pytest.raises(ValueError, match=r"messages to score lacks column\(s\) \['uid'\]"):
        predict_classical(model, HELD_OUT.drop(columns="uid"))
    with pytest.raises(TypeError, match="DataFrame"):
        train_tfidf_baseline({"text": ["a"], "label": [1]})
    with pytest.raises(ValueError, match="has no rows"):
        train_tfidf_baseline(toy_split().iloc[:0])


def test_single_class_training_split_is_refused():
    split = toy_split()
    with pytest.raises(ValueError, match=r"only label 1 \(6 messages\).*needs both classes"):
        train_tfidf_baseline(split[split["label"] == 1], None, TOY)


def test_bad_texts_and_labels():
    split = toy_split()
    split.loc[3, "text"] = None
    with pytest.raises(ValueError, match=r"row 3 \(uid 'train3'\) is float.*fill missing texts with ''"):
        train_tfidf_baseline(split, None, TOY)
    split = toy_split()
    split.loc[0, "label"] = 2
    with pytest.raises(ValueError, match=r"'label' must be 0 \(legitimate\) or 1 \(malicious\); found \[2\]"):
        train_tfidf_baseline(split, None, TOY)
    with pytest.raises(ValueError, match="lower min_df"):
        train_tfidf_baseline(frame(["", ""], [0, 1]), None, TOY)
    with pytest.raises(ValueError, match="C_grid picks C on the validation split"):
        train_tfidf_baseline(toy_split(), None, TfidfSettings(C_grid=(1.0,)))
    with pytest.raises(ValueError, match="threshold"):
        predict_classical(train_tfidf_baseline(toy_split(), None, TOY), HELD_OUT, threshold=1.5)
    with pytest.raises(TypeError, match="TfidfBaseline or a fitted Pipeline"):
        predict_classical("model.npz", HELD_OUT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"word_ngrams": (2, 1)}, "word_ngrams must be two integers"),
        ({"char_ngrams": (0, 3)}, "char_ngrams"),
        ({"max_features": 0}, "max_features must be a positive integer or None"),
        ({"min_df": 0.5}, "min_df"),
        ({"C": -1}, "C must be positive"),
        ({"C_grid": (1.0, 0.0)}, "C_grid"),
        ({"class_weight": "auto"}, "class_weight"),
        ({"max_iter": 0}, "max_iter"),
        ({"lowercase": "yes"}, "lowercase must be true or false"),
    ],
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TfidfSettings(**kwargs)


def test_settings_from_config_mapping():
    settings = TfidfSettings.from_mapping({"word_ngrams": [1, 3], "C_grid": [0.5, 2], "max_features": None})
    assert settings.word_ngrams == (1, 3) and settings.C_grid == (0.5, 2.0) and settings.max_features is None
    assert TfidfSettings.from_mapping(None) == TfidfSettings()
    with pytest.raises(ValueError, match=r"unknown TF-IDF baseline setting\(s\) \['ngrams'\]; known: \["):
        TfidfSettings.from_mapping({"ngrams": [1, 2]})
