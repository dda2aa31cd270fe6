"""From per-message attributions to the study's tables: top tokens, comparisons, faithfulness.

Tokens are compared by their text, stripped of surrounding whitespace and lower-cased, so that
" Password" and "password\\n" count as one token.

Source artefacts are tokens that tell corpora apart rather than labels. From the training splits,
per token: `corpus_separation` is the largest difference, within one label, between the share of
one corpus's messages that contain the token and the share of the other corpora's; and
`label_separation` the mean difference between the shares of malicious and legitimate messages
within corpora that have both labels. `artefact_score` = corpus − label separation; a token is
flagged `source_artefact` when the score reaches the threshold. `probe_token` says whether the
data audit's identifiability probe (a bag-of-words classifier of the corpus) ranks it among a
corpus's top features: a second opinion that weighs frequency, not only presence, so it is
reported beside the flag rather than folded into it.

Cue columns (`in_cue_share`, `cue_share_a/b`, `cue_precision_at_k`, `cue_recall_at_k`) compare
attributions with planted cues, which only synthetic corpora have. Messages of a corpus without
them (every real corpus) carry no ground truth: their cue values are NaN, never 0, and
`no_planted_cues` says which cells are NaN for that reason, so that the tables can show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import spearmanr

MODEL_KEYS = ["arch", "recipe", "paradigm"]
CLASS_NAMES = {0: "legitimate", 1: "malicious"}
FAITHFULNESS_COLUMNS = [
    "arch", "recipe", "paradigm", "testset", "n_seeds", "n_messages", "comprehensiveness", "sufficiency",
    "random_comprehensiveness", "random_sufficiency", "comprehensiveness_ratio", "cue_precision_at_k",
    "cue_recall_at_k", "cue_k", "n_planted_cue_messages", "additivity_max_error", "merged_max_log_odds_diff",
    "merged_label_agreement",
]


JOB_KEYS = ["arch", "recipe", "paradigm", "seed", "testset"]


def read_job_tables(paths: Sequence[str], jobs: Sequence[Sequence]) -> pd.DataFrame:
    """The rows of every explain job's file, each with its job's arch, recipe, paradigm, seed, testset."""
    frames = [pd.read_parquet(path).assign(**dict(zip(JOB_KEYS, job, strict=True)))
              for path, job in zip(paths, jobs, strict=True)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=JOB_KEYS)


def cue_flags(in_cue: pd.Series) -> np.ndarray:
    """A token's `in_cue` as floats: 1 inside a planted cue, 0 outside, NaN where the message has no
    planted cues (no ground truth), whatever the column's dtype (nullable boolean, object or bool)."""
    return in_cue.astype("boolean").astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def with_planted_cues(messages: pd.DataFrame, tokens: pd.DataFrame) -> pd.DataFrame:
    """`messages` with `planted_cues`: whether the message's test set records planted cue spans for it
    (some token of it has a known `in_cue`), read from the explain jobs' token table."""
    keys = [k for k in (*JOB_KEYS, "uid") if k in messages.columns and k in tokens.columns]
    known = (tokens.assign(planted_cues=~np.isnan(cue_flags(tokens["in_cue"])))
             .groupby(keys, sort=False)["planted_cues"].any().reset_index())
    out = messages.drop(columns="planted_cues", errors="ignore").merge(known, on=keys, how="left")
    out["planted_cues"] = out["planted_cues"].fillna(False).astype(bool)
    return out


def token_key(tokens: pd.Series) -> pd.Series:
    return tokens.str.strip().str.lower()


def _presence(texts: Sequence[str], tokenizer) -> tuple[sparse.csr_matrix, list[str]]:
    """Binary message × token-key matrix of the tokenizer's tokens."""
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    for row, (text, offsets) in enumerate(zip(texts, encoded["offset_mapping"], strict=True)):
        keys = {text[s:e].strip().lower() for s, e in offsets} - {""}
        for key in keys:
            cols.append(vocabulary.setdefault(key, len(vocabulary)))
            rows.append(row)
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                               shape=(len(texts), len(vocabulary)))
    return matrix, list(vocabulary)


def source_scores(frame: pd.DataFrame, tokenizer, probe_tokens: Iterable[str] = (),
                  min_messages: int = 5) -> pd.DataFrame:
    """Per token key: corpus_separation, label_separation, artefact_score, probe_token.

    `frame` holds training messages with text, corpus and label; groups (corpus, label) with fewer
    than `min_messages` messages are not compared (their shares are too noisy).
    """
    matrix, keys = _presence(frame["text"].tolist(), tokenizer)
    corpus = frame["corpus"].to_numpy()
    label = frame["label"].astype(int).to_numpy()

    def share(rows: np.ndarray) -> np.ndarray:
        return np.asarray(matrix[rows].mean(axis=0)).ravel()

    corpus_sep = np.zeros(len(keys))
    label_sep_parts = []
    for name in pd.unique(corpus):
        for y in (0, 1):
            inside = np.flatnonzero((corpus == name) & (label == y))
            outside = np.flatnonzero((corpus != name) & (label == y))
            if len(inside) >= min_messages and len(outside) >= min_messages:
                corpus_sep = np.maximum(corpus_sep, np.abs(share(inside) - share(outside)))
        malicious = np.flatnonzero((corpus == name) & (label == 1))
        legitimate = np.flatnonzero((corpus == name) & (label == 0))
        if len(malicious) >= min_messages and len(legitimate) >= min_messages:
            label_sep_parts.append(np.abs(share(malicious) - share(legitimate)))
    if label_sep_parts:
        label_sep = np.mean(label_sep_parts, axis=0)
    else:  # no corpus holds both labels: only the pooled difference is available
        label_sep = np.abs(share(np.flatnonzero(label == 1)) - share(np.flatnonzero(label == 0)))
    probe = {t.strip().lower() for t in probe_tokens}
    return pd.DataFrame({
        "token": keys, "corpus_separation": corpus_sep, "label_separation": label_sep,
        "artefact_score": corpus_sep - label_sep, "probe_token": [k in probe for k in keys],
    })


def probe_tokens_of(audit_across: Mapping | None) -> list[str]:
    """The identifiability probe's top tokens (normalised text) from the audit, if it ran."""
    if not audit_across:
        return []
    result = audit_across.get("identifiability", {}).get("normalised", {})
    if not result.get("available"):
        return []
    return [token for tokens in result.get("top_tokens", {}).values() for token, _ in tokens]


def top_tokens(tokens: pd.DataFrame, sources: pd.DataFrame | None, *, top_n: int, min_count: int,
               artefact_threshold: float) -> pd.DataFrame:
    """The top tokens per model (arch, recipe, paradigm) and true class, ranked two ways.

    `tokens` holds feature tokens with arch, recipe, paradigm, label, uid, token, shap and in_cue.
    ranking "abs" orders by mean |SHAP|; "signed" by mean SHAP toward the class (positive pushes
    toward malicious, so for legitimate messages the most negative come first). `in_cue_share` is
    the share of the token's occurrences inside planted cues, over the messages that have them;
    NaN when none has (no ground truth).
    """
    frame = tokens.assign(key=token_key(tokens["token"]), abs_shap=tokens["shap"].abs(),
                          in_cue=cue_flags(tokens["in_cue"]))
    frame = frame[frame["key"] != ""]
    grouped = frame.groupby(MODEL_KEYS + ["label", "key"], sort=False).agg(
        mean_abs_shap=("abs_shap", "mean"), mean_shap=("shap", "mean"), count=("shap", "size"),
        messages=("uid", "nunique"), in_cue_share=("in_cue", "mean"),
    ).reset_index()
    grouped = grouped[grouped["count"] >= min_count]
    rows = []
    for (*_, label), group in grouped.groupby(MODEL_KEYS + ["label"], sort=True):
        toward = group["mean_shap"] if label == 1 else -group["mean_shap"]
        for ranking, score in (("abs", group["mean_abs_shap"]), ("signed", toward)):
            chosen = group.loc[score.sort_values(ascending=False, kind="stable").index[:top_n]]
            rows.append(chosen.assign(ranking=ranking, rank=np.arange(1, len(chosen) + 1),
                                      **{"class": CLASS_NAMES[int(label)]}))
    columns = MODEL_KEYS + ["class", "ranking", "rank", "token", "mean_abs_shap", "mean_shap", "count",
                            "messages", "in_cue_share", "artefact_score", "source_artefact", "probe_token"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.concat(rows, ignore_index=True).rename(columns={"key": "token"}).drop(columns="label")
    if sources is not None and not sources.empty:
        table = table.merge(sources[["arch", "token", "artefact_score", "probe_token"]], on=["arch", "token"],
                            how="left")
        table["source_artefact"] = table["artefact_score"] >= artefact_threshold
        table["probe_token"] = table["probe_token"].eq(True)
    else:
        table["artefact_score"] = np.nan
        table["source_artefact"] = False
        table["probe_token"] = False
    return table[columns]


def _pairs(values: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(values) for b in values[i + 1:]]


def comparisons(tokens: pd.DataFrame, top: pd.DataFrame) -> pd.DataFrame:
    """How much two models' explanations agree: across architectures (same recipe) and across
    recipes (same architecture), per paradigm and class.

    jaccard_top: overlap of the two top |SHAP| token sets (as listed in `top`); rank_corr: Spearman correlation of
    mean SHAP over the tokens both models saw; artefact/cue share: of each model's top tokens (the
    cue share NaN when no top token has planted-cue ground truth).
    """
    frame = tokens.assign(key=token_key(tokens["token"]))
    frame = frame[frame["key"] != ""]
    means = frame.groupby(MODEL_KEYS + ["label", "key"])["shap"].mean()
    abs_top = top[top["ranking"] == "abs"]
    rows = []
    for kind, varying, fixed in (("architecture", "arch", "recipe"), ("recipe", "recipe", "arch")):
        for (paradigm, held, cls), group in abs_top.groupby(["paradigm", fixed, "class"], sort=True):
            label = 1 if cls == "malicious" else 0
            models = sorted(group[varying].unique())
            for a, b in _pairs(models):
                top_a = group[group[varying] == a]
                top_b = group[group[varying] == b]
                set_a, set_b = set(top_a["token"]), set(top_b["token"])
                key_a = {"arch": a, "recipe": held} if kind == "architecture" else {"arch": held, "recipe": a}
                key_b = {"arch": b, "recipe": held} if kind == "architecture" else {"arch": held, "recipe": b}
                mean_a = means.loc[(key_a["arch"], key_a["recipe"], paradigm, label)]
                mean_b = means.loc[(key_b["arch"], key_b["recipe"], paradigm, label)]
                shared = mean_a.index.intersection(mean_b.index)
                corr = (spearmanr(mean_a[shared], mean_b[shared]).statistic if len(shared) >= 3 else np.nan)
                rows.append({
                    "comparison": kind, "paradigm": paradigm, "held_fixed": held, "class": cls, "a": a, "b": b,
                    "jaccard_top": len(set_a & set_b) / len(set_a | set_b) if set_a | set_b else np.nan,
                    "rank_corr": float(corr), "shared_tokens": len(shared),
                    "artefact_share_a": float(top_a["source_artefact"].mean()),
                    "artefact_share_b": float(top_b["source_artefact"].mean()),
                    "cue_share_a": _mean_or_nan(top_a["in_cue_share"]),
                    "cue_share_b": _mean_or_nan(top_b["in_cue_share"]),
                })
    return pd.DataFrame(rows)


def _mean_or_nan(values: pd.Series) -> float:
    """Mean of the known values as a float; NaN when none is known (pd.NA does not convert)."""
    values = pd.to_numeric(values, errors="coerce").astype(float)
    return float(values.mean()) if values.notna().any() else float("nan")


def faithfulness_table(messages: pd.DataFrame, cue_k: int) -> pd.DataFrame:
    """Mean faithfulness per model and test set, plus one row per model over all its test sets.

    `n_planted_cue_messages` counts the messages with planted-cue ground truth (`planted_cues`, see
    `with_planted_cues`; without that column, those with a cue score); where it is 0 the cue
    columns are NaN because there is nothing to compare with, not because recovery failed.
    """
    if "planted_cues" not in messages.columns:
        messages = messages.assign(planted_cues=messages[["cue_precision", "cue_recall"]].notna().any(axis=1))
    messages = messages.assign(planted_cues=messages["planted_cues"].astype(bool))
    metrics = {
        "n_seeds": ("seed", "nunique"), "n_messages": ("uid", "size"),
        "comprehensiveness": ("comprehensiveness", "mean"), "sufficiency": ("sufficiency", "mean"),
        "random_comprehensiveness": ("random_comprehensiveness", "mean"),
        "random_sufficiency": ("random_sufficiency", "mean"),
        "cue_precision_at_k": ("cue_precision", "mean"), "cue_recall_at_k": ("cue_recall", "mean"),
        "n_planted_cue_messages": ("planted_cues", "sum"),
        "additivity_max_error": ("additivity_error", "max"),
        "merged_max_log_odds_diff": ("merged_log_odds_diff", "max"),
        "merged_label_agreement": ("merged_label_agrees", "mean"),
    }
    per_testset = messages.groupby(MODEL_KEYS + ["testset"], sort=True).agg(**metrics).reset_index()
    overall = messages.groupby(MODEL_KEYS, sort=True).agg(**metrics).reset_index().assign(testset="all")
    table = pd.concat([per_testset, overall], ignore_index=True)
    table["comprehensiveness_ratio"] = table["comprehensiveness"] / table["random_comprehensiveness"]
    table["cue_k"] = cue_k
    return table.sort_values(MODEL_KEYS + ["testset"], kind="stable")[FAITHFULNESS_COLUMNS].reset_index(drop=True)


CUE_COLUMNS = ("in_cue_share", "cue_share_a", "cue_share_b", "cue_precision_at_k", "cue_recall_at_k")


def no_planted_cues(table: pd.DataFrame) -> dict[str, pd.Series]:
    """Per cue column of a SHAP table (top tokens, comparisons, faithfulness): the rows whose value
    is missing because the messages behind it have no planted cues (no ground truth), as opposed
    to missing for another reason (a sample without malicious messages has no cue recovery)."""
    if "n_planted_cue_messages" in table.columns:
        without = table["n_planted_cue_messages"].fillna(0).eq(0)
    else:  # top tokens and comparisons: a cue share is NaN only when no occurrence had ground truth
        without = pd.Series(True, index=table.index)
    return {column: table[column].isna() & without for column in CUE_COLUMNS if column in table.columns}
