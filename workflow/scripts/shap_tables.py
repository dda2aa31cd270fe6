"""The SHAP tables: top tokens per model and class, model comparisons, faithfulness.

On corpora without planted cues (every real corpus) the cue columns have no ground truth: NaN in
the CSV, "n/a (no planted cues)" in the Markdown and LaTeX.
"""

import pandas as pd

from gendiag.attribution.aggregate import (
    JOB_KEYS,
    comparisons,
    faithfulness_table,
    no_planted_cues,
    read_job_tables,
    top_tokens,
    with_planted_cues,
)
from gendiag.io import setup_logging
from gendiag.report.tables import write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
settings = dict(smk.params.shap)

tokens = read_job_tables(smk.input.tokens, smk.params.jobs)
messages = with_planted_cues(read_job_tables(smk.input.messages, smk.params.jobs), tokens)
tokens = tokens[tokens["feature"]].merge(messages[JOB_KEYS + ["uid", "label"]], on=JOB_KEYS + ["uid"])
sources = pd.concat([pd.read_parquet(path).assign(arch=arch) for path, arch in
                     zip(smk.input.sources, smk.params.source_archs, strict=True)], ignore_index=True)
if not messages["planted_cues"].any():
    log.info("no explained message has planted cues: the cue columns have no ground truth (n/a)")

top = top_tokens(tokens, sources, top_n=int(settings["top_tokens"]), min_count=int(settings["min_token_count"]),
                 artefact_threshold=float(settings["artefact_threshold"]))
compared = comparisons(tokens, top)
faithful = faithfulness_table(messages, int(settings["cue_k"]))
log.info("faithfulness:\n%s", faithful.to_string(index=False))
write_table(top, smk.output.top[0].removesuffix(".csv"), caption="Top SHAP tokens per model and class",
            label="tab:shap-top-tokens", no_ground_truth=no_planted_cues(top))
write_table(compared, smk.output.comparison[0].removesuffix(".csv"),
            caption="Agreement of SHAP explanations across architectures and recipes", label="tab:shap-comparison",
            no_ground_truth=no_planted_cues(compared))
write_table(faithful, smk.output.faithfulness[0].removesuffix(".csv"),
            caption="Faithfulness of SHAP attributions against random attributions", label="tab:shap-faithfulness",
            no_ground_truth=no_planted_cues(faithful))
