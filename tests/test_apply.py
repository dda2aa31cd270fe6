"""Applying a fine-tuned adapter to new mail (gendiag.apply): read, normalise as in training, score."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO
from gendiag.apply import main
from gendiag.config import validate_config
from gendiag.data.corpus import IngestError
from gendiag.evaluate.apply import ApplyError, apply_model, read_mail, run_keys, training_normalise_options

CPU = torch.device("cpu")
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"

MBOX = b"""From alice@example.com Mon Jan  1 00:00:00 2024
From: Alice <alice@example.com>
Subject: Team lunch
Message-ID: <one@example.com>

Lunch is at noon. See http://intranet.example.com/menu
> an old quoted line
>From the archive: bring a fork.

From bank@paypa1.example Mon Jan  1 00:00:01 2024
From: Security <bank@paypa1.example>
Subject: Verify your account
Content-Type: text/html

<html><body><p>Your account is <b>suspended</b>. Verify at http://paypa1.example/login now.</p></body></html>

From empty@example.com Mon Jan  1 00:00:02 2024
From: nobody@example.com

"""


@pytest.fixture(scope="module")
def study(micro_bases, tmp_path_factory):
    """A run directory laid out as the workflow writes it, with a LoRA adapter whose B weights are non-zero
    (so the adapter changes the scores), and a config for it: the micro models use the default prompt."""
    from gendiag.finetune.qlora import LoraSettings, TrainSettings, build_peft_model

    root = tmp_path_factory.mktemp("apply")
    run = root / "results/finetune/llama/specialist/standard/seed0"
    torch.manual_seed(0)
    model = build_peft_model(micro_bases["llama"], "llama", LoraSettings(r=4), TrainSettings(seed=0), CPU,
                             torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.save_pretrained(str(run / "adapter"))
    shutil.copytree(micro_bases["llama"], root / "results/models/llama/base")  # where --base defaults to
    config = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    config["normalise"] = {"urls": "mask_keep_domain"}
    config_path = root / "study.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return {"run": run, "base": micro_bases["llama"], "config_path": config_path,
            "config": validate_config(config, SCHEMA)}


def reference_scores(study, texts):
    """What rule predict computes for these texts with this adapter."""
    from gendiag.evaluate.predict import load_for_prediction, predict_log_odds
    from gendiag.models.loading import load_tokenizer
    from gendiag.prompts import PromptFormat

    model = load_for_prediction(study["base"], "llama", study["run"] / "adapter",
                                study["config"]["training"]["quantization"], CPU, torch.float32)
    log_odds = predict_log_odds(model, load_tokenizer(study["base"]), texts, PromptFormat(), 256, 32, progress=False)
    return 1.0 / (1.0 + np.exp(-log_odds))


def test_an_mbox_is_scored_with_the_training_normalisation_and_the_workflows_scores(study, tmp_path):
    path = tmp_path / "mail.mbox"
    path.write_bytes(MBOX)
    raw = read_mail(path)
    run = run_keys(study["run"], study["base"])
    assert (run.arch, run.recipe, run.paradigm) == ("llama", "specialist", "standard")
    out = apply_model(raw, run, study["config"])
    assert list(out["message"]) == ["message 1 <one@example.com>", "message 2", "message 3"]
    # The global normalise block (the tiny study's corpora are generated): Subject kept, quoted reply
    # dropped, the escaped '>From ' restored, HTML read as text, URLs masked to their domain.
    first, second = out["text"].iloc[0], out["text"].iloc[1]
    assert first.startswith("Subject: Team lunch\n\nLunch is at noon. See [URL intranet.example.com]")
    assert "an old quoted line" not in first
    assert first.endswith("\nFrom the archive: bring a fork.")  # mboxrd's escaped '>From ' is text, not a quote
    assert "<b>" not in second and "Your account is suspended" in second and "[URL paypa1.example]" in second
    # The empty message keeps its row, unscored, with the loader's reason.
    assert out["problem"].iloc[2].startswith("empty message") and np.isnan(out["p_malicious"].iloc[2])
    expected = reference_scores(study, out["text"].iloc[:2].tolist())
    np.testing.assert_allclose(out["p_malicious"].iloc[:2].to_numpy(dtype=float), expected, rtol=1e-5, atol=1e-6)
    assert list(out["pred"].iloc[:2]) == [int(p >= 0.5) for p in expected]
    assert "label" not in out  # an mbox has no labels


def test_the_command_scores_a_csv_and_a_jsonl_file_and_keeps_their_labels(study, tmp_path):
    table = pd.DataFrame({"Email Text": ["Please review the attached budget.", "Your password expires, log in"],
                          "subject": ["Budget", "Urgent"], "label": [0, 1]})
    csv = tmp_path / "mail.csv"
    table.to_csv(csv, index=False)
    jsonl = tmp_path / "mail.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in table["Email Text"]) + "\n")
    for path, extra in ((csv, ["--column", "body=Email Text", "--column", "subject=subject"]), (jsonl, [])):
        out_path = tmp_path / f"{path.stem}{path.suffix}.scores.csv"
        code = main(["--model", str(study["run"]), "--input", str(path), "--out", str(out_path),
                     "--configfile", str(study["config_path"]), "--keep-text", *extra])
        assert code == 0
        out = pd.read_csv(out_path)
        assert list(out.columns[:8]) == ["message", "subject", "sender", "date", "p_malicious", "log_odds", "pred",
                                         "problem"]
        assert out["p_malicious"].between(0, 1).all() and len(out) == 2
        expected = reference_scores(study, out["text"].tolist())
        np.testing.assert_allclose(out["p_malicious"], expected, rtol=1e-5, atol=1e-6)
        if path == csv:
            assert list(out["label"]) == [0, 1] and out["text"].iloc[0].startswith("Subject: Budget\n\n")


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("mail.csv", "body,subject\nhello,hi\n", [],
         r"mail.csv lacks columns \['text'\] \(has \['body', 'subject'\]\); map them with --column NAME=COLUMN"),
        ("mail.csv", "", [], r"mail.csv is empty \(0 bytes\); check --input"),
        ("mail.mbox", "Subject: not an mbox\n\nhello\n", [],
         r"has no 'From ' separator lines, so it is not an mbox file"),
        ("mail.txt", "hello\n", [], r"cannot tell the format of .*mail.txt from its name; give --format"),
        ("mail.jsonl", '{"text": "a"}\nnot json\n', [], r"mail.jsonl row 2 is not valid JSON"),
        ("mail.csv", "text\nhello\n", ["--column", "body"], r"--column 'body': give NAME=COLUMN"),
    ],
)
def test_bad_input_stops_with_the_loaders_error_naming_the_file_and_the_fix(study, tmp_path, capsys, name, content,
                                                                             extra, message):
    path = tmp_path / name
    path.write_text(content)
    code = main(["--model", str(study["run"]), "--input", str(path), "--out", str(tmp_path / "out.csv"),
                 "--configfile", str(study["config_path"]), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("gendiag.apply: error: ") and re.search(message, err), err
    assert not (tmp_path / "out.csv").exists()


def test_a_missing_input_file_and_a_run_without_an_adapter_are_named(study, tmp_path):
    with pytest.raises(IngestError, match=r"missing.mbox does not exist; fix --input"):
        read_mail(tmp_path / "missing.mbox")
    with pytest.raises(ApplyError, match=r"holds no PEFT adapter"):
        run_keys(tmp_path, study["base"])


def test_the_training_normalisation_is_the_recipes_corpora_and_a_disagreement_needs_corpus(study):
    config = validate_config(yaml.safe_load(study["config_path"].read_text()), SCHEMA)
    assert training_normalise_options(config, "specialist")["urls"] == "mask_keep_domain"
    config["corpora"]["corporate"] = {"loader": "table", "path": "x.csv", "normalise": {"urls": "mask"}}
    with pytest.raises(ApplyError, match=r"normalised differently .* give --corpus"):
        training_normalise_options(config, "generalist")
    assert training_normalise_options(config, "generalist", corpus="corporate")["urls"] == "mask"
    with pytest.raises(ApplyError, match=r"--corpus: unknown corpus 'enron'"):
        training_normalise_options(config, corpus="enron")
