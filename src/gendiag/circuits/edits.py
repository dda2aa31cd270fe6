"""Controlled edits: minimal pairs on real corpora, which have no planted cues.

A synthetic message records where its cues are; a real one does not, so a pair is made by editing
the message: a phishing feature is put in (or, for a link the message already has, kept) in the
clean prompt and replaced by benign text at the same place in the corrupted one. Four features,
the ones the study's explanations keep pointing at: a link, an urgency phrase, a credential
request and the sender's domain (a look-alike against the real one).

The edit must read like the corpus the model was tested on, or the model reacts to the surface
and not to the feature: after normalisation a real corpus shows links and addresses masked to
their domain (`[URL domain]`, `[EMAIL domain]`), so an inserted link takes the form the test set
shows. Patching compares positions, so a pair is kept only when `align_pair` accepts it (the same
token length, every differing token inside the edit); benign counterparts are tried until one
aligns, and every candidate that none aligns with is reported with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from gendiag.circuits.pairs import DROP_COLUMNS, MinimalPair, PairRejected, aligned_pair
from gendiag.data.normalise import EMAIL, URL
from gendiag.models.inputs import message_budget
from gendiag.prompts import PromptFormat

EDIT_KINDS = ("url", "urgency", "credential", "sender_domain")

URGENCY_PHRASES = (
    "Your account will be suspended within 24 hours.",
    "Immediate action is required to avoid service interruption.",
    "This is your final notice, please respond today.",
    "Failure to respond within 48 hours will result in account closure.",
    "Your access will be terminated unless you reply immediately.",
    "Act now, this request expires tonight.",
)
CREDENTIAL_PHRASES = (
    "Please confirm your password and account number.",
    "Verify your identity by entering your username and password.",
    "Reply with your login details to restore access.",
    "Update your billing information and card number to continue.",
    "Enter your PIN and security code to confirm your account.",
    "Send us your online banking password to complete verification.",
)
# Office small talk: the benign sentence put where an urgency phrase or a credential request goes.
BENIGN_SENTENCES = (
    "The meeting notes are attached for your review.",
    "Let me know if you have any questions about the schedule.",
    "We will discuss the remaining items at the next meeting.",
    "Thanks again for your help with the report last week.",
    "The updated figures are in the spreadsheet on the shared drive.",
    "I will be out of the office on Friday afternoon.",
    "Please see the summary below for the main points.",
    "The draft looks good to me, with a few small changes.",
    "Lunch will be provided for everyone who attends.",
    "Our team will follow up with the details next week.",
    "The conference call has moved to Tuesday morning.",
    "Here is the list of attendees for the workshop.",
)
# An inserted link sits in a neutral sentence; the corrupted prompt has the same sentence with a
# place instead of the link, so the two differ only where the link is.
LINK_SENTENCES = (
    "For details, visit {}.",
    "More information is available at {}.",
    "Please review the notice at {}.",
    "You can read the full message at {}.",
    "The form is at {}.",
)
SUSPICIOUS_DOMAINS = (
    "secure-account-verify.com",
    "paypal-login-update.net",
    "account-alert.info",
    "bankofamerica.secure-signin.ru",
    "appleid-confirm.org",
    "login-microsoft-support.com",
    "webmail-upgrade.biz",
    "verify-billing-center.net",
)
# Places that stand in for a link (removed or never inserted); the determiners and qualifiers
# give phrases of many token lengths, since a link's length in tokens varies with its domain.
PLACE_NOUNS = ("website", "shared drive", "front desk", "team page", "attached file", "notice board", "intranet",
               "main office", "project folder", "handbook", "reception", "library")
PLACE_DETERMINERS = ("the", "our")
PLACE_QUALIFIERS = ("on the second floor", "for this month", "from last week", "of the department")
LOOKALIKE_AFFIXES = ("-secure", "-support", "-verify", "-login", "-account", "-online", "-mail")
LOOKALIKE_TLDS = ("net", "org", "info", "biz", "ru", "co", "xyz")
THROWAWAY_DOMAINS = ("mail-notice.biz", "secure-alerts.ru", "account-service.top", "web-support.xyz",
                     "notify-center.info")
HOMOGLYPHS = {"o": "0", "l": "1", "i": "1", "e": "3", "a": "4", "m": "rn", "w": "vv"}
SECOND_LEVEL = {"co", "com", "ac", "org", "net", "gov", "edu"}

# normalise.mask writes `[URL domain]` / `[URL]` (and the same for EMAIL).
MASKED_URL = re.compile(r"\[URL(?: ([^\]\s]*))?\]")
MASKED_EMAIL = re.compile(r"\[EMAIL(?: ([^\]\s]*))?\]")
FROM_LINE = re.compile(r"^From:[^\n]*", re.MULTILINE)
_HEADER_BLOCK = re.compile(r"\A(?:[A-Za-z][\w-]*:[^\n]*\n)+\n")
_SENTENCE_START = re.compile(r"[.!?][\"')\]]?[ \t]+(?=\S)|\n+(?=\S)")
# Tokens an inserted sentence may take; an insertion point later than this in the token budget
# would push the edit past the truncation.
_INSERT_MARGIN = 48
# How many seeded options are ranked by their local token count before `max_counterparts` are tried.
_RANKED_OPTIONS = 600


@dataclass(frozen=True)
class _Site:
    """Where an edit goes in the message: `base[start:end]` is replaced by a phrase and `separator`."""

    start: int
    end: int
    separator: str = ""

    def apply(self, base: str, phrase: str) -> tuple[str, tuple[int, int]]:
        text = base[: self.start] + phrase + self.separator + base[self.end :]
        return text, (self.start, self.start + len(phrase))


def controlled_edit_pairs(
    testset: pd.DataFrame,
    testset_name: str,
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    max_length: int,
    n_pairs: int,
    seed: int,
    kinds: Sequence[str] = EDIT_KINDS,
    max_counterparts: int = 40,
) -> tuple[list[MinimalPair], pd.DataFrame]:
    """Up to `n_pairs` controlled edits of distinct messages, and the drop table (`DROP_COLUMNS`).

    Messages are taken in a seeded order; the kinds take turns, each turn going on until that kind
    has one more pair (or has seen every message), so the kinds share the pairs evenly when the
    test set allows. A message gives at most one pair. For each (message, kind) candidate the
    options (phrase and benign counterpart) are drawn in a seeded order, those whose local token
    count already matches first, and at most `max_counterparts` are tried with `align_pair`; a
    candidate none aligns with is dropped with the last reason, as is a message the kind does not
    apply to (no sender address, no place to insert within the token budget).
    """
    for column in ("uid", "text"):
        if column not in testset:
            raise ValueError(
                f"test set '{testset_name}' has no {column!r} column (columns: {list(testset.columns)});"
                " controlled edits need uid and text"
            )
    kinds = tuple(dict.fromkeys([kinds] if isinstance(kinds, str) else kinds))
    unknown = [kind for kind in kinds if kind not in EDIT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown edit kind(s) {unknown or list(kinds)}; choose from {list(EDIT_KINDS)}")
    budget = message_budget(tokenizer, prompt, max_length)
    url_form = _url_form(testset["text"])
    order = np.random.default_rng(seed).permutation(len(testset))
    next_message = dict.fromkeys(kinds, 0)
    used: set[str] = set()
    pairs: list[MinimalPair] = []
    drops: list[dict] = []
    active = list(kinds)
    while active and len(pairs) < n_pairs:
        for kind in list(active):
            if len(pairs) >= n_pairs:
                break
            while True:
                if next_message[kind] >= len(order):
                    active.remove(kind)
                    break
                position = int(order[next_message[kind]])
                next_message[kind] += 1
                row = testset.iloc[position]
                uid = str(row["uid"])
                if uid in used:
                    continue
                text = "" if pd.isna(row["text"]) else str(row["text"])
                rng = np.random.default_rng([seed, position, EDIT_KINDS.index(kind)])
                edit = _EDITS[kind](text, tokenizer, budget, url_form, rng)
                identity = {"pair_id": f"{testset_name}:{uid}:{kind}", "testset": testset_name, "uid": uid,
                            "kind": f"edit_{kind}", "category": edit.category}
                result = _align_first(edit, tokenizer, prompt, max_length, rng, max_counterparts, identity)
                if isinstance(result, str):
                    drops.append({**{k: identity[k] for k in ("testset", "uid", "kind", "category")},
                                  "reason": result})
                    continue
                used.add(uid)
                pairs.append(result)
                break
    return pairs, pd.DataFrame(drops, columns=DROP_COLUMNS)


@dataclass
class _Edit:
    """One candidate: the message, where the edit goes and the (clean, corrupted) phrases to try."""

    category: str
    base: str
    site: _Site | None = None
    options: list[tuple[str, str]] | None = None
    reason: str = ""  # why the kind does not apply, when site is None


def _align_first(
    edit: _Edit,
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    max_length: int,
    rng: np.random.Generator,
    max_counterparts: int,
    identity: dict,
) -> MinimalPair | str:
    """The pair of the first option that aligns (`identity`: its id fields); else the drop reason."""
    if edit.site is None:
        return edit.reason
    if not edit.options:
        return "no counterpart for this message"
    order = rng.permutation(len(edit.options))[:_RANKED_OPTIONS]
    options = [edit.options[i] for i in order]
    mismatch = _local_length_mismatch(edit.base, edit.site, options, tokenizer)
    reason = "no counterpart for this message"
    for index in np.argsort(mismatch, kind="stable")[:max_counterparts]:
        clean_phrase, corrupt_phrase = options[index]
        if mismatch[index]:
            # Exact (see _local_length_mismatch), and cheaper than tokenising both whole messages.
            reason = "token lengths differ"
            continue
        clean, clean_span = edit.site.apply(edit.base, clean_phrase)
        corrupt, corrupt_span = edit.site.apply(edit.base, corrupt_phrase)
        try:
            return aligned_pair(tokenizer, prompt, max_length, clean_text=clean, clean_span=clean_span,
                                corrupt_text=corrupt, corrupt_span=corrupt_span, **identity)
        except PairRejected as rejected:
            reason = str(rejected)
    return reason


def _local_length_mismatch(
    base: str, site: _Site, options: list[tuple[str, str]], tokenizer: PreTrainedTokenizerBase
) -> np.ndarray:
    """|token count difference| of each option, counted on the edit and its neighbourhood only.

    Byte-level pre-tokenisation never joins a non-space character to the whitespace after it, and
    takes at most one whitespace character into the word that follows, so the edited words with
    their neighbours up to the next whitespace on each side decide the difference; the rest of the
    message tokenises the same way in both prompts.
    """
    start = site.start
    while start > 0 and not base[start - 1].isspace():
        start -= 1
    start = max(start - 1, 0)
    end = site.end
    while end < len(base) and not base[end].isspace():
        end += 1
    left, right = base[start : site.start], site.separator + base[site.end : end]
    windows = [left + phrase + right for option in options for phrase in option]
    counts = [len(ids) for ids in tokenizer(windows, add_special_tokens=False)["input_ids"]]
    return np.abs(np.array(counts[0::2]) - np.array(counts[1::2]))


def _url_form(texts: pd.Series) -> str:
    """How the test set shows links: 'mask_keep_domain', 'mask' or 'raw' (normalise's `urls` option).

    A test set without any link is judged by its addresses, which the same normalisation masks.
    """
    joined = "\n".join(texts.dropna().astype(str))
    masked = [m.group(1) for m in MASKED_URL.finditer(joined)]
    raw = len(URL.findall(joined))
    if masked or raw:
        if len(masked) < raw:
            return "raw"
        return "mask_keep_domain" if sum(bool(d) for d in masked) * 2 >= len(masked) else "mask"
    emails = [m.group(1) for m in MASKED_EMAIL.finditer(joined)]
    if emails:
        return "mask_keep_domain" if any(emails) else "mask"
    return "raw"


def _link(domain: str, form: str) -> str:
    if form == "mask_keep_domain":
        return f"[URL {domain}]"
    if form == "mask":
        return "[URL]"
    return f"http://{domain}/login"


def _places() -> list[str]:
    """A place, with none, one or two qualifiers: a stand-in for links of up to a dozen tokens or so."""
    qualifiers = ["", *(f" {q}" for q in PLACE_QUALIFIERS)]
    qualifiers += [f" {a} {b}" for a in PLACE_QUALIFIERS for b in PLACE_QUALIFIERS if a != b]
    return [f"{d} {n}{q}" for d in PLACE_DETERMINERS for n in PLACE_NOUNS for q in qualifiers]


def _token_index(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Each token's start character in the message alone (as `encode_prompts` tokenises it)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [start for start, _ in offsets]


def _visible(starts: list[int], char: int, budget: int, margin: int = 0) -> bool:
    """Whether the token at `char` (plus `margin` more tokens) lies inside the message's token budget."""
    return sum(start < char for start in starts) + margin < budget


def _insertion_site(
    text: str, tokenizer: PreTrainedTokenizerBase, budget: int, rng: np.random.Generator
) -> _Site | None:
    """A seeded sentence start in the body (after the header lines) early enough to stay visible."""
    header = _HEADER_BLOCK.match(text)
    body_start = header.end() if header else 0
    starts = {body_start} if body_start < len(text) and not text[body_start].isspace() else set()
    starts.update(m.end() for m in _SENTENCE_START.finditer(text, body_start))
    token_starts = _token_index(text, tokenizer)
    eligible = sorted(p for p in starts if p < len(text) and _visible(token_starts, p, budget, _INSERT_MARGIN))
    if not eligible:
        return None
    point = eligible[int(rng.integers(len(eligible)))]
    return _Site(point, point, " ")


def _phrase_edit(category: str, phrases: Sequence[str]):
    def edit(text, tokenizer, budget, url_form, rng) -> _Edit:
        site = _insertion_site(text, tokenizer, budget, rng)
        if site is None:
            return _Edit(category, text, reason="no sentence start within the token budget")
        return _Edit(category, text, site, [(p, b) for p in phrases for b in BENIGN_SENTENCES])

    return edit


def _url_edit(text, tokenizer, budget, url_form, rng) -> _Edit:
    """Remove the first visible link; insert a suspicious one where the message has none in view."""
    token_starts = _token_index(text, tokenizer)
    links = sorted([*MASKED_URL.finditer(text), *URL.finditer(text)], key=lambda m: m.start())
    visible = [m for m in links if _visible(token_starts, m.end(), budget)]
    if visible:
        link = visible[0]
        return _Edit("url_remove", text, _Site(link.start(), link.end()),
                     [(link.group(0), place) for place in _places()])
    site = _insertion_site(text, tokenizer, budget, rng)
    if site is None:
        return _Edit("url_insert", text, reason="no sentence start within the token budget")
    options = [(sentence.format(_link(domain, url_form)), sentence.format(place))
               for sentence in LINK_SENTENCES for domain in SUSPICIOUS_DOMAINS for place in _places()]
    return _Edit("url_insert", text, site, options)


def _sender_edit(text, tokenizer, budget, url_form, rng) -> _Edit:
    """Swap the sender's domain for a look-alike: the From: line's address, else the first address."""
    token_starts = _token_index(text, tokenizer)
    found = None
    for scope in [*FROM_LINE.finditer(text), None]:
        window = (scope.start(), scope.end()) if scope else (0, len(text))
        addresses = sorted([*MASKED_EMAIL.finditer(text, *window), *EMAIL.finditer(text, *window)],
                           key=lambda m: m.start())
        addresses = [m for m in addresses if _visible(token_starts, m.end(), budget)]
        if addresses:
            found = addresses[0]
            break
    if found is None:
        return _Edit("sender_domain", text, reason="no sender address in the text")
    domain = found.group(1) or ""
    if not domain:
        return _Edit("sender_domain", text, reason="the sender address is masked without its domain")
    start = found.start(1)
    lookalikes = [d for d in _lookalikes(domain.lower()) if d.lower() not in text.lower()]
    return _Edit("sender_domain", text, _Site(start, start + len(domain)), [(d, domain) for d in lookalikes])


def _lookalikes(domain: str) -> list[str]:
    """Domains a phisher would send from instead of `domain`: typos, homoglyphs, affixes, other TLDs."""
    labels = domain.split(".")
    if len(labels) < 2:
        return list(THROWAWAY_DOMAINS)
    suffix_size = 2 if len(labels) >= 3 and labels[-2] in SECOND_LEVEL else 1
    prefix, name, suffix = labels[: -suffix_size - 1], labels[-suffix_size - 1], ".".join(labels[-suffix_size:])
    names = [name.replace(a, b, 1) for a, b in HOMOGLYPHS.items() if a in name]
    names += [name[:i] + name[i] + name[i:] for i in range(1, len(name))]
    names += [name[:i] + name[i + 1 :] for i in range(1, len(name) - 1)] if len(name) > 3 else []
    names += [name[:i] + name[i + 1] + name[i] + name[i + 2 :] for i in range(len(name) - 1)]
    names += [name + affix for affix in LOOKALIKE_AFFIXES] + [f"secure-{name}", f"my{name}"]
    candidates = [".".join([*prefix, n, suffix]) for n in names]
    candidates += [".".join([*prefix, name, tld]) for tld in LOOKALIKE_TLDS if tld != suffix]
    candidates += [f"{domain}.secure-login.ru", f"{domain}.verify-account.info", *THROWAWAY_DOMAINS]
    return [d for d in dict.fromkeys(candidates) if d != domain and d.strip("-.")]


_EDITS = {
    "url": _url_edit,
    "urgency": _phrase_edit("urgency_insert", URGENCY_PHRASES),
    "credential": _phrase_edit("credential_insert", CREDENTIAL_PHRASES),
    "sender_domain": _sender_edit,
}
