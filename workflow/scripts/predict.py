"""p(malicious) of one model (fine-tuned or zero-shot) on every test set."""

import pandas as pd
import torch

from gendiag.evaluate.predict import load_for_prediction, predict_log_odds, prediction_table
from gendiag.io import setup_logging, write_parquet
from gendiag.models.loading import load_tokenizer, resolve_compute
from gendiag.prompts import PromptFormat

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
device, dtype = resolve_compute(smk.params.compute)
prompt = PromptFormat.from_config(smk.params.prompt)
evaluation = dict(smk.params.evaluation)

model = load_for_prediction(smk.input.base, smk.params.family, smk.input.adapter or None,
                            dict(smk.params.quantization), device, dtype)
tokenizer = load_tokenizer(smk.input.base)
for testset_path, out_path in zip(smk.input.testsets, smk.output.predictions, strict=True):
    testset = pd.read_parquet(testset_path)
    log_odds = predict_log_odds(model, tokenizer, testset["text"].tolist(), prompt,
                                int(smk.params.prompt["max_length"]), int(evaluation["batch_size"]))
    table = prediction_table(testset, log_odds, float(evaluation["threshold"]))
    log.info("%s: %d messages, accuracy %.3f", testset_path, len(table), (table["pred"] == table["label"]).mean())
    write_parquet(table, out_path)
