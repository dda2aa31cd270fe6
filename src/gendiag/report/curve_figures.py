"""ROC and DET curves: one panel per test set, every model on one axis, AUROC in the legend.

The input is the study's prediction files stacked with their keys: one row per (model run,
message), columns arch, recipe, paradigm, seed, testset, label, p_malicious. A model is an
(arch, recipe, paradigm); when it has several seeds its curve is the vertical average of the seeds'
curves (mean true-positive rate at each false-positive rate) and its AUROC the mean of the seeds'
AUROCs, with their standard deviation after "±". A dot marks where each model operates at the
study's threshold, so a panel shows both how well a model ranks a test set's mail and how far the
fixed threshold is from a good operating point on it.

Colour is the architecture (the classical TF-IDF baseline is black), line style the
(recipe, paradigm); zero-shot models are dotted. A DET panel plots the miss rate (1 - recall)
against the false-positive rate on normal-deviate (probit) axes, which spreads the low-FPR region
where a mail filter operates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from gendiag.evaluate.classical import ARCH as CLASSICAL_ARCH
from gendiag.evaluate.metrics import _validate
from gendiag.report.figures import (
    _STYLE,
    ZEROSHOT,
    _new_figure,
    _ordered,
    _require,
    _run_label,
    _save,
    _unique_in_order,
)

CURVE_COLUMNS: tuple[str, ...] = ("arch", "recipe", "paradigm", "seed", "testset", "label", "p_malicious")
MODEL_KEYS: tuple[str, ...] = ("arch", "recipe", "paradigm")
KINDS: tuple[str, ...] = ("roc", "det")
# The circuit figures' arch colours (circuit_figures.ARCH_PALETTE, not imported: it pulls in torch).
ARCH_PALETTE = ("#1B9E77", "#7570B3", "#E7298A", "#66A61E", "#A6761D", "#666666")
CLASSICAL_COLOUR = "#000000"
LINESTYLES: tuple = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (3, 1, 1, 1)))
# Vertical averaging of several seeds: dense near FPR 0, where a mail filter operates.
FPR_GRID = np.unique(np.r_[0.0, np.logspace(-4, 0, 161), np.linspace(0.0, 1.0, 101)])
# DET axes span normal deviates -3.2 .. 3.2 (0.07% .. 99.93%); rates of 0 or 1 sit on the edge.
DET_LIMIT = 3.2
DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999)


def _model_label(arch: str, recipe: str, paradigm: str, multi_paradigm: bool) -> str:
    if paradigm == ZEROSHOT:
        return _run_label([arch, "zero-shot"])
    if arch == CLASSICAL_ARCH:
        return _run_label(["TF-IDF + LR", recipe])
    return _run_label([arch, recipe, paradigm] if multi_paradigm else [arch, recipe])


def _models(predictions: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Models in the order of their arch's first appearance; zero-shot first, the classical baseline last."""
    present = list(dict.fromkeys(zip(*(predictions[k] for k in MODEL_KEYS), strict=True)))
    archs = _unique_in_order(predictions["arch"])
    rank = {a: (a == CLASSICAL_ARCH, i) for i, a in enumerate(archs)}
    return sorted(present, key=lambda m: (rank[m[0]], m[2] != ZEROSHOT))  # stable: first appearance within


def _styles(models: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict]:
    archs = [a for a in dict.fromkeys(m[0] for m in models) if a != CLASSICAL_ARCH]
    colours = {a: ARCH_PALETTE[k % len(ARCH_PALETTE)] for k, a in enumerate(archs)} | {CLASSICAL_ARCH: CLASSICAL_COLOUR}
    variants = list(dict.fromkeys((m[1], m[2]) for m in models if m[2] != ZEROSHOT and m[0] != CLASSICAL_ARCH))
    style = {v: LINESTYLES[k % len(LINESTYLES)] for k, v in enumerate(variants)}
    # The baseline has one paradigm: it takes the style of its recipe's first LLM variant.
    for recipe in dict.fromkeys(m[1] for m in models if m[0] == CLASSICAL_ARCH):
        first = next((v for v in variants if v[0] == recipe), None)
        style[(recipe, CLASSICAL_ARCH)] = style[first] if first else LINESTYLES[len(style) % len(LINESTYLES)]

    def linestyle(m: tuple[str, str, str]):
        if m[2] == ZEROSHOT:
            return ":"
        return style[(m[1], CLASSICAL_ARCH)] if m[0] == CLASSICAL_ARCH else style[(m[1], m[2])]

    return {m: {"color": colours[m[0]], "linestyle": linestyle(m)} for m in models}


def _seed_curves(rows: pd.DataFrame, threshold: float | None) -> dict:
    """ROC of each seed's predictions, averaged vertically when there are several seeds."""
    curves, aucs, points = [], [], []
    for _, run in rows.groupby("seed", sort=True):
        y = run["label"].to_numpy(dtype=int)
        p = run["p_malicious"].to_numpy(dtype=np.float64)
        fpr, tpr, _ = roc_curve(y, p)
        curves.append((fpr, tpr))
        aucs.append(roc_auc_score(y, p))
        if threshold is not None:
            flagged = p >= threshold
            points.append((flagged[y == 0].mean(), flagged[y == 1].mean()))
    if len(curves) == 1:
        fpr, tpr = curves[0]
    else:
        fpr = FPR_GRID
        tpr = np.mean([np.interp(FPR_GRID, f, t) for f, t in curves], axis=0)
        tpr[0] = 0.0
    point = tuple(np.mean(points, axis=0)) if points else None
    return {"fpr": fpr, "tpr": tpr, "auc": float(np.mean(aucs)), "auc_sd": float(np.std(aucs, ddof=1))
            if len(aucs) > 1 else math.nan, "n_seeds": len(aucs), "point": point}


def _probit(rate: np.ndarray) -> np.ndarray:
    return np.clip(norm.ppf(np.clip(rate, 1e-12, 1 - 1e-12)), -DET_LIMIT, DET_LIMIT)


def _det_axes(ax) -> None:
    ticks = _probit(np.array(DET_TICKS))
    labels = [f"{100 * t:g}%" for t in DET_TICKS]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks, labels)
    ax.set_xlim(-DET_LIMIT, DET_LIMIT)
    ax.set_ylim(-DET_LIMIT, DET_LIMIT)


def _class_note(n_pos: int, n_neg: int, kind: str) -> str | None:
    if n_pos and n_neg:
        return None
    which = "legitimate" if n_pos == 0 else "malicious"
    return f"only {which} mail\n({n_pos + n_neg} messages):\nno {kind.upper()} curve"


def roc_curves_figure(
    predictions: pd.DataFrame,
    *,
    kind: str = "roc",
    testset_order: Sequence[str] | None = None,
    threshold: float | None = 0.5,
) -> Figure:
    """ROC (``kind="roc"``) or DET (``kind="det"``) curves, one panel per test set, every model on it.

    `predictions` has `CURVE_COLUMNS` (extra columns are ignored). Panels follow `testset_order`
    or first appearance; a test set with a single class gets an annotated panel without curves.
    Each legend entry is the model and its AUROC on that test set (mean ± SD over seeds when it
    has several). `threshold` (None: no marker) is the decision threshold whose operating point
    is marked with a dot on every curve.
    """
    _require(predictions, CURVE_COLUMNS, "prediction table")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}; got {kind!r}")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1] or None; got {threshold!r}")
    _validate(predictions["label"], predictions["p_malicious"], 0.5)
    testsets = _ordered(_unique_in_order(predictions["testset"]), testset_order, "testset_order")
    models = _models(predictions)
    styles = _styles(models)
    multi_paradigm = predictions.loc[~predictions["paradigm"].isin([ZEROSHOT])
                                     & (predictions["arch"] != CLASSICAL_ARCH), "paradigm"].nunique() > 1
    seeds = predictions.groupby(list(MODEL_KEYS))["seed"].nunique()
    n_cols = min(3, len(testsets))
    n_rows = math.ceil(len(testsets) / n_cols)
    legend_rows = len(models)

    with mpl.rc_context(_STYLE):
        fig = _new_figure(0.4 + 3.6 * n_cols, n_rows * (3.3 + 0.13 * legend_rows))
        axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        groups = dict(list(predictions.groupby(["testset", *MODEL_KEYS], sort=False)))
        for ax, testset in zip(axes, testsets, strict=False):
            labels = predictions.loc[predictions["testset"] == testset, ["arch", "recipe", "paradigm", "seed", "label"]]
            per_run = labels.groupby(["arch", "recipe", "paradigm", "seed"])["label"]
            n_pos, n_neg = int(per_run.sum().max()), int((per_run.size() - per_run.sum()).max())
            note = _class_note(n_pos, n_neg, kind)
            ax.set_title(f"{testset}  ({n_pos} malicious, {n_neg} legitimate)" if note is None else testset)
            if kind == "roc":
                ax.plot([0, 1], [0, 1], color="0.75", linewidth=0.8, linestyle="-", zorder=0)
                ax.set_xlim(-0.01, 1.01)
                ax.set_ylim(-0.01, 1.01)
                ax.set_aspect("equal")
                ax.set_xlabel("false-positive rate (legitimate mail flagged)")
                ax.set_ylabel("recall (malicious mail caught)")
            else:
                _det_axes(ax)
                ax.plot([-DET_LIMIT, DET_LIMIT], [DET_LIMIT, -DET_LIMIT], color="0.75", linewidth=0.8, zorder=0)
                ax.set_xlabel("false-positive rate")
                ax.set_ylabel("miss rate (1 - recall)")
            ax.grid(True, color="0.92", linewidth=0.6)
            ax.set_axisbelow(True)
            if note is not None:
                ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, color="0.35",
                        transform=ax.transAxes, bbox={"facecolor": "white", "edgecolor": "0.8"})
                continue
            handles = []
            for model in models:
                rows = groups.get((testset, *model))
                if rows is None:
                    continue
                curve = _seed_curves(rows, threshold)
                x, y = curve["fpr"], curve["tpr"]
                if kind == "det":
                    x, y = _probit(x), _probit(1.0 - y)
                ax.plot(x, y, linewidth=1.3, **styles[model])
                if curve["point"] is not None:
                    px, py = curve["point"]
                    if kind == "det":
                        px, py = _probit(np.array(px)), _probit(np.array(1.0 - py))
                    ax.plot([px], [py], marker="o", markersize=3.5, color=styles[model]["color"],
                            markeredgecolor="white", markeredgewidth=0.5, linestyle="none")
                auc = f"{curve['auc']:.3f}" + ("" if math.isnan(curve["auc_sd"]) else f" ± {curve['auc_sd']:.3f}")
                handles.append(Line2D([], [], linewidth=1.3, label=f"{_model_label(*model, multi_paradigm)}  {auc}",
                                      **styles[model]))
            ax.legend(handles=handles, title="AUROC", loc="upper center",
                      bbox_to_anchor=(0.5, -0.2), fontsize=6.5, title_fontsize=7, frameon=False, ncols=1)
        for ax in axes[len(testsets):]:
            ax.set_axis_off()
        notes = []
        if (seeds > 1).any():
            notes.append("several seeds: mean curve and mean ± SD of AUROC over seeds")
        if threshold is not None:
            notes.append(f"dots: operating point at threshold {threshold:g}")
        title = "ROC curves per test set" if kind == "roc" else "DET curves per test set"
        fig.suptitle(title + (f" ({'; '.join(notes)})" if notes else ""), x=0.01, ha="left", fontsize=10)
        return fig


def plot_roc_curves(
    predictions: pd.DataFrame,
    stem: str | os.PathLike,
    *,
    kind: str = "roc",
    testset_order: Sequence[str] | None = None,
    threshold: float | None = 0.5,
) -> list[Path]:
    """`roc_curves_figure` written as ``{stem}.pdf`` and ``{stem}.png`` (atomically); returns the paths."""
    fig = roc_curves_figure(predictions, kind=kind, testset_order=testset_order, threshold=threshold)
    with mpl.rc_context(_STYLE):
        return _save(fig, stem)
