"""De-duplicate one corpus and split it into train/val/test, stratified by label."""

import pandas as pd

from gendiag.data.splits import split_corpus
from gendiag.io import setup_logging, write_json, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])

frame = pd.read_parquet(smk.input.corpus)
splits, report = split_corpus(
    frame, dict(smk.params.fractions), seed=int(smk.params.seed),
    near_duplicate_threshold=smk.params.near_duplicate_threshold,
)
log.info("%s: %d rows, %d exact and %d near duplicates removed, counts %s", smk.wildcards.corpus, report["rows_in"],
         report["exact_duplicates_removed"], report["near_duplicates_removed"], report["counts"])
write_parquet(splits, smk.output.splits)
write_json(report, smk.output.report)
