"""SHAP attributions: exact additivity, offsets into the message, faithfulness on a model whose
answer is known, cue recovery, sampling, the merged model and the aggregation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gendiag.attribution.aggregate import comparisons, faithfulness_table, source_scores, top_tokens
from gendiag.attribution.explain import (
    LayoutText,
    LogOddsFunction,
    explain_messages,
    feature_mask,
    stratified_sample,
    token_segments,
    visible_text,
)
from gendiag.attribution.faithfulness import MessageAttribution, cue_recovery, erasure_faithfulness, top_counts
from gendiag.attribution.study import attribute_testset
from gendiag.models.inputs import encode_prompts
from gendiag.models.loading import load_tokenizer
from gendiag.prompts import PromptFormat

CPU = torch.device("cpu")
QUANT = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}
MESSAGE = "From: alerts@paypa1-secure.ru\nSubject: urgent\n\nPlease verify your account now.\nThanks,\nIT desk"
ACCOUNT_AT = MESSAGE.index("account")


@pytest.fixture(scope="module")
def tokenizer(micro_bases):
    return load_tokenizer(micro_bases["llama"])


def one_word_model(word: str, weight: float = 6.0):
    """A model whose log-odds depend only on whether `word` is in the message."""
    def f(texts):
        return np.array([weight if word in str(t) else -weight for t in np.asarray(texts, dtype=object).ravel()])
    return f


def explain_one(tokenizer, function, text=MESSAGE, max_evals=1000):
    return explain_messages(function, tokenizer, [text], ["m1"], max_evals=max_evals, batch_size=32)


def test_offsets_point_at_each_tokens_characters(tokenizer):
    segments, spans, ids = token_segments(tokenizer, MESSAGE)
    assert "".join(segments) == MESSAGE
    assert all(MESSAGE[s:e] == seg for seg, (s, e) in zip(segments, spans, strict=True))
    assert len(ids) == len(segments)
    account = [seg for seg in segments if seg.strip() == "account"]
    assert account, segments
    start = int(spans[segments.index(account[0])][0])
    assert MESSAGE[start:].lstrip().startswith("account")


def test_layout_masker_keeps_the_message_and_its_line_breaks(tokenizer):
    masker = LayoutText(tokenizer)
    n = len(token_segments(tokenizer, MESSAGE)[0])
    assert masker(np.ones(n, dtype=bool), MESSAGE)[0][0] == MESSAGE
    masked = masker(np.zeros(n, dtype=bool), MESSAGE)[0][0]
    assert masked.count("\n") == MESSAGE.count("\n") and "account" not in masked and "..." in masked


def test_attributions_add_up_to_the_models_log_odds(micro_bases, tokenizer):
    from gendiag.models.merge import load_merged

    model = load_merged(micro_bases["llama"], "llama", None, QUANT, CPU, torch.float32)
    function = LogOddsFunction(model, tokenizer, PromptFormat(), 256, 64)
    tokens, messages = explain_one(tokenizer, function)
    assert messages.loc[0, "additivity_error"] < 1e-6
    direct = function([MESSAGE])[0]
    assert messages.loc[0, "f_x"] == pytest.approx(direct, abs=1e-6)
    assert tokens["shap"].sum() + messages.loc[0, "base_value"] == pytest.approx(direct, abs=1e-5)
    assert list(tokens.columns[:7]) == ["uid", "position", "token", "start", "end", "shap", "special"]
    assert tokens["special"].sum() == 1  # the BOS token


def test_a_one_word_model_puts_all_attribution_on_that_word(tokenizer):
    tokens, messages = explain_one(tokenizer, one_word_model("account"))
    top = tokens.loc[tokens["shap"].idxmax()]
    assert top["token"].strip() == "account"
    assert top["shap"] == pytest.approx(12.0, abs=1e-9)
    others = tokens[tokens["token"].str.strip() != "account"]
    assert others["shap"].abs().max() < 1e-9
    assert messages.loc[0, "base_value"] == pytest.approx(-6.0)


def test_faithfulness_of_a_one_word_model(tokenizer):
    function = one_word_model("account")
    tokens, messages = explain_one(tokenizer, function)
    message = MessageAttribution("m1", tokens["token"].tolist(), feature_mask(tokens), tokens["shap"].to_numpy(),
                                 float(messages.loc[0, "f_x"]))
    per_message, curves = erasure_faithfulness(function, [message], random_repeats=10, seed=0)
    row = per_message.iloc[0]
    p_full, p_without = 1 / (1 + np.exp(-6.0)), 1 / (1 + np.exp(6.0))
    # SHAP's first token is the word itself: deleting it always flips the answer; keeping only it is enough.
    assert row["comprehensiveness"] == pytest.approx(p_full - p_without, abs=1e-9)
    assert row["sufficiency"] == pytest.approx(0.0, abs=1e-9)
    assert row["random_comprehensiveness"] < row["comprehensiveness"] / 2
    assert row["random_sufficiency"] > 0.3
    assert set(curves["method"]) == {"shap", "random"} and len(curves) == 10


def test_attributions_toward_legitimate_are_read_for_the_predicted_class(tokenizer):
    function = one_word_model("account", weight=-6.0)  # the word makes the message legitimate
    tokens, messages = explain_one(tokenizer, function)
    assert messages.loc[0, "f_x"] < 0
    message = MessageAttribution("m1", tokens["token"].tolist(), feature_mask(tokens), tokens["shap"].to_numpy(),
                                 float(messages.loc[0, "f_x"]))
    per_message, _ = erasure_faithfulness(function, [message], random_repeats=3)
    assert per_message.loc[0, "comprehensiveness"] > 0.99


def test_top_counts_remove_at_least_one_and_at_most_all_tokens():
    assert top_counts(40, (0.01, 0.05, 0.1, 0.2, 0.5)) == [1, 2, 4, 8, 20]
    assert top_counts(3, (0.01, 0.5, 1.0)) == [1, 2, 3]


def test_cue_precision_and_recall_at_k():
    tokens = pd.DataFrame({"token": [" verify", " your", " account", " now", "."],
                           "start": [0, 7, 12, 21, 25], "end": [7, 12, 21, 25, 26],
                           "shap": [3.0, 0.1, 2.0, 1.0, -1.0]})
    spans = [{"start": 1, "end": 21}, {"start": 40, "end": 50}]  # the second one is beyond the text
    precision, recall = cue_recovery(tokens, spans, k=3)
    assert precision == pytest.approx(2 / 3) and recall == pytest.approx(1.0)
    assert np.isnan(cue_recovery(tokens, [], k=3)[0])


def test_stratified_sample_takes_each_category_up_to_its_count():
    predictions = pd.DataFrame({"uid": [f"u{i}" for i in range(10)], "label": [1, 1, 1, 0, 0, 0, 0, 1, 0, 0],
                                "pred": [1, 1, 0, 0, 0, 0, 1, 1, 0, 0], "log_odds": np.linspace(-1, 1, 10)})
    sample = stratified_sample(predictions, {"tp": 2, "fp": 5, "fn": 1, "tn": 2}, seed=0)
    assert sample["category"].value_counts().to_dict() == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    assert sample.equals(stratified_sample(predictions, {"tp": 2, "fp": 5, "fn": 1, "tn": 2}, seed=0))
    with pytest.raises(ValueError, match="unknown sample categories"):
        stratified_sample(predictions, {"true_positive": 1}, seed=0)


def test_visible_text_is_what_the_prompt_keeps(tokenizer):
    prompt = PromptFormat()
    long = " ".join(["please verify your account"] * 60)
    visible = visible_text(long, tokenizer, prompt, 64)
    assert len(visible) < len(long) and long.startswith(visible)
    assert encode_prompts([long], tokenizer, prompt, 64) == encode_prompts([visible], tokenizer, prompt, 64)
    assert visible_text(MESSAGE, tokenizer, prompt, 256) == MESSAGE


def test_merged_model_computes_what_the_4bit_model_with_its_adapter_computes(micro_bases, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    from gendiag.evaluate.predict import load_for_prediction, predict_log_odds
    from gendiag.models.loading import load_causal_lm
    from gendiag.models.merge import load_merged, prediction_agreement

    base = load_causal_lm(micro_bases["llama"], "llama", QUANT, CPU, torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    texts = [MESSAGE, "Hello team, the meeting moved to 3pm.", "Your account is locked, log in here"]
    prompt = PromptFormat()
    evaluated = load_for_prediction(micro_bases["llama"], "llama", tmp_path / "adapter", QUANT, CPU, torch.float32)
    merged = load_merged(micro_bases["llama"], "llama", tmp_path / "adapter", QUANT, CPU, torch.float32)
    assert not any("4bit" in type(m).__name__ for m in merged.modules())
    reference = predict_log_odds(evaluated, tokenizer, texts, prompt, 128, 8, progress=False)
    ours = predict_log_odds(merged, tokenizer, texts, prompt, 128, 8, progress=False)
    agreement = prediction_agreement(reference, ours)
    assert agreement["label_agreement"] == 1.0 and agreement["max_abs_log_odds_diff"] < 1e-4
    adapter_free = predict_log_odds(load_merged(micro_bases["llama"], "llama", None, QUANT, CPU, torch.float32),
                                    tokenizer, texts, prompt, 128, 8, progress=False)
    assert np.abs(adapter_free - ours).max() > 1e-3  # the adapter was merged, not dropped


def test_attribute_testset_checks_the_explained_model_against_the_predictions(tokenizer):
    texts = [MESSAGE, "Lunch at noon?\nBring the slides.", "verify your account here", "See you at the offsite."]
    spans = [[{"start": ACCOUNT_AT, "end": ACCOUNT_AT + 7, "role": "cue"}], [], [{"start": 0, "end": 6}], []]
    testset = pd.DataFrame({"uid": ["a", "b", "c", "d"], "label": [1, 0, 1, 0], "text": texts,
                            "cue_spans": [json.dumps(s) for s in spans]})
    function = one_word_model("account")
    predictions = testset[["uid", "label"]].assign(log_odds=function(texts))
    predictions["pred"] = (predictions["log_odds"] > 0).astype(int)
    settings = {"sample": {"tp": 2, "tn": 2}, "max_evals": 1000, "batch_size": 16, "fractions": [0.1, 0.5],
                "random_repeats": 2, "cue_k": 1, "seed": 0}
    tokens, messages, curves = attribute_testset(function, tokenizer, PromptFormat(), testset, predictions,
                                                 settings, 256)
    assert set(messages["category"]) == {"tp", "tn"} and len(messages) == 4
    assert (messages["merged_log_odds_diff"] == 0).all() and messages["merged_label_agrees"].all()
    first = messages.set_index("uid").loc["a"]
    assert first["cue_precision"] == 1.0 and first["cue_recall"] == 1.0  # "account" is the planted cue
    assert messages.set_index("uid").loc["c", "cue_precision"] == 0.0  # its cue ("verify") is not its top token
    assert np.isnan(messages.set_index("uid").loc["b", "cue_precision"])  # legitimate: no cue to recover
    in_cue = tokens[(tokens["uid"] == "a") & tokens["in_cue"].fillna(False)]
    assert "".join(in_cue["token"]).strip() == "account"
    stale = predictions.assign(uid=["a", "b", "c", "zzz"])
    with pytest.raises(ValueError, match="stale"):
        attribute_testset(function, tokenizer, PromptFormat(), testset, stale, settings, 256)


def test_source_artefacts_separate_corpora_not_labels(tokenizer):
    rows = []
    for corpus, marker in (("alpha", "regards"), ("beta", "cheers")):
        for i in range(40):
            label = i % 2
            rows.append({"corpus": corpus, "label": label,
                         "text": f"{'verify your account' if label else 'meeting notes'} {marker}"})
    scores = source_scores(pd.DataFrame(rows), tokenizer).set_index("token")
    assert scores.loc["regards", "artefact_score"] == pytest.approx(1.0)
    assert scores.loc["account", "artefact_score"] == pytest.approx(-1.0)
    assert scores.loc["account", "label_separation"] == pytest.approx(1.0)


def synthetic_tokens():
    rng = np.random.default_rng(0)
    rows = []
    for arch in ("llama", "gemma2"):
        for recipe in ("specialist", "generalist"):
            for uid in range(6):
                label = uid % 2
                for word, value in (("account", 2.0), ("meeting", -1.5), ("the", 0.01)):
                    rows.append({"arch": arch, "recipe": recipe, "paradigm": "standard", "seed": 0,
                                 "testset": "t", "uid": f"{uid}", "label": label, "token": f" {word}",
                                 "shap": value + rng.normal(0, 0.01), "in_cue": word == "account"})
    return pd.DataFrame(rows)


def test_top_tokens_rank_by_absolute_and_signed_value_per_class():
    tokens = synthetic_tokens()
    sources = pd.DataFrame({"arch": ["llama", "gemma2"], "token": ["meeting", "meeting"],
                            "artefact_score": [0.8, 0.1], "probe_token": [False, False]})
    top = top_tokens(tokens, sources, top_n=2, min_count=3, artefact_threshold=0.5)
    mal = top[(top["arch"] == "llama") & (top["recipe"] == "generalist") & (top["class"] == "malicious")]
    assert mal[mal["ranking"] == "abs"]["token"].tolist() == ["account", "meeting"]
    legit_signed = top[(top["arch"] == "llama") & (top["class"] == "legitimate") & (top["ranking"] == "signed")]
    assert legit_signed["token"].iloc[0] == "meeting"
    flagged = top[top["token"] == "meeting"].groupby("arch")["source_artefact"].all()
    assert flagged["llama"] and not flagged["gemma2"]
    assert mal[mal["token"] == "account"]["in_cue_share"].iloc[0] == 1.0
    compared = comparisons(tokens, top)
    assert set(compared["comparison"]) == {"architecture", "recipe"}
    assert (compared["jaccard_top"] == 1.0).all()


def test_faithfulness_table_has_the_issue_columns_and_a_row_per_model_over_all_testsets():
    messages = pd.DataFrame({"arch": "llama", "recipe": "generalist", "paradigm": "standard", "seed": 0,
                             "testset": ["a", "a", "b"], "uid": ["1", "2", "3"], "comprehensiveness": [0.6, 0.4, 0.5],
                             "sufficiency": [0.1, 0.1, 0.1], "random_comprehensiveness": [0.1, 0.1, 0.4],
                             "random_sufficiency": [0.3, 0.3, 0.3], "cue_precision": [1.0, np.nan, 0.5],
                             "cue_recall": [0.5, np.nan, 0.5], "additivity_error": [0.0, 1e-15, 0.0],
                             "merged_log_odds_diff": [0.0, 1e-6, 0.0], "merged_label_agrees": [True, True, True]})
    table = faithfulness_table(messages, cue_k=5)
    for column in ("arch", "recipe", "paradigm", "testset", "comprehensiveness", "sufficiency",
                   "random_comprehensiveness", "random_sufficiency", "cue_precision_at_k", "cue_recall_at_k"):
        assert column in table.columns
    overall = table[table["testset"] == "all"].iloc[0]
    assert overall["n_messages"] == 3 and overall["comprehensiveness"] == pytest.approx(0.5)
    assert overall["comprehensiveness_ratio"] == pytest.approx(0.5 / 0.2)
    assert table[table["testset"] == "a"].iloc[0]["cue_precision_at_k"] == 1.0


def test_log_odds_function_runs_each_distinct_text_once_per_message(micro_bases, tokenizer):
    from gendiag.evaluate.predict import predict_log_odds
    from gendiag.models.merge import load_merged

    model = load_merged(micro_bases["llama"], "llama", None, QUANT, CPU, torch.float32)
    function = LogOddsFunction(model, tokenizer, PromptFormat(), 128, 2)
    texts = ["verify your account", "see you at lunch", "verify your account", "a third one"]
    values = function(texts)
    assert function.rows == 4 and function.evaluated == 3
    expected = predict_log_odds(model, tokenizer, texts, PromptFormat(), 128, 4, progress=False)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    function(texts[:2])
    assert function.evaluated == 3
    function.forget()
    function(texts[:2])
    assert function.evaluated == 5
