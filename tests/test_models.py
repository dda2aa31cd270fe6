import pytest
import torch

from gendiag.models import FAMILIES, family_module
from gendiag.models.inputs import answer_logits, collate_left, encode_prompts
from gendiag.models.loading import load_causal_lm, load_tokenizer
from gendiag.prompts import PromptFormat

CPU = torch.device("cpu")
FOUR_BIT = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_base_is_the_real_class_with_single_token_labels(micro_bases, family):
    model = load_causal_lm(micro_bases[family], family, {"load_in_4bit": False}, CPU, torch.float32)
    assert type(model) is family_module(family).MODEL_CLASS
    assert model.config._attn_implementation == family_module(family).ATTN_IMPLEMENTATION
    assert (micro_bases[family] / "model.safetensors").exists()
    tokenizer = load_tokenizer(micro_bases[family])
    legit, malicious = PromptFormat().label_token_ids(tokenizer)
    assert legit != malicious


def test_gemma2_runs_eager_attention_for_soft_capping():
    assert family_module("gemma2").ATTN_IMPLEMENTATION == "eager"
    with pytest.raises(ValueError, match="unknown model family 'gpt2'; known families"):
        family_module("gpt2")


def test_multi_token_label_word_is_refused(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    with pytest.raises(ValueError, match="label word ' xylophonically' is .* tokens"):
        PromptFormat(label_words=(" legitimate", " xylophonically")).label_token_ids(tokenizer)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_left_padding_does_not_change_answer_logits(micro_bases, small_corpus, family):
    tokenizer = load_tokenizer(micro_bases[family])
    model = load_causal_lm(micro_bases[family], family, FOUR_BIT, CPU, torch.float32).eval()
    encoded = encode_prompts(small_corpus["text"].head(4).tolist(), tokenizer, PromptFormat(), 256)
    assert len({len(e) for e in encoded}) > 1
    with torch.no_grad():
        batched = answer_logits(model, collate_left(encoded, tokenizer.pad_token_id))
        single = torch.cat([answer_logits(model, collate_left([e], tokenizer.pad_token_id)) for e in encoded])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


def test_truncation_keeps_the_question(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    prompt = PromptFormat()
    [ids] = encode_prompts(["word " * 500], tokenizer, prompt, 64)
    assert len(ids) == 64
    assert tokenizer.decode(ids).endswith(prompt.suffix)


def test_hub_source_accepts_a_local_model_directory(micro_bases, tmp_path):
    from gendiag.models.base import snapshot_pretrained

    out = tmp_path / "base"
    snapshot_pretrained(str(micro_bases["mistral"]), None, out)
    a = load_causal_lm(out, "mistral", {"load_in_4bit": False}, CPU, torch.float32)
    b = load_causal_lm(micro_bases["mistral"], "mistral", {"load_in_4bit": False}, CPU, torch.float32)
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    empty = tmp_path / "no_weights"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors weights"):
        snapshot_pretrained(str(empty), None, tmp_path / "x")


def test_offline_hub_download_fails_clearly(tmp_path, monkeypatch):
    from gendiag.models.base import snapshot_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((ConnectionError, FileNotFoundError), match="offline|does not exist"):
        snapshot_pretrained("gendiag-test/does-not-exist", "0" * 40, tmp_path / "x")
