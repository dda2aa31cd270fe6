"""One row per audited fine-tuned run: the same-model audit against the confident-learning audit."""

import json
from pathlib import Path

from gendiag.data.model_audit import model_audit_table
from gendiag.io import setup_logging
from gendiag.report.tables import write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])

table = model_audit_table(json.loads(Path(path).read_text()) for path in smk.input.summaries)
log.info("label audits:\n%s", table.to_string(index=False))
write_table(table, smk.output.csv.removesuffix(".csv"), caption="Same-model label audit against confident learning",
            label="tab:model-audit")
