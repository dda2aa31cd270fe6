"""From each model's circuit tables to the study's summary: one row per fine-tuned model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gendiag.circuits.study import NOT_NEEDED, SMALL_EFFECT

JOB_KEYS = ("arch", "recipe", "paradigm", "seed")
SUMMARY_COLUMNS = (*JOB_KEYS, "n_pairs", "pair_kinds", "n_candidates", "n_dropped_small_effect", "n_not_needed",
                   "n_layers",
                   "decision_layer", "decision_depth", "clean_logit_diff", "corrupt_logit_diff", "top_heads",
                   "attr_vs_act_patching_corr", "attr_vs_act_patching_corr_heads",
                   "attr_vs_act_patching_corr_by_point", "cue_position_share", "answer_position_share",
                   "other_position_share", "merge_label_agreement", "merge_max_abs_log_odds_diff")


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """circuits_summary.csv from `summarise_model` rows: `SUMMARY_COLUMNS`, layer counts as integers
    that may be missing (a model without analysed pairs has none), so tables print 18, not 18.000."""
    table = pd.DataFrame(rows).reindex(columns=list(SUMMARY_COLUMNS))
    for column in ("n_layers", "decision_layer"):
        table[column] = pd.to_numeric(table[column]).round().astype("Int64")
    return table


def decision_point(mean_lens: np.ndarray) -> int | None:
    """First residual point from which the logit difference stays above half its final value (None
    if the final value is not positive: the model does not decide for the clean label on average).

    "Stays", not "first exceeds": read through the final norm, the early residual stream of a deep
    model can swing far past the final value and back (Gemma's scaled embeddings do), and such a
    transient is not where the label is settled."""
    mean_lens = np.asarray(mean_lens, dtype=float)
    final = mean_lens[-1]
    if not final > 0:
        return None
    below = np.flatnonzero(~(mean_lens > final / 2))
    return 0 if below.size == 0 else int(below[-1]) + 1


def position_shares(resid: pd.DataFrame) -> dict[str, float]:
    """Share of the total |activation patching effect| per segment, over the residual points that
    feed a block (`point` < n_layers). The last point, the model's output, only matters at the
    answer position by construction, so counting it would only dilute the other shares."""
    if "point" in resid:
        resid = resid[resid["point"] < resid["point"].max()]
    total = resid["effect"].abs().sum()
    by_segment = resid.groupby("segment")["effect"].apply(lambda e: e.abs().sum()) / total
    return {segment: float(share) for segment, share in by_segment.items()}


def correlation(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def format_heads(heads: pd.DataFrame, k: int) -> str:
    """The k heads with the largest mean |patching effect|, as "L1H2 0.45; L0H3 0.21"."""
    mean = heads.groupby(["layer", "head"])["effect"].mean()
    order = mean.abs().sort_values(ascending=False).index[:k]
    return "; ".join(f"L{layer}H{head} {mean[(layer, head)]:.2f}" for layer, head in order)


def pair_kinds(pairs: pd.DataFrame) -> str:
    """The analysed pairs by kind, as "edit_url 2; edit_urgency 1": `cue_toggle` pairs toggle a planted
    cue (synthetic corpora); `edit_*` pairs are controlled edits of real messages, which have no
    planted cues, so their edited positions are those of the inserted feature."""
    counts = pairs.loc[pairs["status"] == "analysed", "kind"].value_counts().sort_index()
    return "; ".join(f"{kind} {int(n)}" for kind, n in counts.items())


def summarise_model(job: dict, tables: dict[str, pd.DataFrame], agreement: pd.DataFrame, top_k: int) -> dict:
    """One row of circuits_summary.csv."""
    pairs = tables["pairs"]
    counts = {
        "n_pairs": int((pairs["status"] == "analysed").sum()),
        "n_candidates": int(len(pairs)),
        "n_dropped_small_effect": int((pairs["status"] == SMALL_EFFECT).sum()),
        "n_not_needed": int((pairs["status"] == NOT_NEEDED).sum()),
    }
    overall = agreement[agreement["testset"] == "all"].iloc[0]
    merge = {"merge_label_agreement": float(overall["label_agreement"]),
             "merge_max_abs_log_odds_diff": float(overall["max_abs_log_odds_diff"])}
    if counts["n_pairs"] == 0:  # no edit moved this model enough: nothing was analysed
        return {**{key: job[key] for key in JOB_KEYS}, **counts, "pair_kinds": "", "top_heads": "", **merge}
    lens = tables["lens"].groupby("point")[["clean", "corrupt"]].mean()
    n_layers = int(lens.index.max())
    point = decision_point(lens["clean"].to_numpy())
    shares = position_shares(tables["resid"])
    return {
        **{key: job[key] for key in JOB_KEYS},
        **counts,
        "pair_kinds": pair_kinds(pairs),
        "n_layers": n_layers,
        "decision_layer": point,
        "decision_depth": None if point is None else point / n_layers,
        "clean_logit_diff": float(lens["clean"].iloc[-1]),
        "corrupt_logit_diff": float(lens["corrupt"].iloc[-1]),
        "top_heads": format_heads(tables["heads"], top_k),
        "attr_vs_act_patching_corr": correlation(tables["resid"]["effect"], tables["resid"]["attribution"]),
        "attr_vs_act_patching_corr_heads": correlation(tables["heads"]["effect"], tables["heads"]["attribution"]),
        "attr_vs_act_patching_corr_by_point": "; ".join(
            f"{point}: {correlation(cells['effect'], cells['attribution']):.2f}"
            for point, cells in tables["resid"].groupby("point")
        ),
        "cue_position_share": shares.get("edited", 0.0),
        "answer_position_share": shares.get("answer", 0.0),
        "other_position_share": 1.0 - shares.get("edited", 0.0) - shares.get("answer", 0.0),
        **merge,
    }


def layer_position_shares(resid: pd.DataFrame) -> pd.DataFrame:
    """Per residual point, the share of that point's |effect| in each segment (for the figure and note)."""
    sums = resid.assign(abs_effect=resid["effect"].abs()).groupby(["point", "segment"])["abs_effect"].sum()
    return (sums / sums.groupby("point").transform("sum")).rename("share").reset_index()


def read_run_tables(paths, runs) -> pd.DataFrame:
    """One table kind of every analysed model, stacked, with the model's keys as columns."""
    frames = []
    for path, run in zip(paths, runs, strict=True):
        frame = pd.read_parquet(path)
        for key, value in zip(JOB_KEYS, run, strict=True):
            frame.insert(JOB_KEYS.index(key), key, value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def pair_status_table(pairs: pd.DataFrame, drops: pd.DataFrame) -> pd.DataFrame:
    """Per model and test set: candidates analysed, and dropped by reason (alignment or effect)."""
    built = pairs.assign(reason=pairs["status"])[[*JOB_KEYS, "testset", "reason"]]
    aligned_out = drops[[*JOB_KEYS, "testset", "reason"]]
    both = pd.concat([built, aligned_out], ignore_index=True)
    counts = both.groupby([*JOB_KEYS, "testset", "reason"]).size().rename("n").reset_index()
    return counts.sort_values([*JOB_KEYS, "testset", "n"], ascending=[True] * 5 + [False], ignore_index=True)
