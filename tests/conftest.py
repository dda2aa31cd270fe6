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


def real_tiny_config() -> dict:
    """config/real-tiny.yaml with its corpus paths pointed at this checkout's ../shared/data (absolute,
    so that a copy of the workflow elsewhere reads the same files)."""
    config = yaml.safe_load((REPO / "config/real-tiny.yaml").read_text())
    for spec in config["corpora"].values():
        for source in spec.get("sources", [spec]):
            source["path"] = source["path"].replace("../shared/data", str(SHARED_DATA))
    return config


# Members each corpus of the real slice reads (a few hundred messages; file names number the messages).
REAL_SLICE_INCLUDE = {
    "enron": ["enron1/ham/0[01]*", "enron1/spam/0[0-4]*"],
    "spamassassin": ["easy_ham/000*", "hard_ham/000[0-4]*", "spam/000*", "spam_2/000[0-4]*"],
}
REAL_SLICE_HAM = {"nazario": ["easy_ham_2/00[0-1]*"], "clair": ["enron6/ham/0[0-1]*"]}


def write_real_slice_config(root: Path) -> Path:
    """`root/real-slice.yaml`: config/real-tiny.yaml on a slice of the real corpora, sized to run the
    whole graph (SHAP, circuits, claims, summary) in a few minutes: a few hundred messages per corpus,
    two micro models (Llama and Gemma 2), a short pretraining and fine-tuning, a small SHAP sample
    and a few minimal pairs. Nazario and CLAIR are read whole (one file each); their ham is sliced."""
    config = real_tiny_config()
    for name, include in REAL_SLICE_INCLUDE.items():
        config["corpora"][name]["include"] = include
    for name, include in REAL_SLICE_HAM.items():
        config["corpora"][name]["sources"][1]["include"] = include
    for recipe in config["recipes"].values():
        recipe.update(train_size=120, val_size=30)
    config["audit"].update(identifiability_max_per_corpus=200, language_sample=50)
    config["prompt"]["max_length"] = 128
    config["tiny_base"] = {"vocab_size": 1000, "format_share": 0.5,
                           "pretrain": {"steps": 10, "batch_size": 8, "lr": 0.003, "seq_len": 64}}
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1}
    config["models"] = {
        name: {**config["models"][name], "shape": {**shape, **extra}, "training": {"steps": 15}}
        for name, extra in (("llama", {}), ("gemma2", {"sliding_window": 64}))
    }
    for model in config["models"].values():
        model["lora"] = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    config["training"].update(steps=15, batch_size=8, eval_every=15, checkpoint_every=15)
    config["evaluation"].update(max_test_size=30, bootstrap_resamples=100, significance={"resamples": 200})
    config["shap"] = {"testsets": ["nazario"], "sample": {"tp": 1, "fp": 1, "fn": 1, "tn": 1}, "max_evals": 40,
                      "random_repeats": 2, "min_token_count": 1, "heatmap_messages": 1}
    # The micro models barely react to one edit: a low min_effect keeps pairs to analyse.
    config["circuits"] = {"testsets": ["nazario"], "candidates_per_testset": 8, "pairs_per_testset": 2,
                          "min_effect": 0.001, "attention_heads": 2, "attention_examples": 1}
    path = root / "real-slice.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
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
    for seed, family in enumerate(("llama", "gemma2", "mistral", "gemma3")):
        out[family] = root / family
        build_tiny_base(family, MICRO_SHAPE, texts, prompt, 800,
                        {"steps": 5, "batch_size": 8, "lr": 3e-3, "seq_len": 64}, seed=seed, out_dir=out[family])
    return out
