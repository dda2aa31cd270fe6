"""Heatmap of F1 per model x recipe (rows) and test set (columns)."""

import pandas as pd

from gendiag.io import setup_logging
from gendiag.report.figures import plot_cross_dataset_f1

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
stem = smk.output.pdf.removesuffix(".pdf")
plot_cross_dataset_f1(pd.read_csv(smk.input.table), stem, recipe_order=list(smk.params.recipe_order),
                      testset_order=list(smk.params.testset_order))
