"""QLoRA label fine-tuning of one model on one recipe with one seed."""

import sys

import pandas as pd
import torch

from gendiag.finetune.paradigms import ParadigmSpec
from gendiag.finetune.qlora import LoraSettings, Preempted, TrainSettings, finetune
from gendiag.io import atomic_path, setup_logging, write_csv, write_json
from gendiag.models.loading import resolve_compute
from gendiag.prompts import PromptFormat

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
training = dict(smk.params.training)
lora = dict(smk.params.lora)
settings = TrainSettings(
    **{k: training[k] for k in ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip",
                                "eval_every", "checkpoint_every", "gradient_checkpointing")},
    max_length=int(smk.params.prompt["max_length"]),
    seed=int(smk.wildcards.seed),
    quantization=dict(training["quantization"]),
)
device, dtype = resolve_compute(smk.params.compute)
train, val = pd.read_parquet(smk.input.train), pd.read_parquet(smk.input.val)
if smk.input.rationales:
    rationales = pd.read_parquet(smk.input.rationales).set_index("uid")["rationale"]
    train, val = (frame.assign(rationale=frame["uid"].map(rationales)) for frame in (train, val))

try:
    with atomic_path(smk.output.adapter) as adapter_tmp:
        history, summary = finetune(
            smk.input.base, smk.params.family, train, val,
            PromptFormat.from_config(smk.params.prompt),
            LoraSettings(lora["r"], lora["alpha"], lora["dropout"], tuple(lora["target_modules"])),
            settings, adapter_tmp, smk.params.checkpoint_dir, device, dtype,
            ParadigmSpec.from_config(smk.wildcards.paradigm, training),
        )
except Preempted as stop:
    log.warning("%s", stop)
    sys.exit(75)  # EX_TEMPFAIL: rerun (or let Snakemake retry) to resume from the checkpoint
write_csv(history, smk.output.train_log)
write_json({"arch": smk.wildcards.arch, "recipe": smk.wildcards.recipe, "paradigm": smk.wildcards.paradigm,
            "seed": int(smk.wildcards.seed), "device": str(device), "dtype": str(dtype), **summary},
           smk.output.summary)
log.info("done: %s", {k: summary[k] for k in ("final_train_loss", "val_loss", "val_accuracy")})
