"""Prompt encoding, length-grouped left-padded batches and the answer-position forward pass.

Shared by fine-tuning, prediction and analysis, so that every stage sees exactly the same tokens.
With left padding the answer position is the last one for every row; positions are computed from
the attention mask so a padded row gives the same logits as the same row alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from gendiag.prompts import PromptFormat


def prompt_parts(tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat) -> tuple[list[int], list[int], list[int]]:
    """Token ids of the special tokens, the prompt before the message and the prompt after it.

    The prompt is taken as this tokenizer's model reads it (inside its chat template when that
    applies), so every stage that encodes through here sees the same chat markup.
    """
    prompt = prompt.for_tokenizer(tokenizer)
    return (tokenizer("", add_special_tokens=True)["input_ids"],
            tokenizer(prompt.prefix, add_special_tokens=False)["input_ids"],
            tokenizer(prompt.suffix, add_special_tokens=False)["input_ids"])


def message_budget(tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat, max_length: int) -> int:
    """How many of a message's tokens fit in a prompt of `max_length` tokens."""
    budget = max_length - sum(len(part) for part in prompt_parts(tokenizer, prompt))
    if budget < 8:
        raise ValueError(f"max_length {max_length} leaves {budget} tokens for the message; raise it")
    return budget


def encode_prompts(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    max_length: int,
    context: Sequence[int] = (),
) -> list[list[int]]:
    """Token ids of each prompt; long messages are cut so the question at the end always fits.

    `context` (in-context demonstrations) goes between the special tokens and the prompt; it does
    not count against `max_length`, so a message is cut the same with or without demonstrations.
    """
    special, prefix, suffix = prompt_parts(tokenizer, prompt)
    budget = message_budget(tokenizer, prompt, max_length)
    bodies = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [special + list(context) + prefix + body[:budget] + suffix for body in bodies]


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Batches of indices of similar length (less padding); shuffled batch order when rng is given.

    Without rng the batches follow length order (for inference); with it, indices are shuffled,
    sorted by length within windows of 50 batches, and the batches themselves are shuffled.
    """
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    chunks = np.array_split(order, max(1, len(order) // window))
    grouped = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")] for chunk in chunks])
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate_left(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad sequences into input_ids, attention_mask and mask-aware position_ids."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, width - len(seq) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def iter_batches(
    encoded: Sequence[Sequence[int]], batch_size: int, pad_id: int
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Length-sorted inference batches with the row indices they hold."""
    for index in length_grouped_batches([len(s) for s in encoded], batch_size):
        yield index, collate_left([encoded[i] for i in index], pad_id)


def answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Full-vocabulary logits at the answer position (the last one), shape (batch, vocab).

    Only the last position goes through the LM head, which for 128K-256K vocabularies is most of
    the memory a full-sequence forward would spend on logits.
    """
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in batch.items()}, logits_to_keep=1, use_cache=False)
    return out.logits[:, -1, :].float()


def label_log_odds(logits: torch.Tensor, label_ids: tuple[int, int]) -> torch.Tensor:
    """log p(malicious) - log p(legitimate), restricted to the two label words."""
    return logits[:, label_ids[1]] - logits[:, label_ids[0]]


def scored_log_odds(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], label_ids: tuple[int, int], classifier: bool = False
) -> torch.Tensor:
    """log p(malicious) - log p(legitimate) of each row: the two label words at the answer position,
    or the two logits of a sequence-classification head (`classifier`)."""
    if not classifier:
        return label_log_odds(answer_logits(model, batch), label_ids)
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits.float()
    return logits[:, 1] - logits[:, 0]
