"""Messages with each token coloured by its SHAP value, for one architecture (figure and HTML page)."""

from gendiag.attribution.aggregate import read_job_tables
from gendiag.io import setup_logging, write_text
from gendiag.report.figures import plot_shap_text_heatmaps
from gendiag.report.html import shap_heatmap_html

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
messages = read_job_tables(smk.input.messages, smk.params.jobs)
tokens = read_job_tables(smk.input.tokens, smk.params.jobs)
plot_shap_text_heatmaps(messages, tokens, smk.output.png.removesuffix(".png"), int(smk.params.n_messages))
write_text(shap_heatmap_html(messages, tokens, f"SHAP token attributions: {smk.wildcards.arch}"), smk.output.html)
