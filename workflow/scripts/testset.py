"""A corpus's test split (rule testset) or validation split (rule valset), optionally subsampled by label."""

import pandas as pd

from gendiag.data.splits import stratified_sample
from gendiag.io import setup_logging, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
split = smk.params.split

frame = pd.read_parquet(smk.input.splits)
rows = stratified_sample(frame[frame["split"] == split], smk.params.max_size, int(smk.params.seed), by=["label"])
log.info("%s (%s split): %d messages, labels %s", smk.wildcards.testset, split, len(rows),
         rows["label"].value_counts().to_dict())
write_parquet(rows, smk.output[0])
