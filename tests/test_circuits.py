"""Circuit analysis: the patching metric, the minimal-pair builder, the merge-agreement check, and
the analyses' exact identities (DLA adds up to the logit difference, patching everything restores
the clean run) on a micro model of each architecture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gendiag.circuits.bridge import wrap_for_analysis
from gendiag.circuits.pairs import SEGMENTS, PairRejected, align_pair, benign_phrases, synthetic_cue_pairs
from gendiag.circuits.patching import (
    attribution_patching,
    direct_logit_attribution,
    logit_lens,
    normalised_effect,
    patch_heads,
    patch_resid_positions,
    run_cached,
)
from gendiag.circuits.study import analyse_model, merge_agreement, select_pairs
from gendiag.circuits.summary import decision_point, position_shares
from gendiag.data.synthetic import cue_spans, generate_style
from gendiag.models.loading import load_tokenizer
from gendiag.models.merge import load_merged
from gendiag.prompts import PromptFormat

CPU = torch.device("cpu")
QUANT = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}
PROMPT = PromptFormat()
FAMILIES = ("llama", "gemma2", "mistral", "gemma3")


@pytest.fixture(scope="module")
def tokenizer(micro_bases):
    return load_tokenizer(micro_bases["llama"])


@pytest.fixture(scope="module")
def testset(vocab):
    return generate_style(vocab, "credential_phish", 80, seed=9)


@pytest.fixture(scope="module")
def adapters(micro_bases, tmp_path_factory):
    """{family: adapter dir}: a LoRA adapter with random (non-zero) updates on each micro base."""
    from peft import LoraConfig, get_peft_model

    from gendiag.models.loading import load_causal_lm

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for family in FAMILIES:
        base = load_causal_lm(micro_bases[family], family, QUANT, CPU, torch.float32)
        torch.manual_seed(1)  # before LoRA's own init too: the adapters must not depend on what ran earlier
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.5)
        model.save_pretrained(root / family)
        out[family] = root / family
    return out


@pytest.fixture(scope="module")
def analysed(micro_bases, adapters, tokenizer):
    """{family: AnalysedModel} of each merged micro model."""
    return {family: wrap_for_analysis(load_merged(micro_bases[family], family, adapters[family], QUANT, CPU,
                                                  torch.float32), tokenizer, family, PROMPT)
            for family in FAMILIES}


@pytest.fixture(scope="module")
def pairs(testset, tokenizer):
    built, drops = synthetic_cue_pairs(testset, "credential_phish", tokenizer, PROMPT, 160, 6, seed=0)
    return built


# --- the metric -------------------------------------------------------------------------------

def test_normalised_effect_is_zero_at_corrupted_and_one_at_clean():
    clean, corrupted = np.array([4.0, -1.0]), np.array([-2.0, 3.0])
    assert np.allclose(normalised_effect(corrupted, clean, corrupted), 0.0)
    assert np.allclose(normalised_effect(clean, clean, corrupted), 1.0)
    assert np.allclose(normalised_effect(np.array([1.0, 1.0]), clean, corrupted), [0.5, 0.5])
    assert normalised_effect(7.0, 4.0, -2.0) == pytest.approx(1.5)  # overshoot is reported, not clipped


def test_normalised_effect_refuses_pairs_without_a_gap():
    with pytest.raises(ValueError, match="undefined"):
        normalised_effect(1.0, 2.0, 2.0)


def test_decision_point_is_where_the_logit_difference_stays_past_half_the_final_value():
    assert decision_point(np.array([0.0, 0.4, 2.6, 3.0, 4.0])) == 2
    assert decision_point(np.array([0.0, 1.0, -0.5])) is None  # no decision for the clean label
    # An early transient (Gemma 3's first layers through the final norm) is not the decision.
    assert decision_point(np.array([-60.0, 19.0, 3.0, -7.0, 0.5, 12.0, 7.4])) == 5
    assert decision_point(np.array([3.0, 3.5, 4.0])) == 0


def test_position_shares_add_up_to_one():
    resid = pd.DataFrame({"segment": ["edited", "edited", "answer", "question"], "effect": [0.5, -0.5, 1.0, 0.0]})
    shares = position_shares(resid)
    assert shares == pytest.approx({"edited": 0.5, "answer": 0.5, "question": 0.0})


def test_pairs_whose_edit_barely_moves_the_prediction_are_not_analysed(pairs):
    clean = np.array([3.0, 3.0, 3.0, 3.0, 3.0, 3.0])[: len(pairs)]
    corrupt = np.array([2.9, -1.0, -2.0, -3.0, 0.0, 1.0])[: len(pairs)]
    status = select_pairs(pairs, clean, corrupt, min_effect=0.5, per_testset=2)
    assert status[0] == "prediction barely changes"
    assert status.count("analysed") == 2
    assert all(s != "analysed" for s in status[3:])


# --- the pair builder -------------------------------------------------------------------------

def test_cue_toggles_line_up_token_by_token(pairs, testset, tokenizer):
    assert len(pairs) == 6
    legitimate_phrases = {p for phrases in benign_phrases(testset).values() for p in phrases}
    for pair in pairs:
        assert pair.n_tokens == len(pair.corrupt_ids)
        differing = {i for i, (a, b) in enumerate(zip(pair.clean_ids, pair.corrupt_ids, strict=True)) if a != b}
        assert differing and differing <= set(pair.edited_positions)
        assert pair.clean_phrase in pair.clean_text and pair.corrupt_phrase in pair.corrupt_text
        assert pair.corrupt_phrase in legitimate_phrases  # the benign text comes from a legitimate message
        row = testset[testset["uid"] == pair.uid].iloc[0]
        assert pair.clean_phrase in [row["text"][s["start"]:s["end"]] for s in cue_spans(row)]
        # everything but the cue is kept
        start = pair.clean_text.index(pair.clean_phrase)
        assert pair.corrupt_text[:start] == pair.clean_text[:start]
        assert pair.corrupt_text.endswith(pair.clean_text[start + len(pair.clean_phrase):])
        segments = pair.segments()
        assert set(segments) <= set(SEGMENTS) and segments[-1] == "answer"
        assert all(segments[i] == "edited" for i in pair.edited_positions)


def test_pair_builder_is_deterministic_and_reports_drops(testset, tokenizer):
    first, drops = synthetic_cue_pairs(testset, "t", tokenizer, PROMPT, 160, 30, seed=3)
    second, _ = synthetic_cue_pairs(testset, "t", tokenizer, PROMPT, 160, 30, seed=3)
    assert [p.pair_id for p in first] == [p.pair_id for p in second]
    assert list(drops.columns) == ["testset", "uid", "kind", "category", "reason"]
    assert len(first) + len(drops) >= 30 or len(first) == len({p.uid for p in first})
    assert drops["reason"].str.len().gt(0).all()


def test_align_pair_rejects_unequal_lengths_and_changes_outside_the_edit(tokenizer):
    text = "From: a@b.com\nSubject: hi\n\nPlease verify your password now. Thanks."
    start = text.index("verify your password")
    end = start + len("verify your password")
    longer = text[:start] + "read the attached quarterly budget figures" + text[end:]
    with pytest.raises(PairRejected, match="token lengths differ"):
        align_pair(tokenizer, PROMPT, 160, text, (start, end), longer, (start, start + 42))
    with pytest.raises(PairRejected, match="unchanged"):
        align_pair(tokenizer, PROMPT, 160, text, (start, end), text, (start, end))
    # a second change outside the declared span
    outside = text.replace("Thanks", "Cheers")
    with pytest.raises(PairRejected):
        align_pair(tokenizer, PROMPT, 160, text, (start, end), outside, (start, end))
    # an edit past the prompt's token budget can never be seen by the model
    with pytest.raises(PairRejected, match="budget"):
        align_pair(tokenizer, PROMPT, 40, text + " filler" * 60 + " bad", (len(text) + 360, len(text) + 364),
                   text + " filler" * 60 + " foo", (len(text) + 360, len(text) + 364))


def test_a_corpus_without_planted_cues_is_refused_with_the_way_out(tokenizer):
    with pytest.raises(ValueError, match="controlled edits"):
        synthetic_cue_pairs(pd.DataFrame({"uid": ["a"], "text": ["x"], "label": [1]}), "enron", tokenizer, PROMPT,
                            160, 3, 0)


# --- the merge-agreement check ------------------------------------------------------------------

def test_merge_agreement_compares_every_evaluated_message(micro_bases, adapters, tokenizer, testset):
    from gendiag.evaluate.predict import load_for_prediction, predict_log_odds

    sample = testset.head(12)
    evaluated = load_for_prediction(micro_bases["gemma2"], "gemma2", adapters["gemma2"], QUANT, CPU, torch.float32)
    predictions = pd.DataFrame({"uid": sample["uid"], "log_odds": predict_log_odds(
        evaluated, tokenizer, sample["text"].tolist(), PROMPT, 160, 4, progress=False)})
    merged = load_merged(micro_bases["gemma2"], "gemma2", adapters["gemma2"], QUANT, CPU, torch.float32)
    table = merge_agreement(merged, tokenizer, PROMPT, 160, 4, {"cp": testset}, {"cp": predictions})
    assert list(table["testset"]) == ["cp", "all"]
    assert table["n"].tolist() == [12, 12]
    assert (table["label_agreement"] == 1.0).all() and (table["max_abs_log_odds_diff"] < 1e-4).all()
    # a disagreeing reference is reported, not hidden
    flipped = predictions.assign(log_odds=-predictions["log_odds"])
    table = merge_agreement(merged, tokenizer, PROMPT, 160, 4, {"cp": testset}, {"cp": flipped})
    assert table["label_agreement"].iloc[-1] == 0.0
    stale = predictions.assign(uid=["gone"] + predictions["uid"].tolist()[1:])
    with pytest.raises(ValueError, match="gone"):
        merge_agreement(merged, tokenizer, PROMPT, 160, 4, {"cp": testset}, {"cp": stale})


# --- the analyses on each architecture ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_lens_and_dla_add_up_to_the_models_logit_difference(analysed, pairs, family):
    model = analysed[family]
    pair = pairs[0]
    cache = run_cached(model, pair.clean_ids)
    with torch.no_grad():
        logits = model.hf_model(torch.tensor([list(pair.clean_ids)])).logits[0, -1].double()
    lens = logit_lens(model, cache)
    assert lens.shape == (model.n_layers + 1,)
    cap = model.quirks.final_logit_softcap(model.hf_model.config)
    legit, phish = model.label_ids
    if cap is None:
        assert lens[-1] == pytest.approx(float(logits[phish] - logits[legit]), abs=1e-4)
    else:  # the lens reads before Gemma 2's soft-cap; capping it gives the model's logits back
        def uncap(x):
            return cap * np.arctanh(float(x) / cap)

        assert lens[-1] == pytest.approx(uncap(logits[phish]) - uncap(logits[legit]), abs=1e-3)
    dla = direct_logit_attribution(model, cache)
    assert dla["dla"].sum() == pytest.approx(float(lens[-1]), abs=1e-4)
    assert (dla["component"] == "head").sum() == model.n_layers * model.n_heads


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_restores_exactly_what_differs(analysed, pairs, family):
    model = analysed[family]
    pair = pairs[0]
    clean, corrupt = run_cached(model, pair.clean_ids), run_cached(model, pair.corrupt_ids)
    clean_metric, corrupt_metric = logit_lens(model, clean)[-1], logit_lens(model, corrupt)[-1]
    # at the embeddings only the edited positions differ, so only they can have an effect
    first = normalised_effect(patch_resid_positions(model, pair, clean, 0, batch_size=7), clean_metric,
                              corrupt_metric)
    others = np.setdiff1d(np.arange(pair.n_tokens), pair.edited_positions)
    assert np.abs(first[others]).max() < 1e-4
    # the last residual point at the answer position carries the whole prediction
    last = normalised_effect(patch_resid_positions(model, pair, clean, model.n_layers, batch_size=64),
                             clean_metric, corrupt_metric)
    assert last[-1] == pytest.approx(1.0, abs=1e-4)
    # the batched sweep equals patching one position at a time
    one_by_one = [patch_resid_positions(model, pair, clean, 0, batch_size=1)[i] for i in pair.edited_positions[:2]]
    batched = patch_resid_positions(model, pair, clean, 0, batch_size=64)[list(pair.edited_positions[:2])]
    assert np.allclose(one_by_one, batched, atol=1e-5)
    heads = patch_heads(model, pair, clean, 0, batch_size=64)
    assert heads.shape == (model.n_heads,)


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_before_the_edit_are_not_run_but_equal_patching_them(analysed, pairs, family):
    from gendiag.circuits.patching import _patched_metrics, resid_point

    model = analysed[family]
    pair = next(p for p in pairs if min(p.edited_positions) > 2)
    clean = run_cached(model, pair.clean_ids)
    point = model.n_layers // 2 + 1
    swept = patch_resid_positions(model, pair, clean, point, batch_size=64)
    source = clean[resid_point(model, point)][0]

    def restore(act, rows):
        act = act.clone()
        for i, position in enumerate(rows):
            act[i, position] = source[position].to(act.dtype)
        return act

    brute = _patched_metrics(model, pair.corrupt_ids, resid_point(model, point), restore, pair.n_tokens, 64)
    np.testing.assert_allclose(swept, brute, atol=1e-5)
    given = patch_resid_positions(model, pair, clean, point, batch_size=64, corrupt_metric=float(brute[0]))
    np.testing.assert_allclose(given, brute, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_patching_tracks_activation_patching(analysed, pairs, family):
    """The first-order estimate follows the real patch where it is near-linear (the output point)
    and is exactly zero where clean and corrupted activations are equal."""
    model = analysed[family]
    pair = pairs[0]
    clean = run_cached(model, pair.clean_ids)
    resid, heads, corrupt_metric = attribution_patching(model, pair, clean)
    assert resid.shape == (model.n_layers + 1, pair.n_tokens) and heads.shape == (model.n_layers, model.n_heads)
    output = patch_resid_positions(model, pair, clean, model.n_layers, batch_size=64) - corrupt_metric
    assert np.sign(resid[-1, -1]) == np.sign(output[-1])
    assert resid[-1, -1] == pytest.approx(output[-1], rel=0.25)  # off only by the final norm's curvature
    edited = list(pair.edited_positions)
    others = np.setdiff1d(np.arange(pair.n_tokens), edited)
    assert np.abs(resid[0, others]).max() < 1e-6  # nothing to restore where nothing differs


def test_analyse_model_tables(analysed, pairs, tokenizer):
    settings = {"min_effect": 1e-3, "pairs_per_testset": 2, "patch_batch_size": 32, "attention_heads": 2,
                "attention_examples": 1, "attention_queries": 4}
    tables = analyse_model(analysed["mistral"], tokenizer, pairs, settings)
    assert (tables["pairs"]["status"] == "analysed").sum() == 2
    assert set(tables) == {"pairs", "lens", "dla", "resid", "heads", "attention"}
    assert tables["lens"]["pair_id"].nunique() == 2
    assert set(tables["resid"]["segment"]) <= set(SEGMENTS)
    attention = tables["attention"]
    assert attention["query"].nunique() == 4 and attention[["layer", "head"]].drop_duplicates().shape[0] == 2
    assert attention["edited"].any()
    unmoved = analyse_model(analysed["mistral"], tokenizer, pairs, {**settings, "min_effect": 1e6})
    assert (unmoved["pairs"]["status"] == "prediction barely changes").all()
    assert all(unmoved[name].empty and list(unmoved[name].columns) == list(tables[name].columns)
               for name in ("lens", "dla", "resid", "heads", "attention"))


@pytest.mark.parametrize("shape", ["llama-3.1-8b", "gemma-2-9b", "mistral-7b-v0.3"])
def test_real_architectures_keep_the_identities_at_small_width(shape, tokenizer, pairs):
    """The hub models' own configs (resources/model_shapes: GQA ratio, RoPE scaling, Gemma 2's
    soft-caps, (1 + w) norms, scaled and tied embeddings, sliding windows), narrowed to run here.
    The sliding window is set shorter than the prompt so that windowed layers are exercised."""
    import json

    from transformers import AutoConfig, AutoModelForCausalLM

    from conftest import REPO

    fields = {k: v for k, v in json.loads((REPO / f"resources/model_shapes/{shape}.json").read_text()).items()
              if not k.startswith("_") and k != "architectures"}
    ratio = fields["num_attention_heads"] // fields["num_key_value_heads"]
    fields.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4 // ratio, head_dim=16, vocab_size=len(tokenizer))
    if fields.get("query_pre_attn_scalar"):
        fields["query_pre_attn_scalar"] = 16
    if fields.get("sliding_window"):
        fields["sliding_window"] = 24
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    hf_model = AutoModelForCausalLM.from_config(config).eval()
    model = wrap_for_analysis(hf_model, tokenizer, config.model_type, PROMPT)
    pair = pairs[0]
    assert pair.n_tokens > 24
    cache = run_cached(model, pair.clean_ids)
    lens = logit_lens(model, cache)
    dla = direct_logit_attribution(model, cache)
    assert dla["dla"].sum() == pytest.approx(float(lens[-1]), rel=1e-4, abs=1e-4)
    with torch.no_grad():
        logits = hf_model(torch.tensor([list(pair.clean_ids)])).logits[0, -1].double()
    legit, phish = model.label_ids
    cap = model.quirks.final_logit_softcap(config)
    expected = (float(logits[phish] - logits[legit]) if cap is None
                else cap * (np.arctanh(float(logits[phish]) / cap) - np.arctanh(float(logits[legit]) / cap)))
    assert lens[-1] == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_a_model_without_analysed_pairs_gets_a_summary_row_that_says_so():
    from gendiag.circuits.study import EMPTY_COLUMNS
    from gendiag.circuits.summary import SUMMARY_COLUMNS, summarise_model

    tables = {name: pd.DataFrame(columns=columns) for name, columns in EMPTY_COLUMNS.items()}
    tables["pairs"] = pd.DataFrame({"status": ["prediction barely changes"] * 3})
    agreement = pd.DataFrame({"testset": ["all"], "label_agreement": [1.0], "max_abs_log_odds_diff": [2e-5]})
    row = summarise_model({"arch": "llama", "recipe": "generalist", "paradigm": "standard", "seed": 0}, tables,
                          agreement, top_k=3)
    assert row["n_pairs"] == 0 and row["n_dropped_small_effect"] == 3 and row["top_heads"] == ""
    assert set(row) <= set(SUMMARY_COLUMNS) and row["merge_label_agreement"] == 1.0
    from gendiag.circuits.summary import summary_table
    from gendiag.report.tables import to_markdown

    table = summary_table([row, {**row, "recipe": "specialist", "n_pairs": 1, "n_layers": 18, "decision_layer": 13}])
    assert tuple(table.columns) == SUMMARY_COLUMNS and str(table["n_layers"].dtype) == "Int64"
    assert "| 18 | 13 |" in to_markdown(table[["n_layers", "decision_layer"]])
