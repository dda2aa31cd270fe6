"""The cross-dataset generalisation matrix: metrics with bootstrap CIs for every model and test set.

Next to F1 at the study's threshold: operating-point and calibration metrics on the same bootstrap
draws, and F1 at the threshold re-tuned on the validation split of the test set's own corpus.
"""

import pandas as pd

from gendiag.evaluate.metrics import evaluate_predictions, prediction_files
from gendiag.evaluate.operating import ECE_BINS
from gendiag.io import setup_logging
from gendiag.report.tables import cross_dataset_table, write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
evaluation, in_domain = dict(smk.params.evaluation), dict(smk.params.in_domain)
runs, testsets = smk.params.runs, smk.params.testsets
# Predictions on the validation split of each test set's corpus; an evaluation-only corpus has none (NaN f1_retuned).
val_paths = {key[:5]: key[5] for key in prediction_files(runs, smk.params.val_testsets, smk.input.val_predictions)}

rows = []
for arch, recipe, paradigm, seed, testset, path in prediction_files(runs, testsets, smk.input.predictions):
    log.info("%s/%s/%s/seed%d on %s", arch, recipe, paradigm, seed, testset)
    val_path = val_paths.get((arch, recipe, paradigm, seed, testset))
    val = None if val_path is None else pd.read_parquet(val_path)
    metrics = evaluate_predictions(pd.read_parquet(path), n_resamples=int(evaluation["bootstrap_resamples"]),
                                   seed=int(evaluation["seed"]), threshold=float(evaluation["threshold"]),
                                   operating=True, val=val)
    rows.append({"arch": arch, "recipe": recipe, "paradigm": paradigm, "seed": seed, "testset": testset,
                 "in_domain": testset in in_domain.get(recipe, []), **metrics})
cross = cross_dataset_table(rows)
write_table(cross, smk.output.table[0].removesuffix(".csv"), label="tab:cross-dataset", intervals=True,
            caption="Cross-dataset evaluation with 95% bootstrap CIs: F1 at the study's threshold, PR-AUC, FPR at "
                    f"recall 0.90/0.95, recall at FPR 0.01, Brier score, ECE ({ECE_BINS} equal-width bins of "
                    "p(malicious), weighted by count) and F1 at the threshold re-tuned on the target corpus's "
                    "validation split.")
log.info("cross-dataset table: %d rows", len(cross))
log.info("\n%s", cross[["arch", "recipe", "paradigm", "testset", "f1", "f1_retuned", "average_precision",
                        "fpr_at_recall_95", "recall_at_fpr_1", "ece"]].to_string())
