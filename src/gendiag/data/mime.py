"""Decode one raw RFC 822 message (bytes) into the text fields of the corpus table (DESIGN.md section 5).

Real mail declares charsets it does not use, uses charsets Python does not know, folds and
mis-encodes its headers and nests MIME parts in odd ways. Decoding therefore never raises on
content: every guess it had to make is written to `decode_notes`, so that the ingest report can
count them and a reader can judge how much of a corpus rests on guesses.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import functools
import html
import re
from dataclasses import dataclass, field
from email.message import Message

import bs4
from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag

# Labels that mean "the sender did not know the charset"; they name no codec.
UNKNOWN_CHARSETS = frozenset({"x-unknown", "unknown", "unknown-8bit", "x-user-defined", "default", "default_charset",
                              "none", "charset", "us-ascii_charset"})
# Spellings seen in real mail that Python's codec registry does not know under that name.
CHARSET_ALIASES = {
    "_iso-2022-jp$esc": "iso-2022-jp",
    "x-sjis": "shift_jis",
    "x-euc-jp": "euc-jp",
    "ks_c_5601": "cp949",
    "ks_c_5601-1987": "cp949",
    "x-gbk": "gbk",
    "gb2312_charset": "gb2312",
    "chinesebig5": "big5",
    "x-x-big5": "big5",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-mac-roman": "mac-roman",
    "win-1252": "cp1252",
    "cp-1252": "cp1252",
    "iso-latin-1": "latin-1",
}
# HTML elements whose text a reader never sees.
INVISIBLE_TAGS = frozenset({"script", "style", "template", "title"})
# A <head> left unclosed swallows the document under html.parser; then only its invisible tags go.
HEAD_CONTENT_SIGNS = ["body", "div", "p", "table", "font", "center"]
BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "caption", "center", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
    "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead", "tr", "ul",
})
CELL_TAGS = frozenset({"td", "th"})
# Parts a person reads as the message; other text/* (vcards, report headers) are attachments.
READABLE_TEXT_TYPES = frozenset({"text/plain", "text/html", "text/enriched", "text/richtext"})
_NON_TEXT_NODES = (Comment, Declaration, Doctype, ProcessingInstruction)
_BLOCK_BOUNDARY = object()
# Codecs (by Python's canonical name) with one byte per character, where EF BF BD cannot be part of a character.
_SINGLE_BYTE_CODEC = re.compile(r"cp125\d|cp874|iso8859-\d+|koi8-[ru]|mac-roman|windows-125\d|latin-1")
# Where pure ASCII bytes decode as ASCII (not, say, UTF-7 or ISO-2022-JP, whose escapes are ASCII too).
ASCII_SUPERSETS = frozenset({"ascii", "utf-8"})
_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?(.*?)\?=", re.S)
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_CONTENT_TYPE = re.compile(r"[a-z0-9.+-]+/[a-z0-9.+-]+")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_HTML_SNIFF = re.compile(r"<(?:html|body|head|div|p|br|table|tr|td|span|font|b|i|center|a\s+href)\b[^>]*>", re.I)


@dataclass
class ParsedMessage:
    subject: str = ""
    sender: str = ""
    date: str = ""
    message_id: str = ""
    headers: str = ""
    body: str = ""
    body_format: str = "plain"
    attachments: list[str] = field(default_factory=list)
    decode_notes: list[str] = field(default_factory=list)
    replacement_share: float = 0.0


def parse_message(raw: bytes) -> ParsedMessage:
    """Decode headers and the readable body of one raw RFC 822 message.

    In multipart/alternative the text/plain version wins over text/html; other multiparts
    contribute all their readable text parts in order. When the body comes from text/html parts
    only, `body` is that HTML (call `html_to_text` to read it) and `body_format` is "html"; when
    plain and HTML parts are mixed, the HTML is converted to text and the format is "plain".
    """
    # compat32 never raises on malformed headers; it records defects, which become notes.
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    notes: list[str] = []
    header_lines = []
    fields: dict[str, str] = {}
    for name, value in message.raw_items():
        text, header_notes = decode_header_value(value)
        notes.extend(f"header {name}: {note}" for note in header_notes)
        header_lines.append(f"{name}: {text}")
        fields.setdefault(name.lower(), text)

    attachments: list[str] = []
    pieces = _readable_pieces(message, attachments, notes)
    if pieces and all(fmt == "html" for fmt, _ in pieces):
        body, body_format = "\n".join(text for _, text in pieces), "html"
    else:
        body = "\n".join(text if fmt == "plain" else html_to_text(text) for fmt, text in pieces)
        body_format = "plain"
    return ParsedMessage(
        subject=fields.get("subject", ""),
        sender=fields.get("from", ""),
        date=fields.get("date", ""),
        message_id=fields.get("message-id", ""),
        headers="\n".join(header_lines),
        body=body,
        body_format=body_format,
        attachments=attachments,
        decode_notes=notes,
        replacement_share=replacement_share(body),
    )


def replacement_share(text: str) -> float:
    """Share of U+FFFD in `text`: how much of it could not be decoded."""
    return text.count("\ufffd") / len(text) if text else 0.0


def looks_like_html(text: str) -> bool:
    """Whether a body taken from a table (no MIME type to go by) is HTML markup."""
    head = text[:20000]
    if re.search(r"<(?:!doctype\s+html|html|body)\b", head, re.I):
        return True
    return len(_HTML_SNIFF.findall(head)) >= 3


def _readable_pieces(part: Message, attachments: list[str], notes: list[str]) -> list[tuple[str, str]]:
    """(format, text) of the readable parts under `part`, in reading order; other parts go to `attachments`.

    Iterative, because spam nests parts deeply enough to exhaust Python's recursion limit.
    """
    pieces: list[tuple[str, str]] = []
    pending: list[Message] = [part]
    while pending:
        current = pending.pop()
        notes.extend(f"MIME defect: {type(defect).__name__}" for defect in current.defects)
        content_type = _content_type(current)
        if current.is_multipart():
            children = current.get_payload()
            if content_type == "message/rfc822" or content_type.startswith("multipart/"):
                if content_type == "multipart/alternative":
                    children = [_preferred_alternative(children, attachments, notes)]
                pending.extend(reversed([child for child in children if child is not None]))
            else:
                attachments.append(content_type)
            continue
        if content_type.startswith("multipart/"):
            # Declared multipart without a usable boundary: the payload is all we have.
            notes.append(f"{content_type} without a usable boundary, read as plain text")
            content_type = "text/plain"
        if content_type not in READABLE_TEXT_TYPES:
            attachments.append(content_type)
            continue
        payload = current.get_payload(decode=True)
        if payload is None:
            continue
        text, text_notes = decode_text(payload, current.get_content_charset())
        notes.extend(text_notes)
        pieces.append(("html" if content_type == "text/html" else "plain", text))
    return pieces


def _preferred_alternative(children: list[Message], attachments: list[str], notes: list[str]) -> Message | None:
    """The alternative a reader would see as text: the first non-empty plain one, else the first HTML one."""
    if not children:
        return None
    extracted = []
    for child in children:
        child_attachments: list[str] = []
        child_notes: list[str] = []
        pieces = _readable_pieces(child, child_attachments, child_notes)
        extracted.append((child, pieces, child_attachments, child_notes))
    has_text = [entry for entry in extracted if any(text.strip() for _, text in entry[1])]
    plain = [entry for entry in has_text if all(fmt == "plain" for fmt, _ in entry[1])]
    chosen = (plain or has_text or extracted)[0]
    # The chosen child is walked again by the caller, which records its own notes and attachments.
    for entry in extracted:
        if entry is not chosen:
            attachments.extend(entry[2])
    return chosen[0]


def _content_type(part: Message) -> str:
    # Malformed headers like "text/plain charset=us-ascii" still name a usable type first.
    match = _CONTENT_TYPE.match(part.get_content_type().lower())
    return match.group(0) if match else "text/plain"


@functools.lru_cache(maxsize=256)
def python_codec(charset: str) -> str | None:
    """The Python text codec for a declared charset label, or None when Python cannot decode it."""
    label = charset.strip().strip("\"'").lower().split("*", 1)[0]
    if not label or label in UNKNOWN_CHARSETS:
        return None
    label = CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    # base64, rot13 and zlib are codecs too, but bytes-to-bytes ones that cannot decode text.
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode_text(data: bytes, charset: str | None) -> tuple[str, list[str]]:
    """Decode bytes declared (or not) as `charset`; returns the text and notes on what had to be guessed.

    A declared charset Python knows is used (ISO-8859-1 read as its superset windows-1252, us-ascii
    on 8-bit bytes as windows-1252), with invalid bytes replaced by U+FFFD. Without a usable
    declaration: UTF-8 if the bytes are valid UTF-8, else windows-1252, else latin-1.
    """
    codec = python_codec(charset) if charset else None
    if data.isascii() and (codec is None or codec in ASCII_SUPERSETS or _is_single_byte(codec)):
        return _newlines(data.decode("ascii")), []
    notes: list[str] = []
    if codec == "ascii":
        text, used = _decode_8bit_fallback(data, ("windows-1252", "latin-1"), notes)
        notes.insert(0, f"charset '{charset}' declared on 8-bit bytes, decoded as {used}")
    elif codec == "iso8859-1":
        # Mail labelled ISO-8859-1 is overwhelmingly windows-1252 (as browsers assume).
        text, _ = _decode_8bit_fallback(data, ("windows-1252", "latin-1"), notes)
    elif codec is not None:
        try:
            text = _decode_keeping_lost_characters(data, codec, notes)
        except UnicodeError:
            text = data.decode(codec, errors="replace")
            notes.insert(0, f"invalid bytes for declared charset '{charset}' replaced with U+FFFD")
    else:
        text, used = _decode_8bit_fallback(data, ("utf-8", "windows-1252", "latin-1"), notes)
        what = f"charset '{charset}' unknown" if charset else "no charset declared"
        notes.insert(0, f"{what}, decoded as {used}")
    return _newlines(text), notes


def _decode_8bit_fallback(data: bytes, candidates: tuple[str, ...], notes: list[str]) -> tuple[str, str]:
    """Decode with the first candidate that accepts the bytes; the last one must accept any bytes."""
    for candidate in candidates[:-1]:
        try:
            return _decode_keeping_lost_characters(data, candidate, notes), candidate
        except UnicodeDecodeError:
            continue
    return _decode_keeping_lost_characters(data, candidates[-1], notes), candidates[-1]


def _decode_keeping_lost_characters(data: bytes, codec: str, notes: list[str]) -> str:
    # Some redistributed corpora (SpamAssassin among them) replaced bytes they could not convert by
    # UTF-8 U+FFFD (EF BF BD) inside text of another charset; read as that charset they become the
    # mojibake "ï¿½", which would hide the loss from `replacement_share` and mark the corpus instead.
    if b"\xef\xbf\xbd" not in data or not _is_single_byte(codec):
        return data.decode(codec)
    notes.append("UTF-8 U+FFFD bytes inside single-byte-charset text kept as U+FFFD")
    return "\ufffd".join(piece.decode(codec) for piece in data.split(b"\xef\xbf\xbd"))


def _is_single_byte(codec: str) -> bool:
    return bool(_SINGLE_BYTE_CODEC.fullmatch(python_codec(codec) or ""))


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_header_value(value: str | bytes) -> tuple[str, list[str]]:
    """Unfold a header value and decode its RFC 2047 encoded-words, tolerating malformed ones.

    Tolerated: whitespace or folds inside an encoded-word, missing base64 padding, unknown
    charsets, raw 8-bit bytes. Adjacent encoded-words in one charset are decoded together, so a
    multi-byte character split across two words survives. An encoded-word that cannot be decoded
    at all is kept literally and noted.
    """
    # Text outside encoded-words is bytes of unknown charset when it comes from a raw message (the
    # email package carries them as surrogate escapes) and already Unicode when it comes from a table.
    literal_charset = None
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = value.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            raw, literal_charset = value.encode("utf-8", "surrogatepass"), "utf-8"
    raw = _FOLD.sub(b"", raw)
    notes: list[str] = []
    out: list[str] = []
    run_charset: bytes | None = None
    run_bytes = b""
    position = 0

    def flush_run() -> None:
        nonlocal run_charset, run_bytes
        if run_charset is not None:
            text, text_notes = decode_text(run_bytes, run_charset.decode("ascii", "replace"))
            out.append(text)
            notes.extend(text_notes)
        run_charset, run_bytes = None, b""

    for match in _ENCODED_WORD.finditer(raw):
        between = raw[position:match.start()]
        position = match.end()
        # Folds and stray spaces inside an encoded-word are not part of its payload.
        payload = re.sub(rb"\s+", b"", match.group(3))
        decoded = _decode_encoded_word(match.group(2).upper().decode("ascii"), payload)
        if decoded is None:
            flush_run()
            out.append(_literal(between, literal_charset, notes) + match.group(0).decode("ascii", "replace"))
            notes.append("malformed encoded-word kept as is")
            continue
        # RFC 2047: whitespace between two encoded-words is not part of the text.
        if between.strip() or run_charset is None:
            flush_run()
            out.append(_literal(between, literal_charset, notes))
        charset = match.group(1).split(b"*", 1)[0].lower()
        if run_charset is not None and charset != run_charset:
            flush_run()
        run_charset = charset
        run_bytes += decoded
    flush_run()
    out.append(_literal(raw[position:], literal_charset, notes))
    return "".join(out).strip(), notes


def _decode_encoded_word(encoding: str, payload: bytes) -> bytes | None:
    if encoding == "Q":
        return binascii.a2b_qp(payload, header=True)
    try:
        return base64.b64decode(payload + b"=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _literal(raw: bytes, charset: str | None, notes: list[str]) -> str:
    if not raw:
        return ""
    text, text_notes = decode_text(raw, charset)
    notes.extend(text_notes)
    return text.replace("\n", " ")


def html_to_text(markup: str) -> str:
    """Readable text of an HTML document: what a mail client shows, one block element per line.

    Scripts, styles, the head and comments are dropped; link text is kept; entities are
    unescaped; adjacent block boundaries make one line break, <br> its own; runs of blank lines
    collapse to one.
    """
    try:
        soup = bs4.BeautifulSoup(markup, "html.parser")
    except bs4.exceptions.ParserRejectedMarkup:
        return _tidy_lines(html.unescape(re.sub(r"<[^>]*>", " ", markup)))
    out: list[str] = []
    at_line_start = True

    def emit(text: str) -> None:
        nonlocal at_line_start
        out.append(text)
        if "\n" in text:
            at_line_start = not text.rsplit("\n", 1)[1].strip()
        elif text.strip():
            at_line_start = False

    def block_boundary() -> None:
        if not at_line_start:
            emit("\n")

    # Iterative walk: spam's unclosed tags nest deeper than Python's recursion limit.
    pending: list[bs4.PageElement | str | object] = list(reversed(soup.contents))
    while pending:
        node = pending.pop()
        if node is _BLOCK_BOUNDARY:
            block_boundary()
        elif isinstance(node, Tag):
            name = node.name.lower()
            if name in INVISIBLE_TAGS or (name == "head" and node.find(HEAD_CONTENT_SIGNS) is None):
                continue
            if name == "br":
                emit("\n")
                continue
            if name in BLOCK_TAGS:
                block_boundary()
                pending.append(_BLOCK_BOUNDARY)
            elif name in CELL_TAGS:
                pending.append(" ")
            pending.extend(reversed(node.contents))
        elif isinstance(node, NavigableString):
            if not isinstance(node, _NON_TEXT_NODES):
                emit(re.sub(r"\s+", " ", str(node)))
        else:
            emit(node)
    return _tidy_lines("".join(out))


def _tidy_lines(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
