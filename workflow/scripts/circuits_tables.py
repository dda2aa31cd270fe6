"""The circuits tables: one summary row per fine-tuned model, and the pairs kept and dropped."""

import pandas as pd

from gendiag.circuits.summary import pair_status_table, read_run_tables, summarise_model, summary_table
from gendiag.io import setup_logging
from gendiag.report.tables import write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
runs = [tuple(run) for run in smk.params.runs]
keys = ("arch", "recipe", "paradigm", "seed")

rows = []
for i, run in enumerate(runs):
    tables = {name: pd.read_parquet(smk.input[name][i]) for name in ("pairs", "lens", "resid", "heads")}
    rows.append(summarise_model(dict(zip(keys, run, strict=True)), tables, pd.read_parquet(smk.input.agreement[i]),
                                int(smk.params.top_heads)))
summary = summary_table(rows)
log.info("circuits summary:\n%s", summary.to_string(index=False))
status = pair_status_table(read_run_tables(smk.input.pairs, runs), read_run_tables(smk.input.drops, runs))
write_table(summary, smk.output.summary[0].removesuffix(".csv"),
            caption="Circuit analysis per fine-tuned model", label="tab:circuits-summary")
write_table(status, smk.output.pairs[0].removesuffix(".csv"),
            caption="Minimal pairs analysed and dropped, by reason", label="tab:circuits-pairs")
