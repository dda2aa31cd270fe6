"""One row per corpus: rows read/kept/quarantined, duplicates, label noise, leakage, identifiability."""

import json
from pathlib import Path

from gendiag.data.audit import audit_table
from gendiag.io import setup_logging
from gendiag.report.tables import write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])

audits = [json.loads(Path(path).read_text()) for path in smk.input.audits]
across = json.loads(Path(smk.input.across).read_text())
table = audit_table(audits, across)
log.info("data audit:\n%s", table.to_string(index=False))
write_table(table, smk.output.csv.removesuffix(".csv"), caption="Data audit per corpus", label="tab:data-audit")
