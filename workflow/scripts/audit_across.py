"""Audit across corpora: shared copies, train/test leakage, source identifiability before and after normalisation."""

import pandas as pd

from gendiag.data.audit import audit_across
from gendiag.io import setup_logging, write_json

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
options = dict(smk.params.audit)

columns = ["uid", "corpus", "text", "raw_text", "label"]
frame = pd.concat([pd.read_parquet(p, columns=columns) for p in smk.input.corpora], ignore_index=True)
splits = pd.concat([pd.read_parquet(p, columns=["uid", "split"]) for p in smk.input.splits], ignore_index=True)
across = audit_across(
    frame, splits=splits, seed=int(options["seed"]), threshold=float(options["near_duplicate_threshold"]),
    num_perm=int(options["num_perm"]), folds=int(options["noise_folds"]),
    max_per_corpus=int(options["identifiability_max_per_corpus"]),
)
for stage, result in across["identifiability"].items():
    log.info("identifiability (%s): %s", stage,
             f"balanced accuracy {result['balanced_accuracy']:.3f} (chance {result['chance_balanced']:.3f})"
             if result.get("available") else result.get("reason"))
write_json(across, smk.output.audit)
