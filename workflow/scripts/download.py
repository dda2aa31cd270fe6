"""Fetch one corpus file given by URL and verify its sha256 (a local rule: compute nodes may be offline)."""

from gendiag.data.download import fetch
from gendiag.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
fetch(smk.params.url, smk.params.sha256, smk.output[0])
