"""Erasure curves of SHAP against random attributions, per model."""

from gendiag.attribution.aggregate import read_job_tables
from gendiag.io import setup_logging
from gendiag.report.figures import plot_shap_faithfulness

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
plot_shap_faithfulness(read_job_tables(smk.input.curves, smk.params.jobs), smk.output.png.removesuffix(".png"))
