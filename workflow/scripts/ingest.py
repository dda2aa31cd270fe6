"""Read one corpus into the corpus table; quarantine what cannot be kept (with reasons)."""

from gendiag.data.corpus import ingest, load_raw
from gendiag.io import setup_logging, write_json, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
corpus, spec = smk.wildcards.corpus, dict(smk.params.spec)

raw, notes = load_raw(corpus, spec, vocabulary=smk.input.vocabulary or None, downloads=dict(smk.params.files))
kept, quarantined, report = ingest(raw, corpus, origin=notes["origin"])
report["sources"] = notes.get("sources", {})
log.info("%s: read %d, kept %d, quarantined %d %s", corpus, report["rows_read"], report["rows_kept"],
         report["rows_quarantined"], report["quarantine_reasons"])
write_parquet(kept, smk.output.corpus)
write_parquet(quarantined, smk.output.quarantine)
write_json(report, smk.output.report)
