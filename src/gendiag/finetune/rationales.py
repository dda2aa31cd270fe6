"""Chain-of-thought (CoT) fine-tuning: cue rationales as training targets, and reading the label back.

The CoT paradigm trains the model to write a short rationale and then the label
(``" Reasoning: ...; ... Answer: phishing"``), and at prediction time generates the rationale and
reads the label from the end of what it wrote. This module holds the parts that need no model:

* :func:`detect_cues`: deterministic detectors of the evidence a security analyst would cite
  (links and why they look suspicious, urgency, credential requests, a sender that does not match,
  money). They are regular expressions and a little domain arithmetic, so that the same rationale
  comes out for the same text on any machine, for any corpus (synthetic or real, tokenised
  Enron-Spam text, upper-case 419 letters, ``[URL domain]`` placeholders left by URL masking).
  The synthetic generator's planted cues are the ground truth they are checked against
  (:func:`planted_cue_recall`).
* :func:`cue_rationale` and :func:`cot_target`: the training target. The rationale cites evidence
  and never states a label: the label follows it, after the answer cue.
* :func:`parse_cot_label` and :func:`score_cot_predictions`: a generated text that does not end in a
  readable label is an error of the model, never a class. Counting it as "legitimate" (the usual
  silent default) would reward a model that stops producing answers on hard inputs.
* :func:`rationales_from_file`: validation of hand-written or LLM-written rationales (the ``file``
  rationale source).

Detectors only see the text they are given. With the default normalisation the model sees the
subject and body but not the ``From:`` line, so ``sender_mismatch`` fires only where the sender
is part of the model's text; a rationale must never cite what the model cannot read.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from gendiag.data.synthetic import cue_spans

KINDS: tuple[str, ...] = ("link", "urgency", "credential_request", "sender_mismatch", "money")
EVIDENCE_CHARS = 40
"""Longest evidence quote in a rationale; longer ones are cut and end in '...'."""
RATIONALE_PREFIX = " Reasoning:"
NO_CUE_RATIONALE = " Reasoning: no link, urgency or request for credentials or money."
DEFAULT_ANSWER_CUE = " Answer:"
# Words a rationale never contains, so that it cannot state the label before the answer cue.
# Evidence quoted from an email (which may say "report phishing to ...") is scrubbed of them.
LABEL_LIKE_WORDS: tuple[str, ...] = (
    "phishing", "phish", "legitimate", "illegitimate", "malicious", "spam", "scam", "fraud",
    "fraudulent", "benign", "ham", "genuine",
)

# Synthetic planted-cue categories and decoy categories -> the detector kind that should find them.
PLANTED_KIND = {
    "urgency": "urgency",
    "credential_request": "credential_request",
    "suspicious_link": "link",
    "money": "money",
    "suspicious_sender": "sender_mismatch",
}
DECOY_KIND = {"link": "link", "deadline": "urgency", "figure": "money"}


@dataclass(frozen=True)
class Cue:
    """One piece of evidence in an email.

    `start`/`end` index the text given to :func:`detect_cues`; `evidence` is what a rationale quotes
    (the matched phrase, or the domain for links and senders); `detail` says what the cue is in a
    few words. Every cue is `suspicious` except ordinary links, which are reported so that a
    rationale can say a message's only link looks ordinary.
    """

    kind: str
    start: int
    end: int
    evidence: str
    detail: str = ""
    suspicious: bool = True


# ---------------------------------------------------------------------------------------------
# Domains: what makes a host look like an impersonation

# Brands phishing impersonates most (and the synthetic generator's brands). Matched as whole
# hyphen-separated parts of a domain label, or as substrings for names of 6+ letters (shorter
# ones hide in ordinary words: purCHASE, pineAPPLE, shaGMAIL).
BRANDS: frozenset[str] = frozenset({
    "paypal", "microsoft", "office365", "outlook", "hotmail", "amazon", "apple", "icloud",
    "netflix", "dhl", "fedex", "usps", "wellsfargo", "chase", "bankofamerica", "citibank", "hsbc",
    "barclays", "dropbox", "docusign", "google", "gmail", "facebook", "instagram", "whatsapp",
    "linkedin", "twitter", "ebay", "yahoo", "adobe", "spotify", "coinbase", "binance", "irs", "hmrc",
})
# Brand-owned domains whose label is not exactly the brand name.
BRAND_OWNED: frozenset[str] = frozenset({
    "amazonaws.com", "googleusercontent.com", "googlemail.com", "googleapis.com", "microsoftonline.com",
    "paypalobjects.com", "paypal-community.com", "appleid.com", "facebookmail.com", "linkedinmail.com", "msn.com",
})
# Words that a throwaway domain built for credential theft puts in its name ("verify8.xyz").
ACCOUNT_WORDS: frozenset[str] = frozenset({
    "secure", "security", "verify", "verification", "account", "accounts", "login", "logon", "signin",
    "update", "updates", "support", "billing", "auth", "authenticate", "confirm", "webscr", "unlock",
    "validate", "validation",
})
SHORTENERS: frozenset[str] = frozenset({
    "bit.ly", "tinyurl.com", "goo.gl", "t.co", "ow.ly", "is.gd", "buff.ly", "rebrand.ly", "cutt.ly",
    "tiny.cc", "shorturl.at", "rb.gy", "t.ly", "bitly.com", "s.id", "v.gd", "qrco.de",
})
# Second-level labels under which country registries sell names (paypal.co.uk, paypal.com.au).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "or", "ne", "go", "gob", "nic"})
# Letters that digits (and doubled letters) stand in for in look-alike names: paypa1, rnicrosoft.
_DELEET = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# A path segment that starts like a login page (/login, /signin, ?cmd=webscr...).
_LOGIN_PATH = re.compile(
    r"(?:^|[/?&=])(?:log-?in|sign-?in|log-?on|verif|confirm|webscr|passw|credential|unlock|validat)", re.IGNORECASE
)


def _a(noun_phrase: str) -> str:
    """'an account-themed domain', 'a look-alike domain'."""
    return ("an " if noun_phrase[:1] in "aeiou" else "a ") + noun_phrase


def _registrable(host: str) -> tuple[str, str, list[str]]:
    """(registrable label, registrable domain, labels left of it): 'a.b.paypal.co.uk' -> paypal."""
    labels = [label for label in host.lower().strip(".").split(".") if label]
    if len(labels) < 2:
        return (labels[0] if labels else ""), host.lower(), []
    n_suffix = 2 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 1
    label = labels[-n_suffix - 1]
    return label, ".".join(labels[-n_suffix - 1 :]), labels[: -n_suffix - 1]


def _brands_in(label: str) -> set[str]:
    """Brands named in one domain label, also under digit-for-letter substitution."""
    found = set()
    for variant in {label, label.translate(_DELEET).replace("rn", "m").replace("vv", "w")}:
        parts = re.split(r"[-_]+", variant)
        found |= {b for b in BRANDS if b in parts or (len(b) >= 6 and b in variant)}
    return found


def domain_verdict(host: str) -> str | None:
    """Why a domain looks made for deception, in a few words, or None when it looks ordinary.

    Four simple signs, in this order: punycode (``xn--``: a Unicode look-alike); a brand in a domain
    the brand does not own (``paypal-secure.com``, ``paypa1.com``, ``paypal.com.evil.ru``); an
    account-themed throwaway name (``verify8.xyz``, ``authmail.co``: an account word as a whole part
    of the registrable label); three or more hyphens in the registrable label (two are common in
    real names: ruhr-uni-bochum.de). A domain equal to a brand's own name (``paypal.com``,
    ``mail.paypal.co.uk``) is ordinary.
    """
    host = host.lower().strip(".")
    if not host or "." not in host:
        return None
    if any(label.startswith("xn--") for label in host.split(".")):
        return "look-alike domain"
    label, registrable, subdomains = _registrable(host)
    impersonates = _brands_in(label) or any(_brands_in(sub) for sub in subdomains)
    if impersonates and registrable not in BRAND_OWNED and label not in BRANDS:
        return "look-alike domain"
    parts = [p for p in re.split(r"[-_\d]+", label) if p]
    if any(p in ACCOUNT_WORDS or (p.endswith("mail") and p[:-4] in ACCOUNT_WORDS) for p in parts):
        return "account-themed domain"
    if label.count("-") >= 3:
        return "many-hyphen domain"
    return None


# ---------------------------------------------------------------------------------------------
# Links

# Top-level domains recognised without a scheme (bare "paypa1.com"); TLDs that are also common file
# extensions (.ml, .cc, .pl, .sh, .py) are left out, since "see update.ml" is not a link.
_TLDS = "com|net|org|edu|gov|info|biz|io|co|xyz|top|club|me|ru|cn|uk|de|fr|jp|br|au|ca|nl|ly|su|ws|tv|pw|icu|vip|loan"
_URL = re.compile(r"\b(?:https?|ftp|hxxps?)://[^\s<>\"'\])]+|\bwww\.[^\s<>\"'\])]+", re.IGNORECASE)
# Enron-Spam style tokenised URLs: "http : //secure-paypal . xyz/login ? id=a8f3k2".
_TOKENISED_URL = re.compile(
    rf"\b(?:https?|ftp)\s+:\s*/\s*/\s*(?:[\w-]+\s+\.\s+)+(?:{_TLDS})(?![\w-])(?:/[^\s]*)?(?:\s\?\s[^\s]+)?",
    re.IGNORECASE,
)
_URL_PLACEHOLDER = re.compile(r"\[URL(?:\s+([^\]\s]+))?\]")
_EMAIL = re.compile(r"[\w.+'-]+@((?:[\w-]+\.)+[a-z]{2,})\b", re.IGNORECASE)
_BARE_DOMAIN = re.compile(
    rf"(?<![\w@./:-])((?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{_TLDS}))(?![\w@-])(/[^\s<>\"')\]]*)?",
    re.IGNORECASE,
)
_ANCHOR = re.compile(
    r"<a\s[^>]{0,500}?href\s*=\s*(?:3D)?[\"']?([^\"'\s>]+)[^>]{0,500}>(.{0,300}?)</a>", re.IGNORECASE | re.DOTALL
)
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]{1,200})\]\((https?://[^\s)]+)\)", re.IGNORECASE)
_IP_HOST = re.compile(r"^(?:\d{1,3}\.){3}\d{1,3}$|^\d{8,10}$|^0x[0-9a-f]{8}$")


def _host_of(url: str) -> tuple[str, str, str]:
    """(host, scheme, path+query) of a URL as written in mail ('www.x.com/a' has no scheme)."""
    url = re.sub(r"\s+", "", url).rstrip(".,;:!?")
    url = re.sub(r"^hxxp", "http", url, flags=re.IGNORECASE)
    parts = urlsplit(url if "://" in url else f"//{url}")
    try:
        host = parts.hostname or ""
    except ValueError:
        host = ""
    path = parts.path + ("?" + parts.query if parts.query else "")
    return host.lower().removeprefix("www."), parts.scheme.lower(), path


def _link_verdict(host: str, scheme: str, path: str, raw: str) -> str | None:
    """Why a link looks suspicious, or None. Simple documented rules, strongest first."""
    if not host:
        return None
    if _IP_HOST.match(host):
        return "link to an IP address"
    if "@" in re.sub(r"\s+", "", raw).split("//", 1)[-1].split("/", 1)[0]:
        return "link that hides its real host"
    _, registrable, _ = _registrable(host)
    if host in SHORTENERS or registrable in SHORTENERS:
        return "shortened link"
    verdict = domain_verdict(host)
    if verdict:
        return f"link to {_a(verdict)}"
    if scheme in ("http", "") and _LOGIN_PATH.search(path or ""):
        return "unencrypted login link"
    return None


def _link_cues(text: str) -> list[Cue]:
    cues: list[Cue] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in taken)

    def add(start: int, end: int, raw: str, host_override: str | None = None) -> None:
        host, scheme, path = _host_of(raw)
        if host_override is not None:
            host, scheme, path = host_override.lower().removeprefix("www."), "", ""
        verdict = _link_verdict(host, scheme, path, raw)
        evidence = host or "address hidden"
        cues.append(Cue("link", start, end, evidence, verdict or "ordinary link", suspicious=verdict is not None))
        taken.append((start, end))

    # Anchors whose visible text is a different domain than the target: checked on raw HTML only.
    for pattern, href_group, shown_group in ((_ANCHOR, 1, 2), (_MARKDOWN_LINK, 2, 1)):
        for match in pattern.finditer(text):
            # Only anchors whose whole visible text is an address: "Read it at News.com" is not
            # a claim about where the link goes, and newsletters route such links via trackers.
            shown = html.unescape(re.sub(r"<[^>]*>", "", match.group(shown_group))).strip().rstrip("/.")
            target_host = _host_of(match.group(href_group))[0]
            if not (target_host and (_URL.fullmatch(shown) or _BARE_DOMAIN.fullmatch(shown))):
                continue
            shown_host = _host_of(shown)[0]
            if "." in shown_host and _registrable(shown_host)[1] != _registrable(target_host)[1]:
                cues.append(Cue("link", match.start(), match.end(), target_host,
                                f"link text shows {_cap(shown_host, 30)} but goes to"))
                taken.append((match.start(), match.end()))
    for match in _TOKENISED_URL.finditer(text):
        if free(*match.span()):
            add(match.start(), match.end(), match.group(0))
    for match in _URL.finditer(text):
        end = match.end() - (len(match.group(0)) - len(match.group(0).rstrip(".,;:!?")))
        if free(match.start(), end):
            add(match.start(), end, text[match.start() : end])
    for match in _URL_PLACEHOLDER.finditer(text):
        if free(*match.span()):
            add(match.start(), match.end(), "", host_override=match.group(1) or "")
    emails = [m.span() for m in _EMAIL.finditer(text)]
    for match in _BARE_DOMAIN.finditer(text):
        span = match.span()
        if free(*span) and all(span[1] <= a or span[0] >= b for a, b in emails):
            add(span[0], span[1], match.group(0))
    return cues


# ---------------------------------------------------------------------------------------------
# Sender

_FROM = re.compile(r"^from[ \t]*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)
_SENDER = re.compile(r"^sender[ \t]*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)
_REPLY_TO = re.compile(r"^reply-to[ \t]*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)
_EMAIL_PLACEHOLDER = re.compile(r"\[EMAIL\s+([^\]\s]+)\]")
# Mailing lists set Reply-To to the list's address: a different domain, but not a deception.
_LIST_HEADER = re.compile(
    r"^(?:list-(?:id|post|help|unsubscribe|archive)|mailing-list|x-mailing-list|precedence[ \t]*:[ \t]*(?:bulk|list))",
    re.IGNORECASE | re.MULTILINE,
)


def _address(match: re.Match) -> tuple[str, str, str, int, int] | None:
    """(display name, local part, domain, domain start, domain end) of a From/Reply-To header value."""
    value, offset = match.group(1), match.start(1)
    email = _EMAIL.search(value)
    if email:
        local = email.group(0).rsplit("@", 1)[0]
        name = value[: email.start()].strip(" \t\"'<")
        return name, local, email.group(1).lower(), offset + email.start(1), offset + email.end(1)
    placeholder = _EMAIL_PLACEHOLDER.search(value)
    if placeholder:
        name = value[: placeholder.start()].strip(" \t\"'<")
        return name, "", placeholder.group(1).lower(), offset + placeholder.start(1), offset + placeholder.end(1)
    return None


def _sender_cues(text: str, links: list[Cue]) -> list[Cue]:
    """Sender checks, each a documented sign that the sender is not who the message says.

    1. the sender's domain looks made for deception (:func:`domain_verdict`);
    2. the display name or the address's local part names a brand the domain does not
       (``"PayPal" <x@mail.ru>``, ``dropbox.support@verify8.xyz``);
    3. Reply-To goes to another domain than From (except in mailing-list mail, whose Reply-To is the list);
    4. the sender is a brand's own domain yet a link goes to a look-alike of that brand (a spoofed
       From line).
    A general "links go to another domain than the sender" rule is deliberately absent: mailing
    lists, newsletters and click trackers do that in most legitimate mail.
    """
    header = _FROM.search(text) or _SENDER.search(text)
    if not header:
        return []
    parsed = _address(header)
    if parsed is None:
        return []
    name, local, domain, start, end = parsed
    label, registrable, _ = _registrable(domain)
    verdict = domain_verdict(domain)
    if verdict:
        detail = "sender domain is a look-alike" if verdict == "look-alike domain" else f"sender uses {_a(verdict)}"
        return [Cue("sender_mismatch", start, end, domain, detail)]
    claimed = {b for b in BRANDS if re.search(rf"(?<![a-z]){b}(?![a-z])", f"{name} {local}".lower())}
    claimed -= _brands_in(label) | ({label} if label in BRANDS else set())
    if claimed and registrable not in BRAND_OWNED:
        brand = sorted(claimed)[0]
        return [Cue("sender_mismatch", start, end, domain, f"sender name says {brand} but the domain is")]
    reply = _REPLY_TO.search(text)
    reply_parsed = _address(reply) if reply and not _LIST_HEADER.search(text) else None
    if reply_parsed and _registrable(reply_parsed[2])[1] != registrable:
        _, _, reply_domain, r_start, r_end = reply_parsed
        return [Cue("sender_mismatch", r_start, r_end, reply_domain, "reply-to differs from the sender")]
    if label in BRANDS:
        for link in links:
            if link.suspicious and label in _brands_in(_registrable(link.evidence)[0]):
                return [Cue("sender_mismatch", start, end, link.evidence, f"sender is {label} but a link goes to")]
    return []


# ---------------------------------------------------------------------------------------------
# Phrases: urgency, credential requests, money

_NUM = r"(?:\d+|one|two|three|twenty[- ]four|forty[- ]eight|seventy[- ]two)"
_URGENCY: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"\bwithin\s+(?:the\s+next\s+)?{_NUM}\s*(?:business\s+)?(?:hours?|hrs?|days?)\b", re.I),
     "urgent deadline"),
    (re.compile(r"\b(?:this\s+)?(?:offer|link|access|password|account|code)\s+(?:\w+\s+)?expires?\s+"
                r"(?:today|tonight|soon|shortly|at\s+midnight|in\s+\d+)", re.I), "urgent deadline"),
    (re.compile(r"\bexpires?\s+(?:today|tonight|at\s+midnight)\b", re.I), "urgent deadline"),
    (re.compile(r"\b(?:final|last)\s+(?:notice|warning|reminder|chance|attempt)\b", re.I), "final warning"),
    (re.compile(r"\b(?:(?:your|the)\s+)?(?:account|access|service|mailbox|card|membership)\s+(?:will|may|shall|"
                r"has|have|is)\s+(?:be\s+|been\s+)?(?:permanently\s+)?(?:suspended|closed|terminated|locked|"
                r"deactivated|disabled|blocked|restricted|deleted|cancell?ed|on\s+hold)\b", re.I),
     "threat to the account"),
    (re.compile(r"\bwe\s+(?:have|'ve)\s+(?:temporarily\s+)?(?:locked|suspended|limited|restricted|disabled)\s+your\b",
                re.I), "threat to the account"),
    # Alarming notices that push the reader to act: real lures ("Your Outlook exceeded its storage
    # limit") and the credential_phish style's cues.
    (re.compile(r"\b(?:unusual|suspicious|unauthori[sz]ed)\s+(?:sign-?in|log-?in|login|activity|access|transaction)"
                r"(?:\s+attempts?)?(?:\s+(?:was\s+|has\s+been\s+)?(?:blocked|detected))?|\b(?:mailbox|storage|inbox)\s+"
                r"(?:storage\s+)?(?:is\s+)?(?:full|almost\s+full|over\s+quota)|\bexceeded\s+(?:its|your\s+)?\s*storage"
                r"(?:\s+limit)?|\b(?:payment|transaction|card)\s+(?:was\s+|has\s+been\s+)?declined|\bon\s+hold\s+at\s+"
                r"customs\b", re.I), "alarming account notice"),
    (re.compile(r"\bfailure\s+to\s+\w+(?:\s+\w+){0,6}?\s+(?:will|may|shall|could)\s+result\b(?:\s+in\s+\w+)?", re.I),
     "threat of consequences"),
    (re.compile(r"\b(?:act|respond|reply|verify|confirm|update)\s+(?:now|urgently|immediately|promptly|"
                r"right\s+away|without\s+delay)\b", re.I), "pressure to act"),
    (re.compile(r"\b(?:immediately|urgent(?:ly)?|immediate\s+action|time[- ]sensitive|limited[- ]time|"
                r"don'?t\s+delay|do\s+not\s+delay)\b", re.I), "pressure to act"),
]

_CREDENTIAL_NOUNS: list[tuple[str, str]] = [
    (r"pass(?:word|code|phrase)s?|pin(?:\s+(?:code|number))?", "asks for a password"),
    (r"(?:log-?in|sign-?in|logon)(?:\s+(?:details|information|info|credentials|data))?|user\s?(?:name|id)s?|"
     r"credentials", "asks for login details"),
    (r"(?:credit|debit|bank)?\s*card(?:\s+(?:number|details|information|info|data))?|cvv|cvc|security\s+code",
     "asks for card details"),
    (r"social\s+security(?:\s+number)?|ssn|tax\s+id|national\s+insurance(?:\s+number)?|date\s+of\s+birth|"
     r"mother'?s\s+maiden\s+name", "asks for identity numbers"),
    (r"bank(?:ing)?\s+(?:account|details|information|info)|(?:routing|account)\s+number", "asks for bank details"),
    (r"(?:account|billing|payment|personal)\s+(?:details|information|info|data|method)", "asks for account details"),
    (r"account|identity", "asks to verify the account"),
]
_CREDENTIAL_VERB = (
    r"\b(?:verify|confirm|update|validate|re-?enter|enter|provide|submit|send|reset|re-?activate|unlock|restore|"
    r"re-?confirm|re-?validate|type|fill\s+in|input|give\s+us)"
)
_CREDENTIALS: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"{_CREDENTIAL_VERB}\s+(?:(?:your|the|our|all)\s+)?(?:\w+\s+){{0,2}}?(?:{nouns})\b", re.I), detail)
    for nouns, detail in _CREDENTIAL_NOUNS
] + [
    (re.compile(r"\b(?:click|tap|follow)\s+(?:here|the\s+link|below|the\s+button)\s+to\s+(?:verify|confirm|"
                r"validate|log\s?in|sign\s?in|unlock|restore|reactivate)\b", re.I), "asks to log in through a link"),
]

_CURRENCY_AMOUNT = re.compile(
    # Possessive quantifiers: long digit runs (ids, base64) must not make this quadratic.
    r"(?<![\w$])(?:US\s?\$|USD\s?|\$|£|€|EUR\s?|GBP\s?)\s?(\d{1,3}(?:\s?,\s?\d{3})++(?:\s?\.\s?\d++)?|\d++(?:\s?\.\s?\d++)?)"
    r"(?:\s*(million|billion|m|bn)\b)?"
    r"|(?<![\w.,])(\d{1,3}(?:\s?,\s?\d{3})++|\d++(?:\.\d++)?)\s*(million|billion)?\s*(?:us\s+)?"
    r"(?:dollars|usd|pounds|euros)\b",
    re.IGNORECASE,
)
LARGE_SUM = 1_000_000
"""Amounts from this size up are a money cue; smaller ones are ordinary business (invoices, budgets)."""
_MONEY: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b(?:wire|bank|money|telegraphic)\s+transfer\b|\btransfer\s+(?:of\s+)?(?:the|these|this|my|our|"
                r"your)?\s*(?:funds?|money|sum)\b|\bwestern\s+union\b|\bmoneygram\b", re.I), "money transfer"),
    (re.compile(r"\b(?:lottery|lotto|jackpot|sweepstakes?|winnings|cash\s+(?:prize|reward)|prize\s+money)\b|"
                r"\bclaim\s+your\s+(?:prize|reward|winnings|funds|money|payment|refund|inheritance)\b|"
                r"\byou\s+have\s+(?:won|been\s+selected)\b", re.I), "prize or reward"),
    (re.compile(r"\binheritance\b|\bnext\s+of\s+kin\b|\bunclaimed\s+(?:funds|money|sum)\b|\bbeneficiary\b", re.I),
     "inheritance or unclaimed funds"),
    (re.compile(r"\b(?:100\s?%\s+)?risk[- ]free\b|\bguaranteed\s+(?:cash|income|returns?|profits?|money|loan)\b(?:\s+"
                r"\w+)?|\bmake\s+money\b|\bearn\s+(?:\$|extra\s+(?:cash|income))", re.I), "promise of easy money"),
]


def _amount_value(match: re.Match) -> float:
    digits, scale = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    value = float(re.sub(r"[\s,]", "", digits))
    factor = {"million": 1e6, "m": 1e6, "billion": 1e9, "bn": 1e9}.get((scale or "").lower(), 1.0)
    return value * factor


def _phrase_cues(text: str, kind: str, patterns: list[tuple[re.Pattern, str]]) -> list[Cue]:
    return [
        Cue(kind, m.start(), m.end(), m.group(0), detail)
        for pattern, detail in patterns
        for m in pattern.finditer(text)
    ]


def _money_cues(text: str) -> list[Cue]:
    cues = _phrase_cues(text, "money", _MONEY)
    for match in _CURRENCY_AMOUNT.finditer(text):
        if _amount_value(match) >= LARGE_SUM:
            cues.append(Cue("money", match.start(), match.end(), match.group(0).strip(), "large sum"))
    return cues


def _without_overlaps(cues: list[Cue]) -> list[Cue]:
    """Per kind, keep the earliest (then longest) of overlapping detections."""
    kept: list[Cue] = []
    for cue in sorted(cues, key=lambda c: (c.start, -(c.end - c.start), KINDS.index(c.kind))):
        if not any(k.kind == cue.kind and cue.start < k.end and k.start < cue.end for k in kept):
            kept.append(cue)
    return kept


_HEADER_LINE = re.compile(r"([A-Za-z][\w-]*)[ \t]*:")
_CONTENT_HEADERS = frozenset({"subject", "from", "reply-to"})
# A leading block counts as mail headers only if every line is a header (or a folded continuation)
# and one of them is a standard field: a body that starts "Link: http://..." is not a header.
_STANDARD_HEADERS = frozenset({
    "from", "to", "subject", "date", "received", "return-path", "message-id", "delivered-to", "mime-version",
    "content-type", "reply-to", "sender",
})


def _content_view(text: str, keep: frozenset[str] = _CONTENT_HEADERS) -> str:
    """`text` with header lines other than `keep` blanked out, offsets kept.

    Raw messages (SpamAssassin) carry dozens of relay headers (Received, Message-Id, ...) full of
    host names and ids that are not evidence a reader would cite; only Subject, From and Reply-To
    are kept, and for links only Subject (a sender's domain is not a link).
    """
    if not _HEADER_LINE.match(text):
        return text
    end = text.find("\n\n")
    end = len(text) if end < 0 else end
    lines = text[:end].split("\n")
    fields = [_HEADER_LINE.match(line) for line in lines]
    if not all(f or line[:1].isspace() for f, line in zip(fields, lines, strict=True)):
        return text
    if not any(f and f.group(1).lower() in _STANDARD_HEADERS for f in fields):
        return text
    out, kept = [], True
    for line in lines:
        field = _HEADER_LINE.match(line)
        if field and not line[:1].isspace():
            kept = field.group(1).lower() in keep
        out.append(line if kept else " " * len(line))
    return "\n".join(out) + text[end:]


def detect_cues(text: str) -> list[Cue]:
    """Every cue in `text`, sorted by position. Deterministic, and written for any mail, not only ours:

    * ``link``: URLs (also Enron-Spam's tokenised ``http : //x . com``), bare domains and ``[URL]`` /
      ``[URL domain]`` placeholders. Suspicious when the host is an IP address, a URL shortener, or
      a deceptive domain (:func:`domain_verdict`); when ``@`` hides the real host; when an anchor's
      visible text is another domain than its target; or for a plain-http login path. Other links
      are returned with ``suspicious=False``.
    * ``urgency``: deadlines ("within 24 hours", "expires today"), threats to the account ("will be
      suspended", "failure to ... will result"), alarming notices ("unusual sign-in", "mailbox
      full") and pressure words ("act now", "immediately", "urgent"). Ordinary deadlines ("by
      friday") are not urgency.
    * ``credential_request``: a request verb (verify, confirm, update, enter, provide, ...) with a
      secret as object (password, login, card, SSN, bank or account details), or "click here to
      verify/log in".
    * ``sender_mismatch``: the From line's domain or name does not fit (see `_sender_cues`).
    * ``money``: sums of a million or more in a currency, transfers, prizes, inheritances and
      easy-money promises. Smaller amounts are ordinary business and are not cues.

    Header lines other than Subject, From and Reply-To are not evidence (relay hosts and ids).
    Overlapping detections of one kind are merged (the earliest, then longest, wins).
    """
    if not isinstance(text, str):
        raise TypeError(f"detect_cues expects the email text as a str, got {type(text).__name__}")
    view = _content_view(text)
    links = _link_cues(_content_view(text, frozenset({"subject"})))
    cues = (
        links
        + _phrase_cues(view, "urgency", _URGENCY)
        + _phrase_cues(view, "credential_request", _CREDENTIALS)
        + _sender_cues(text, links)
        + _money_cues(view)
    )
    return _without_overlaps(cues)


# ---------------------------------------------------------------------------------------------
# Rationales and CoT targets

_LABEL_LIKE = re.compile(rf"(?<![a-z])(?:{'|'.join(LABEL_LIKE_WORDS)})(?![a-z])", re.IGNORECASE)


def _cap(evidence: str, limit: int = EVIDENCE_CHARS) -> str:
    """`evidence` on one line and at most `limit` characters, cut at a word boundary where one is near."""
    evidence = " ".join(evidence.split())
    if len(evidence) <= limit:
        return evidence
    cut = evidence[: limit - 3]
    if " " in cut[limit // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "..."


def scrub_label_words(text: str, forbidden: Sequence[str] = ()) -> str:
    """Remove label-like words from quoted evidence ("report phishing" -> "report ...")."""
    text = _LABEL_LIKE.sub("...", text)
    for word in forbidden:
        word = word.strip()
        if word:
            text = re.sub(rf"(?<![a-z]){re.escape(word)}(?![a-z])", "...", text, flags=re.IGNORECASE)
    return text


def _phrase(cue: Cue, forbidden: Sequence[str]) -> str:
    """One cited cue; scrubbed as a whole, since details quote domains and brands from the mail too."""
    evidence = _cap(cue.evidence)
    if cue.kind == "credential_request":
        phrase = cue.detail
    elif cue.kind in ("link", "sender_mismatch"):
        # Details that end in a verb ("... but the domain is", "... a link goes to") take the domain directly.
        phrase = f"{cue.detail} {evidence}" if cue.detail.endswith((" is", " to")) else f"{cue.detail} ({evidence})"
    else:
        phrase = f"{cue.detail} ('{evidence}')"
    return scrub_label_words(phrase, forbidden)


def _select(cues: list[Cue], max_cues: int) -> list[Cue]:
    """Up to `max_cues` suspicious cues, one per kind first so that a rationale covers the variety."""
    seen, unique = set(), []
    for cue in cues:
        key = (cue.kind, cue.detail, cue.evidence.casefold())
        if key not in seen:
            seen.add(key)
            unique.append(cue)
    chosen: list[Cue] = []
    for kind in KINDS:
        first = next((c for c in unique if c.kind == kind), None)
        if first is not None:
            chosen.append(first)
    chosen = sorted(chosen, key=unique.index)[:max_cues]
    chosen += [c for c in unique if c not in chosen][: max_cues - len(chosen)]
    return sorted(chosen, key=unique.index)


def cue_rationale(text: str, max_cues: int = 3, forbidden: Sequence[str] = ()) -> str:
    """A short, deterministic rationale citing the cues of `text`; it never states a label.

    Examples: ``" Reasoning: urgent deadline ('within 24 hours'); asks for a password; link to a
    look-alike domain (paypa1-secure.com)."`` and, with nothing to cite, :data:`NO_CUE_RATIONALE`.
    Cues are cited in text order, at most `max_cues` of them, kinds before repeats; evidence is
    cut to :data:`EVIDENCE_CHARS` characters, so a rationale is at most about 12 + 100 x max_cues
    characters, short enough for tiny models' contexts. Label-like words
    (:data:`LABEL_LIKE_WORDS`, plus `forbidden`, e.g. the configured label words) are scrubbed from
    quoted evidence: the label must follow the rationale, not appear in it.
    """
    if not isinstance(max_cues, int) or max_cues < 1:
        raise ValueError(f"max_cues must be a positive integer, got {max_cues!r}")
    cues = detect_cues(text)
    suspicious = [c for c in cues if c.suspicious]
    if suspicious:
        return f"{RATIONALE_PREFIX} " + "; ".join(_phrase(c, forbidden) for c in _select(suspicious, max_cues)) + "."
    domains = list(dict.fromkeys(_registrable(c.evidence)[1] for c in cues if c.kind == "link"))[:max_cues]
    if domains:
        cited = scrub_label_words(", ".join(_cap(d) for d in domains), forbidden)
        plural = "s" if len(domains) > 1 else ""
        return f"{RATIONALE_PREFIX} ordinary link{plural} ({cited}); no urgency or request for credentials or money."
    return NO_CUE_RATIONALE


def cot_target(rationale: str, label_word: str, answer_cue: str = DEFAULT_ANSWER_CUE) -> str:
    """The CoT training target: rationale, answer cue, label word (``" Reasoning: ... Answer: phishing"``)."""
    for name, value in (("rationale", rationale), ("label_word", label_word), ("answer_cue", answer_cue)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return rationale.rstrip() + answer_cue + label_word


# ---------------------------------------------------------------------------------------------
# Reading the label back, and scoring with unparseable outputs counted as errors

_NEGATED = re.compile(r"(?<![^\W_])(?:not|no|never|isn'?t|is\s+not)[\W_]*$", re.IGNORECASE)
_CONNECTOR = re.compile(r"^[\W_]*(?:(?:or|and|nor|vs\.?|versus|either|neither)[\W_]*)?$", re.IGNORECASE)


def loose_pattern(phrase: str) -> str:
    """A regex for `phrase` that tolerates case, spacing and tokenised punctuation ('answer :')."""
    tokens = re.findall(r"\w+|[^\w\s]", phrase)
    return r"\s*".join(re.escape(t) for t in tokens)


def parse_cot_label(
    generated: str, label_words: tuple[str, str], answer_cue: str = DEFAULT_ANSWER_CUE
) -> int | None:
    """The label index (0 legitimate, 1 malicious, in `label_words` order) read from a CoT generation.

    The label is the first label word after the LAST answer cue (case, whitespace and punctuation
    around it do not matter; the cue's own spacing may be tokenised, "answer :"). Returns None when
    there is no answer cue, no label word after it, the first label word is directly followed by
    the other one ("Answer: phishing or legitimate") or directly negated ("Answer: not phishing").
    Pass the generated continuation only, not the prompt: prompts themselves often contain the
    label words and the answer cue.
    Callers must count None as an error (:func:`score_cot_predictions`), never as a class.
    """
    if not isinstance(generated, str):
        return None
    if len(label_words) != 2 or any(not isinstance(w, str) or not w.strip() for w in label_words):
        raise ValueError(f"label_words must be two non-empty strings (legitimate, malicious), got {label_words!r}")
    if label_words[0].strip().casefold() == label_words[1].strip().casefold():
        raise ValueError(f"label words must differ, got {label_words!r}")
    if not answer_cue.strip():
        raise ValueError("answer_cue must not be blank")
    cues = list(re.finditer(rf"(?<!\w){loose_pattern(answer_cue.strip())}", generated, re.IGNORECASE))
    if not cues:
        return None
    rest = generated[cues[-1].end() :]
    found = []
    for index, word in enumerate(label_words):
        match = re.search(rf"(?<![^\W_]){loose_pattern(word.strip())}(?![^\W_])", rest, re.IGNORECASE)
        if match:
            found.append((match.start(), -(match.end() - match.start()), index, match))
    if not found:
        return None
    found.sort()
    _, _, index, match = found[0]
    if _NEGATED.search(rest[: match.start()]):
        return None  # "Answer: not phishing" names a class only by negation: unreadable, not a class
    other = label_words[1 - index].strip()
    after = re.search(rf"(?<![^\W_]){loose_pattern(other)}(?![^\W_])", rest[match.end() :], re.IGNORECASE)
    if after and _CONNECTOR.match(rest[match.end() : match.end() + after.start()]):
        return None
    return index


def score_cot_predictions(labels: Sequence[int], parsed: Sequence[int | None]) -> dict[str, float | int]:
    """Accuracy, precision, recall and F1 for the malicious class, counting unparseable outputs as errors.

    An unparseable output (None, or NaN after a round trip through pandas) is scored as the
    opposite of its true label, so it is a false negative on a malicious message and a false
    positive on a legitimate one, for every metric: a model cannot gain by failing to answer.
    Zero divisions give 0 (as `gendiag.evaluate.metrics`). Also returns n, n_unparseable,
    unparseable_rate and the confusion counts.
    """
    labels, parsed = list(labels), list(parsed)
    if len(labels) != len(parsed):
        raise ValueError(f"labels and parsed must have the same length; got {len(labels)} and {len(parsed)}")
    if not labels:
        raise ValueError("expected at least one prediction; got 0 labels")
    bad_labels = [v for v in labels if v not in (0, 1) or isinstance(v, bool | str)]
    if bad_labels:
        raise ValueError(f"labels must be 0 or 1 (1 = malicious); got e.g. {bad_labels[:5]!r}")

    def unparseable(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    bad_parsed = [v for v in parsed if not unparseable(v) and (v not in (0, 1) or isinstance(v, bool | str))]
    if bad_parsed:
        raise ValueError(f"parsed labels must be 0, 1 or None (unparseable); got e.g. {bad_parsed[:5]!r}")
    predicted = [1 - int(y) if unparseable(p) else int(p) for y, p in zip(labels, parsed, strict=True)]
    tp = sum(1 for y, p in zip(labels, predicted, strict=True) if y == 1 and p == 1)
    fp = sum(1 for y, p in zip(labels, predicted, strict=True) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, predicted, strict=True) if y == 1 and p == 0)
    tn = len(labels) - tp - fp - fn
    n_unparseable = sum(1 for p in parsed if unparseable(p))

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else 0.0

    return {
        "n": len(labels),
        "n_unparseable": n_unparseable,
        "unparseable_rate": n_unparseable / len(labels),
        "accuracy": ratio(tp + tn, len(labels)),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


# ---------------------------------------------------------------------------------------------
# The `file` rationale source


def rationales_from_file(
    df: pd.DataFrame, column: str, source: str = "the rationale file", label_words: Sequence[str] = ()
) -> pd.Series:
    """The rationales of a user-supplied table, checked: every row needs a non-empty string.

    Returns the stripped rationales (a Series aligned with `df`). Errors name `source`, the column,
    the offending rows (by `uid` when the table has one) and the fix. With `label_words`, a
    rationale that contains a label word is refused too, since the label must follow the rationale.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    if column not in df.columns:
        raise ValueError(
            f"{source}: no column '{column}' (columns: {list(map(str, df.columns))}); add a column of"
            " rationales or set the rationale column in the config to the right name"
        )
    if len(df) == 0:
        raise ValueError(f"{source}: the table has no rows; it needs one rationale per training message")
    names = df["uid"].astype(str).tolist() if "uid" in df.columns else [f"row {i + 1}" for i in range(len(df))]
    values = df[column].tolist()
    bad = [(n, v) for n, v in zip(names, values, strict=True) if not isinstance(v, str) or not v.strip()]
    if bad:
        shown = ", ".join(f"{name} ({value!r})" for name, value in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ValueError(
            f"{source}: column '{column}' has {len(bad)} row(s) without a rationale (not a non-empty string):"
            f" {shown}; write a rationale for every row, or use the generated cue rationales instead"
        )
    if label_words:
        pattern = re.compile(
            "|".join(rf"(?<![^\W_]){loose_pattern(w.strip())}(?![^\W_])" for w in label_words if w.strip()),
            re.IGNORECASE,
        )
        leaking = [name for name, value in zip(names, values, strict=True) if pattern.search(value)]
        if leaking:
            shown = ", ".join(leaking[:5]) + (" ..." if len(leaking) > 5 else "")
            raise ValueError(
                f"{source}: column '{column}' has {len(leaking)} rationale(s) that state a label word"
                f" {[w.strip() for w in label_words]}: {shown}; the label follows the rationale after the answer"
                " cue, so rewrite these rationales to cite evidence only"
            )
    return pd.Series([v.strip() for v in values], index=df.index, name=column)


# ---------------------------------------------------------------------------------------------
# Checking the detectors against the synthetic generator's planted cues


def planted_cue_recall(frame: pd.DataFrame) -> pd.DataFrame:
    """Per detector kind: recall of the planted cues and false-alarm rates on a synthetic corpus.

    `frame` is a synthetic corpus table (`text`, `label_true`, `cue_spans`). A planted cue counts as
    found when a suspicious detection of its kind overlaps its span. Columns: kind, n_planted,
    recall, legit_alarm_rate (share of legitimate messages with a suspicious detection of the kind),
    n_decoys and decoy_alarm_rate (share of benign look-alikes, e.g. a real deadline, flagged).
    """
    for column in ("text", "label_true", "cue_spans"):
        if column not in frame.columns:
            raise ValueError(f"planted_cue_recall needs a synthetic corpus table; column '{column}' is missing")
    planted = {kind: [0, 0] for kind in KINDS}
    decoys = {kind: [0, 0] for kind in KINDS}
    alarms = {kind: 0 for kind in KINDS}
    n_legit = 0
    for row in frame.itertuples(index=False):
        found = [c for c in detect_cues(row.text) if c.suspicious]
        spans = {"cue_spans": json.loads(row.cue_spans) if isinstance(row.cue_spans, str) else row.cue_spans}
        for role, kind_of, counts in (("cue", PLANTED_KIND, planted), ("decoy", DECOY_KIND, decoys)):
            for span in cue_spans(spans, role):
                kind = kind_of.get(span["category"])
                if kind:
                    counts[kind][0] += 1
                    counts[kind][1] += any(
                        c.kind == kind and c.start < span["end"] and span["start"] < c.end for c in found
                    )
        if int(row.label_true) == 0:
            n_legit += 1
            for kind in {c.kind for c in found}:
                alarms[kind] += 1
    rows = []
    for kind in KINDS:
        n, k = planted[kind]
        nd, kd = decoys[kind]
        rows.append({
            "kind": kind,
            "n_planted": n,
            "recall": k / n if n else float("nan"),
            "legit_alarm_rate": alarms[kind] / n_legit if n_legit else float("nan"),
            "n_decoys": nd,
            "decoy_alarm_rate": kd / nd if nd else float("nan"),
        })
    return pd.DataFrame(rows)


RATIONALE_SOURCES = ("cues", "file", "teacher")
"""Where CoT rationales come from; `teacher` is written by `gendiag.finetune.teacher`."""


def read_rationale_table(path: str | Path) -> pd.DataFrame:
    """The user's rationale table (`training.cot.file`): CSV or Parquet, by its suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"uid": str}, keep_default_na=False)
    raise ValueError(f"{path}: rationale tables are .csv or .parquet files; convert it or rename it")


def recipe_rationales(
    messages: pd.DataFrame,
    source: str,
    max_cues: int = 2,
    label_words: Sequence[str] = (),
    table: pd.DataFrame | None = None,
    column: str = "rationale",
    table_name: str = "the rationale file",
) -> pd.DataFrame:
    """One rationale per message (columns uid, rationale), from its cues or from the user's table.

    `file`: `table` needs a `uid` column and a rationale for every message; missing uids are an
    error naming them (a rationale file written for other data must not train on silence).
    """
    if source == "cues":
        rationales = [cue_rationale(text, max_cues, label_words) for text in messages["text"]]
        return pd.DataFrame({"uid": messages["uid"].to_numpy(), "rationale": rationales})
    if source == "teacher":
        raise ValueError("the 'teacher' rationale source needs a model: use"
                         " gendiag.finetune.teacher.rationales_from_teacher")
    if source != "file":
        raise ValueError(f"unknown rationale source '{source}'; choose one of {list(RATIONALE_SOURCES)}")
    if table is None:
        raise ValueError("the 'file' rationale source needs a table: set training.cot.file to a CSV or Parquet file")
    if "uid" not in table.columns:
        raise ValueError(f"{table_name}: no 'uid' column (columns: {list(map(str, table.columns))}); add the"
                         " message uids (results/datasets/<recipe>/train.parquet) so rationales can be matched")
    duplicated = table["uid"][table["uid"].duplicated()].astype(str).tolist()
    if duplicated:
        raise ValueError(f"{table_name}: uids listed more than once: {duplicated[:5]}; keep one rationale per uid")
    matched = messages[["uid"]].merge(table, on="uid", how="left", indicator=True)
    missing = matched.loc[matched["_merge"] == "left_only", "uid"].astype(str).tolist()
    if missing:
        raise ValueError(f"{table_name}: {len(missing)} training/validation message(s) have no rationale, e.g."
                         f" {missing[:5]}; add a row per uid of the recipe's train and val sets")
    checked = rationales_from_file(matched.drop(columns="_merge"), column, table_name, label_words)
    return pd.DataFrame({"uid": matched["uid"].to_numpy(), "rationale": [" " + r for r in checked]})
