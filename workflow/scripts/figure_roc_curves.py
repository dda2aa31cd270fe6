"""ROC and DET curves per test set, every model (the classical baseline included) on one axis."""

import pandas as pd

from gendiag.evaluate.metrics import prediction_files
from gendiag.io import setup_logging
from gendiag.report.curve_figures import plot_roc_curves

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
predictions = pd.concat(
    [pd.read_parquet(path, columns=["label", "p_malicious"]).assign(arch=arch, recipe=recipe, paradigm=paradigm,
                                                                    seed=seed, testset=testset)
     for arch, recipe, paradigm, seed, testset, path in prediction_files(smk.params.runs, smk.params.testsets,
                                                                          smk.input.predictions)],
    ignore_index=True,
)
for kind, pdf in (("roc", smk.output.roc_pdf), ("det", smk.output.det_pdf)):
    paths = plot_roc_curves(predictions, pdf.removesuffix(".pdf"), kind=kind, testset_order=list(smk.params.testsets),
                            threshold=float(smk.params.threshold))
    log.info("%s curves: %s", kind.upper(), ", ".join(map(str, paths)))
