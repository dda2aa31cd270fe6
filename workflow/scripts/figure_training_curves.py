"""Fine-tuning loss per step for every model and recipe."""

from pathlib import Path

import pandas as pd

from gendiag.io import setup_logging
from gendiag.report.figures import plot_training_curves

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
frames = []
for path in smk.input.logs:
    # results/finetune/{arch}/{recipe}/{paradigm}/seed{seed}/train_log.csv
    arch, recipe, paradigm, seed = Path(path).parts[-5:-1]
    frames.append(pd.read_csv(path).assign(arch=arch, recipe=recipe, paradigm=paradigm,
                                           seed=int(seed.removeprefix("seed"))))
plot_training_curves(pd.concat(frames, ignore_index=True), smk.output.pdf.removesuffix(".pdf"))
