"""Chain-of-thought pieces: cue detectors, rationales, CoT targets, label parsing and scoring."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from conftest import SHARED_DATA
from gendiag.data.loaders import read_source
from gendiag.data.normalise import raw_text
from gendiag.data.synthetic import generate_style
from gendiag.finetune.rationales import (
    EVIDENCE_CHARS,
    KINDS,
    LABEL_LIKE_WORDS,
    NO_CUE_RATIONALE,
    cot_target,
    cue_rationale,
    detect_cues,
    domain_verdict,
    parse_cot_label,
    planted_cue_recall,
    rationales_from_file,
    score_cot_predictions,
)
from gendiag.prompts import PromptFormat

LABEL_WORDS = PromptFormat().label_words  # (" legitimate", " phishing")


def _found(text: str, kind: str) -> list:
    return [c for c in detect_cues(text) if c.kind == kind and c.suspicious]


# --- detectors -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("Log in at http://192.168.10.4/login now", "link to an IP address"),
        ("Visit http://bit.ly/q2m4t8 for details.", "shortened link"),
        ("Go to https://paypa1-secure.com/account", "link to a look-alike domain"),
        ("Go to http://xn--pypal-4ve.com/", "link to a look-alike domain"),
        ("Link: http://verify8.xyz/confirm", "link to an account-themed domain"),
        ("Open www.secure-paypal.xyz today", "link to a look-alike domain"),
        ("Reply via paypa1.com please", "link to a look-alike domain"),
        ("Sign in: http://shop.example.com/signin?next=/", "unencrypted login link"),
        ("Click http://paypal.com@evil.ru/x", "link that hides its real host"),
        ("See [URL bit.ly] for the form", "shortened link"),
        ('<a href="http://evil.ru/x">https://www.paypal.com</a>', "link text shows paypal.com but goes to"),
        ("go to http : //secure-paypal . xyz/login ? id=a8f3k2", "link to a look-alike domain"),  # Enron-Spam tokenised
        ("GO TO HTTP://BIT.LY/Q2M4T8", "shortened link"),
    ],
)
def test_link_detector_flags_suspicious_links(text, detail):
    found = _found(text, "link")
    assert [c.detail for c in found] == [detail], detect_cues(text)


@pytest.mark.parametrize(
    "text",
    [
        "Reports: https://intranet.enron.com/reports/q3",
        "Help: https://www.paypal.com/help and https://mail.paypal.co.uk/x",
        "See https://github.com/exmh/exmh/issues/12 and www.python.org.",
        "Tracked at http://bugs.example.org/show_bug.cgi?id=12",
        "further comments in update.ml; exmh 2.5 works; e.g. this",
        "Mail zzzlist@lists.sourceforge.net for help",
        "Masked: [URL] and [URL github.com]",
        '<a href="http://www.example.com/a">www.example.com</a>',
    ],
)
def test_link_detector_leaves_ordinary_links_alone(text):
    assert _found(text, "link") == []


def test_ordinary_links_are_reported_but_not_suspicious():
    cues = detect_cues("Docs at https://github.com/a/b. Placeholder [URL].")
    assert [(c.kind, c.evidence, c.suspicious) for c in cues] == [
        ("link", "github.com", False), ("link", "address hidden", False)
    ]
    text = "Docs at https://github.com/a/b."
    cue = cues[0]
    assert text[cue.start : cue.end] == "https://github.com/a/b"


@pytest.mark.parametrize(
    "text",
    [
        "Please reply within 24 hours.", "Act now.", "IMMEDIATELY", "Final notice.",
        "Your account will be suspended.", "Failure to respond will result in closure.",
        "This offer expires today.", "details : respond urgently .", "We have locked your account.",
        "Unusual sign-in attempt blocked.", "Your Outlook exceeded its storage limit.",
    ],
)
def test_urgency_positive(text):
    assert _found(text, "urgency"), text


@pytest.mark.parametrize(
    "text",
    [
        "Please reply by friday.", "We need this before the end of the month.",
        "Please reply by close of business tuesday.", "A new sign-in to your account was detected.",
        "We discussed the schedule for march.",
    ],
)
def test_urgency_negative(text):
    assert _found(text, "urgency") == [], text


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("You need to verify your password.", "asks for a password"),
        ("Please confirm your login details.", "asks for login details"),
        ("Please update your account information.", "asks for account details"),
        ("Enter your username and password.", "asks for a password"),  # the longer match wins
        ("please re-enter your billing details .", "asks for account details"),
        ("Validate your credentials.", "asks for login details"),
        ("Kindly provide your social security number.", "asks for identity numbers"),
        ("Send us your credit card number.", "asks for card details"),
        ("Click here to verify your mailbox.", "asks to log in through a link"),
        ("Please verify your account.", "asks to verify the account"),
    ],
)
def test_credential_request_positive(text, detail):
    assert [c.detail for c in _found(text, "credential_request")] == [detail]


@pytest.mark.parametrize(
    "text",
    [
        "Please review the details below.", "A new sign-in to your dropbox account was detected.",
        "Please confirm your attendance on monday.", "You need to rebuild procmail after upgrading.",
        "The password policy changes next month.",
    ],
)
def test_credential_request_negative(text):
    assert _found(text, "credential_request") == [], text


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("Details: $4,500,000.", "large sum"),
        ("details : $4 , 500 , 000 .", "large sum"),
        ("a fund of US$10.5 million", "large sum"),
        ("the sum of 21,300,000 dollars", "large sum"),
        ("It concerns wire transfer.", "money transfer"),
        ("transfer the funds", "money transfer"),
        ("Claim your prize!", "prize or reward"),
        ("You have won the lottery", "prize or reward"),
        ("as next of kin to the deceased", "inheritance or unclaimed funds"),
        ("100% risk free", "promise of easy money"),
        ("GUARANTEED CASH REWARD", "promise of easy money"),
    ],
)
def test_money_positive(text, detail):
    assert {c.detail for c in _found(text, "money")} == {detail}


@pytest.mark.parametrize(
    "text",
    ["a budget of $1,200", "the invoice total of $150,000", "costs of about $75 , 000", "10 million users",
     "Message-Id: <31627$1029331990$media@x.net>\n\nhello"],
)
def test_money_negative(text):
    assert _found(text, "money") == [], text


@pytest.mark.parametrize(
    ("text", "detail", "evidence"),
    [
        ("From: security@apple-support.top\nSubject: x\n\nhi", "sender domain is a look-alike", "apple-support.top"),
        ("From: dropbox.support@verify8.xyz\n\nhi", "sender uses an account-themed domain", "verify8.xyz"),
        ("FROM: JULIE_HALL@AUTH.RU\n\nHI", "sender uses an account-themed domain", "auth.ru"),
        ("From: billing@paypa1.com\n\nhi", "sender domain is a look-alike", "paypa1.com"),
        ('From: "PayPal Service" <service@mail-box.ru>\n\nhi', "sender name says paypal but the domain is",
         "mail-box.ru"),
        ("From: alerts@mybank.com\nReply-To: claims@gmail.com\n\nhi", "reply-to differs from the sender", "gmail.com"),
        ("From: service@paypal.com\n\nGo to http://paypal-login.info/x", "sender is paypal but a link goes to",
         "paypal-login.info"),
    ],
)
def test_sender_mismatch_positive(text, detail, evidence):
    assert [(c.detail, c.evidence) for c in _found(text, "sender_mismatch")] == [(detail, evidence)]


@pytest.mark.parametrize(
    "text",
    [
        "From: no-reply@paypal.com\nSubject: x\n\nhello",
        "From: Matthias <kevin@users.sourceforge.net>\n\nhello",
        "From: robert@spamassassin-talk.org\n\nhello",
        "From: office@benin-trade.org\n\nhello",
        "From: office@Ivory Coast-trade.org\n\nhello",
        "From: a@uni.edu\nReply-To: list@lists.example.org\nList-Id: <x.lists.example.org>\n\nhello",
        "From: jo@shagmail.com\n\nhello",
        "no header at all, just a body",
    ],
)
def test_sender_mismatch_negative(text):
    assert _found(text, "sender_mismatch") == [], text


def test_domain_verdict():
    assert domain_verdict("paypal.com") is None
    assert domain_verdict("mail.paypal.co.uk") is None
    assert domain_verdict("amazonaws.com") is None
    assert domain_verdict("ruhr-uni-bochum.de") is None
    assert domain_verdict("paypal.com.account-check.ru") == "look-alike domain"
    assert domain_verdict("rnicrosoft.com") == "look-alike domain"
    assert domain_verdict("secure-account-update-now.com") == "account-themed domain"
    assert domain_verdict("my-very-long-name-here.com") == "many-hyphen domain"


def test_transport_headers_are_not_evidence():
    raw = (
        "Return-Path: <a@b.org>\nReceived: from 10.0.0.1 by mx.secure-mail.biz with SMTP;\n"
        "\tfolded http://bit.ly/x\nMessage-Id: <1$99999999999@b.org>\nFrom: a@b.org\nSubject: lunch\n\n"
        "See you at noon."
    )
    assert detect_cues(raw) == []


def test_detect_cues_is_sorted_and_validates_input():
    text = "From: x@verify8.xyz\n\nAct now: verify your password at http://bit.ly/abc. $4,500,000 awaits."
    cues = detect_cues(text)
    assert [c.start for c in cues] == sorted(c.start for c in cues)
    assert {c.kind for c in cues} == set(KINDS)
    with pytest.raises(TypeError, match="str"):
        detect_cues(None)


# --- rationales and targets ------------------------------------------------------------------

def test_rationale_example_and_determinism():
    text = ("From: x@paypa1-secure.com\n\nPlease reply within 24 hours. Enter your password at "
            "http://paypa1-secure.com/login.")
    first = cue_rationale(text)
    assert first == cue_rationale(text)
    assert first == (" Reasoning: sender domain is a look-alike (paypa1-secure.com); urgent deadline"
                     " ('within 24 hours'); asks for a password.")
    assert cue_rationale(text, max_cues=5).endswith("link to a look-alike domain (paypa1-secure.com).")


def test_rationale_without_cues():
    assert cue_rationale("Hi all, the meeting moved to monday.") == NO_CUE_RATIONALE
    assert cue_rationale("Docs: https://github.com/a/b and https://www.github.com/c") == (
        " Reasoning: ordinary link (github.com); no urgency or request for credentials or money."
    )


def test_rationale_length_is_bounded_and_states_no_label():
    long_phrase = "failure to " + " ".join(["comply"] * 30) + " will result in closure"
    text = ("From: phishing-team@secure-phishing-alerts.xyz\n\n" + long_phrase + ". Report phishing within 24 "
            "hours. This legitimate offer expires today. " * 5 + " wire transfer of $9,000,000. Verify your password. "
            "http://bit.ly/spam-phishing-legitimate")
    for max_cues in (1, 3, 5):
        rationale = cue_rationale(text, max_cues=max_cues, forbidden=LABEL_WORDS)
        assert len(rationale) <= 12 + 100 * max_cues, rationale
        assert rationale.count(";") <= max_cues - 1
        assert not re.search(rf"(?i)\b(?:{'|'.join(LABEL_LIKE_WORDS)})\b", rationale), rationale
        quotes = re.findall(r"'([^']*)'|\(([^)]*)\)", rationale)
        assert all(len(a or b) <= EVIDENCE_CHARS for a, b in quotes)
    with pytest.raises(ValueError, match="max_cues"):
        cue_rationale(text, max_cues=0)


def test_rationales_of_synthetic_messages_never_state_a_label(vocab):
    frame = pd.concat([generate_style(vocab, s, 40, seed=9) for s in vocab["styles"]], ignore_index=True)
    banned = re.compile(rf"(?i)\b(?:{'|'.join(LABEL_LIKE_WORDS)})\b")
    for text in frame["text"]:
        rationale = cue_rationale(text)
        assert rationale.startswith(" Reasoning: ") and rationale.endswith(".")
        assert not banned.search(rationale), rationale


def test_cot_target():
    assert cot_target(" Reasoning: x.", " phishing") == " Reasoning: x. Answer: phishing"
    assert cot_target(" Reasoning: x.  ", " legitimate", answer_cue="\nLabel:") == " Reasoning: x.\nLabel: legitimate"
    with pytest.raises(ValueError, match="rationale"):
        cot_target("  ", " phishing")


# --- parsing and scoring ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        (" Reasoning: asks for a password. Answer: phishing", 1),
        (" Reasoning: no link. Answer: legitimate", 0),
        (" Reasoning: x. Answer: Legitimate.", 0),
        (" Reasoning: x. answer : PHISHING", 1),
        (" Answer:phishing<eos>", 1),
        (" Answer: **phishing**", 1),
        (" Answer: it is phishing. not legitimate", 1),
        (" Answer: legitimate Answer: phishing", 1),  # the last answer cue counts
        (" Reasoning: shortened link (bit.ly).", None),  # no answer cue
        (" phishing Answer:", None),  # label before the cue only
        (" phishing", None),
        (" Answer: maybe", None),
        (" Answer: phishingly", None),
        (" Answer: phishing or legitimate", None),  # both label words, directly
        (" Answer: legitimate/phishing", None),
        (" Answer: not phishing", None),
        ("", None),
        ("#$%^&*", None),
    ],
)
def test_parse_cot_label(generated, expected):
    assert parse_cot_label(generated, LABEL_WORDS) == expected


def test_parse_cot_label_custom_words_and_validation():
    assert parse_cot_label("because ... Label: spam", ("ham", "spam"), answer_cue="Label:") == 1
    assert parse_cot_label(None, LABEL_WORDS) is None
    with pytest.raises(ValueError, match="differ"):
        parse_cot_label(" Answer: x", (" a", "A"))
    with pytest.raises(ValueError, match="two non-empty"):
        parse_cot_label(" Answer: x", (" a",))


def test_unparseable_outputs_are_errors_never_a_class():
    all_unparseable = score_cot_predictions([0, 0, 1, 1], [None, None, None, None])
    assert all_unparseable["accuracy"] == 0.0
    assert all_unparseable["f1"] == 0.0 and all_unparseable["precision"] == 0.0 and all_unparseable["recall"] == 0.0
    assert all_unparseable["n_unparseable"] == 4 and all_unparseable["unparseable_rate"] == 1.0
    # All-legitimate labels: counting None as "legitimate" would give accuracy 1.
    assert score_cot_predictions([0, 0], [None, float("nan")])["accuracy"] == 0.0
    mixed = score_cot_predictions([1, 1, 0, 0, 1], [1, None, 0, None, 1])
    assert (mixed["tp"], mixed["fp"], mixed["fn"], mixed["tn"]) == (2, 1, 1, 1)
    assert mixed["accuracy"] == pytest.approx(3 / 5)
    assert mixed["precision"] == pytest.approx(2 / 3) and mixed["recall"] == pytest.approx(2 / 3)
    assert mixed["f1"] == pytest.approx(2 / 3)
    assert score_cot_predictions([1, 0], [1, 0])["f1"] == 1.0


def test_score_cot_predictions_validates():
    with pytest.raises(ValueError, match="same length"):
        score_cot_predictions([1, 0], [1])
    with pytest.raises(ValueError, match="at least one"):
        score_cot_predictions([], [])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        score_cot_predictions([2], [1])
    with pytest.raises(ValueError, match="0, 1 or None"):
        score_cot_predictions([1], ["phishing"])


# --- the `file` rationale source -------------------------------------------------------------

def test_rationales_from_file():
    df = pd.DataFrame({"uid": ["a", "b"], "why": ["  asks for a password ", "no link."]})
    out = rationales_from_file(df, "why")
    assert out.tolist() == ["asks for a password", "no link."] and out.index.equals(df.index)
    with pytest.raises(ValueError, match=r"rationales\.csv: no column 'rationale'.*\['uid', 'why'\]"):
        rationales_from_file(df, "rationale", source="rationales.csv")
    bad = pd.DataFrame({"uid": ["a", "b", "c", "d"], "why": ["ok", "", None, math.nan]})
    missing = r"r\.parquet: column 'why' has 3 row\(s\).*b \(''\), c \((?:None|nan)\), d \(nan\)"
    with pytest.raises(ValueError, match=missing):
        rationales_from_file(bad, "why", source="r.parquet")
    no_uid = pd.DataFrame({"why": ["ok", 3]})
    with pytest.raises(ValueError, match=r"row 2 \(3\); write a rationale"):
        rationales_from_file(no_uid, "why")
    leaking = pd.DataFrame({"uid": ["a", "b"], "why": ["clearly Phishing: bad link", "fine"]})
    with pytest.raises(ValueError, match=r"state a label word.*: a; the label follows"):
        rationales_from_file(leaking, "why", label_words=LABEL_WORDS)
    with pytest.raises(ValueError, match="no rows"):
        rationales_from_file(df.iloc[:0], "why")


# --- agreement with the synthetic generator's planted cues --------------------------------------

def test_detectors_recover_planted_cues_and_ignore_decoys(vocab):
    frame = pd.concat([generate_style(vocab, s, 150, seed=11) for s in vocab["styles"]], ignore_index=True)
    table = planted_cue_recall(frame).set_index("kind")
    assert (table["n_planted"] > 20).all(), table
    # Measured 1.00 for every kind (4 styles x 1000 messages, seed 11); margin for generator changes.
    for kind in KINDS:
        assert table.loc[kind, "recall"] >= 0.9, table
    # Measured 0.00 alarms on legitimate messages and on decoys (real links, deadlines, budgets).
    assert (table["legit_alarm_rate"] <= 0.05).all(), table
    decoys = table.dropna(subset=["decoy_alarm_rate"])
    assert len(decoys) == 3 and (decoys["decoy_alarm_rate"] <= 0.05).all(), table
    with pytest.raises(ValueError, match="cue_spans"):
        planted_cue_recall(frame.drop(columns="cue_spans"))


# --- real corpora (skip in a fresh clone without ../shared/data) ------------------------------

def _shared(relative: str):
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real corpus {path} is absent (fresh clone without ../shared/data)")
    return path


def _share_with_cue(frame: pd.DataFrame) -> float:
    texts = map(raw_text, frame["headers"], frame["body"], frame["sender"], frame["subject"])
    return sum(any(c.suspicious for c in detect_cues(t)) for t in texts) / len(frame)


def test_detectors_on_real_mail():
    """Real phishing carries detectable cues far more often than real ham (with its raw headers).

    Measured on these 300-message samples: Nazario phishing 0.58 with a cue, SpamAssassin easy_ham_2 0.05.
    """
    ham, _ = read_source({"loader": "spamassassin", "path": str(_shared("spamassassin")),
                          "include": ["easy_ham_2/*"]}, "sa")
    phish, _ = read_source({"loader": "curated_csv", "path": str(_shared("nazario/nazario.csv"))}, "nazario")
    ham_rate = _share_with_cue(ham.sample(300, random_state=0))
    phish_rate = _share_with_cue(phish.sample(300, random_state=0))
    print(f"share with a suspicious cue: ham {ham_rate:.3f}, phishing {phish_rate:.3f}")
    assert ham_rate <= 0.12, ham_rate
    assert phish_rate >= 0.5, phish_rate
