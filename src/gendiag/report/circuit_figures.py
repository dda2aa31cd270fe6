"""The circuit analysis's figures: one function per figure, each writing ``{stem}.pdf`` and ``{stem}.png``.

Every function takes the per-model circuit tables of `gendiag.circuits.study` stacked with
`gendiag.circuits.summary.read_run_tables` (key columns arch, recipe, paradigm, seed first).
Seeds are pooled: a mean "over pairs" runs over the pairs of every seed of a model. When the table
holds more than one paradigm, each (recipe, paradigm) gets its own panel.

Heatmaps put layer 0 (or residual point 0, the embeddings) at the top, so depth grows downward.
Red always means toward the clean prompt's value (the cue present: toward "phishing"), blue the
opposite.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, PowerNorm, TwoSlopeNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from gendiag.circuits.pairs import SEGMENTS
from gendiag.circuits.summary import decision_point
from gendiag.report.figures import (
    _STYLE,
    _ink_on,
    _new_figure,
    _require,
    _run_label,
    _save,
    _unique_in_order,
    recipe_colours,
    token_label,
)
from gendiag.report.tables import counted

RECIPES = ("specialist", "generalist")
MODEL_KEYS = ("arch", "recipe", "paradigm")
RUN_KEYS = ("arch", "recipe", "paradigm", "seed")
DIVERGING = "RdBu_r"  # red: toward the clean (cue) value, blue: away from it
ATTENTION_CMAP = "Blues"
EDIT_COLOUR = "#C0392B"
# Arch colours avoid the recipe roles' orange and blue, which colour recipes elsewhere.
ARCH_PALETTE = ("#1B9E77", "#7570B3", "#E7298A", "#66A61E", "#A6761D", "#666666")
SEGMENT_LABELS = {
    "prompt_start": "prompt\nstart",
    "before_edit": "before\nedit",
    "edited": "edited",
    "after_edit": "after\nedit",
    "question": "question",
    "answer": "answer",
}
EFFECT_UNITS = "normalised effect (0 = corrupted, 1 = clean)"
# Annotate heatmap cells only while there are few enough to read.
MAX_ANNOTATED_CELLS = 160
# Points per (arch, recipe, kind) drawn in the attribution scatter (r uses all of them).
MAX_SCATTER_POINTS = 6000


# --- shared helpers ----------------------------------------------------------------------------


def arch_colours(archs: Sequence[str]) -> dict[str, str]:
    return {arch: ARCH_PALETTE[k % len(ARCH_PALETTE)] for k, arch in enumerate(archs)}


def _models(df: pd.DataFrame, recipes: Sequence[str] | None, what: str) -> tuple[list[tuple[str, str]], bool]:
    """The (recipe, paradigm) panels to draw: `recipes` in order (all present when None), then
    each paradigm they were trained under; and whether the labels need the paradigm."""
    present = _unique_in_order(df["recipe"])
    recipes = present if recipes is None else list(recipes)
    missing = [r for r in recipes if r not in present]
    if missing:
        raise ValueError(f"{what} has no rows for recipe(s) {missing}; present: {present}")
    paradigms = _unique_in_order(df.loc[df["recipe"].isin(recipes), "paradigm"])
    return [(r, p) for r in recipes for p in paradigms], len(paradigms) > 1


def _model_label(recipe: str, paradigm: str, multi_paradigm: bool) -> str:
    return _run_label([recipe, paradigm] if multi_paradigm else [recipe])


def _n_pairs(df: pd.DataFrame) -> pd.Series:
    """Analysed pairs per model (arch, recipe, paradigm), counted over seeds."""
    return df.drop_duplicates([*RUN_KEYS, "pair_id"]).groupby(list(MODEL_KEYS)).size()


def _symmetric(values, floor: float = 0.0) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    top = float(np.abs(values).max()) if values.size else 0.0
    return max(top, floor) if max(top, floor) > 0 else 1.0


def _diverging_norm(limit: float) -> Normalize:
    return TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)


def _signed(value: float, digits: int = 2) -> str:
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        text = f"{0:.{digits}f}"
    return text.replace("-", "\u2212")


def _annotate(ax, matrix: np.ndarray, cmap, norm, fontsize: float, digits: int = 2) -> None:
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            if np.isfinite(value):
                ax.text(j, i, _signed(value, digits), ha="center", va="center", fontsize=fontsize,
                        color=_ink_on(cmap, norm, float(np.clip(value, norm.vmin, norm.vmax))))


def _layer_ticks(n: int, labels: Sequence[str]) -> tuple[list[int], list[str]]:
    """At most ~16 tick labels on an axis of `n` rows."""
    step = max(1, int(np.ceil(n / 16)))
    ticks = list(range(0, n, step))
    if n - 1 not in ticks:
        if len(ticks) > 1 and n - 1 - ticks[-1] < step * 0.75:
            ticks.pop()  # too close to the last one, which is labelled instead
        ticks.append(n - 1)
    return ticks, [labels[t] for t in ticks]


def _heatmap_axes(ax) -> None:
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _empty_panel(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="0.4", transform=ax.transAxes)


def _layer_head_matrix(frame: pd.DataFrame, value: str, n_layers: int, n_heads: int) -> np.ndarray:
    matrix = np.full((n_layers, n_heads), np.nan)
    for row in frame.itertuples(index=False):
        matrix[int(row.layer), int(row.head)] = getattr(row, value)
    return matrix


# --- 1. logit lens -----------------------------------------------------------------------------


def lens_curves(lens: pd.DataFrame) -> pd.DataFrame:
    """Per model and residual point: mean and standard error over pairs of the clean and corrupted
    label logit difference, with the number of pairs."""
    _require(lens, [*RUN_KEYS, "pair_id", "point", "depth", "clean", "corrupt"], "logit-lens table")
    grouped = lens.groupby([*MODEL_KEYS, "point"], sort=False)
    out = grouped.agg(depth=("depth", "mean"), clean=("clean", "mean"), clean_sem=("clean", "sem"),
                      corrupt=("corrupt", "mean"), corrupt_sem=("corrupt", "sem"), n_pairs=("clean", "size"))
    return out.reset_index().sort_values([*MODEL_KEYS, "point"], kind="stable", ignore_index=True)


def plot_logit_lens(
    lens: pd.DataFrame, stem: str | os.PathLike, recipes: Sequence[str] | None = RECIPES
) -> list[Path]:
    """Logit-lens curves of every architecture, one panel per recipe.

    x: normalised depth (residual point / number of layers; 0 = embeddings, 1 = output); y: mean
    over pairs of the label logit difference read through the final norm, clean prompt solid,
    corrupted dashed, with ±1 standard-error bands. The marker is each arch's decision point: the
    first point from which the clean mean stays above half its final value.
    """
    curves = lens_curves(lens)
    panels, multi_paradigm = _models(curves, recipes, "logit-lens table")
    archs = _unique_in_order(curves["arch"])
    colours = arch_colours(archs)
    n_points = curves.groupby(list(MODEL_KEYS))["point"].nunique().max()
    marker = "o" if n_points <= 16 else None

    with mpl.rc_context(_STYLE):
        fig = _new_figure(0.6 + 3.5 * len(panels), 3.6)
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, (recipe, paradigm) in zip(axes, panels, strict=True):
            handles = []
            for arch in archs:
                run = curves[(curves["arch"] == arch) & (curves["recipe"] == recipe)
                             & (curves["paradigm"] == paradigm)]
                if run.empty:
                    continue
                depth = run["depth"].to_numpy(dtype=np.float64)
                for column, style in (("clean", "-"), ("corrupt", "--")):
                    mean = run[column].to_numpy(dtype=np.float64)
                    sem = np.nan_to_num(run[f"{column}_sem"].to_numpy(dtype=np.float64))
                    ax.plot(depth, mean, color=colours[arch], linestyle=style, linewidth=1.6 if style == "-" else 1.2,
                            marker=marker, markersize=2.5)
                    ax.fill_between(depth, mean - sem, mean + sem, color=colours[arch],
                                    alpha=0.18 if style == "-" else 0.1, linewidth=0)
                point = decision_point(run["clean"].to_numpy())
                if point is not None:
                    at = run.iloc[point]
                    ax.plot([at["depth"]], [at["clean"]], marker="D", markersize=7, color=colours[arch],
                            markeredgecolor="black", markeredgewidth=0.9, linestyle="none", zorder=5)
                n_layers = int(run["point"].max())
                decided = "no decision" if point is None else f"decides at {point}/{n_layers}"
                handles.append(Line2D([], [], color=colours[arch], linewidth=1.6,
                                      label=f"{arch}: {n_layers} layers, {counted(run['n_pairs'].iloc[0], 'pair')},"
                                            f" {decided}"))
            ax.axhline(0, color="0.4", linewidth=0.7)
            ax.grid(True, color="0.93", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_xlim(-0.02, 1.02)
            ax.set_xlabel("depth (residual point / layers)\n0 = embeddings, 1 = model output")
            ax.set_title(_model_label(recipe, paradigm, multi_paradigm))
            if handles:
                ax.legend(handles=handles, loc="upper left", fontsize=7, frameon=False, handlelength=1.5)
            else:
                ax.text(0.5, 0.5, "no model", ha="center", va="center", color="0.4", transform=ax.transAxes)
        axes[0].set_ylabel("label logit difference (logits)\nlogit(phishing) − logit(legitimate)")
        low, high = axes[0].get_ylim()  # headroom for the legend
        axes[0].set_ylim(low, high + (high - low) * 0.08 * len(archs))
        style_handles = [
            Line2D([], [], color="0.3", linewidth=1.6, label="clean prompt (cue present)"),
            Line2D([], [], color="0.3", linewidth=1.2, linestyle="--",
                   label="corrupted (cue replaced by a benign phrase)"),
            Patch(facecolor="0.3", alpha=0.2, label="±1 standard error over pairs"),
            Line2D([], [], color="0.6", marker="D", markeredgecolor="black", linestyle="none", markersize=6,
                   label="decision point: clean mean above ½ of its final value from here on"),
        ]
        fig.legend(handles=style_handles, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Logit lens: the label logit difference read off the residual stream at the answer position\n"
                     "mean over minimal pairs, through the model's final norm", x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


# --- 2. direct logit attribution ---------------------------------------------------------------


def dla_means(dla: pd.DataFrame) -> pd.DataFrame:
    """Per model and component (embed, head, mlp) the mean over pairs of DLA(clean) - DLA(corrupted)."""
    _require(dla, [*RUN_KEYS, "pair_id", "component", "layer", "head", "clean", "corrupt"], "DLA table")
    unknown = sorted(set(dla["component"]) - {"embed", "head", "mlp"})
    if unknown:
        raise ValueError(f"DLA table has unknown component(s) {unknown}; expected embed, head, mlp")
    diff = dla.assign(diff=dla["clean"] - dla["corrupt"])
    return diff.groupby([*MODEL_KEYS, "component", "layer", "head"], sort=False)["diff"].mean().reset_index()


def _dla_matrix(means: pd.DataFrame, n_layers: int, n_heads: int) -> np.ndarray:
    """Rows: embed, layer 0, ...; columns: heads, a gap, then MLP (the embed row's value sits there)."""
    matrix = np.full((n_layers + 1, n_heads + 2), np.nan)
    for row in means.itertuples(index=False):
        if row.component == "embed":
            matrix[0, n_heads + 1] = row.diff
        elif row.component == "mlp":
            matrix[int(row.layer) + 1, n_heads + 1] = row.diff
        else:
            matrix[int(row.layer) + 1, int(row.head)] = row.diff
    return matrix


def plot_logit_lens_dla(
    dla: pd.DataFrame, stem: str | os.PathLike, recipes: Sequence[str] | None = RECIPES
) -> list[Path]:
    """Direct logit attribution of the cue per attention head and MLP: rows = archs, columns = recipes.

    Each panel is a layer x head heatmap of the mean over pairs of DLA(clean) - DLA(corrupted), in
    logits, at the answer position; the column on the right holds each layer's MLP and, in the top
    row, the embeddings. One colour scale per arch (its logit scale is its own).
    """
    means = dla_means(dla)
    panels, multi_paradigm = _models(means, recipes, "DLA table")
    archs = _unique_in_order(means["arch"])
    shapes = {}
    for arch in archs:
        heads = means[(means["arch"] == arch) & (means["component"] != "embed")]
        shapes[arch] = (int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1)
    rows_max = max(s[0] for s in shapes.values()) + 1
    cols_max = max(s[1] for s in shapes.values()) + 2
    cell = float(np.clip(5.0 / max(rows_max, cols_max), 0.13, 0.42))
    annotate = rows_max * cols_max <= MAX_ANNOTATED_CELLS
    cmap = mpl.colormaps[DIVERGING].with_extremes(bad="white")

    with mpl.rc_context(_STYLE):
        fig = _new_figure(1.4 + (cell * cols_max + 0.8) * len(panels) + 0.8,
                          0.9 + (cell * rows_max + 0.75) * len(archs))
        axes = fig.subplots(len(archs), len(panels), squeeze=False)
        for i, arch in enumerate(archs):
            n_layers, n_heads = shapes[arch]
            mine = means[means["arch"] == arch]
            norm = _diverging_norm(_symmetric(mine["diff"]))
            image = None
            for j, (recipe, paradigm) in enumerate(panels):
                ax = axes[i, j]
                model = mine[(mine["recipe"] == recipe) & (mine["paradigm"] == paradigm)]
                if model.empty:
                    _empty_panel(ax, f"{arch} · {_model_label(recipe, paradigm, multi_paradigm)}: no model")
                    continue
                matrix = _dla_matrix(model, n_layers, n_heads)
                image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, aspect="auto",
                                  interpolation="none")
                if annotate:
                    _annotate(ax, matrix, cmap, norm, fontsize=6.5)
                ax.axvline(n_heads + 0.5, color="0.5", linewidth=0.6)
                ax.axhline(0.5, color="0.5", linewidth=0.6)
                head_ticks, head_labels = _layer_ticks(n_heads, [str(h) for h in range(n_heads)])
                ax.set_xticks([*head_ticks, n_heads + 1])
                ax.set_xticklabels([*head_labels, "MLP"])
                y_labels = ["embed", *[f"L{layer}" for layer in range(n_layers)]]
                ticks, labels = _layer_ticks(n_layers + 1, y_labels)
                ax.set_yticks(ticks)
                ax.set_yticklabels(labels)
                _heatmap_axes(ax)
                ax.set_title(f"{arch} · {_model_label(recipe, paradigm, multi_paradigm)}")
                if i == len(archs) - 1:
                    ax.set_xlabel("attention head")
                if j == 0:
                    ax.set_ylabel("layer")
            if image is not None:
                colorbar = fig.colorbar(image, ax=list(axes[i]), shrink=0.9, aspect=15, pad=0.02)
                colorbar.set_label("DLA clean − corrupted\n(logits)", fontsize=8)
                colorbar.outline.set_visible(False)
        fig.suptitle("Direct logit attribution of the cue at the answer position\n"
                     "mean over pairs of DLA(clean) − DLA(corrupted) to logit(phishing) − logit(legitimate), per"
                     " head; right column: MLP (top: embeddings)", x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


# --- 3. residual-stream activation patching ----------------------------------------------------


def segment_effects(resid: pd.DataFrame) -> pd.DataFrame:
    """Residual patching aggregated by segment, since positions differ between pairs.

    Per model (arch, recipe, paradigm; seeds pooled), residual point and segment: the mean over the
    model's pairs of the effect (and attribution) summed over the segment's positions. A pair that
    has no position in a segment counts as 0 there; a segment no pair has gets no row.
    """
    _require(resid, [*RUN_KEYS, "pair_id", "point", "segment", "effect", "attribution"], "residual patching table")
    unknown = sorted(set(resid["segment"]) - set(SEGMENTS))
    if unknown:
        raise ValueError(f"residual patching table has unknown segment(s) {unknown}; expected {list(SEGMENTS)}")
    values = ["effect", "attribution"]
    per_pair = resid.groupby([*RUN_KEYS, "pair_id", "point", "segment"], sort=False)[values].sum().reset_index()
    totals = per_pair.groupby([*MODEL_KEYS, "point", "segment"], sort=False)[values].sum().reset_index()
    n_pairs = _n_pairs(resid).rename("n_pairs").reset_index()
    out = totals.merge(n_pairs, on=list(MODEL_KEYS), how="left")
    out[values] = out[values].div(out["n_pairs"], axis=0)
    order = out["segment"].map({s: k for k, s in enumerate(SEGMENTS)})
    return (out.assign(_order=order).sort_values([*MODEL_KEYS, "point", "_order"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def _point_labels(n_points: int) -> list[str]:
    last = n_points - 1
    return [f"{p} embed" if p == 0 else f"{p} output" if p == last else str(p) for p in range(n_points)]


def plot_patching_resid(
    resid: pd.DataFrame, stem: str | os.PathLike, recipes: Sequence[str] | None = RECIPES
) -> list[Path]:
    """Activation patching of the residual stream, aggregated by prompt segment.

    Rows of each heatmap: residual point (0 = embeddings, top); columns: the prompt's segments in
    order; cell: the mean over pairs of the normalised effect of restoring the clean residual at one
    position, summed over the segment's positions. Grid: rows = archs, columns = recipes. One
    colour scale for every panel (normalised effects compare across models).
    """
    cells = segment_effects(resid)
    panels, multi_paradigm = _models(cells, recipes, "residual patching table")
    archs = _unique_in_order(cells["arch"])
    n_points = {arch: int(cells.loc[cells["arch"] == arch, "point"].max()) + 1 for arch in archs}
    rows_max = max(n_points.values())
    cell_h = float(np.clip(4.2 / rows_max, 0.16, 0.34))
    cell_w = 0.62
    annotate = rows_max <= 50
    cmap = mpl.colormaps[DIVERGING].with_extremes(bad="0.9")
    shown = cells[cells["recipe"].isin([r for r, _ in panels])]
    norm = _diverging_norm(_symmetric(shown["effect"], floor=1.0))

    with mpl.rc_context(_STYLE):
        fig = _new_figure(1.0 + (cell_w * len(SEGMENTS) + 0.9) * len(panels) + 0.9,
                          1.5 + (cell_h * rows_max + 0.75) * len(archs))
        axes = fig.subplots(len(archs), len(panels), squeeze=False)
        image = None
        for i, arch in enumerate(archs):
            for j, (recipe, paradigm) in enumerate(panels):
                ax = axes[i, j]
                model = cells[(cells["arch"] == arch) & (cells["recipe"] == recipe) & (cells["paradigm"] == paradigm)]
                title = f"{arch} · {_model_label(recipe, paradigm, multi_paradigm)}"
                if model.empty:
                    _empty_panel(ax, f"{title}: no model")
                    continue
                matrix = (model.pivot(index="point", columns="segment", values="effect")
                          .reindex(index=range(n_points[arch]), columns=list(SEGMENTS)).to_numpy(dtype=np.float64))
                image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, aspect="auto",
                                  interpolation="none")
                if annotate:
                    _annotate(ax, matrix, cmap, norm, fontsize=7 if cell_h >= 0.24 else 5.5)
                ax.set_xticks(range(len(SEGMENTS)))
                ax.set_xticklabels([SEGMENT_LABELS[s] for s in SEGMENTS], fontsize=7)
                ticks, labels = _layer_ticks(n_points[arch], _point_labels(n_points[arch]))
                ax.set_yticks(ticks)
                ax.set_yticklabels(labels)
                _heatmap_axes(ax)
                ax.set_title(f"{title} ({counted(model['n_pairs'].iloc[0], 'pair')})")
                if j == 0:
                    ax.set_ylabel("residual point (layer)")
        if image is not None:
            colorbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=min(0.8, 3.5 / fig.get_figheight()),
                                    aspect=18, pad=0.02)
            colorbar.set_label(f"summed {EFFECT_UNITS}")
            colorbar.outline.set_visible(False)
        fig.suptitle("Activation patching of the residual stream: where the cue's information sits, layer by layer\n"
                     "clean residual restored at one position of the corrupted run; effect summed over the"
                     " segment's positions, mean over pairs", x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


# --- 4. head activation patching ---------------------------------------------------------------


def head_means(heads: pd.DataFrame) -> pd.DataFrame:
    """Per model and head: mean over pairs of the normalised effect and its attribution estimate."""
    _require(heads, [*RUN_KEYS, "pair_id", "layer", "head", "effect", "attribution"], "head patching table")
    return (heads.groupby([*MODEL_KEYS, "layer", "head"], sort=False)[["effect", "attribution"]].mean()
            .reset_index())


def plot_patching_heads(
    heads: pd.DataFrame, stem: str | os.PathLike, recipes: Sequence[str] | None = RECIPES
) -> list[Path]:
    """Head importance by activation patching: per arch (rows), layer x head heatmaps of the mean
    normalised effect for each recipe, then the first recipe minus the second, on the same scale."""
    means = head_means(heads)
    if recipes is None or len(recipes) != 2:
        raise ValueError(f"the head-patching figure compares two recipes (specialist, generalist); got {recipes}")
    panels, multi_paradigm = _models(means, recipes, "head patching table")
    paradigms = list(dict.fromkeys(p for _, p in panels))
    first, second = recipes
    columns = [(kind, paradigm) for paradigm in paradigms for kind in (first, second, "difference")]
    archs = _unique_in_order(means["arch"])
    shapes = {arch: (int(means.loc[means["arch"] == arch, "layer"].max()) + 1,
                     int(means.loc[means["arch"] == arch, "head"].max()) + 1) for arch in archs}
    rows_max = max(s[0] for s in shapes.values())
    cols_max = max(s[1] for s in shapes.values())
    cell = float(np.clip(4.5 / max(rows_max, cols_max), 0.12, 0.42))
    annotate = rows_max * cols_max <= MAX_ANNOTATED_CELLS
    cmap = mpl.colormaps[DIVERGING].with_extremes(bad="0.9")
    shown = means[means["recipe"].isin(recipes)]

    matrices = {}
    for arch in archs:
        for paradigm in paradigms:
            for recipe in (first, second):
                model = shown[(shown["arch"] == arch) & (shown["recipe"] == recipe) & (shown["paradigm"] == paradigm)]
                if not model.empty:
                    matrices[(arch, recipe, paradigm)] = _layer_head_matrix(model, "effect", *shapes[arch])
            if (arch, first, paradigm) in matrices and (arch, second, paradigm) in matrices:
                matrices[(arch, "difference", paradigm)] = (matrices[(arch, first, paradigm)]
                                                            - matrices[(arch, second, paradigm)])
    # One scale for effects and differences: both are in normalised units, and a scale of its own
    # would blow noise-sized differences up to full colour.
    norm = _diverging_norm(_symmetric(np.concatenate([m.ravel() for m in matrices.values()]) if matrices else []))
    with mpl.rc_context(_STYLE):
        fig = _new_figure(1.2 + (cell * cols_max + 0.7) * len(columns) + 1.6,
                          1.4 + (cell * rows_max + 0.75) * len(archs))
        axes = fig.subplots(len(archs), len(columns), squeeze=False)
        image = None
        for i, arch in enumerate(archs):
            n_layers, n_heads = shapes[arch]
            for j, (kind, paradigm) in enumerate(columns):
                ax = axes[i, j]
                name = f"{first} − {second}" if kind == "difference" else kind
                title = f"{arch} · {_model_label(name, paradigm, multi_paradigm)}"
                matrix = matrices.get((arch, kind, paradigm))
                if matrix is None:
                    _empty_panel(ax, f"{title}: no model")
                    continue
                image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, aspect="auto",
                                  interpolation="none")
                if annotate:
                    _annotate(ax, matrix, cmap, norm, fontsize=6.5)
                ticks, labels = _layer_ticks(n_heads, [str(h) for h in range(n_heads)])
                ax.set_xticks(ticks)
                ax.set_xticklabels(labels)
                ticks, labels = _layer_ticks(n_layers, [f"L{layer}" for layer in range(n_layers)])
                ax.set_yticks(ticks)
                ax.set_yticklabels(labels)
                _heatmap_axes(ax)
                ax.set_title(title, fontsize=9)
                if i == len(archs) - 1:
                    ax.set_xlabel("attention head")
                if j == 0:
                    ax.set_ylabel("layer")
        if image is not None:
            colorbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=min(0.8, 3.5 / fig.get_figheight()),
                                    aspect=18, pad=0.02)
            colorbar.set_label(f"mean {EFFECT_UNITS}\n(difference column: {first} − {second})", fontsize=8)
            colorbar.outline.set_visible(False)
        fig.suptitle("Activation patching of attention heads: the clean output of one head (all positions)\n"
                     "restored in the corrupted run; mean normalised effect over pairs (0 = corrupted, 1 = clean)",
                     x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


# --- 5. attribution vs activation patching -----------------------------------------------------


def _pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _thin(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most `n` rows, keeping the half with the largest |effect| and a seeded sample of the rest."""
    if len(frame) <= n:
        return frame
    order = frame["effect"].abs().sort_values(ascending=False, kind="stable").index
    top = frame.loc[order[: n // 2]]
    rest = frame.loc[order[n // 2 :]].sample(n - n // 2, random_state=0)
    return pd.concat([top, rest])


def scatter_limits(values: np.ndarray, quantile: float = 0.002) -> tuple[float, float]:
    """Axis limits of the attribution scatter: the [quantile, 1 - quantile] range of every value,
    stretched to hold 0 and 1 (corrupted and clean), so a few wild estimates cannot squash the rest."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return -0.05, 1.05
    low = min(float(np.quantile(values, quantile)), 0.0)
    high = max(float(np.quantile(values, 1 - quantile)), 1.0)
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def plot_patching_attribution(
    resid: pd.DataFrame,
    heads: pd.DataFrame,
    stem: str | os.PathLike,
    recipes: Sequence[str] | None = RECIPES,
) -> list[Path]:
    """Attribution patching (first-order estimate) against activation patching, one panel per arch.

    Each point is one pair's cell: a (residual point, position) or a head, in normalised units.
    Colour: recipe; marker: residual cell (circle) or head (triangle). The legend gives Pearson's r
    of every recipe and kind, computed on all cells. The axes span all but the most extreme 0.2% of
    values at either end (see `scatter_limits`); points beyond are drawn hollow on the border.
    Very large tables are thinned for drawing only.
    """
    _require(resid, [*RUN_KEYS, "pair_id", "point", "position", "effect", "attribution"], "residual patching table")
    _require(heads, [*RUN_KEYS, "pair_id", "layer", "head", "effect", "attribution"], "head patching table")
    both = pd.concat([resid.assign(kind="resid"), heads.assign(kind="head")], ignore_index=True)
    panels, multi_paradigm = _models(both, recipes, "patching tables")
    archs = _unique_in_order(both["arch"])
    colours = recipe_colours(panels if multi_paradigm else [r for r, _ in panels])
    kinds = {"resid": ("o", "residual (point, position)"), "head": ("^", "head")}

    with mpl.rc_context(_STYLE):
        fig = _new_figure(0.6 + 3.4 * len(archs), 4.3)
        axes = fig.subplots(1, len(archs), squeeze=False)[0]
        for ax, arch in zip(axes, archs, strict=True):
            mine = both[(both["arch"] == arch) & both["recipe"].isin([r for r, _ in panels])]
            if mine.empty:
                _empty_panel(ax, f"{arch}: no model")
                continue
            low, high = scatter_limits(mine[["effect", "attribution"]].to_numpy())
            handles = []
            n_outside = 0
            for recipe, paradigm in panels:
                colour = colours[(recipe, paradigm) if multi_paradigm else recipe]
                for kind, (marker, what) in kinds.items():
                    cells = mine[(mine["recipe"] == recipe) & (mine["paradigm"] == paradigm) & (mine["kind"] == kind)]
                    if cells.empty:
                        continue
                    drawn = _thin(cells, MAX_SCATTER_POINTS)
                    x, y = drawn["effect"].to_numpy(dtype=np.float64), drawn["attribution"].to_numpy(dtype=np.float64)
                    outside = (x < low) | (x > high) | (y < low) | (y > high)
                    n_outside += int(((cells["effect"] < low) | (cells["effect"] > high) | (cells["attribution"] < low)
                                      | (cells["attribution"] > high)).sum())
                    size = 9 if kind == "resid" else 22
                    ax.scatter(x[~outside], y[~outside], s=size, marker=marker, color=colour,
                               alpha=0.35 if kind == "resid" else 0.7, linewidths=0, rasterized=True,
                               zorder=2 if kind == "resid" else 3)
                    ax.scatter(np.clip(x[outside], low, high), np.clip(y[outside], low, high), s=size * 1.6,
                               marker=marker, facecolors="none", edgecolors=colour, linewidths=0.8, clip_on=False,
                               zorder=4)
                    r = _pearson(cells["effect"], cells["attribution"])
                    handles.append(Line2D([], [], color=colour, marker=marker, linestyle="none", markersize=5,
                                          label=f"{_model_label(recipe, paradigm, multi_paradigm)}, {what}:"
                                                f" r = {r:.2f} (n = {len(cells):,})"))
            ax.plot([low, high], [low, high], color="0.35", linewidth=0.8, linestyle="--", zorder=1)
            ax.axhline(0, color="0.85", linewidth=0.6, zorder=0)
            ax.axvline(0, color="0.85", linewidth=0.6, zorder=0)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(arch)
            if n_outside:
                handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none",
                                      markersize=5, label=f"hollow, on the border: {n_outside:,} cells off the axes"))
            ax.set_xlabel(f"activation patching\n{EFFECT_UNITS}")
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=7, frameon=False,
                      handletextpad=0.3)
        axes[0].set_ylabel("attribution patching (same normalisation)")
        fig.suptitle("Attribution patching (gradient estimate) vs activation patching, per pair and cell\n"
                     "dashed: identity (the estimate is exact); r: Pearson correlation over every cell",
                     x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


# --- 6. attention on a minimal pair ------------------------------------------------------------

_SENTENCEPIECE_SPACE = "\u2581"


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode table (byte-level BPE tokens: "Ġ" is a space)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


_BYTES = _byte_decoder()


def token_scheme(tokens: Sequence[str]) -> str:
    """"sentencepiece" ("▁" marks a space), "bytelevel" ("Ġ" a space, "Ċ" a newline) or "plain"."""
    text = "".join(str(t) for t in tokens)
    if _SENTENCEPIECE_SPACE in text:
        return "sentencepiece"
    if any(ch in text for ch in ("Ġ", "Ċ", "ĉ")) and all(ch in _BYTES for ch in text):
        return "bytelevel"
    return "plain"


def decode_tokens(tokens: Sequence[str], scheme: str) -> str:
    """The text a run of tokens stands for."""
    if scheme == "bytelevel":
        return bytes(_BYTES[ch] for t in tokens for ch in str(t)).decode("utf-8", errors="replace")
    text = "".join(str(t) for t in tokens)
    if scheme == "sentencepiece":
        text = text.replace(_SENTENCEPIECE_SPACE, " ").replace("<0x0A>", "\n").replace("<0x09>", "\t")
    return text


def _phrase(tokens: Sequence[str], scheme: str, width: int = 40) -> str:
    text = " ".join(decode_tokens(tokens, scheme).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def attention_window(keys: Sequence[int], edited: Sequence[int], queries: Sequence[int], context: int = 10) -> list:
    """The key positions an attention panel shows: the edited span with `context` keys either side,
    then the query positions; None marks a gap between the two runs."""
    keys = sorted(set(int(k) for k in keys))
    first_query = min(queries)
    wanted: set[int] = set(int(q) for q in queries)
    if len(edited):
        wanted |= set(range(min(edited) - context, max(edited) + context + 1))
    shown = [k for k in keys if k in wanted]
    out: list = []
    for k in shown:
        if out and out[-1] is not None and k != out[-1] + 1:
            out.append(None)
        out.append(k)
    if out and out[0] is not None and out[0] > 0 and first_query > 0:
        out.insert(0, None)  # keys before the window are not shown
    return out


def shared_pair(models: Sequence[pd.DataFrame]) -> str | None:
    """The first example pair (in the first model's order) that every model has, or None."""
    if not models:
        return None
    common = set.intersection(*(set(m["pair_id"]) for m in models))
    return next((p for p in _unique_in_order(models[0]["pair_id"]) if p in common), None)


def plot_attention_pairs(
    attention: pd.DataFrame,
    stem: str | os.PathLike,
    *,
    recipes: Sequence[str] | None = RECIPES,
    context: int = 10,
) -> list[Path]:
    """Attention of the heads that attend most to the edit on one minimal pair per recipe, clean vs corrupted.

    For one architecture. Rows: (recipe, head), `recipes` first in that order where present, then
    any other; columns: clean and corrupted prompt. Every recipe is shown on the same pair, the
    first example pair they all have (`shared_pair`), or else on its own first example pair.
    Each heatmap shows the last query positions (the question; the bottom row is the answer
    position) against the keys of the edited span with `context` tokens either side and of the
    question. Edited keys are outlined and their labels red; the key labels are written under the
    last head of each recipe (the heads of one pair share them). Colour: the attention weight on a
    square-root scale shared by every panel.
    """
    needed = [*RUN_KEYS, "pair_id", "layer", "head", "query", "key", "clean", "corrupt", "query_token",
              "key_token_clean", "key_token_corrupt", "edited"]
    _require(attention, needed, "attention table")
    archs = _unique_in_order(attention["arch"])
    if len(archs) != 1:
        raise ValueError(f"the attention figure is drawn per architecture; the table holds {archs}")
    arch = archs[0]
    multi_paradigm = attention["paradigm"].nunique() > 1
    present = _unique_in_order(attention["recipe"])
    order = [r for r in (recipes or ()) if r in present] + [r for r in present if r not in (recipes or ())]

    models = {}  # (recipe, paradigm) -> its rows of its first seed
    for recipe in order:
        for paradigm in _unique_in_order(attention.loc[attention["recipe"] == recipe, "paradigm"]):
            model = attention[(attention["recipe"] == recipe) & (attention["paradigm"] == paradigm)]
            models[(recipe, paradigm)] = model[model["seed"] == model["seed"].iloc[0]]
    shared = shared_pair(list(models.values()))

    rows = []  # (model label, pair frame, layer, head, last head of its pair?)
    for (recipe, paradigm), model in models.items():
        pair = model[model["pair_id"] == (shared or model["pair_id"].iloc[0])]
        heads = list(dict.fromkeys(zip(pair["layer"], pair["head"], strict=True)))
        for k, (layer, head) in enumerate(heads):
            rows.append((_model_label(recipe, paradigm, multi_paradigm), pair, int(layer), int(head),
                         k == len(heads) - 1))
    cmap = mpl.colormaps[ATTENTION_CMAP].with_extremes(bad="white")
    norm = PowerNorm(0.5, vmin=0.0, vmax=1.0)

    layouts = []
    for _, pair, layer, head, _ in rows:
        cells = pair[(pair["layer"] == layer) & (pair["head"] == head)]
        queries = sorted(cells["query"].unique())
        edited = sorted(cells.loc[cells["edited"].astype(bool), "key"].unique())
        window = attention_window(cells["key"].unique(), edited, queries, context)
        layouts.append((cells, queries, edited, window))
    width = max(len(w) for *_, w in layouts)
    n_queries = max(len(q) for _, q, _, _ in layouts)
    n_labelled = sum(last for *_, last in rows)
    cell_w, cell_h = 0.15, 0.16

    with mpl.rc_context(_STYLE):
        fig = _new_figure(2 * (1.0 + cell_w * width) + 0.9,
                          1.1 + len(rows) * (cell_h * n_queries + 0.5) + n_labelled * 0.75)
        axes = fig.subplots(len(rows), 2, squeeze=False)
        image = None
        for i, ((label, _, layer, head, last), (cells, queries, edited, window)) in enumerate(
                zip(rows, layouts, strict=True)):
            tokens = cells.drop_duplicates("key").set_index("key")
            scheme = token_scheme([*tokens["key_token_clean"], *tokens["key_token_corrupt"]])
            phrases = {
                side: _phrase(tokens.loc[edited, f"key_token_{side}"].tolist(), scheme) if edited else "?"
                for side in ("clean", "corrupt")
            }
            query_labels = cells.drop_duplicates("query").set_index("query")["query_token"]
            answer = max(queries)
            for j, side in enumerate(("clean", "corrupt")):
                ax = axes[i, j]
                values = cells.pivot_table(index="query", columns="key", values=side, aggfunc="first")
                values = values.reindex(index=queries)
                matrix = np.full((len(queries), len(window)), np.nan)
                for c, key in enumerate(window):
                    if key is not None and key in values.columns:
                        matrix[:, c] = values[key].to_numpy(dtype=np.float64)
                image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, aspect="auto",
                                  interpolation="none")
                ax.set_xticks(range(len(window)))
                if last:
                    ax.set_xticklabels(
                        ["…" if k is None else token_label(decode_tokens([tokens.loc[k, f"key_token_{side}"]], scheme),
                                                           14) for k in window],
                        rotation=90, fontsize=6.5, family="monospace")
                    for tick, key in zip(ax.get_xticklabels(), window, strict=True):
                        if key is not None and key in edited:
                            tick.set_color(EDIT_COLOUR)
                            tick.set_fontweight("bold")
                else:
                    ax.set_xticklabels([])
                ax.set_yticks(range(len(queries)))
                ax.set_yticklabels([token_label(decode_tokens([query_labels[q]], scheme), 14) for q in queries],
                                   fontsize=6.5, family="monospace")
                ax.get_yticklabels()[-1].set_fontweight("bold")  # the answer position
                columns = [c for c, k in enumerate(window) if k is not None and k in edited]
                for lo, hi in _runs(columns):
                    ax.add_patch(Rectangle((lo - 0.5, -0.5), hi - lo + 1, len(queries), fill=False,
                                           edgecolor=EDIT_COLOUR, linewidth=1.4, zorder=3))
                _heatmap_axes(ax)
                to_edit = float(cells.loc[(cells["query"] == answer) & cells["edited"].astype(bool), side].sum())
                what = "clean" if side == "clean" else "corrupted"
                ax.set_title(f"{label} · L{layer}H{head} · {what}: “{phrases[side]}” · answer → edit"
                             f" {to_edit:.2f}", fontsize=8, loc="left", parse_math=False)
        if image is not None:
            colorbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=min(0.6, 3.0 / fig.get_figheight()),
                                    aspect=20, pad=0.02)
            colorbar.set_label("attention weight (square-root scale)")
            colorbar.set_ticks([0, 0.05, 0.2, 0.5, 1.0])
            colorbar.outline.set_visible(False)
        fig.legend(handles=[Patch(facecolor="none", edgecolor=EDIT_COLOUR, linewidth=1.4,
                                  label="edited key tokens (cue in the clean prompt, benign phrase in the corrupted)")],
                   loc="outside lower center", frameon=False)
        fig.suptitle(f"{arch}: attention of the heads that attend most to the edit, on one minimal pair per recipe\n"
                     f"rows: queries (bottom: the answer position); keys: the edited span ± {context} tokens and the"
                     " question (… = keys not shown); answer → edit: the answer position's attention to the edit",
                     x=0.01, ha="left", fontsize=9)
        return _save(fig, stem)


def _runs(columns: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of column indices as (first, last)."""
    runs: list[tuple[int, int]] = []
    for c in columns:
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    return runs



def plot_no_pairs(stem: str | os.PathLike, what: str) -> list[Path]:
    """The figure of an analysis with no pair to show: no edit moved any model by `min_effect`.

    The workflow still needs the file, and a reader should learn why it has no data rather than
    find the figure missing; circuits_pairs.csv holds the counts.
    """
    with mpl.rc_context(_STYLE):
        fig = _new_figure(6.0, 1.6)
        ax = fig.subplots()
        _empty_panel(ax, f"{what}: no minimal pair changed the label logit difference by circuits.min_effect or more,\n"
                         "so no pair was analysed (see results/tables/circuits_pairs.csv for the counts)")
        return _save(fig, stem)
