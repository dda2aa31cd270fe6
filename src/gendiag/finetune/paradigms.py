"""Training paradigms as token sequences: what the model reads, and which tokens carry the loss.

* ``standard``: the prompt, then the label word; the loss is on the label word only.
* ``fticl`` (fine-tuning with in-context learning, arXiv 2403.09162): the same, after k fixed
  demonstrations (prompt and answer of k training messages, each followed by a blank line). The
  demonstrations, their answers included, are context: only the final label word carries loss.
* ``cot`` (chain of thought): the prompt without its answer cue, then a rationale, the answer cue
  and the label word (``" Reasoning: ...; ... Answer: phishing"``); every target token carries loss.
* ``head``: the prompt, read by a sequence-classification head (two classes); the loss is the
  cross-entropy of the head's logits.

An :class:`Example` holds the tokens the model reads and its targets, which are predicted at the
last ``len(targets)`` positions, so with left padding every row's loss sits at the end of the batch
and only those positions go through the LM head (``logits_to_keep``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from gendiag.finetune.rationales import DEFAULT_ANSWER_CUE
from gendiag.models.inputs import encode_prompts, prompt_parts
from gendiag.prompts import PromptFormat

ZEROSHOT, STANDARD, COT, FTICL, HEAD = "zeroshot", "standard", "cot", "fticl", "head"
PARADIGMS = (ZEROSHOT, STANDARD, COT, FTICL, HEAD)
TRAINED = (STANDARD, COT, FTICL, HEAD)
DEMO_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Example:
    """What the model reads (`input_ids`) and the targets predicted at its last len(targets) positions.

    For the causal-LM paradigms a target is a token id and `input_ids` ends with every target but
    the last (teacher forcing); for the head, the only target is the class (0 legitimate, 1 malicious).
    """

    input_ids: tuple[int, ...]
    targets: tuple[int, ...]

    @property
    def sequence(self) -> tuple[int, ...]:
        """The whole token sequence of a causal-LM example: what it reads plus its final target."""
        return self.input_ids + self.targets[-1:]

    @property
    def loss_mask(self) -> tuple[bool, ...]:
        """Per token of :attr:`sequence`: True where the token is a target (carries loss)."""
        n = len(self.sequence)
        return tuple(i >= n - len(self.targets) for i in range(n))


def choose_demonstrations(
    pool: pd.DataFrame, k: int, seed: int, source: str = "the demonstration pool"
) -> pd.DataFrame:
    """k demonstrations from `pool` (columns uid, text, label), alternating classes, fixed by `seed`.

    Every class appears once k >= 2 (as in arXiv 2403.09162); the first is a malicious one. The same
    demonstrations serve every prompt (they are not resampled per message).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1 demonstration, got {k}")
    rng = np.random.default_rng(seed)
    by_class = {label: pool.index[pool["label"].astype(int) == label].to_numpy() for label in (1, 0)}
    needed = {1: (k + 1) // 2, 0: k // 2}
    for label, n in needed.items():
        if len(by_class[label]) < n:
            name = "malicious" if label else "legitimate"
            raise ValueError(f"{source} has {len(by_class[label])} {name} messages; {k} demonstrations need {n}")
    picked = {label: rng.permutation(by_class[label])[:n] for label, n in needed.items()}
    order = [picked[1 if i % 2 == 0 else 0][i // 2] for i in range(k)]
    return pool.loc[order, ["uid", "text", "label"]].reset_index(drop=True)


def encode_demonstrations(
    demonstrations: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat, max_message_tokens: int
) -> list[int]:
    """Token ids of the demonstrations: each one's prompt (message cut to `max_message_tokens`),
    its label word and a blank line, as in arXiv 2403.09162 (no end-of-sequence token)."""
    _, prefix, suffix = prompt_parts(tokenizer, prompt)
    label_ids = prompt.label_token_ids(tokenizer)
    separator = tokenizer(DEMO_SEPARATOR, add_special_tokens=False)["input_ids"]
    bodies = tokenizer(demonstrations["text"].tolist(), add_special_tokens=False)["input_ids"]
    context: list[int] = []
    for body, label in zip(bodies, demonstrations["label"].astype(int), strict=True):
        context += prefix + body[:max_message_tokens] + suffix + [label_ids[label]] + separator
    return context


def cot_prompt(prompt: PromptFormat, answer_cue: str = DEFAULT_ANSWER_CUE) -> PromptFormat:
    """The prompt a CoT model reads: the template without its trailing answer cue, which the
    model writes itself after the rationale."""
    template = prompt.template.rstrip()
    if template.endswith(answer_cue.strip()):
        template = template[: -len(answer_cue.strip())].rstrip()
    return prompt.with_template(template)


def label_examples(
    texts: Sequence[str], labels: Sequence[int], tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat,
    max_length: int, context: Sequence[int] = (),
) -> list[Example]:
    """standard (no context) and fticl (demonstration context): the loss is on the label word only."""
    label_ids = prompt.label_token_ids(tokenizer)
    encoded = encode_prompts(texts, tokenizer, prompt, max_length, context=context)
    return [Example(tuple(ids), (label_ids[int(y)],)) for ids, y in zip(encoded, labels, strict=True)]


def head_examples(
    texts: Sequence[str], labels: Sequence[int], tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat,
    max_length: int,
) -> list[Example]:
    """head: the prompt, and the class the head must give it."""
    encoded = encode_prompts(texts, tokenizer, prompt, max_length)
    return [Example(tuple(ids), (int(y),)) for ids, y in zip(encoded, labels, strict=True)]


def cot_examples(
    texts: Sequence[str], labels: Sequence[int], rationales: Sequence[str], tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat, max_length: int, answer_cue: str = DEFAULT_ANSWER_CUE, max_rationale_tokens: int = 96,
) -> list[Example]:
    """cot: the prompt without its answer cue, then rationale, answer cue and label word as targets.

    The three target parts are tokenised apart, so the answer cue is the same tokens in every
    target and prediction can recognise it in what the model writes.
    """
    label_ids = prompt.label_token_ids(tokenizer)
    encoded = encode_prompts(texts, tokenizer, cot_prompt(prompt, answer_cue), max_length)
    cue = tokenizer(answer_cue, add_special_tokens=False)["input_ids"]
    reasons = tokenizer([r.rstrip() for r in rationales], add_special_tokens=False)["input_ids"]
    out = []
    for ids, reason, y in zip(encoded, reasons, labels, strict=True):
        target = tuple(reason[:max_rationale_tokens] + cue + [label_ids[int(y)]])
        out.append(Example(tuple(ids) + target[:-1], target))
    return out


@dataclass(frozen=True)
class ParadigmSpec:
    """A training paradigm and its settings (config `training.fticl` and `training.cot`)."""

    name: str = STANDARD
    demonstrations: int = 2
    demo_max_tokens: int = 48
    demo_seed: int = 0
    answer_cue: str = DEFAULT_ANSWER_CUE
    max_rationale_tokens: int = 96
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        if self.name not in TRAINED:
            raise ValueError(f"paradigm '{self.name}' is not trained; trained paradigms: {list(TRAINED)}")

    @property
    def classifier(self) -> bool:
        return self.name == HEAD

    @classmethod
    def from_config(cls, name: str, training: dict) -> ParadigmSpec:
        fticl, cot = training.get("fticl", {}), training.get("cot", {})
        return cls(
            name=name,
            demonstrations=int(fticl.get("k", cls.demonstrations)),
            demo_max_tokens=int(fticl.get("demo_max_tokens", cls.demo_max_tokens)),
            demo_seed=int(fticl.get("seed", cls.demo_seed)),
            answer_cue=str(cot.get("answer_cue", cls.answer_cue)),
            max_rationale_tokens=int(cot.get("max_rationale_tokens", cls.max_rationale_tokens)),
            max_new_tokens=int(cot.get("max_new_tokens", cls.max_new_tokens)),
        )


def paradigm_examples(
    spec: ParadigmSpec, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat,
    max_length: int, context: Sequence[int] = (), source: str = "the training data",
) -> list[Example]:
    """The examples of `frame` (uid, text, label; cot also needs a `rationale` column) for `spec`."""
    texts, labels = frame["text"].tolist(), frame["label"].astype(int).tolist()
    if spec.name == HEAD:
        return head_examples(texts, labels, tokenizer, prompt, max_length)
    if spec.name == COT:
        if "rationale" not in frame.columns:
            raise ValueError(f"{source}: cot fine-tuning needs a 'rationale' column (the rationales rule's output)")
        return cot_examples(texts, labels, frame["rationale"].tolist(), tokenizer, prompt, max_length,
                            spec.answer_cue, spec.max_rationale_tokens)
    return label_examples(texts, labels, tokenizer, prompt, max_length, context if spec.name == FTICL else ())
