"""Shared fixtures: the repository paths and a micro base model built once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
VOCABULARY = REPO / "resources/synthetic/styles.yaml"
SHARED_DATA = REPO.parent / "shared/data"
# What a copy of the workflow needs to run on its own (tests run Snakemake in such copies).
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "resources", "src", "profiles", "envs", "tests/config"]


def copy_workflow(root: Path) -> Path:
    """A runnable copy of the workflow under `root` (no results)."""
    for item in WORKFLOW_FILES:
        source = REPO / item
        (root / item).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / item)
    return root


def write_llama_slice_config(root: Path, **training) -> Path:
    """`root/slice.yaml`: the tiny study with Llama only, zero-shot and standard, no prompt variants,
    `training` keys overridden."""
    config = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    config["models"] = {"llama": config["models"]["llama"]}
    config["training"]["paradigms"] = ["zeroshot", "standard"]
    config["training"].pop("paradigm_scope", None)
    config["evaluation"].pop("alt_template", None)
    config["evaluation"].pop("kshot", None)
    config["training"].update(training)
    path = root / "slice.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


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
