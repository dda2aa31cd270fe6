"""The `teacher` rationale source: a local instruct model writes each training message's rationale.

The teacher sees the message and its gold label and is asked to cite the evidence for that label
(rationalisation, as in "Distilling step-by-step", Hsieh et al. 2023): the student learns to write
such evidence and then the label. What the teacher writes is cleaned into a CoT rationale:

* only its first line is kept (instruct models like to add a second paragraph or a new question);
* label-like words and the answer cue are scrubbed, because the label must follow the rationale
  after the answer cue, never appear in it (a teacher told the label tends to repeat it);
* an output with nothing left is replaced by the message's cue rationale, and the table says so
  in `origin`, so a weak teacher shows up in the rationales file rather than in silence.

Generation is greedy (the same rationales on every run) and runs once per recipe: the table is a
rule output (`results/rationales/{recipe}.parquet`) that training reads, so changing the student's
settings never re-runs the teacher.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from gendiag.finetune.rationales import (
    DEFAULT_ANSWER_CUE,
    RATIONALE_PREFIX,
    cue_rationale,
    loose_pattern,
    scrub_label_words,
)
from gendiag.models.inputs import iter_batches
from gendiag.models.loading import load_causal_lm, load_tokenizer

log = logging.getLogger("gendiag.finetune")

DEFAULT_INSTRUCTION = (
    "Email:\n{text}\n\nThis email is {label}. In one sentence, point to the evidence in the email that"
    " shows it (links, urgency, requests for credentials or money, the sender), without naming the label."
)
"""The teacher's request; `{text}` is the message and `{label}` the name of its gold label."""
EVIDENCE_PREFIX = "\nEvidence:"
"""Appended to the request for base models without a chat template, so they continue with evidence."""
ORIGIN_TEACHER = "teacher"
ORIGIN_FALLBACK = "cues (the teacher wrote no usable rationale)"


@dataclass(frozen=True)
class TeacherSettings:
    """How the teacher is prompted and how much it may write (config `training.cot.teacher`)."""

    instruction: str = DEFAULT_INSTRUCTION
    max_new_tokens: int = 48
    max_text_tokens: int = 192
    batch_size: int = 16

    def __post_init__(self) -> None:
        for field in ("{text}", "{label}"):
            if field not in self.instruction:
                raise ValueError(
                    f"training.cot.teacher.instruction must contain {field} (got {self.instruction!r});"
                    " the teacher needs the message and its label"
                )
        for name in ("max_new_tokens", "max_text_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"training.cot.teacher.{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_config(cls, teacher: dict) -> TeacherSettings:
        return cls(**{k: teacher[k] for k in ("instruction", "max_new_tokens", "max_text_tokens", "batch_size")
                      if teacher.get(k) is not None})


def teacher_prompt(text: str, label: str, tokenizer, settings: TeacherSettings) -> list[int]:
    """The token ids of the teacher's request for one message, its text cut to `max_text_tokens`.

    An instruct tokenizer's chat template frames the request as a user turn followed by the
    assistant's turn; a base model gets the plain request ending in :data:`EVIDENCE_PREFIX`.
    """
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"][: settings.max_text_tokens]
    request = settings.instruction.format(text=tokenizer.decode(text_ids), label=label)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": request}], add_generation_prompt=True,
                                            tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return tokenizer(request + EVIDENCE_PREFIX)["input_ids"]


def clean_teacher_output(generated: str, forbidden: Sequence[str] = (), answer_cue: str = DEFAULT_ANSWER_CUE
                         ) -> str | None:
    """A CoT rationale (``" Reasoning: ..."``) from what the teacher wrote, or None if nothing is left.

    Keeps the first non-empty line, drops a leading "Evidence:"/"Reasoning:" the teacher may
    repeat, and scrubs label-like words, `forbidden` words and the answer cue.
    """
    line = next((part.strip() for part in generated.splitlines() if part.strip()), "")
    line = re.sub(r"^(?:evidence|reasoning)\s*:\s*", "", line, flags=re.IGNORECASE)
    if answer_cue.strip():
        line = re.sub(loose_pattern(answer_cue.strip()), "...", line, flags=re.IGNORECASE)
    line = " ".join(scrub_label_words(line, forbidden).split())
    if not re.search(r"[^\W_]", line.replace("...", "")):
        return None
    return f"{RATIONALE_PREFIX} {line}"


class FirstLineWritten(StoppingCriteria):
    """Stops a row once it has written a non-blank line and the newline after it (leading blank
    lines do not count: base models often start their answer on a new line)."""

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        written = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([bool(re.search(r"\S[^\n]*\n", text)) for text in written], device=input_ids.device)


@torch.no_grad()
def generate_greedy(model: torch.nn.Module, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    batch_size: int, progress: bool = True) -> list[str]:
    """Greedy continuations of token-id prompts, in length-sorted left-padded batches, stopping
    each row at its end-of-sequence token or at the end of its first non-blank line."""
    device = next(model.parameters()).device
    texts: list[str] = [""] * len(prompts)
    pad = tokenizer.pad_token_id
    batches = iter_batches(prompts, batch_size, pad)
    n_batches = -(-len(prompts) // batch_size)
    for index, batch in tqdm(batches, total=n_batches, desc="teacher", mininterval=5, file=sys.stderr,
                             disable=not progress):
        width = batch["input_ids"].shape[1]
        out = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                             stopping_criteria=StoppingCriteriaList([FirstLineWritten(tokenizer, width)]))
        for row, text in zip(index, tokenizer.batch_decode(out[:, width:], skip_special_tokens=True), strict=True):
            texts[row] = text
    return texts


def teacher_rationales(
    messages: pd.DataFrame,
    model: torch.nn.Module,
    tokenizer,
    label_names: Sequence[str],
    settings: TeacherSettings,
    max_cues: int = 2,
    forbidden: Sequence[str] = (),
    answer_cue: str = DEFAULT_ANSWER_CUE,
    progress: bool = True,
) -> pd.DataFrame:
    """One teacher rationale per message: columns uid, rationale, origin and generated (the raw
    output). `label_names[label]` names each class in the request (e.g. legitimate, phishing)."""
    for column in ("uid", "text", "label"):
        if column not in messages.columns:
            raise ValueError(f"teacher rationales need the recipe's messages; column '{column}' is missing")
    labels = messages["label"].astype(int).tolist()
    unknown = sorted({label for label in labels if not 0 <= label < len(label_names)})
    if unknown:
        raise ValueError(f"labels {unknown} have no name among {list(label_names)}")
    prompts = [teacher_prompt(text, label_names[label], tokenizer, settings)
               for text, label in zip(messages["text"], labels, strict=True)]
    generated = generate_greedy(model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size, progress)
    rationales, origins = [], []
    for text, output in zip(messages["text"], generated, strict=True):
        rationale = clean_teacher_output(output, forbidden, answer_cue)
        rationales.append(rationale if rationale is not None else cue_rationale(text, max_cues, forbidden))
        origins.append(ORIGIN_TEACHER if rationale is not None else ORIGIN_FALLBACK)
    table = pd.DataFrame({"uid": messages["uid"].to_numpy(), "rationale": rationales, "origin": origins,
                          "generated": generated})
    fallback = int((table["origin"] == ORIGIN_FALLBACK).sum())
    if fallback:
        log.warning("the teacher wrote no usable rationale for %d of %d messages; they use cue rationales"
                    " (origin column)", fallback, len(table))
    return table


def rationales_from_teacher(
    messages: pd.DataFrame,
    base_dir: str | Path,
    family: str,
    teacher: dict,
    device: torch.device,
    dtype: torch.dtype,
    label_words: Sequence[str],
    max_cues: int = 2,
    answer_cue: str = DEFAULT_ANSWER_CUE,
) -> pd.DataFrame:
    """:func:`teacher_rationales` from the teacher saved in `base_dir` (config `training.cot.teacher`);
    `label_words` are the prompt's (legitimate, malicious) words, which also name the classes."""
    tokenizer = load_tokenizer(base_dir)
    model = load_causal_lm(base_dir, family, {"load_in_4bit": bool(teacher.get("load_in_4bit"))}, device, dtype)
    names = [word.strip() for word in label_words]
    log.info("teacher %s (%s) writes rationales for %d messages", base_dir, family, len(messages))
    return teacher_rationales(messages, model.eval(), tokenizer, names, TeacherSettings.from_config(teacher),
                              max_cues, label_words, answer_cue)
