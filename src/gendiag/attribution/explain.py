"""SHAP token attributions of the label log-odds, with character offsets into the message.

The explained function is the study's own prediction: log p(malicious) − log p(legitimate) at the
answer position of the classification prompt, one forward pass per batch of masked messages
(`gendiag.models.inputs`, the code prediction uses, on CPU or CUDA alike). shap's Partition
explainer computes Owen values over the hierarchy its Text masker builds from the model's
tokenizer, so for each message the attributions add up exactly: sum + base value = f(x).

Two details keep f(x) equal to the model's real prediction:

* shap's Text masker collapses every run of whitespace into one space, which turns the e-mail's
  line structure (headers, paragraphs) into text the model never saw; `LayoutText` keeps it.
* the prompt cuts long messages to the token budget, so only the part the model reads is
  explained (`visible_text`) and no evaluations are spent on tokens that cannot matter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shap
import torch
from transformers import PreTrainedTokenizerBase

from gendiag.evaluate.predict import predict_log_odds
from gendiag.models.inputs import message_budget
from gendiag.prompts import PromptFormat

log = logging.getLogger("gendiag.attribution")

CATEGORIES = ("tp", "fp", "fn", "tn")
TOKEN_COLUMNS = ("uid", "position", "token", "start", "end", "shap", "special")


class LayoutText(shap.maskers.Text):
    """shap's Text masker, but a masked message keeps its line breaks and its unmasked form is the
    message itself (shap's own joins everything with single spaces)."""

    def __call__(self, mask, s):
        if self.output_type != "string":
            return super().__call__(mask, s)
        mask = self._standardize_mask(mask, s).copy()
        self._update_s_cache(s)
        if self.keep_prefix > 0:
            mask[: self.keep_prefix] = True
        if self.keep_suffix > 0:
            mask[-self.keep_suffix :] = True
        parts = []
        in_masked_run = False
        for segment, keep in zip(self._segments_s, mask, strict=True):
            core = segment.strip()
            if keep or not core:
                parts.append(segment)
                in_masked_run = False
                continue
            lead = segment[: len(segment) - len(segment.lstrip())]
            trail = segment[len(segment.rstrip()) :]
            if self.collapse_mask_token and in_masked_run:
                parts.append("\n" * segment.count("\n"))
            else:
                parts.append((lead or " ") + self.mask_token + trail)
            in_masked_run = True
        return (np.array(["".join(parts)]),)


def token_segments(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[str], np.ndarray, list[int]]:
    """Each token's piece of `text` (with the whitespace up to the next token, as shap's masker
    splits it), its (start, end) character offsets and its token id."""
    encoded = tokenizer(text, return_offsets_mapping=True)
    offsets = [(0, 0) if o is None else tuple(o) for o in encoded["offset_mapping"]]
    spans = np.zeros((len(offsets), 2), dtype=np.int64)
    for i, (start, end) in enumerate(offsets):
        spans[i] = (start, max(end, offsets[i + 1][0]) if i + 1 < len(offsets) else end)
    return [text[s:e] for s, e in spans], spans, list(encoded["input_ids"])


def visible_text(text: str, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat, max_length: int) -> str:
    """The part of a message the prompt keeps (`encode_prompts` cuts the message to a token budget)."""
    budget = message_budget(tokenizer, prompt, max_length)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(encoded["input_ids"]) <= budget:
        return text
    return text[: encoded["offset_mapping"][budget - 1][1]]


@dataclass
class LogOddsFunction:
    """f(list of messages) -> log-odds of "malicious", batched; counts what it evaluates.

    `batch_size` is the model's batch: shap hands over many masked messages per call, and these
    are run in length-sorted batches of this size (on a CPU small batches pad less; on a GPU larger
    ones fill it). Within one message's explanation different masks often give the same text (a
    masked run collapses to one mask token; masking only whitespace changes nothing), so each
    distinct text is run once (`forget` clears the memory between messages).
    """

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    prompt: PromptFormat
    max_length: int
    batch_size: int
    rows: int = field(default=0, init=False)
    evaluated: int = field(default=0, init=False)
    _memory: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __call__(self, texts: Sequence[str] | np.ndarray) -> np.ndarray:
        texts = [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]
        self.rows += len(texts)
        new = list(dict.fromkeys(t for t in texts if t not in self._memory))
        if new:
            scores = predict_log_odds(self.model, self.tokenizer, new, self.prompt, self.max_length,
                                      self.batch_size, progress=False)
            self._memory.update(zip(new, scores.tolist(), strict=True))
            self.evaluated += len(new)
        return np.array([self._memory[t] for t in texts], dtype=np.float64)

    def forget(self) -> None:
        self._memory.clear()


def confusion_category(label: int, pred: int) -> str:
    return {(1, 1): "tp", (0, 1): "fp", (1, 0): "fn", (0, 0): "tn"}[(int(label), int(pred))]


def stratified_sample(predictions: pd.DataFrame, counts: dict[str, int], seed: int) -> pd.DataFrame:
    """Up to `counts[c]` predictions of each confusion category c (tp, fp, fn, tn), drawn at random.

    A category with fewer messages than asked gives all it has; the `category` column records it.
    """
    unknown = set(counts) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown sample categories {sorted(unknown)}; use {list(CATEGORIES)}")
    frame = predictions.assign(category=[confusion_category(lab, p) for lab, p in
                                         zip(predictions["label"], predictions["pred"], strict=True)])
    rng = np.random.default_rng(seed)
    chosen = []
    for category in CATEGORIES:
        rows = np.flatnonzero(frame["category"].to_numpy() == category)
        take = min(int(counts.get(category, 0)), len(rows))
        chosen.extend(np.sort(rng.choice(rows, size=take, replace=False)).tolist())
    return frame.iloc[chosen].reset_index(drop=True)


def explain_messages(
    function: Callable[[Sequence[str]], np.ndarray],
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    uids: Sequence[str],
    *,
    max_evals: int,
    batch_size: int,
    progress_every: int = 10,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Partition SHAP values of `function` (messages -> log-odds) for every message.

    Returns the token table (one row per token: uid, position, token, start, end, shap, special)
    and the message table (uid, base_value, f_x, additivity_error, n_tokens).
    """
    masker = LayoutText(tokenizer)
    explainer = shap.explainers.Partition(function, masker)
    special_ids = set(tokenizer.all_special_ids)
    token_frames, messages = [], []
    started = time.monotonic()
    for n, (uid, text) in enumerate(zip(uids, texts, strict=True), start=1):
        segments, spans, ids = token_segments(tokenizer, text)
        if len(segments) - masker.keep_prefix - masker.keep_suffix < 2:
            # shap's partition tree needs two tokens to split; one token's value is f(x) - f(empty).
            raise ValueError(f"message {uid} has fewer than 2 tokens; SHAP cannot partition it")
        if hasattr(function, "forget"):
            function.forget()
        explanation = explainer([text], max_evals=max_evals, batch_size=batch_size, silent=True)
        values = np.asarray(explanation.values[0], dtype=np.float64).reshape(-1)
        base_value = float(np.asarray(explanation.base_values[0]).reshape(-1)[0])
        if len(values) != len(segments):
            raise RuntimeError(f"message {uid}: shap returned {len(values)} values for {len(segments)} tokens")
        f_x = float(function([text])[0])
        token_frames.append(pd.DataFrame({
            "uid": uid, "position": np.arange(len(values)), "token": segments,
            "start": spans[:, 0], "end": spans[:, 1], "shap": values,
            "special": [i in special_ids for i in ids],
        }))
        messages.append({"uid": uid, "base_value": base_value, "f_x": f_x,
                         "additivity_error": abs(values.sum() + base_value - f_x), "n_tokens": len(values)})
        if n % progress_every == 0 or n == len(texts):
            elapsed = time.monotonic() - started
            log.info("explained %d/%d messages (%.2f s/message%s)", n, len(texts), elapsed / n,
                     f", {function.evaluated} of {function.rows} masked texts distinct"
                     if hasattr(function, "evaluated") else "")
    tokens = pd.concat(token_frames, ignore_index=True) if token_frames else pd.DataFrame(
        columns=list(TOKEN_COLUMNS))
    return tokens, pd.DataFrame(messages)


def feature_mask(tokens: pd.DataFrame) -> np.ndarray:
    """Tokens that count as features of a message: not special, not only whitespace."""
    return (~tokens["special"].to_numpy(bool)) & (tokens["token"].str.strip().str.len().to_numpy() > 0)

