"""Weight-drift figure: how far fine-tuning moved each layer's weights from the base.

The table is `gendiag.finetune.drift.drift_by_layer` of every adapter, stacked with the run's keys
(arch, recipe, paradigm, seed). The x axis is the layer index, not depth normalised to [0, 1]: each
architecture has its own panel, so no two depths ever share an axis, and the index names the very
layer the circuit analysis and the adapter's keys call ``layers.<i>``. Each panel's title gives its
number of layers, so panels of deeper models (Gemma 2) still read against the others.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from gendiag.io import atomic_path
from gendiag.report.figures import (
    _STYLE,
    PNG_DPI,
    _new_figure,
    _require,
    _run_label,
    _unique_in_order,
    recipe_colours,
)

DRIFT_COLUMNS = ["arch", "recipe", "paradigm", "seed", "layer", "mean_abs_delta"]
# Draw a marker on every layer while there are few enough of them to tell apart.
MAX_MARKED_LAYERS = 24


def plot_weight_drift(by_layer: pd.DataFrame, out_pdf: str | os.PathLike, out_png: str | os.PathLike) -> list[Path]:
    """Mean |ΔW| of the merged LoRA update per layer: one panel per arch, one line per recipe (x paradigm).

    The line is the mean over seeds and the band the min-max over seeds (drawn only where a model
    has more than one seed). The y axis, shared by the panels, is logarithmic when the values span
    more than a decade (and are all positive). Writes `out_pdf` and `out_png` atomically and returns
    their paths.
    """
    _require(by_layer, DRIFT_COLUMNS, "weight-drift table")
    values = by_layer["mean_abs_delta"].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("weight-drift table: mean_abs_delta must be finite and non-negative")
    layer = pd.to_numeric(by_layer["layer"], errors="coerce")
    if layer.isna().any() or (layer != layer.round()).any() or (layer < 0).any():
        raise ValueError("weight-drift table: layer must be a non-negative integer layer index")
    keys = ["arch", "recipe", "paradigm", "seed", "layer"]
    repeated = by_layer[by_layer.duplicated(keys, keep=False)]
    if not repeated.empty:
        first = repeated[keys].iloc[0].tolist()
        raise ValueError(f"weight-drift table has more than one row for {tuple(keys)} = {tuple(first)}")

    archs = _unique_in_order(by_layer["arch"])
    line_keys = list(dict.fromkeys(zip(by_layer["recipe"], by_layer["paradigm"], strict=True)))
    multi_paradigm = by_layer["paradigm"].nunique() > 1
    colours = recipe_colours(line_keys)
    lines = (
        by_layer.assign(layer=layer.astype(int))
        .groupby(["arch", "recipe", "paradigm", "layer"], sort=False)["mean_abs_delta"]
        .agg(mean="mean", low="min", high="max", n_seeds="size")
        .reset_index()
        .sort_values("layer", kind="stable")
    )
    log_y = values.min() > 0 and values.max() / values.min() > 10.0

    with mpl.rc_context(_STYLE):
        fig = _new_figure(0.6 + 3.4 * len(archs), 3.3)
        axes = fig.subplots(1, len(archs), sharey=True, squeeze=False)[0]
        for ax, arch in zip(axes, archs, strict=True):
            mine = lines[lines["arch"] == arch]
            n_layers = int(mine["layer"].max()) + 1
            marker = "o" if n_layers <= MAX_MARKED_LAYERS else None
            for key in line_keys:
                run = mine[(mine["recipe"] == key[0]) & (mine["paradigm"] == key[1])]
                if run.empty:
                    continue
                x = run["layer"].to_numpy()
                ax.plot(x, run["mean"], color=colours[key], linewidth=1.6, marker=marker, markersize=3)
                if (run["n_seeds"] > 1).any():
                    ax.fill_between(x, run["low"], run["high"], color=colours[key], alpha=0.2, linewidth=0)
            ax.set_title(f"{arch} ({n_layers} layer{'s' if n_layers != 1 else ''})")
            ax.set_xlabel("layer index (0 = first decoder layer)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(-0.5, n_layers - 0.5)
            ax.grid(True, which="major", color="0.92", linewidth=0.6)
            ax.set_axisbelow(True)
            if log_y:
                ax.set_yscale("log")
        if not log_y:
            axes[0].set_ylim(0, 1.08 * float(lines["high"].max()) or 1.0)
        axes[0].set_ylabel("mean |ΔW| per element" + (" (log scale)" if log_y else ""))

        handles = [Line2D([], [], color=colours[key], linewidth=1.6,
                          label=_run_label(key if multi_paradigm else key[:1])) for key in line_keys]
        seeds = sorted(lines["n_seeds"].unique())
        if seeds[-1] > 1:
            handles.append(Patch(facecolor="0.3", alpha=0.2, label="min–max over seeds"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        seed_note = "" if seeds == [1] else f", mean over {seeds[-1]} seeds" if len(seeds) == 1 else (
            ", mean over seeds"
        )
        subtitle = ("ΔW = (α/r)·BA (α/√r with rsLoRA) of every adapted module, averaged over the layer's elements"
                    f"{seed_note}")
        width = max(60, int(16 * (0.6 + 3.4 * len(archs))))  # characters that fit the figure's width
        title = "Weight drift from the base: mean |ΔW| of the merged LoRA update per layer"
        fig.suptitle("\n".join(textwrap.wrap(title, width) + textwrap.wrap(subtitle, width)),
                     x=0.01, ha="left", fontsize=10)
        paths = []
        for path, kwargs in ((Path(out_pdf), {"format": "pdf"}), (Path(out_png), {"format": "png", "dpi": PNG_DPI})):
            with atomic_path(path) as tmp:
                fig.savefig(tmp, bbox_inches="tight", pad_inches=0.05, **kwargs)
            paths.append(path)
        return paths
