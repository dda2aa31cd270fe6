"""Prompt robustness: variant prompts and the F1 difference against the main prompt."""

import numpy as np
import pandas as pd
import pytest

from gendiag.evaluate.metrics import classification_metrics
from gendiag.evaluate.robustness import robustness_table, variant_files
from gendiag.evaluate.variants import variant_prompt
from gendiag.models.loading import load_tokenizer


def _predictions(p, labels, testset, seed=0, **keys):
    return pd.DataFrame({"uid": [f"{testset}{i}" for i in range(len(labels))], "label": labels, "p_malicious": p,
                         "arch": "llama", "recipe": "specialist", "paradigm": "standard", "seed": seed,
                         "testset": testset, **keys})


def test_the_effect_is_the_variants_f1_minus_the_main_prompts_per_test_set_and_overall():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    main_a, var_a = rng.random(200), rng.random(200)
    main_b = np.where(labels == 1, 0.9, 0.1)
    var_b = main_b.copy()
    main = pd.concat([_predictions(main_a, labels, "a"), _predictions(main_b, labels, "b")])
    variants = pd.concat([_predictions(var_a, labels, "a", variant="template2"),
                          _predictions(var_b, labels, "b", variant="template2")])
    table = robustness_table(main, variants.sample(frac=1, random_state=1), n_resamples=500)
    rows = table.set_index("testset")
    f1 = lambda p: classification_metrics(labels, p)["f1"]  # noqa: E731
    assert rows.loc["a", "delta_f1"] == pytest.approx(f1(var_a) - f1(main_a))
    assert rows.loc["b", "delta_f1"] == 0 and rows.loc["b", "ci_low"] == rows.loc["b", "ci_high"] == 0
    assert rows.loc["all test sets", "delta_f1"] == pytest.approx((f1(var_a) - f1(main_a)) / 2)
    assert rows.loc["a", "ci_low"] <= rows.loc["a", "delta_f1"] <= rows.loc["a", "ci_high"]

    with pytest.raises(ValueError, match="score other messages than the main prompt's"):
        robustness_table(main, variants.iloc[1:], n_resamples=100)


def test_kshot_demonstrations_come_from_the_test_corpus_training_split(micro_bases):
    tokenizer = load_tokenizer(micro_bases["llama"])
    pool = pd.DataFrame({"uid": [f"u{i}" for i in range(8)], "label": [1, 0] * 4,
                         "split": ["test", "test", "train", "train", "train", "train", "val", "val"],
                         "text": [f"{split} message {i}" for i, split in enumerate(
                             ["test", "test", "train", "train", "train", "train", "val", "val"])]})
    prompt, context = variant_prompt("kshot2", {"max_length": 64}, None, {"seed": 0}, pool, tokenizer)
    decoded = tokenizer.decode(context)
    assert decoded.count("train message") == 2 and "test message" not in decoded and "val message" not in decoded
    assert decoded.index("phishing\n\n") < decoded.index("legitimate\n\n")  # malicious first, then legitimate
    alt = "Message:\n{text}\nQuestion: phishing or legitimate?\nAnswer:"
    prompt, context = variant_prompt("template2", {}, alt, {}, pool, tokenizer)
    assert prompt.template == alt and context == []
    with pytest.raises(ValueError, match="needs evaluation.alt_template"):
        variant_prompt("template2", {}, None, {}, pool, tokenizer)
    with pytest.raises(ValueError, match="unknown prompt variant 'fewshot'"):
        variant_prompt("fewshot", {}, alt, {}, pool, tokenizer)


def test_variant_files_must_match_their_run_variant_and_test_set():
    runs = [("llama", "none", "zeroshot", 0)]
    paths = ["results/variants/llama/none/zeroshot/seed0/template2/a.parquet",
             "results/variants/llama/none/zeroshot/seed0/template2/b.parquet"]
    assert [f[4:6] for f in variant_files(runs, ["template2"], ["a", "b"], paths)] == [("template2", "a"),
                                                                                       ("template2", "b")]
    with pytest.raises(RuntimeError, match="does not belong"):
        variant_files(runs, ["template2"], ["b", "a"], paths)
