"""The seed study's same-model label audit, and how it compares with the confident-learning audit.

The seed study flagged training messages whose label the fine-tuned model itself contradicts with
high confidence. `model_label_audit` does that from the model's p(malicious) on its own training
split (a prediction file of that split: uid, label, p_malicious): a message labelled 1 is
flagged when ``1 - p_malicious >= threshold``, one labelled 0 when ``p_malicious >= threshold``.
A fine-tuned model has seen these very labels and can memorise wrong ones, so this audit misses
the noise the model fitted; the confident-learning audit (`gendiag.data.audit.estimate_label_noise`)
scores every message out of fold instead. `compare_audits` puts the two side by side: their
overlap, and, on a synthetic corpus whose flipped labels are recorded (`label_flipped`, see
`gendiag.data.synthetic.generate_style`), the precision and recall of each against the injected
noise.

Results are plain JSON-able Python (None where a number is undefined, e.g. the precision of an
audit that flags nothing), like the rest of the data audit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

MODEL_AUDIT_COLUMNS: tuple[str, ...] = ("uid", "label", "p_malicious", "contradiction", "flagged")
DEFAULT_THRESHOLD = 0.9
METHOD = "same-model audit: the fine-tuned model's p(other label) on its own training messages >= threshold"
_SLACK = 1e-12


def _check_threshold(threshold: Any) -> float:
    ok = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
    if not ok or not 0.5 < float(threshold) <= 1.0:
        raise ValueError(
            f"threshold must be a probability in (0.5, 1]: the model's confidence in the other label; got {threshold!r}"
        )
    return float(threshold)


def model_label_audit(predictions: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Flag the messages whose label the model contradicts with confidence >= `threshold`.

    `predictions` is the fine-tuned model's prediction file on its own training split (``uid``,
    ``label``, ``p_malicious``; other columns are ignored). Returns one row per message, in input
    order, with `MODEL_AUDIT_COLUMNS`: ``contradiction`` is the probability the model gives the
    other label (``p_malicious`` for a message labelled 0, ``1 - p_malicious`` for one labelled 1)
    and ``flagged`` is ``contradiction >= threshold`` (with 1e-12 of floating-point slack).
    `threshold` must be above 0.5: at 0.5 or below the model does not contradict the label.
    """
    threshold = _check_threshold(threshold)
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"predictions must be a pandas DataFrame; got {type(predictions).__name__}")
    missing = [c for c in ("uid", "label", "p_malicious") if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"predictions lack column(s) {missing}; expected the fine-tuned model's prediction file on its training "
            f"split (uid, label, p_malicious), got {list(predictions.columns)}"
        )
    labels = predictions["label"]
    unknown = sorted({v for v in labels.dropna().tolist() if v not in (0, 1)}, key=str)
    if labels.isna().any() or unknown:
        raise ValueError(f"label must be 0 (legitimate) or 1 (malicious); found {unknown[:5] or ['missing']}")
    p = pd.to_numeric(predictions["p_malicious"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))
    if bad.any():
        raise ValueError(f"p_malicious must be probabilities in [0, 1]; {int(bad.sum())} value(s) are not, e.g. "
                         f"row {int(np.flatnonzero(bad)[0])}")
    duplicated = predictions["uid"][predictions["uid"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{len(duplicated)} duplicated uid(s), e.g. {duplicated.iloc[0]!r}; score each message once")
    y = labels.to_numpy(dtype=np.int64)
    contradiction = np.where(y == 1, 1.0 - p, p)
    return pd.DataFrame({
        "uid": predictions["uid"].astype(str).to_numpy(),
        "label": y,
        "p_malicious": p,
        "contradiction": contradiction,
        "flagged": contradiction >= threshold - _SLACK,
    })


def model_suspects(audit: pd.DataFrame, top: int | None = None) -> list[dict[str, Any]]:
    """The flagged messages as the confident-learning audit lists its suspects, most confident first.

    Each is ``{index, uid, label, p_malicious, self_confidence}`` (index: row position in the
    audited table; self_confidence: the model's probability of the given label), as in
    `gendiag.data.audit.estimate_label_noise`. `top` keeps the first `top`.
    """
    missing = [c for c in MODEL_AUDIT_COLUMNS if c not in audit.columns]
    if missing:
        raise ValueError(f"audit lacks column(s) {missing}; pass the output of model_label_audit")
    flagged = np.flatnonzero(audit["flagged"].to_numpy(dtype=bool))
    order = flagged[np.argsort(-audit["contradiction"].to_numpy()[flagged], kind="stable")]
    if top is not None:
        order = order[:top]
    return [
        {"index": int(i), "uid": str(audit["uid"].iloc[i]), "label": int(audit["label"].iloc[i]),
         "p_malicious": round(float(audit["p_malicious"].iloc[i]), 6),
         "self_confidence": round(float(1.0 - audit["contradiction"].iloc[i]), 6)}
        for i in order
    ]


def summarise_model_audit(audit: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """``{method, threshold, n, n_flagged, flagged_share, flagged_given_label}`` of a `model_label_audit`."""
    y = audit["label"].to_numpy()
    flagged = audit["flagged"].to_numpy(dtype=bool)
    return {
        "method": METHOD,
        "threshold": _check_threshold(threshold),
        "n": len(audit),
        "n_flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()) if len(audit) else None,
        "flagged_given_label": {str(k): int((flagged & (y == k)).sum()) for k in (0, 1)},
    }


# --- comparing audits --------------------------------------------------------------------------


def _flag_uids(flags: Any, name: str) -> set[str]:
    """The uids an audit flags, from a `model_label_audit` table, a suspects list or plain uids."""
    if isinstance(flags, pd.DataFrame):
        if "uid" not in flags.columns:
            raise ValueError(f"{name}: a table of flags needs a 'uid' column; got {list(flags.columns)}")
        rows = flags[flags["flagged"].astype(bool)] if "flagged" in flags.columns else flags
        return {str(u) for u in rows["uid"]}
    if isinstance(flags, (str, bytes)) or not isinstance(flags, Iterable):
        raise TypeError(f"{name} must be a table with uid (and flagged), a list of suspects or a list of uids; "
                        f"got {type(flags).__name__}")
    out = set()
    for item in flags:
        if isinstance(item, Mapping):
            if item.get("uid") is None:
                raise ValueError(f"{name}: a suspect has no uid ({dict(item)}); run the audit with uids so "
                                 "that its suspects can be matched across audits")
            out.add(str(item["uid"]))
        else:
            out.add(str(item))
    return out


def _noise_uids(injected_noise: Any) -> set[str]:
    if isinstance(injected_noise, pd.DataFrame):
        columns = set(injected_noise.columns)
        if "uid" in columns and "label_flipped" in columns:
            flipped = injected_noise["label_flipped"].astype(bool)
        elif {"uid", "label", "label_true"} <= columns:
            flipped = injected_noise["label"] != injected_noise["label_true"]
        else:
            raise ValueError(
                "injected_noise: a table needs 'uid' and 'label_flipped' (or 'label' and 'label_true'), as the "
                f"synthetic generator writes them; got {list(injected_noise.columns)}. Real corpora have no "
                "injected noise: pass None"
            )
        return {str(u) for u in injected_noise.loc[flipped.to_numpy(), "uid"]}
    return _flag_uids(injected_noise, "injected_noise")


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def compare_audits(
    model_flags: Any,
    cleanlab_flags: Any,
    injected_noise: Any = None,
    universe: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Overlap of the same-model and confident-learning audits, and their precision against injected noise.

    `model_flags` and `cleanlab_flags` are each a table with ``uid`` (and ``flagged``: only flagged
    rows count), a list of suspects (dicts with ``uid``, as `model_suspects` and
    `estimate_label_noise` list them) or an iterable of uids. `injected_noise` is the synthetic
    corpus's record of flipped labels (a table with ``uid`` and ``label_flipped``, or ``label`` and
    ``label_true``) or the flipped uids; None for real corpora. `universe`, the uids both audits
    looked at (e.g. a recipe's training split), restricts everything to those messages; flags
    outside it are counted in ``*_outside_universe`` and dropped. Pass it whenever the two audits
    ran on different sets of messages (the corpus audit runs on whole corpora).

    Returns counts (``n_model``, ``n_cleanlab``, ``n_both``, ``n_model_only``, ``n_cleanlab_only``,
    ``n_either``), ``jaccard`` = both / either, and, with injected noise, ``n_injected`` and
    ``{model, cleanlab, both, either}_{precision, recall}``: the share of an audit's (intersection's,
    union's) flags that are flipped labels, and the share of flipped labels it flags. Undefined
    ratios (nothing flagged, no noise) and the noise keys without injected noise are None.
    """
    model = _flag_uids(model_flags, "model_flags")
    cleanlab = _flag_uids(cleanlab_flags, "cleanlab_flags")
    noise = None if injected_noise is None else _noise_uids(injected_noise)
    out: dict[str, Any] = {"n_universe": None, "model_outside_universe": 0, "cleanlab_outside_universe": 0}
    if universe is not None:
        if isinstance(universe, (str, bytes)):
            raise TypeError("universe must be an iterable of uids, not a single string")
        scope = {str(u) for u in universe}
        out.update(n_universe=len(scope), model_outside_universe=len(model - scope),
                   cleanlab_outside_universe=len(cleanlab - scope))
        model, cleanlab = model & scope, cleanlab & scope
        noise = None if noise is None else noise & scope
    both, either = model & cleanlab, model | cleanlab
    out.update(
        n_model=len(model), n_cleanlab=len(cleanlab), n_both=len(both), n_model_only=len(model - cleanlab),
        n_cleanlab_only=len(cleanlab - model), n_either=len(either), jaccard=_ratio(len(both), len(either)),
        n_injected=None if noise is None else len(noise),
    )
    for name, flagged in (("model", model), ("cleanlab", cleanlab), ("both", both), ("either", either)):
        hits = None if noise is None else len(flagged & noise)
        out[f"{name}_precision"] = None if noise is None else _ratio(hits, len(flagged))
        out[f"{name}_recall"] = None if noise is None else _ratio(hits, len(noise))
    return out


# --- one fine-tuned run's audit, and the study's table ---------------------------------------------


def audit_sample(train: pd.DataFrame, max_messages: int | None, seed: int) -> pd.DataFrame:
    """The training messages the same-model audit scores: all of them, or `max_messages` drawn per label in
    proportion (a model forward pass per message is the audit's cost on a large model)."""
    if max_messages is None or len(train) <= max_messages:
        return train.reset_index(drop=True)
    if max_messages < 2:
        raise ValueError(f"max_messages must be at least 2 (one per label) or null for all; got {max_messages}")
    take = (train["label"].value_counts(normalize=True) * max_messages).round().astype(int).clip(lower=1)
    parts = [group.sample(n=min(int(take[label]), len(group)), random_state=seed)
             for label, group in train.groupby("label")]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def injected_noise_of(train: pd.DataFrame) -> pd.DataFrame | None:
    """The record of flipped labels when every audited message has one (synthetic corpora); None otherwise."""
    if "label_flipped" not in train.columns or train["label_flipped"].isna().any():
        return None
    return train[["uid", "label_flipped"]]


def run_model_audit(
    scored: pd.DataFrame,
    threshold: float,
    cleanlab_suspects: Iterable[str],
    injected_noise: pd.DataFrame | None = None,
    top_suspects: int = 20,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Audit one fine-tuned run's training messages and compare with the confident-learning audit.

    `scored` is the model's prediction table on (a sample of) its training split; `cleanlab_suspects`
    the uids the corpus audits flagged (on whole corpora: the comparison is restricted to the scored
    messages). Returns the per-message audit and a JSON-able summary: `summarise_model_audit`'s keys,
    ``comparison`` (`compare_audits`), ``injected_noise`` (whether precision against noise is
    defined) and the ``suspects`` most confidently contradicted.
    """
    audit = model_label_audit(scored, threshold)
    summary = summarise_model_audit(audit, threshold)
    summary["comparison"] = compare_audits(audit, list(cleanlab_suspects), injected_noise, universe=audit["uid"])
    summary["injected_noise"] = injected_noise is not None
    summary["suspects"] = model_suspects(audit, top=top_suspects)
    return audit, summary


MODEL_AUDIT_TABLE_COLUMNS: tuple[str, ...] = (
    "arch", "recipe", "seed", "n_audited", "threshold", "model_flagged", "model_flagged_share", "cleanlab_flagged",
    "both_flagged", "jaccard", "noise_ground_truth", "n_injected", "model_precision", "model_recall",
    "cleanlab_precision", "cleanlab_recall",
)


def model_audit_table(summaries: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per audited run (each summary of `run_model_audit` with ``arch``, ``recipe``, ``seed``):
    what each audit flags, their overlap, and precision/recall against injected noise (NaN without it)."""
    rows = []
    for s in summaries:
        c = s["comparison"]
        rows.append({
            "arch": s["arch"], "recipe": s["recipe"], "seed": int(s["seed"]), "n_audited": s["n"],
            "threshold": s["threshold"], "model_flagged": c["n_model"], "model_flagged_share": s["flagged_share"],
            "cleanlab_flagged": c["n_cleanlab"], "both_flagged": c["n_both"], "jaccard": c["jaccard"],
            "noise_ground_truth": "injected (synthetic)" if s["injected_noise"] else "none (real labels)",
            "n_injected": c["n_injected"],
            **{f"{audit}_{m}": c[f"{audit}_{m}"] for audit in ("model", "cleanlab") for m in ("precision", "recall")},
        })
    table = pd.DataFrame(rows, columns=list(MODEL_AUDIT_TABLE_COLUMNS))
    numeric = [c for c in MODEL_AUDIT_TABLE_COLUMNS if c not in ("arch", "recipe", "noise_ground_truth")]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    return table.sort_values(["arch", "recipe", "seed"], kind="stable").reset_index(drop=True)
