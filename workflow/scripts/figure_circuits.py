"""One cross-architecture circuits figure (logit lens, DLA, patching), chosen by the {figure} wildcard."""

from gendiag.circuits.summary import read_run_tables
from gendiag.io import setup_logging
from gendiag.report import circuit_figures as figures

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
runs = [tuple(run) for run in smk.params.runs]
plot = {
    "logit_lens": figures.plot_logit_lens,
    "logit_lens_dla": figures.plot_logit_lens_dla,
    "patching_resid": figures.plot_patching_resid,
    "patching_heads": figures.plot_patching_heads,
    "patching_attribution": figures.plot_patching_attribution,
}[smk.wildcards.figure]
tables = {name: read_run_tables(smk.input[name], runs) for name in smk.params.tables}
stem = smk.output.pdf.removesuffix(".pdf")
if all(table.empty for table in tables.values()):
    log.warning("no model has an analysed minimal pair: %s shows nothing", smk.wildcards.figure)
    figures.plot_no_pairs(stem, smk.wildcards.figure.replace("_", " "))
else:
    plot(**tables, stem=stem, recipes=(smk.params.report["specialist"], smk.params.report["generalist"]))
