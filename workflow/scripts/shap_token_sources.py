"""Per token of one architecture's tokenizer: how much it separates corpora rather than labels."""

import json
from pathlib import Path

import pandas as pd

from gendiag.attribution.aggregate import probe_tokens_of, source_scores
from gendiag.io import setup_logging, write_parquet
from gendiag.models.loading import load_tokenizer

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])

splits = pd.concat([pd.read_parquet(p, columns=["text", "corpus", "label", "split"]) for p in smk.input.splits],
                   ignore_index=True)
train = splits[splits["split"] == "train"]
probe = probe_tokens_of(json.loads(Path(smk.input.audit).read_text()))
scores = source_scores(train, load_tokenizer(smk.input.base), probe)
log.info("%d tokens from %d training messages of %d corpora; %d probe tokens; highest artefact scores:\n%s",
         len(scores), len(train), train["corpus"].nunique(), len(probe),
         scores.nlargest(15, "artefact_score").to_string(index=False))
write_parquet(scores, smk.output.scores)
