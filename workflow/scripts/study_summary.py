"""results/report/summary.md: the findings as sentences, every number read from the tables."""

import pandas as pd

from gendiag.io import setup_logging, write_text
from gendiag.report.summary import study_summary

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
significance = dict(smk.params.significance)
text = study_summary(
    pd.read_csv(smk.input.claims),
    pd.read_csv(smk.input.cross),
    significance,
    shap=pd.read_csv(smk.input.shap) if smk.input.shap else None,
    circuits=pd.read_csv(smk.input.circuits) if smk.input.circuits else None,
    label_audit=pd.read_csv(smk.input.label_audit) if smk.input.label_audit else None,
)
write_text(text, smk.output.summary)
log.info("\n%s", text)
