"""p(malicious) of one model (fine-tuned or zero-shot) on every test set."""

import pandas as pd
import torch

from gendiag.evaluate.predict import (
    adapter_demonstrations,
    cot_prediction_table,
    load_for_prediction,
    predict_cot,
    predict_log_odds,
    prediction_table,
)
from gendiag.io import setup_logging, write_parquet
from gendiag.models.loading import load_tokenizer, resolve_compute
from gendiag.prompts import PromptFormat

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
device, dtype = resolve_compute(smk.params.compute)
prompt = PromptFormat.from_config(smk.params.prompt)
max_length = int(smk.params.prompt["max_length"])
evaluation = dict(smk.params.evaluation)
paradigm, cot = smk.wildcards.paradigm, dict(smk.params.cot)
classifier = paradigm == "head"

model = load_for_prediction(smk.input.base, smk.params.family, smk.input.adapter or None,
                            dict(smk.params.quantization), device, dtype, classifier=classifier)
tokenizer = load_tokenizer(smk.input.base)
context = adapter_demonstrations(smk.input.adapter or None, tokenizer, prompt)
# The test sets, then the validation splits of their corpora (read by the re-tuned threshold).
# (predict_evaluation_only scores one test set and has no validation split.)
inputs = [*smk.input.testsets, *smk.input.get("valsets", [])]
outputs = [*smk.output.predictions, *smk.output.get("val_predictions", [])]
for testset_path, out_path in zip(inputs, outputs, strict=True):
    testset = pd.read_parquet(testset_path)
    texts = testset["text"].tolist()
    if paradigm == "cot":
        generated = predict_cot(model, tokenizer, texts, prompt, max_length, int(evaluation["batch_size"]),
                                cot["answer_cue"], int(cot["max_new_tokens"]))
        table = cot_prediction_table(testset, generated)
        log.info("%s: %d of %d outputs without a readable label (scored as errors); first output: %r",
                 testset_path, int((~table["parsed"]).sum()), len(table), table["generated"].iloc[0])
    else:
        log_odds = predict_log_odds(model, tokenizer, texts, prompt, max_length, int(evaluation["batch_size"]),
                                    context=context, classifier=classifier)
        table = prediction_table(testset, log_odds, float(evaluation["threshold"]))
    log.info("%s: %d messages, accuracy %.3f", testset_path, len(table), (table["pred"] == table["label"]).mean())
    write_parquet(table, out_path)
