"""Controlled edits on real-looking messages: pairs align, carry the feature, and every drop has a reason.

The real-corpus test reads ../shared/data (the real-tiny Nazario corpus: Nazario phishing with
SpamAssassin easy_ham_2) and skips when it is absent, as in a fresh clone.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, SHARED_DATA
from gendiag.circuits import edits
from gendiag.circuits.edits import (
    CREDENTIAL_PHRASES,
    EDIT_KINDS,
    URGENCY_PHRASES,
    controlled_edit_pairs,
)
from gendiag.circuits.pairs import DROP_COLUMNS
from gendiag.models.inputs import encode_prompts
from gendiag.models.tokenizer import train_bpe
from gendiag.prompts import PromptFormat

PROMPT = PromptFormat()
MAX_LENGTH = 160
LINK = re.compile(r"\[URL[^\]]*\]|https?://")

# Messages as real-tiny normalisation leaves them: subject line kept, links and addresses masked.
MESSAGES = [
    "Subject: Quarterly report\n\nHi team. The quarterly report is ready for review. Please send comments by Friday.",
    "Subject: Account notice\n\nDear customer, we noticed unusual activity. Visit [URL secure-bank-login.com] to"
    " review it. Write to [EMAIL bank.com] with any questions.",
    "Subject: Lunch\n\nFrom: [EMAIL enron.com]\nAre we still on for lunch tomorrow? Let me know by noon.",
    "Subject: Newsletter\n\nRead the latest issue at [URL news.example.org]. To unsubscribe, write to"
    " [EMAIL lists.example.org].",
    "Subject: Gas nominations\n\nThe nominations for December are attached. Call me at the desk if the volumes"
    " look wrong. Thanks.",
    "Subject: Re: contract\n\nI reviewed the draft contract. Two clauses need changes before we sign. I will send"
    " them to [EMAIL legal.enron.com] today.",
    "Subject: Payment received\n\nYour payment was received. The receipt is available to download. Contact"
    " [EMAIL billing.paypal.com] if this was not you.",
    "Subject: Team offsite\n\nThe offsite is planned for March. We will book rooms for everyone. Reply to"
    " [EMAIL hr.company.com] with your dates.",
    "Subject: Server maintenance\n\nThe mail server will be down on Sunday night. Save your work before you leave."
    " Questions go to [EMAIL it.company.com].",
    "Subject: Invoice 4471\n\nPlease find the invoice for last month attached. Payment is due in thirty days.",
    "Subject: Re: weekend\n\nSounds good. See you Saturday at the station. Bring the tickets.",
    "Subject: Prize notification\n\nCongratulations, you have been selected. Claim your reward at"
    " [URL claim-prize.net] before it expires.",
]


def frame(texts=MESSAGES, prefix="m") -> pd.DataFrame:
    return pd.DataFrame({"uid": [f"{prefix}{i}" for i in range(len(texts))], "text": texts,
                         "label": [i % 2 for i in range(len(texts))]})


@pytest.fixture(scope="module")
def tokenizer(small_corpus):
    texts = small_corpus["text"].tolist() + MESSAGES * 3
    return train_bpe(texts, 800, PROMPT)


def make(tokenizer, testset=None, **kwargs):
    kwargs = {"n_pairs": 40, "seed": 0, **kwargs}
    return controlled_edit_pairs(frame() if testset is None else testset, "tiny", tokenizer, PROMPT, MAX_LENGTH,
                                 **kwargs)


def test_pairs_align_on_the_prompt_tokens_and_differ_only_in_the_edit(tokenizer):
    pairs, _ = make(tokenizer)
    assert {p.kind for p in pairs} == {f"edit_{kind}" for kind in EDIT_KINDS}
    assert len({p.pair_id for p in pairs}) == len(pairs) == len({p.uid for p in pairs})
    originals = dict(zip(frame()["uid"], frame()["text"], strict=True))
    for pair in pairs:
        clean, corrupt = encode_prompts([pair.clean_text, pair.corrupt_text], tokenizer, PROMPT, MAX_LENGTH)
        assert (list(pair.clean_ids), list(pair.corrupt_ids)) == (clean, corrupt)
        assert len(clean) == len(corrupt)
        differing = {i for i, (a, b) in enumerate(zip(clean, corrupt, strict=True)) if a != b}
        assert differing and differing <= set(pair.edited_positions)
        assert pair.message_start <= min(pair.edited_positions) <= max(pair.edited_positions) < pair.message_end
        # Outside the edit both prompts are the message as it was.
        assert pair.clean_text.count(pair.clean_phrase) == 1
        assert pair.clean_text.replace(pair.clean_phrase, pair.corrupt_phrase) == pair.corrupt_text
        original = originals[pair.uid]
        if pair.category in ("url_remove", "sender_domain"):
            assert original == (pair.clean_text if pair.category == "url_remove" else pair.corrupt_text)
        else:
            assert pair.clean_text.replace(pair.clean_phrase + " ", "") == original


def test_the_clean_prompt_has_the_feature_and_the_corrupted_one_not(tokenizer):
    # each kind on its own, so that every message is a candidate for it (links: both directions)
    pairs = [pair for kind in EDIT_KINDS for pair in make(tokenizer, kinds=[kind])[0]]
    seen = set()
    for pair in pairs:
        seen.add(pair.category)
        if pair.kind == "edit_url":
            assert LINK.search(pair.clean_phrase) and not LINK.search(pair.corrupt_phrase)
            assert len(LINK.findall(pair.clean_text)) == len(LINK.findall(pair.corrupt_text)) + 1
            if pair.category == "url_insert":
                # the corpus masks links to their domain, so the inserted one is masked too
                assert re.search(r"\[URL [\w.-]+\]", pair.clean_phrase)
        elif pair.kind in ("edit_urgency", "edit_credential"):
            phrases = URGENCY_PHRASES if pair.kind == "edit_urgency" else CREDENTIAL_PHRASES
            assert pair.clean_phrase in phrases and pair.clean_phrase in pair.clean_text
            assert not any(p in pair.corrupt_text for p in phrases)
        else:
            assert pair.category == "sender_domain"
            assert f"[EMAIL {pair.clean_phrase}]" in pair.clean_text and pair.clean_phrase not in pair.corrupt_text
            assert f"[EMAIL {pair.corrupt_phrase}]" in pair.corrupt_text and pair.clean_phrase != pair.corrupt_phrase
    assert {"url_remove", "url_insert", "urgency_insert", "credential_insert", "sender_domain"} <= seen


def test_sender_domain_prefers_the_from_line(tokenizer):
    text = ("Subject: Hello\n\nPlease forward this to [EMAIL other.org] as well.\nFrom: [EMAIL enron.com]\n"
            "See you at the meeting.")
    pairs, _ = make(tokenizer, frame([text]), kinds=["sender_domain"])
    assert len(pairs) == 1 and pairs[0].corrupt_phrase == "enron.com"
    assert "[EMAIL other.org]" in pairs[0].clean_text


def test_kinds_share_the_pairs_and_n_pairs_is_a_cap(tokenizer):
    with_addresses = frame()[frame()["text"].str.contains(r"\[EMAIL")]
    pairs, _ = make(tokenizer, with_addresses, n_pairs=4)
    assert sorted(p.kind for p in pairs) == sorted(f"edit_{kind}" for kind in EDIT_KINDS)
    pairs, _ = make(tokenizer, n_pairs=2, kinds=["urgency"])
    assert len(pairs) == 2 and {p.category for p in pairs} == {"urgency_insert"}


def test_raw_links_are_inserted_raw(tokenizer):
    raw = [LINK.sub("", t).replace("[EMAIL ", "").replace("]", "") for t in MESSAGES]
    raw[0] += " Slides: http://intranet.example.com/slides"
    pairs, _ = make(tokenizer, frame(raw), kinds=["url"])
    inserted = [p for p in pairs if p.category == "url_insert"]
    assert inserted and all("http://" in p.clean_phrase and "[URL" not in p.clean_phrase for p in inserted)
    removed = [p for p in pairs if p.category == "url_remove"]
    assert [p.clean_phrase for p in removed] == ["http://intranet.example.com/slides"]


def test_same_seed_same_pairs_other_seed_other_pairs(tokenizer):
    def summary(seed):
        pairs, drops = make(tokenizer, seed=seed, n_pairs=8)
        return [(p.pair_id, p.clean_text, p.corrupt_text) for p in pairs], drops.to_dict("records")

    assert summary(3) == summary(3)
    assert summary(3)[0] != summary(4)[0]


def test_drops_have_the_contract_columns_and_a_reason(tokenizer, monkeypatch):
    pairs, drops = make(tokenizer, kinds=["sender_domain"])
    assert list(drops.columns) == DROP_COLUMNS
    assert len(pairs) == 7
    no_address = set(frame()["uid"]) - {p.uid for p in pairs}
    assert set(drops["uid"]) == no_address
    assert set(drops["reason"]) == {"no sender address in the text"}
    assert set(drops["kind"]) == {"edit_sender_domain"} and set(drops["testset"]) == {"tiny"}

    # No sentence start before the token budget runs out: nowhere to insert a visible phrase.
    long_subject = "Subject: " + " ".join(["word"] * 400) + "\n\nBody text. More text."
    pairs, drops = make(tokenizer, frame([long_subject]), kinds=["urgency"])
    assert not pairs and drops["reason"].tolist() == ["no sentence start within the token budget"]
    assert drops["category"].tolist() == ["urgency_insert"]

    # A benign counterpart far longer than any phrase never matches the token length.
    monkeypatch.setattr(edits, "BENIGN_SENTENCES", (" ".join(["The meeting moved to Tuesday."] * 6),))
    pairs, drops = make(tokenizer, kinds=["credential"])
    assert not pairs and len(drops) == len(MESSAGES)
    assert set(drops["reason"]) == {"token lengths differ"}


def test_bad_input_names_the_test_set_and_the_problem(tokenizer):
    with pytest.raises(ValueError, match=r"'tiny'.*'text'"):
        make(tokenizer, frame().drop(columns="text"))
    with pytest.raises(ValueError, match=r"'tiny'.*'uid'"):
        make(tokenizer, frame().drop(columns="uid"))
    with pytest.raises(ValueError, match=r"'phone'.*'url', 'urgency', 'credential', 'sender_domain'"):
        make(tokenizer, kinds=["url", "phone"])


# --- real corpora ------------------------------------------------------------------------------


def real_tiny_corpus(name: str) -> dict:
    """The corpus entry of config/real-tiny.yaml, its paths pointed at this checkout's ../shared/data."""
    config = yaml.safe_load((REPO / "config/real-tiny.yaml").read_text())
    spec = config["corpora"][name]
    for source in spec.get("sources", [spec]):
        source["path"] = source["path"].replace("../shared/data", str(SHARED_DATA))
    return spec, config["normalise"]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real corpora not available at {SHARED_DATA}")
def test_every_kind_gives_pairs_on_a_real_corpus():
    from gendiag.data.corpus import ingest, load_raw
    from gendiag.data.normalise import normalise_configured

    spec, normalise = real_tiny_corpus("nazario")
    raw, _ = load_raw("nazario", spec)
    kept, _, _ = ingest(raw, "nazario", "shared data")
    corpus, _, _ = normalise_configured(kept, spec, normalise)
    sample = corpus.sample(200, random_state=0)
    tokenizer = train_bpe(corpus["text"].sample(1000, random_state=1).tolist(), 3000, PROMPT)

    pairs, drops = controlled_edit_pairs(sample, "nazario", tokenizer, PROMPT, 256, n_pairs=40, seed=0)
    counts = pd.Series([p.kind for p in pairs]).value_counts()
    assert set(counts.index) == {f"edit_{kind}" for kind in EDIT_KINDS}, counts
    assert counts.min() >= 5, counts
    for pair in pairs:
        assert len(pair.clean_ids) == len(pair.corrupt_ids)
        differing = {i for i, (a, b) in enumerate(zip(pair.clean_ids, pair.corrupt_ids, strict=True)) if a != b}
        assert differing <= set(pair.edited_positions)
    # Nazario keeps addresses masked to their domain; the ham from SpamAssassin often has none.
    assert list(drops.columns) == DROP_COLUMNS and len(drops) > 0
    assert "no sender address in the text" in set(drops["reason"])
    assert drops["reason"].str.len().gt(0).all()
