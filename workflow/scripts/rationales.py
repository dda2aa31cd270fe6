"""Chain-of-thought rationales of one recipe's training and validation messages."""

import pandas as pd
import torch

from gendiag.finetune.rationales import read_rationale_table, recipe_rationales
from gendiag.finetune.teacher import rationales_from_teacher
from gendiag.io import setup_logging, write_parquet
from gendiag.models.loading import resolve_compute

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
cot = dict(smk.params.cot)
label_words = list(dict(smk.params.label_words).values())
messages = pd.concat([pd.read_parquet(smk.input.train), pd.read_parquet(smk.input.val)], ignore_index=True)
if cot["rationales"] == "teacher":
    torch.set_num_threads(smk.threads)
    device, dtype = resolve_compute(smk.params.compute)
    rationales = rationales_from_teacher(messages, smk.input.teacher, smk.params.family, dict(cot["teacher"]),
                                         device, dtype, label_words, int(cot["max_cues"]), cot["answer_cue"])
    log.info("origin of the rationales:\n%s", rationales["origin"].value_counts().to_string())
else:
    table = read_rationale_table(smk.input.table) if smk.input.table else None
    rationales = recipe_rationales(messages, cot["rationales"], int(cot.get("max_cues", 2)), label_words, table,
                                   cot.get("column", "rationale"), str(smk.input.table) if smk.input.table else "")
log.info("%d rationales (%s); most frequent:\n%s", len(rationales), cot["rationales"],
         rationales["rationale"].value_counts().head(5).to_string())
write_parquet(rationales, smk.output.rationales)
