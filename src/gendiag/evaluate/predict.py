"""p(malicious) for every message: the label words' logits at the answer position, one forward
pass per length-sorted batch (no `generate()`).

Fine-tuned models are evaluated as they were trained: the 4-bit base with its LoRA adapter (fticl
models with their training demonstrations in front of each prompt, head models through their
classification head). The zero-shot baseline is the same 4-bit base without an adapter.
Chain-of-thought models write first: `predict_cot` generates the rationale greedily, and the label
is read right after the answer cue the model writes (`gendiag.finetune.rationales.parse_cot_label`);
an output without a readable label is scored as an error, never as a class.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from gendiag.finetune.paradigms import cot_prompt
from gendiag.finetune.rationales import parse_cot_label
from gendiag.models.inputs import encode_prompts, iter_batches, scored_log_odds
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
    classifier: bool = False,
) -> torch.nn.Module:
    model = load_causal_lm(base_dir, family, quantization, device, dtype, classifier=classifier)
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
    context: list[int] | tuple[int, ...] = (),
    classifier: bool = False,
) -> np.ndarray:
    """log p(malicious) - log p(legitimate) per message: over the two label words at the answer
    position, after `context` (demonstrations) when given; or the head's two logits (`classifier`)."""
    label_ids = prompt.label_token_ids(tokenizer)
    encoded = encode_prompts(texts, tokenizer, prompt, max_length, context=context)
    scores = np.empty(len(encoded), dtype=np.float64)
    for index, batch in _batches_with_progress(encoded, batch_size, tokenizer.pad_token_id, "predict", progress):
        scores[index] = scored_log_odds(model, batch, label_ids, classifier).cpu().numpy()
    return scores


def _batches_with_progress(encoded, batch_size: int, pad_id: int, desc: str, progress: bool):
    """`iter_batches` with a progress bar on stderr (every 5 s at most)."""
    n_batches = -(-len(encoded) // batch_size)
    return tqdm(iter_batches(encoded, batch_size, pad_id), total=n_batches, desc=desc, mininterval=5,
                file=sys.stderr, disable=not progress)


@torch.no_grad()
def predict_cot(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    prompt: PromptFormat,
    max_length: int,
    batch_size: int,
    answer_cue: str,
    max_new_tokens: int,
    progress: bool = True,
) -> pd.DataFrame:
    """Greedy chain-of-thought generation, then the label read after the answer cue the model writes.

    A row stops one token after it completes the answer cue (the label word's position) or at the
    end-of-sequence token. Returns, per message: `generated` (the continuation), `parsed` (0, 1 or
    None when no label can be read) and `log_odds` over the two label words at the position after
    the last answer cue (NaN without one). With the label word one token, greedy decoding makes
    the parsed label and the sign of `log_odds` agree.
    """
    label_ids = prompt.label_token_ids(tokenizer)
    cue = tokenizer(answer_cue, add_special_tokens=False)["input_ids"]
    encoded = encode_prompts(texts, tokenizer, cot_prompt(prompt, answer_cue), max_length)
    device = next(model.parameters()).device
    generated: list[list[int]] = [[] for _ in texts]
    log_odds = np.full(len(texts), np.nan)
    for index, batch in _batches_with_progress(encoded, batch_size, tokenizer.pad_token_id, "generate", progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch, logits_to_keep=1, use_cache=True)
        mask, positions = batch["attention_mask"], batch["position_ids"][:, -1:]
        active = torch.ones(len(index), dtype=torch.bool, device=device)
        after_cue = torch.zeros(len(index), dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1, :].float()
            for row in torch.nonzero(after_cue & active).flatten().tolist():
                log_odds[index[row]] = float(logits[row, label_ids[1]] - logits[row, label_ids[0]])
            token = logits.argmax(-1)
            for row in torch.nonzero(active).flatten().tolist():
                generated[index[row]].append(int(token[row]))
            finished = after_cue | (token == tokenizer.eos_token_id)
            active &= ~finished
            after_cue = torch.tensor([generated[i][-len(cue):] == cue for i in index], device=device) & active
            if not bool(active.any()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions + 1
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                        past_key_values=out.past_key_values, use_cache=True)
    texts_out = tokenizer.batch_decode(generated, skip_special_tokens=True)
    parsed = [parse_cot_label(text, prompt.label_words, answer_cue) for text in texts_out]
    return pd.DataFrame({"generated": texts_out, "parsed": parsed, "log_odds": log_odds})


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


def cot_prediction_table(testset: pd.DataFrame, cot: pd.DataFrame) -> pd.DataFrame:
    """A CoT model's prediction file: the parsed label is the prediction; unreadable outputs are errors.

    An unparseable row gets the opposite of its true label as `pred` and as `p_malicious` (0 or 1),
    so every metric, AUROC included, counts it as a confident mistake; `parsed` says which rows
    these are and `generated` holds what the model wrote.
    """
    labels = testset["label"].astype(int).to_numpy()
    readable = cot["parsed"].notna().to_numpy()
    pred = np.where(readable, cot["parsed"].fillna(-1).astype(int).to_numpy(), 1 - labels)
    log_odds = cot["log_odds"].to_numpy(dtype=float)
    scored = readable & np.isfinite(log_odds)  # a label read without a score keeps the parsed label's p
    p = np.where(scored, 1.0 / (1.0 + np.exp(-np.nan_to_num(log_odds))), pred.astype(float))
    return pd.DataFrame(
        {
            "uid": testset["uid"].to_numpy(),
            "label": labels,
            "log_odds": log_odds,
            "p_malicious": p,
            "pred": pred,
            "parsed": readable,
            "generated": cot["generated"].to_numpy(),
        }
    )


def adapter_demonstrations(adapter_dir: str | Path | None, tokenizer, prompt: PromptFormat) -> list[int]:
    """The demonstration tokens an fticl adapter was trained with (none for other adapters)."""
    from gendiag.finetune.paradigms import encode_demonstrations
    from gendiag.finetune.qlora import DEMONSTRATIONS_FILE

    path = Path(adapter_dir) / DEMONSTRATIONS_FILE if adapter_dir else None
    if path is None or not path.exists():
        return []
    saved = json.loads(path.read_text())
    return encode_demonstrations(pd.DataFrame(saved["demonstrations"]), tokenizer, prompt,
                                 int(saved["max_message_tokens"]))
