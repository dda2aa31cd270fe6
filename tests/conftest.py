"""Shared fixtures: the repository paths and a micro base model built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
VOCABULARY = REPO / "resources/synthetic/styles.yaml"
SHARED_DATA = REPO.parent / "shared/data"
MICRO_SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
               "max_position_embeddings": 512}


@pytest.fixture(scope="session")
def vocab():
    from gendiag.data.synthetic import load_vocabulary

    return load_vocabulary(VOCABULARY)


@pytest.fixture(scope="session")
def small_corpus(vocab) -> pd.DataFrame:
    """120 messages of each of two contrasting styles."""
    from gendiag.data.synthetic import generate_style

    return pd.concat([generate_style(vocab, s, 120, seed=5) for s in ("corporate", "credential_phish")],
                     ignore_index=True)


@pytest.fixture(scope="session")
def micro_bases(tmp_path_factory, small_corpus):
    """{family: base directory} of a 1-layer model per family with a short pretraining."""
    from gendiag.models.base import build_tiny_base, pretraining_texts
    from gendiag.prompts import PromptFormat

    root = tmp_path_factory.mktemp("bases")
    prompt = PromptFormat()
    texts = pretraining_texts(small_corpus["text"].tolist(), prompt, 0.5, seed=0)
    out = {}
    for seed, family in enumerate(("llama", "gemma2", "mistral")):
        out[family] = root / family
        build_tiny_base(family, MICRO_SHAPE, texts, prompt, 800,
                        {"steps": 5, "batch_size": 8, "lr": 3e-3, "seq_len": 64}, seed=seed, out_dir=out[family])
    return out
