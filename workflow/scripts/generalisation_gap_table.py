"""The study's headline comparison: specialist vs generalist F1 out of domain, per architecture."""

import pandas as pd

from gendiag.io import setup_logging
from gendiag.report.tables import generalisation_gap_table, write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
comparison = dict(smk.params.comparison)
gap = generalisation_gap_table(pd.read_csv(smk.input.table), comparison["specialist"], comparison["generalist"])
write_table(gap, smk.output.gap[0].removesuffix(".csv"),
            caption="Out-of-domain F1 of the specialist and generalist recipes.", label="tab:generalisation-gap")
log.info("\n%s", gap.to_string())
