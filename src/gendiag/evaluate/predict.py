"""p(malicious) for every message: the label words' logits at the answer position, one forward
pass per length-sorted batch (no `generate()`).

Fine-tuned models are evaluated as they were trained: the 4-bit base with its LoRA adapter.
The zero-shot baseline is the same 4-bit base without an adapter.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from gendiag.models.inputs import answer_logits, encode_prompts, iter_batches, label_log_odds
from gendiag.models.loading import load_causal_lm
from gendiag.prompts import PromptFormat

log = logging.getLogger("gendiag.evaluate")


def load_for_prediction(
    base_dir: str | Path,
    family: str,
    adapter_dir: str | Path | None,
    quantization: dict,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.nn.Module:
    model = load_causal_lm(base_dir, family, quantization, device, dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval()


@torch.no_grad()
def predict_log_odds(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    prompt: PromptFormat,
    max_length: int,
    batch_size: int,
    progress: bool = True,
) -> np.ndarray:
    """log p(malicious) - log p(legitimate) over the two label words, per message."""
    label_ids = prompt.label_token_ids(tokenizer)
    encoded = encode_prompts(texts, tokenizer, prompt, max_length)
    scores = np.empty(len(encoded), dtype=np.float64)
    n_batches = -(-len(encoded) // batch_size)
    for index, batch in tqdm(iter_batches(encoded, batch_size, tokenizer.pad_token_id), total=n_batches,
                             desc="predict", mininterval=5, file=sys.stderr, disable=not progress):
        scores[index] = label_log_odds(answer_logits(model, batch), label_ids).cpu().numpy()
    return scores


def prediction_table(testset: pd.DataFrame, log_odds: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """The prediction file's rows: uid, label, log_odds, p_malicious, pred."""
    p = 1.0 / (1.0 + np.exp(-log_odds))
    return pd.DataFrame(
        {
            "uid": testset["uid"].to_numpy(),
            "label": testset["label"].astype(int).to_numpy(),
            "log_odds": log_odds,
            "p_malicious": p,
            "pred": (p >= threshold).astype(int),
        }
    )
