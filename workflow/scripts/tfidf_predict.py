"""The classical baseline saved by tfidf_baseline, applied to one more test set (an evaluation-only corpus)."""

import pandas as pd

from gendiag.evaluate.classical import load_tfidf_baseline, predict_classical
from gendiag.io import setup_logging, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
table = predict_classical(load_tfidf_baseline(smk.input.model), pd.read_parquet(smk.input.testset),
                          float(smk.params.threshold))
log.info("%s: %d messages, accuracy %.3f", smk.input.testset, len(table), (table["pred"] == table["label"]).mean())
write_parquet(table, smk.output.predictions)
