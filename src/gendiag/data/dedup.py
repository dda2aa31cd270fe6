"""Exact and near-duplicate detection for corpus audits: MinHash signatures, banded LSH, union-find.

Two messages are exact duplicates when `splits.dedup_key` says so (equal up to case, digits,
punctuation and whitespace). Near duplicates are pairs whose shingle sets have an estimated
Jaccard similarity of at least `threshold`.

Shingles are character 5-grams (byte 5-grams of the UTF-8 encoding; the same thing for ASCII) of
the text normalised as `dedup_key` normalises it. Measured on the shared corpora, word 3-grams
miss the commonest kind of near duplicate in spam corpora, the obfuscated variant of one
template ("viagra"/"viaqra", "millions"/"miiiions"): every altered word breaks three word
shingles but only about five character shingles, so at Jaccard 0.8 (same LSH settings) character
shingles found 8,749 near-duplicate Enron-Spam messages where word 3-grams found 7,116, and the
extra pairs were such variants. They also tolerate a changed word in a short message, where word
n-grams cannot.
Normalising first makes exact duplicates (equal keys) share one shingle set, so the near-duplicate
clusters always contain the exact ones, and Enron-Spam's lower-casing and tokenisation do not hide
a copy of a message found in another corpus. A text shorter than one shingle has no shingles and is
matched by its exact key only.

MinHash is computed with numpy (one multiply-add hash family over 64-bit shingle hashes) on each
distinct normalised text once. datasketch's `MinHash.update_batch` hashes every shingle with SHA-1
from Python: measured on a 2,000-message sample, it would take about a minute for the 59 million
shingles of the four shared corpora (45k messages), the numpy version about seven seconds; with
keys, normalisation and LSH the whole index takes about 13 s on two cores.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.integrate import quad
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# The normalisation that `dedup_key` hashes, shared so that equal keys mean equal shingle sets.
from gendiag.data.splits import _NON_WORD, dedup_key

SHINGLE_BYTES = 5
DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
# A pair at the threshold must become a candidate with at least this probability; among the band
# layouts that achieve it, the one with the fewest dissimilar candidates (to verify) is used. The
# layout that balances the two error integrals (datasketch's default: 9 bands of 13 rows) makes only
# 40% of the pairs at Jaccard 0.8 candidates, and a miss is never recovered, while a spurious
# candidate costs one comparison of two signatures (21 bands of 6 rows: +11% verified pairs on the
# shared corpora, no measurable extra time).
_MIN_RECALL_AT_THRESHOLD = 0.99
# A bucket larger than this (a huge family of near-identical texts) is linked as a star around its
# first member instead of all pairs, which would be quadratic; members are still clustered together
# whenever they are similar to that first member.
_MAX_BUCKET = 2000
_CHUNK_BYTES = 1 << 22
_U64 = np.uint64


def exact_keys(texts: Sequence[str]) -> np.ndarray:
    """`splits.dedup_key` of every text, as a string array (equal keys = exact duplicates)."""
    texts = _as_texts(texts, "texts")
    return np.array([dedup_key(t) for t in texts], dtype=str)


def _as_texts(texts: Sequence[str], name: str) -> list[str]:
    values = list(texts)
    bad = [i for i, t in enumerate(values) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"{name} must all be strings; item {bad[0]} is {type(values[bad[0]]).__name__} "
            f"({len(bad)} non-string item(s) in all); fill missing texts with '' first"
        )
    return values


def _normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.casefold()).strip()


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: spreads the packed 5-byte shingles over all 64 bits."""
    x = x ^ (x >> _U64(33))
    x *= _U64(0xFF51AFD7ED558CCD)
    x ^= x >> _U64(33)
    x *= _U64(0xC4CEB9FE1A85EC53)
    x ^= x >> _U64(33)
    return x


def _shingle_hashes(encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the byte 5-grams of some texts, concatenated, and the count per text."""
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    counts = np.maximum(lengths - SHINGLE_BYTES + 1, 0)
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    n_windows = len(buf) - SHINGLE_BYTES + 1
    if n_windows <= 0 or counts.sum() == 0:
        return np.zeros(0, dtype=_U64), counts
    packed = np.zeros(n_windows, dtype=_U64)
    for j in range(SHINGLE_BYTES):
        packed |= buf[j : j + n_windows].astype(_U64) << _U64(8 * j)
    # A window is valid when it ends inside the text it starts in: the last SHINGLE_BYTES - 1 start
    # positions before each text's end are not (nor is anything in a text shorter than a shingle).
    valid = np.ones(n_windows, dtype=bool)
    ends = np.cumsum(lengths)
    for j in range(1, SHINGLE_BYTES):
        pos = ends - j
        valid[pos[(pos >= 0) & (pos < n_windows)]] = False
    return _fmix64(packed[valid]), counts


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, np.iinfo(np.int64).max, size=num_perm, dtype=np.int64).astype(_U64) | _U64(1)
    b = rng.integers(0, np.iinfo(np.int64).max, size=num_perm, dtype=np.int64).astype(_U64)
    return a, b


def minhash_signatures(texts: Sequence[str], num_perm: int = DEFAULT_NUM_PERM, seed: int = 0) -> np.ndarray:
    """MinHash signatures (n, num_perm) of already normalised texts; all-max rows for texts without shingles.

    Each hash function is h -> a*h + b (mod 2**64) with odd a, applied to the mixed shingle hashes;
    min-wise independence comes from the mixing, and the multiply-add makes the functions distinct.
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    a, b = _permutations(num_perm, seed)
    signatures = np.full((len(texts), num_perm), np.iinfo(_U64).max, dtype=_U64)
    encoded = [t.encode("utf-8") for t in texts]
    # Chunks of texts keep the temporary arrays small (and cache-friendly) whatever the corpus size.
    start = 0
    while start < len(encoded):
        stop, size = start, 0
        while stop < len(encoded) and (stop == start or size + len(encoded[stop]) <= _CHUNK_BYTES):
            size += len(encoded[stop])
            stop += 1
        hashes, counts = _shingle_hashes(encoded[start:stop])
        rows = np.flatnonzero(counts > 0)
        if len(rows):
            offsets = np.concatenate([[0], np.cumsum(counts[rows])[:-1]])
            block = np.empty_like(hashes)
            for k in range(num_perm):
                np.multiply(hashes, a[k], out=block)
                block += b[k]
                signatures[start + rows, k] = np.minimum.reduceat(block, offsets)
        start = stop
    return signatures


@functools.lru_cache(maxsize=64)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) for LSH at a Jaccard threshold with `num_perm` hash functions.

    A pair of Jaccard s shares a band with probability 1 - (1 - s**r)**b. The layout is the one with
    the smallest false-candidate integral (of that probability over [0, threshold]) among those that
    make a pair at the threshold a candidate with probability >= 0.99.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    best = None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands < _MIN_RECALL_AT_THRESHOLD:
            continue
        false_pos = quad(lambda s, b=bands, r=rows: 1 - (1 - s**r) ** b, 0.0, threshold)[0]
        if best is None or false_pos < best[0]:
            best = (false_pos, bands, rows)
    # With very few hash functions nothing reaches the target: one row per band is the most lenient.
    return (num_perm, 1) if best is None else (best[1], best[2])


def _candidate_pairs(signatures: np.ndarray, rows_with_shingles: np.ndarray, threshold: float) -> np.ndarray:
    """(m, 2) row pairs (p < q) that share at least one LSH band."""
    bands, rows = lsh_bands(threshold, signatures.shape[1])
    idx = rows_with_shingles
    found = []
    for band in range(bands):
        key = np.zeros(len(idx), dtype=_U64)
        for col in signatures[idx, band * rows : (band + 1) * rows].T:
            key = _fmix64(key * _U64(0x9E3779B97F4A7C15) ^ col)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
        starts = np.concatenate([[0], bounds])
        sizes = np.diff(np.concatenate([starts, [len(order)]]))
        for s, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = idx[order[s : s + size]]
            if size > _MAX_BUCKET:
                found.append(np.stack([np.full(size - 1, members[0]), members[1:]], axis=1))
            else:
                left, right = np.triu_indices(size, 1)
                found.append(np.stack([members[left], members[right]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(np.concatenate(found), axis=1).astype(np.int64)
    return np.unique(pairs, axis=0)


def _estimated_jaccard(signatures: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    out = np.empty(len(pairs), dtype=np.float64)
    step = max(1, (1 << 24) // signatures.shape[1])
    for s in range(0, len(pairs), step):
        chunk = pairs[s : s + step]
        out[s : s + step] = (signatures[chunk[:, 0]] == signatures[chunk[:, 1]]).mean(axis=1)
    return out


class NearDuplicateIndex:
    """Exact keys and verified near-duplicate pairs of a collection of texts, built once.

    Every distinct normalised text is a *group* (its exact-duplicate copies share it); MinHash and
    LSH run on groups, and `pairs` holds the group pairs (p < q) whose estimated Jaccard similarity
    is at least `threshold`. Clusters and cross-set matches for any subsets of the texts come from
    these pairs, so one index serves a corpus audit, the cross-corpus audit and the leakage audit.
    """

    def __init__(
        self,
        texts: Sequence[str],
        threshold: float = DEFAULT_THRESHOLD,
        num_perm: int = DEFAULT_NUM_PERM,
        seed: int = 0,
    ):
        texts = _as_texts(texts, "texts")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.num_perm, self.seed = float(threshold), int(num_perm), int(seed)
        self.n = len(texts)
        self.keys = exact_keys(texts)
        # Group ids follow first appearance, so np.unique's first indices come out in group order.
        self.group = pd.factorize(pd.Series(self.keys, dtype=object), sort=False)[0].astype(np.int64)
        _, first = np.unique(self.group, return_index=True)
        self.n_groups = len(first)
        normalised = [_normalise(texts[i]) for i in first]
        signatures = minhash_signatures(normalised, self.num_perm, self.seed)
        self.has_shingles = np.fromiter((len(t.encode("utf-8")) >= SHINGLE_BYTES for t in normalised),
                                        dtype=bool, count=self.n_groups)
        candidates = _candidate_pairs(signatures, np.flatnonzero(self.has_shingles), self.threshold)
        jaccard = _estimated_jaccard(signatures, candidates)
        keep = jaccard >= self.threshold
        self.n_candidates = len(candidates)
        self.pairs = candidates[keep]
        self.jaccard = jaccard[keep]

    def clusters(self, subset: np.ndarray | None = None) -> np.ndarray:
        """A cluster id per text of `subset` (all texts by default), from near-duplicate links among it.

        Connected components of the link graph (what union-find computes). Ids are numbered by first
        appearance in `subset`, so they are reproducible and a singleton has an id of its own.
        """
        subset = np.arange(self.n) if subset is None else np.asarray(subset, dtype=np.int64)
        groups = self.group[subset]
        present = np.zeros(self.n_groups, dtype=bool)
        present[groups] = True
        links = self.pairs[present[self.pairs[:, 0]] & present[self.pairs[:, 1]]]
        graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(self.n_groups,) * 2)
        _, component = connected_components(graph, directed=False)
        _, ids = np.unique(pd.factorize(component[groups], sort=False)[0], return_inverse=True)
        return ids.astype(np.int64)

    def matches(self, a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, float]]:
        """For each text of `b` with an exact or near copy among `a`: (i, j, jaccard) of its best match.

        `a` and `b` are index arrays into the indexed texts; i and j are returned as such indices.
        Exact copies score 1.0; ties go to the lowest i. Sorted by j.
        """
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if len(a) == 0 or len(b) == 0:
            return []
        # Copies of one group are interchangeable as match targets: keep the first per group.
        a_first = pd.Series(a).groupby(self.group[a]).min()
        links = pd.concat(
            [
                pd.DataFrame({"ga": self.pairs[:, 0], "gb": self.pairs[:, 1], "jaccard": self.jaccard}),
                pd.DataFrame({"ga": self.pairs[:, 1], "gb": self.pairs[:, 0], "jaccard": self.jaccard}),
                pd.DataFrame({"ga": a_first.index, "gb": a_first.index, "jaccard": 1.0}),
            ],
            ignore_index=True,
        )
        links = links[links["ga"].isin(a_first.index)]
        links["i"] = a_first.reindex(links["ga"]).to_numpy()
        hits = pd.DataFrame({"j": b, "gb": self.group[b]}).merge(links, on="gb", how="inner")
        if hits.empty:
            return []
        best = hits.sort_values(["j", "jaccard", "i"], ascending=[True, False, True]).drop_duplicates("j")
        return [(int(i), int(j), float(s)) for i, j, s in zip(best["i"], best["j"], best["jaccard"], strict=True)]


def near_duplicate_clusters(
    texts: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = 0,
) -> np.ndarray:
    """A cluster id per text: texts linked by estimated Jaccard >= threshold (transitively) share one.

    Exact duplicates always share a cluster; a text shorter than one shingle joins only its exact
    copies. Ids follow first appearance, so `pd.Series(ids).duplicated().sum()` is the number of
    messages beyond the first of their cluster.
    """
    return NearDuplicateIndex(texts, threshold, num_perm, seed).clusters()


def cross_matches(
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = 0,
) -> list[tuple[int, int, float]]:
    """Messages of `texts_b` that have an exact or near copy in `texts_a` (leakage between sets).

    One (i, j, jaccard) per such message j of b, with i its best match in a (1.0 for an exact copy).
    """
    texts_a = _as_texts(texts_a, "texts_a")
    texts_b = _as_texts(texts_b, "texts_b")
    index = NearDuplicateIndex(texts_a + texts_b, threshold, num_perm, seed)
    n_a = len(texts_a)
    found = index.matches(np.arange(n_a), np.arange(n_a, n_a + len(texts_b)))
    return [(i, j - n_a, s) for i, j, s in found]
