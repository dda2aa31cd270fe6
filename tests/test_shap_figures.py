"""SHAP figures and the HTML heatmap page, on small hand-built frames (no model)."""

import re

import numpy as np
import pandas as pd
import pytest

from gendiag.report.figures import (
    heatmap_messages,
    plot_shap_faithfulness,
    plot_shap_text_heatmaps,
    plot_shap_top_tokens,
    token_label,
)
from gendiag.report.html import shap_heatmap_html

MODEL = {"arch": "llama", "paradigm": "standard", "seed": 0}


def top_table() -> pd.DataFrame:
    rows = []
    for arch in ("llama", "gemma2"):
        for recipe in ("specialist", "generalist"):
            for cls, sign in (("malicious", 1), ("legitimate", -1)):
                for rank in range(1, 11):
                    token = f"{cls[:3]}{rank}" if rank != 3 else "\n"
                    rows.append(dict(arch=arch, recipe=recipe, paradigm="standard", **{"class": cls},
                                     ranking="signed", rank=rank, token=token, mean_abs_shap=1.0 / rank,
                                     mean_shap=sign / rank, count=5, messages=3,
                                     in_cue_share=0.8 if rank == 1 else np.nan,
                                     artefact_score=0.5 if rank == 2 else 0.0, source_artefact=rank == 2))
                    rows.append({**rows[-1], "ranking": "abs"})
    return pd.DataFrame(rows)


def curve_table() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for arch in ("llama", "mistral"):
        for recipe in ("specialist", "generalist"):
            for uid in ("a", "b", "c"):
                for method in ("shap", "random"):
                    for fraction in (0.01, 0.05, 0.1, 0.2, 0.5):
                        rows.append(dict(arch=arch, recipe=recipe, paradigm="standard", seed=0, testset="t",
                                         uid=uid, method=method, fraction=fraction,
                                         comprehensiveness=fraction + rng.normal(0, 0.05),
                                         sufficiency=0.5 - fraction + rng.normal(0, 0.05)))
    return pd.DataFrame(rows)


def message_rows() -> list[dict]:
    """Two models; for the generalist, the real corpus "real" has a more confident tp than the
    synthetic "synth" (which has cue scores), and there is no error."""
    base = dict(MODEL, base_value=-1.0, label=1, pred=1)
    return [
        dict(base, recipe="generalist", testset="real", uid="r1", category="tp", f_x=9.0, cue_precision=np.nan),
        dict(base, recipe="generalist", testset="synth", uid="s1", category="tp", f_x=3.0, cue_precision=0.6),
        dict(base, recipe="generalist", testset="synth", uid="s2", category="tp", f_x=5.0, cue_precision=0.8),
        dict(base, recipe="generalist", testset="synth", uid="s3", category="tn", f_x=-2.0, cue_precision=np.nan,
             label=0, pred=0),
        dict(base, recipe="generalist", testset="synth", uid="s4", category="tn", f_x=-6.0, cue_precision=np.nan,
             label=0, pred=0),
        dict(base, recipe="specialist", testset="synth", uid="s2", category="tp", f_x=4.0, cue_precision=0.4),
        dict(base, recipe="specialist", testset="synth", uid="s3", category="fp", f_x=1.0, cue_precision=np.nan,
             label=0),
        dict(base, recipe="specialist", testset="synth", uid="s4", category="fn", f_x=-3.0, cue_precision=0.0,
             pred=0),
        dict(base, recipe="specialist", testset="real", uid="r1", category="fn", f_x=-7.0, cue_precision=np.nan,
             pred=0),
    ]


def tokenise(text: str, values: list[float], cues: set[int]) -> pd.DataFrame:
    """Whitespace-led pieces as the token table has them, after a special BOS token."""
    pieces = re.findall(r"\s*\S+|\s+$", text)
    rows = [dict(position=0, token="", start=0, end=0, shap=0.1, special=True, in_cue=False)]
    start = 0
    for k, piece in enumerate(pieces):
        rows.append(dict(position=k + 1, token=piece, start=start, end=start + len(piece),
                         shap=values[k % len(values)], special=False, in_cue=k in cues))
        start += len(piece)
    frame = pd.DataFrame(rows)
    frame["feature"] = ~frame["special"] & (frame["token"].str.strip() != "")
    frame["in_cue"] = frame["in_cue"].astype("boolean")
    return frame


def heatmap_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    messages = pd.DataFrame(message_rows())
    long_text = "\n".join(f"line {k}: please verify your account now at http://example.test/{k}"
                          for k in range(25))
    texts, token_frames = [], []
    for row in messages.itertuples():
        text = long_text if row.uid == "s2" else "From: a@b.c\nSubject: <script>alert(1)</script>\n\nHello  there"
        texts.append(text)
        token_frames.append(tokenise(text, [2.0, -1.5, 0.3, 0.0], {1, 2}).assign(
            uid=row.uid, recipe=row.recipe, testset=row.testset, **MODEL))
    messages["text"] = texts
    return messages, pd.concat(token_frames, ignore_index=True)


def assert_written(paths):
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    for path in paths:
        assert path.exists() and path.stat().st_size > 1000


# --- figures -----------------------------------------------------------------------------------


def test_plot_shap_top_tokens_writes_pdf_and_png(tmp_path):
    assert_written(plot_shap_top_tokens(top_table(), tmp_path / "top"))


def test_plot_shap_top_tokens_leaves_a_missing_model_empty(tmp_path):
    top = top_table()
    top = top[~((top["arch"] == "gemma2") & (top["recipe"] == "specialist"))]
    assert_written(plot_shap_top_tokens(top, tmp_path / "top"))


def test_plot_shap_faithfulness_writes_pdf_and_png(tmp_path):
    assert_written(plot_shap_faithfulness(curve_table(), tmp_path / "faithfulness"))


def test_plot_shap_text_heatmaps_writes_pdf_and_png(tmp_path):
    messages, tokens = heatmap_frames()
    assert_written(plot_shap_text_heatmaps(messages, tokens, tmp_path / "heatmap", n_messages=2))


def test_token_label_shows_whitespace_and_cuts_long_tokens():
    assert token_label("password") == "password"
    assert token_label("\n") == repr("\n")
    assert token_label(" x") == repr(" x")
    assert token_label("-") == repr("-")
    assert token_label("e-mail") == "e-mail"
    assert token_label("a" * 40, width=10) == "a" * 9 + "…"


def test_heatmap_messages_prefers_cue_testsets_then_tp_then_error_or_tn():
    messages = pd.DataFrame(message_rows())
    picked = heatmap_messages(messages, 2)
    chosen = list(zip(picked["recipe"], picked["uid"], strict=True))
    # generalist: the tp of the cue test set with the highest f(x) (not r1 of the real corpus);
    # no error, so the most confident tn. specialist: its tp, then the cue test set's error.
    assert chosen == [("generalist", "s2"), ("generalist", "s4"), ("specialist", "s2"), ("specialist", "s4")]
    assert list(heatmap_messages(messages, 1)["uid"]) == ["s2", "s2"]
    more = heatmap_messages(messages, 4)
    assert list(more.loc[more["recipe"] == "specialist", "uid"]) == ["s2", "s4", "s3", "r1"]
    assert len(heatmap_messages(messages, 10)) == len(messages)


def test_heatmap_messages_is_deterministic_under_row_order():
    messages = pd.DataFrame(message_rows())
    shuffled = messages.sample(frac=1.0, random_state=3)
    picked = heatmap_messages(shuffled, 2).sort_values(["recipe", "uid"]).reset_index(drop=True)
    expected = heatmap_messages(messages, 2).sort_values(["recipe", "uid"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(picked[["recipe", "uid"]], expected[["recipe", "uid"]])


# --- missing columns ---------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["mean_shap", "source_artefact"])
def test_top_tokens_missing_column_is_named(tmp_path, column):
    with pytest.raises(ValueError, match=column):
        plot_shap_top_tokens(top_table().drop(columns=column), tmp_path / "x")


def test_faithfulness_missing_column_is_named(tmp_path):
    with pytest.raises(ValueError, match="sufficiency"):
        plot_shap_faithfulness(curve_table().drop(columns="sufficiency"), tmp_path / "x")


def test_heatmaps_missing_column_is_named(tmp_path):
    messages, tokens = heatmap_frames()
    with pytest.raises(ValueError, match="base_value"):
        plot_shap_text_heatmaps(messages.drop(columns="base_value"), tokens, tmp_path / "x")
    with pytest.raises(ValueError, match="shap"):
        plot_shap_text_heatmaps(messages, tokens.drop(columns="shap"), tmp_path / "x")
    with pytest.raises(ValueError, match="f_x"):
        heatmap_messages(messages.drop(columns="f_x"))
    with pytest.raises(ValueError, match="text"):
        shap_heatmap_html(messages.drop(columns="text"), tokens, "t")


# --- HTML --------------------------------------------------------------------------------------


def test_shap_heatmap_html_escapes_and_colours_each_feature_token():
    messages, tokens = heatmap_frames()
    page = shap_heatmap_html(messages, tokens, "SHAP <heatmaps>")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "<title>SHAP &lt;heatmaps&gt;</title>" in page
    spans = re.findall(r'<span class="t( c)?" style="background:(#[0-9a-f]{6});color:#[0-9a-f]{6}" '
                       r'title="SHAP ([+-]\d+\.\d+)', page)
    assert len(spans) == int(tokens["feature"].sum())
    colour_of = {float(value): colour for _, colour, value in spans}
    assert colour_of[2.0] != colour_of[-1.5]
    assert colour_of[2.0] != colour_of[0.0] != colour_of[-1.5]
    assert sum(1 for cue, *_ in spans if cue) == int((tokens["in_cue"] & tokens["feature"]).sum())
    assert page.count('<div class="msg">') == len(messages)
    assert page.count('<details class="model"') == 2
    assert page.count('<details class="testset"') == 4
    assert "http" not in re.sub(r"http://example\.test/\d+", "", page)  # nothing fetched from the network
    assert "f(x) +9.00" in page and "base value -1.00" in page


def test_shap_heatmap_html_keeps_the_text():
    messages, tokens = heatmap_frames()
    page = shap_heatmap_html(messages.iloc[:1], tokens, "one")
    body = page.split('<div class="text">', 1)[1].split("</div>", 1)[0]
    plain = re.sub(r"<[^>]+>", "", body)
    import html

    assert html.unescape(plain) == messages["text"].iloc[0]
