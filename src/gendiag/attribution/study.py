"""One model on one test set: sample, explain, check the explanations, in the study's tables."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from gendiag.attribution.explain import explain_messages, feature_mask, stratified_sample, visible_text
from gendiag.attribution.faithfulness import (
    MessageAttribution,
    core_span,
    cue_recovery,
    erasure_faithfulness,
    overlaps_any,
)
from gendiag.prompts import PromptFormat

log = logging.getLogger("gendiag.attribution")


def _cue_spans(row: Mapping) -> list[dict] | None:
    """Planted cue spans of a test message, or None when the corpus has no ground truth."""
    raw = row.get("cue_spans")
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return None
    return [s for s in json.loads(raw) if s.get("role", "cue") == "cue"]


def _in_cue(tokens: pd.DataFrame, spans: list[dict] | None) -> list[bool | None]:
    if spans is None:
        return [None] * len(tokens)
    return [overlaps_any(core_span(token, int(start), int(end)), spans)
            for token, start, end in zip(tokens["token"], tokens["start"], tokens["end"], strict=True)]


def attribute_testset(
    function: Callable[[Sequence[str]], np.ndarray],
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    testset: pd.DataFrame,
    predictions: pd.DataFrame,
    settings: Mapping,
    max_length: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """SHAP values, faithfulness and cue recovery for a stratified sample of one test set.

    `predictions` are the evaluated model's (uid, label, log_odds, pred); `function` is the model
    to explain (the merged one), so its log-odds are compared with the predictions' as a check.
    Returns (tokens, messages, curves): see `explain_messages` and `erasure_faithfulness`.
    """
    missing = set(predictions["uid"]) - set(testset["uid"])
    if missing:
        raise ValueError(f"{len(missing)} predicted messages are not in the test set (e.g. {sorted(missing)[:3]});"
                         " the predictions are stale: rerun predict")
    sample = stratified_sample(predictions, dict(settings["sample"]), int(settings["seed"]))
    sample = sample.merge(testset.drop(columns=["label"]), on="uid", how="left", validate="one_to_one")
    texts = [visible_text(t, tokenizer, prompt, max_length) for t in sample["text"]]
    uids = sample["uid"].tolist()
    log.info("explaining %d messages (%s)", len(sample), sample["category"].value_counts().to_dict())
    tokens, messages = explain_messages(function, tokenizer, texts, uids, max_evals=int(settings["max_evals"]),
                                        batch_size=int(settings["batch_size"]))
    if sample.empty:
        return tokens, messages, pd.DataFrame()
    tokens["feature"] = feature_mask(tokens)
    cue_columns = {"in_cue": [], "precision": [], "recall": []}
    attributions = []
    by_uid = dict(tuple(tokens.groupby("uid", sort=False)))
    f_x = messages.set_index("uid")["f_x"]
    for row in sample.to_dict("records"):
        own = by_uid[row["uid"]]
        spans = _cue_spans(row)
        cue_columns["in_cue"].extend(_in_cue(own, spans))
        features = own[own["feature"]]
        precision, recall = (cue_recovery(features, spans, int(settings["cue_k"])) if spans and row["label"] == 1
                             else (np.nan, np.nan))
        cue_columns["precision"].append(precision)
        cue_columns["recall"].append(recall)
        attributions.append(MessageAttribution(row["uid"], own["token"].tolist(), own["feature"].to_numpy(),
                                               own["shap"].to_numpy(), float(f_x[row["uid"]])))
    tokens["in_cue"] = pd.array(cue_columns["in_cue"], dtype="boolean")
    per_message, curves = erasure_faithfulness(function, attributions, fractions=list(settings["fractions"]),
                                               random_repeats=int(settings["random_repeats"]),
                                               seed=int(settings["seed"]))
    messages = messages.merge(per_message, on="uid", validate="one_to_one")
    messages = sample[["uid", "category", "label", "pred", "log_odds"]].rename(
        columns={"log_odds": "log_odds_evaluated"}).merge(messages, on="uid", validate="one_to_one")
    messages["merged_log_odds_diff"] = (messages["f_x"] - messages["log_odds_evaluated"]).abs()
    messages["merged_label_agrees"] = (messages["f_x"] > 0) == (messages["log_odds_evaluated"] > 0)
    messages["cue_precision"] = cue_columns["precision"]
    messages["cue_recall"] = cue_columns["recall"]
    messages["text"] = texts
    return tokens, messages, curves
