"""Attention of the heads that attend most to the edited tokens, clean vs corrupted, for one architecture."""

from gendiag.circuits.summary import read_run_tables
from gendiag.io import setup_logging
from gendiag.report import circuit_figures as figures

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
runs = [tuple(run) for run in smk.params.runs]
attention = read_run_tables(smk.input.attention, runs)
stem = smk.output.pdf.removesuffix(".pdf")
if attention.empty:
    log.warning("no model of %s has an analysed minimal pair: the attention figure shows nothing", smk.wildcards.arch)
    figures.plot_no_pairs(stem, f"attention of {smk.wildcards.arch}")
else:
    figures.plot_attention_pairs(attention, stem)
