from pathlib import Path

import pytest
import torch

from conftest import REPO
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


def _hub_error(kind: str):
    import httpx2
    from huggingface_hub import errors

    response = httpx2.Response(403 if kind == "gated" else 404, request=httpx2.Request("GET", "https://hf.co/x"))
    return {
        "gated": errors.GatedRepoError("gated", response=response),
        "missing": errors.RepositoryNotFoundError("missing", response=response),
        "revision": errors.RevisionNotFoundError("revision", response=response),
        "offline": errors.LocalEntryNotFoundError("offline"),
    }[kind]


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("gated", PermissionError, "is gated: accept its licence on the hub and export HF_TOKEN"),
        ("missing", FileNotFoundError, "does not exist on the hub"),
        ("revision", FileNotFoundError, "has no revision 'abc': set `revision` to a commit hash"),
        ("offline", ConnectionError, "offline .* and not in the cache"),
    ],
)
def test_hub_snapshot_errors_say_what_is_wrong_and_what_to_do(kind, error, message, tmp_path, monkeypatch):
    import huggingface_hub

    from gendiag.models.base import snapshot_pretrained

    def refuse(**kwargs):
        raise _hub_error(kind)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(error, match=message):
        snapshot_pretrained("org/model", "abc", tmp_path / "x")


def test_hub_snapshot_is_pinned_takes_safetensors_only_and_never_writes_the_token(tmp_path, monkeypatch):
    import huggingface_hub

    from gendiag.models.base import snapshot_pretrained

    calls = []

    def download(*, repo_id, revision, local_dir, allow_patterns, token):
        calls.append({"revision": revision, "patterns": allow_patterns, "token": token})
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.json").write_text("{}")
        if repo_id == "org/pickled":
            (Path(local_dir) / "pytorch_model.bin").write_bytes(b"\0")
        else:
            (Path(local_dir) / "model.safetensors").write_bytes(b"\0")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    snapshot_pretrained("org/model", "0" * 40, tmp_path / "ok")
    assert calls[0]["revision"] == "0" * 40 and calls[0]["token"] == "hf_secret_token_value"
    assert not any(p.endswith((".bin", ".pt", ".pth", ".ckpt", ".py")) or p == "*" for p in calls[0]["patterns"])
    for path in (tmp_path / "ok").rglob("*"):
        if path.is_file():
            assert b"hf_secret_token_value" not in path.read_bytes(), path
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors weights .* safetensors only"):
        snapshot_pretrained("org/pickled", "0" * 40, tmp_path / "pickled")


def test_no_model_is_ever_loaded_with_remote_code():
    sources = [p for p in (REPO / "src").rglob("*.py")] + list((REPO / "workflow/scripts").glob("*.py"))
    offenders = [str(p) for p in sources if "trust_remote_code=True" in p.read_text()]
    assert not offenders, offenders


def test_a_chat_tokenizer_gets_the_question_as_a_user_turn_and_the_answer_cue_in_the_assistant_turn(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|bot|>{% endif %}"
    )
    chat = PromptFormat().for_tokenizer(tokenizer)
    bos = tokenizer.bos_token if tokenizer("", add_special_tokens=True)["input_ids"] else ""
    assert chat.template == (f"{'' if bos else tokenizer.bos_token}<|user|>Email:\n{{text}}\nIs this email phishing or"
                             " legitimate?<|end|><|bot|>Answer:")
    assert chat.for_tokenizer(tokenizer) is chat  # rendered once, never twice
    [ids] = encode_prompts(["Lunch at noon?"], tokenizer, PromptFormat(), 128)
    assert tokenizer.decode(ids).count("<|user|>") == 1
    no_cue = PromptFormat(template="Classify this email:\n{text}").for_tokenizer(tokenizer)
    assert no_cue.template.endswith("<|user|>Classify this email:\n{text}<|end|><|bot|>")
    assert PromptFormat(chat_template="never").for_tokenizer(tokenizer).template == PromptFormat().template
    other = PromptFormat().with_template("Q: {text}\nAnswer:").for_tokenizer(tokenizer)
    assert other.template.endswith("<|bot|>Answer:")
