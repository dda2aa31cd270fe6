"""Predictions of one model with each prompt variant: the second template, and k-shot prompts."""

import pandas as pd
import torch

from gendiag.evaluate.predict import load_for_prediction, predict_log_odds, prediction_table
from gendiag.evaluate.variants import variant_prompt
from gendiag.io import setup_logging, write_parquet
from gendiag.models.loading import load_tokenizer, resolve_compute

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
device, dtype = resolve_compute(smk.params.compute)
evaluation = dict(smk.params.evaluation)
max_length = int(smk.params.prompt["max_length"])

model = load_for_prediction(smk.input.base, smk.params.family, smk.input.adapter or None,
                            dict(smk.params.quantization), device, dtype)
tokenizer = load_tokenizer(smk.input.base)
outputs = iter(smk.output.predictions)
for variant in smk.params.variants:
    for testset_path, pool_path in zip(smk.input.testsets, smk.input.pools, strict=True):
        prompt, context = variant_prompt(variant, dict(smk.params.prompt), smk.params.alt_template,
                                         dict(smk.params.kshot), pd.read_parquet(pool_path), tokenizer, pool_path)
        testset = pd.read_parquet(testset_path)
        log_odds = predict_log_odds(model, tokenizer, testset["text"].tolist(), prompt, max_length,
                                    int(evaluation["batch_size"]), context=context)
        table = prediction_table(testset, log_odds, float(evaluation["threshold"]))
        out_path = next(outputs)
        log.info("%s %s: accuracy %.3f -> %s", variant, testset_path, (table["pred"] == table["label"]).mean(),
                 out_path)
        write_parquet(table, out_path)
