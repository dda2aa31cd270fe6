"""QLoRA fine-tuning: a 4-bit NF4 base, LoRA adapters, the loss on the target tokens only.

The paradigm (`gendiag.finetune.paradigms`) decides what the model reads and which tokens are
targets: the label word (standard, fticl), rationale + answer cue + label word (cot), or the
class of a sequence-classification head (head).

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

from gendiag.finetune.paradigms import (
    FTICL,
    Example,
    ParadigmSpec,
    choose_demonstrations,
    encode_demonstrations,
    paradigm_examples,
)
from gendiag.io import atomic_path, write_json
from gendiag.models.inputs import collate_left, length_grouped_batches
from gendiag.models.loading import load_causal_lm, load_tokenizer
from gendiag.prompts import PromptFormat

IGNORE_INDEX = -100
DEMONSTRATIONS_FILE = "gendiag_demonstrations.json"

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
                     device: torch.device, dtype: torch.dtype, classifier: bool = False) -> torch.nn.Module:
    from peft import prepare_model_for_kbit_training

    model = load_causal_lm(base_dir, family, settings.quantization, device, dtype, classifier=classifier)
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
        task_type="SEQ_CLS" if classifier else "CAUSAL_LM",  # SEQ_CLS trains and saves the new head too
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
    paradigm: ParadigmSpec | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Fine-tune and save the PEFT adapter to `adapter_dir`; return (per-step log, summary).

    A checkpoint is written to `checkpoint_dir` every `checkpoint_every` steps and on SIGTERM;
    a later call with the same inputs resumes from it and removes it when training completes.
    fticl writes its demonstrations next to the adapter, since prediction prompts with them too.
    """
    paradigm = paradigm or ParadigmSpec()
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(base_dir)
    label_ids = prompt.label_token_ids(tokenizer)
    context: list[int] = []
    demonstrations = None
    if paradigm.name == FTICL:
        demonstrations = choose_demonstrations(train, paradigm.demonstrations, paradigm.demo_seed,
                                               "the recipe's training set")
        train = train[~train["uid"].isin(demonstrations["uid"])].reset_index(drop=True)
        context = encode_demonstrations(demonstrations, tokenizer, prompt, paradigm.demo_max_tokens)
    train_examples = paradigm_examples(paradigm, train, tokenizer, prompt, settings.max_length, context,
                                       "the training set")
    val_examples = paradigm_examples(paradigm, val, tokenizer, prompt, settings.max_length, context,
                                     "the validation set")
    val_labels = val["label"].to_numpy()

    model = build_peft_model(base_dir, family, lora, settings, device, dtype, paradigm.classifier)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", n_trainable, n_total, 100 * n_trainable / n_total)
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(settings.warmup_steps, settings.steps))

    fingerprint = _fingerprint(base_dir, train, lora, settings, prompt, paradigm)
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

    plan = _batch_plan([len(ex.input_ids) for ex in train_examples], settings)
    stop = _StopFlag()
    model.train()
    clock = time.perf_counter()
    step = start_step
    with stop.installed():
        for step in range(start_step + 1, settings.steps + 1):
            examples = [train_examples[i] for i in plan[step - 1]]
            batch = collate_left([ex.input_ids for ex in examples], tokenizer.pad_token_id)
            loss = examples_loss(model, batch, examples, paradigm.classifier)
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
                row.update(evaluate_split(model, val_examples, val_labels, label_ids, tokenizer.pad_token_id,
                                          settings.batch_size, paradigm.classifier))
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
    if demonstrations is not None:
        write_json({"max_message_tokens": paradigm.demo_max_tokens,
                    "demonstrations": demonstrations.to_dict(orient="records")},
                   Path(adapter_dir) / DEMONSTRATIONS_FILE)
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
        "paradigm": asdict(paradigm),
        "demonstrations": [] if demonstrations is None else demonstrations["uid"].tolist(),
    }
    return frame, summary


def target_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], width: int, classifier: bool) -> torch.Tensor:
    """Logits at the last `width` positions, shape (batch, width, vocab); the head's, (batch, 1, 2).

    Only the target positions go through the LM head (`logits_to_keep`), not the whole sequence.
    """
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items()}
    if classifier:
        return model(**inputs, use_cache=False).logits[:, None, :].float()
    return model(**inputs, logits_to_keep=width, use_cache=False).logits[:, -width:, :].float()


def examples_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], examples: list[Example],
                  classifier: bool) -> torch.Tensor:
    """Mean cross-entropy over every target token of the batch (right-aligned, left-padded)."""
    width = max(len(ex.targets) for ex in examples)
    targets = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, ex in enumerate(examples):
        targets[row, width - len(ex.targets):] = torch.as_tensor(ex.targets, dtype=torch.long)
    logits = target_logits(model, batch, width, classifier)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1).to(logits.device), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate_split(model, examples: list[Example], labels, label_ids, pad_id, batch_size,
                   classifier: bool = False) -> dict:
    """Validation loss over the two classes and accuracy; leaves the model in eval mode.

    The label is read where it is predicted: at the last position (after the gold rationale, for
    cot: teacher forcing), or from the head.
    """
    from gendiag.models.inputs import iter_batches, scored_log_odds

    model.eval()
    log_odds = np.empty(len(examples), dtype=np.float64)
    for index, batch in iter_batches([ex.input_ids for ex in examples], batch_size, pad_id):
        log_odds[index] = scored_log_odds(model, batch, label_ids, classifier).cpu().numpy()
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


def _fingerprint(base_dir, train: pd.DataFrame, lora, settings, prompt, paradigm) -> str:
    digest = hashlib.sha256()
    weights = sorted(Path(base_dir).glob("*.safetensors"))
    for path in weights:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    digest.update(pd.util.hash_pandas_object(train[["uid", "text", "label"]], index=False).values.tobytes())
    if "rationale" in train.columns:
        digest.update(pd.util.hash_pandas_object(train["rationale"], index=False).values.tobytes())
    digest.update(json.dumps([asdict(lora), asdict(settings), prompt.template, prompt.label_words, asdict(paradigm)],
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
