"""Prompt variants for the robustness evaluation: a second template, and k-shot prompts.

k-shot demonstrations come from the test corpus's own training split, never its test split, and
are the same for every message (as in arXiv 2403.09162).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
from transformers import PreTrainedTokenizerBase

from gendiag.finetune.paradigms import choose_demonstrations, encode_demonstrations
from gendiag.prompts import PromptFormat

TEMPLATE2 = "template2"
KSHOT = re.compile(r"kshot(\d+)")


def variant_prompt(
    variant: str,
    prompt_config: Mapping[str, Any],
    alt_template: str | None,
    kshot: Mapping[str, Any],
    pool: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    pool_name: str = "the test corpus's splits",
) -> tuple[PromptFormat, list[int]]:
    """The prompt and demonstration tokens of a variant (`template2` or `kshot<k>`)."""
    prompt = PromptFormat.from_config(dict(prompt_config))
    if variant == TEMPLATE2:
        if not alt_template:
            raise ValueError("variant template2 needs evaluation.alt_template (a second template with '{text}')")
        return prompt.with_template(alt_template), []
    match = KSHOT.fullmatch(variant)
    if not match:
        raise ValueError(f"unknown prompt variant '{variant}'; variants are '{TEMPLATE2}' and 'kshot<k>'")
    if "split" not in pool.columns:
        raise ValueError(f"{pool_name}: no 'split' column; k-shot demonstrations come from a corpus's train split")
    train = pool[pool["split"] == "train"].reset_index(drop=True)
    demos = choose_demonstrations(train, int(match.group(1)), int(kshot.get("seed", 0)), f"{pool_name} (train split)")
    return prompt, encode_demonstrations(demos, tokenizer, prompt, int(kshot.get("demo_max_tokens", 48)))
