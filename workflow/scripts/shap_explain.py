"""SHAP token attributions, faithfulness and cue recovery of one fine-tuned model on one test set."""

import pandas as pd
import torch

from gendiag.attribution.explain import LogOddsFunction
from gendiag.attribution.study import attribute_testset
from gendiag.io import setup_logging, write_parquet
from gendiag.models.loading import load_tokenizer, resolve_compute
from gendiag.models.merge import load_merged
from gendiag.prompts import PromptFormat

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
device, dtype = resolve_compute(smk.params.compute)
prompt = PromptFormat.from_config(smk.params.prompt)
settings = dict(smk.params.shap)
max_length = int(smk.params.prompt["max_length"])

model = load_merged(smk.input.base, smk.params.family, smk.input.adapter, dict(smk.params.quantization), device, dtype)
tokenizer = load_tokenizer(smk.input.base)
function = LogOddsFunction(model, tokenizer, prompt, max_length, int(settings["forward_batch_size"]))
tokens, messages, curves = attribute_testset(function, tokenizer, prompt, pd.read_parquet(smk.input.testset),
                                             pd.read_parquet(smk.input.predictions), settings, max_length)
log.info("%d messages, %d model rows; comprehensiveness %.3f (random %.3f), additivity max error %.2e,"
         " merged vs evaluated log-odds max diff %.2e", len(messages), function.rows,
         messages["comprehensiveness"].mean(), messages["random_comprehensiveness"].mean(),
         messages["additivity_error"].max(), messages["merged_log_odds_diff"].max())
write_parquet(tokens, smk.output.tokens)
write_parquet(curves, smk.output.curves)
write_parquet(messages, smk.output.messages)
