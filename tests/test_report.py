import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from gendiag.evaluate.metrics import CI_COLUMNS, METRICS, evaluate_predictions
from gendiag.report.figures import (
    ROLE_COLOURS,
    plot_cross_dataset_f1,
    plot_generalisation_gap,
    plot_training_curves,
    recipe_colours,
)
from gendiag.report.tables import (
    CROSS_DATASET_COLUMNS,
    GAP_COLUMNS,
    OPERATING_COLUMNS,
    cross_dataset_table,
    generalisation_gap_table,
    write_table,
)


def make_row(arch, recipe, paradigm, seed, testset, in_domain, f1):
    metrics = {name: f1 for name in METRICS}
    cis = {c: f1 - 0.05 if c.endswith("low") else f1 + 0.05 for c in CI_COLUMNS}
    return dict(arch=arch, recipe=recipe, paradigm=paradigm, seed=seed, testset=testset,
                in_domain=in_domain, n=100, **metrics, **cis)


def hand_built_rows():
    """llama: specialist trained on corpus A only; generalist on all of A, B, C.

    Specialist seed 1 is missing on C, so a plain row mean would weight B twice as much as C.
    """
    f1 = {
        ("specialist", 0): {"A": 0.9, "B": 0.5, "C": 0.4},
        ("specialist", 1): {"A": 0.8, "B": 0.7},
        ("generalist", 0): {"A": 0.85, "B": 0.8, "C": 0.7},
        ("generalist", 1): {"A": 0.85, "B": 0.9, "C": 0.7},
    }
    rows = []
    for (recipe, seed), per_testset in f1.items():
        for testset, value in per_testset.items():
            in_domain = recipe == "generalist" or testset == "A"
            rows.append(make_row("llama", recipe, "standard", seed, testset, in_domain, value))
    for testset in "ABC":
        rows.append(make_row("llama", "none", "zeroshot", 0, testset, False, 0.3))
        rows.append(make_row("gemma2", "specialist", "standard", 0, testset, testset == "A", 0.6))
        rows.append(make_row("gemma2", "generalist", "standard", 0, testset, True, 0.9))
    return rows


# --- tables ------------------------------------------------------------------------------------


def test_cross_dataset_table_columns_and_order():
    table = cross_dataset_table(list(reversed(hand_built_rows())))
    assert list(table.columns) == list(CROSS_DATASET_COLUMNS)
    assert list(table.columns[:14]) == [
        "arch", "recipe", "paradigm", "seed", "testset", "in_domain", "n",
        "f1", "f1_ci_low", "f1_ci_high", "precision", "recall", "accuracy", "auroc",
    ]
    assert set(table.columns[14:]) == set(CI_COLUMNS) - {"f1_ci_low", "f1_ci_high"}
    keys = ["arch", "recipe", "paradigm", "seed", "testset"]
    assert table[keys].equals(table[keys].sort_values(keys).reset_index(drop=True))
    assert table["in_domain"].dtype == bool


def test_cross_dataset_table_puts_each_operating_metric_next_to_its_interval():
    """What cross_dataset.csv holds after the baseline columns: the metrics of `evaluate_predictions(...,
    operating=True, val=...)`, each followed by its CI; a test set without a validation split gets NaN."""
    rng = np.random.default_rng(0)

    def predictions(prefix, n):
        label = rng.integers(0, 2, n)
        return pd.DataFrame({"uid": [f"{prefix}{i}" for i in range(n)], "label": label,
                             "p_malicious": np.clip(0.3 * label + rng.random(n) * 0.7, 0, 1)})

    test, val = predictions("t", 80), predictions("v", 40)
    keys = dict(arch="llama", recipe="specialist", paradigm="standard", seed=0, in_domain=False)
    with_val = evaluate_predictions(test, 200, 0, operating=True, val=val)
    without_val = evaluate_predictions(test, 200, 0, operating=True)
    table = cross_dataset_table([{**keys, "testset": "A", **with_val}, {**keys, "testset": "B", **without_val}])
    assert list(table.columns) == [*CROSS_DATASET_COLUMNS, *OPERATING_COLUMNS]
    assert table.columns[len(CROSS_DATASET_COLUMNS):][:3].tolist() == [
        "average_precision", "average_precision_ci_low", "average_precision_ci_high"]
    for metric in ("average_precision", "fpr_at_recall_90", "fpr_at_recall_95", "recall_at_fpr_1", "brier", "ece",
                   "f1_retuned"):
        a = table.iloc[0]
        assert a[f"{metric}_ci_low"] <= a[metric] + 1e-9 <= a[f"{metric}_ci_high"] + 2e-9, metric
    assert table.loc[0, "f1_retuned"] == pytest.approx(with_val["f1_retuned"])
    assert table.loc[1, ["f1_retuned", "retuned_threshold"]].isna().all()
    assert table.loc[1, "ece"] == pytest.approx(table.loc[0, "ece"])  # the same test predictions


def test_cross_dataset_table_rejects_duplicates_and_missing_keys():
    rows = hand_built_rows()
    with pytest.raises(ValueError, match="share their"):
        cross_dataset_table([*rows, dict(rows[0])])
    broken = dict(rows[0])
    del broken["auroc_ci_high"]
    with pytest.raises(ValueError, match=r"row 0 .* missing key\(s\) \['auroc_ci_high'\]"):
        cross_dataset_table([broken, *rows[1:]])
    with pytest.raises(ValueError, match="at least one row"):
        cross_dataset_table([])


def test_generalisation_gap_hand_computed():
    gap = generalisation_gap_table(cross_dataset_table(hand_built_rows()), "specialist", "generalist")
    assert list(gap.columns) == list(GAP_COLUMNS)
    assert list(gap["arch"]) == ["gemma2", "llama"]  # the zero-shot baseline has no gap row
    llama = gap.set_index("arch").loc["llama"]
    assert llama["n_testsets_out_of_domain"] == 2
    assert llama["specialist_ood_f1"] == pytest.approx(np.mean([np.mean([0.5, 0.7]), 0.4]))
    assert llama["generalist_ood_f1"] == pytest.approx(np.mean([np.mean([0.8, 0.9]), 0.7]))
    assert llama["delta_f1"] == pytest.approx(0.775 - 0.5)
    assert llama["specialist_in_domain_f1"] == pytest.approx(0.85)
    assert llama["generalist_in_domain_f1"] == pytest.approx(0.85)
    gemma = gap.set_index("arch").loc["gemma2"]
    assert gemma["delta_f1"] == pytest.approx(0.3)


def test_generalisation_gap_errors():
    cross = cross_dataset_table(hand_built_rows())
    with pytest.raises(ValueError, match="'narrow' is not in"):
        generalisation_gap_table(cross, "narrow", "generalist")
    missing_testset = cross[~((cross["recipe"] == "generalist") & (cross["testset"] == "C"))]
    with pytest.raises(ValueError, match=r"not evaluated on test set\(s\) \['C'\]"):
        generalisation_gap_table(missing_testset, "specialist", "generalist")


def test_write_table_writes_three_parseable_files(tmp_path):
    df = pd.DataFrame(
        {
            "arch": ["llama", "gemma_2&co"],
            "in_domain": [True, False],
            "n": [300, 120],
            "f1": [0.912345678, float("nan")],
        }
    )
    paths = write_table(df, tmp_path / "tables" / "cross_f1", caption="F1 on 100% of test_sets",
                        label="tab:cross_f1")
    assert [p.name for p in paths] == ["cross_f1.csv", "cross_f1.md", "cross_f1.tex"]
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(p.name for p in paths)

    back = pd.read_csv(paths[0])
    assert list(back.columns) == list(df.columns)
    assert back.loc[0, "f1"] == pytest.approx(0.912345678, abs=1e-12)  # full precision

    md = paths[1].read_text().splitlines()
    assert md[0] == "| arch | in_domain | n | f1 |"
    assert re.fullmatch(r"\|(:?-{3,}:?\|)+", md[1])
    assert md[2] == "| llama | yes | 300 | 0.912 |"
    assert md[3] == "| gemma_2&co | no | 120 | — |"

    tex = paths[2].read_text()
    assert "\\begin{tabular}{llrr}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "in\\_domain" in tex and "gemma\\_2\\&co & no & 120 & -- \\\\" in tex
    assert "\\caption{F1 on 100\\% of test\\_sets}" in tex and "\\label{tab:cross_f1}" in tex
    assert "llama & yes & 300 & 0.912 \\\\" in tex


def test_interval_view_puts_each_ci_in_its_metric_cell(tmp_path):
    df = pd.DataFrame({"arch": ["llama", "gemma"], "f1": [0.9123, float("nan")], "f1_ci_low": [0.88, float("nan")],
                       "f1_ci_high": [0.94, float("nan")], "ece": [0.05, 0.1], "ece_ci_low": [0.01, float("nan")],
                       "ece_ci_high": [0.09, 0.2], "n": [100, 80]})
    paths = write_table(df, tmp_path / "cross", intervals=True)
    assert list(pd.read_csv(paths[0]).columns) == list(df.columns)  # the CSV keeps every bound
    md = paths[1].read_text().splitlines()
    assert md[0] == "| arch | f1 | ece | n |"
    assert md[2] == "| llama | 0.912 [0.880, 0.940] | 0.050 [0.010, 0.090] | 100 |"
    assert md[3] == "| gemma | — | 0.100 [—, 0.200] | 80 |"
    assert "llama & 0.912 [0.880, 0.940] & 0.050 [0.010, 0.090] & 100" in paths[2].read_text()
    with pytest.raises(ValueError, match="cannot be combined"):
        write_table(df, tmp_path / "x", intervals=True, no_ground_truth={"f1": [True, False]})


# --- figures -----------------------------------------------------------------------------------

TESTSETS = ["corporate", "mailing_list", "credential_phish", "advance_fee"]


def realistic_cross(paradigms=("standard",), archs=("llama", "gemma2", "mistral"), testsets=TESTSETS):
    rng = np.random.default_rng(0)
    rows = []
    for arch in archs:
        runs = [("none", "zeroshot", 0)] + [
            (recipe, paradigm, seed)
            for recipe in ["specialist", "generalist"] for paradigm in paradigms for seed in (0, 1)
        ]
        for recipe, paradigm, seed in runs:
            for testset in testsets:
                in_domain = recipe == "generalist" or (recipe == "specialist" and testset == "corporate")
                f1 = float(np.clip(rng.normal(0.9 if in_domain else 0.7, 0.05), 0, 1))
                rows.append(make_row(arch, recipe, paradigm, seed, testset, in_domain, f1))
    return cross_dataset_table(rows)


def assert_figure_files(paths, min_width=300):
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    for path in paths:
        assert path.stat().st_size > 1000, path
    assert paths[0].read_bytes().startswith(b"%PDF")
    height, width = matplotlib.image.imread(paths[1]).shape[:2]
    assert min_width <= width <= 4000 and 200 <= height <= 4000, (width, height)
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".")]  # no temp left over


def test_plot_cross_dataset_f1(tmp_path):
    cross = realistic_cross(("standard", "cot"))
    paths = plot_cross_dataset_f1(cross, tmp_path / "cross_dataset_f1",
                                  recipe_order=["specialist", "generalist"], testset_order=TESTSETS)
    assert_figure_files(paths, min_width=600)


def test_plot_cross_dataset_f1_small(tmp_path):
    cross = realistic_cross(archs=["llama"], testsets=["corporate", "advance_fee"])
    assert_figure_files(plot_cross_dataset_f1(cross, tmp_path / "small"))


def test_plot_cross_dataset_f1_rejects_unknown_order(tmp_path):
    with pytest.raises(ValueError, match="not in the table"):
        plot_cross_dataset_f1(realistic_cross(), tmp_path / "x", testset_order=["enron"])


def test_plot_generalisation_gap(tmp_path):
    gap = generalisation_gap_table(realistic_cross(("standard", "cot")), "specialist", "generalist")
    assert_figure_files(plot_generalisation_gap(gap, tmp_path / "gap"))


@pytest.mark.parametrize(("archs", "with_val"), [(["llama", "gemma2"], True), (["mistral"], False)])
def test_plot_training_curves(tmp_path, archs, with_val):
    rng = np.random.default_rng(0)
    frames = []
    for arch in archs:
        for recipe in ["specialist", "generalist"]:
            for seed in (0, 1):
                step = np.arange(1, 201)
                loss = 3.0 * np.exp(-step / 40) + 0.05 + rng.uniform(0, 0.02, len(step))
                frame = pd.DataFrame({"arch": arch, "recipe": recipe, "paradigm": "standard", "seed": seed,
                                      "step": step, "loss": loss, "lr": 1e-4})
                if with_val:
                    frame["val_loss"] = np.where(step % 50 == 0, loss + 0.05, np.nan)
                frames.append(frame)
    assert_figure_files(plot_training_curves(pd.concat(frames), tmp_path / "curves"))


def test_figures_validate_their_input(tmp_path):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['loss'\]"):
        plot_training_curves(pd.DataFrame(columns=["arch", "recipe", "paradigm", "seed", "step"]),
                             tmp_path / "c")


def test_every_training_curve_gets_a_colour_far_from_every_other():
    """The default study's lines: four specialist paradigms next to the one generalist line."""
    import itertools

    import matplotlib as mpl
    import numpy as np

    keys = [("specialist", p) for p in ("standard", "cot", "fticl", "head")] + [("generalist", "standard")]
    colours = recipe_colours(keys)
    assert colours[("generalist", "standard")] == ROLE_COLOURS["generalist"]
    rgb = [np.array(mpl.colors.to_rgb(colours[key])) for key in keys]
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)) > 0.25
