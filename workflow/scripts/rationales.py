"""Chain-of-thought rationales of one recipe's training and validation messages."""

import pandas as pd

from gendiag.finetune.rationales import read_rationale_table, recipe_rationales
from gendiag.io import setup_logging, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
cot = dict(smk.params.cot)
messages = pd.concat([pd.read_parquet(smk.input.train), pd.read_parquet(smk.input.val)], ignore_index=True)
table = read_rationale_table(smk.input.table) if smk.input.table else None
rationales = recipe_rationales(messages, cot["rationales"], int(cot["max_cues"]),
                               list(dict(smk.params.label_words).values()), table, cot["column"],
                               str(smk.input.table) if smk.input.table else "")
log.info("%d rationales (%s); most frequent:\n%s", len(rationales), cot["rationales"],
         rationales["rationale"].value_counts().head(5).to_string())
write_parquet(rationales, smk.output.rationales)
