"""Duplicates, shared copies, leakage, label noise and lengths per corpus, as bars."""

import json
from pathlib import Path

from gendiag.io import setup_logging
from gendiag.report.figures import plot_data_audit

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
audits = [json.loads(Path(path).read_text()) for path in smk.input.audits]
plot_data_audit(audits, json.loads(Path(smk.input.across).read_text()), stem=smk.output.pdf.removesuffix(".pdf"))
