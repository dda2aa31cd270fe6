"""train_<arch>: our QLoRA loop against the standard Hugging Face recipe, one process per run.

* ours: `gendiag.finetune.qlora.finetune` as the finetune rule calls it (length-grouped, left-padded
  batches; the loss on the answer token only, the LM head run at the answer position only).
  Evaluation happens once, after the last step (`eval_every` = steps), and no checkpoints are
  written (`checkpoint_every` = 0), so the clock (`summary["train_seconds"]`: first step to last
  optimizer step) covers training only.
* baseline: `transformers.Trainer` over the standard PEFT model (`hf_peft_model`: the NF4 base from
  the library's loader, `prepare_model_for_kbit_training`, `get_peft_model` with the study's LoRA
  settings -- today the same model `build_peft_model` builds), every example the prompt
  ids our loop sees plus the answer token, right-padded to the maximum length (max_length + 1),
  labels = input_ids with pad masked (-100): the full-vocabulary causal-LM loss over the whole
  sequence. Same steps, batch size, lr, warm-up + cosine schedule, weight decay, grad clipping,
  AdamW, seed, threads. The clock runs from `on_train_begin` to the last `on_step_end`.

Both report real (non-pad) tokens per second and memory: `ru_maxrss` (the process's RSS
high-water mark) and that minus the RSS after the imports, which both runs share. Each run is its
own process, so neither sees the other's high-water mark.

Run one side alone: `python benchmarks/bench_train.py --impl ours --arch llama --steps 30`
(prints one JSON object, on the line starting with MARKER); `--profile FILE` writes torch.profiler and
cProfile tables instead.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _settings(config: dict, arch: str, steps: int | None):
    from gendiag.finetune.qlora import LoraSettings, TrainSettings

    training = common.training_settings(config, arch)
    steps = int(steps or training["steps"])
    lora = config["models"][arch]["lora"]
    settings = TrainSettings(
        **{k: training[k] for k in ("batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip",
                                    "gradient_checkpointing")},
        steps=steps,
        eval_every=steps,
        checkpoint_every=0,
        max_length=int(config["prompt"]["max_length"]),
        seed=0,
        quantization=dict(training["quantization"]),
    )
    return LoraSettings(lora["r"], lora["alpha"], lora["dropout"], tuple(lora["target_modules"])), settings


def run_ours(base_dir, family, train, val, prompt, lora, settings) -> dict:
    import torch

    from gendiag.finetune.qlora import finetune

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        _, summary = finetune(base_dir, family, train, val, prompt, lora, settings, Path(tmp) / "adapter",
                              Path(tmp) / "checkpoints", torch.device("cpu"), torch.float32)
    return {"seconds": summary["train_seconds"], "real_tokens": summary["real_tokens"],
            "padded_tokens": None, "val_accuracy": summary["val_accuracy"],
            "final_train_loss": summary["final_train_loss"]}


class _Examples:
    """Pre-tokenised, right-padded examples (a map-style dataset for the Trainer)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def hf_examples(train, tokenizer, prompt, max_length: int) -> list[dict]:
    """The standard recipe's examples: prompt + answer word, padded to the maximum length, pad masked in labels."""
    import torch

    from gendiag.models.inputs import encode_prompts

    label_ids = prompt.label_token_ids(tokenizer)
    width = max_length + 1
    rows = []
    for ids, label in zip(encode_prompts(train["text"].tolist(), tokenizer, prompt, max_length), train["label"],
                          strict=True):
        seq = [*ids, label_ids[int(label)]]
        input_ids = torch.full((width,), tokenizer.pad_token_id, dtype=torch.long)
        input_ids[: len(seq)] = torch.tensor(seq)
        attention_mask = torch.zeros(width, dtype=torch.long)
        attention_mask[: len(seq)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        rows.append({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
    return rows


def hf_peft_model(base_dir, family, lora, settings):
    """The standard QLoRA model: NF4 base (the library's loader, for its bitsandbytes CPU fix),
    `prepare_model_for_kbit_training`, `get_peft_model` with the study's LoRA settings."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from gendiag.models.loading import load_causal_lm

    model = load_causal_lm(base_dir, family, settings.quantization, torch.device("cpu"), torch.float32)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def run_baseline(base_dir, family, train, val, prompt, lora, settings) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from gendiag.finetune.paradigms import label_examples
    from gendiag.finetune.qlora import evaluate_split
    from gendiag.models.loading import load_tokenizer

    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(base_dir)
    examples = _Examples(hf_examples(train, tokenizer, prompt, settings.max_length))
    model = hf_peft_model(base_dir, family, lora, settings)
    counted = {"real": 0, "padded": 0}

    def count_tokens(_module, _args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None:
            counted["real"] += int(mask.sum())
            counted["padded"] += int(mask.numel())

    class Clock(TrainerCallback):
        start = end = None

        def on_train_begin(self, args, state, control, **kwargs):
            Clock.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            Clock.end = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-train-hf-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.lr, warmup_steps=settings.warmup_steps, lr_scheduler_type="cosine",
            weight_decay=settings.weight_decay, max_grad_norm=settings.grad_clip, optim="adamw_torch",
            seed=settings.seed, data_seed=settings.seed, logging_strategy="no", save_strategy="no",
            eval_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
            remove_unused_columns=False, gradient_checkpointing=settings.gradient_checkpointing,
        )
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=default_data_collator,
                          callbacks=[Clock()])
        handle = model.register_forward_pre_hook(count_tokens, with_kwargs=True)
        result = trainer.train()
        handle.remove()
    label_ids = prompt.label_token_ids(tokenizer)
    val_examples = label_examples(val["text"].tolist(), val["label"].tolist(), tokenizer, prompt, settings.max_length)
    accuracy = evaluate_split(model, val_examples, val["label"].to_numpy(), label_ids, tokenizer.pad_token_id,
                              settings.batch_size)["val_accuracy"]
    return {"seconds": Clock.end - Clock.start, "real_tokens": counted["real"], "padded_tokens": counted["padded"],
            "val_accuracy": accuracy, "final_train_loss": float(result.training_loss)}


IMPLS = {"ours": run_ours, "baseline": run_baseline}
MARKER = "BENCH_TRAIN_RESULT "


def measure(impl: str, arch: str, steps: int | None, results: Path, recipe: str) -> dict:
    """Run one side in this process; the record of its run."""
    import pandas as pd

    rss_after_imports = common.rss_mb()
    config = common.study_config()
    prompt = common.prompt_format(config)
    lora, settings = _settings(config, arch, steps)
    family = config["models"][arch]["family"]
    base_dir = results / "models" / arch / "base"
    train = pd.read_parquet(results / "datasets" / recipe / "train.parquet")
    val = pd.read_parquet(results / "datasets" / recipe / "val.parquet")
    load = common.loadavg()
    run = IMPLS[impl](base_dir, family, train, val, prompt, lora, settings)
    peak = common.maxrss_mb()
    return {**run, "tokens_per_second": run["real_tokens"] / run["seconds"], "steps": settings.steps,
            "batch_size": settings.batch_size, "peak_rss_mb": peak, "rss_after_imports_mb": rss_after_imports,
            "peak_rss_above_imports_mb": round(peak - rss_after_imports, 1),
            "loadavg_1min": [load, common.loadavg()]}


def profile(impl: str, arch: str, steps: int, results: Path, recipe: str) -> str:
    """torch.profiler (operators by self CPU time) and cProfile (Python functions) tables of one short run."""
    import torch

    out = io.StringIO()
    profiler = cProfile.Profile()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        profiler.enable()
        record = measure(impl, arch, steps, results, recipe)
        profiler.disable()
    out.write(f"## {impl}: {steps} steps, {record['seconds']:.2f} s, {record['tokens_per_second']:.0f} real tokens/s"
              f" ({record['real_tokens']} real tokens, padded tokens {record['padded_tokens']})\n\n")
    out.write("### torch.profiler, top operators by self CPU time (whole run incl. model load and final eval)\n\n")
    out.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
    out.write("\n### cProfile, top functions by cumulative time\n\n")
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(40)
    out.write(stream.getvalue())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one side of the train_* benchmark")
    parser.add_argument("--impl", choices=sorted(IMPLS), required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--steps", type=int, default=None, help="default: the study's steps for this arch")
    parser.add_argument("--recipe", default="generalist")
    parser.add_argument("--results", type=Path, default=common.REPO / "results")
    parser.add_argument("--profile", type=Path, default=None, help="write profiler tables here instead")
    args = parser.parse_args(argv)
    # Both sides import the same modules before the RSS reference point.
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import transformers
    from transformers import Trainer  # noqa: F401

    from gendiag.finetune import qlora  # noqa: F401

    common.setup_torch()
    transformers.logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.profile:
        text = profile(args.impl, args.arch, args.steps or 20, args.results, args.recipe)
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError), open(args.profile, "a") as f:
            f.write(text + "\n")
        return 0
    record = measure(args.impl, args.arch, args.steps, args.results, args.recipe)
    print(MARKER + json.dumps(record), flush=True)  # the Trainer prints to stdout too
    return 0


if __name__ == "__main__":
    sys.exit(main())
