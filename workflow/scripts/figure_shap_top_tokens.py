"""Top SHAP tokens per model: what pushes each model toward phishing and toward legitimate."""

import pandas as pd

from gendiag.io import setup_logging
from gendiag.report.figures import plot_shap_top_tokens

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
plot_shap_top_tokens(pd.read_csv(smk.input.table), smk.output.png.removesuffix(".png"))
