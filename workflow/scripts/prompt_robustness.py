"""Prompt robustness: F1 with the second template and with k-shot prompts against the main prompt."""

import pandas as pd

from gendiag.evaluate.metrics import prediction_files
from gendiag.evaluate.robustness import robustness_table, variant_files
from gendiag.io import setup_logging
from gendiag.report.figures import plot_prompt_robustness
from gendiag.report.tables import write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
settings = dict(smk.params.significance)
columns = ["uid", "label", "p_malicious"]
main = pd.concat([
    pd.read_parquet(path, columns=columns).assign(arch=a, recipe=r, paradigm=p, seed=s, testset=t)
    for a, r, p, s, t, path in prediction_files(smk.params.runs, smk.params.testsets, smk.input.predictions)
], ignore_index=True)
variants = pd.concat([
    pd.read_parquet(path, columns=columns).assign(arch=a, recipe=r, paradigm=p, seed=s, variant=v, testset=t)
    for a, r, p, s, v, t, path in variant_files(smk.params.runs, smk.params.variants, smk.params.testsets,
                                                  smk.input.variants)
], ignore_index=True)
table = robustness_table(main, variants, int(settings["resamples"]), int(settings["seed"]),
                         float(settings["confidence"]), float(smk.params.threshold))
write_table(table, smk.output.table[0].removesuffix(".csv"),
            caption="Prompt robustness: F1 with each prompt variant minus F1 with the main prompt, paired-bootstrap"
                    " CI over messages.", label="tab:prompt_robustness")
plot_prompt_robustness(table, smk.output.figure[0].removesuffix(".pdf"))
log.info("\n%s", table[table["testset"] == "all test sets"].to_string())
