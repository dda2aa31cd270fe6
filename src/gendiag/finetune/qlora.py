"""QLoRA label fine-tuning: a 4-bit NF4 base, LoRA adapters, the loss on the answer token only.

The training loop is ours rather than the Hugging Face `Trainer`, for three reasons: the loss and
the logits are computed at the answer position only (one row of the LM head per example, not one
per token), batches are grouped by length with left padding, and checkpoints are exact: resuming
after a kill (SLURM preemption) replays the same batches with the same RNG state, so the resumed
run's adapter equals an uninterrupted run's on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from gendiag.io import atomic_path
from gendiag.models.inputs import answer_logits, collate_left, encode_prompts, length_grouped_batches
from gendiag.models.loading import load_causal_lm, load_tokenizer
from gendiag.prompts import PromptFormat

log = logging.getLogger("gendiag.finetune")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 200
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_length: int = 256
    grad_clip: float = 1.0
    eval_every: int = 50
    checkpoint_every: int = 50
    gradient_checkpointing: bool = False
    seed: int = 0
    quantization: dict = field(
        default_factory=lambda: {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}
    )


class Preempted(RuntimeError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint; rerun to resume."""


def build_peft_model(base_dir: str | Path, family: str, lora: LoraSettings, settings: TrainSettings,
                     device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from peft import prepare_model_for_kbit_training

    model = load_causal_lm(base_dir, family, settings.quantization, device, dtype)
    if settings.quantization.get("load_in_4bit", True):
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=settings.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def finetune(
    base_dir: str | Path,
    family: str,
    train: pd.DataFrame,
    val: pd.DataFrame,
    prompt: PromptFormat,
    lora: LoraSettings,
    settings: TrainSettings,
    adapter_dir: str | Path,
    checkpoint_dir: str | Path,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[pd.DataFrame, dict]:
    """Fine-tune and save the PEFT adapter to `adapter_dir`; return (per-step log, summary).

    A checkpoint is written to `checkpoint_dir` every `checkpoint_every` steps and on SIGTERM;
    a later call with the same inputs resumes from it and removes it when training completes.
    """
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(base_dir)
    label_ids = prompt.label_token_ids(tokenizer)
    train_ids = encode_prompts(train["text"].tolist(), tokenizer, prompt, settings.max_length)
    train_targets = torch.tensor([label_ids[y] for y in train["label"]], dtype=torch.long)
    val_ids = encode_prompts(val["text"].tolist(), tokenizer, prompt, settings.max_length)
    val_labels = val["label"].to_numpy()

    model = build_peft_model(base_dir, family, lora, settings, device, dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", n_trainable, n_total, 100 * n_trainable / n_total)
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(settings.warmup_steps, settings.steps))

    fingerprint = _fingerprint(base_dir, train, lora, settings, prompt)
    checkpoint = Path(checkpoint_dir) / "state.pt"
    history: list[dict] = []
    start_step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["fingerprint"] == fingerprint:
            set_peft_model_state_dict(model, state["adapter"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            history, start_step = state["history"], state["step"]
            log.info("resumed from checkpoint %s at step %d", checkpoint, start_step)
        else:
            log.warning("ignoring checkpoint %s: it belongs to other inputs or settings", checkpoint)

    plan = _batch_plan([len(s) for s in train_ids], settings)
    stop = _StopFlag()
    model.train()
    clock = time.perf_counter()
    step = start_step
    with stop.installed():
        for step in range(start_step + 1, settings.steps + 1):
            index = plan[step - 1]
            batch = collate_left([train_ids[i] for i in index], tokenizer.pad_token_id)
            logits = answer_logits(model, batch)
            loss = torch.nn.functional.cross_entropy(logits, train_targets[index].to(logits.device))
            loss.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            row = {
                "step": step,
                "loss": loss.item(),
                "lr": scheduler.get_last_lr()[0],
                "tokens": int(batch["attention_mask"].sum()),
                "seconds": time.perf_counter() - clock,
            }
            if step % settings.eval_every == 0 or step == settings.steps:
                row.update(evaluate_split(model, val_ids, val_labels, label_ids, tokenizer.pad_token_id,
                                          settings.batch_size))
                model.train()
                log.info("step %d/%d loss %.4f val_loss %.4f val_acc %.3f", step, settings.steps,
                         row["loss"], row["val_loss"], row["val_accuracy"])
            elif step % 10 == 0:
                log.info("step %d/%d loss %.4f lr %.2e", step, settings.steps, row["loss"], row["lr"])
            history.append(row)
            if stop.requested or (settings.checkpoint_every and step % settings.checkpoint_every == 0
                                  and step < settings.steps):
                _save_checkpoint(checkpoint, model, optimizer, scheduler, history, step, fingerprint)
            if stop.requested:
                raise Preempted(f"stopped by signal {stop.signum} at step {step}; checkpoint {checkpoint}")

    model.save_pretrained(str(adapter_dir), safe_serialization=True)
    if checkpoint.exists():
        checkpoint.unlink()
    frame = pd.DataFrame(history)
    final = frame.dropna(subset=["val_loss"]).iloc[-1] if "val_loss" in frame else None
    summary = {
        "steps": settings.steps,
        "resumed_from_step": start_step,
        "trainable_parameters": n_trainable,
        "final_train_loss": float(frame["loss"].tail(10).mean()),
        "val_loss": None if final is None else float(final["val_loss"]),
        "val_accuracy": None if final is None else float(final["val_accuracy"]),
        "train_seconds": float(frame["seconds"].iloc[-1]) if start_step == 0 else None,
        "real_tokens": int(frame["tokens"].sum()),
        "lora": asdict(lora),
        "settings": asdict(settings),
    }
    return frame, summary


@torch.no_grad()
def evaluate_split(model, encoded, labels, label_ids, pad_id, batch_size) -> dict:
    """Validation loss over the two label words and accuracy; leaves the model in eval mode."""
    from gendiag.models.inputs import iter_batches, label_log_odds

    model.eval()
    log_odds = np.empty(len(encoded), dtype=np.float64)
    for index, batch in iter_batches(encoded, batch_size, pad_id):
        log_odds[index] = label_log_odds(answer_logits(model, batch), label_ids).cpu().numpy()
    p = 1.0 / (1.0 + np.exp(-log_odds))
    eps = 1e-7
    loss = -np.mean(labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps))
    return {"val_loss": float(loss), "val_accuracy": float(np.mean((p >= 0.5) == labels))}


def _batch_plan(lengths: list[int], settings: TrainSettings) -> list[np.ndarray]:
    """The batches of every step, fixed by the seed, so a resumed run replays the same order."""
    plan: list[np.ndarray] = []
    epoch = 0
    while len(plan) < settings.steps:
        rng = np.random.default_rng([settings.seed, epoch])
        plan.extend(b for b in length_grouped_batches(lengths, settings.batch_size, rng) if len(b) > 0)
        epoch += 1
    return plan[: settings.steps]


def _warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _fingerprint(base_dir, train: pd.DataFrame, lora, settings, prompt) -> str:
    digest = hashlib.sha256()
    weights = sorted(Path(base_dir).glob("*.safetensors"))
    for path in weights:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    digest.update(pd.util.hash_pandas_object(train[["uid", "text", "label"]], index=False).values.tobytes())
    digest.update(json.dumps([asdict(lora), asdict(settings), prompt.template, prompt.label_words],
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _save_checkpoint(path: Path, model, optimizer, scheduler, history, step, fingerprint) -> None:
    state = {
        "fingerprint": fingerprint,
        "step": step,
        "adapter": get_peft_model_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    log.info("checkpoint at step %d -> %s", step, path)


class _StopFlag:
    """Turns SIGTERM/SIGINT into a request to checkpoint at the end of the current step."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def _handle(self, signum, _frame) -> None:
        self.requested, self.signum = True, signum

    def installed(self):
        import contextlib

        @contextlib.contextmanager
        def scope():
            previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield self
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

        return scope()
