"""Normalisation: from a message as its corpus distributes it to the text a model sees.

Corpora carry artefacts of how they were collected and distributed: SpamAssassin keeps full
headers, quoted replies and mailing-list footers; Enron-Spam was lower-cased and tokenised by its
authors (`" , "`, `"http : / / www . x . com"`); some bodies are HTML. A model can learn those
artefacts instead of whether a message is malicious, so each transformation here is an option
(config `normalise`, DESIGN.md section 5) recorded with per-step counts in the stage's report.

Options are resolved per source: the global `normalise` block, then the loader's own defaults
(`LOADER_DEFAULTS`: the Enron-Spam loader undoes lower-casing and tokenisation), then the
corpus's `normalise`, then the source's.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

DEFAULTS: dict[str, Any] = {
    "strip_headers": True,
    "header_fields": ["subject"],
    "html_to_text": True,
    "strip_quoted": True,
    "strip_signatures": True,
    "urls": "keep",
    "emails": "keep",
    "detokenise": False,
    "case": "keep",
    "whitespace": True,
}
LOADER_DEFAULTS: dict[str, dict[str, Any]] = {
    "enron_spam": {"detokenise": True, "case": "restore"},
}
HEADER_LABELS = {"sender": "From", "subject": "Subject", "date": "Date"}

URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"'\])]+", re.IGNORECASE)
EMAIL = re.compile(r"\b[\w.+-]+@((?:[\w-]+\.)+[a-z]{2,})\b", re.IGNORECASE)
HTML_TAG = re.compile(r"<\s*(?:html|body|div|p|br|table|font|a\s|span|td|head)\b", re.IGNORECASE)

_QUOTED_LINE = re.compile(r"^\s*(?:>|\|>)")
_ATTRIBUTION = re.compile(r"^\s*(?:On\b.{0,200}\bwrote:|.{0,120}\bwrote:|.{0,120}\bwrites:)\s*$", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(r"^\s*-{2,}\s*(?:Original Message|Forwarded message)\s*-{2,}\s*$", re.IGNORECASE)
_WRAPPED_TAIL = 30
_WRAPPED_LINE = 60
_SIGNATURE_DELIMITER = re.compile(r"^--\s?$")
_LIST_FOOTER = re.compile(r"^_{20,}\s*$")

# Enron-Spam's tokeniser put spaces around every punctuation mark; these undo it, URLs first so
# that `http : / / www . x . com` becomes one token before the generic rules see its dots.
_DETOKENISE = [
    (re.compile(r"\b(https?|ftp) : / / "), r"\1://"),
    (re.compile(r"(?<=://)((?:[\w-]+ \. )+[\w-]+)"), lambda m: m.group(1).replace(" . ", ".")),
    (re.compile(r"\bwww \. ((?:[\w-]+ \. )*[\w-]+)"), lambda m: "www." + m.group(1).replace(" . ", ".")),
    (re.compile(r"\b((?:[\w-]+ \. )+)(com|net|org|edu|gov|biz|info|co\.uk|uk|de|ru|cn)\b"),
     lambda m: m.group(1).replace(" . ", ".") + m.group(2)),
    (re.compile(r"(\w) (['’]) (s|t|re|ve|ll|d|m)\b"), r"\1\2\3"),
    (re.compile(r"(?<=\d) ([/:.,]) (?=\d)"), r"\1"),
    (re.compile(r"(?<=\w) ([/@]) (?=\w)"), r"\1"),
    # Hyphenated words ("e - mail", "follow - up") but not dashes between words ("fyi - see below").
    (re.compile(r"(?<=\b\w)(?<!\w\w) - (?=\w)|(?<=\w) - (?=[a-z]{1,2}\b)"), "-"),
    (re.compile(r"(?:- ){2,}-"), lambda m: m.group(0).replace(" ", "")),
    (re.compile(r" ([,.;:!?%)\]}])"), r"\1"),
    (re.compile(r"([(\[{$#]) "), r"\1"),
]
_SENTENCE_START = re.compile(r"(^|[.!?]\s+|\n\s*)([a-z])")
_CAPITALISED_URL = re.compile(r"\b(?:Https?://|Ftp://|Www\.)")
_PRONOUN_I = re.compile(r"\bi(?=\b|['’](?:m|ve|ll|d)\b)")


class NormaliseError(ValueError):
    """Options that cannot be applied; the message names the key and the fix."""


def resolve_options(global_options: dict, loader: str | None, *overrides: dict | None) -> dict[str, Any]:
    """The options of one source: defaults, global block, loader defaults, then each override."""
    options = {**DEFAULTS, **(global_options or {})}
    options.update(LOADER_DEFAULTS.get(loader or "", {}))
    for override in overrides:
        options.update(override or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise NormaliseError(f"unknown normalise option(s) {unknown}; known: {sorted(DEFAULTS)}")
    return options


@dataclass
class Normaliser:
    """Applies one set of options to messages, counting what each step changed."""

    options: dict[str, Any]
    counts: Counter = field(default_factory=Counter)

    def text(self, subject: str, body: str, sender: str, date: str, headers: str, body_format: str) -> str:
        o = self.options
        if o["html_to_text"] and (body_format == "html" or HTML_TAG.search(body)):
            from gendiag.data.mime import html_to_text  # bs4 only when a corpus has HTML

            body = html_to_text(body)
            self.counts["html_converted"] += 1
        if o["strip_quoted"]:
            body = self._count("quoted_removed", body, strip_quoted(body))
        if o["strip_signatures"]:
            body = self._count("signature_removed", body, strip_signature(body))
        if o["case"] == "restore" and not any(c.isupper() for c in subject + body):
            subject, body = restore_case(subject), restore_case(body)
            self.counts["case_restored"] += 1
        if o["strip_headers"] or not headers.strip():
            values = {"subject": subject, "sender": sender, "date": date}
            lines = [f"{HEADER_LABELS[name]}: {values[name]}" for name in o["header_fields"] if values[name].strip()]
            text = "\n".join(lines) + ("\n\n" if lines else "") + body
        else:
            text = headers.rstrip("\n") + "\n\n" + body
        if o["detokenise"]:
            text = self._count("detokenised", text, detokenise(text))
        if o["case"] == "lower":
            text = self._count("lower_cased", text, text.lower())
        if o["urls"] != "keep":
            text, n = mask(URL, text, "URL", keep_domain=o["urls"] == "mask_keep_domain")
            self.counts["urls_masked"] += n
        if o["emails"] != "keep":
            text, n = mask(EMAIL, text, "EMAIL", keep_domain=o["emails"] == "mask_keep_domain")
            self.counts["emails_masked"] += n
        if o["whitespace"]:
            text = self._count("whitespace_changed", text, normalise_whitespace(text))
        return text

    def _count(self, key: str, before: str, after: str) -> str:
        if after != before:
            self.counts[key] += 1
        return after


def strip_quoted(body: str) -> str:
    """Drop quoted reply lines, their attribution line and everything after an 'Original Message' mark.

    Mail clients re-wrap long quoted lines, leaving short unquoted tails between two quoted lines;
    those tails belong to the quote too.
    """
    lines = body.split("\n")
    for index, line in enumerate(lines):
        if _ORIGINAL_MESSAGE.match(line):
            lines = lines[:index]
            break
    quoted = [bool(_QUOTED_LINE.match(line)) for line in lines]
    for index, line in enumerate(lines):
        if quoted[index] or not line.strip() or len(line.strip()) > _WRAPPED_TAIL:
            continue
        # A wrapped tail follows a long quoted line (or another tail); a short reply after a short
        # quoted question ("> Agreed?" / "Yes.") is the author's text and stays.
        previous = index - 1
        before = previous >= 0 and quoted[previous] and (
            len(lines[previous]) >= _WRAPPED_LINE or not _QUOTED_LINE.match(lines[previous])
        )
        after = next(
            (quoted[j] for j in range(index + 1, len(lines))
             if lines[j].strip() and (quoted[j] or len(lines[j].strip()) > _WRAPPED_TAIL)),
            False,
        )
        quoted[index] = before and after
    kept: list[str] = []
    for line, is_quoted in zip(lines, quoted, strict=True):
        if is_quoted:
            if kept and _ATTRIBUTION.match(kept[-1]):
                kept.pop()
            continue
        kept.append(line)
    return "\n".join(kept)


def strip_signature(body: str) -> str:
    """Cut at the last signature delimiter (`-- `) or mailing-list footer rule, whichever comes first."""
    lines = body.split("\n")
    cut = len(lines)
    for index in range(len(lines) - 1, -1, -1):
        if _SIGNATURE_DELIMITER.match(lines[index]) or _LIST_FOOTER.match(lines[index]):
            cut = index
    # A delimiter in the first line would leave nothing: that is content, not a signature.
    return "\n".join(lines[:cut]) if cut > 0 else body


def detokenise(text: str) -> str:
    """Undo Enron-Spam style tokenisation (spaces around punctuation, split URLs and contractions)."""
    for pattern, replacement in _DETOKENISE:
        text = pattern.sub(replacement, text)
    return text


def restore_case(text: str) -> str:
    """Sentence case for a text its distributor lower-cased: sentence starts and the pronoun I."""
    text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
    text = _CAPITALISED_URL.sub(lambda m: m.group(0).lower(), text)
    return _PRONOUN_I.sub("I", text)


def mask(pattern: re.Pattern, text: str, token: str, keep_domain: bool) -> tuple[str, int]:
    """Replace matches by `[TOKEN]` or `[TOKEN domain]`; return the text and the number replaced."""

    def replace(match: re.Match) -> str:
        if not keep_domain:
            return f"[{token}]"
        return f"[{token} {_domain(match.group(0))}]"

    return pattern.subn(replace, text)


def _domain(found: str) -> str:
    if "@" in found and "://" not in found:
        return found.rsplit("@", 1)[1].lower()
    host = urlsplit(found if "://" in found else f"http://{found}").hostname or ""
    return host.removeprefix("www.")


def normalise_whitespace(text: str) -> str:
    """Unix newlines, single spaces, no trailing spaces, at most one blank line, no outer blanks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def raw_text(headers: str, body: str, sender: str, subject: str) -> str:
    """The message as its corpus distributes it: full headers when it has them, else its fields."""
    if headers.strip():
        return headers.rstrip("\n") + "\n\n" + body
    lines = [f"{HEADER_LABELS[k]}: {v}" for k, v in (("sender", sender), ("subject", subject)) if v.strip()]
    return "\n".join(lines) + ("\n\n" if lines else "") + body


def normalise_corpus(
    frame: pd.DataFrame, options_by_source: dict[str, dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Normalise every message of an ingested corpus table; return (kept, emptied, report).

    `options_by_source` maps each value of the `source_name` column to its resolved options.
    A message whose text is empty after normalisation (e.g. nothing but a quoted reply) is not
    dropped: it is returned in the second table with its reason, for the quarantine file.
    """
    missing = sorted(set(frame["source_name"]) - set(options_by_source))
    if missing:
        raise NormaliseError(f"no normalise options for source(s) {missing}")
    out = frame.copy()
    report: dict[str, Any] = {"sources": {}}
    texts = pd.Series("", index=out.index, dtype=object)
    for source, rows in out.groupby("source_name", sort=True):
        normaliser = Normaliser(options_by_source[source])
        texts[rows.index] = [
            normaliser.text(r.subject, r.body, r.sender, r.date, r.headers, r.body_format)
            for r in rows.itertuples(index=False)
        ]
        report["sources"][source] = {
            "rows": int(len(rows)),
            "options": options_by_source[source],
            "changed": dict(sorted(normaliser.counts.items())),
        }
    out["text"] = texts
    empty = out["text"].str.strip() == ""
    emptied = out[empty].assign(reason="empty after normalisation")
    kept = out[~empty].reset_index(drop=True)
    report.update(
        rows_in=int(len(frame)),
        rows_kept=int(len(kept)),
        rows_emptied=int(empty.sum()),
        text_changed=int((kept["text"] != kept["raw_text"]).sum()),
    )
    return kept, emptied.reset_index(drop=True), report


def options_by_source(spec: dict[str, Any], global_options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Resolved options of each source of a configured corpus (see the module docstring)."""
    from gendiag.data.corpus import corpus_sources

    return {
        source["name"]: resolve_options(
            global_options, source["loader"], spec.get("normalise"), source.get("normalise")
        )
        for source in corpus_sources(spec)
    }


def normalise_configured(
    frame: pd.DataFrame, spec: dict[str, Any], global_options: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Normalise an ingested corpus as its config says; generated corpora pass through unchanged.

    The synthetic generator's planted cue spans are character offsets into its text, and its
    styles already render the artefacts they imitate on purpose, so its text is never rewritten.
    """
    if spec.get("loader") == "synthetic":
        report = {"rows_in": int(len(frame)), "rows_kept": int(len(frame)), "rows_emptied": 0, "text_changed": 0,
                  "skipped": "synthetic corpus: its planted cue spans index the generated text, which is kept as is"}
        return frame.copy(), frame.iloc[0:0].assign(reason=pd.Series(dtype=str)), report
    return normalise_corpus(frame, options_by_source(spec, global_options))
