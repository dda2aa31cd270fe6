"""Synthetic email corpora with planted, span-annotated cues: the embedded default corpus.

Each style (corporate, mailing list, credential phishing, advance-fee fraud, ... as listed in
`resources/synthetic/styles.yaml`) yields legitimate and malicious messages that share one pool
of subjects and filler sentences, so the only label-bearing text is what the generator plants:

* cues in malicious messages: phrases shared across styles (urgency, credential requests,
  suspicious links, money) at style-specific rates, the style's own cues, and the sender address
  (drawn from look-alike and throwaway domains);
* decoys in legitimate messages: benign look-alikes (a real link, a deadline, a budget).

Every planted phrase is recorded with its character span in `text`, which makes these corpora the
ground truth for attribution and circuit analysis. Generation is a pure function of
(vocabulary, style, size, malicious share, label-noise rate, seed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

SHARED_CUE_CATEGORIES = ("urgency", "credential_request", "suspicious_link", "money")
DECOY_CATEGORIES = ("link", "deadline", "figure")
MALICIOUS_FINE_LABEL = {
    "corporate": "spam",
    "mailing_list": "spam",
    "credential_phish": "phishing",
    "advance_fee": "fraud",
}

# Carrier sentences are shared by cues and decoys of the same shape, so that the carrier words
# themselves carry no label information.
_CARRIERS = {
    "phrase": ["{x}.", "Note: {x}.", "Details: {x}.", "It concerns {x}."],
    "link": ["Go to {x}", "Link: {x}", "Visit {x} for details."],
    "action": ["Please {x}.", "You need to {x}."],
    "deadline": ["Please reply {x}.", "We need this {x}."],
}
_CARRIER_OF = {
    "urgency": "phrase",
    "credential_request": "action",
    "suspicious_link": "link",
    "money": "phrase",
    "style": "phrase",
    "link": "link",
    "deadline": "deadline",
    "figure": "phrase",
}
# Slots drawn once per message, so a message names one brand, one list and one country throughout.
_BOUND_SLOTS = frozenset({"brand", "list", "person", "country", "org_domain"})
_SLOT = re.compile(r"\{([a-z_]+)\}")
_PUNCT = re.compile(r"\s*([,.!?:;()])\s*")


class VocabularyError(ValueError):
    """The generator vocabulary file is malformed."""


def load_vocabulary(path: str | Path) -> dict[str, Any]:
    """Read and check a generator vocabulary (see resources/synthetic/styles.yaml)."""
    path = Path(path)
    try:
        vocab = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise VocabularyError(f"{path}: vocabulary file not found") from None
    except yaml.YAMLError as err:
        raise VocabularyError(f"{path}: not valid YAML ({err}); quote templates that contain '{{'") from None
    for key in ("slots", "shared_cues", "decoys", "styles"):
        if key not in (vocab or {}):
            raise VocabularyError(f"{path}: missing top-level key '{key}'")
    missing = set(SHARED_CUE_CATEGORIES) - set(vocab["shared_cues"])
    if missing:
        raise VocabularyError(f"{path}: shared_cues lacks categories {sorted(missing)}")
    required = ("senders", "subjects", "greetings", "sentences", "closings", "signatures", "style_cues")
    for name, style in vocab["styles"].items():
        for key in required:
            if not style.get(key):
                raise VocabularyError(f"{path}: style '{name}' has no '{key}'")
        unknown = set(style.get("shared_cue_rates", {})) - set(SHARED_CUE_CATEGORIES)
        if unknown:
            raise VocabularyError(
                f"{path}: style '{name}' shared_cue_rates has unknown categories {sorted(unknown)};"
                f" allowed: {list(SHARED_CUE_CATEGORIES)}"
            )
    return vocab


@dataclass
class _Message:
    """A message under construction: text pieces with their planted-span metadata."""

    pieces: list[tuple[str, dict | None]] = field(default_factory=list)

    def add(self, text: str, span: dict | None = None) -> None:
        self.pieces.append((text, span))

    def render(self) -> tuple[str, list[dict]]:
        text, spans, offset = [], [], 0
        for piece, span in self.pieces:
            if span is not None:
                spans.append({**span, "start": offset, "end": offset + len(piece)})
            text.append(piece)
            offset += len(piece)
        return "".join(text), spans


class _Renderer:
    """Fills {slot} templates from the global and style slot pools with one RNG."""

    def __init__(self, vocab: dict, style: dict, rng: np.random.Generator, tokenise: bool):
        self.slots = {**vocab["slots"], **style.get("slots", {})}
        self.rng = rng
        self.tokenise = tokenise
        self.bound: dict[str, str] = {}

    def new_message(self) -> None:
        self.bound = {}

    def choice(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def fill(self, template: str, depth: int = 0) -> str:
        if depth > 5:
            raise VocabularyError(f"slot recursion too deep in template {template!r}")

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in self.slots:
                raise VocabularyError(f"template {template!r} uses unknown slot '{{{name}}}'")
            if name in _BOUND_SLOTS:
                if name not in self.bound:
                    self.bound[name] = self.fill(self.choice(self.slots[name]), depth + 1)
                return self.bound[name]
            return self.fill(self.choice(self.slots[name]), depth + 1)

        return _SLOT.sub(replace, template)

    def surface(self, text: str) -> str:
        """Apply the style's tokenisation artefact (Enron-Spam's ' , ' and ' . ')."""
        if not self.tokenise:
            return text
        return _PUNCT.sub(r" \1 ", text).strip()


def generate_style(
    vocab: dict[str, Any],
    style: str,
    n_messages: int,
    malicious_share: float = 0.5,
    label_noise: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Generate `n_messages` emails of one style as a corpus table (DESIGN.md section 5).

    Columns: uid, subject, body, sender, date, text, label, label_fine, label_true,
    label_flipped, style, cue_spans (JSON list of {start, end, category, kind, role} into `text`;
    role is "cue" for malicious evidence and "decoy" for benign look-alikes).
    `label` is the observed label after injected noise; `label_true` is the generated one.
    """
    if style not in vocab["styles"]:
        raise ValueError(f"unknown style '{style}'; the vocabulary defines {sorted(vocab['styles'])}")
    if n_messages < 1:
        raise ValueError(f"n_messages must be >= 1, got {n_messages}")
    for name, value in (("malicious_share", malicious_share), ("label_noise", label_noise)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")

    spec = vocab["styles"][style]
    artefacts = spec.get("artefacts", {})
    # One generator per style and seed, so adding a style never changes another style's messages.
    style_offset = sum(ord(c) for c in style) * 1_000_003
    rng = np.random.default_rng(seed + style_offset)
    renderer = _Renderer(vocab, spec, rng, tokenise=bool(artefacts.get("tokenise_punctuation")))

    n_malicious = int(round(n_messages * malicious_share))
    labels = np.array([1] * n_malicious + [0] * (n_messages - n_malicious))
    rng.shuffle(labels)
    era_start, era_end = spec.get("era", [2000, 2000])
    start = datetime(era_start, 1, 1)
    era_days = (datetime(era_end, 12, 31) - start).days

    rows = []
    for index, label in enumerate(labels):
        msg, subject, sender = _compose(vocab, spec, renderer, int(label))
        text, spans = msg.render()
        if artefacts.get("lowercase"):
            text = text.lower()
        if rng.random() < float(artefacts.get("uppercase_share", 0.0)):
            text = text.upper()
        header_end = text.index("\n\n") + 2
        date = start + timedelta(days=int(rng.integers(era_days + 1)), seconds=int(rng.integers(86400)))
        rows.append(
            {
                "uid": f"synthetic-{style}-s{seed}-{index:06d}",
                "subject": text[len("From: ") + len(sender) + len("\nSubject: ") : header_end - 2],
                "body": text[header_end:],
                "sender": text[len("From: ") : len("From: ") + len(sender)],
                "date": date.isoformat(),
                "text": text,
                "label_true": int(label),
                "label_fine": MALICIOUS_FINE_LABEL.get(style, "malicious") if label else "ham",
                "style": style,
                "cue_spans": json.dumps(spans),
            }
        )
    frame = pd.DataFrame(rows)
    flipped = rng.random(len(frame)) < label_noise
    frame["label_flipped"] = flipped
    frame["label"] = np.where(flipped, 1 - frame["label_true"], frame["label_true"]).astype(int)
    columns = ["uid", "subject", "body", "sender", "date", "text", "label", "label_fine"]
    return frame[columns + ["label_true", "label_flipped", "style", "cue_spans"]]


def _compose(vocab: dict, spec: dict, r: _Renderer, label: int) -> tuple[_Message, str, str]:
    r.new_message()
    role = "malicious" if label else "legitimate"
    sender = r.fill(r.choice(spec["senders"][role]))
    subject = r.surface(r.fill(r.choice(spec["subjects"])))
    msg = _Message()
    msg.add("From: ")
    # Malicious senders come from their own templates (look-alike and throwaway domains): a cue.
    msg.add(sender, {"category": "suspicious_sender", "kind": "shared", "role": "cue"} if label else None)
    msg.add(f"\nSubject: {subject}\n\n")
    msg.add(r.surface(r.fill(r.choice(spec["greetings"]))) + "\n")

    planted = _planted_phrases(vocab, spec, r, label)
    # The body's length is drawn independently of the label and filler makes up what is not
    # planted: otherwise malicious messages (more planted text) would be longer, and length alone
    # would give the label away.
    target_chars = int(r.rng.integers(160, 360))
    remaining = target_chars - sum(len(text) for text, _ in planted)
    filler = []
    while not filler or remaining > 0:
        sentence = r.surface(r.fill(r.choice(spec["sentences"])))
        filler.append((sentence, None))
        remaining -= len(sentence) + 1
    # Planted sentences go to random positions among the filler, never first, so that position
    # alone does not give them away.
    body = list(filler)
    for item in planted:
        body.insert(int(r.rng.integers(1, len(body) + 1)), item)

    for i, (sentence, span) in enumerate(body):
        sep = " " if i < len(body) - 1 else "\n"
        if span is None:
            msg.add(sentence + sep)
            continue
        carrier_before, phrase, carrier_after = span.pop("_parts")
        msg.add(carrier_before)
        msg.add(phrase, span)
        msg.add(carrier_after + sep)
    msg.add(r.surface(r.fill(r.choice(spec["closings"]))) + "\n")
    msg.add(r.fill(r.choice(spec["signatures"])) + "\n")
    return msg, subject, sender


def _planted_phrases(vocab: dict, spec: dict, r: _Renderer, label: int) -> list[tuple[str, dict]]:
    planted = []

    def plant(category: str, kind: str, role: str, template: str) -> None:
        phrase = r.surface(r.fill(template))
        carrier = r.surface(r.choice(_CARRIERS[_CARRIER_OF[category]]).replace("{x}", "\x00"))
        before, _, after = carrier.partition("\x00")
        if not before and not r.tokenise:
            phrase = phrase[:1].upper() + phrase[1:]  # it starts a sentence
        meta = {"category": category, "kind": kind, "role": role, "_parts": (before, phrase, after)}
        planted.append((before + phrase + after, meta))

    if label == 1:
        rates = spec.get("shared_cue_rates", {})
        for category in SHARED_CUE_CATEGORIES:
            if r.rng.random() < float(rates.get(category, 0.0)):
                plant(category, "shared", "cue", r.choice(vocab["shared_cues"][category]))
        if r.rng.random() < float(spec.get("style_cue_rate", 1.0)) or not planted:
            # A malicious message without any evidence would be label noise by construction.
            plant("style", "style", "cue", r.choice(spec["style_cues"]))
    else:
        for category, rate in spec.get("decoy_rates", {}).items():
            if category not in DECOY_CATEGORIES:
                raise VocabularyError(f"unknown decoy category '{category}'; allowed: {DECOY_CATEGORIES}")
            if r.rng.random() < float(rate):
                plant(category, "decoy", "decoy", r.choice(vocab["decoys"][category]))
    r.rng.shuffle(planted)
    return planted


def cue_spans(row: pd.Series | dict, role: str = "cue") -> list[dict]:
    """The planted spans of one corpus row with the given role ("cue" or "decoy")."""
    raw = row["cue_spans"]
    spans = json.loads(raw) if isinstance(raw, str) else list(raw)
    return [span for span in spans if span["role"] == role]
