"""The corpus table (DESIGN.md section 5) and ingest: every row read is kept or quarantined.

A corpus is either generated (`loader: synthetic`) or read from one or more sources, each a file,
folder or dataset in its distributed format (`gendiag.data.loaders`). A corpus with only
malicious mail (Nazario, CLAIR) takes its legitimate mail from a second source.

Ingest never drops a row silently: each row is either kept or written to the quarantine table
with a reason (a loader's per-message problem, an empty message, a duplicate uid), and the ingest
report counts both. Input that cannot be interpreted at all (missing file, missing columns, a
label outside the mapping, an empty corpus) stops with an `IngestError` that names the file, the
row and the fix.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from gendiag.data import synthetic

CORPUS_COLUMNS = [
    "uid", "corpus", "subject", "body", "sender", "date", "text", "label", "label_fine", "source",
]
# Kept next to the contract's columns so normalisation and the audit can see the message as distributed.
PROVENANCE_COLUMNS = ["source_name", "source_id", "headers", "body_format", "raw_text"]
# What a corpus entry may hold besides its source keys (the config check keeps synthetic keys off real corpora).
CORPUS_ONLY_KEYS = {"sources", "normalise"}


class IngestError(ValueError):
    """Raw input that cannot become a corpus table; the message says where and how to fix it."""


def corpus_sources(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The sources of a non-synthetic corpus: its `sources` list, or the corpus itself as one source."""
    if spec.get("loader") == "synthetic":
        return []
    if spec.get("sources"):
        sources = [dict(s) for s in spec["sources"]]
    else:
        sources = [{k: v for k, v in spec.items() if k not in CORPUS_ONLY_KEYS}]
    for source in sources:
        source.setdefault("name", source["loader"])
    return sources


def download_name(source: dict[str, Any]) -> str:
    """The file name a source given by URL is downloaded to (under resources/downloads/)."""
    return source.get("filename") or source["url"].rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def load_raw(
    corpus: str,
    spec: dict[str, Any],
    vocabulary: str | Path | None = None,
    downloads: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Read one configured corpus into a raw table; return it with notes for the ingest report.

    `downloads` maps a source's name to its local file; sources given by `url` are read from there.
    """
    if spec.get("loader") == "synthetic":
        return _generate(corpus, spec, vocabulary), {"origin": f"synthetic style {spec['style']}"}
    from gendiag.data.loaders import read_source  # heavy optional imports (datasets) only when needed

    parts, notes = [], {}
    for source in corpus_sources(spec):
        name = source["name"]
        if source.get("url"):
            if not downloads or name not in downloads:
                raise IngestError(f"corpus '{corpus}': source '{name}' is given by URL but was not downloaded")
            source = {**source, "path": downloads[name]}
        frame, source_notes = read_source(source, corpus)
        frame["source_name"] = name
        frame["uid"] = corpus + ":" + name + ":" + frame["source_id"].astype(str)
        parts.append(frame)
        notes[name] = {"loader": source["loader"], "location": source.get("path") or source.get("dataset"),
                       "rows_read": int(len(frame)), **source_notes}
    raw = pd.concat(parts, ignore_index=True)
    from gendiag.data.normalise import raw_text

    raw["raw_text"] = list(map(raw_text, raw["headers"], raw["body"], raw["sender"], raw["subject"]))
    raw["text"] = raw["raw_text"]
    return raw, {"origin": ", ".join(f"{n['location']}" for n in notes.values()), "sources": notes}


def _generate(corpus: str, spec: dict[str, Any], vocabulary: str | Path | None) -> pd.DataFrame:
    if vocabulary is None:
        raise IngestError(f"corpus '{corpus}': the synthetic loader needs the generator vocabulary file")
    vocab = synthetic.load_vocabulary(vocabulary)
    frame = synthetic.generate_style(
        vocab,
        style=spec["style"],
        n_messages=int(spec["n_messages"]),
        malicious_share=float(spec.get("malicious_share", 0.5)),
        label_noise=float(spec.get("label_noise", 0.0)),
        seed=int(spec.get("seed", 0)),
    )
    frame["source"] = f"synthetic:{spec['style']}:seed{spec.get('seed', 0)}"
    frame["source_name"] = "synthetic"
    frame["source_id"] = frame["uid"]
    frame["headers"] = ""
    frame["body_format"] = "plain"
    frame["raw_text"] = frame["text"]
    return frame


def ingest(raw: pd.DataFrame, corpus: str, origin: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Validate a raw table into (kept, quarantined, report).

    Rows with a loader `problem`, an empty text or a duplicate uid are quarantined with their
    reason; the report counts rows read, kept and quarantined per reason, and the label balance
    of what was kept.
    """
    if len(raw) == 0:
        raise IngestError(f"corpus '{corpus}': {origin} holds no messages; check the path or the generator size")
    frame = raw.copy()
    frame["corpus"] = corpus
    for column in CORPUS_COLUMNS + PROVENANCE_COLUMNS + ["problem"]:
        if column not in frame:
            frame[column] = frame["text"] if column == "raw_text" and "text" in frame else ""
    if "uid" not in raw:
        frame["uid"] = [f"{corpus}:{i:07d}" for i in range(len(frame))]
    text_columns = ["uid", "subject", "body", "sender", "date", "text", "label_fine", "source", "problem",
                    *PROVENANCE_COLUMNS]
    frame[text_columns] = frame[text_columns].fillna("").astype(str)

    reason = frame["problem"].str.strip().copy()
    reason[(reason == "") & (frame["text"].str.strip() == "")] = "empty text"
    duplicate_uid = frame["uid"].duplicated(keep="first") & (reason == "")
    reason[duplicate_uid] = "duplicate uid"

    quarantined = frame[reason != ""].assign(reason=reason[reason != ""]).drop(columns="problem")
    kept = frame[reason == ""].drop(columns="problem").reset_index(drop=True)
    if len(kept) == 0:
        raise IngestError(
            f"corpus '{corpus}': all {len(frame)} rows of {origin} were quarantined"
            f" ({dict(Counter(quarantined['reason']))}); the input is unusable"
        )
    leading = CORPUS_COLUMNS + PROVENANCE_COLUMNS
    ordered = leading + [c for c in kept.columns if c not in leading]
    report = {
        "corpus": corpus,
        "origin": origin,
        "rows_read": int(len(frame)),
        "rows_kept": int(len(kept)),
        "rows_quarantined": int(len(quarantined)),
        "quarantine_reasons": dict(Counter(reason_kind(r) for r in quarantined["reason"])),
        "label_counts": {str(k): int(v) for k, v in kept["label"].value_counts().sort_index().items()},
    }
    return kept[ordered], quarantined.reset_index(drop=True), report


def reason_kind(reason: str) -> str:
    """The kind of a quarantine reason, for counting: 'undecodable bytes: 41% …' counts as 'undecodable bytes'."""
    return reason.split(":", 1)[0].strip()
