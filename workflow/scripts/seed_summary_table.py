"""F1 over training seeds (mean, t-interval) next to the bootstrap interval, per model and test set."""

import pandas as pd

from gendiag.io import setup_logging
from gendiag.report.tables import seed_summary_table, write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
table = seed_summary_table(pd.read_csv(smk.input.table), confidence=float(smk.params.confidence))
write_table(table, smk.output.table[0].removesuffix(".csv"),
            caption="F1 across training seeds (mean and t-interval) next to the mean 95% bootstrap interval.",
            label="tab:seed-summary")
log.info("\n%s", table.to_string())
