"""The classical baseline: TF-IDF word and character n-grams + logistic regression (scikit-learn).

It is trained on a recipe's training split exactly as the LLMs are (same messages, same labels,
the ``text`` column they are prompted with), and `predict_classical` writes the very table an
LLM's prediction file holds, so that the study's tables treat it as one more model: paradigm
``tfidf``, arch ``classical``.

Features: a `FeatureUnion` of word 1-2-grams and ``char_wb`` 3-5-grams (character n-grams inside
word boundaries, which survive the tokenisation and obfuscation differences between corpora),
each with sublinear tf and l2-normalised idf weights. The classifier is L2-regularised logistic
regression fitted by L-BFGS, which has no random component: the same data and settings give the
same model bit for bit. `settings.C_grid` optionally picks C by log-loss on the validation split
(a proper score, so the choice does not move the decision threshold).

A saved model is one ``.npz`` file read with ``allow_pickle=False``: the vocabularies and settings
as JSON, the idf weights and coefficients as arrays. Unlike a pickle (joblib), loading it cannot
run code, in the spirit of the project's safetensors-only rule for weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import FeatureUnion, Pipeline

from gendiag.evaluate.metrics import classification_metrics
from gendiag.io import atomic_path

log = logging.getLogger("gendiag.evaluate.classical")

ARCH = "classical"
PARADIGM = "tfidf"
# The columns of an LLM's prediction file (`gendiag.evaluate.predict.prediction_table`), in order.
CLASSICAL_PREDICTION_COLUMNS: tuple[str, ...] = ("uid", "label", "log_odds", "p_malicious", "pred")
FORMAT = "gendiag-tfidf-baseline"
FORMAT_VERSION = 1
BLOCKS: tuple[str, ...] = ("word", "char")


@dataclass(frozen=True)
class TfidfSettings:
    """How the baseline is built. `max_features` caps each block (word and char) separately."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    max_features: int | None = 100_000
    min_df: int = 2
    sublinear_tf: bool = True
    lowercase: bool = True
    C: float = 4.0
    C_grid: tuple[float, ...] = ()
    class_weight: str | None = None
    max_iter: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("word_ngrams", "char_ngrams"):
            value = getattr(self, name)
            ok = (isinstance(value, (tuple, list)) and len(value) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                  and 1 <= value[0] <= value[1])
            if not ok:
                raise ValueError(f"{name} must be two integers (min_n, max_n) with 1 <= min_n <= max_n; got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.max_features is not None and not (_is_int(self.max_features) and self.max_features >= 1):
            raise ValueError(f"max_features must be a positive integer or None (no cap); got {self.max_features!r}")
        if not (_is_int(self.min_df) and self.min_df >= 1):
            raise ValueError(f"min_df must be a positive integer (messages a term must occur in); got {self.min_df!r}")
        grid = tuple(self.C_grid) if isinstance(self.C_grid, (tuple, list)) else self.C_grid
        for name, values in (("C", (self.C,)), ("C_grid", grid)):
            if not isinstance(values, tuple) or not all(_is_positive_number(v) for v in values):
                raise ValueError(f"{name} must be positive number(s); got {getattr(self, name)!r}")
        object.__setattr__(self, "C_grid", tuple(float(c) for c in grid))
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced'; got {self.class_weight!r}")
        if not (_is_int(self.max_iter) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        for name in ("sublinear_tf", "lowercase"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> TfidfSettings:
        """Settings from a config mapping (lists become tuples); unknown keys are an error."""
        mapping = dict(mapping or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise ValueError(f"unknown TF-IDF baseline setting(s) {unknown}; known: {known}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in mapping.items()})


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(float(value)) and float(value) > 0)


@dataclass
class TfidfBaseline:
    """A fitted baseline: the scikit-learn `pipeline` (features -> clf), its settings, and what it scored.

    `validation` holds the validation split's size, log-loss, F1 at 0.5 and AUROC, the C used,
    and, with a C grid, the log-loss of every C tried (empty without a validation split).
    """

    pipeline: Pipeline
    settings: TfidfSettings
    validation: dict[str, Any] = field(default_factory=dict)
    n_train: int = 0


# --- input checks ------------------------------------------------------------------------------


def _require(frame: Any, columns: tuple[str, ...], what: str, fix: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; {fix} (got columns {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"{what} has no rows")


def _texts(frame: pd.DataFrame, what: str) -> list[str]:
    texts = frame["text"].tolist()
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        where = f" (uid {frame['uid'].iloc[bad[0]]!r})" if "uid" in frame.columns else ""
        raise ValueError(f"{what}: 'text' must hold strings; row {bad[0]}{where} is "
                         f"{type(texts[bad[0]]).__name__} ({len(bad)} such row(s)); fill missing texts with ''")
    return texts


def _labels(frame: pd.DataFrame, what: str) -> np.ndarray:
    values = frame["label"]
    unknown = sorted({v for v in values.dropna().tolist() if v not in (0, 1)}, key=str)
    if values.isna().any() or unknown:
        shown = unknown[:5] or ["missing"]
        raise ValueError(f"{what}: 'label' must be 0 (legitimate) or 1 (malicious); found {shown}")
    return values.to_numpy(dtype=np.int64)


_TRAIN_FIX = "expected a recipe split with 'text' (the message the LLMs are prompted with) and 'label' (1 malicious)"


# --- training ----------------------------------------------------------------------------------


def _vectorizers(settings: TfidfSettings) -> dict[str, TfidfVectorizer]:
    common = {"sublinear_tf": settings.sublinear_tf, "lowercase": settings.lowercase,
              "min_df": settings.min_df, "max_features": settings.max_features, "dtype": np.float64}
    return {
        "word": TfidfVectorizer(analyzer="word", ngram_range=settings.word_ngrams, **common),
        "char": TfidfVectorizer(analyzer="char_wb", ngram_range=settings.char_ngrams, **common),
    }


def _classifier(settings: TfidfSettings, C: float) -> LogisticRegression:
    return LogisticRegression(C=C, solver="lbfgs", max_iter=settings.max_iter, class_weight=settings.class_weight,
                              random_state=settings.seed)


def _fit_classifier(settings: TfidfSettings, C: float, matrix, y: np.ndarray) -> LogisticRegression:
    clf = _classifier(settings, C)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(matrix, y)
    for w in caught:
        if "converge" in str(w.message).lower():
            log.warning("logistic regression (C=%g) did not converge in %d iterations; raise max_iter",
                        C, settings.max_iter)
    return clf


def train_tfidf_baseline(
    train_df: pd.DataFrame, val_df: pd.DataFrame | None = None, settings: TfidfSettings | None = None
) -> TfidfBaseline:
    """Fit the baseline on a recipe's training split; score (and with `C_grid`, pick C on) `val_df`.

    Both frames need ``text`` and ``label``. The vocabulary and idf weights are learnt from the
    training split only. Raises ValueError naming the column and the fix for a missing column,
    a non-string text, a label outside {0, 1}, a training split with a single class, or a
    vocabulary left empty by `min_df`.
    """
    settings = TfidfSettings() if settings is None else settings
    if not isinstance(settings, TfidfSettings):
        raise TypeError(f"settings must be a TfidfSettings; got {type(settings).__name__}")
    _require(train_df, ("text", "label"), "training split", _TRAIN_FIX)
    texts, y = _texts(train_df, "training split"), _labels(train_df, "training split")
    counts = {k: int((y == k).sum()) for k in (0, 1)}
    if min(counts.values()) == 0:
        only = 1 if counts[1] else 0
        raise ValueError(
            f"training split has only label {only} ({len(y)} messages); logistic regression needs both classes: "
            "check the recipe's corpora (a single-class corpus needs legitimate mail from a second source)"
        )
    if val_df is not None:
        _require(val_df, ("text", "label"), "validation split", _TRAIN_FIX)
        val_texts, val_y = _texts(val_df, "validation split"), _labels(val_df, "validation split")
    elif settings.C_grid:
        raise ValueError("C_grid picks C on the validation split; pass val_df or leave C_grid empty")

    features = FeatureUnion(list(_vectorizers(settings).items()))
    try:
        matrix = features.fit_transform(texts)
    except ValueError as err:
        if "empty vocabulary" in str(err) or "no terms remain" in str(err):
            raise ValueError(f"the training split leaves no n-gram with min_df={settings.min_df}: lower min_df "
                             f"or check that 'text' is not empty ({err})") from err
        raise
    log.info("TF-IDF features: %d messages (%d malicious), %s", len(y), counts[1],
             ", ".join(f"{name} {len(v.vocabulary_)}" for name, v in features.transformer_list))

    validation: dict[str, Any] = {}
    val_matrix = None if val_df is None else features.transform(val_texts)
    C = float(settings.C)
    if settings.C_grid:
        losses = {}
        for candidate in settings.C_grid:
            clf = _fit_classifier(settings, candidate, matrix, y)
            losses[candidate] = float(log_loss(val_y, clf.predict_proba(val_matrix)[:, 1], labels=[0, 1]))
        C = min(settings.C_grid, key=lambda c: (losses[c], c))  # ties: the stronger regularisation
        validation["C_grid_log_loss"] = {f"{c:g}": v for c, v in losses.items()}
    clf = _fit_classifier(settings, C, matrix, y)
    validation["C"] = C
    if val_df is not None:
        p = clf.predict_proba(val_matrix)[:, 1]
        scores = classification_metrics(val_y, p)
        validation.update(n=len(val_y), log_loss=float(log_loss(val_y, p, labels=[0, 1])), f1=scores["f1"],
                          auroc=scores["auroc"])
        log.info("TF-IDF baseline C=%g: validation log-loss %.4f, F1 %.4f, AUROC %.4f (%d messages)",
                 C, validation["log_loss"], scores["f1"], scores["auroc"], len(val_y))
    pipeline = Pipeline([("features", features), ("clf", clf)])
    return TfidfBaseline(pipeline=pipeline, settings=settings, validation=validation, n_train=len(y))


# --- prediction --------------------------------------------------------------------------------


def predict_classical(model: TfidfBaseline | Pipeline, frame: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """The prediction file of the baseline on `frame` (a test set or split with uid, text, label).

    Columns `CLASSICAL_PREDICTION_COLUMNS` (uid, label, log_odds, p_malicious, pred), the same as
    an LLM's prediction file (`gendiag.evaluate.predict.prediction_table`): ``log_odds`` is the
    logistic regression's decision function, ``p_malicious`` its sigmoid, ``pred`` is
    ``p_malicious >= threshold``.
    """
    pipeline = model.pipeline if isinstance(model, TfidfBaseline) else model
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"model must be a TfidfBaseline or a fitted Pipeline; got {type(model).__name__}")
    if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1]; got {threshold!r}")
    _require(frame, ("uid", "text", "label"), "messages to score",
             "expected a test set or split with 'uid', 'text' and 'label' (1 malicious)")
    texts, labels = _texts(frame, "messages to score"), _labels(frame, "messages to score")
    log_odds = np.asarray(pipeline.decision_function(texts), dtype=np.float64)
    p = expit(log_odds)
    return pd.DataFrame(
        {
            "uid": frame["uid"].to_numpy(),
            "label": labels.astype(int),
            "log_odds": log_odds,
            "p_malicious": p,
            "pred": (p >= threshold).astype(int),
        }
    )


# --- save / load -------------------------------------------------------------------------------


def _terms(vectorizer: TfidfVectorizer) -> list[str]:
    terms = [""] * len(vectorizer.vocabulary_)
    for term, index in vectorizer.vocabulary_.items():
        terms[index] = term
    return terms


def save_tfidf_baseline(model: TfidfBaseline, path: str | os.PathLike) -> Path:
    """Write `model` to one ``.npz`` file (no pickle; see the module docstring), atomically."""
    if not isinstance(model, TfidfBaseline):
        raise TypeError(f"expected a TfidfBaseline from train_tfidf_baseline; got {type(model).__name__}")
    vectorizers = dict(model.pipeline.named_steps["features"].transformer_list)
    clf = model.pipeline.named_steps["clf"]
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "sklearn": sklearn.__version__,
        "settings": dataclasses.asdict(model.settings),
        "validation": model.validation,
        "n_train": model.n_train,
        "classes": [int(c) for c in clf.classes_],
        "terms": {name: _terms(vectorizers[name]) for name in BLOCKS},
    }
    arrays = {f"{name}_idf": vectorizers[name].idf_ for name in BLOCKS}
    arrays.update(coef=clf.coef_, intercept=clf.intercept_)
    encoded = np.frombuffer(json.dumps(meta, ensure_ascii=True).encode("ascii"), dtype=np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, meta=encoded, **arrays)
    return path


def load_tfidf_baseline(path: str | os.PathLike) -> TfidfBaseline:
    """Read a model written by `save_tfidf_baseline`; it predicts exactly as the saved one did."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no TF-IDF baseline at {path}; train it first (train_tfidf_baseline + save)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a TF-IDF baseline written by save_tfidf_baseline: {err}") from err
    meta = None
    if "meta" in arrays:
        try:
            meta = json.loads(arrays["meta"].tobytes().decode("ascii"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a TF-IDF baseline written by save_tfidf_baseline (no '{FORMAT}' header)")
    if meta["version"] != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {meta['version']}; this gendiag reads version {FORMAT_VERSION}")
    if meta["sklearn"] != sklearn.__version__:
        log.warning("%s was written with scikit-learn %s, this is %s; predictions may differ",
                    path, meta["sklearn"], sklearn.__version__)
    settings = TfidfSettings.from_mapping(meta["settings"])
    vectorizers = _vectorizers(settings)
    for name in BLOCKS:
        terms = meta["terms"][name]
        vectorizers[name].vocabulary_ = {term: i for i, term in enumerate(terms)}
        vectorizers[name].fixed_vocabulary_ = False
        vectorizers[name].idf_ = arrays[f"{name}_idf"]
    clf = _classifier(settings, float(meta["validation"].get("C", settings.C)))
    clf.classes_ = np.asarray(meta["classes"])
    clf.coef_ = arrays["coef"]
    clf.intercept_ = arrays["intercept"]
    clf.n_features_in_ = arrays["coef"].shape[1]
    clf.n_iter_ = np.zeros(1, dtype=np.int32)
    pipeline = Pipeline([("features", FeatureUnion([(name, vectorizers[name]) for name in BLOCKS])), ("clf", clf)])
    return TfidfBaseline(pipeline=pipeline, settings=settings, validation=meta["validation"],
                         n_train=int(meta["n_train"]))
