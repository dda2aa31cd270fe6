"""Training paradigms: FTICL demonstrations carry no loss, CoT targets and generation, the head."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from gendiag.evaluate.predict import (
    adapter_demonstrations,
    cot_prediction_table,
    load_for_prediction,
    predict_cot,
    predict_log_odds,
)
from gendiag.finetune.paradigms import (
    Example,
    ParadigmSpec,
    choose_demonstrations,
    cot_examples,
    cot_prompt,
    encode_demonstrations,
    label_examples,
    paradigm_examples,
)
from gendiag.finetune.qlora import LoraSettings, TrainSettings, build_peft_model, examples_loss, finetune
from gendiag.finetune.rationales import cue_rationale, recipe_rationales
from gendiag.models.inputs import collate_left, encode_prompts
from gendiag.models.loading import load_tokenizer
from gendiag.prompts import PromptFormat

CPU = torch.device("cpu")
PROMPT = PromptFormat()
SETTINGS = TrainSettings(steps=6, batch_size=8, lr=5e-3, warmup_steps=1, eval_every=3, checkpoint_every=0,
                         max_length=96, seed=0)


def _pool(n_malicious=5, n_legit=5):
    return pd.DataFrame({
        "uid": [f"m{i}" for i in range(n_malicious)] + [f"l{i}" for i in range(n_legit)],
        "text": [f"verify your account now {i}" for i in range(n_malicious)]
        + [f"meeting notes for tuesday {i}" for i in range(n_legit)],
        "label": [1] * n_malicious + [0] * n_legit,
    })


def test_demonstrations_alternate_classes_and_are_fixed_by_the_seed():
    pool = _pool()
    demos = choose_demonstrations(pool, 4, seed=3)
    assert demos["label"].tolist() == [1, 0, 1, 0]
    assert demos.equals(choose_demonstrations(pool, 4, seed=3))
    assert not demos.equals(choose_demonstrations(pool, 4, seed=4))
    with pytest.raises(ValueError, match="has 1 legitimate messages; 4 demonstrations need 2"):
        choose_demonstrations(_pool(5, 1), 4, seed=0, source="the pool")


def test_fticl_examples_put_demonstrations_in_the_input_and_the_loss_on_the_final_label_only(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    label_ids = PROMPT.label_token_ids(tokenizer)
    demos = choose_demonstrations(_pool(), 2, seed=0)
    context = encode_demonstrations(demos, tokenizer, PROMPT, max_message_tokens=48)
    (example,) = label_examples(["please confirm the invoice"], [1], tokenizer, PROMPT, 96, context=context)
    (plain,) = label_examples(["please confirm the invoice"], [1], tokenizer, PROMPT, 96)

    sequence, mask = example.sequence, example.loss_mask
    assert example.targets == (label_ids[1],) and sum(mask) == 1 and mask[-1]
    # Both demonstration answers are in what the model reads, and neither carries loss.
    demo_answers = [i for i, t in enumerate(sequence[:-1]) if t in label_ids]
    assert len(demo_answers) >= 2 and not any(mask[i] for i in demo_answers)
    assert sequence[: len(context) + 1][1:] == tuple(context)  # special token, then the demonstrations
    # The demonstrations come on top of the prompt: the message is cut the same with or without them.
    assert example.input_ids[-len(plain.input_ids) + 1:] == plain.input_ids[1:]

    # In training, the loss of an FTICL batch is the cross-entropy of the final label word alone.
    torch.manual_seed(0)
    model = build_peft_model(micro_bases["llama"], "llama", LoraSettings(r=4, dropout=0.0), SETTINGS, CPU,
                             torch.float32)
    batch = collate_left([example.input_ids], tokenizer.pad_token_id)
    loss = examples_loss(model, batch, [example], classifier=False)
    logits = model(**batch).logits[0, -1].float()
    expected = torch.nn.functional.cross_entropy(logits[None], torch.tensor([label_ids[1]]))
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_cot_examples_target_rationale_cue_and_label(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    label_ids = PROMPT.label_token_ids(tokenizer)
    assert cot_prompt(PROMPT).template == "Email:\n{text}\nIs this email phishing or legitimate?"
    rationale = cue_rationale("Act now: verify your password at http://paypa1-login.com today")
    (example,) = cot_examples(["Act now"], [1], [rationale], tokenizer, PROMPT, 96)
    cue = tokenizer(" Answer:", add_special_tokens=False)["input_ids"]
    assert example.targets[-1] == label_ids[1] and list(example.targets[-1 - len(cue):-1]) == cue
    decoded = tokenizer.decode(list(example.targets))
    assert "Reasoning" in decoded and decoded.rstrip().endswith("Answer: phishing")
    n = len(example.sequence)
    assert example.loss_mask == tuple(i >= n - len(example.targets) for i in range(n))
    with pytest.raises(ValueError, match="needs a 'rationale' column"):
        paradigm_examples(ParadigmSpec("cot"), _pool(), tokenizer, PROMPT, 96)


class _ScriptedLM(torch.nn.Module):
    """A causal LM stand-in that writes `script` (one token per step, then `fill` forever)."""

    def __init__(self, script, fill, vocab, favour=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.script, self.fill, self.vocab, self.favour = list(script), fill, vocab, favour or {}

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None, **_):
        step = 0 if past_key_values is None else past_key_values + 1
        token = self.script[step] if step < len(self.script) else self.fill
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        logits[:, -1, token] = 10.0
        for other, value in self.favour.get(step, {}).items():
            logits[:, -1, other] = value
        return SimpleNamespace(logits=logits, past_key_values=step)


def test_cot_prediction_reads_the_label_after_the_answer_cue_and_scores_silence_as_an_error(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    label_ids = PROMPT.label_token_ids(tokenizer)
    reason = tokenizer(" Reasoning: asks for a password.", add_special_tokens=False)["input_ids"]
    cue = tokenizer(" Answer:", add_special_tokens=False)["input_ids"]
    script = reason + cue + [label_ids[1]]
    # At the label step the model also gives "legitimate" some weight: log-odds = 10 - 4.
    answers = _ScriptedLM(script, tokenizer.eos_token_id, len(tokenizer),
                          favour={len(reason) + len(cue): {label_ids[0]: 4.0}})
    out = predict_cot(answers, tokenizer, ["a", "b"], PROMPT, 96, 2, " Answer:", 64, progress=False)
    assert out["parsed"].tolist() == [1, 1]
    np.testing.assert_allclose(out["log_odds"], 6.0)
    assert out["generated"].iloc[0].strip().endswith("Answer: phishing")

    rambles = _ScriptedLM(reason, reason[1], len(tokenizer))
    silent = predict_cot(rambles, tokenizer, ["a", "b"], PROMPT, 96, 2, " Answer:", 12, progress=False)
    assert silent["parsed"].isna().all() and silent["log_odds"].isna().all()

    testset = pd.DataFrame({"uid": ["u1", "u2"], "label": [1, 0]})
    table = cot_prediction_table(testset, silent)
    assert table["pred"].tolist() == [0, 1] and table["p_malicious"].tolist() == [0.0, 1.0]
    assert not table["parsed"].any()
    table = cot_prediction_table(testset, out)
    assert table["pred"].tolist() == [1, 1] and table["parsed"].all()
    np.testing.assert_allclose(table["p_malicious"], 1 / (1 + np.exp(-6.0)))


@pytest.mark.parametrize("paradigm", ["fticl", "head", "cot"])
def test_each_paradigm_trains_saves_and_predicts_as_it_was_trained(micro_bases, small_corpus, tmp_path, paradigm):
    train, val = small_corpus.iloc[:160].copy(), small_corpus.iloc[160:200].copy()
    for frame in (train, val):
        frame["rationale"] = [cue_rationale(t, 1) for t in frame["text"]]
    spec = ParadigmSpec(paradigm, demonstrations=2, max_new_tokens=24)
    history, summary = finetune(micro_bases["llama"], "llama", train, val, PROMPT, LoraSettings(r=4), SETTINGS,
                                tmp_path / "adapter", tmp_path / "ckpt", CPU, torch.float32, spec)
    assert np.isfinite(history["loss"]).all() and summary["paradigm"]["name"] == paradigm
    tokenizer = load_tokenizer(micro_bases["llama"])
    model = load_for_prediction(micro_bases["llama"], "llama", tmp_path / "adapter", SETTINGS.quantization, CPU,
                                torch.float32, classifier=spec.classifier)
    texts = val["text"].head(6).tolist()
    if paradigm == "cot":
        out = predict_cot(model, tokenizer, texts, PROMPT, 96, 4, " Answer:", 24, progress=False)
        assert len(out) == 6 and out["generated"].map(len).gt(0).all()
        return
    if paradigm == "head":  # weight drift covers the LoRA layers; the new head has no base weight to drift from
        from gendiag.finetune.drift import adapter_drift

        drift = adapter_drift(tmp_path / "adapter")
        assert len(drift) > 0 and not drift["module"].str.contains("score").any()
    context = adapter_demonstrations(tmp_path / "adapter", tokenizer, PROMPT)
    assert (len(context) > 0) == (paradigm == "fticl")
    assert len(summary["demonstrations"]) == (2 if paradigm == "fticl" else 0)
    scores = predict_log_odds(model, tokenizer, texts, PROMPT, 96, 4, progress=False, context=context,
                              classifier=spec.classifier)
    # The validation accuracy of the last step was computed from the very same scores.
    all_scores = predict_log_odds(model, tokenizer, val["text"].tolist(), PROMPT, 96, 8, progress=False,
                                  context=context, classifier=spec.classifier)
    np.testing.assert_allclose(scores, all_scores[:6], atol=1e-4)
    accuracy = float(np.mean((all_scores >= 0) == val["label"].to_numpy()))
    assert accuracy == pytest.approx(history["val_accuracy"].dropna().iloc[-1], abs=1e-9)


def test_the_head_trains_its_classifier_and_lora_weights(micro_bases, small_corpus):
    tokenizer = load_tokenizer(micro_bases["gemma2"])
    torch.manual_seed(0)
    model = build_peft_model(micro_bases["gemma2"], "gemma2", LoraSettings(r=4, dropout=0.0), SETTINGS, CPU,
                             torch.float32, classifier=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    examples = paradigm_examples(ParadigmSpec("head"), small_corpus.head(8), tokenizer, PROMPT, 96)
    assert all(isinstance(ex, Example) and ex.targets in ((0,), (1,)) for ex in examples)
    model.train()
    batch = collate_left([ex.input_ids for ex in examples], tokenizer.pad_token_id)
    examples_loss(model, batch, examples, classifier=True).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in grads) and any("lora_A" in n for n in grads)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_rationales_from_the_users_file_must_cover_every_message():
    messages = _pool(2, 2)
    table = pd.DataFrame({"uid": messages["uid"], "why": ["asks for a login"] * 4})
    out = recipe_rationales(messages, "file", table=table, column="why", table_name="why.csv")
    assert out["rationale"].tolist() == [" asks for a login"] * 4
    with pytest.raises(ValueError, match=r"why.csv: 1 training/validation message\(s\) have no rationale"):
        recipe_rationales(messages, "file", table=table.iloc[1:], column="why", table_name="why.csv")
    with pytest.raises(ValueError, match="no 'uid' column"):
        recipe_rationales(messages, "file", table=table.drop(columns="uid"), column="why", table_name="why.csv")
    cues = recipe_rationales(messages, "cues")
    assert cues["uid"].tolist() == messages["uid"].tolist() and cues["rationale"].str.startswith(" Reasoning:").all()


def test_encode_prompts_context_goes_after_the_special_tokens(micro_bases):
    tokenizer = load_tokenizer(micro_bases["mistral"])
    plain = encode_prompts(["hello there"], tokenizer, PROMPT, 64)[0]
    with_context = encode_prompts(["hello there"], tokenizer, PROMPT, 64, context=[7, 8, 9])[0]
    special = tokenizer("", add_special_tokens=True)["input_ids"]
    assert with_context == special + [7, 8, 9] + plain[len(special):]
