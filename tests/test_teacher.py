"""The `teacher` rationale source: prompting a local model, cleaning what it writes, falling back."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from gendiag.finetune import teacher as teacher_module
from gendiag.finetune.rationales import LABEL_LIKE_WORDS, RATIONALE_PREFIX, cue_rationale
from gendiag.finetune.teacher import (
    EVIDENCE_PREFIX,
    ORIGIN_FALLBACK,
    ORIGIN_TEACHER,
    TeacherSettings,
    clean_teacher_output,
    teacher_prompt,
    teacher_rationales,
)
from gendiag.models.loading import load_causal_lm, load_tokenizer
from gendiag.prompts import PromptFormat

LABEL_WORDS = PromptFormat().label_words
NAMES = [w.strip() for w in LABEL_WORDS]  # legitimate, phishing
NO_QUANT = {"load_in_4bit": False}


def _states_a_label(text: str) -> bool:
    words = {w.lower() for w in LABEL_LIKE_WORDS} | {n.lower() for n in NAMES}
    return any(token in words for token in re.findall(r"[a-z]+", text.lower()))


# --- cleaning ----------------------------------------------------------------------------------

def test_the_first_line_is_kept_and_label_words_and_the_answer_cue_are_scrubbed():
    raw = " Evidence: This phishing email links to paypa1-login.com. Answer: phishing\nQuestion: and this one?"
    rationale = clean_teacher_output(raw, LABEL_WORDS)
    assert rationale.startswith(RATIONALE_PREFIX + " This")
    assert "paypa1-login.com" in rationale and "Question" not in rationale
    assert not _states_a_label(rationale) and "Answer:" not in rationale


@pytest.mark.parametrize("raw", ["", "\n\n", " phishing.", "Evidence: legitimate\nthe link is odd", " ... "])
def test_an_output_with_nothing_but_labels_or_blanks_is_no_rationale(raw):
    assert clean_teacher_output(raw, LABEL_WORDS) is None


# --- prompting ---------------------------------------------------------------------------------

def test_an_instruction_must_name_the_message_and_the_label():
    with pytest.raises(ValueError, match=r"\{label\}"):
        TeacherSettings(instruction="Email: {text}. Why?")
    with pytest.raises(ValueError, match="max_new_tokens"):
        TeacherSettings(max_new_tokens=0)


def test_a_base_model_gets_the_plain_request_with_the_gold_label_and_a_cut_text(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    text = " ".join(["the meeting moves to friday"] * 40)
    settings = TeacherSettings(max_text_tokens=12)
    prompts = {name: tokenizer.decode(teacher_prompt(text, name, tokenizer, settings)) for name in NAMES}
    for name, decoded in prompts.items():
        assert f"This email is {name}." in decoded and decoded.endswith(EVIDENCE_PREFIX.strip())
        assert decoded.count("friday") < 40  # the text was cut to 12 tokens
    assert prompts["legitimate"] != prompts["phishing"]


def test_an_instruct_tokenizer_frames_the_request_as_a_chat_turn(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    tokenizer.chat_template = (
        "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|bot|>{% endif %}"
    )
    decoded = tokenizer.decode(teacher_prompt("urgent: verify your account", "phishing", tokenizer, TeacherSettings()))
    assert "This email is phishing." in decoded and EVIDENCE_PREFIX.strip() not in decoded


# --- the whole source --------------------------------------------------------------------------

def test_unusable_outputs_fall_back_to_cue_rationales_and_say_so(monkeypatch):
    messages = pd.DataFrame({
        "uid": ["a", "b", "c"],
        "text": ["Your account is locked, log in within 24 hours at http://paypa1-secure.com/login",
                 "URGENT: send your password now", "see you at lunch"],
        "label": [1, 1, 0],
    })
    written = ["\n", " phishing!", " It asks to log in at paypa1-secure.com.\nAnswer: phishing"]
    monkeypatch.setattr(teacher_module, "generate_greedy", lambda *args, **kwargs: list(written))
    monkeypatch.setattr(teacher_module, "teacher_prompt", lambda *args, **kwargs: [1, 2, 3])
    table = teacher_rationales(messages, model=None, tokenizer=None, label_names=NAMES,
                               settings=TeacherSettings(), forbidden=LABEL_WORDS)
    assert table["uid"].tolist() == ["a", "b", "c"]
    assert table["origin"].tolist() == [ORIGIN_FALLBACK, ORIGIN_FALLBACK, ORIGIN_TEACHER]
    assert table["rationale"].iloc[0] == cue_rationale(messages["text"].iloc[0], 2, LABEL_WORDS)
    assert table["rationale"].iloc[2] == f"{RATIONALE_PREFIX} It asks to log in at paypa1-secure.com."
    assert table["generated"].tolist() == written


def test_labels_without_a_name_are_an_error():
    messages = pd.DataFrame({"uid": ["a"], "text": ["hi"], "label": [2]})
    with pytest.raises(ValueError, match=r"labels \[2\] have no name"):
        teacher_rationales(messages, None, None, NAMES, TeacherSettings())


def test_a_real_teacher_writes_deterministic_label_free_rationales(micro_bases, small_corpus):
    tokenizer = load_tokenizer(micro_bases["llama"])
    model = load_causal_lm(micro_bases["llama"], "llama", NO_QUANT, torch.device("cpu"), torch.float32).eval()
    messages = small_corpus.groupby("label").head(6).reset_index(drop=True)
    settings = TeacherSettings(max_new_tokens=12, batch_size=4)
    first = teacher_rationales(messages, model, tokenizer, NAMES, settings, forbidden=LABEL_WORDS, progress=False)
    again = teacher_rationales(messages, model, tokenizer, NAMES, settings, forbidden=LABEL_WORDS, progress=False)
    pd.testing.assert_frame_equal(first, again)
    assert first["uid"].tolist() == messages["uid"].tolist()
    assert set(first["origin"]) <= {ORIGIN_TEACHER, ORIGIN_FALLBACK}
    for rationale in first["rationale"]:
        assert rationale.startswith(RATIONALE_PREFIX) and "\n" not in rationale and not _states_a_label(rationale)
    # what the teacher wrote is kept verbatim: one line at most
    assert all("\n" not in generated.rstrip("\n") for generated in first["generated"])
    print(first[["origin", "rationale", "generated"]].to_string())
