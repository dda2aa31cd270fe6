"""The cross-dataset generalisation matrix: metrics with bootstrap CIs for every model and test set."""

from pathlib import Path

import pandas as pd

from gendiag.evaluate.metrics import evaluate_predictions
from gendiag.io import setup_logging
from gendiag.report.tables import cross_dataset_table, write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
evaluation, in_domain = dict(smk.params.evaluation), dict(smk.params.in_domain)

# input.predictions lists runs x test sets in the order of params.runs and params.testsets.
keys = [(*run, testset) for run in smk.params.runs for testset in smk.params.testsets]
rows = []
for (arch, recipe, paradigm, seed, testset), path in zip(keys, smk.input.predictions, strict=True):
    if Path(path).stem != testset or f"/{arch}/{recipe}/{paradigm}/seed{seed}/" not in path:
        raise RuntimeError(f"prediction file {path} does not belong to {arch}/{recipe}/{paradigm}/seed{seed}/{testset}")
    metrics = evaluate_predictions(pd.read_parquet(path), n_resamples=int(evaluation["bootstrap_resamples"]),
                                   seed=int(evaluation["seed"]), threshold=float(evaluation["threshold"]))
    rows.append({"arch": arch, "recipe": recipe, "paradigm": paradigm, "seed": int(seed), "testset": testset,
                 "in_domain": testset in in_domain.get(recipe, []), **metrics})
cross = cross_dataset_table(rows)
write_table(cross, "results/tables/cross_dataset", caption="Cross-dataset evaluation: F1 with 95% bootstrap CI.",
            label="tab:cross-dataset")
log.info("cross-dataset table: %d rows", len(cross))
