"""Minimal pairs: two prompts that differ in one feature and nothing else.

A pair is a *clean* message, which carries a phishing feature, and a *corrupted* one, in which
that feature is replaced by benign text at the same place. Patching asks which activations of the
clean run restore the clean prediction in the corrupted run, so positions must line up: a pair is
kept only when both prompts have the same number of tokens and every token that differs lies in
the edited span. Every candidate that fails a check is kept in the drop table with its reason.

On the synthetic corpora the feature is a planted cue (its span is recorded by the generator) and
the benign text is a phrase the generator planted in a legitimate message of the same test set:
a decoy of the same shape (a real link for a suspicious link, a deadline for urgency, a figure for
money) or a legitimate sender for a look-alike one. On real corpora the pairs come from controlled
edits (`gendiag.circuits.edits`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from gendiag.data.synthetic import cue_spans
from gendiag.models.inputs import encode_prompts, message_budget, prompt_parts
from gendiag.prompts import PromptFormat

# Which benign phrases stand in for a planted cue: decoys of the same shape where the generator
# has one; any benign phrase otherwise.
BENIGN_COUNTERPART = {
    "suspicious_link": ("link",),
    "urgency": ("deadline",),
    "money": ("figure",),
    "suspicious_sender": ("sender",),
}
ANY_BENIGN = ("link", "deadline", "figure")

DROP_COLUMNS = ["testset", "uid", "kind", "category", "reason"]


@dataclass(frozen=True)
class MinimalPair:
    """Two prompts of equal token length that differ only at `edited_positions`."""

    pair_id: str
    testset: str
    uid: str
    kind: str  # "cue_toggle" (synthetic) or "edit_<what>" (controlled edit of a real message)
    category: str  # the cue category or the edited feature
    clean_text: str  # the message with the feature
    corrupt_text: str  # the message without it
    clean_phrase: str
    corrupt_phrase: str
    clean_ids: tuple[int, ...]
    corrupt_ids: tuple[int, ...]
    edited_positions: tuple[int, ...]  # token positions in the prompt
    message_start: int  # first prompt position of the message
    message_end: int  # one past its last position (the question follows)

    @property
    def n_tokens(self) -> int:
        return len(self.clean_ids)

    def segments(self) -> np.ndarray:
        """Each prompt position's segment name (see SEGMENTS)."""
        labels = np.empty(self.n_tokens, dtype=object)
        first, last = min(self.edited_positions), max(self.edited_positions)
        labels[: self.message_start] = "prompt_start"
        labels[self.message_start : first] = "before_edit"
        labels[last + 1 : self.message_end] = "after_edit"
        labels[self.message_end :] = "question"
        labels[list(self.edited_positions)] = "edited"
        labels[self.n_tokens - 1] = "answer"
        return labels


SEGMENTS = ("prompt_start", "before_edit", "edited", "after_edit", "question", "answer")


class PairRejected(ValueError):
    """A candidate pair fails a check; the message is the drop reason."""


def align_pair(
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    max_length: int,
    clean_text: str,
    clean_span: tuple[int, int],
    corrupt_text: str,
    corrupt_span: tuple[int, int],
) -> tuple[list[int], list[int], list[int], int, int]:
    """Token ids of both prompts, the edited positions and the message's bounds; raises PairRejected.

    Spans are character spans of the edit in each message. The prompts are built exactly as for
    prediction (`encode_prompts`), so a pair is analysed on the tokens the model is evaluated on.
    """
    clean_ids, corrupt_ids = encode_prompts([clean_text, corrupt_text], tokenizer, prompt, max_length)
    special, prefix, suffix = prompt_parts(tokenizer, prompt)
    message_start = len(special) + len(prefix)
    budget = message_budget(tokenizer, prompt, max_length)
    edited = set()
    encoded = [tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
               for text in (clean_text, corrupt_text)]
    # Compared before the prompt cuts long messages, which would equalise lengths after the edit.
    if len(encoded[0]["input_ids"]) != len(encoded[1]["input_ids"]):
        raise PairRejected("token lengths differ")
    for encoding, span in zip(encoded, (clean_span, corrupt_span), strict=True):
        offsets = encoding["offset_mapping"]
        inside = [i for i, (start, end) in enumerate(offsets) if start < span[1] and end > span[0]]
        if not inside:
            raise PairRejected("the edited span covers no token")
        if max(inside) >= budget:
            raise PairRejected("edit beyond the prompt's token budget (max_length)")
        edited.update(message_start + i for i in inside)
    differing = {i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids, strict=True)) if a != b}
    if not differing:
        raise PairRejected("the edit leaves the tokens unchanged")
    if not differing <= edited:
        raise PairRejected("tokenisation changed outside the edited span")
    message_end = len(clean_ids) - len(suffix)
    return clean_ids, corrupt_ids, sorted(edited), message_start, message_end


def aligned_pair(
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    max_length: int,
    *,
    pair_id: str,
    testset: str,
    uid: str,
    kind: str,
    category: str,
    clean_text: str,
    clean_span: tuple[int, int],
    corrupt_text: str,
    corrupt_span: tuple[int, int],
) -> MinimalPair:
    """The pair of two messages edited at the given spans, if `align_pair` accepts it (else PairRejected)."""
    clean_ids, corrupt_ids, edited, start, end = align_pair(
        tokenizer, prompt, max_length, clean_text, clean_span, corrupt_text, corrupt_span
    )
    return MinimalPair(
        pair_id=pair_id,
        testset=testset,
        uid=uid,
        kind=kind,
        category=category,
        clean_text=clean_text,
        corrupt_text=corrupt_text,
        clean_phrase=clean_text[clean_span[0] : clean_span[1]],
        corrupt_phrase=corrupt_text[corrupt_span[0] : corrupt_span[1]],
        clean_ids=tuple(clean_ids),
        corrupt_ids=tuple(corrupt_ids),
        edited_positions=tuple(edited),
        message_start=start,
        message_end=end,
    )


def benign_phrases(testset: pd.DataFrame) -> dict[str, list[str]]:
    """Phrases the generator planted in the test set's legitimate messages, by decoy category.

    Legitimate senders are one more category ("sender"): the counterpart of a look-alike sender.
    """
    phrases: dict[str, set[str]] = {}
    legitimate = testset[testset["label_true" if "label_true" in testset else "label"] == 0]
    for _, row in legitimate.iterrows():
        for span in cue_spans(row, role="decoy"):
            phrases.setdefault(span["category"], set()).add(row["text"][span["start"] : span["end"]])
        phrases.setdefault("sender", set()).add(row["sender"])
    return {category: sorted(values) for category, values in phrases.items()}


def synthetic_cue_pairs(
    testset: pd.DataFrame,
    testset_name: str,
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    max_length: int,
    n_pairs: int,
    seed: int,
    max_counterparts: int = 40,
) -> tuple[list[MinimalPair], pd.DataFrame]:
    """Up to `n_pairs` cue toggles from distinct malicious messages, and the drop table.

    Candidates (message, cue) are tried in a seeded order; for each, benign counterparts of the
    cue's shape are tried (at most `max_counterparts`) until one aligns. A candidate none aligns
    with is dropped with the reason of its last failure.
    """
    if "cue_spans" not in testset:
        raise ValueError(
            f"test set '{testset_name}' has no cue_spans column: cue toggles need a synthetic corpus;"
            " real corpora get controlled edits (gendiag.circuits.edits)"
        )
    rng = np.random.default_rng(seed)
    pool = benign_phrases(testset)
    malicious = testset[testset["label_true" if "label_true" in testset else "label"] == 1]
    candidates = [(i, span) for i, row in malicious.iterrows() for span in cue_spans(row)]
    pairs: list[MinimalPair] = []
    drops: list[dict] = []
    used: set = set()
    for index in rng.permutation(len(candidates)):
        if len(pairs) >= n_pairs:
            break
        row_index, span = candidates[index]
        if row_index in used:
            continue
        row = testset.loc[row_index]
        category = span["category"]
        options = [p for c in BENIGN_COUNTERPART.get(category, ANY_BENIGN) for p in pool.get(c, [])]
        reason = "no benign counterpart in the test set"
        for option_index in rng.permutation(len(options))[:max_counterparts]:
            replacement = options[option_index]
            text = row["text"]
            corrupt = text[: span["start"]] + replacement + text[span["end"] :]
            try:
                pair = aligned_pair(
                    tokenizer,
                    prompt,
                    max_length,
                    pair_id=f"{testset_name}:{row['uid']}:{span['start']}",
                    testset=testset_name,
                    uid=row["uid"],
                    kind="cue_toggle",
                    category=category,
                    clean_text=text,
                    clean_span=(span["start"], span["end"]),
                    corrupt_text=corrupt,
                    corrupt_span=(span["start"], span["start"] + len(replacement)),
                )
            except PairRejected as rejected:
                reason = str(rejected)
                continue
            used.add(row_index)
            pairs.append(pair)
            break
        else:
            drops.append(
                {"testset": testset_name, "uid": row["uid"], "kind": "cue_toggle", "category": category,
                 "reason": reason if options else "no benign counterpart in the test set"}
            )
    return pairs, pd.DataFrame(drops, columns=DROP_COLUMNS)


def pairs_table(pairs: Iterable[MinimalPair]) -> pd.DataFrame:
    """One row per pair, everything but the token ids (which the tokenizer rebuilds)."""
    rows = []
    for pair in pairs:
        rows.append(
            {
                "pair_id": pair.pair_id,
                "testset": pair.testset,
                "uid": pair.uid,
                "kind": pair.kind,
                "category": pair.category,
                "clean_phrase": pair.clean_phrase,
                "corrupt_phrase": pair.corrupt_phrase,
                "n_tokens": pair.n_tokens,
                "n_edited": len(pair.edited_positions),
                "edited_positions": list(pair.edited_positions),
                "clean_text": pair.clean_text,
                "corrupt_text": pair.corrupt_text,
            }
        )
    return pd.DataFrame(rows)


def drop_summary(drops: pd.DataFrame, kept: Sequence[MinimalPair]) -> pd.DataFrame:
    """Kept and dropped candidates per test set and reason."""
    kept_rows = pd.DataFrame(
        {"testset": [p.testset for p in kept], "reason": "kept"}, columns=["testset", "reason"]
    )
    both = pd.concat([kept_rows, drops[["testset", "reason"]]], ignore_index=True)
    return both.groupby(["testset", "reason"]).size().rename("n").reset_index()
