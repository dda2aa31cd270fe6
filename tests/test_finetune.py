import signal

import pytest
import torch
from safetensors.torch import load_file

import gendiag.finetune.qlora as qlora
from gendiag.finetune.qlora import LoraSettings, Preempted, TrainSettings, build_peft_model, finetune
from gendiag.models.inputs import answer_logits, collate_left, encode_prompts
from gendiag.models.loading import load_tokenizer
from gendiag.prompts import PromptFormat

CPU = torch.device("cpu")
SETTINGS = TrainSettings(steps=12, batch_size=8, lr=5e-3, warmup_steps=2, eval_every=6, checkpoint_every=0,
                         max_length=128, seed=0)


def _lora_grads(model, batch, targets):
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(answer_logits(model, batch), targets)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3"])
def test_gradients_reach_lora_weights_after_an_evaluation_pass(micro_bases, small_corpus, family):
    """The bitsandbytes CPU trap: an eval()+no_grad forward must not stop gradients afterwards."""
    import bitsandbytes as bnb

    base = micro_bases[family]
    tokenizer = load_tokenizer(base)
    ids = encode_prompts(small_corpus["text"].head(8).tolist(), tokenizer, PromptFormat(), 128)
    batch = collate_left(ids, tokenizer.pad_token_id)
    label_ids = PromptFormat().label_token_ids(tokenizer)
    targets = torch.tensor([label_ids[y] for y in small_corpus["label"].head(8)])
    settings = TrainSettings(seed=0)
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))

    torch.manual_seed(0)
    model = build_peft_model(base, family, lora, settings, CPU, torch.float32)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            assert module.support_avx512bf16_for_cpu is False
    # LoRA B starts at zero, so give it weights: then gradients must flow through every 4-bit layer.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.train()
    before = _lora_grads(model, batch, targets)
    model.eval()
    with torch.no_grad():
        answer_logits(model, batch)
    model.train()
    after = _lora_grads(model, batch, targets)
    assert all(before[n].abs().sum() > 0 for n in before), "a LoRA weight got no gradient"
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=1e-6, rtol=1e-5)


def test_finetune_saves_a_peft_adapter_and_logs_every_step(micro_bases, small_corpus, tmp_path):
    from peft import PeftModel

    from gendiag.models.loading import load_causal_lm

    train, val = small_corpus.iloc[:160], small_corpus.iloc[160:200]
    history, summary = finetune(micro_bases["llama"], "llama", train, val, PromptFormat(), LoraSettings(r=4),
                                SETTINGS, tmp_path / "adapter", tmp_path / "ckpt", CPU, torch.float32)
    assert list(history["step"]) == list(range(1, 13))
    assert history["val_accuracy"].notna().sum() == 2
    assert (tmp_path / "adapter/adapter_config.json").exists()
    weights = load_file(tmp_path / "adapter/adapter_model.safetensors")
    assert any("lora_A" in k for k in weights) and all("q_proj" in k or "v_proj" in k for k in weights)
    base = load_causal_lm(micro_bases["llama"], "llama", SETTINGS.quantization, CPU, torch.float32)
    PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    assert summary["trainable_parameters"] > 0 and summary["resumed_from_step"] == 0


def test_sigterm_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one(
    micro_bases, small_corpus, tmp_path, monkeypatch
):
    train, val = small_corpus.iloc[:160], small_corpus.iloc[160:200]
    args = ("llama", train, val, PromptFormat(), LoraSettings(r=4, dropout=0.1))
    finetune(micro_bases["llama"], *args, SETTINGS, tmp_path / "full", tmp_path / "ckpt_full", CPU, torch.float32)

    real_collate, calls = qlora.collate_left, {"n": 0}

    def collate_then_terminate(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            signal.raise_signal(signal.SIGTERM)
        return real_collate(*a, **k)

    monkeypatch.setattr(qlora, "collate_left", collate_then_terminate)
    with pytest.raises(Preempted, match="at step 7"):
        finetune(micro_bases["llama"], *args, SETTINGS, tmp_path / "resumed", tmp_path / "ckpt", CPU, torch.float32)
    assert (tmp_path / "ckpt/state.pt").exists() and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(qlora, "collate_left", real_collate)
    history, summary = finetune(micro_bases["llama"], *args, SETTINGS, tmp_path / "resumed", tmp_path / "ckpt",
                                CPU, torch.float32)
    assert summary["resumed_from_step"] == 7 and not (tmp_path / "ckpt/state.pt").exists()
    full = load_file(tmp_path / "full/adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed/adapter_model.safetensors")
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
