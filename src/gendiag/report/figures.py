"""The study's figures: one function per figure, each writing ``{stem}.pdf`` and ``{stem}.png``.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather than through
``pyplot``: no global figure registry to leak from in a long workflow job, and importing this
module never switches the backend of a notebook that uses it.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from gendiag.io import atomic_path

PNG_DPI = 150
ZEROSHOT = "zeroshot"
NO_RECIPE = "none"

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # embed TrueType so the PDF text stays editable and searchable
}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, stem: str | os.PathLike) -> list[Path]:
    stem = Path(stem)
    paths = []
    for ext, kwargs in ((".pdf", {}), (".png", {"dpi": PNG_DPI})):
        path = stem.with_name(stem.name + ext)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext[1:], bbox_inches="tight", pad_inches=0.05, **kwargs)
        paths.append(path)
    return paths


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what} is missing column(s) {missing}; expected {list(columns)}, got {list(df.columns)}"
        )
    if df.empty:
        raise ValueError(f"{what} is empty; nothing to plot")


def _unique_in_order(values: pd.Series) -> list:
    return list(dict.fromkeys(values.tolist()))


def _ordered(present: list, order: Sequence | None, name: str) -> list:
    """`present` rearranged to follow `order`; values `order` does not name go last, as found."""
    if order is None:
        return present
    unknown = [v for v in order if v not in present]
    if unknown:
        raise ValueError(f"{name} names {unknown}, which are not in the table; present: {present}")
    return list(order) + [v for v in present if v not in order]


def _run_label(parts: Sequence[str]) -> str:
    return " · ".join(str(p) for p in parts)


# --- cross-dataset heatmap ---------------------------------------------------------------------


def plot_cross_dataset_f1(
    cross: pd.DataFrame,
    stem: str | os.PathLike,
    *,
    recipe_order: Sequence[str] | None = None,
    testset_order: Sequence[str] | None = None,
) -> list[Path]:
    """Heatmap of F1 for every model (arch x recipe [x paradigm]) on every test set.

    Rows keep the order in which archs, recipes and paradigms first appear in `cross` (or
    `recipe_order`, e.g. the config's), except that each arch's zero-shot row comes first; columns
    follow `testset_order` or first appearance. Cells show the mean F1 over seeds, with the mean
    of the per-seed bootstrap CI bounds below it; in-domain cells are outlined.
    """
    needed = ["arch", "recipe", "paradigm", "seed", "testset", "in_domain", "f1", "f1_ci_low", "f1_ci_high"]
    _require(cross, needed, "cross-dataset table")

    keys = ["arch", "recipe", "paradigm"]
    cells = (
        cross.groupby([*keys, "testset"], sort=False)
        .agg(
            f1=("f1", "mean"),
            lo=("f1_ci_low", "mean"),
            hi=("f1_ci_high", "mean"),
            in_domain=("in_domain", "any"),
            n_seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    archs = _unique_in_order(cross["arch"])
    testsets = _ordered(_unique_in_order(cross["testset"]), testset_order, "testset_order")
    recipes = _ordered(_unique_in_order(cross["recipe"]), recipe_order, "recipe_order")
    multi_paradigm = cross.loc[cross["paradigm"] != ZEROSHOT, "paradigm"].nunique() > 1

    rows: list[tuple] = []
    for arch in archs:
        runs = cells.loc[cells["arch"] == arch, keys].drop_duplicates()
        runs = runs.assign(
            _zs=runs["paradigm"] != ZEROSHOT,  # False sorts first: zero-shot on top
            _recipe=runs["recipe"].map({r: k for k, r in enumerate(recipes)}),
        )
        runs = runs.sort_values(["_zs", "_recipe"], kind="stable")
        rows += [tuple(r) for r in runs[keys].itertuples(index=False)]

    def label(arch: str, recipe: str, paradigm: str) -> str:
        if paradigm == ZEROSHOT:
            return _run_label([arch, "zero-shot"])
        return _run_label([arch, recipe, paradigm] if multi_paradigm else [arch, recipe])

    row_index = {r: i for i, r in enumerate(rows)}
    col_index = {t: j for j, t in enumerate(testsets)}
    shape = (len(rows), len(testsets))
    f1 = np.full(shape, np.nan)
    lo = np.full(shape, np.nan)
    hi = np.full(shape, np.nan)
    in_domain = np.zeros(shape, dtype=bool)
    for c in cells.itertuples(index=False):
        i, j = row_index[(c.arch, c.recipe, c.paradigm)], col_index[c.testset]
        f1[i, j], lo[i, j], hi[i, j], in_domain[i, j] = c.f1, c.lo, c.hi, c.in_domain

    labels = [label(*r) for r in rows]
    cell_w, cell_h = 1.2, 0.46
    # Size the figure from its content so cells keep the same size whatever the label lengths.
    label_w = 0.4 + 0.065 * max(len(t) for t in labels)
    long_names = 0.062 * max(len(str(t)) for t in testsets) > cell_w - 0.08

    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.88")
    norm = Normalize(0.0, 1.0)
    with mpl.rc_context(_STYLE):
        fig = _new_figure(label_w + cell_w * len(testsets) + 1.0, 1.6 + cell_h * len(rows))
        ax = fig.add_subplot()
        image = ax.imshow(np.ma.masked_invalid(f1), cmap=cmap, norm=norm, aspect="auto", interpolation="none")

        for i in range(shape[0]):
            for j in range(shape[1]):
                if np.isnan(f1[i, j]):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="0.35")
                    continue
                # Dark text on the bright (yellow) end of viridis, light text on the dark end.
                r, g, b, _ = cmap(norm(f1[i, j]))
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i - 0.11, f"{f1[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        fontweight="bold", color=ink)
                if not np.isnan(lo[i, j]):
                    ax.text(j, i + 0.22, f"[{lo[i, j]:.2f}, {hi[i, j]:.2f}]", ha="center", va="center",
                            fontsize=6.5, color=ink)
                if in_domain[i, j]:
                    # Inset a little so neighbouring in-domain cells keep separate outlines.
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                           edgecolor="black", linewidth=2.2, zorder=3, clip_on=False))

        boundaries = [i for i in range(1, len(rows)) if rows[i][0] != rows[i - 1][0]]
        for b in boundaries:
            ax.axhline(b - 0.5, color="white", linewidth=3, zorder=4)

        ax.set_xticks(range(len(testsets)))
        ax.set_xticklabels(testsets, rotation=25 if long_names else 0, ha="left" if long_names else "center",
                           rotation_mode="anchor")
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        ax.set_xlabel("test set")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels)
        ax.set_ylabel("model · training set" + (" · paradigm" if multi_paradigm else ""))
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)

        # A colour bar of about 3.5 in whatever the number of rows: long enough to read, never huge.
        shrink = float(min(0.9, 3.5 / (cell_h * len(rows))))
        colorbar = fig.colorbar(image, ax=ax, shrink=shrink, aspect=20, pad=0.02)
        colorbar.set_label("F1 (malicious class)")
        colorbar.outline.set_visible(False)

        fig.legend(
            handles=[Patch(facecolor="none", edgecolor="black", linewidth=2.2,
                           label="in-domain test set (drawn from the training set's corpora)")],
            loc="outside lower center", frameon=False, handlelength=1.4, handleheight=1.1,
            title=_seed_note(cells), title_fontsize=8,
        )
        ax.set_title("Cross-dataset generalisation: F1 per model and test set", pad=8)
        return _save(fig, stem)


def _seed_note(cells: pd.DataFrame) -> str:
    tuned = cells.loc[cells["paradigm"] != ZEROSHOT, "n_seeds"]
    counts = sorted((tuned if len(tuned) else cells["n_seeds"]).unique())
    many = counts[-1] > 1
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    note = f"Cell: mean F1 over {seeds} seed{'s' if many else ''}" if many else "Cell: F1"
    note += "; brackets: 95% bootstrap CI" + (" (mean of per-seed bounds)" if many else "")
    return note


# --- training curves ---------------------------------------------------------------------------


def ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as TensorBoard), so early steps are not pulled to 0."""
    out = np.empty(len(values), dtype=np.float64)
    acc, weight = 0.0, 0.0
    for k, v in enumerate(values):
        acc = smoothing * acc + (1.0 - smoothing) * v
        weight = smoothing * weight + (1.0 - smoothing)
        out[k] = acc / weight
    return out


def _smoothing_for(n_points: int) -> float:
    # Memory of about a thirtieth of the run: the trend shows without lagging the raw curve.
    return float(np.clip(1.0 - 30.0 / max(n_points, 1), 0.0, 0.95))


# One colour per recipe role in every figure, so a reader can carry it from one plot to the next.
ROLE_COLOURS = {"specialist": "#E07B39", "generalist": "#3A7DBA"}


def recipe_colours(keys: Sequence) -> dict:
    """Colours for line keys whose first element is a recipe.

    A study role (specialist, generalist) keeps its colour when it names a single line; everything
    else takes the next tab10 colour that no role uses.
    """
    recipes = [key[0] if isinstance(key, tuple) else key for key in keys]
    lines_per_recipe = Counter(recipes)
    reserved = {colour.upper() for colour in ROLE_COLOURS.values()}
    palette = itertools.cycle(mpl.colormaps["tab10"].colors)
    free = (c for c in palette if mpl.colors.to_hex(c).upper() not in reserved)
    return {
        key: ROLE_COLOURS[recipe] if recipe in ROLE_COLOURS and lines_per_recipe[recipe] == 1 else next(free)
        for key, recipe in zip(keys, recipes, strict=True)
    }


def plot_training_curves(curves: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Training loss per optimizer step: one panel per arch, one colour per recipe (x paradigm).

    The faint line is the raw loss (mean over seeds when there are several), the solid line its
    bias-corrected EMA; ``val_loss``, when present, is drawn as dashed markers. The y axis is
    logarithmic when the loss spans more than a decade. An ``lr`` column is accepted and ignored.
    """
    _require(curves, ["arch", "recipe", "paradigm", "seed", "step", "loss"], "training-curve table")
    has_val = "val_loss" in curves.columns and curves["val_loss"].notna().any()
    archs = _unique_in_order(curves["arch"])
    multi_paradigm = curves["paradigm"].nunique() > 1
    line_keys = list(dict.fromkeys(zip(curves["recipe"], curves["paradigm"], strict=True)))
    colours = recipe_colours(line_keys)
    n_seeds = curves.groupby(["arch", "recipe", "paradigm"])["seed"].nunique()

    value_cols = ["loss", "val_loss"] if has_val else ["loss"]
    mean_curves = (
        curves.groupby(["arch", "recipe", "paradigm", "step"], sort=False)[value_cols].mean().reset_index()
    )
    positive = pd.concat([mean_curves[c] for c in value_cols]).dropna()
    positive = positive[positive > 0]
    log_y = len(positive) > 0 and positive.max() / positive.min() > 10.0

    with mpl.rc_context(_STYLE):
        fig = _new_figure(0.6 + 3.4 * len(archs), 3.3)
        axes = fig.subplots(1, len(archs), sharey=True, squeeze=False)[0]
        for ax, arch in zip(axes, archs, strict=True):
            for key in line_keys:
                run = mean_curves[(mean_curves["arch"] == arch)
                                  & (mean_curves["recipe"] == key[0])
                                  & (mean_curves["paradigm"] == key[1])].sort_values("step")
                if run.empty:
                    continue
                train = run.dropna(subset=["loss"])
                steps, loss = train["step"].to_numpy(), train["loss"].to_numpy(dtype=np.float64)
                ax.plot(steps, loss, color=colours[key], alpha=0.25, linewidth=0.8)
                smoothing = _smoothing_for(len(loss))
                # On a log axis, smooth the log: an arithmetic mean is dominated by the spikes.
                trend = np.exp(ema(np.log(np.clip(loss, 1e-12, None)), smoothing)) if log_y else ema(loss, smoothing)
                ax.plot(steps, trend, color=colours[key], linewidth=1.6)
                if has_val:
                    val = run.dropna(subset=["val_loss"])
                    ax.plot(val["step"], val["val_loss"], color=colours[key], linestyle="--",
                            marker="o", markersize=3, linewidth=1.0)
            ax.set_title(arch)
            ax.set_xlabel("optimizer step")
            ax.grid(True, which="major", color="0.92", linewidth=0.6)
            ax.set_axisbelow(True)
            if log_y:
                ax.set_yscale("log")
        axes[0].set_ylabel("loss" + (" (log scale)" if log_y else ""))

        handles = [
            Line2D([], [], color=colours[key], linewidth=1.6,
                   label=_run_label(key if multi_paradigm else key[:1])) for key in line_keys
        ]
        handles += [
            Line2D([], [], color="0.3", alpha=0.3, linewidth=0.8, label="raw (answer token, full vocabulary)"),
            Line2D([], [], color="0.3", linewidth=1.6, label="EMA-smoothed"),
        ]
        if has_val:
            handles.append(Line2D([], [], color="0.3", linestyle="--", marker="o", markersize=3,
                                  linewidth=1.0, label="validation (2-way, label words)"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        seeds = sorted(n_seeds.unique())
        seed_note = "" if seeds == [1] else f" (mean over {seeds[-1]} seeds)" if len(seeds) == 1 else (
            " (mean over seeds)"
        )
        fig.suptitle(f"Fine-tuning loss{seed_note}", x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


# --- generalisation gap ------------------------------------------------------------------------


def plot_generalisation_gap(gap: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Specialist vs generalist F1 per arch: out of domain (solid) and in domain (hatched).

    `gap` is the output of `generalisation_gap_table`; the out-of-domain difference
    (generalist - specialist) is written above each pair.
    """
    needed = ["arch", "paradigm", "specialist", "generalist", "n_testsets_out_of_domain",
              "specialist_ood_f1", "generalist_ood_f1", "delta_f1",
              "specialist_in_domain_f1", "generalist_in_domain_f1"]
    _require(gap, needed, "generalisation-gap table")
    specialist, generalist = str(gap["specialist"].iloc[0]), str(gap["generalist"].iloc[0])
    multi_paradigm = gap["paradigm"].nunique() > 1
    groups = [f"{r.arch}\n{r.paradigm}" if multi_paradigm else str(r.arch) for r in gap.itertuples()]

    colour = ROLE_COLOURS
    bars = [  # (column, recipe role, in-domain?)
        ("specialist_ood_f1", "specialist", False),
        ("generalist_ood_f1", "generalist", False),
        ("specialist_in_domain_f1", "specialist", True),
        ("generalist_in_domain_f1", "generalist", True),
    ]
    width = 0.19
    offsets = np.array([-1.5, -0.5, 0.5, 1.5]) * width + np.array([-0.03, -0.03, 0.03, 0.03])
    x = np.arange(len(gap))

    with mpl.rc_context(_STYLE):
        fig = _new_figure(1.6 + 1.35 * len(gap), 3.6)
        ax = fig.add_subplot()
        for (column, role, in_dom), offset in zip(bars, offsets, strict=True):
            values = gap[column].to_numpy(dtype=np.float64)
            ax.bar(x + offset, np.nan_to_num(values), width, color=colour[role],
                   alpha=0.45 if in_dom else 1.0, hatch="///" if in_dom else None,
                   edgecolor=colour[role] if in_dom else "none", linewidth=0.0)
            for xi, v in zip(x + offset, values, strict=True):
                if not np.isnan(v):
                    ax.text(xi, v + 0.012, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5, color="0.2")

        for xi, row in zip(x, gap.itertuples(), strict=True):
            if np.isnan(row.delta_f1):
                continue
            left, right = xi + offsets[0], xi + offsets[1]
            # Clear of the value labels (which reach ~0.05 above the bars).
            top = np.nanmax([row.specialist_ood_f1, row.generalist_ood_f1]) + 0.1
            ax.plot([left, left, right, right], [top - 0.025, top, top, top - 0.025], color="0.2",
                    linewidth=0.8)
            delta = f"Δ {row.delta_f1:+.2f}".replace("-", "\u2212")  # typographic minus
            ax.text((left + right) / 2, top + 0.01, delta, ha="center", va="bottom",
                    fontsize=8, fontweight="bold", color="0.1")

        ax.set_xticks(x)
        ax.set_xticklabels(groups)
        ax.set_xlim(-0.6, len(gap) - 0.4)
        ax.set_ylim(0, 1.24)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("F1 (mean over test sets and seeds)")
        ax.yaxis.grid(True, color="0.92", linewidth=0.6)
        ax.set_axisbelow(True)

        n_ood = sorted(gap["n_testsets_out_of_domain"].unique())
        n_text = str(n_ood[0]) if len(n_ood) == 1 else f"{n_ood[0]}–{n_ood[-1]}"
        n_text += " test set" + ("" if n_ood == [1] else "s")
        handles = [
            Patch(facecolor=colour["specialist"], label=f"{specialist}: out of domain"),
            Patch(facecolor=colour["generalist"], label=f"{generalist}: out of domain"),
            Patch(facecolor=colour["specialist"], alpha=0.45, hatch="///", edgecolor=colour["specialist"],
                  linewidth=0.0, label=f"{specialist}: in domain"),
            Patch(facecolor=colour["generalist"], alpha=0.45, hatch="///", edgecolor=colour["generalist"],
                  linewidth=0.0, label=f"{generalist}: in domain"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        ax.set_title(
            f"Training-set diversity and generalisation: {generalist} vs {specialist}\n"
            f"out of domain = the {n_text} outside {specialist}'s corpora; "
            f"Δ = {generalist} − {specialist}",
            loc="left", fontsize=9,
        )
        return _save(fig, stem)
