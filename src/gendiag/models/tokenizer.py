"""A byte-level BPE tokenizer trained on the corpus, for the tiny from-scratch models."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from gendiag.prompts import PromptFormat

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
# Enough copies of the prompt with each answer that every label word earns its own merge.
PROMPT_REPEATS = 200


def train_bpe(texts: Iterable[str], vocab_size: int, prompt: PromptFormat) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer; the label words are checked to be single tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    prompt_lines = [prompt.render("", label) for label in (0, 1)] * PROMPT_REPEATS
    tokenizer.train_from_iterator(_chain(texts, prompt_lines), trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    wrapped.padding_side = "left"
    prompt.label_token_ids(wrapped)
    return wrapped


def _chain(texts: Iterable[str], extra: list[str]) -> Iterable[str]:
    yield from texts
    yield from extra
