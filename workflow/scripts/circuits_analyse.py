"""Circuit analysis of one fine-tuned model: merge, check agreement, wrap with TransformerLens, patch."""

import pandas as pd
import torch

from gendiag.circuits.bridge import wrap_for_analysis
from gendiag.circuits.study import analyse_model, build_pairs, merge_agreement
from gendiag.io import setup_logging, write_parquet
from gendiag.models.loading import load_tokenizer, resolve_compute
from gendiag.models.merge import load_merged
from gendiag.prompts import PromptFormat

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
device, dtype = resolve_compute(smk.params.compute)
prompt = PromptFormat.from_config(smk.params.prompt)
max_length = int(smk.params.prompt["max_length"])
settings = dict(smk.params.circuits)
testsets = {name: pd.read_parquet(path) for name, path in zip(smk.params.testsets, smk.input.testsets, strict=True)}
predictions = {name: pd.read_parquet(path) for name, path in
               zip(smk.params.testsets, smk.input.predictions, strict=True)}

tokenizer = load_tokenizer(smk.input.base)
merged = load_merged(smk.input.base, smk.params.family, smk.input.adapter, dict(smk.params.quantization), device,
                     dtype)
agreement = merge_agreement(merged, tokenizer, prompt, max_length, int(smk.params.batch_size), testsets, predictions)
log.info("merged vs evaluated 4-bit model:\n%s", agreement.to_string(index=False))
overall = agreement.iloc[-1]
if overall["label_agreement"] < 0.99:
    log.warning("label agreement %.3f is below 0.99: circuits describe the merged model, which differs from the"
                " evaluated one on %d messages", overall["label_agreement"],
                round((1 - overall["label_agreement"]) * overall["n"]))

model = wrap_for_analysis(merged, tokenizer, smk.params.family, prompt)
pair_length = int(settings.get("max_length") or max_length)
pairs, drops = build_pairs(testsets, tokenizer, prompt, pair_length, settings)
tables = analyse_model(model, tokenizer, pairs, settings)
tables.update(drops=drops, agreement=agreement)
for name, frame in tables.items():
    write_parquet(frame, smk.output[name])
