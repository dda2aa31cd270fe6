"""The cross-dataset generalisation matrix: metrics with bootstrap CIs for every model and test set."""

import pandas as pd

from gendiag.evaluate.metrics import evaluate_predictions, prediction_files
from gendiag.io import setup_logging
from gendiag.report.tables import cross_dataset_table, write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
evaluation, in_domain = dict(smk.params.evaluation), dict(smk.params.in_domain)

rows = []
for arch, recipe, paradigm, seed, testset, path in prediction_files(smk.params.runs, smk.params.testsets,
                                                                     smk.input.predictions):
    metrics = evaluate_predictions(pd.read_parquet(path), n_resamples=int(evaluation["bootstrap_resamples"]),
                                   seed=int(evaluation["seed"]), threshold=float(evaluation["threshold"]))
    rows.append({"arch": arch, "recipe": recipe, "paradigm": paradigm, "seed": seed, "testset": testset,
                 "in_domain": testset in in_domain.get(recipe, []), **metrics})
cross = cross_dataset_table(rows)
write_table(cross, "results/tables/cross_dataset", caption="Cross-dataset evaluation: F1 with 95% bootstrap CI.",
            label="tab:cross-dataset")
log.info("cross-dataset table: %d rows", len(cross))
