"""Specialist vs generalist F1 out of domain (and in domain), per architecture."""

import pandas as pd

from gendiag.io import setup_logging
from gendiag.report.figures import plot_generalisation_gap

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
plot_generalisation_gap(pd.read_csv(smk.input.table), smk.output.pdf.removesuffix(".pdf"))
