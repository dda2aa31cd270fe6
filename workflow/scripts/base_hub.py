"""Snapshot a pinned hub checkpoint (or link a local model directory) as the base model."""

from gendiag.io import atomic_path, setup_logging
from gendiag.models.base import snapshot_pretrained

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
log.info("%s @ %s", smk.params.model_id, smk.params.revision)
with atomic_path(smk.output.base) as tmp:
    snapshot_pretrained(smk.params.model_id, smk.params.revision, tmp)
