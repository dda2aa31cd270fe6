"""The classical baseline on one recipe: fit on its training split, predict every test set."""

import pandas as pd

from gendiag.evaluate.classical import TfidfSettings, predict_classical, save_tfidf_baseline, train_tfidf_baseline
from gendiag.io import setup_logging, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
settings = TfidfSettings.from_mapping(dict(smk.params.settings))
model = train_tfidf_baseline(pd.read_parquet(smk.input.train), pd.read_parquet(smk.input.val), settings)
save_tfidf_baseline(model, smk.output.model)
# The test sets, then the validation splits of their corpora (read by the re-tuned threshold).
inputs = [*smk.input.testsets, *smk.input.valsets]
outputs = [*smk.output.predictions, *smk.output.val_predictions]
for testset_path, out_path in zip(inputs, outputs, strict=True):
    table = predict_classical(model, pd.read_parquet(testset_path), float(smk.params.threshold))
    log.info("%s: %d messages, accuracy %.3f", testset_path, len(table), (table["pred"] == table["label"]).mean())
    write_parquet(table, out_path)
