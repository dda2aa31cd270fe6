import hashlib

import pandas as pd
import pytest

from gendiag.data.download import DownloadError, fetch
from gendiag.data.normalise import (
    EMAIL,
    URL,
    NormaliseError,
    detokenise,
    mask,
    normalise_configured,
    normalise_corpus,
    resolve_options,
    restore_case,
    strip_quoted,
    strip_signature,
)

ENRON_STYLE = (
    "subject : meter 7268 nov allocation\n"
    "fyi . i don ' t know , see http : / / www . enron . com / gas for the 12 / 14 / 99 12 : 17 pm e - mail ."
)


def test_detokenise_undoes_enron_spam_tokenisation():
    text = detokenise(ENRON_STYLE)
    assert text == (
        "subject: meter 7268 nov allocation\n"
        "fyi. i don't know, see http://www.enron.com/gas for the 12/14/99 12:17 pm e-mail."
    )
    assert detokenise("mail me at jeff @ enron . com or see cnn . com .") == "mail me at jeff@enron.com or see cnn.com."
    assert detokenise("fyi - see below - already done , follow - up") == "fyi - see below - already done, follow-up"


def test_restore_case_capitalises_sentences_and_the_pronoun():
    assert restore_case("hello there. i think i'm late!\nsee you") == "Hello there. I think I'm late!\nSee you"
    assert restore_case("see below.\nhttp://www.x.com and www.y.com") == "See below.\nhttp://www.x.com and www.y.com"


def test_strip_quoted_drops_replies_attribution_and_original_message():
    body = "Thanks, that works.\nOn Mon, 2 Sep 2002, Bob wrote:\n> did it work?\n> really?\nCheers\n" \
           "-----Original Message-----\nFrom: Bob\nold text"
    assert strip_quoted(body) == "Thanks, that works.\nCheers"


def test_strip_quoted_drops_the_tails_of_rewrapped_quotes_but_keeps_inline_replies():
    wrapped = (
        "My answer.\n"
        " > When I receive a gpg encrypted message it first tries to ask me via the tty. It tells \n"
        "me m\n     y \n"
        " > passphrase is incorrect every time, at which point exmh offers me the \n"
        "line\n"
        " > end\nThanks"
    )
    assert strip_quoted(wrapped) == "My answer.\nThanks"
    assert strip_quoted("> Agreed?\nYes.\n> And Friday?\nNo.") == "Yes.\nNo."


def test_strip_signature_cuts_delimiter_and_list_footer():
    assert strip_signature("Body line\n-- \nJohn Doe\nACME") == "Body line"
    footer = "Body\n" + "_" * 47 + "\nIlug mailing list\nhttp://lists.example.org"
    assert strip_signature(footer) == "Body"
    assert strip_signature("-- \nonly a signature?") == "-- \nonly a signature?"


def test_masking_urls_and_emails_can_keep_the_domain():
    text = "Log in at https://www.paypal.com.secure-login.ru/x?id=1 or mail admin@bank.co.uk now"
    assert mask(URL, text, "URL", keep_domain=False) == ("Log in at [URL] or mail admin@bank.co.uk now", 1)
    masked, n = mask(URL, text, "URL", keep_domain=True)
    assert "[URL paypal.com.secure-login.ru]" in masked and n == 1
    assert mask(EMAIL, text, "EMAIL", keep_domain=True)[0].endswith("mail [EMAIL bank.co.uk] now")


def _ingested(**columns):
    n = len(columns["body"])
    base = {"uid": [f"u{i}" for i in range(n)], "subject": [""] * n, "sender": [""] * n, "date": [""] * n,
            "headers": [""] * n, "body_format": ["plain"] * n, "source_name": ["src"] * n, "label": [0] * n}
    frame = pd.DataFrame({**base, **columns})
    frame["raw_text"] = frame["body"]
    return frame


def test_normalise_corpus_records_options_counts_and_quarantines_emptied_messages():
    frame = _ingested(
        body=[
            "<html><body><p>Verify <b>now</b></p><script>x()</script></body></html>",
            "> only quoted",
            "Hi  there\n\n\n\nbye",
        ],
        body_format=["html", "plain", "plain"],
        subject=["Alert", "", ""],
    )
    options = resolve_options({}, None)
    kept, emptied, report = normalise_corpus(frame, {"src": options})
    assert list(kept["text"]) == ["Subject: Alert\n\nVerify now", "Hi there\n\nbye"]
    assert list(emptied["uid"]) == ["u1"] and emptied["reason"].iloc[0] == "empty after normalisation"
    assert report["rows_in"] == report["rows_kept"] + report["rows_emptied"] == 3
    assert report["sources"]["src"]["options"] == options
    assert report["sources"]["src"]["changed"]["html_converted"] == 1


def test_headers_are_kept_when_asked_and_loader_defaults_sit_between_global_and_corpus():
    frame = _ingested(body=["hello , world ."], headers=["From: a@b.c\nSubject: x"])
    kept, _, _ = normalise_corpus(frame, {"src": resolve_options({"strip_headers": False}, None)})
    assert kept["text"].iloc[0] == "From: a@b.c\nSubject: x\n\nhello , world ."
    assert resolve_options({}, "enron_spam")["detokenise"] is True
    assert resolve_options({}, "enron_spam", {"detokenise": False})["detokenise"] is False
    with pytest.raises(NormaliseError, match="unknown normalise option"):
        resolve_options({"lowercase": True}, None)


def test_generated_corpora_pass_through_unchanged(small_corpus):
    frame = small_corpus.assign(headers="", body_format="plain", source_name="synthetic", raw_text=small_corpus["text"])
    kept, emptied, report = normalise_configured(frame, {"loader": "synthetic"}, {})
    assert kept["text"].equals(frame["text"]) and len(emptied) == 0 and "planted cue spans" in report["skipped"]


def test_download_verifies_the_checksum_and_leaves_nothing_on_mismatch(tmp_path):
    source = tmp_path / "corpus.csv"
    source.write_text("text,label\nhello,0\n")
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "downloads" / "corpus.csv"
    fetch(source.as_uri(), good, target)
    assert target.read_bytes() == source.read_bytes()
    other = tmp_path / "downloads" / "other.csv"
    with pytest.raises(DownloadError, match="does not match the config's 0{64}.*fix `sha256`"):
        fetch(source.as_uri(), "0" * 64, other)
    assert not other.exists() and list(other.parent.iterdir()) == [target]


def test_download_offline_says_how_to_proceed(tmp_path):
    with pytest.raises(DownloadError, match=r"cannot download http://127.0.0.1:9/x.tar.gz .*set the corpus `path:`"):
        fetch("http://127.0.0.1:9/x.tar.gz", "0" * 64, tmp_path / "x.tar.gz", timeout=5)
    assert not (tmp_path / "x.tar.gz").exists()
