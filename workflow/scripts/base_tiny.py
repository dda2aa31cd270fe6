"""Train a tokenizer and pretrain a tiny model of one family on the corpora's training text."""

import pandas as pd
import torch

from gendiag.io import atomic_path, setup_logging, write_csv
from gendiag.models.base import build_tiny_base, pretraining_texts
from gendiag.prompts import PromptFormat

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
torch.set_num_threads(smk.threads)
model, tiny, prompt = dict(smk.params.model), dict(smk.params.tiny_base), PromptFormat.from_config(smk.params.prompt)

# Pretraining sees the train and validation text of every corpus, never a test message.
frames = [pd.read_parquet(path, columns=["text", "split"]) for path in smk.input.splits]
messages = pd.concat(frames).query("split != 'test'")["text"].tolist()
texts = pretraining_texts(messages, prompt, float(tiny["format_share"]), seed=int(model["seed"]))
log.info("%s: pretraining on %d texts (%d messages)", smk.wildcards.arch, len(texts), len(messages))
with atomic_path(smk.output.base) as tmp:
    history = build_tiny_base(
        model["family"], dict(model["shape"]), texts, prompt, int(tiny["vocab_size"]),
        dict(tiny["pretrain"]), seed=int(model["seed"]), out_dir=tmp,
    )
write_csv(history, smk.output.log_csv)
