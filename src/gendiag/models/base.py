"""Base models: a tiny from-scratch language model per family, or a pinned hub checkpoint.

Tiny bases are what make the whole study run on a laptop CPU: a BPE tokenizer trained on the
corpora's training text, a small model of the real class (LlamaForCausalLM, Gemma2ForCausalLM,
MistralForCausalLM) and a short causal-LM pretraining on the same text, so that the base is a
language model before it is fine-tuned.

A base LLM already knows how a question is answered with one word; a tiny model pretrained on
raw email does not, and fine-tuning would spend its steps learning the answer format instead of
the task. So a share of the pretraining text is the prompt around a message followed by a label
word drawn at random, independently of the message's label: the base learns the format and the
vocabulary of answers, and nothing about which answer is right (its zero-shot F1 stays at chance).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from gendiag.models import family_module
from gendiag.models.tokenizer import train_bpe
from gendiag.prompts import PromptFormat

log = logging.getLogger("gendiag.models")


def pretraining_texts(messages: Sequence[str], prompt: PromptFormat, format_share: float, seed: int) -> list[str]:
    """Raw messages plus, for a `format_share` of them, the prompt with a random answer word."""
    rng = np.random.default_rng(seed)
    texts = list(messages)
    chosen = np.flatnonzero(rng.random(len(texts)) < format_share)
    answers = rng.integers(0, 2, size=len(chosen))
    texts.extend(prompt.render(messages[i], int(a)) for i, a in zip(chosen, answers, strict=True))
    return texts


def build_tiny_base(
    family: str,
    shape: dict,
    texts: Sequence[str],
    prompt: PromptFormat,
    vocab_size: int,
    pretrain: dict,
    seed: int,
    out_dir: str | Path,
) -> pd.DataFrame:
    """Train a tokenizer and a tiny model of `family` on `texts`; save both to `out_dir`.

    Returns the pretraining log (step, loss, lr). `out_dir` must not exist yet: callers write to a
    temporary directory and rename it (see gendiag.io.atomic_path).
    """
    module = family_module(family)
    torch.manual_seed(seed)
    tokenizer = train_bpe(texts, vocab_size, prompt)
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = module.tiny_config(shape, vocab_size=len(tokenizer), special_ids=special)
    model = module.MODEL_CLASS(config)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: vocab %d, %.2fM parameters, config %s", family, len(tokenizer), n_params / 1e6, shape)

    blocks = _pack(texts, tokenizer, int(pretrain["seq_len"]))
    history = _pretrain(model, blocks, pretrain, seed)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return history


def _pack(texts: Sequence[str], tokenizer, seq_len: int) -> torch.Tensor:
    """Concatenate tokenised texts (each ending in EOS) and cut them into full blocks."""
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    stream = np.fromiter((t for seq in ids for t in (*seq, tokenizer.eos_token_id)), dtype=np.int64)
    n_blocks = len(stream) // seq_len
    if n_blocks < 1:
        raise ValueError(f"pretraining text has {len(stream)} tokens, fewer than one block of {seq_len}")
    return torch.from_numpy(stream[: n_blocks * seq_len].reshape(n_blocks, seq_len))


def _pretrain(model: torch.nn.Module, blocks: torch.Tensor, cfg: dict, seed: int) -> pd.DataFrame:
    steps, batch_size, lr = int(cfg["steps"]), int(cfg["batch_size"]), float(cfg["lr"])
    warmup = max(1, steps // 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    rows, start = [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="pretrain", mininterval=5, file=sys.stderr):
        batch = blocks[torch.randint(len(blocks), (batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        rows.append({"step": step, "loss": loss.item(), "lr": schedule.get_last_lr()[0]})
        if step % max(1, steps // 10) == 0 or step == steps:
            log.info("pretrain step %d/%d loss %.3f (%.1f s)", step, steps, loss.item(), time.perf_counter() - start)
    return pd.DataFrame(rows)


def snapshot_pretrained(model_id: str, revision: str | None, out_dir: str | Path) -> None:
    """Materialise a hub checkpoint (or a local model directory) as `out_dir`.

    A local directory is linked file by file (copied across filesystems). A hub id is downloaded
    at `revision` with safetensors weights only; the token comes from HF_TOKEN and is never logged.
    """
    out_dir = Path(out_dir)
    source = Path(model_id)
    if source.is_dir():
        if not any(source.glob("*.safetensors")):
            raise FileNotFoundError(f"{source} has no *.safetensors weights; only safetensors are loaded")
        out_dir.mkdir(parents=True)
        for item in source.iterdir():
            if item.is_file():
                try:
                    os.link(item, out_dir / item.name)
                except OSError:
                    shutil.copy2(item, out_dir / item.name)
        return
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        snapshot_download(
            repo_id=model_id,
            revision=revision,
            local_dir=out_dir,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model"],
            token=os.environ.get("HF_TOKEN"),
        )
    except GatedRepoError:
        raise PermissionError(
            f"{model_id} is gated: accept its licence on the hub and export HF_TOKEN before running"
        ) from None
    except RevisionNotFoundError:
        raise FileNotFoundError(
            f"{model_id} has no revision {revision!r}: set `revision` to a commit hash listed on the model's"
            " 'Files and versions' page"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{model_id} does not exist on the hub (or HF_TOKEN cannot see it)") from None
    except LocalEntryNotFoundError:
        raise ConnectionError(
            f"cannot download {model_id}@{revision}: offline (HF_HUB_OFFLINE or no network) and not in"
            " the cache; download it on a machine with network access or point `id` at a local directory"
        ) from None
    if not any(out_dir.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{model_id}@{revision} has no *.safetensors weights (only pickled ones?); this workflow loads"
            " safetensors only: pick a revision or a model that ships them"
        )
