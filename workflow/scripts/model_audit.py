"""The seed study's same-model label audit of one fine-tuned run, beside the corpus audits' suspects."""

import pandas as pd
import torch

from gendiag.data.model_audit import audit_sample, injected_noise_of, run_model_audit
from gendiag.evaluate.predict import load_for_prediction, predict_log_odds, prediction_table
from gendiag.io import setup_logging, write_csv, write_json
from gendiag.models.loading import load_tokenizer, resolve_compute
from gendiag.prompts import PromptFormat

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
device, dtype = resolve_compute(smk.params.compute)
prompt = PromptFormat.from_config(smk.params.prompt)
options = dict(smk.params.options)

train = audit_sample(pd.read_parquet(smk.input.train), options["max_messages"], int(smk.params.seed))
model = load_for_prediction(smk.input.base, smk.params.family, smk.input.adapter, dict(smk.params.quantization),
                            device, dtype)
tokenizer = load_tokenizer(smk.input.base)
log.info("scoring %d training messages of recipe %s with its own fine-tuned %s", len(train), smk.wildcards.recipe,
         smk.wildcards.arch)
log_odds = predict_log_odds(model, tokenizer, train["text"].tolist(), prompt, int(smk.params.prompt["max_length"]),
                            int(smk.params.batch_size))
cleanlab = pd.concat([pd.read_csv(path, usecols=["uid"]) for path in smk.input.suspects])["uid"].astype(str)
audit, summary = run_model_audit(prediction_table(train, log_odds), float(options["threshold"]), cleanlab,
                                 injected_noise_of(train))
summary.update(arch=smk.wildcards.arch, recipe=smk.wildcards.recipe, seed=int(smk.wildcards.seed))
c = summary["comparison"]
log.info("same-model audit: %d of %d flagged at %.2f; confident learning flags %d of them; both %d; precision "
         "against injected noise: same-model %s, confident learning %s", summary["n_flagged"], summary["n"],
         summary["threshold"], c["n_cleanlab"], c["n_both"], c["model_precision"], c["cleanlab_precision"])
write_csv(audit.assign(text=train["text"].str.slice(0, 300).str.replace("\n", " ")), smk.output.messages)
write_json(summary, smk.output.summary)
