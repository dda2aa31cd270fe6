"""The classification prompt and its label words, shared by training, prediction and analysis.

Generative label fine-tuning (the study's formulation): the model reads the prompt and the
answer is the next token, one label word. Each label word must be a single token of the model's
tokenizer, so that p(malicious) is read off one forward pass at the answer position.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

DEFAULT_TEMPLATE = "Email:\n{text}\nIs this email phishing or legitimate? Answer:"
DEFAULT_LABEL_WORDS = {"legitimate": " legitimate", "malicious": " phishing"}


@dataclass(frozen=True)
class PromptFormat:
    """A prompt template with one `{text}` slot and the answer word of each label."""

    template: str = DEFAULT_TEMPLATE
    label_words: tuple[str, str] = (DEFAULT_LABEL_WORDS["legitimate"], DEFAULT_LABEL_WORDS["malicious"])

    def __post_init__(self) -> None:
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

    def label_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
        """Token ids of (legitimate, malicious); fails unless each label word is one token."""
        ids = []
        for word in self.label_words:
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(pieces) != 1:
                raise ValueError(
                    f"label word {word!r} is {len(pieces)} tokens {tokenizer.convert_ids_to_tokens(pieces)}"
                    " for this tokenizer; choose label words that are single tokens (for a tokenizer"
                    " trained here, include the prompt with both answers in its training text)"
                )
            ids.append(pieces[0])
        return ids[0], ids[1]

    @classmethod
    def from_config(cls, cfg: dict) -> PromptFormat:
        words = {**DEFAULT_LABEL_WORDS, **cfg.get("label_words", {})}
        template = cfg.get("template", DEFAULT_TEMPLATE)
        return cls(template=template, label_words=(words["legitimate"], words["malicious"]))
