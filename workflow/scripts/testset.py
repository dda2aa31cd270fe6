"""A corpus's held-out test split, optionally subsampled (stratified by label)."""

import pandas as pd

from gendiag.data.splits import stratified_sample
from gendiag.io import setup_logging, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])

frame = pd.read_parquet(smk.input.splits)
test = stratified_sample(frame[frame["split"] == "test"], smk.params.max_size, int(smk.params.seed), by=["label"])
log.info("%s: %d messages, labels %s", smk.wildcards.testset, len(test), test["label"].value_counts().to_dict())
write_parquet(test, smk.output.testset)
