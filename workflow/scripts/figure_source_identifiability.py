"""How well a bag-of-words probe tells the corpora apart, before and after normalisation."""

import json
from pathlib import Path

from gendiag.io import setup_logging
from gendiag.report.figures import plot_identifiability

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
identifiability = json.loads(Path(smk.input.across).read_text())["identifiability"]
plot_identifiability(identifiability["raw"], identifiability["normalised"], stem=smk.output.pdf.removesuffix(".pdf"))
