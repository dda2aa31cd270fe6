"""The corpus table (DESIGN.md section 5) and ingest: every row read is kept or quarantined.

A corpus table has one row per message with the columns in `CORPUS_COLUMNS`; loaders may add
provenance columns (for the synthetic corpus: style, true label, planted cue spans). Ingest never
drops a row silently: each row is either kept or written to the quarantine table with a reason,
and the ingest report counts both. Input that cannot be interpreted at all (missing file, missing
columns, a label outside the mapping, an empty corpus) stops with an `IngestError` that names the
file, the row and the fix.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from gendiag.data import synthetic

CORPUS_COLUMNS = ["uid", "corpus", "subject", "body", "sender", "date", "text", "label", "label_fine", "source"]
TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


class IngestError(ValueError):
    """Raw input that cannot become a corpus table; the message says where and how to fix it."""


def load_raw(corpus: str, spec: dict[str, Any], vocabulary: str | Path | None = None) -> pd.DataFrame:
    """Read one configured corpus into a raw table with the contract's column names.

    `spec` is the corpus entry of the config: `loader: synthetic` (style, n_messages,
    malicious_share, label_noise, seed) or `loader: table` (path, columns, label_map).
    """
    loader = spec.get("loader")
    if loader == "synthetic":
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
        return frame
    if loader == "table":
        return _load_table(corpus, spec)
    raise IngestError(f"corpus '{corpus}': unknown loader '{loader}'; use 'synthetic' or 'table'")


def _load_table(corpus: str, spec: dict[str, Any]) -> pd.DataFrame:
    path = Path(spec["path"])
    if not path.exists():
        raise IngestError(f"corpus '{corpus}': file {path} does not exist; fix `corpora.{corpus}.path`")
    fmt = spec.get("format") or TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(
            f"corpus '{corpus}': cannot tell the format of {path}; set `corpora.{corpus}.format`"
            f" to one of {sorted(set(TABLE_FORMATS.values()))}"
        )
    try:
        if fmt == "csv":
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        elif fmt == "jsonl":
            raw = pd.read_json(path, lines=True, dtype=False)
        else:
            raw = pd.read_parquet(path)
    except UnicodeDecodeError as err:
        raise IngestError(
            f"corpus '{corpus}': {path} is not valid UTF-8 at byte {err.start}; re-encode it as UTF-8"
        ) from None
    columns = {"text": "text", "label": "label", **spec.get("columns", {})}
    missing = [src for src in columns.values() if src not in raw.columns]
    if missing:
        raise IngestError(
            f"corpus '{corpus}': {path} lacks columns {missing} (has {list(raw.columns)});"
            f" map them with `corpora.{corpus}.columns`"
        )
    frame = pd.DataFrame({dst: raw[src] for dst, src in columns.items()})
    label_map = {str(k): int(v) for k, v in spec.get("label_map", {"0": 0, "1": 1}).items()}
    raw_labels = frame["label"].astype(str).str.strip()
    unknown = ~raw_labels.isin(label_map)
    if unknown.any():
        row = int(unknown.idxmax())
        raise IngestError(
            f"corpus '{corpus}': {path} row {row + 1} has label {raw_labels[row]!r}, outside the mapping"
            f" {sorted(label_map)} ({int(unknown.sum())} rows in all); extend `corpora.{corpus}.label_map`"
        )
    frame["label_fine"] = frame.get("label_fine", raw_labels)
    frame["label"] = raw_labels.map(label_map).astype(int)
    if "uid" not in frame:
        frame["uid"] = [f"{corpus}-{path.stem}-{i:07d}" for i in range(len(frame))]
    frame["source"] = str(path)
    return frame


def ingest(raw: pd.DataFrame, corpus: str, origin: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Validate a raw table into (kept, quarantined, report).

    Rows with an empty text or a duplicate uid are quarantined with their reason; the report
    counts rows read, kept and quarantined per reason, and the label balance of what was kept.
    """
    if len(raw) == 0:
        raise IngestError(f"corpus '{corpus}': {origin} holds no messages; check the path or the generator size")
    frame = raw.copy()
    frame["corpus"] = corpus
    for column in CORPUS_COLUMNS:
        if column not in frame:
            frame[column] = ""
    text_columns = ["uid", "subject", "body", "sender", "date", "text", "label_fine", "source"]
    frame[text_columns] = frame[text_columns].fillna("").astype(str)

    reason = pd.Series("", index=frame.index)
    reason[frame["text"].str.strip() == ""] = "empty text"
    duplicate_uid = frame["uid"].duplicated(keep="first") & (reason == "")
    reason[duplicate_uid] = "duplicate uid"

    quarantined = frame[reason != ""].assign(reason=reason[reason != ""])
    kept = frame[reason == ""].reset_index(drop=True)
    if len(kept) == 0:
        raise IngestError(
            f"corpus '{corpus}': all {len(frame)} rows of {origin} were quarantined"
            f" ({dict(Counter(quarantined['reason']))}); the input is unusable"
        )
    ordered = CORPUS_COLUMNS + [c for c in kept.columns if c not in CORPUS_COLUMNS]
    report = {
        "corpus": corpus,
        "origin": origin,
        "rows_read": int(len(frame)),
        "rows_kept": int(len(kept)),
        "rows_quarantined": int(len(quarantined)),
        "quarantine_reasons": dict(Counter(quarantined["reason"])),
        "label_counts": {str(k): int(v) for k, v in kept["label"].value_counts().sort_index().items()},
    }
    return kept[ordered], quarantined.reset_index(drop=True), report
