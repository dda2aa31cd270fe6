"""Whether attributions can be trusted: erasure faithfulness and planted-cue recovery.

* Comprehensiveness (ERASER, DeYoung et al. 2020): how much the probability of the predicted
  class drops when the most important tokens are deleted; higher is better.
* Sufficiency: how much it drops when only those tokens are kept; lower is better.
  Both are AOPC, the mean over deleting or keeping the top 1, 5, 10, 20 and 50% of tokens, and
  each is computed again for random token orders: an attribution method earns trust only by
  beating random.
* Cue recovery, on the synthetic corpora where the evidence is planted and annotated: precision@k
  is the share of the k most malicious-attributed tokens inside a planted cue span, recall@k the
  share of planted cue spans that contain at least one of them.

"Tokens" are a message's features as SHAP saw them (`explain.feature_mask`); deleting a token
deletes its piece of text, whitespace included, and the prompt around the message stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)


@dataclass(frozen=True)
class MessageAttribution:
    """One explained message: its token pieces, which are features, their SHAP values, f(x)."""

    uid: str
    segments: Sequence[str]
    is_feature: np.ndarray
    values: np.ndarray
    log_odds: float

    @property
    def predicted(self) -> int:
        return int(self.log_odds > 0)

    def importance(self) -> np.ndarray:
        """Attribution toward the predicted class."""
        return self.values if self.predicted == 1 else -self.values


def class_probability(log_odds: np.ndarray, label: int) -> np.ndarray:
    """p(label) from the log-odds of malicious."""
    signed = np.asarray(log_odds, dtype=float) if label == 1 else -np.asarray(log_odds, dtype=float)
    return 1.0 / (1.0 + np.exp(-signed))


def top_counts(n_features: int, fractions: Sequence[float]) -> list[int]:
    """Tokens removed at each fraction: at least one, at most all."""
    return [min(n_features, max(1, math.ceil(q * n_features))) for q in fractions]


def _joined(segments: Sequence[str], keep: np.ndarray) -> str:
    return "".join(s for s, k in zip(segments, keep, strict=True) if k)


def _erasures(message: MessageAttribution, order: np.ndarray, counts: list[int]) -> list[str]:
    """For each count k: the text without the first k tokens of `order`, then with only them."""
    texts = []
    for k in counts:
        removed = np.zeros(len(message.segments), dtype=bool)
        removed[order[:k]] = True
        texts.append(_joined(message.segments, ~removed))
        texts.append(_joined(message.segments, ~message.is_feature | removed))
    return texts


def erasure_faithfulness(
    function: Callable[[Sequence[str]], np.ndarray],
    messages: Sequence[MessageAttribution],
    *,
    fractions: Sequence[float] = FRACTIONS,
    random_repeats: int = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AOPC comprehensiveness and sufficiency of the attributions and of random orders.

    Returns one row per message (uid, comprehensiveness, sufficiency, random_comprehensiveness,
    random_sufficiency) and the curves behind them (uid, method, fraction, comprehensiveness,
    sufficiency). All perturbed texts go to `function` in one call, so it can batch them.
    """
    rng = np.random.default_rng(seed)
    plan = []  # (uid, method, repeat, texts)
    for message in messages:
        features = np.flatnonzero(message.is_feature)
        if len(features) == 0:
            raise ValueError(f"message {message.uid} has no tokens to erase")
        counts = top_counts(len(features), fractions)
        importance = message.importance()[features]
        ranked = features[np.argsort(-importance, kind="stable")]
        plan.append((message, "shap", 0, _erasures(message, ranked, counts)))
        for repeat in range(random_repeats):
            plan.append((message, "random", repeat, _erasures(message, rng.permutation(features), counts)))
    texts = [t for *_, batch in plan for t in batch]
    log_odds = np.asarray(function(texts), dtype=float) if texts else np.zeros(0)
    curves, cursor = [], 0
    for message, method, repeat, batch in plan:
        scores = log_odds[cursor : cursor + len(batch)]
        cursor += len(batch)
        full = class_probability(np.array([message.log_odds]), message.predicted)[0]
        p = class_probability(scores, message.predicted)
        for i, fraction in enumerate(fractions):
            curves.append({"uid": message.uid, "method": method, "repeat": repeat, "fraction": fraction,
                           "comprehensiveness": full - p[2 * i], "sufficiency": full - p[2 * i + 1]})
    curves = pd.DataFrame(curves)
    curves = curves.groupby(["uid", "method", "fraction"], sort=False, as_index=False)[
        ["comprehensiveness", "sufficiency"]].mean()
    aopc = curves.groupby(["uid", "method"], sort=False)[["comprehensiveness", "sufficiency"]].mean().unstack("method")
    per_message = pd.DataFrame({
        "uid": aopc.index,
        "comprehensiveness": aopc[("comprehensiveness", "shap")].to_numpy(),
        "sufficiency": aopc[("sufficiency", "shap")].to_numpy(),
        "random_comprehensiveness": aopc[("comprehensiveness", "random")].to_numpy()
        if random_repeats else np.nan,
        "random_sufficiency": aopc[("sufficiency", "random")].to_numpy() if random_repeats else np.nan,
    })
    order = {m.uid: i for i, m in enumerate(messages)}
    per_message = per_message.sort_values("uid", key=lambda s: s.map(order)).reset_index(drop=True)
    return per_message, curves


def core_span(token: str, start: int, end: int) -> tuple[int, int]:
    """A token's characters without its surrounding whitespace."""
    return start + len(token) - len(token.lstrip()), end - (len(token) - len(token.rstrip()))


def overlaps_any(core: tuple[int, int], spans: Sequence[dict]) -> bool:
    """Whether a non-empty character range shares a character with any {start, end} span."""
    return core[1] > core[0] and any(core[0] < int(s["end"]) and core[1] > int(s["start"]) for s in spans)


def cue_recovery(tokens: pd.DataFrame, spans: Sequence[dict], k: int) -> tuple[float, float]:
    """precision@k and recall@k of one message's attributions against its planted cue spans.

    `tokens` holds the message's feature tokens (token, start, end, shap); the top k are the most
    malicious-attributed. Spans are {start, end} character ranges into the same text; only spans
    that start inside the explained text count. (nan, nan) when the message has no cue span.
    """
    visible_end = int(tokens["end"].max()) if len(tokens) else 0
    spans = [s for s in spans if int(s["start"]) < visible_end]
    if not spans or tokens.empty:
        return math.nan, math.nan
    top = tokens.iloc[np.argsort(-tokens["shap"].to_numpy(), kind="stable")[: min(k, len(tokens))]]
    cores = [core_span(t, int(s), int(e)) for t, s, e in zip(top["token"], top["start"], top["end"], strict=True)]
    precision = float(np.mean([overlaps_any(c, spans) for c in cores]))
    recall = float(np.mean([any(overlaps_any(c, [s]) for c in cores) for s in spans]))
    return precision, recall
