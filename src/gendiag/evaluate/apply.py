"""Score new mail with a fine-tuned model: p(malicious) per message of a CSV, JSON lines or mbox file.

The mail is read by the corpus loaders (`gendiag.data.loaders`, so bad input stops with their
errors), normalised with the options the model's training corpora were normalised with, and
scored exactly as the workflow's predict rule scores a test set (`gendiag.evaluate.predict`): the
same base, adapter, prompt, quantization and answer-position log-odds. No message is dropped:
one the loaders flag (empty, binary) or that is empty after normalisation keeps its row, with no
score and its `problem`.

The command line is `python -m gendiag.apply` (`gendiag.apply`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gendiag.data.corpus import corpus_sources
from gendiag.data.normalise import Normaliser, resolve_options

log = logging.getLogger("gendiag.apply")

FORMATS = ("csv", "jsonl", "mbox")
SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".mbox": "mbox", ".mbx": "mbox"}
# The settings named in the loaders' errors, as the command line spells them.
CLI_KEYS = {"path": "--input", "format": "--format", "columns": "--column NAME=COLUMN", "encoding": "--encoding"}
OUTPUT_COLUMNS = ["message", "subject", "sender", "date", "p_malicious", "log_odds", "pred", "problem"]
SCORED_PARADIGMS = ("standard", "fticl", "head", "cot")


class ApplyError(ValueError):
    """The model, config or options cannot be used; the message names the setting and the fix."""


@dataclass(frozen=True)
class RunKeys:
    """Which fine-tuned model: the run directory's wildcards and its base model directory."""

    arch: str
    recipe: str
    paradigm: str
    adapter: Path
    base: Path


def run_keys(model: str | Path, base: str | Path | None = None, arch: str | None = None,
             recipe: str | None = None, paradigm: str | None = None) -> RunKeys:
    """Read arch, recipe and paradigm from a run directory results/finetune/<arch>/<recipe>/<paradigm>/seed<seed>
    (or its `adapter` folder); explicit values win. The base defaults to results/models/<arch>/base beside it."""
    path = Path(model)
    if not path.exists():
        raise ApplyError(f"--model {path} does not exist; give a run directory "
                         "results/finetune/<arch>/<recipe>/<paradigm>/seed<seed> or its adapter folder")
    adapter = path if (path / "adapter_config.json").exists() else path / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise ApplyError(f"--model {path} holds no PEFT adapter (no adapter_config.json in {adapter}); give a "
                         "finished fine-tuning run directory or its adapter folder")
    run = adapter.parent if adapter.name == "adapter" else adapter
    parts = run.resolve().parts
    from_path = dict(zip(("arch", "recipe", "paradigm"), parts[-4:-1], strict=True)) if (
        len(parts) >= 5 and parts[-5] == "finetune" and parts[-1].startswith("seed")) else {}
    given = {"arch": arch, "recipe": recipe, "paradigm": paradigm}
    keys = {k: given[k] or from_path.get(k) for k in given}
    missing = [k for k, v in keys.items() if not v]
    if missing:
        raise ApplyError(f"--model {path} is not under results/finetune/<arch>/<recipe>/<paradigm>/seed<seed>, so "
                         f"its {', '.join(missing)} cannot be read from it; give " +
                         " and ".join(f"--{k}" for k in missing))
    if base is None:
        if not from_path:
            raise ApplyError("give --base (the model's base directory, results/models/<arch>/base)")
        base = run.resolve().parents[4] / "models" / keys["arch"] / "base"
    if not Path(base).is_dir():
        raise ApplyError(f"base model directory {base} does not exist; give --base results/models/<arch>/base")
    return RunKeys(keys["arch"], keys["recipe"], keys["paradigm"], adapter, Path(base))


def training_normalise_options(config: dict, recipe: str | None = None, corpus: str | None = None) -> dict[str, Any]:
    """The normalise options the model's training text was made with: `corpus`'s, else those shared by every
    source of the recipe's corpora (a generated corpus counts with the global block: its text is written
    in that form and never rewritten). Sources normalised differently need `corpus` to choose."""
    corpora = config["corpora"]
    if corpus is not None:
        if corpus not in corpora:
            raise ApplyError(f"--corpus: unknown corpus '{corpus}'; the config defines {sorted(corpora)}")
        names = [corpus]
    else:
        if recipe not in config["recipes"]:
            raise ApplyError(f"recipe '{recipe}' is not in the config (recipes: {sorted(config['recipes'])}); give "
                             "--configfile the study's config, --recipe, or --corpus to pick the normalisation")
        names = list(config["recipes"][recipe]["corpora"])
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = corpora[name]
        sources = corpus_sources(spec) or [{"name": name, "loader": None}]
        for source in sources:
            options = resolve_options(config.get("normalise") or {}, source["loader"], spec.get("normalise"),
                                      source.get("normalise"))
            found[f"{name}/{source['name']}"] = options
    distinct = {repr(sorted(o.items())): o for o in found.values()}
    if len(distinct) > 1:
        listing = "; ".join(f"{k}: {v}" for k, v in found.items())
        raise ApplyError(f"the training corpora {names} were normalised differently ({listing}); give --corpus to "
                         "say which corpus's normalisation the new mail should get")
    return next(iter(distinct.values()))


def read_mail(path: str | Path, fmt: str | None = None, columns: dict[str, str] | None = None,
              encoding: str | None = None) -> pd.DataFrame:
    """The messages of a CSV, JSON lines or mbox file as the loaders' raw table (labels -1 where absent).

    A table needs a `text` (or `body`) column, and may have subject, sender, date, uid and label columns;
    `columns` maps those names to the file's own (e.g. {"body": "Email Text"}).
    """
    from gendiag.data.loaders import read_source

    path = Path(path)
    fmt = fmt or SUFFIX_FORMATS.get(Path(path.name.lower().removesuffix(".gz")).suffix)
    if fmt not in FORMATS:
        raise ApplyError(f"cannot tell the format of {path} from its name; give --format (one of {list(FORMATS)})")
    spec: dict[str, Any] = {"loader": "mbox" if fmt == "mbox" else "table", "path": str(path)}
    if fmt != "mbox":
        spec["format"] = fmt
        if columns:
            spec["columns"] = dict(columns)
    elif columns:
        raise ApplyError("--column maps table columns; an mbox file has none (drop --column, or give a table)")
    if encoding:
        spec["encoding"] = encoding
    raw, notes = read_source(spec, path.name, labelled=False, keys=CLI_KEYS)
    log.info("%s: %d messages read (%d flagged by the loader)", path, len(raw), notes["problem_rows"])
    return raw


def normalise_mail(raw: pd.DataFrame, options: dict[str, Any]) -> pd.Series:
    """The text the model sees, per message ('' where the loader flagged the message)."""
    normaliser = Normaliser(options)
    texts = [
        "" if r.problem else normaliser.text(r.subject, r.body, r.sender, r.date, r.headers, r.body_format)
        for r in raw.itertuples(index=False)
    ]
    return pd.Series(texts, index=raw.index, dtype=object)


def model_settings(config: dict, arch: str) -> dict[str, Any]:
    """What the predict rule gives a model: family, prompt (with its chat template), quantization, evaluation."""
    if arch not in config["models"]:
        raise ApplyError(f"model '{arch}' is not in the config (models: {sorted(config['models'])}); give "
                         "--configfile the config the model was trained with, or --arch")
    model = config["models"][arch]
    return {
        "family": model["family"],
        "prompt": {**config["prompt"], "chat_template": model["chat_template"]},
        "quantization": dict(config["training"]["quantization"]),
        "batch_size": int(config["evaluation"]["batch_size"]),
        "threshold": float(config["evaluation"]["threshold"]),
        "compute": {k: config["compute"][k] for k in ("device", "dtype")},
    }


def score_texts(texts: list[str], run: RunKeys, settings: dict[str, Any], progress: bool = False) -> pd.DataFrame:
    """log_odds, p_malicious and pred per text, as rule predict computes them for this paradigm."""
    import torch

    from gendiag.evaluate.predict import adapter_demonstrations, load_for_prediction, predict_cot, predict_log_odds
    from gendiag.models.loading import load_tokenizer, resolve_compute
    from gendiag.prompts import PromptFormat

    if run.paradigm not in SCORED_PARADIGMS:
        raise ApplyError(f"paradigm '{run.paradigm}' has no adapter to apply; a fine-tuned run is one of "
                         f"{list(SCORED_PARADIGMS)} (give --paradigm)")
    device, dtype = resolve_compute(settings["compute"])
    prompt = PromptFormat.from_config(settings["prompt"])
    max_length = int(settings["prompt"]["max_length"])
    classifier = run.paradigm == "head"
    model = load_for_prediction(run.base, settings["family"], run.adapter, settings["quantization"], device, dtype,
                                classifier=classifier)
    tokenizer = load_tokenizer(run.base)
    threshold = settings["threshold"]
    if run.paradigm == "cot":
        cot = settings["cot"]
        out = predict_cot(model, tokenizer, texts, prompt, max_length, settings["batch_size"], cot["answer_cue"],
                          int(cot["max_new_tokens"]))
        log_odds = out["log_odds"].to_numpy(dtype=float)
        p = np.where(np.isfinite(log_odds), 1.0 / (1.0 + np.exp(-np.nan_to_num(log_odds))), np.nan)
        pred = out["parsed"].astype("Int64")  # the label the model wrote; <NA> where none could be read
        return pd.DataFrame({"log_odds": log_odds, "p_malicious": p, "pred": pred, "generated": out["generated"]})
    context = adapter_demonstrations(run.adapter, tokenizer, prompt)
    with torch.no_grad():
        log_odds = predict_log_odds(model, tokenizer, texts, prompt, max_length, settings["batch_size"],
                                    progress=progress, context=context, classifier=classifier)
    p = 1.0 / (1.0 + np.exp(-log_odds))
    return pd.DataFrame({"log_odds": log_odds, "p_malicious": p, "pred": (p >= threshold).astype(int)})


def apply_model(raw: pd.DataFrame, run: RunKeys, config: dict, corpus: str | None = None,
                progress: bool = False) -> pd.DataFrame:
    """One row per message read, in order: OUTPUT_COLUMNS (+ `label` where the file has labels, `text` the
    model saw). Messages the loaders flag, or empty after normalisation, keep their row without a score."""
    settings = model_settings(config, run.arch)
    if run.paradigm == "cot":
        settings["cot"] = config["training"]["cot"]
    options = training_normalise_options(config, run.recipe, corpus)
    texts = normalise_mail(raw, options)
    problem = raw["problem"].where(raw["problem"] != "", np.where(texts.str.strip() == "",
                                                                  "empty after normalisation", ""))
    scored = (problem == "").to_numpy()
    out = pd.DataFrame({"message": raw["source_id"], "subject": raw["subject"], "sender": raw["sender"],
                        "date": raw["date"], "p_malicious": np.nan, "log_odds": np.nan,
                        "pred": pd.Series(pd.NA, index=raw.index, dtype="Int64"), "problem": problem})
    if scored.any():
        scores = score_texts(texts[scored].tolist(), run, settings, progress=progress)
        for column in scores.columns:
            if column not in out:
                out[column] = pd.Series(pd.NA, index=raw.index, dtype=object)
            out.loc[scored, column] = scores[column].to_numpy()
        out["pred"] = out["pred"].astype("Int64")
    if (raw["label"] >= 0).any():
        out["label"] = raw["label"].where(raw["label"] >= 0).astype("Int64")
    out["text"] = texts
    log.info("%d messages scored, %d not (see `problem`); %d flagged malicious at threshold %.2f",
             int(scored.sum()), int((~scored).sum()), int((out["pred"] == 1).sum()), settings["threshold"])
    return out
