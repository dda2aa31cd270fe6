"""Convert a GGUF checkpoint (a local file or one inside a pip package) into the base model directory."""

from gendiag.io import atomic_path, setup_logging
from gendiag.models.gguf import convert_gguf

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
with atomic_path(smk.output.base) as tmp:
    convert_gguf(smk.params.gguf, smk.params.family, tmp, key=f"models.{smk.wildcards.arch}.gguf")
