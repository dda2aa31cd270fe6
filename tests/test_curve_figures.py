"""ROC/DET curve figure: one panel per test set, every model on it, AUROC in the legend."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from gendiag.report.curve_figures import plot_roc_curves, roc_curves_figure

MODELS = [("llama", "none", "zeroshot"), ("llama", "specialist", "standard"), ("gemma2", "generalist", "standard"),
          ("classical", "specialist", "tfidf")]


def predictions(seeds=(0,), single_class_testset=True):
    rng = np.random.default_rng(0)
    sets = [("enron", 120, 0.5), ("spamassassin", 90, 0.3)] + ([("nazario", 30, 1.0)] if single_class_testset else [])
    rows = []
    for testset, n, share in sets:
        y = (rng.random(n) < share).astype(int)
        for k, (arch, recipe, paradigm) in enumerate(MODELS):
            for seed in seeds if paradigm != "zeroshot" else (0,):
                p = 1 / (1 + np.exp(-rng.normal((0.5 + k) * (2 * y - 1), 1.5)))
                rows.append(pd.DataFrame({"arch": arch, "recipe": recipe, "paradigm": paradigm, "seed": seed,
                                          "testset": testset, "label": y, "p_malicious": p}))
    return pd.concat(rows, ignore_index=True)


def _panels(fig):
    return [ax for ax in fig.axes if ax.axison]


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_one_panel_per_testset_with_auroc_in_the_legend():
    df = predictions()
    fig = roc_curves_figure(df)
    assert isinstance(fig, Figure)
    panels = _panels(fig)
    assert [ax.get_title().split()[0] for ax in panels] == ["enron", "spamassassin", "nazario"]
    enron = panels[0]
    texts = _legend_texts(enron)
    assert len(texts) == len(MODELS)  # every model on one axis
    assert texts[0].startswith("llama · zero-shot") and texts[-1].startswith("TF-IDF + LR · specialist")
    for text, (arch, recipe, paradigm) in zip(texts, MODELS, strict=True):
        rows = df[(df.testset == "enron") & (df.arch == arch) & (df.recipe == recipe) & (df.paradigm == paradigm)]
        assert text.endswith(f"{roc_auc_score(rows['label'], rows['p_malicious']):.3f}")
    labels = df[(df.testset == "enron") & (df.arch == "llama") & (df.paradigm == "zeroshot")]["label"]
    assert enron.get_title() == f"enron  ({labels.sum()} malicious, {(labels == 0).sum()} legitimate)"


def test_single_class_testset_is_annotated_not_plotted():
    fig = roc_curves_figure(predictions())
    nazario = _panels(fig)[2]
    assert nazario.get_legend() is None
    assert any("only malicious mail (30 messages)" in t.get_text().replace("\n", " ") for t in nazario.texts)


def test_operating_point_marks_the_threshold():
    df = predictions(single_class_testset=False)
    fig = roc_curves_figure(df[df.arch == "gemma2"], threshold=0.5)
    ax = _panels(fig)[0]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 1
    rows = df[(df.testset == "enron") & (df.arch == "gemma2")]
    flagged = rows["p_malicious"] >= 0.5
    expected = (flagged[rows.label == 0].mean(), flagged[rows.label == 1].mean())
    assert (dots[0].get_xdata()[0], dots[0].get_ydata()[0]) == pytest.approx(expected)
    no_dots = roc_curves_figure(df, threshold=None)
    assert not [line for line in _panels(no_dots)[0].lines if line.get_marker() == "o"]


def test_several_seeds_average_and_report_the_spread():
    df = predictions(seeds=(0, 1, 2), single_class_testset=False)
    fig = roc_curves_figure(df)
    texts = _legend_texts(_panels(fig)[0])
    rows = df[(df.testset == "enron") & (df.arch == "llama") & (df.paradigm == "standard")]
    aucs = [roc_auc_score(r["label"], r["p_malicious"]) for _, r in rows.groupby("seed")]
    assert f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}" in texts[1]
    assert "±" not in texts[0]  # zero-shot has one seed
    assert "mean ± SD of AUROC over seeds" in fig.get_suptitle()


def test_det_and_written_files(tmp_path):
    df = predictions()
    fig = roc_curves_figure(df, kind="det", testset_order=["spamassassin"])
    panels = _panels(fig)
    assert panels[0].get_title().startswith("spamassassin") and panels[0].get_ylabel().startswith("miss rate")
    paths = plot_roc_curves(df, tmp_path / "roc_curves")
    assert [p.name for p in paths] == ["roc_curves.pdf", "roc_curves.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bad_input():
    df = predictions()
    with pytest.raises(ValueError, match=r"missing column\(s\) \['testset'\]"):
        roc_curves_figure(df.drop(columns="testset"))
    with pytest.raises(ValueError, match="kind must be one of"):
        roc_curves_figure(df, kind="pr")
    with pytest.raises(ValueError, match="testset_order names"):
        roc_curves_figure(df, testset_order=["trec"])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_curves_figure(df.assign(label=2))
    with pytest.raises(ValueError, match="threshold"):
        roc_curves_figure(df, threshold=2)
    with pytest.raises(ValueError, match="empty"):
        roc_curves_figure(df.iloc[:0])


def test_arch_colours_are_those_of_the_circuit_figures():
    from gendiag.report import circuit_figures, curve_figures

    assert curve_figures.ARCH_PALETTE == circuit_figures.ARCH_PALETTE
