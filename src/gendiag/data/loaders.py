"""Read each public corpus in the format it is distributed in, into one raw table (DESIGN.md section 5).

`read_source` returns the raw table (columns `RAW_COLUMNS`) and a notes dict for the ingest
report. The rules every loader follows:

- one message that cannot be read well never stops the corpus and is never dropped: its row
  carries a `problem` (a reason to quarantine it);
- a file that cannot be read at all (missing, empty, wrong columns, undecodable, truncated,
  a label outside the mapping) raises `IngestError` naming the file, the row or archive member,
  and the fix;
- whatever is read but is not a message (directories, SpamAssassin `cmds` files, summaries) is
  listed in the notes, and members left out by `include` are counted there.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import math
import os
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from gendiag.data import corpus as _corpus
from gendiag.data import mime

RAW_COLUMNS = ["source_id", "subject", "body", "sender", "date", "headers", "body_format", "label", "label_fine",
               "source", "problem"]
TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".tar")
# Above these shares the decoded body is mostly noise, not a message a model should learn from.
MAX_REPLACEMENT_SHARE = 0.2
MAX_CONTROL_SHARE = 0.1
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_ENRON_DATE = re.compile(r"^\d+\.(\d{4}-\d{2}-\d{2})\.")
_CLAIR_SEPARATOR = re.compile(rb"^From r\s", re.M)
_MBOX_SEPARATOR = re.compile(rb"^From ", re.M)
_MBOX_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.M)  # mboxrd: '>From ' in a body is an escaped 'From '
_OFFLINE_VALUES = {"1", "true", "yes", "on"}
_SHA_HINT = "(the sha256 in the config catches this)"


def read_source(spec: dict[str, Any], corpus: str, *, labelled: bool = True,
                keys: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read the corpus configured by `spec` into (raw table, notes).

    The raw table has the columns `RAW_COLUMNS`, all strings except the 0/1 `label`. Mail to be
    scored (`labelled=False`, `gendiag.evaluate.apply`) may lack labels: a missing label column is
    allowed and a label outside the mapping becomes -1 instead of an error. `keys` names the
    settings in errors (e.g. {"path": "--input"}) where they are not `corpora.<corpus>.<key>`. The notes
    hold `loader`, `files_read`, `messages_read`, `members_skipped` ({member: reason}),
    `members_excluded` (count left out by `include`), `decode_notes` ({note: count}),
    `problem_rows` and `problems` ({reason kind: count}).
    """
    loader = spec.get("loader")
    read = LOADERS.get(loader)
    if read is None:
        raise _corpus.IngestError(
            f"corpus '{corpus}': unknown loader {loader!r}; set `corpora.{corpus}.loader` to one of {sorted(LOADERS)}"
        )
    reading = _Reading(corpus, spec, labelled=labelled, keys=keys)
    read(reading)
    return reading.finish()


class _Reading:
    """State of one `read_source` call: the rows so far, the notes, and the config context for errors."""

    def __init__(self, corpus: str, spec: dict[str, Any], *, labelled: bool = True,
                 keys: dict[str, str] | None = None):
        self.corpus = corpus
        self.spec = spec
        self.labelled = labelled
        self.keys = keys
        self.rows: list[dict[str, Any]] = []
        self.files_read = 0
        self.members_skipped: dict[str, str] = {}
        self.members_excluded = 0
        self.decode_notes: Counter[str] = Counter()
        self.label_map: dict[str, int] | None = None

    def error(self, message: str) -> _corpus.IngestError:
        # IngestError is looked up through the module at call time: `corpus` will import this
        # module to dispatch to it, and the cycle is harmless whichever side is imported first.
        return _corpus.IngestError(f"corpus '{self.corpus}': {message}")

    def key(self, name: str) -> str:
        if self.keys is not None:
            return self.keys.get(name, f"`{name}`")
        return f"`corpora.{self.corpus}.{name}`"

    def path(self) -> Path:
        if not self.spec.get("path"):
            raise self.error(f"the {self.spec['loader']} loader needs a path; set {self.key('path')}")
        path = Path(self.spec["path"])
        if not path.exists():
            raise self.error(f"{path} does not exist; fix {self.key('path')}")
        return path

    def use_label_map(self, default: dict[str, int] | None) -> None:
        """A configured `label_map` replaces the loader's default mapping of raw labels to 0/1."""
        configured = self.spec.get("label_map")
        if configured is None:
            self.label_map = default
            return
        if not isinstance(configured, dict) or not configured:
            raise self.error(f"{self.key('label_map')} must map raw label values to 0 or 1, got {configured!r}")
        mapping = {str(raw).strip(): value for raw, value in configured.items()}
        bad = {raw: value for raw, value in mapping.items() if value not in (0, 1) or isinstance(value, bool)}
        if bad:
            raise self.error(f"{self.key('label_map')} maps {bad} outside 0 (legitimate) / 1 (malicious)")
        self.label_map = {raw: int(value) for raw, value in mapping.items()}

    def add(self, *, source_id: str, label_fine: str, source: str, subject: str = "", body: str = "",
            sender: str = "", date: str = "", headers: str = "", body_format: str = "plain", problem: str = "",
            replacement_share: float | None = None, label_keys: tuple[str, ...] = ()) -> None:
        if not problem:
            problem = message_problem(subject, body, replacement_share)
        self.rows.append({
            "source_id": source_id, "subject": subject, "body": body, "sender": sender, "date": date,
            "headers": headers, "body_format": body_format, "label_fine": label_fine, "source": source,
            "problem": problem, "_label_keys": label_keys or (label_fine,),
        })

    def note(self, notes: list[str] | str | None) -> None:
        if notes:
            self.decode_notes.update([notes] if isinstance(notes, str) else notes)

    def finish(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        if not self.rows:
            where = self.spec.get("path") or self.spec.get("dataset")
            raise self.error(
                f"{where} holds no messages ({len(self.members_skipped)} members skipped, {self.members_excluded}"
                f" excluded by include); check {self.key('path')} and {self.key('include')}"
            )
        labels = self._labels()
        frame = pd.DataFrame(self.rows).drop(columns="_label_keys")
        frame["label"] = pd.Series(labels, dtype="int64")
        frame = frame[RAW_COLUMNS]
        problems = Counter(_corpus.reason_kind(problem) for problem in frame["problem"] if problem)
        notes = {
            "loader": self.spec["loader"],
            "files_read": self.files_read,
            "messages_read": len(frame),
            "members_skipped": dict(sorted(self.members_skipped.items())),
            "members_excluded": self.members_excluded,
            "decode_notes": dict(self.decode_notes.most_common()),
            "problem_rows": int(sum(problems.values())),
            "problems": dict(problems.most_common()),
        }
        return frame, notes

    def _labels(self) -> list[int]:
        mapping = self.label_map or {}
        labels: list[int] = []
        unknown: Counter[str] = Counter()
        first_unknown: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            key = next((key for key in row["_label_keys"] if key in mapping), None)
            if key is None and not self.labelled:
                labels.append(-1)  # mail to be scored: an unknown or absent label is no error
            elif key is None:
                value = row["_label_keys"][0]
                unknown[value] += 1
                first_unknown.setdefault(value, row)
                labels.append(-1)
            else:
                labels.append(mapping[key])
        if unknown:
            value, count = next(iter(unknown.items()))
            row = first_unknown[value]
            location = row["source"] if row["source_id"] in row["source"] else f"{row['source']} {row['source_id']}"
            others = f"; {sum(unknown.values())} rows in all have labels outside it" if len(unknown) > 1 else ""
            raise self.error(
                f"{location} has label {value!r}, outside the mapping {sorted(mapping)} ({count} rows have it{others});"
                f" extend {self.key('label_map')}"
            )
        return labels


def message_problem(subject: str, body: str, share: float | None = None) -> str:
    """Why one message should be quarantined, or "" when it is fine."""
    if not subject.strip() and not body.strip():
        return "empty message (no subject, no body)"
    share = mime.replacement_share(body) if share is None else share
    if share > MAX_REPLACEMENT_SHARE:
        return f"undecodable bytes: {share:.0%} of the body is U+FFFD"
    control = len(_CONTROL_CHARS.findall(body)) / len(body) if body else 0.0
    if control > MAX_CONTROL_SHARE:
        return f"binary content: {control:.0%} of the body is control characters"
    return ""


# --- archives and folders of message files ---------------------------------------------------------------------


def _message_files(reading: _Reading, path: Path) -> Iterator[tuple[str, bytes, str]]:
    """(member path, bytes, source) of every file in a tarball, a folder of tarballs or an extracted folder.

    Members come sorted by path within each tarball, tarballs sorted by name, so row order and
    source ids do not depend on how the archive was packed.
    """
    if path.is_file():
        yield from _archive_members(reading, path)
        return
    archives = sorted(child for child in path.iterdir() if child.is_file() and child.name.endswith(ARCHIVE_SUFFIXES))
    if archives:
        for archive in archives:
            yield from _archive_members(reading, archive)
        return
    files = sorted((file.relative_to(path).as_posix(), file) for file in path.rglob("*") if file.is_file())
    if not files:
        raise reading.error(f"folder {path} holds no tarballs and no files; fix {reading.key('path')}")
    for member, file in files:
        if not _included(reading, member):
            continue
        if PurePosixPath(member).name.startswith("."):
            reading.members_skipped[member] = "hidden file, not a message"
            continue
        reading.files_read += 1
        yield member, file.read_bytes(), str(file)


def _included(reading: _Reading, member: str) -> bool:
    patterns = reading.spec.get("include")
    if not patterns:
        return True
    if isinstance(patterns, str):
        patterns = [patterns]
    if any(fnmatch.fnmatchcase(member, pattern) for pattern in patterns):
        return True
    reading.members_excluded += 1
    return False


def _archive_members(reading: _Reading, archive: Path) -> list[tuple[str, bytes, str]]:
    if not archive.name.endswith(ARCHIVE_SUFFIXES):
        raise reading.error(
            f"{archive} is not a tarball ({', '.join(ARCHIVE_SUFFIXES)}); point {reading.key('path')} at the"
            " downloaded archive or the folder holding it"
        )
    if archive.stat().st_size == 0:
        raise reading.error(f"archive {archive} is empty (0 bytes); re-download it {_SHA_HINT}")
    reading.files_read += 1
    members: list[tuple[str, bytes, str]] = []
    seen = 0
    last = "(none: the archive header itself is unreadable)"
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for info in tar:
                seen += 1
                name = info.name.removeprefix("./")
                if info.isdir():
                    reading.members_skipped[name + "/"] = "directory"
                elif not info.isfile():
                    reading.members_skipped[name] = "not a regular file (link or device), not a message"
                elif _included(reading, name):
                    handle = tar.extractfile(info)
                    members.append((name, handle.read() if handle else b"", f"{archive}::{name}"))
                last = name
            # Reading to the end verifies the compression trailer (CRC, length) that the tar
            # reader stops short of, so a cut after the last member is caught too.
            while tar.fileobj.read(1 << 20):
                pass
            if isinstance(tar.fileobj, io.BufferedReader) and archive.stat().st_size - tar.offset < tarfile.BLOCKSIZE:
                raise tarfile.ReadError("no end-of-archive marker")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise reading.error(
            f"archive {archive} is truncated or corrupt after member {last} ({err}); re-download it {_SHA_HINT}"
        ) from None
    if seen == 0:
        raise reading.error(f"archive {archive} holds no members; re-download it {_SHA_HINT}")
    members.sort()
    return members


def _read_enron_spam(reading: _Reading) -> None:
    reading.use_label_map({"ham": 0, "spam": 1})
    path = reading.path()
    label_folders = set(reading.label_map or ())
    for member, data, source in _message_files(reading, path):
        parts = PurePosixPath(member).parts
        if len(parts) < 2 or parts[-2] not in label_folders:
            reading.members_skipped[member] = f"not under a {'/, '.join(sorted(label_folders))}/ folder, not a message"
            continue
        text, notes = mime.decode_text(data, None)
        reading.note(notes)
        first, _, rest = text.partition("\n")
        if first.startswith("Subject:"):
            subject, body = first.removeprefix("Subject:").strip(), rest
        else:
            reading.note("no Subject line")
            subject, body = "", text
        date = _ENRON_DATE.match(parts[-1])
        reading.add(source_id=member, subject=subject, body=body, date=date.group(1) if date else "",
                    label_fine=parts[-2], source=source)


def _read_spamassassin(reading: _Reading) -> None:
    path = reading.path()
    container_group = _archive_stem(path.name) if path.is_file() else path.name
    groups: set[str] = set()
    for member, data, source in _message_files(reading, path):
        parts = PurePosixPath(member).parts
        if parts[-1] == "cmds":
            reading.members_skipped[member] = "not a message (the corpus's list of mv commands)"
            continue
        group = parts[0] if len(parts) > 1 else container_group
        groups.add(group)
        _add_rfc822(reading, data, source_id=member, source=source, label_fine=group)
    default = {group: 0 for group in groups if "ham" in group}
    default.update({group: 1 for group in groups if group.startswith("spam")})
    reading.use_label_map(default)


def _archive_stem(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _add_rfc822(reading: _Reading, data: bytes, *, source_id: str, source: str, label_fine: str) -> None:
    try:
        parsed = mime.parse_message(data)
    except Exception as err:  # one malformed message must never stop a corpus
        text, _ = mime.decode_text(data, None)
        reading.add(source_id=source_id, body=text, source=source, label_fine=label_fine,
                    problem=f"MIME structure could not be parsed: {type(err).__name__}: {err}")
        return
    reading.note(parsed.decode_notes)
    reading.add(source_id=source_id, subject=parsed.subject, body=parsed.body, sender=parsed.sender,
                date=parsed.date, headers=parsed.headers, body_format=parsed.body_format, source=source,
                label_fine=label_fine, replacement_share=parsed.replacement_share)


# --- CLAIR -------------------------------------------------------------------------------------------------------


def _read_clair(reading: _Reading) -> None:
    path = reading.path()
    fmt = reading.spec.get("format") or _table_format(path)
    if fmt in ("jsonl", "csv", "parquet"):
        reading.use_label_map({"0": 0, "1": 1})
        table = _read_table_file(reading, path, fmt)
        present = {name: column for name, column in (("uid", "id"), ("label", "label")) if column in table}
        columns = {"body": "text", **present, **reading.spec.get("columns", {})}
        # The bodies-only distribution is all fraud; a file without labels states that by what it is.
        _rows_from_table(reading, table, str(path), columns, default_label=None if "label" in columns else "1")
        return
    reading.use_label_map({"fraud": 1})
    data = _read_bytes(reading, path)
    starts = [match.start() for match in _CLAIR_SEPARATOR.finditer(data)]
    if not starts:
        raise reading.error(
            f"{path} has no 'From r' separator lines, so it is neither the original CLAIR fradulent_emails.txt"
            f" nor JSON lines; set {reading.key('format')} to jsonl, csv or parquet if it is a table"
        )
    if data[: starts[0]].strip():
        reading.members_skipped["preamble"] = f"{starts[0]} bytes before the first 'From r' line, not a message"
    for number, (start, end) in enumerate(zip(starts, starts[1:] + [len(data)], strict=True), start=1):
        block = data[start:end]
        message = block.split(b"\n", 1)[1] if b"\n" in block else b""
        source_id = f"message {number}"
        message_id = _message_id(message)
        if message_id:
            source_id += f" {message_id}"
        _add_rfc822(reading, message, source_id=source_id, source=str(path), label_fine="fraud")


def _message_id(message: bytes) -> str:
    header_block = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    match = re.search(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", header_block, re.I | re.M)
    return " ".join(match.group(1).decode("ascii", "replace").split()) if match else ""


# --- mbox ----------------------------------------------------------------------------------------------------------


def _read_mbox(reading: _Reading) -> None:
    """A Unix mbox file (plain or .gz): one RFC 822 message after each line that starts with 'From '.

    Its messages carry no labels (label_fine `mbox`); it is read to be scored (`gendiag.evaluate.apply`).
    """
    reading.use_label_map(None)
    path = reading.path()
    data = _read_bytes(reading, path)
    starts = [match.start() for match in _MBOX_SEPARATOR.finditer(data)]
    if not starts:
        raise reading.error(
            f"{path} has no 'From ' separator lines, so it is not an mbox file; give a CSV or JSON lines file"
            f" instead, or set {reading.key('format')}"
        )
    if data[: starts[0]].strip():
        reading.members_skipped["preamble"] = f"{starts[0]} bytes before the first 'From ' line, not a message"
    for number, (start, end) in enumerate(zip(starts, starts[1:] + [len(data)], strict=True), start=1):
        block = data[start:end]
        message = block.split(b"\n", 1)[1] if b"\n" in block else b""
        message = _MBOX_ESCAPED_FROM.sub(rb"\1", message)
        source_id = f"message {number}"
        message_id = _message_id(message)
        if message_id:
            source_id += f" {message_id}"
        _add_rfc822(reading, message, source_id=source_id, source=str(path), label_fine="mbox")


# --- tables --------------------------------------------------------------------------------------------------------


def _read_curated_csv(reading: _Reading) -> None:
    columns = {"sender": "sender", "date": "date", "subject": "subject", "body": "body", "label": "label",
               **reading.spec.get("columns", {})}
    _read_table_rows(reading, reading.path(), "csv", columns, default_label_map={"0": 0, "1": 1},
                     decode_headers=True)


def _read_kaggle_phishing(reading: _Reading) -> None:
    columns = {"body": "Email Text", "label": "Email Type", **reading.spec.get("columns", {})}
    _read_table_rows(reading, reading.path(), "csv", columns,
                     default_label_map={"Safe Email": 0, "Phishing Email": 1})


def _read_generic_table(reading: _Reading) -> None:
    path = reading.path()
    fmt = reading.spec.get("format") or _table_format(path)
    if fmt not in ("csv", "jsonl", "parquet"):
        raise reading.error(
            f"cannot tell the format of {path}; set {reading.key('format')} to one of csv, jsonl, parquet"
        )
    _read_table_rows(reading, path, fmt, _configured_columns(reading), default_label_map={"0": 0, "1": 1})


def _configured_columns(reading: _Reading) -> dict[str, str]:
    configured = dict(reading.spec.get("columns", {}))
    defaults = {"label": "label"} if "body" in configured else {"text": "text", "label": "label"}
    return {**defaults, **configured}


def _table_format(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    return TABLE_FORMATS.get(PurePosixPath(name).suffix)


def _read_table_rows(reading: _Reading, path: Path, fmt: str, columns: dict[str, str], *,
                     default_label_map: dict[str, int], decode_headers: bool = False) -> None:
    reading.use_label_map(default_label_map)
    table = _read_table_file(reading, path, fmt)
    _rows_from_table(reading, table, str(path), columns, decode_headers=decode_headers)


def _rows_from_table(reading: _Reading, table: pd.DataFrame, source: str, columns: dict[str, str], *,
                     default_label: str | None = None, decode_headers: bool = False,
                     label_names: list[str] | None = None) -> None:
    """Turn a table's rows into raw rows.

    `columns` maps corpus fields (body or text, label, uid, subject, sender, date, label_fine)
    to the table's columns; `default_label` stands in when there is no label column;
    `label_names` are the class names of a ClassLabel label column.
    """
    fields = {name: column for name, column in columns.items() if name != "text"}
    fields.setdefault("body", columns.get("text", "text"))
    if default_label is None and not reading.labelled and fields.get("label") not in table.columns:
        default_label = ""  # mail to be scored needs no label column
    if default_label is not None:
        fields.pop("label", None)
    missing = [column for column in fields.values() if column not in table.columns]
    if missing:
        raise reading.error(
            f"{source} lacks columns {missing} (has {list(table.columns)}); map them with {reading.key('columns')}"
        )
    if len(table) == 0:
        raise reading.error(f"{source} has a header but no data rows; check {reading.key('path')}")
    values = {name: table[column].tolist() for name, column in fields.items()}
    empty = [""] * len(table)
    for index in range(len(table)):
        raw_label = values["label"][index] if "label" in values else default_label
        if label_names is not None and _is_class_index(raw_label, label_names):
            keys = (label_names[raw_label], _as_text(raw_label))
        else:
            keys = (_as_text(raw_label).strip(),)
        subject = _as_text(values.get("subject", empty)[index])
        sender = _as_text(values.get("sender", empty)[index])
        if decode_headers:
            subject, sender = _decoded_header(reading, subject), _decoded_header(reading, sender)
        body = _as_text(values["body"][index])
        reading.add(
            source_id=f"id {_as_text(values['uid'][index])}" if "uid" in values else f"row {index + 1}",
            subject=subject, body=body, sender=sender, date=_as_text(values.get("date", empty)[index]),
            body_format="html" if mime.looks_like_html(body) else "plain", source=source,
            label_fine=_as_text(values["label_fine"][index]) if "label_fine" in values else keys[0], label_keys=keys,
        )


def _is_class_index(value: Any, names: list[str]) -> bool:
    return isinstance(value, int) and 0 <= value < len(names)


def _decoded_header(reading: _Reading, value: str) -> str:
    if "=?" not in value:
        return value.strip()
    text, notes = mime.decode_header_value(value)
    reading.note(notes)
    return text


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return mime.decode_text(value, None)[0]
    return str(value)


def _read_bytes(reading: _Reading, path: Path) -> bytes:
    if path.is_dir():
        raise reading.error(f"{path} is a folder; point {reading.key('path')} at the file itself")
    reading.files_read += 1
    try:
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise reading.error(f"{path} is not a readable gzip file ({err}); re-download it") from None
    if not data.strip():
        raise reading.error(f"{path} is empty ({len(data)} bytes); check {reading.key('path')} or re-download it")
    return data


def _read_table_file(reading: _Reading, path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        reading.files_read += 1
        try:
            return pd.read_parquet(path)
        except Exception as err:  # pyarrow raises many unrelated types for one cause
            raise reading.error(f"{path} is not a readable Parquet file ({type(err).__name__}: {err})") from None
    data = _read_bytes(reading, path)
    encoding = reading.spec.get("encoding", "utf-8")
    try:
        text = data.decode(encoding)
    except LookupError:
        raise reading.error(f"{reading.key('encoding')} {encoding!r} is not an encoding Python knows") from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        row = f"data row {line - 1}" if fmt == "csv" else f"row {line}"
        raise reading.error(
            f"{path} is not valid {encoding.upper()} at byte {err.start} (line {line}, about {row}); set"
            f" {reading.key('encoding')} (e.g. windows-1252) or re-encode it as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")
    if fmt == "csv":
        try:
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except pd.errors.ParserError as err:
            raise reading.error(f"{path} is not a well-formed CSV ({err}); fix the quoting of that line") from None
    return _parse_json_records(reading, path, text)


def _parse_json_records(reading: _Reading, path: Path, text: str) -> pd.DataFrame:
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise reading.error(f"{path} is not valid JSON at line {err.lineno} ({err.msg}); fix that line") from None
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise reading.error(
                    f"{path} row {number} is not valid JSON ({err.msg}); fix or remove that line"
                ) from None
    if not all(isinstance(record, dict) for record in records):
        raise reading.error(f"{path} must hold one JSON object per line (or a list of objects)")
    return pd.DataFrame.from_records(records)


# --- Hugging Face datasets -----------------------------------------------------------------------------------------


def _read_hf_dataset(reading: _Reading) -> None:
    import datasets

    reading.use_label_map({"0": 0, "1": 1})
    split = reading.spec.get("split")
    if reading.spec.get("path"):
        path = reading.path()
        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise reading.error(
                f"{path} is not a dataset saved with save_to_disk ({err}); fix {reading.key('path')}"
            ) from None
        origin = str(path)
    elif reading.spec.get("dataset"):
        name = reading.spec["dataset"]
        loaded, origin = _load_hub_dataset(reading, datasets), f"{name}::{split}" if split else name
    else:
        raise reading.error(f"the hf_dataset loader needs {reading.key('path')} or {reading.key('dataset')}")
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise reading.error(f"{origin} holds splits {sorted(loaded)}; set {reading.key('split')} to one of them")
        loaded, origin = loaded[split], f"{origin}::{split}"
    reading.files_read += 1
    columns = _configured_columns(reading)
    label_feature = loaded.features.get(columns["label"])
    label_names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    _rows_from_table(reading, loaded.to_pandas(), origin, columns, label_names=label_names)


def _load_hub_dataset(reading: _Reading, datasets: Any) -> Any:
    name = reading.spec["dataset"]
    offline = [var for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(var, "").strip().lower() in _OFFLINE_VALUES]
    try:
        return datasets.load_dataset(name, reading.spec.get("config_name"), split=reading.spec.get("split"),
                                     revision=reading.spec.get("revision"))
    except Exception as err:  # the hub client raises many types for "could not fetch"
        detail = f"{type(err).__name__}: {err}"
        if offline or _looks_like_network_failure(err):
            cause = f"{' and '.join(offline)} set" if offline else "the network is unreachable"
            raise reading.error(
                f"hub dataset {name!r} is not in the local cache and cannot be downloaded ({cause}; {detail}); run"
                f" the ingest once online, or save it with Dataset.save_to_disk and point {reading.key('path')} at"
                " that folder instead of the hub id"
            ) from None
        raise reading.error(
            f"hub dataset {name!r} could not be loaded ({detail}); check {reading.key('dataset')},"
            f" {reading.key('config_name')}, {reading.key('split')} and {reading.key('revision')}"
        ) from None


def _looks_like_network_failure(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return isinstance(err, ConnectionError) or any(
        word in text for word in ("connection", "offline", "timed out", "resolve", "network", "couldn't reach"))


LOADERS: dict[str, Callable[[_Reading], None]] = {
    "enron_spam": _read_enron_spam,
    "spamassassin": _read_spamassassin,
    "curated_csv": _read_curated_csv,
    "kaggle_phishing": _read_kaggle_phishing,
    "clair": _read_clair,
    "mbox": _read_mbox,
    "table": _read_generic_table,
    "hf_dataset": _read_hf_dataset,
}
