"""The classification prompt and its label words, shared by training, prediction and analysis.

Generative label fine-tuning (the study's formulation): the model reads the prompt and the
answer is the next token, one label word. Each label word must be a single token of the model's
tokenizer, so that p(malicious) is read off one forward pass at the answer position.

Instruct models are prompted the way they were tuned to be: with `chat_template` "auto" (the
default) and a tokenizer that has a chat template, the template becomes one user turn and the
assistant's turn opens with the answer (`PromptFormat.for_tokenizer`). A template that ends with
the answer cue ("Answer:") keeps the cue for the assistant's turn, so the label word follows
"Answer:" in chat and plain prompts alike (" phishing" with its leading space is the natural next
token there, not at the start of a turn). Tiny and base tokenizers have no chat template, so their
prompts are the plain template.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from transformers import PreTrainedTokenizerBase

DEFAULT_TEMPLATE = "Email:\n{text}\nIs this email phishing or legitimate? Answer:"
DEFAULT_LABEL_WORDS = {"legitimate": " legitimate", "malicious": " phishing"}
ANSWER_CUE = "Answer:"  # a template ending with it hands it to the assistant's turn in chat prompts
CHAT_TEMPLATE_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class PromptFormat:
    """A prompt template with one `{text}` slot and the answer word of each label."""

    template: str = DEFAULT_TEMPLATE
    label_words: tuple[str, str] = (DEFAULT_LABEL_WORDS["legitimate"], DEFAULT_LABEL_WORDS["malicious"])
    chat_template: str = "auto"  # auto: the tokenizer's chat template when it has one; always; never
    in_chat: bool = False  # whether `template` already is the chat-rendered user turn

    def __post_init__(self) -> None:
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(f"chat_template must be one of {CHAT_TEMPLATE_MODES}, got {self.chat_template!r}")
        if self.template.count("{text}") != 1:
            raise ValueError(f"prompt template must contain '{{text}}' exactly once, got {self.template!r}")
        if self.label_words[0] == self.label_words[1]:
            raise ValueError(f"label words must differ, got {self.label_words}")

    @property
    def prefix(self) -> str:
        return self.template.split("{text}")[0]

    @property
    def suffix(self) -> str:
        return self.template.split("{text}")[1]

    def render(self, text: str, label: int | None = None) -> str:
        prompt = self.template.replace("{text}", text)
        return prompt if label is None else prompt + self.label_words[label]

    def with_template(self, template: str) -> PromptFormat:
        """The same label words and chat setting around another template (not yet chat-rendered)."""
        return replace(self, template=template, in_chat=False)

    def for_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> PromptFormat:
        """This prompt as `tokenizer`'s model reads it: inside its chat template when that applies.

        The chat-rendered template keeps the `{text}` slot, so the prompt's prefix and suffix (which
        every stage encodes around the message) hold the chat markup. A template ending with
        `ANSWER_CUE` is split there: the question is the user's turn and the cue opens the
        assistant's. A leading BOS the chat template writes is dropped when the tokenizer adds one
        itself, so there is never a second.
        """
        if self.in_chat or self.chat_template == "never":
            return self
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if not has_template:
            if self.chat_template == "always":
                raise ValueError(
                    f"prompt chat_template is 'always' but the tokenizer of {tokenizer.name_or_path!r} has no chat"
                    " template; set the model's chat_template to 'auto' or 'never'"
                )
            return self
        question, answer_start = self.template.rstrip(), ""
        if question.endswith(ANSWER_CUE) and question != ANSWER_CUE:
            question, answer_start = question[: -len(ANSWER_CUE)].rstrip(), ANSWER_CUE
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        ) + answer_start
        if rendered.count("{text}") != 1:
            raise ValueError(
                f"the chat template of {tokenizer.name_or_path!r} did not keep the prompt's '{{text}}' slot"
                f" (rendered: {rendered!r}); set the model's chat_template to 'never'"
            )
        bos = tokenizer.bos_token
        adds_bos = bool(tokenizer("", add_special_tokens=True)["input_ids"])
        if bos and adds_bos and rendered.startswith(bos):
            rendered = rendered[len(bos):]
        return replace(self, template=rendered, in_chat=True)

    def label_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
        """Token ids of (legitimate, malicious); fails unless each label word is one token."""
        ids = []
        for word in self.label_words:
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(pieces) != 1:
                suggestion = single_token_alternative(word, tokenizer)
                hint = (f"; {suggestion!r} is one token for it" if suggestion else
                        "; none of its case or leading-space variants is one token either")
                raise ValueError(
                    f"label word {word!r} is {len(pieces)} tokens {tokenizer.convert_ids_to_tokens(pieces)}"
                    f" for the tokenizer of {tokenizer.name_or_path!r}{hint}. Set prompt.label_words to words"
                    " that are single tokens for every model (for a tokenizer trained here, include the"
                    " prompt with both answers in its training text)"
                )
            ids.append(pieces[0])
        return ids[0], ids[1]

    @classmethod
    def from_config(cls, cfg: dict) -> PromptFormat:
        """From the `prompt` config block; model rules add the model's own `chat_template` to it."""
        words = {**DEFAULT_LABEL_WORDS, **cfg.get("label_words", {})}
        template = cfg.get("template", DEFAULT_TEMPLATE)
        return cls(template=template, label_words=(words["legitimate"], words["malicious"]),
                   chat_template=cfg.get("chat_template", "auto"))


def single_token_alternative(word: str, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """A case or leading-space variant of `word` that `tokenizer` encodes as one token, if any."""
    core = word.strip()
    for candidate in (f" {core}", core, f" {core.lower()}", core.lower(), f" {core.capitalize()}",
                      core.capitalize(), f" {core.upper()}", core.upper()):
        if candidate != word and len(tokenizer(candidate, add_special_tokens=False)["input_ids"]) == 1:
            return candidate
    return None
