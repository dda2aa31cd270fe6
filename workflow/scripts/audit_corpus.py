"""Audit one corpus: duplicates, label noise (with every suspect listed), lengths, languages."""

import json
from pathlib import Path

import pandas as pd

from gendiag.data.audit import audit_corpus
from gendiag.io import setup_logging, write_csv, write_json

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
options = dict(smk.params.audit)

frame = pd.read_parquet(smk.input.corpus)
ingested, normalised = (json.loads(Path(path).read_text()) for path in (smk.input.ingest, smk.input.normalise))
# What normalisation emptied is quarantined too, so read = kept + quarantined still holds.
rows = {
    "rows_read": ingested["rows_read"],
    "rows_kept": normalised["rows_kept"],
    "rows_quarantined": ingested["rows_quarantined"] + normalised["rows_emptied"],
}
audit = audit_corpus(
    frame, ingest_report=rows, seed=int(options["seed"]), threshold=float(options["near_duplicate_threshold"]),
    num_perm=int(options["num_perm"]), folds=int(options["noise_folds"]), top_suspects=None,
    language_sample=int(options["language_sample"]),
)
suspects = pd.DataFrame(audit["label_noise"]["suspects"], columns=["uid", "label", "p_malicious", "self_confidence"])
excerpts = frame.set_index("uid")["text"].str.slice(0, 300).str.replace("\n", " ")
write_csv(suspects.assign(text=suspects["uid"].map(excerpts)), smk.output.suspects)
audit["label_noise"]["suspects"] = audit["label_noise"]["suspects"][: int(options["suspects_listed"])]
audit["quarantine_reasons"] = ingested["quarantine_reasons"] | (
    {"empty after normalisation": normalised["rows_emptied"]} if normalised["rows_emptied"] else {}
)
noise = audit["label_noise"]
log.info("%s: %d messages, %d exact / %d near duplicates, label noise %s (%s), %d suspects", audit["corpus"],
         audit["n"], audit["exact_duplicates"]["messages"], audit["near_duplicates"]["messages"], noise["rate"],
         noise.get("reason") or "estimated", len(suspects))
write_json(audit, smk.output.audit)
