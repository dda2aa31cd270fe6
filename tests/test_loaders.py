"""Loaders for the distributed corpus formats and the MIME decoding under them.

The real-corpus tests read /work/shared/data (README counts); they skip when it is absent, as in
a fresh clone. Every other test writes small files of the same layouts into tmp_path, including
each kind of broken input, and checks that the error names the file, the row or member, and the fix.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import tarfile

import pandas as pd
import pytest

from conftest import SHARED_DATA
from gendiag.data.corpus import IngestError
from gendiag.data.loaders import RAW_COLUMNS, read_source
from gendiag.data.mime import decode_header_value, decode_text, html_to_text, parse_message


def _shared(relative: str):
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real corpus {path} is absent (fresh clone without ../shared/data)")
    return path


@pytest.fixture(scope="module")
def enron():
    return read_source({"loader": "enron_spam", "path": str(_shared("enron-spam"))}, "enron")


@pytest.fixture(scope="module")
def spamassassin():
    return read_source({"loader": "spamassassin", "path": str(_shared("spamassassin"))}, "spamassassin")


@pytest.fixture(scope="module")
def nazario():
    return read_source({"loader": "curated_csv", "path": str(_shared("nazario/nazario.csv"))}, "nazario")


@pytest.fixture(scope="module")
def clair():
    return read_source({"loader": "clair", "path": str(_shared("clair-419/fraud_bodies.jsonl.gz"))}, "clair")


# --- real corpora ------------------------------------------------------------------------------------------------


def test_enron_spam_real(enron):
    frame, notes = enron
    assert list(frame.columns) == RAW_COLUMNS
    assert len(frame) == 33716 and frame["source_id"].is_unique
    assert set(frame["label_fine"]) == {"ham", "spam"} and set(frame["label"]) == {0, 1}
    assert notes["files_read"] == 6
    # Each tarball carries a Summary.txt next to ham/ and spam/: listed, not read as a message.
    assert sum(reason.startswith("not under") for reason in notes["members_skipped"].values()) == 6
    first = frame.set_index("source_id").loc["enron1/ham/0001.1999-12-10.farmer.ham.txt"]
    assert first["date"] == "1999-12-10" and first["label"] == 0 and first["subject"] and "\r" not in first["body"]
    assert notes["decode_notes"].get("no charset declared, decoded as windows-1252", 0) > 1000
    assert notes["problem_rows"] == (frame["problem"] != "").sum() < 0.005 * len(frame)
    assert set(notes["problems"]) <= {"empty message (no subject, no body)"}


def test_spamassassin_real(spamassassin):
    frame, notes = spamassassin
    assert len(frame) == 6046 and frame["source_id"].is_unique
    assert frame["label"].value_counts().to_dict() == {0: 4150, 1: 1896}
    assert set(frame["label_fine"]) == {"easy_ham", "easy_ham_2", "hard_ham", "spam", "spam_2"}
    by_id = frame.set_index("source_id")

    html_only = by_id.loc["spam/00001.7848dde101aa985090474a91ec93fcf0"]
    assert html_only["body_format"] == "html" and "<" in html_only["body"]
    assert "Save up to 70% on Life Insurance." in html_to_text(html_only["body"])
    assert (frame["body_format"] == "html").sum() > 900

    gb2312_base64 = by_id.loc["spam_2/00853.ee1fe2f2d16e8b27be79a670b8597252"]
    assert gb2312_base64["body"].startswith("黄山旅游天天发")
    quoted_printable = by_id.loc["spam_2/00008.ccf927a6aec028f5472ca7b9db9eee20"]
    assert "bgColor=#C0C0C0" in quoted_printable["body"] and "=3D" not in quoted_printable["body"]

    assert not frame["subject"].str.contains("=?", regex=False).any()
    assert "Received: " in frame["headers"].iloc[0]
    # Some spam was stored with its bytes already replaced by U+FFFD: few, and all flagged.
    assert 0 < notes["problem_rows"] <= 20 and set(notes["problems"]) == {"undecodable bytes"}


def test_nazario_real_decodes_rfc2047_subjects(nazario):
    frame, notes = nazario
    raw = pd.read_csv(SHARED_DATA / "nazario/nazario.csv", dtype=str, keep_default_na=False)
    assert raw["subject"].str.contains("=?", regex=False).sum() == 137
    assert len(frame) == 1563 and frame["source_id"].is_unique and set(frame["label"]) == {1}
    assert frame["subject"].str.contains("=?", regex=False).sum() <= 2
    assert "Compte Suspecté !!!" in set(frame["subject"])
    assert frame["source_id"].iloc[16] == "row 17"
    assert notes["problem_rows"] <= 20


def test_clair_real(clair):
    frame, notes = clair
    assert len(frame) == 3978 and frame["source_id"].is_unique and set(frame["label"]) == {1}
    assert frame["source_id"].iloc[0] == "id 0"
    # A few bodies are executables pasted as text; they must be flagged, not learned from.
    assert 0 < notes["problem_rows"] <= 10 and set(notes["problems"]) == {"undecodable bytes"}


# --- helpers for synthetic files ------------------------------------------------------------------------------------


def _tarball(path, members: dict[str, bytes], mode: str = "w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            if name.endswith("/"):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _message(headers: str, body: bytes | str = b"") -> bytes:
    body = body.encode("ascii") if isinstance(body, str) else body
    return headers.strip("\n").replace("\n", "\r\n").encode("ascii") + b"\r\n\r\n" + body


ENRON_MEMBERS = {
    "enron1/": b"",
    "enron1/Summary.txt": b"Legitimate\r\n- Owner: farmer-d\r\n",
    "enron1/ham/0001.1999-12-10.farmer.ham.txt": b"Subject: christmas tree farm pictures\r\n\r\nsee you there .\r\n",
    "enron1/spam/0002.2004-01-02.GP.spam.txt": b"Subject: caf\xe9 deals\r\nbuy now \x96 cheap\r\n",
    "enron2/ham/0003.2000-01-01.kaminski.ham.txt": b"Subject: re : meeting\r\nok\r\n",
}


# --- enron_spam ----------------------------------------------------------------------------------------------------


def test_enron_tarball_and_extracted_folder_agree(tmp_path):
    archive = _tarball(tmp_path / "enron1.tar.gz", ENRON_MEMBERS)
    from_tar, notes = read_source({"loader": "enron_spam", "path": str(archive)}, "e")
    folder = tmp_path / "extracted"
    for name, data in ENRON_MEMBERS.items():
        if not name.endswith("/"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    from_folder, _ = read_source({"loader": "enron_spam", "path": str(folder)}, "e")

    assert list(from_tar["source_id"]) == list(from_folder["source_id"]) == sorted(
        name for name in ENRON_MEMBERS if "/ham/" in name or "/spam/" in name)
    assert from_tar.drop(columns="source").equals(from_folder.drop(columns="source"))
    spam = from_tar.set_index("source_id").loc["enron1/spam/0002.2004-01-02.GP.spam.txt"]
    assert spam["subject"] == "café deals" and spam["body"] == "buy now – cheap\n"
    assert spam["label"] == 1 and spam["label_fine"] == "spam" and spam["date"] == "2004-01-02"
    assert spam["source"] == f"{archive}::enron1/spam/0002.2004-01-02.GP.spam.txt"
    assert notes["members_skipped"]["enron1/"] == "directory"
    assert "not a message" in notes["members_skipped"]["enron1/Summary.txt"]
    assert notes["decode_notes"] == {"no charset declared, decoded as windows-1252": 1}


def test_enron_include_takes_a_subset_and_counts_the_rest(tmp_path):
    _tarball(tmp_path / "enron1.tar.gz", ENRON_MEMBERS)
    frame, notes = read_source({"loader": "enron_spam", "path": str(tmp_path), "include": ["enron2/*"]}, "e")
    assert list(frame["source_id"]) == ["enron2/ham/0003.2000-01-01.kaminski.ham.txt"]
    assert notes["members_excluded"] == 3


def test_truncated_tarball_names_the_archive_the_last_member_and_the_fix(tmp_path):
    members = {f"enron1/ham/{i:04d}.2000-01-01.x.ham.txt": f"Subject: {i}\n".encode() + bytes(range(256)) * 40
               for i in range(40)}
    archive = _tarball(tmp_path / "enron1.tar.gz", members)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(IngestError, match=r"enron1\.tar\.gz is truncated or corrupt after member enron1/ham/\d{4}"
                                          r".*re-download it \(the sha256 in the config catches this\)"):
        read_source({"loader": "enron_spam", "path": str(archive)}, "e")


def test_uncompressed_tar_cut_at_a_member_boundary_is_caught(tmp_path):
    archive = _tarball(tmp_path / "enron1.tar", ENRON_MEMBERS, mode="w")
    data = archive.read_bytes()
    # Keep the first three headers and data blocks; drop everything after, including the end marker.
    archive.write_bytes(data[: 512 * 5])
    with pytest.raises(IngestError, match=r"enron1\.tar is truncated or corrupt after member enron1/ham/0001"):
        read_source({"loader": "enron_spam", "path": str(archive)}, "e")


def test_empty_archive_and_missing_path(tmp_path):
    (tmp_path / "enron1.tar.gz").write_bytes(b"")
    with pytest.raises(IngestError, match=r"enron1\.tar\.gz is empty \(0 bytes\); re-download"):
        read_source({"loader": "enron_spam", "path": str(tmp_path / "enron1.tar.gz")}, "e")
    with pytest.raises(IngestError, match=r"nowhere does not exist; fix `corpora\.e\.path`"):
        read_source({"loader": "enron_spam", "path": str(tmp_path / "nowhere")}, "e")
    with pytest.raises(IngestError, match=r"needs a path; set `corpora\.e\.path`"):
        read_source({"loader": "enron_spam"}, "e")
    with pytest.raises(IngestError, match=r"unknown loader 'maildir'.*`corpora\.e\.loader`"):
        read_source({"loader": "maildir", "path": str(tmp_path)}, "e")


# --- spamassassin --------------------------------------------------------------------------------------------------

ALTERNATIVE = _message("""
From: "Shop" <shop@example.com>
Subject: =?iso-8859-1?Q?Offre_sp=E9ciale?=
Date: Mon, 9 Sep 2002 11:34:43 +0100
Message-ID: <alt@example.com>
Content-Type: multipart/alternative; boundary="XX"
""", """--XX
Content-Type: text/plain; charset=us-ascii

Plain version.
--XX
Content-Type: text/html; charset=us-ascii

<html><body><p>HTML version.</p></body></html>
--XX--
""")
HTML_ONLY = _message("""
From: spam@example.com
Subject: =?utf-8?B?V2luIGEgcHJpemUg4oKs?=
Content-Type: text/html; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable
""", "<html><head><title>t</title><style>p {color: red}</style></head><body>\n<p>Caf=E9 &amp; cr=E8me</p>"
     "<p>Click <a href=3D'http://x.example'>here</a></p></body></html>\n")
INVALID_UTF8 = _message("""
From: a@example.com
Subject: bytes
Content-Type: text/plain; charset=utf-8
""", b"Price: 10 \xff\xfe only, the rest is fine text for a reader to read.\n")
BINARY_JUNK = _message("""
From: b@example.com
Subject: junk
Content-Type: text/plain; charset=utf-8
""", bytes(range(128, 256)) * 4)
# Without a declared charset nothing is "invalid" (latin-1 takes any byte); the control characters give it away.
BINARY_UNDECLARED = _message("Subject: attachment pasted as text", bytes(range(256)) * 4)


def test_spamassassin_groups_labels_cmds_and_mime(tmp_path):
    archive = _tarball(tmp_path / "corpus.tar.bz2", {
        "easy_ham/00001.aaaa": ALTERNATIVE,
        "easy_ham/00002.bbbb": INVALID_UTF8,
        "easy_ham/cmds": b"mv 00001.x 00001.aaaa\n",
        "spam/00001.cccc": HTML_ONLY,
        "spam/00002.dddd": BINARY_JUNK,
        "spam/00003.eeee": BINARY_UNDECLARED,
    }, mode="w:bz2")
    frame, notes = read_source({"loader": "spamassassin", "path": str(archive)}, "sa")
    rows = frame.set_index("source_id")
    assert list(rows.index) == ["easy_ham/00001.aaaa", "easy_ham/00002.bbbb", "spam/00001.cccc", "spam/00002.dddd",
                                "spam/00003.eeee"]
    assert list(frame["label"]) == [0, 0, 1, 1, 1] and list(frame["label_fine"]) == ["easy_ham"] * 2 + ["spam"] * 3
    assert "not a message" in notes["members_skipped"]["easy_ham/cmds"]

    alternative = rows.loc["easy_ham/00001.aaaa"]
    assert alternative["body"].strip() == "Plain version." and alternative["body_format"] == "plain"
    assert alternative["subject"] == "Offre spéciale" and alternative["sender"] == '"Shop" <shop@example.com>'
    assert alternative["date"] == "Mon, 9 Sep 2002 11:34:43 +0100" and "Message-ID: <alt@example.com>" in (
        alternative["headers"])

    html_row = rows.loc["spam/00001.cccc"]
    assert html_row["body_format"] == "html" and html_row["subject"] == "Win a prize €"
    assert html_to_text(html_row["body"]) == "Café & crème\nClick here"

    assert rows.loc["easy_ham/00002.bbbb", "problem"] == ""
    assert notes["decode_notes"]["invalid bytes for declared charset 'utf-8' replaced with U+FFFD"] == 2
    assert re.fullmatch(r"undecodable bytes: \d+% of the body is U\+FFFD", rows.loc["spam/00002.dddd", "problem"])
    assert re.fullmatch(r"binary content: \d+% of the body is control characters",
                        rows.loc["spam/00003.eeee", "problem"])
    assert notes["problem_rows"] == 2


def test_spamassassin_folder_of_tarballs_include_and_unknown_group(tmp_path):
    _tarball(tmp_path / "easy_ham_2.tar.bz2", {"easy_ham_2/": b"", "easy_ham_2/00001.a": ALTERNATIVE}, "w:bz2")
    _tarball(tmp_path / "spam_2.tar.bz2", {"spam_2/00001.b": HTML_ONLY}, "w:bz2")
    frame, notes = read_source({"loader": "spamassassin", "path": str(tmp_path), "include": ["easy_ham_2/*"]}, "sa")
    assert list(frame["source_id"]) == ["easy_ham_2/00001.a"] and notes["members_excluded"] == 1
    assert notes["files_read"] == 2

    _tarball(tmp_path / "other.tar.bz2", {"other/00001.c": ALTERNATIVE}, "w:bz2")
    with pytest.raises(IngestError, match=r"other\.tar\.bz2::other/00001\.c has label 'other', outside the mapping"
                                          r".*\(1 rows have it\); extend `corpora\.sa\.label_map`"):
        read_source({"loader": "spamassassin", "path": str(tmp_path)}, "sa")
    frame, _ = read_source({"loader": "spamassassin", "path": str(tmp_path),
                            "label_map": {"easy_ham_2": 0, "spam_2": 1, "other": 1}}, "sa")
    assert frame.set_index("source_id")["label"].to_dict() == {"easy_ham_2/00001.a": 0, "other/00001.c": 1,
                                                                "spam_2/00001.b": 1}


def test_one_unparseable_message_gets_a_problem_not_an_exception(tmp_path, monkeypatch):
    from gendiag.data import mime

    original = mime.parse_message

    def fragile(raw: bytes):
        if b"junk" in raw:
            raise AttributeError("'NoneType' object has no attribute 'get'")
        return original(raw)

    monkeypatch.setattr(mime, "parse_message", fragile)
    folder = tmp_path / "spam"
    folder.mkdir()
    (folder / "00001.a").write_bytes(HTML_ONLY)
    (folder / "00002.b").write_bytes(BINARY_JUNK)
    frame, notes = read_source({"loader": "spamassassin", "path": str(folder)}, "sa")
    assert list(frame["source_id"]) == ["00001.a", "00002.b"] and list(frame["label"]) == [1, 1]
    assert frame["problem"].iloc[1].startswith("MIME structure could not be parsed: AttributeError")
    assert notes["problems"] == {"MIME structure could not be parsed": 1}


# --- curated_csv ---------------------------------------------------------------------------------------------------

CURATED_HEADER = "sender,receiver,date,subject,body,urls,label\n"


def test_curated_csv_decodes_subjects_and_keeps_duplicates(tmp_path):
    path = tmp_path / "nazario.csv"
    path.write_text(
        CURATED_HEADER
        + '"=?utf-8?Q?PayPal?= <x@example.com>",a@b.c,"Fri, 30 Oct 2015",'
        + '"=?utf-8?Q?Check=20Your=20Payment=20Logg?=\n\t=?utf-8?Q?ing?=","Dear client, <b>verify</b>",0,1\n'
        + 'x@example.com,,2016,Hello,"body, with comma",1,1\n'
        + 'x@example.com,,2016,Hello,"body, with comma",1,1\n'
        + ',,,,,0,1\n',
        encoding="utf-8",
    )
    frame, notes = read_source({"loader": "curated_csv", "path": str(path)}, "naz")
    assert list(frame["source_id"]) == ["row 1", "row 2", "row 3", "row 4"]
    assert frame["subject"].iloc[0] == "Check Your Payment Logging" and frame["sender"].iloc[0] == (
        "PayPal <x@example.com>")
    assert frame["date"].iloc[0] == "Fri, 30 Oct 2015" and frame["body"].iloc[1] == "body, with comma"
    assert frame["problem"].iloc[3] == "empty message (no subject, no body)"
    assert notes["problem_rows"] == 1 and set(frame["label"]) == {1}


def test_csv_without_the_text_column_lists_what_it_has(tmp_path):
    path = tmp_path / "nazario.csv"
    path.write_text("sender,subject,label\na,b,1\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"nazario\.csv lacks columns \['date', 'body'\] \(has \['sender', 'subject',"
                                          r" 'label'\]\); map them with `corpora\.naz\.columns`"):
        read_source({"loader": "curated_csv", "path": str(path)}, "naz")


def test_csv_in_windows_1252_needs_its_encoding(tmp_path):
    path = tmp_path / "cp1252.csv"
    path.write_bytes((CURATED_HEADER + "a,,d,ok,fine,0,1\na,,d,café,“quoted”,0,1\n").encode("cp1252"))
    with pytest.raises(IngestError, match=r"cp1252\.csv is not valid UTF-8 at byte 70 \(line 3, about data row 2\);"
                                          r" set `corpora\.naz\.encoding` \(e\.g\. windows-1252\) or re-encode"):
        read_source({"loader": "curated_csv", "path": str(path)}, "naz")
    frame, _ = read_source({"loader": "curated_csv", "path": str(path), "encoding": "windows-1252"}, "naz")
    assert frame["subject"].iloc[1] == "café" and frame["body"].iloc[1] == "“quoted”"


def test_empty_and_header_only_csv(tmp_path):
    empty, header_only = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_bytes(b"")
    header_only.write_text(CURATED_HEADER, encoding="utf-8")
    with pytest.raises(IngestError, match=r"empty\.csv is empty \(0 bytes\)"):
        read_source({"loader": "curated_csv", "path": str(empty)}, "naz")
    with pytest.raises(IngestError, match=r"header\.csv has a header but no data rows"):
        read_source({"loader": "curated_csv", "path": str(header_only)}, "naz")


def test_label_outside_the_mapping_names_row_value_and_count(tmp_path):
    path = tmp_path / "mail.csv"
    path.write_text(CURATED_HEADER + "".join(f"a,,d,s,b,0,{label}\n" for label in ["1", "1", "2", "1", "2"]),
                    encoding="utf-8")
    with pytest.raises(IngestError, match=r"mail\.csv row 3 has label '2', outside the mapping \['0', '1'\]"
                                          r" \(2 rows have it\); extend `corpora\.naz\.label_map`"):
        read_source({"loader": "curated_csv", "path": str(path)}, "naz")
    frame, _ = read_source({"loader": "curated_csv", "path": str(path), "label_map": {"1": 1, "2": 1}}, "naz")
    assert list(frame["label"]) == [1] * 5 and list(frame["label_fine"]) == ["1", "1", "2", "1", "2"]


# --- kaggle_phishing -----------------------------------------------------------------------------------------------


def test_kaggle_layout_with_its_unnamed_index_column(tmp_path):
    path = tmp_path / "Phishing_Email.csv"
    pd.DataFrame({"Email Text": ["meeting moved to 3pm", "verify your account <a href='x'>now</a>", ""],
                  "Email Type": ["Safe Email", "Phishing Email", "Phishing Email"]}).to_csv(path)
    assert path.read_text().startswith(",Email Text,Email Type")
    frame, notes = read_source({"loader": "kaggle_phishing", "path": str(path)}, "kaggle")
    assert list(frame["label"]) == [0, 1, 1] and list(frame["label_fine"]) == ["Safe Email", "Phishing Email"] * 1 + [
        "Phishing Email"]
    assert list(frame["subject"]) == ["", "", ""] and frame["source_id"].iloc[2] == "row 3"
    assert frame["problem"].iloc[2] == "empty message (no subject, no body)"

    pd.DataFrame({"Email Text": ["x"], "Email Type": ["Spam Email"]}).to_csv(path)
    with pytest.raises(IngestError, match=r"Phishing_Email\.csv row 1 has label 'Spam Email'.*extend"):
        read_source({"loader": "kaggle_phishing", "path": str(path)}, "kaggle")


# --- clair ---------------------------------------------------------------------------------------------------------

CLAIR_ORIGINAL = (
    b"From r  Wed Oct 30 21:41:56 2002\n"
    b"Return-Path: <james_ngola2002@maktoob.com>\n"
    b"Message-Id: <200210310241.g9V2fNm6028281@cs.CU>\n"
    b'From: "MR. JAMES NGOLA." <james_ngola2002@maktoob.com>\n'
    b"Date: Thu, 31 Oct 2002 02:38:20 +0000\n"
    b"Subject: URGENT BUSINESS ASSISTANCE AND PARTNERSHIP\n"
    b'Content-Type: text/plain; charset="us-ascii"\n\n'
    b"DEAR FRIEND,\nI AM ( DR.) JAMES NGOLA.\nFrom returning home I write you.\n\n"
    b"From r  Thu Oct 31 08:11:39 2002\n"
    b"From: Mrs Mariam Abacha <m_abacha03@www.com>\n"
    b"Subject: GOOD DAY TO YOU\n\n"
    b"Dear Sir, I am Mrs Mariam Abacha\xe9.\n"
)


def test_clair_original_single_file(tmp_path):
    path = tmp_path / "fradulent_emails.txt"
    path.write_bytes(CLAIR_ORIGINAL)
    frame, notes = read_source({"loader": "clair", "path": str(path)}, "clair")
    assert list(frame["source_id"]) == ["message 1 <200210310241.g9V2fNm6028281@cs.CU>", "message 2"]
    assert list(frame["label"]) == [1, 1] and set(frame["label_fine"]) == {"fraud"}
    first = frame.iloc[0]
    assert first["subject"] == "URGENT BUSINESS ASSISTANCE AND PARTNERSHIP"
    assert first["body"].endswith("From returning home I write you.\n\n")
    assert first["date"] == "Thu, 31 Oct 2002 02:38:20 +0000" and "NGOLA" in first["sender"]
    assert frame["body"].iloc[1] == "Dear Sir, I am Mrs Mariam Abachaé.\n"
    assert notes["decode_notes"] == {"no charset declared, decoded as windows-1252": 1}

    path.write_bytes(b"nothing like mail here\n")
    with pytest.raises(IngestError, match=r"fradulent_emails\.txt has no 'From r' separator lines.*`corpora\.clair"):
        read_source({"loader": "clair", "path": str(path)}, "clair")


def test_clair_jsonl_passes_duplicate_ids_and_checks_labels(tmp_path):
    path = tmp_path / "fraud_bodies.jsonl.gz"
    records = [{"id": 1, "text": "send me your bank details", "label": 1},
               {"id": 1, "text": "send me your bank details", "label": 1},
               {"id": 7, "text": "legit", "label": 2}]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    with pytest.raises(IngestError, match=r"fraud_bodies\.jsonl\.gz id 7 has label '2', outside the mapping"
                                          r" \['0', '1'\] \(1 rows have it\); extend `corpora\.c\.label_map`"):
        read_source({"loader": "clair", "path": str(path)}, "c")
    frame, _ = read_source({"loader": "clair", "path": str(path), "label_map": {"1": 1, "2": 0}}, "c")
    assert list(frame["source_id"]) == ["id 1", "id 1", "id 7"] and list(frame["label"]) == [1, 1, 0]

    unlabelled = tmp_path / "bodies.jsonl"
    unlabelled.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    frame, _ = read_source({"loader": "clair", "path": str(unlabelled)}, "c")
    assert list(frame["source_id"]) == ["row 1", "row 2"] and list(frame["label"]) == [1, 1]

    (tmp_path / "broken.jsonl.gz").write_bytes(path.read_bytes()[:20])
    with pytest.raises(IngestError, match=r"broken\.jsonl\.gz is not a readable gzip file.*re-download"):
        read_source({"loader": "clair", "path": str(tmp_path / "broken.jsonl.gz")}, "c")


# --- table ---------------------------------------------------------------------------------------------------------


def test_table_csv_jsonl_parquet(tmp_path):
    frame = pd.DataFrame({"msg_id": ["a", "a", "b"], "content": ["hello", "hello", "<html><body>x</body></html>"],
                          "y": ["ham", "ham", "phish"], "title": ["t1", "t1", "t2"]})
    spec = {"loader": "table", "columns": {"uid": "msg_id", "body": "content", "label": "y", "subject": "title"},
            "label_map": {"ham": 0, "phish": 1}}
    frame.to_csv(tmp_path / "m.csv", index=False)
    frame.to_json(tmp_path / "m.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "m.parquet")
    names = ("m.csv", "m.jsonl", "m.parquet")
    results = [read_source({**spec, "path": str(tmp_path / name)}, "t")[0] for name in names]
    for result in results:
        assert list(result["source_id"]) == ["id a", "id a", "id b"]
        assert list(result["label"]) == [0, 0, 1] and list(result["subject"]) == ["t1", "t1", "t2"]
        assert list(result["body_format"]) == ["plain", "plain", "html"]
    assert results[0].drop(columns="source").equals(results[2].drop(columns="source"))


def test_table_errors(tmp_path):
    path = tmp_path / "mail.csv"
    path.write_text("text,label\nhi,0\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"mail\.csv lacks columns \['body'\] \(has \['text', 'label'\]\)"):
        read_source({"loader": "table", "path": str(path), "columns": {"text": "body"}}, "m")
    odd = tmp_path / "mail.txt"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(IngestError, match=r"cannot tell the format of .*mail\.txt; set `corpora\.m\.format`"):
        read_source({"loader": "table", "path": str(odd)}, "m")
    lines = tmp_path / "mail.jsonl"
    lines.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(IngestError, match=r"mail\.jsonl row 2 is not valid JSON"):
        read_source({"loader": "table", "path": str(lines)}, "m")
    with pytest.raises(IngestError, match=r"label_map` maps \{'x': 2\} outside 0"):
        read_source({"loader": "table", "path": str(path), "label_map": {"x": 2}}, "m")


# --- hf_dataset ----------------------------------------------------------------------------------------------------


def test_hf_dataset_saved_to_disk_with_class_labels(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["legit", "phish"])})
    dataset = datasets.Dataset.from_dict({"text": ["lunch?", "reset password now"], "label": [0, 1]},
                                         features=features)
    dataset.save_to_disk(str(tmp_path / "flat"))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "dict"))

    frame, _ = read_source({"loader": "hf_dataset", "path": str(tmp_path / "flat")}, "hf")
    assert list(frame["label"]) == [0, 1] and list(frame["label_fine"]) == ["legit", "phish"]
    by_name, _ = read_source({"loader": "hf_dataset", "path": str(tmp_path / "dict"), "split": "train",
                              "label_map": {"legit": 0, "phish": 1}}, "hf")
    assert list(by_name["label"]) == [0, 1] and by_name["source"].iloc[0].endswith("dict::train")
    with pytest.raises(IngestError, match=r"dict holds splits \['train'\]; set `corpora\.hf\.split`"):
        read_source({"loader": "hf_dataset", "path": str(tmp_path / "dict")}, "hf")


def test_hf_hub_id_offline_says_how_to_fix(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(IngestError, match=r"hub dataset 'gendiag-test/not-cached' is not in the local cache.*"
                                          r"HF_HUB_OFFLINE set.*run the ingest once online, or save it with"
                                          r" Dataset\.save_to_disk and point `corpora\.hf\.path`"):
        read_source({"loader": "hf_dataset", "dataset": "gendiag-test/not-cached", "split": "train"}, "hf")


# --- mime ----------------------------------------------------------------------------------------------------------


def test_mixed_multipart_concatenates_text_and_lists_attachments():
    raw = _message("""
Subject: report
Content-Type: multipart/mixed; boundary="B"
""", "--B\nContent-Type: text/plain\n\nFirst part.\n--B\nContent-Type: image/gif\nContent-Transfer-Encoding: base64\n\n"
     + base64.b64encode(b"GIF89a....").decode() + "\n--B\nContent-Type: text/html\n\n<p>Second&nbsp;part.</p>\n"
     "--B\nContent-Type: application/pdf\n\nJVBERi0=\n--B--\n")
    parsed = parse_message(raw)
    assert parsed.body_format == "plain" and parsed.body.split("\n") == ["First part.", "Second part."]
    assert parsed.attachments == ["image/gif", "application/pdf"]


def test_base64_and_quoted_printable_bodies():
    utf8 = "Grüße aus Köln – 10 €\n"
    b64 = parse_message(_message("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64",
                                 base64.encodebytes(utf8.encode()).decode()))
    assert b64.body == utf8 and b64.decode_notes == [] and b64.replacement_share == 0
    qp = parse_message(_message("Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding:"
                                " quoted-printable", "Caf=E9 cr=E8me, a long line that wraps=\n here.\n"))
    assert qp.body == "Café crème, a long line that wraps here.\n"


def test_rfc2047_headers_decode_and_tolerate_malformed_words():
    assert decode_header_value("=?iso-8859-1?Q?Compte_Suspect=E9_=21?=") == ("Compte Suspecté !", [])
    assert decode_header_value("=?utf-8?B?V2luIGEgcHJpemUg4oKs?=")[0] == "Win a prize €"
    # Folded across two words; whitespace between encoded-words is dropped, around plain text kept.
    assert decode_header_value("Re: =?utf-8?Q?Logg?=\r\n\t=?utf-8?Q?ing_in?= now")[0] == "Re: Logging in now"
    # Malformed: a fold inside the word, missing base64 padding, an unknown charset.
    assert decode_header_value("=?utf-8?Q?has=20been=20\n limted?=")[0] == "has been limted"
    assert decode_header_value("=?utf-8?B?UEQ5MDk3NjAxMzc?=")[0] == "PD909760137"
    text, notes = decode_header_value("=?x-unknown?Q?caf=E9?=")
    assert text == "café" and notes == ["charset 'x-unknown' unknown, decoded as windows-1252"]
    text, notes = decode_header_value("=?utf-8?B?@@@?=")
    assert text == "=?utf-8?B?@@@?=" and notes == ["malformed encoded-word kept as is"]
    # A UTF-8 character split across two encoded-words survives.
    assert decode_header_value("=?utf-8?B?4oI=?= =?utf-8?B?rA==?=")[0] == "€"


def test_charset_fallbacks_are_noted():
    assert decode_text("café".encode(), None) == ("café", ["no charset declared, decoded as utf-8"])
    assert decode_text(b"caf\xe9 \x93q\x94", None) == ("café “q”", ["no charset declared, decoded as windows-1252"])
    assert decode_text(b"\x81\xe9", None) == ("\x81é", ["no charset declared, decoded as latin-1"])
    assert decode_text(b"\x93hi\x94", "us-ascii") == (
        "“hi”", ["charset 'us-ascii' declared on 8-bit bytes, decoded as windows-1252"])
    assert decode_text(b"\x93hi\x94", "ISO-8859-1") == ("“hi”", [])
    assert decode_text(b"a\xffb", "utf-8") == (
        "a\ufffdb", ["invalid bytes for declared charset 'utf-8' replaced with U+FFFD"])
    assert decode_text(b"plain ascii", "x-unknown") == ("plain ascii", [])
    assert decode_text("日本".encode("iso-2022-jp"), "_iso-2022-jp$ESC") == ("日本", [])
    assert decode_text(b"\xe9", "base64")[1] == ["charset 'base64' unknown, decoded as windows-1252"]
    undeclared = parse_message(_message("Subject: x", b"na\xefve r\xe9sum\xe9\r\n"))
    assert undeclared.body == "naïve résumé\n"
    assert undeclared.decode_notes == ["no charset declared, decoded as windows-1252"]


def test_utf8_replacement_bytes_inside_single_byte_text_stay_replacement_characters():
    # As in SpamAssassin: "£160,000" stored as EF BF BD in a latin-1 message, which would read "ï¿½160,000".
    text, notes = decode_text(b"inheritance of 250,000 (\xef\xbf\xbd160,000) caf\xe9", "iso-8859-1")
    assert text == "inheritance of 250,000 (\ufffd160,000) café"
    assert notes == ["UTF-8 U+FFFD bytes inside single-byte-charset text kept as U+FFFD"]
    # In a multi-byte charset the same bytes can be a real character and are left alone.
    assert decode_text("\u7d6e".encode("big5") + b"\xef\xbf", "big5")[0].startswith("\u7d6e")


def test_html_to_text_is_readable():
    markup = """<!DOCTYPE html><html><head><title>Hidden title</title><script>var x = 1;</script>
    <style>.a {color: red}</style></head><body><!-- tracking comment -->
    <div>Dear&nbsp;customer,</div><p>Your   account
    is <b>locked</b>.<br>Click <a href="http://evil.example">here &amp; now</a>.</p>



    <table><tr><td>Ref</td><td>123</td></tr></table></body></html>"""
    assert html_to_text(markup) == "Dear customer,\nYour account is locked.\nClick here & now.\nRef 123"
    assert html_to_text("<p>one</p><br><p>two</p><p></p><p></p><p>three</p>") == "one\n\ntwo\nthree"
    # An unclosed head swallows the document under html.parser; its text must survive.
    assert html_to_text("<html><head><title>t</title><body><p>kept</p>") == "kept"
    # Spam nests unclosed tags deeper than the recursion limit.
    assert html_to_text("<font>" * 5000 + "deep") == "deep"
