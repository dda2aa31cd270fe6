"""De-duplicated, stratified splits of each corpus; training recipes and test sets built from them.

Duplicates are removed before splitting, so no two copies of a message can land on both sides of
the train/test boundary. Two messages are exact duplicates when their text is equal after case
folding, removing digits and punctuation and collapsing whitespace; near duplicates (config
`splits.near_duplicate_threshold`) are MinHash clusters of `gendiag.data.dedup`. Every removed row
is listed in the split report with the uid it duplicates.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
_NON_WORD = re.compile(r"[\W\d_]+", re.UNICODE)


def dedup_key(text: str) -> str:
    """A hash that equal texts share up to case, digits, punctuation and whitespace."""
    normalised = _NON_WORD.sub(" ", text.casefold()).strip()
    return hashlib.blake2b(normalised.encode(), digest_size=12).hexdigest()


def deduplicate(
    frame: pd.DataFrame, near_duplicate_threshold: float | None = None, seed: int = 0
) -> tuple[pd.DataFrame, list[dict]]:
    """Keep the first of each duplicate group; return the kept rows and the removed ones.

    Groups are exact duplicates (equal `dedup_key`), or with `near_duplicate_threshold` the
    near-duplicate clusters of `gendiag.data.dedup` (which contain the exact ones). Each removed
    row is listed with the uid it duplicates, whether it is an exact or a near copy, and both labels.
    """
    if near_duplicate_threshold is None:
        keys = frame["text"].map(dedup_key)
        groups = pd.Series(pd.factorize(keys, sort=False)[0], index=frame.index)
    else:
        from gendiag.data.dedup import NearDuplicateIndex  # it imports this module's normalisation

        index = NearDuplicateIndex(frame["text"].tolist(), near_duplicate_threshold, seed=seed)
        keys = pd.Series(index.keys, index=frame.index)
        groups = pd.Series(index.clusters(), index=frame.index)
    first = pd.Series(frame.index, index=frame.index).groupby(groups, sort=False).transform("first")
    is_duplicate = groups.duplicated(keep="first")
    removed = [
        {
            "uid": frame.at[row, "uid"],
            "duplicate_of": frame.at[kept, "uid"],
            "kind": "exact" if keys[row] == keys[kept] else "near",
            "label": int(frame.at[row, "label"]),
            "label_of_kept": int(frame.at[kept, "label"]),
        }
        for row, kept in zip(frame.index[is_duplicate], first[is_duplicate], strict=True)
    ]
    return frame[~is_duplicate].reset_index(drop=True), removed


def stratified_assign(labels: pd.Series, fractions: dict[str, float], seed: int) -> pd.Series:
    """Assign each row to a split, preserving the label balance in every split."""
    total = sum(fractions.values())
    if not np.isclose(total, 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions} (sum {total})")
    rng = np.random.default_rng(seed)
    assignment = pd.Series("", index=labels.index, dtype=object)
    # A fixed order, so the assignment does not depend on how the config orders its keys.
    names = [n for n in SPLITS if n in fractions] + sorted(set(fractions) - set(SPLITS))
    for _, index in labels.groupby(labels).groups.items():
        order = rng.permutation(np.asarray(index))
        bounds = np.round(np.cumsum([fractions[n] for n in names]) * len(order)).astype(int)
        start = 0
        for name, stop in zip(names, bounds, strict=True):
            assignment.loc[order[start:stop]] = name
            start = stop
    return assignment


def split_corpus(
    frame: pd.DataFrame, fractions: dict[str, float], seed: int, near_duplicate_threshold: float | None = None
) -> tuple[pd.DataFrame, dict]:
    """De-duplicate a corpus table and add a `split` column; return it with a report."""
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; allowed: {SPLITS}")
    kept, removed = deduplicate(frame, near_duplicate_threshold, seed=seed)
    kept["split"] = stratified_assign(kept["label"], fractions, seed).to_numpy()
    counts = kept.groupby(["split", "label"]).size()
    report = {
        "rows_in": int(len(frame)),
        "near_duplicate_threshold": near_duplicate_threshold,
        "duplicates_removed": len(removed),
        "exact_duplicates_removed": sum(r["kind"] == "exact" for r in removed),
        "near_duplicates_removed": sum(r["kind"] == "near" for r in removed),
        "duplicates_with_conflicting_labels": sum(r["label"] != r["label_of_kept"] for r in removed),
        "removed": removed,
        "counts": {split: {str(label): int(n) for label, n in counts[split].items()} for split in SPLITS
                   if split in counts.index.get_level_values(0)},
    }
    return kept, report


def stratified_sample(frame: pd.DataFrame, size: int | None, seed: int, by: list[str]) -> pd.DataFrame:
    """At most `size` rows, drawn so that the groups in `by` keep their shares (largest remainder)."""
    if size is None or size >= len(frame):
        return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    # A one-column grouping by name (not list) keeps scalar group keys, matching the size() index.
    groups = frame.groupby(by[0] if len(by) == 1 else by, sort=True)
    shares = groups.size() / len(frame) * size
    quota = np.floor(shares).astype(int)
    remainder = (shares - quota).sort_values(ascending=False)
    for key in remainder.index[: size - int(quota.sum())]:
        quota[key] += 1
    parts = [group.sample(n=int(quota[key]), random_state=seed) for key, group in groups if quota[key] > 0]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def compose_recipe(
    splits: dict[str, pd.DataFrame], train_size: int | None, val_size: int | None, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Training and validation sets of a recipe: its corpora's train/val splits, mixed in equal shares.

    Equal shares per corpus (then per label) keep a diverse recipe from being dominated by its
    largest corpus; fixing `train_size` across recipes separates the effect of diversity from the
    effect of quantity.
    """
    if not splits:
        raise ValueError("a recipe needs at least one corpus")
    out = {}
    for split, size in (("train", train_size), ("val", val_size)):
        pools = {c: f[f["split"] == split] for c, f in splits.items()}
        empty = [c for c, f in pools.items() if len(f) == 0]
        if empty:
            raise ValueError(f"corpora {empty} have no '{split}' rows; raise their size or the split fraction")
        per_corpus = None if size is None else _equal_shares(size, {c: len(f) for c, f in pools.items()})
        parts = [
            stratified_sample(pool, None if per_corpus is None else per_corpus[c], seed, by=["label"])
            for c, pool in pools.items()
        ]
        out[split] = pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    report = {
        split: {
            "rows": int(len(frame)),
            "by_corpus": {str(k): int(v) for k, v in frame["corpus"].value_counts().sort_index().items()},
            "by_label": {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()},
        }
        for split, frame in out.items()
    }
    return out["train"], out["val"], report


def _equal_shares(size: int, available: dict[str, int]) -> dict[str, int]:
    """Split `size` evenly across corpora; a corpus that runs short gives its rest to the others."""
    shares = dict.fromkeys(available, 0)
    remaining, open_corpora = size, sorted(available)
    while remaining > 0 and open_corpora:
        each, extra = divmod(remaining, len(open_corpora))
        for i, corpus in enumerate(list(open_corpora)):
            want = each + (1 if i < extra else 0)
            take = min(want, available[corpus] - shares[corpus])
            shares[corpus] += take
            remaining -= take
            if shares[corpus] == available[corpus]:
                open_corpora.remove(corpus)
    return shares
