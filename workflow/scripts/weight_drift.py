"""Weight drift from the base: mean |ΔW| of each fine-tuned model's merged LoRA update, per layer."""

import pandas as pd

from gendiag.finetune.drift import adapter_drift, drift_by_layer
from gendiag.io import setup_logging
from gendiag.report.drift_figures import plot_weight_drift
from gendiag.report.tables import write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
frames = []
for (arch, recipe, paradigm, seed), adapter in zip(smk.params.runs, smk.input.adapters, strict=True):
    by_module = adapter_drift(adapter).assign(arch=arch, recipe=recipe, paradigm=paradigm, seed=int(seed))
    frames.append(drift_by_layer(by_module))
table = pd.concat(frames, ignore_index=True)
write_table(table, smk.output.table[0].removesuffix(".csv"), float_format="{:.4g}",
            caption="Weight drift from the base: mean absolute entry of the merged LoRA update, per layer.",
            label="tab:weight-drift")
plot_weight_drift(table, smk.output.figure[0], smk.output.figure[1])
log.info("\n%s", table.to_string())
