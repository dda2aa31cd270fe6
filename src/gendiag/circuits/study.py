"""The circuit analysis of one fine-tuned model on its minimal pairs, as tables.

Pairs whose edit barely moves the prediction are not analysed: a normalised patching effect
divides by the clean - corrupted gap, so a gap near zero would turn noise into effects of any size.
The pairs table keeps every candidate with its status, so the drops are counted, never hidden.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from gendiag.circuits import patching
from gendiag.circuits.bridge import AnalysedModel
from gendiag.circuits.pairs import DROP_COLUMNS, MinimalPair, pairs_table, synthetic_cue_pairs
from gendiag.prompts import PromptFormat

log = logging.getLogger("gendiag.circuits")

SMALL_EFFECT = "prediction barely changes"
EMPTY_COLUMNS = {
    "lens": ["pair_id", "point", "depth", "clean", "corrupt"],
    "dla": ["pair_id", "component", "layer", "head", "clean", "corrupt"],
    "resid": ["pair_id", "point", "position", "segment", "effect", "attribution"],
    "heads": ["pair_id", "layer", "head", "effect", "attribution", "attention_to_edit_clean",
              "attention_to_edit_corrupt"],
    "attention": ["pair_id", "layer", "head", "query", "key", "clean", "corrupt", "query_token", "key_token_clean",
                  "key_token_corrupt", "edited"],
}
NOT_NEEDED = "not needed (enough pairs analysed)"


def build_pairs(testsets: dict[str, pd.DataFrame], tokenizer, prompt: PromptFormat, max_length: int,
                settings: dict) -> tuple[list[MinimalPair], pd.DataFrame]:
    """Candidate pairs of every test set: cue toggles where cues are planted, controlled edits elsewhere."""
    pairs, drops = [], []
    for offset, (name, frame) in enumerate(sorted(testsets.items())):
        n, seed = int(settings["candidates_per_testset"]), int(settings["seed"]) + offset
        if "cue_spans" in frame:
            built, dropped = synthetic_cue_pairs(frame, name, tokenizer, prompt, max_length, n, seed)
        else:
            from gendiag.circuits.edits import controlled_edit_pairs

            built, dropped = controlled_edit_pairs(frame, name, tokenizer, prompt, max_length, n, seed,
                                                   kinds=settings["edit_kinds"])
        log.info("%s: %d candidate pairs, %d candidates dropped", name, len(built), len(dropped))
        pairs += built
        drops.append(dropped)
    return pairs, pd.concat(drops, ignore_index=True) if drops else pd.DataFrame(columns=DROP_COLUMNS)


def merge_agreement(merged: torch.nn.Module, tokenizer, prompt: PromptFormat, max_length: int, batch_size: int,
                    testsets: dict[str, pd.DataFrame], predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """How closely the merged full-precision model reproduces the evaluated 4-bit model's predictions.

    One row per test set (every message the 4-bit model was evaluated on) and one for all of them.
    """
    from gendiag.evaluate.predict import predict_log_odds
    from gendiag.models.merge import prediction_agreement

    rows, reference_all, merged_all = [], [], []
    for name in sorted(testsets):
        evaluated = predictions[name][["uid", "log_odds"]]
        texts = evaluated.merge(testsets[name][["uid", "text"]], on="uid", how="left")
        if texts["text"].isna().any():
            missing = texts.loc[texts["text"].isna(), "uid"].iloc[0]
            raise ValueError(f"predictions of test set '{name}' name message {missing!r}, which the test set lacks:"
                             " rerun prediction (the test set changed)")
        merged_log_odds = predict_log_odds(merged, tokenizer, texts["text"].tolist(), prompt, max_length, batch_size,
                                           progress=False)
        rows.append({"testset": name, **prediction_agreement(texts["log_odds"].to_numpy(), merged_log_odds)})
        reference_all.append(texts["log_odds"].to_numpy())
        merged_all.append(merged_log_odds)
    rows.append({"testset": "all", **prediction_agreement(np.concatenate(reference_all), np.concatenate(merged_all))})
    return pd.DataFrame(rows)


def pair_logit_diffs(model: AnalysedModel, pairs: Sequence[MinimalPair]) -> tuple[np.ndarray, np.ndarray]:
    """The metric on every pair's clean and corrupted prompt."""
    clean, corrupt = np.empty(len(pairs)), np.empty(len(pairs))
    final = patching.resid_point(model, model.n_layers)
    for i, pair in enumerate(pairs):
        for ids, out in ((pair.clean_ids, clean), (pair.corrupt_ids, corrupt)):
            with torch.no_grad():
                _, cache = model.bridge.run_with_cache(
                    torch.tensor([list(ids)], device=model.hf_model.device), names_filter=lambda n: n == final,
                    **patching.ANSWER_LOGITS_ONLY,
                )
                out[i] = float(patching.logit_diff_of(model, cache[final].float())[0])
    return clean, corrupt


def select_pairs(pairs: Sequence[MinimalPair], clean: np.ndarray, corrupt: np.ndarray, min_effect: float,
                 per_testset: int) -> list[str]:
    """Each pair's status: "analysed", SMALL_EFFECT or NOT_NEEDED (first `per_testset` per test set)."""
    status, taken = [], {}
    for pair, gap in zip(pairs, clean - corrupt, strict=True):
        if abs(gap) < min_effect:
            status.append(SMALL_EFFECT)
        elif taken.get(pair.testset, 0) >= per_testset:
            status.append(NOT_NEEDED)
        else:
            taken[pair.testset] = taken.get(pair.testset, 0) + 1
            status.append("analysed")
    return status


def analyse_pair(model: AnalysedModel, pair: MinimalPair, batch_size: int) -> dict[str, pd.DataFrame]:
    """Logit lens, DLA, residual and head patching (activation and attribution) of one pair."""
    clean = patching.run_cached(model, pair.clean_ids)
    corrupt = patching.run_cached(model, pair.corrupt_ids)
    lens_clean, lens_corrupt = patching.logit_lens(model, clean), patching.logit_lens(model, corrupt)
    clean_metric, corrupt_metric = lens_clean[-1], lens_corrupt[-1]
    points = model.n_layers + 1

    lens = pd.DataFrame({"point": np.arange(points), "depth": np.arange(points) / model.n_layers,
                         "clean": lens_clean, "corrupt": lens_corrupt})
    dla = patching.direct_logit_attribution(model, clean).rename(columns={"dla": "clean"})
    dla["corrupt"] = patching.direct_logit_attribution(model, corrupt)["dla"].to_numpy()

    resid_metric = np.stack([patching.patch_resid_positions(model, pair, clean, p, batch_size, corrupt_metric)
                             for p in range(points)])
    head_metric = np.stack([patching.patch_heads(model, pair, clean, layer, batch_size)
                            for layer in range(model.n_layers)])
    resid_attr, head_attr, _ = patching.attribution_patching(model, pair, clean)
    gap = clean_metric - corrupt_metric
    segments = pair.segments()
    resid = pd.DataFrame({
        "point": np.repeat(np.arange(points), pair.n_tokens),
        "position": np.tile(np.arange(pair.n_tokens), points),
        "segment": np.tile(segments, points),
        "effect": patching.normalised_effect(resid_metric, clean_metric, corrupt_metric).ravel(),
        "attribution": (resid_attr / gap).ravel(),
    })
    attention_clean = patching.attention_to_positions(model, clean, pair.edited_positions)
    attention_corrupt = patching.attention_to_positions(model, corrupt, pair.edited_positions)
    heads = pd.DataFrame({
        "layer": np.repeat(np.arange(model.n_layers), model.n_heads),
        "head": np.tile(np.arange(model.n_heads), model.n_layers),
        "effect": patching.normalised_effect(head_metric, clean_metric, corrupt_metric).ravel(),
        "attribution": (head_attr / gap).ravel(),
        "attention_to_edit_clean": attention_clean.ravel(),
        "attention_to_edit_corrupt": attention_corrupt.ravel(),
    })
    tables = {"lens": lens, "dla": dla, "resid": resid, "heads": heads}
    for table in tables.values():
        table.insert(0, "pair_id", pair.pair_id)
    return tables


def top_attending_heads(heads: pd.DataFrame, k: int) -> list[tuple[int, int]]:
    """The k heads whose answer position attends most to the edited tokens (clean prompts, mean over pairs)."""
    mean = heads.groupby(["layer", "head"])["attention_to_edit_clean"].mean().sort_values(ascending=False)
    return [(int(layer), int(head)) for layer, head in mean.index[:k]]


def attention_examples(model: AnalysedModel, pairs: Sequence[MinimalPair], top_heads: Sequence[tuple[int, int]],
                       tokenizer, n_queries: int) -> pd.DataFrame:
    """Attention patterns of the top heads on example pairs: the last `n_queries` query positions
    (the question and the answer position) to every key, clean and corrupted."""
    rows = []
    for pair in pairs:
        caches = {"clean": patching.run_cached(model, pair.clean_ids),
                  "corrupt": patching.run_cached(model, pair.corrupt_ids)}
        clean_tokens = tokenizer.convert_ids_to_tokens(list(pair.clean_ids))
        corrupt_tokens = tokenizer.convert_ids_to_tokens(list(pair.corrupt_ids))
        queries = range(pair.n_tokens - n_queries, pair.n_tokens)
        edited = set(pair.edited_positions)
        for layer, head in top_heads:
            clean = caches["clean"][f"blocks.{layer}.attn.hook_pattern"][0, head]
            corrupt = caches["corrupt"][f"blocks.{layer}.attn.hook_pattern"][0, head]
            for q in queries:
                for key in range(q + 1):
                    rows.append({"pair_id": pair.pair_id, "layer": layer, "head": head, "query": q, "key": key,
                                 "clean": float(clean[q, key]), "corrupt": float(corrupt[q, key]),
                                 "query_token": clean_tokens[q], "key_token_clean": clean_tokens[key],
                                 "key_token_corrupt": corrupt_tokens[key], "edited": key in edited})
    return pd.DataFrame(rows)


def analyse_model(model: AnalysedModel, tokenizer, pairs: Sequence[MinimalPair], settings: dict
                  ) -> dict[str, pd.DataFrame]:
    """Every table of one model's circuit analysis (see workflow/rules/circuits.smk for the files)."""
    clean, corrupt = pair_logit_diffs(model, pairs)
    status = select_pairs(pairs, clean, corrupt, float(settings["min_effect"]), int(settings["pairs_per_testset"]))
    table = pairs_table(pairs)
    table["clean_logit_diff"], table["corrupt_logit_diff"], table["status"] = clean, corrupt, status
    chosen = [pair for pair, s in zip(pairs, status, strict=True) if s == "analysed"]
    log.info("%d candidate pairs: %d analysed, %d with |clean - corrupted| < %.2f, %d not needed", len(pairs),
             len(chosen), status.count(SMALL_EFFECT), float(settings["min_effect"]), status.count(NOT_NEEDED))
    if not chosen:
        # A model no edit moves is a finding, not a failure: its tables stay empty and the summary says so.
        log.warning("no minimal pair moves the prediction by %s or more (of %d candidates): nothing to analyse;"
                    " lower circuits.min_effect or raise circuits.candidates_per_testset to analyse weaker edits",
                    settings["min_effect"], len(pairs))
        return {**{name: pd.DataFrame(columns=columns) for name, columns in EMPTY_COLUMNS.items()}, "pairs": table}
    parts: dict[str, list[pd.DataFrame]] = {}
    for pair in tqdm(chosen, desc="circuits", mininterval=5, file=sys.stderr):
        for name, frame in analyse_pair(model, pair, int(settings["patch_batch_size"])).items():
            parts.setdefault(name, []).append(frame)
    tables = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
    top = top_attending_heads(tables["heads"], int(settings["attention_heads"]))
    first_per_testset = list({pair.testset: pair for pair in reversed(chosen)}.values())[::-1]
    examples = first_per_testset[: int(settings["attention_examples"])]
    tables["attention"] = attention_examples(model, examples, top, tokenizer, int(settings["attention_queries"]))
    tables["pairs"] = table
    return tables
