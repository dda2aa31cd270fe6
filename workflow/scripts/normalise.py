"""Turn each ingested message into the text a model sees, as the config's normalise options say."""

import pandas as pd

from gendiag.data.normalise import normalise_configured
from gendiag.io import setup_logging, write_json, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])

frame = pd.read_parquet(smk.input.corpus)
kept, emptied, report = normalise_configured(frame, dict(smk.params.spec), dict(smk.params.options))
log.info("%s: %d in, %d kept, %d empty after normalisation, %d texts changed; per source %s",
         smk.wildcards.corpus, report["rows_in"], report["rows_kept"], report["rows_emptied"],
         report["text_changed"], {k: v.get("changed") for k, v in report.get("sources", {}).items()})
write_parquet(kept, smk.output.corpus)
write_parquet(emptied, smk.output.quarantine)
write_json(report, smk.output.report)
