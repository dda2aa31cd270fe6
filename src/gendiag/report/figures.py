"""The study's figures: one function per figure, each writing ``{stem}.pdf`` and ``{stem}.png``.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather than through
``pyplot``: no global figure registry to leak from in a long workflow job, and importing this
module never switches the backend of a notebook that uses it.
"""

from __future__ import annotations

import itertools
import os
import textwrap
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
MIN_COLOUR_DISTANCE = 0.25
"""Least RGB distance between a role colour and another line's colour."""


def recipe_colours(keys: Sequence) -> dict:
    """Colours for line keys whose first element is a recipe.

    A study role (specialist, generalist) keeps its colour when it names a single line; everything
    else takes the next tab10 colour that no role uses.
    """
    recipes = [key[0] if isinstance(key, tuple) else key for key in keys]
    lines_per_recipe = Counter(recipes)
    reserved = [np.array(mpl.colors.to_rgb(colour)) for colour in ROLE_COLOURS.values()]
    # tab10's blue and orange are near the role colours: a specialist line in tab10 blue next to
    # the generalist's blue would read as the same run.
    free = itertools.cycle([c for c in mpl.colormaps["tab10"].colors
                            if min(np.linalg.norm(np.array(c) - r) for r in reserved) > MIN_COLOUR_DISTANCE])
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


# --- data audit --------------------------------------------------------------------------------


def _ink_on(cmap, norm, value: float) -> str:
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _share_label(share: float) -> str:
    # One decimal where it matters (99.6% is not 100%), none for the small off-diagonal cells.
    if share == 0 or share >= 0.1:
        return f"{share:.1%}" if 0 < share < 1 else f"{share:.0%}"
    return "<1%" if share < 0.01 else f"{share:.0%}"


def plot_identifiability(
    raw: dict, normalised: dict, *, stem: str | os.PathLike | None = None
) -> Figure:
    """Corpus-vs-corpus confusion of the source-identifiability probe, before and after normalisation.

    `raw` and `normalised` are `gendiag.data.audit.source_identifiability` results (as in
    `audit_across(...)["identifiability"]`). Rows are the true corpus, normalised to shares; an
    unavailable result gets a panel saying why. Within-label balanced accuracies, when present, are
    listed under the panels. With `stem`, the figure is also written as ``{stem}.pdf`` and ``.png``.
    """
    panels = [("as distributed", raw), ("after normalisation", normalised)]
    available = [r for _, r in panels if r.get("available")]
    if not available:
        raise ValueError("neither identifiability result is available; nothing to plot"
                         f" ({raw.get('reason')}; {normalised.get('reason')})")
    corpora = list(available[-1]["corpora"])
    label_w = 0.35 + 0.07 * max(len(c) for c in corpora)
    cell = 0.62
    side = cell * len(corpora)
    cmap = mpl.colormaps["viridis"]
    norm = Normalize(0.0, 1.0)

    with mpl.rc_context(_STYLE):
        fig = _new_figure(2 * (label_w + side) + 1.3, side + 2.1)
        axes = fig.subplots(1, 2)
        image = None
        for ax, (name, result) in zip(axes, panels, strict=True):
            column = result.get("column")
            heading = f"{name}" + (f" ({column})" if column else "")
            if not result.get("available"):
                ax.set_axis_off()
                reason = textwrap.fill(str(result.get("reason", "")), width=36)
                ax.text(0.5, 0.5, f"{heading}: not available\n{reason}", ha="center", va="center", fontsize=8,
                        color="0.3", transform=ax.transAxes)
                continue
            order = [result["corpora"].index(c) for c in corpora if c in result["corpora"]]
            names = [result["corpora"][k] for k in order]
            counts = np.asarray(result["confusion"], dtype=np.float64)[np.ix_(order, order)]
            shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
            image = ax.imshow(shares, cmap=cmap, norm=norm, interpolation="none")
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, _share_label(shares[i, j]), ha="center", va="center", fontsize=8,
                            color=_ink_on(cmap, norm, shares[i, j]))
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", rotation_mode="anchor")
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names)
            ax.set_xlabel("predicted corpus")
            ax.set_ylabel("true corpus")
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(f"{heading}\naccuracy {result['accuracy']:.3f} (balanced {result['balanced_accuracy']:.3f})"
                         f"\nchance {result['chance']:.3f} (balanced {result['chance_balanced']:.3f})", fontsize=9)
        if image is not None:
            colorbar = fig.colorbar(image, ax=list(axes), shrink=0.8, aspect=18, pad=0.02)
            colorbar.set_label("share of the true corpus's messages")
            colorbar.outline.set_visible(False)

        notes = []
        for label, what in (("0", "legitimate"), ("1", "malicious")):
            parts = []
            for name, result in panels:
                within = (result.get("within_label") or {}).get(label)
                if within and within.get("available"):
                    parts.append(f"{name} {within['balanced_accuracy']:.3f}")
            if parts:
                notes.append(f"within {what} mail only, balanced accuracy: " + ", ".join(parts))
        if notes:
            fig.text(0.5, 0.0, "\n".join(notes), ha="center", va="top", fontsize=8, color="0.25")
        fig.suptitle("Source identifiability: a bag-of-words probe told to name each message's corpus",
                     fontsize=10)
        if stem is not None:
            _save(fig, stem)
        return fig


def plot_data_audit(
    corpus_audits, across: dict | None = None, *, stem: str | os.PathLike | None = None
) -> Figure:
    """One row of panels per audit aspect, one bar group per corpus.

    Panels: duplicates within the corpus (exact, and near including exact, as % of its messages);
    copies shared with other corpora (% of its messages) and test messages with a copy in a train
    split (% of its test split), when `across` has them; estimated label noise (%, with the probe's
    share of messages its out-of-fold prediction disagrees with as a marker: label errors plus the
    probe's own errors); and message length in words (median, p5-p95).
    `corpus_audits` is a list (or {corpus: audit} mapping) of `audit_corpus` results.
    """
    from gendiag.data.audit import audit_table

    audits = list(corpus_audits.values()) if isinstance(corpus_audits, dict) else list(corpus_audits)
    if not audits:
        raise ValueError("no corpus audits given; nothing to plot")
    table = audit_table(audits, across)
    across = across or {}
    corpora = table["corpus"].tolist()
    n = np.array([a["n"] for a in audits], dtype=np.float64)
    y = np.arange(len(corpora))[::-1]
    height = 0.36
    colours = {"exact": "#4C72B0", "near": "#A1BDE0", "cross": "#DD8452", "leak": "#C44E52", "noise": "#55A868"}

    def annotate(ax, xs, ys, labels, xmax):
        for x, yy, text in zip(xs, ys, labels, strict=True):
            ax.text(x + xmax * 0.015, yy, text, va="center", ha="left", fontsize=7, color="0.25")

    def percent_axis(ax, values, title):
        top = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
        xmax = max(top * 1.45, 1.0)
        ax.set_xlim(0, xmax)
        ax.set_title(title, fontsize=9)
        ax.xaxis.grid(True, color="0.92", linewidth=0.6)
        ax.set_axisbelow(True)
        return xmax

    leak = (across.get("train_test_leakage") or {}).get("per_corpus", {})
    shared = (across.get("cross_corpus_duplicates") or {}).get("per_corpus", {})
    show_across = bool(leak or shared)
    n_panels = 4 if show_across else 3
    with mpl.rc_context(_STYLE):
        fig = _new_figure(1.0 + 0.07 * max(len(c) for c in corpora) + 2.35 * n_panels, 1.5 + 0.55 * len(corpora))
        axes = list(fig.subplots(1, n_panels, sharey=True))
        k = 0

        ax = axes[k]
        exact = table["exact_duplicates"].to_numpy(dtype=np.float64)
        near = table["near_duplicates"].to_numpy(dtype=np.float64)
        xmax = percent_axis(ax, 100 * near / n, "duplicates within corpus\n(% of messages)")
        ax.barh(y + height / 2, 100 * exact / n, height, color=colours["exact"], label="exact")
        ax.barh(y - height / 2, 100 * near / n, height, color=colours["near"], label="near (incl. exact)")
        annotate(ax, 100 * exact / n, y + height / 2, [f"{int(v):,}" for v in exact], xmax)
        annotate(ax, 100 * near / n, y - height / 2, [f"{int(v):,}" for v in near], xmax)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False, fontsize=7)
        ax.set_yticks(y)
        ax.set_yticklabels(corpora)
        ax.tick_params(axis="y", length=0)
        k += 1

        if show_across:
            ax = axes[k]
            cross = np.array([shared[c]["near"] if c in shared else np.nan for c in corpora], dtype=np.float64)
            leaks = np.array([leak[c]["near"] if c in leak else np.nan for c in corpora], dtype=np.float64)
            tests = np.array([leak[c]["test_rows"] if c in leak else np.nan for c in corpora], dtype=np.float64)
            cross_pct = 100 * cross / n
            leak_pct = 100 * leaks / np.where(tests > 0, tests, np.nan)
            xmax = percent_axis(ax, np.concatenate([cross_pct, leak_pct]), "copies across sets\n(near incl. exact)")
            ax.barh(y + height / 2, np.nan_to_num(cross_pct), height, color=colours["cross"],
                    label="in another corpus (% of messages)")
            ax.barh(y - height / 2, np.nan_to_num(leak_pct), height, color=colours["leak"],
                    label="test with a copy in a train split (% of test)")
            annotate(ax, np.nan_to_num(cross_pct), y + height / 2,
                     ["n/a" if np.isnan(v) else f"{int(v):,}" for v in cross], xmax)
            annotate(ax, np.nan_to_num(leak_pct), y - height / 2,
                     ["n/a" if np.isnan(v) else f"{int(v):,}" for v in leaks], xmax)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False, fontsize=7)
            k += 1

        ax = axes[k]
        rate = 100 * table["est_label_noise"].to_numpy(dtype=np.float64)
        upper = np.array([
            np.nan if a["label_noise"]["disagreement_rate"] is None else 100 * a["label_noise"]["disagreement_rate"]
            for a in audits
        ])
        xmax = percent_axis(ax, np.concatenate([rate, upper]), "estimated label noise (%)")
        ax.barh(y, np.nan_to_num(rate), 0.55, color=colours["noise"], label="confident learning")
        ax.plot(upper, y, linestyle="none", marker="|", markersize=11, markeredgewidth=1.6, color="0.2",
                label="probe disagrees with label")
        for yy, r, u, audit in zip(y, rate, upper, audits, strict=True):
            if np.isnan(r):
                reason = audit["label_noise"]["reason"] or ""
                ax.text(xmax * 0.015, yy, "n/a: single class" if "single-class" in reason else "n/a",
                        va="center", ha="left", fontsize=7, color="0.4")
            else:
                bound = "" if np.isnan(u) else f" (disagree {u:.1f}%)"
                ax.text(max(r, 0 if np.isnan(u) else u) + xmax * 0.02, yy, f"{r:.2f}%{bound}", va="center",
                        ha="left", fontsize=7, color="0.25")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False, fontsize=7)
        k += 1

        ax = axes[k]
        words = [a["profile"]["words"] for a in audits]
        lows = np.array([max(w["p5"] or 1, 1) for w in words], dtype=np.float64)
        highs = np.array([max(w["p95"] or 1, 1) for w in words], dtype=np.float64)
        medians = np.array([max(w["median"] or 1, 1) for w in words], dtype=np.float64)
        ax.hlines(y, lows, highs, color="0.45", linewidth=2.2)
        ax.plot(medians, y, linestyle="none", marker="o", markersize=5, color="black")
        for yy, m in zip(y, medians, strict=True):
            ax.text(m, yy + 0.22, f"{m:,.0f}", ha="center", va="bottom", fontsize=7, color="0.25")
        ax.set_xscale("log")
        ax.set_xlim(lows.min() / 1.6, highs.max() * 1.6)
        # Plain numbers at 1-3-10 steps: word counts read better as "300" than as 10^2.5.
        ax.xaxis.set_major_locator(mpl.ticker.LogLocator(base=10, subs=(1.0, 3.0)))
        ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set_title("message length (words)\nmedian, 5th–95th percentile", fontsize=9)
        ax.xaxis.grid(True, which="major", color="0.92", linewidth=0.6)
        ax.set_axisbelow(True)

        for ax in axes:
            ax.set_ylim(-0.7, len(corpora) - 0.3)
        fig.suptitle("Data audit per corpus", x=0.01, ha="left", fontsize=10)
        if stem is not None:
            _save(fig, stem)
        return fig


# --- SHAP attributions -------------------------------------------------------------------------

SHAP_MODEL_KEYS = ("arch", "recipe", "paradigm")
SHAP_CMAP = "RdBu_r"  # red: toward malicious, blue: toward legitimate
CUE_COLOUR = "#2A9D8F"
ARTEFACT_COLOUR = "#E9A03B"
PLAIN_COLOUR = "#A6A6A6"
# What a figure shows where a cue metric has nothing to compare with: a corpus without planted cues.
NO_GROUND_TRUTH = "no ground truth (no planted cues)"
_TOKEN_KINDS = {
    "cue": (CUE_COLOUR, None, "mostly inside planted cues (≥ 50% of its occurrences)"),
    "artefact": (ARTEFACT_COLOUR, None, "source artefact (tells corpora apart more than labels)"),
    "both": (CUE_COLOUR, "////", "both: in planted cues and a source artefact"),
    "plain": (PLAIN_COLOUR, None, "neither"),
}


def token_label(token, width: int = 18) -> str:
    """A token as a readable label: repr() when it has surrounding whitespace or unprintable
    characters (so a newline or a space shows) or is punctuation only (so "-" reads as a token),
    cut to `width` characters with an ellipsis."""
    text = str(token)
    if not text or text != text.strip() or not text.isprintable() or not any(ch.isalnum() for ch in text):
        text = repr(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _token_kind(in_cue_share, source_artefact) -> str:
    cue = bool(pd.notna(in_cue_share) and float(in_cue_share) >= 0.5)
    artefact = bool(pd.notna(source_artefact) and bool(source_artefact))
    return "both" if cue and artefact else "cue" if cue else "artefact" if artefact else "plain"


def _model_title(arch: str, recipe: str, paradigm: str, multi_paradigm: bool) -> str:
    return _run_label([arch, recipe, paradigm] if multi_paradigm else [arch, recipe])


def plot_shap_top_tokens(top: pd.DataFrame, stem: str | os.PathLike, *, n: int = 8) -> list[Path]:
    """The tokens that move each model most, from `aggregate.top_tokens`' "signed" ranking.

    One panel per model (rows: arch; columns: recipe [x paradigm]): the `n` tokens with the
    highest mean SHAP toward malicious in malicious messages (bars to the right, on top) and the
    `n` with the most negative mean SHAP in legitimate messages (bars to the left, below). The
    bar colour says whether a token lies mostly inside planted cues, is a source artefact, or
    neither. A model whose tokens have no `in_cue_share` at all (a corpus without planted cues) has
    no ground truth for the cue colour: its panel says so, and so does the legend.
    """
    needed = ["arch", "recipe", "paradigm", "class", "ranking", "rank", "token", "mean_shap", "count",
              "in_cue_share", "source_artefact"]
    _require(top, needed, "SHAP top-token table")
    signed = top[top["ranking"] == "signed"]
    if signed.empty:
        raise ValueError("SHAP top-token table has no 'signed' ranking rows; nothing to plot")
    archs = _unique_in_order(signed["arch"])
    columns = list(dict.fromkeys(zip(signed["recipe"], signed["paradigm"], strict=True)))
    multi_paradigm = signed["paradigm"].nunique() > 1

    panels = {}
    with_cues = {model for model, group in top.groupby(list(SHAP_MODEL_KEYS), sort=False)
                 if pd.to_numeric(group["in_cue_share"], errors="coerce").notna().any()}
    for (arch, recipe, paradigm), group in signed.groupby(list(SHAP_MODEL_KEYS), sort=False):
        group = group.sort_values("rank", kind="stable")
        malicious = group[(group["class"] == "malicious") & (group["mean_shap"] > 0)].head(n)
        legitimate = group[(group["class"] == "legitimate") & (group["mean_shap"] < 0)].head(n)
        # Top to bottom: most pro-malicious first, most pro-legitimate last.
        panels[(arch, recipe, paradigm)] = (malicious, legitimate.iloc[::-1])
    most = max((len(m) + len(g) for m, g in panels.values()), default=0)
    row_h = 0.6 + 0.19 * max(most, 4)
    used_kinds: set[str] = set()

    with mpl.rc_context(_STYLE):
        fig = _new_figure(0.3 + 3.5 * len(columns), 0.9 + row_h * len(archs))
        axes = fig.subplots(len(archs), len(columns), squeeze=False)
        for i, arch in enumerate(archs):
            for j, (recipe, paradigm) in enumerate(columns):
                ax = axes[i, j]
                title = _model_title(arch, recipe, paradigm, multi_paradigm)
                if (arch, recipe, paradigm) in panels and (arch, recipe, paradigm) not in with_cues:
                    title += f"\n{NO_GROUND_TRUTH}: no cue colour"  # said, not left to look cue-free
                ax.set_title(title)
                malicious, legitimate = panels.get((arch, recipe, paradigm), (signed.iloc[:0], signed.iloc[:0]))
                if malicious.empty and legitimate.empty:
                    ax.set_axis_off()
                    ax.text(0.5, 0.5, "no tokens with a signed mean SHAP", ha="center", va="center",
                            fontsize=8, color="0.4", transform=ax.transAxes)
                    continue
                gap = 0.7 if len(malicious) and len(legitimate) else 0.0
                y_mal = gap + len(legitimate) + np.arange(len(malicious))[::-1]
                y_leg = np.arange(len(legitimate))[::-1].astype(float)
                limit = 0.0
                for frame, ys, side in ((malicious, y_mal, 1), (legitimate, y_leg, -1)):
                    for row, y in zip(frame.itertuples(index=False), ys, strict=True):
                        kind = _token_kind(row.in_cue_share, row.source_artefact)
                        used_kinds.add(kind)
                        colour, hatch, _ = _TOKEN_KINDS[kind]
                        ax.barh(y, row.mean_shap, 0.72, color=colour, hatch=hatch, edgecolor="white",
                                linewidth=0.0)
                        # The label sits on the empty side of the zero line, next to its bar's root.
                        ax.annotate(token_label(row.token), (0, y), xytext=(-3 * side, 0),
                                    textcoords="offset points", ha="right" if side > 0 else "left",
                                    va="center", fontsize=7.5, family="monospace", parse_math=False)
                        # The value at the bar's tip: readable even where another bar dwarfs it.
                        ax.annotate(f"{row.mean_shap:+.2f}".replace("-", "\u2212"), (row.mean_shap, y),
                                    xytext=(2 * side, 0), textcoords="offset points", fontsize=6.5, color="0.35",
                                    ha="left" if side > 0 else "right", va="center")
                        limit = max(limit, abs(float(row.mean_shap)))
                limit = limit * 1.3 if limit > 0 else 1.0
                ax.set_xlim(-limit, limit)
                ax.set_ylim(-0.6, gap + len(legitimate) + len(malicious) - 0.4)
                ax.axvline(0, color="0.3", linewidth=0.8)
                if gap:
                    ax.axhline(len(legitimate) - 0.5 + gap / 2, color="0.85", linewidth=0.6, linestyle="--")
                ax.set_yticks([])
                ax.spines["left"].set_visible(False)
                ax.xaxis.grid(True, color="0.93", linewidth=0.6)
                ax.set_axisbelow(True)
                if i == len(archs) - 1:
                    ax.set_xlabel("mean SHAP (log-odds)\n← legitimate messages  |  malicious messages →",
                                  fontsize=8)
        kinds = [k for k in ("cue", "artefact", "both", "plain") if k in used_kinds or k != "both"]
        if not with_cues:  # no model has ground truth: a cue colour in the legend would promise one
            kinds = [k for k in kinds if k not in ("cue", "both")]
        handles = [Patch(facecolor=_TOKEN_KINDS[k][0], hatch=_TOKEN_KINDS[k][1], edgecolor="white",
                         label=_TOKEN_KINDS[k][2] if with_cues or k != "plain" else "not a source artefact")
                   for k in kinds]
        if any(model not in with_cues for model in panels):
            handles.append(Patch(facecolor="white", edgecolor="0.6", label=f"{NO_GROUND_TRUTH}: cue share unknown"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 2), frameon=False)
        fig.suptitle(f"Tokens that move each model most (mean SHAP): top {n} toward malicious\n"
                     f"in malicious messages, top {n} toward legitimate in legitimate messages",
                     x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


def plot_shap_faithfulness(curves: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Erasure curves of SHAP against random token orders, one column per arch.

    Top row: comprehensiveness, the drop in p(predicted class) when the top-k% tokens are deleted
    (higher is better); bottom row: sufficiency, the drop when only they are kept (lower is
    better). Lines are the mean over explained messages (all test sets and seeds) with a band of
    ±1 standard error; SHAP solid, random dashed, one colour per recipe [x paradigm]. The legend
    of each panel gives the AOPC (mean over the fractions) of SHAP and of random.
    """
    needed = ["arch", "recipe", "paradigm", "seed", "testset", "uid", "method", "fraction", "comprehensiveness",
              "sufficiency"]
    _require(curves, needed, "SHAP faithfulness curves")
    metrics = ("comprehensiveness", "sufficiency")
    archs = _unique_in_order(curves["arch"])
    line_keys = list(dict.fromkeys(zip(curves["recipe"], curves["paradigm"], strict=True)))
    multi_paradigm = curves["paradigm"].nunique() > 1
    colours = recipe_colours(line_keys)
    fractions = sorted(curves["fraction"].unique())
    x_of = {f: k for k, f in enumerate(fractions)}
    stats = (curves.groupby([*SHAP_MODEL_KEYS, "method", "fraction"], sort=False)[list(metrics)]
             .agg(["mean", "sem", "size"]))
    messages = curves.drop_duplicates([*SHAP_MODEL_KEYS, "seed", "testset", "uid"])
    per_model = messages.groupby(list(SHAP_MODEL_KEYS)).size()
    n_testsets = curves["testset"].nunique()
    n_seeds = curves["seed"].nunique()
    styles = {"shap": ("-", "o"), "random": ("--", None)}
    better = {"comprehensiveness": "higher is better", "sufficiency": "lower is better"}
    what = {"comprehensiveness": "comprehensiveness\nΔp when top tokens deleted",
            "sufficiency": "sufficiency\nΔp when only top tokens kept"}

    with mpl.rc_context(_STYLE):
        fig = _new_figure(0.8 + 3.3 * len(archs), 6.2)
        axes = fig.subplots(2, len(archs), squeeze=False, sharex=True)
        legend_rows = 0
        for j, arch in enumerate(archs):
            for i, metric in enumerate(metrics):
                ax = axes[i, j]
                handles = []
                for key in line_keys:
                    aopc = {}
                    for method in ("shap", "random"):
                        index = (arch, *key, method)
                        try:
                            run = stats.loc[index].sort_index()
                        except KeyError:
                            continue
                        x = np.array([x_of[f] for f in run.index])
                        mean = run[(metric, "mean")].to_numpy(dtype=np.float64)
                        sem = np.nan_to_num(run[(metric, "sem")].to_numpy(dtype=np.float64))
                        linestyle, marker = styles[method]
                        ax.plot(x, mean, color=colours[key], linestyle=linestyle, marker=marker, markersize=3.5,
                                linewidth=1.5 if method == "shap" else 1.1)
                        ax.fill_between(x, mean - sem, mean + sem, color=colours[key],
                                        alpha=0.16 if method == "shap" else 0.08, linewidth=0)
                        aopc[method] = float(np.mean(mean))
                    if "shap" not in aopc:
                        continue
                    label = _run_label(key if multi_paradigm else key[:1])
                    n_msg = int(per_model.get((arch, *key), 0))
                    note = f"AOPC {aopc['shap']:.2f}" + (f" (random {aopc['random']:.2f})" if "random" in aopc else "")
                    handles.append(Line2D([], [], color=colours[key], linewidth=1.5, marker="o", markersize=3.5,
                                          label=f"{label} (n={n_msg}): {note}"))
                if not handles:
                    ax.text(0.5, 0.5, "no curves", ha="center", va="center", color="0.4", transform=ax.transAxes)
                else:  # in headroom kept free for it below
                    ax.legend(handles=handles, loc="upper left", fontsize=7, frameon=False, handlelength=1.6,
                              borderaxespad=0.3)
                legend_rows = max(legend_rows, len(handles))
                ax.axhline(0, color="0.6", linewidth=0.6)
                ax.grid(True, color="0.93", linewidth=0.6)
                ax.set_axisbelow(True)
                if i == 0:
                    ax.set_title(arch)
                if j == 0:
                    ax.set_ylabel(f"{what[metric]}\n({better[metric]})")
                if i == 1:
                    ax.set_xlabel("share of the message's tokens (top-k by attribution)")
                ax.set_xticks(range(len(fractions)))
                ax.set_xticklabels([f"{f:.0%}" if f >= 0.01 else f"{f:.1%}" for f in fractions])
        for i in range(2):  # one y scale per metric, so the archs compare at a glance; the legend above the lines
            lows, highs = zip(*(axes[i, j].get_ylim() for j in range(len(archs))), strict=True)
            low, high = min(lows), max(highs)
            for j in range(len(archs)):
                axes[i, j].set_ylim(low, high + (high - low) * (0.04 + 0.085 * legend_rows))
        handles = [
            Line2D([], [], color="0.3", linestyle="-", marker="o", markersize=3.5, linewidth=1.5,
                   label="SHAP order"),
            Line2D([], [], color="0.3", linestyle="--", linewidth=1.1, label="random order (mean of repeats)"),
            Patch(facecolor="0.3", alpha=0.2, label="±1 standard error over messages"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        pooled = (f"{n_testsets} test set{'s' if n_testsets > 1 else ''}"
                  + (f", {n_seeds} seeds" if n_seeds > 1 else ""))
        fig.suptitle(f"Faithfulness of SHAP vs random token orders\nerasure curves, mean over the messages of {pooled};"
                     " AOPC = mean over the fractions", x=0.01, ha="left", fontsize=10)
        return _save(fig, stem)


def _cue_testsets(messages: pd.DataFrame) -> pd.Series:
    """Per message: whether its test set has planted-cue ground truth (some message has a cue score)."""
    scores = [c for c in ("cue_precision", "cue_recall") if c in messages.columns]
    if not scores:
        return pd.Series(False, index=messages.index)
    scored = messages[scores].notna().any(axis=1)
    if "testset" not in messages.columns:
        return pd.Series(bool(scored.any()), index=messages.index)
    with_cues = set(messages.loc[scored, "testset"])
    return messages["testset"].isin(with_cues)


def heatmap_messages(messages: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """The messages a text heatmap shows: `n` per model (arch, recipe, paradigm), chosen deterministically.

    Test sets with planted-cue ground truth come first. The first message is the true positive
    with the highest f(x); the next an error (the fn or fp with the largest |f(x)|), or, without
    errors, the most confident true negative; further ones continue the cycle (tp, error, tn).
    A category that has no message left gives its turn to the next. Rows keep the model order of
    `messages`.
    """
    _require(messages, ["uid", "category", "f_x"], "SHAP message table")
    frame = messages.reset_index(drop=True)
    ties = [c for c in ("testset", "seed", "uid") if c in frame.columns]
    frame = frame.assign(_nocue=~_cue_testsets(frame), _err=frame["category"].isin(["fn", "fp"]))
    keys = [k for k in SHAP_MODEL_KEYS if k in frame.columns]
    groups = frame.groupby(keys, sort=False) if keys else [((), frame)]
    chosen: list[int] = []
    for _, group in groups:
        queues = {
            "tp": group[group["category"] == "tp"].assign(_conf=lambda g: -g["f_x"]),
            "error": group[group["_err"]].assign(_conf=lambda g: -g["f_x"].abs()),
            "tn": group[group["category"] == "tn"].assign(_conf=lambda g: g["f_x"]),
        }
        order = {name: list(q.sort_values(["_nocue", "_conf", *ties], kind="stable").index)
                 for name, q in queues.items()}
        cycle = itertools.cycle(order)
        picked: list[int] = []
        while len(picked) < n and any(order.values()):
            name = next(cycle)
            if order[name]:
                picked.append(order[name].pop(0))
        chosen.extend(picked)
    return frame.loc[chosen].drop(columns=["_nocue", "_err"]).reset_index(drop=True)


def shap_norm() -> mpl.colors.Normalize:
    """Colour norm of SHAP values divided by the message's largest |SHAP|: a signed square root,
    so that the tokens behind one dominant token still show."""
    return mpl.colors.FuncNorm((lambda x: np.sign(x) * np.sqrt(np.abs(x)), lambda y: np.sign(y) * y ** 2),
                               vmin=-1.0, vmax=1.0)


def shap_scale(values: np.ndarray) -> float:
    """The largest |SHAP| of a message's features: its colour scale runs from minus to plus this."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    values = values[np.isfinite(values)]
    top = float(values.max()) if len(values) else 0.0
    return top if top > 0 else 1.0


def message_tokens(tokens: pd.DataFrame, message: pd.Series | dict) -> pd.DataFrame:
    """The token rows of one message (matched on uid and whichever of arch, recipe, paradigm,
    seed and testset both frames carry), in position order, with `feature` and `in_cue` filled in."""
    keys = [k for k in (*SHAP_MODEL_KEYS, "seed", "testset") if k in tokens.columns and k in message]
    mask = tokens["uid"] == message["uid"]
    for k in keys:
        mask &= tokens[k] == message[k]
    own = tokens[mask].sort_values("position", kind="stable") if "position" in tokens.columns else tokens[mask]
    return _with_features(own)


def _with_features(own: pd.DataFrame) -> pd.DataFrame:
    own = own.copy()
    if "feature" not in own.columns:
        own["feature"] = (~own["special"].astype(bool)) & (own["token"].astype(str).str.strip().str.len() > 0)
    own["feature"] = own["feature"].astype(bool)
    cue = own["in_cue"] if "in_cue" in own.columns else pd.Series(pd.NA, index=own.index)
    cue = cue.astype("boolean")
    own["cue_known"] = cue.notna().to_numpy(dtype=bool)  # False: the message has no planted cues
    own["in_cue"] = cue.fillna(False).astype(bool)
    return own


def has_planted_cues(own: pd.DataFrame) -> bool:
    """Whether a message's tokens (from `message_tokens`) say where its planted cues are."""
    return bool(len(own)) and bool(own["cue_known"].any())


def _wrap_ranges(text: str, width: int) -> list[tuple[int, int]]:
    """(start, end) character ranges of the display lines: the text's own lines, each wrapped at
    `width` after a space where there is one; newlines belong to no line."""
    lines = []
    pos = 0
    for hard in text.split("\n"):
        start, end = pos, pos + len(hard)
        while end - start > width:
            space = text.rfind(" ", start, start + width)
            cut = space + 1 if space > start else start + width
            lines.append((start, cut))
            start = cut
        lines.append((start, end))
        pos = end + 1
    while len(lines) > 1 and not text[lines[-1][0]:lines[-1][1]].strip():
        lines.pop()
    return lines


def _display_text(text: str) -> str:
    """One display character per character: tabs and other controls as spaces, characters outside
    the basic plane (emoji, which the fonts lack) as U+FFFD, so offsets still point into it."""
    return "".join(" " if (not ch.isprintable() and ch != "\n") else "\ufffd" if ord(ch) > 0xFFFF else ch
                   for ch in text)


def _line_pieces(lines: list[tuple[int, int]], start: int, end: int):
    """(line, column, length) of the parts of [start, end) on each display line."""
    for k, (ls, le) in enumerate(lines):
        lo, hi = max(start, ls), min(end, le)
        if hi > lo:
            yield k, lo - ls, hi - lo


def _draw_message(ax, text: str, own: pd.DataFrame, cmap, width: int, max_lines: int, fontsize: float) -> int:
    """Text heatmap of one message on `ax`, whose data units are characters (x) and lines (y).
    Returns the number of display lines not shown."""
    from gendiag.attribution.faithfulness import core_span

    shown = _display_text(text)
    lines = _wrap_ranges(shown, width)
    hidden = max(0, len(lines) - max_lines)
    lines = lines[:max_lines]
    norm = shap_norm()
    features = own[own["feature"]]
    scale = shap_scale(features["shap"].to_numpy())
    covered = np.zeros(len(shown), dtype=bool)
    text_kw = {"family": "monospace", "fontsize": fontsize, "va": "center", "ha": "left", "parse_math": False}
    for row in features.itertuples(index=False):
        start, end = core_span(str(row.token), int(row.start), int(row.end))
        start, end = max(start, 0), min(end, len(shown))
        if end <= start:
            continue
        covered[start:end] = True
        value = float(row.shap) / scale
        colour = cmap(norm(value))
        ink = _ink_on(cmap, norm, value)
        for line, col, length in _line_pieces(lines, start, end):
            ax.add_patch(Rectangle((col, line + 0.04), length, 0.92, facecolor=colour, edgecolor="none"))
            first = lines[line][0] + col
            ax.text(col, line + 0.5, shown[first:first + length], color=ink, **text_kw)
            if row.in_cue:
                ax.plot([col, col + length], [line + 0.97, line + 0.97], color="black", linewidth=1.1,
                        solid_capstyle="butt")
    for k, (ls, le) in enumerate(lines):  # whatever no feature token covers (should be only whitespace)
        col = ls
        while col < le:
            if covered[col] or not shown[col].strip():
                col += 1
                continue
            run = col
            while run < le and not covered[run] and shown[run].strip():
                run += 1
            ax.text(col - ls, k + 0.5, shown[col:run], color="black", **text_kw)
            col = run
    return hidden


def _mono_char_width(fig: Figure, fontsize: float) -> float:
    """Advance width in inches of one character of the monospace font at `fontsize`."""
    probe = fig.text(0, 0, "0" * 40, family="monospace", fontsize=fontsize)
    width = probe.get_window_extent(fig.canvas.get_renderer()).width / 40 / fig.dpi
    probe.remove()
    return width


def plot_shap_text_heatmaps(
    messages: pd.DataFrame,
    tokens: pd.DataFrame,
    stem: str | os.PathLike,
    n_messages: int = 2,
    *,
    width: int = 95,
    max_lines: int = 18,
) -> list[Path]:
    """Messages as text with each token's background coloured by its SHAP value.

    Meant for one arch: one row per model (recipe [x paradigm]), `n_messages` messages per row as
    `heatmap_messages` picks them. Each message's colours are scaled by its own largest |SHAP|
    (red: toward malicious, blue: toward legitimate); tokens inside planted cue spans are
    underlined, and a message without planted cues (no ground truth) says so in its title. Text wraps
    at `width` characters keeping its line breaks; at most `max_lines` lines are shown.
    """
    _require(messages, ["uid", "category", "f_x", "base_value", "text"], "SHAP message table")
    _require(tokens, ["uid", "token", "start", "end", "shap", "special"], "SHAP token table")
    picked = heatmap_messages(messages, n_messages)
    if picked.empty:
        raise ValueError("no message to show: the SHAP message table has no tp, fp, fn or tn rows")
    keys = [k for k in SHAP_MODEL_KEYS if k in picked.columns]
    models = list(dict.fromkeys(tuple(r) for r in picked[keys].itertuples(index=False))) if keys else [()]
    multi_paradigm = "paradigm" in picked.columns and picked["paradigm"].nunique() > 1
    multi_seed = "seed" in picked.columns and picked["seed"].nunique() > 1
    cmap = mpl.colormaps[SHAP_CMAP]
    fontsize = 7.0

    rows = []  # per model: [(message row, tokens, display lines, hidden lines)]
    for model in models:
        mine = picked
        for k, v in zip(keys, model, strict=True):
            mine = mine[mine[k] == v]
        entries = []
        for _, message in mine.iterrows():
            n_lines = len(_wrap_ranges(_display_text(str(message["text"])), width))
            entries.append((message, message_tokens(tokens, message), min(n_lines, max_lines)))
        rows.append((model, entries))

    known = [has_planted_cues(own) for _, entries in rows for _, own, _ in entries]
    with mpl.rc_context(_STYLE):
        fig = _new_figure(1.0, 1.0)
        fig.set_layout_engine("none")
        char_w = _mono_char_width(fig, fontsize)
        line_h = fontsize * 1.5 / 72
        text_w = width * char_w
        title_h = 0.42 if all(known) else 0.56  # a third title line says there is no ground truth
        note_h, gap_x, gap_y, bottom_h, margin = 0.2, 0.35, 0.22, 0.6, 0.1
        top_h = 0.5 if all(known) else 0.68  # and a third line of the figure title
        row_heights = [title_h + max((e[2] for e in entries), default=1) * line_h + note_h for _, entries in rows]
        fig_w = 2 * margin + n_messages * text_w + (n_messages - 1) * gap_x
        fig_h = top_h + sum(row_heights) + gap_y * (len(rows) - 1) + bottom_h
        fig.set_size_inches(fig_w, fig_h)

        def box(left: float, top: float, w: float, h: float) -> list[float]:  # inches from the top left
            return [left / fig_w, 1 - (top + h) / fig_h, w / fig_w, h / fig_h]

        y = top_h
        for (model, entries), row_h in zip(rows, row_heights, strict=True):
            for k, (message, own, n_lines) in enumerate(entries):
                ax = fig.add_axes(box(margin + k * (text_w + gap_x), y + title_h, text_w, n_lines * line_h))
                ax.set_xlim(0, width)
                ax.set_ylim(n_lines, 0)
                ax.set_axis_off()
                hidden = _draw_message(ax, str(message["text"]), own, cmap, width, n_lines, fontsize)
                scale = shap_scale(own.loc[own["feature"], "shap"].to_numpy())
                name = _model_title(*model, multi_paradigm) if len(model) == 3 else _run_label(model)
                if multi_seed:
                    name += f" · seed {message['seed']}"
                where = f" — {message['testset']}" if "testset" in message else ""
                label = f" (label {int(message['label'])})" if "label" in message and pd.notna(message["label"]) else ""
                cues = "" if has_planted_cues(own) else f"\n{NO_GROUND_TRUTH}: nothing to underline"
                ax.set_title(
                    f"{name}{where} · {message['uid']}\n"
                    f"{message['category']}{label} · f(x) = {float(message['f_x']):+.2f} · base value "
                    f"{float(message['base_value']):+.2f} · max |SHAP| {scale:.2f}{cues}",
                    loc="left", fontsize=8, pad=4, parse_math=False)
                if hidden:
                    ax.text(0, n_lines + 0.35, f"… {hidden} more line{'s' if hidden > 1 else ''} not shown",
                            fontsize=7, color="0.4", style="italic", va="top", ha="left")
            if not entries:
                fig.text(margin / fig_w, 1 - (y + title_h) / fig_h, f"{_run_label(model)}: no message",
                         fontsize=8, color="0.4")
            y += row_h + gap_y

        bar_w = min(3.2, fig_w - 2 * margin)
        cax = fig.add_axes(box((fig_w - bar_w) / 2, fig_h - bottom_h + 0.18, bar_w, 0.11))
        colorbar = fig.colorbar(mpl.cm.ScalarMappable(norm=shap_norm(), cmap=cmap), cax=cax,
                                orientation="horizontal")
        colorbar.set_ticks([-1, -0.5, -0.1, 0, 0.1, 0.5, 1])
        colorbar.set_label("SHAP / the message's max |SHAP| (square-root colour scale)\n"
                           "← toward legitimate  |  toward malicious →", fontsize=8)
        colorbar.outline.set_visible(False)
        if all(known):
            underline = "; underlined: inside a planted cue span"
        elif any(known):
            underline = f"\nunderlined: inside a planted cue span; messages marked \"{NO_GROUND_TRUTH}\" have none"
        else:
            underline = f"\n{NO_GROUND_TRUTH} in these messages: nothing is underlined"
        fig.suptitle("SHAP token attributions on example messages\n"
                     "red: toward malicious, blue: toward legitimate, scaled per message by its max |SHAP|"
                     f"{underline}", x=margin / fig_w, y=1 - 0.06 / fig_h,
                     ha="left", va="top", fontsize=9)
        return _save(fig, stem)


# --- prompt robustness -------------------------------------------------------------------------


def plot_prompt_robustness(table: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """ΔF1 (variant − main prompt) per model: over all test sets with its bootstrap CI, and per test set.

    `table` is the output of `gendiag.evaluate.robustness.robustness_table`; rows near 0 mean the
    model answers the same whatever the wording or the demonstrations.
    """
    _require(table, ["arch", "recipe", "paradigm", "variant", "testset", "delta_f1", "ci_low", "ci_high"],
             "prompt-robustness table")
    overall = table[table["testset"] == "all test sets"]
    per_testset = table[table["testset"] != "all test sets"]
    models = list(dict.fromkeys(zip(overall["arch"], overall["recipe"], overall["paradigm"], strict=True)))
    variants = list(dict.fromkeys(overall["variant"]))
    colours = dict(zip(variants, ["#3b6ea8", "#c8553d", "#5a9e6f", "#8e6bb0"], strict=False))
    offsets = dict(zip(variants, (np.arange(len(variants)) - (len(variants) - 1) / 2) * 0.28, strict=True))
    labels = [f"{arch} · {paradigm}" if recipe == "none" else f"{arch} · {recipe} · {paradigm}"
              for arch, recipe, paradigm in models]
    with mpl.rc_context(_STYLE):
        fig = _new_figure(6.4, 1.2 + 0.42 * len(models) * max(1, len(variants)) ** 0.5)
        ax = fig.add_subplot()
        ax.axvline(0, color="0.35", linewidth=0.8)
        def pick(frame: pd.DataFrame, model: tuple, variant: str) -> pd.DataFrame:
            return frame[(frame["arch"] == model[0]) & (frame["recipe"] == model[1])
                         & (frame["paradigm"] == model[2]) & (frame["variant"] == variant)]

        for y, model in enumerate(models):
            for variant in variants:
                yy = y + offsets[variant]
                dots = pick(per_testset, model, variant)
                ax.scatter(dots["delta_f1"], np.full(len(dots), yy), s=9, color=colours[variant], alpha=0.35,
                           linewidths=0, zorder=2)
                row = pick(overall, model, variant)
                if len(row):
                    row = row.iloc[0]
                    ax.errorbar(row["delta_f1"], yy, xerr=[[row["delta_f1"] - row["ci_low"]],
                                                           [row["ci_high"] - row["delta_f1"]]],
                                fmt="o", color=colours[variant], markersize=5, capsize=2.5, linewidth=1.2, zorder=3)
        ax.set_yticks(range(len(models)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
        ax.set_xlabel("ΔF1 = F1 with the variant − F1 with the main prompt")
        ax.xaxis.grid(True, color="0.92", linewidth=0.6)
        ax.set_axisbelow(True)
        handles = [Line2D([], [], marker="o", linestyle="", color=colours[v], label=v) for v in variants]
        handles.append(Line2D([], [], marker="o", linestyle="", color="0.5", alpha=0.35, markersize=4,
                              label="single test set"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        ax.set_title("Prompt robustness: mean over test sets with 95% paired-bootstrap CI", loc="left", fontsize=9)
        return _save(fig, stem)
