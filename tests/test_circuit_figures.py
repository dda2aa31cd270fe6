"""Circuit figures on small hand-built tables of the circuit analysis's schema (no model)."""

import numpy as np
import pandas as pd
import pytest

from gendiag.report.circuit_figures import (
    attention_window,
    decode_tokens,
    plot_attention_pairs,
    plot_logit_lens,
    plot_logit_lens_dla,
    plot_patching_attribution,
    plot_patching_heads,
    plot_patching_resid,
    segment_effects,
    shared_pair,
    token_scheme,
)

ARCHS = ("llama", "gemma2")
RECIPES = ("specialist", "generalist")
N_LAYERS, N_HEADS, N_PAIRS = 2, 4, 3
# A prompt of 24 positions: 2 prompt-start, 6 before the edit, 3 edited, 5 after, 7 question, the answer.
PROMPT = ["prompt_start"] * 2 + ["before_edit"] * 6 + ["edited"] * 3 + ["after_edit"] * 5 + ["question"] * 7 \
    + ["answer"]
EDITED = [8, 9, 10]


def _runs():
    for arch in ARCHS:
        for recipe in RECIPES:
            yield {"arch": arch, "recipe": recipe, "paradigm": "standard", "seed": 0}


def lens_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for run in _runs():
        for p in range(N_PAIRS):
            for point in range(N_LAYERS + 1):
                rows.append(dict(run, pair_id=f"t:{p}", point=point, depth=point / N_LAYERS,
                                 clean=2.0 * point + rng.normal(0, 0.2), corrupt=-point + rng.normal(0, 0.2)))
    return pd.DataFrame(rows)


def dla_table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for run in _runs():
        for p in range(N_PAIRS):
            rows.append(dict(run, pair_id=f"t:{p}", component="embed", layer=-1, head=-1,
                             clean=rng.normal(), corrupt=rng.normal()))
            for layer in range(N_LAYERS):
                for head in range(N_HEADS):
                    rows.append(dict(run, pair_id=f"t:{p}", component="head", layer=layer, head=head,
                                     clean=rng.normal(), corrupt=rng.normal()))
                rows.append(dict(run, pair_id=f"t:{p}", component="mlp", layer=layer, head=-1,
                                 clean=rng.normal(), corrupt=rng.normal()))
    return pd.DataFrame(rows)


def resid_table() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for run in _runs():
        for p in range(N_PAIRS):
            for point in range(N_LAYERS + 1):
                for position, segment in enumerate(PROMPT):
                    # The cue's information sits at the edit early and at the answer late.
                    effect = {"edited": (1 - point / N_LAYERS) / 3, "answer": point / N_LAYERS}.get(segment, 0.0)
                    effect += rng.normal(0, 0.02)
                    rows.append(dict(run, pair_id=f"t:{p}", point=point, position=position, segment=segment,
                                     effect=effect, attribution=effect + rng.normal(0, 0.05)))
    return pd.DataFrame(rows)


def heads_table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for run in _runs():
        for p in range(N_PAIRS):
            for layer in range(N_LAYERS):
                for head in range(N_HEADS):
                    effect = rng.normal(0.4 if (layer, head) == (1, 2) else 0.0, 0.05)
                    rows.append(dict(run, pair_id=f"t:{p}", layer=layer, head=head, effect=effect,
                                     attribution=effect + rng.normal(0, 0.05),
                                     attention_to_edit_clean=rng.uniform(), attention_to_edit_corrupt=rng.uniform()))
    return pd.DataFrame(rows)


def attention_table(arch: str = "llama") -> pd.DataFrame:
    """Byte-level tokens; the top heads of each recipe on two pairs; the last 4 queries."""
    rng = np.random.default_rng(4)
    clean_tokens = ["<s>", "Email", ":", "Ċ"] + [f"Ġw{k}" for k in range(4, 8)] + ["Ġclick", "Ġhere", "Ġnow"] \
        + [f"Ġv{k}" for k in range(11, 20)] + ["ĠIs", "Ġthis", "ĠAnswer", ":"]
    corrupt_tokens = [*clean_tokens]
    corrupt_tokens[8:11] = ["Ġsee", "Ġyou", "Ġsoon"]
    n = len(clean_tokens)
    rows = []
    for run in _runs():
        if run["arch"] != arch:
            continue
        for p in range(2):
            for layer, head in ((1, 2), (0, 3)):
                for query in range(n - 4, n):
                    weights = rng.dirichlet(np.ones(query + 1))
                    for key in range(query + 1):
                        rows.append(dict(run, pair_id=f"t:{p}", layer=layer, head=head, query=query, key=key,
                                         clean=weights[key], corrupt=weights[::-1][key],
                                         query_token=clean_tokens[query], key_token_clean=clean_tokens[key],
                                         key_token_corrupt=corrupt_tokens[key], edited=key in EDITED))
    return pd.DataFrame(rows)


def _written(paths, stem) -> None:
    assert [p.name for p in paths] == [f"{stem.name}.pdf", f"{stem.name}.png"]
    for path in paths:
        assert path.exists() and path.stat().st_size > 1000


@pytest.mark.parametrize("name", ["logit_lens", "logit_lens_dla", "patching_resid", "patching_heads",
                                  "patching_attribution", "attention_pairs"])
def test_each_figure_writes_pdf_and_png(tmp_path, name):
    stem = tmp_path / name
    paths = {
        "logit_lens": lambda: plot_logit_lens(lens_table(), stem),
        "logit_lens_dla": lambda: plot_logit_lens_dla(dla_table(), stem),
        "patching_resid": lambda: plot_patching_resid(resid_table(), stem),
        "patching_heads": lambda: plot_patching_heads(heads_table(), stem),
        "patching_attribution": lambda: plot_patching_attribution(resid_table(), heads_table(), stem),
        "attention_pairs": lambda: plot_attention_pairs(attention_table(), stem),
    }[name]()
    _written(paths, stem)


def test_the_workflow_calls_them_with_tables_by_name(tmp_path):
    # workflow/scripts/figure_circuits.py passes the tables as keywords and recipes from the config.
    stem = tmp_path / "attr"
    _written(plot_patching_attribution(resid=resid_table(), heads=heads_table(), stem=str(stem),
                                       recipes=RECIPES), stem)


@pytest.mark.parametrize("plot, table, column", [
    (plot_logit_lens, lens_table, "corrupt"),
    (plot_logit_lens_dla, dla_table, "component"),
    (plot_patching_resid, resid_table, "segment"),
    (plot_patching_heads, heads_table, "effect"),
    (plot_attention_pairs, attention_table, "key_token_corrupt"),
])
def test_a_missing_column_is_named(tmp_path, plot, table, column):
    with pytest.raises(ValueError, match=column):
        plot(table().drop(columns=column), tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_a_missing_recipe_is_named(tmp_path):
    lens = lens_table()
    with pytest.raises(ValueError, match="generalist"):
        plot_logit_lens(lens[lens["recipe"] != "generalist"], tmp_path / "x")
    with pytest.raises(ValueError, match="generalist"):
        plot_patching_heads(heads_table().query("recipe != 'generalist'"), tmp_path / "x")


def test_the_attention_figure_wants_one_architecture(tmp_path):
    both = pd.concat([attention_table("llama"), attention_table("gemma2")])
    with pytest.raises(ValueError, match="per architecture"):
        plot_attention_pairs(both, tmp_path / "x")


def test_segment_effects_sum_positions_and_average_pairs():
    model = {"arch": "a", "recipe": "r", "paradigm": "standard", "seed": 0}
    rows = [
        # pair 1: two edited positions (0.25 + 0.5), one answer position (1.0)
        dict(model, pair_id="p1", point=0, position=3, segment="edited", effect=0.25, attribution=0.2),
        dict(model, pair_id="p1", point=0, position=4, segment="edited", effect=0.5, attribution=0.4),
        dict(model, pair_id="p1", point=0, position=5, segment="answer", effect=1.0, attribution=1.0),
        # pair 2 (another seed, same id): one edited position, no answer row at this point
        dict(model, seed=1, pair_id="p1", point=0, position=7, segment="edited", effect=0.25, attribution=0.0),
        dict(model, seed=1, pair_id="p1", point=1, position=8, segment="answer", effect=0.5, attribution=0.5),
    ]
    cells = segment_effects(pd.DataFrame(rows)).set_index(["point", "segment"])
    assert (cells["n_pairs"] == 2).all()
    assert cells.loc[(0, "edited"), "effect"] == pytest.approx((0.75 + 0.25) / 2)
    assert cells.loc[(0, "edited"), "attribution"] == pytest.approx((0.6 + 0.0) / 2)
    # the pair without an answer row at point 0 counts as 0 there
    assert cells.loc[(0, "answer"), "effect"] == pytest.approx(0.5)
    assert cells.loc[(1, "answer"), "effect"] == pytest.approx(0.25)
    # segments no pair has get no row (they show as blank cells, not as 0)
    assert (1, "edited") not in cells.index and (0, "question") not in cells.index
    assert list(cells.index) == [(0, "edited"), (0, "answer"), (1, "answer")]  # points, then SEGMENTS order


def test_segment_effects_on_the_synthetic_table_find_the_planted_flow():
    cells = segment_effects(resid_table())
    model = cells[(cells["arch"] == "llama") & (cells["recipe"] == "specialist")].set_index(["point", "segment"])
    assert model.loc[(0, "edited"), "effect"] == pytest.approx(1.0, abs=0.1)
    assert model.loc[(N_LAYERS, "answer"), "effect"] == pytest.approx(1.0, abs=0.1)
    assert model.loc[(N_LAYERS, "edited"), "effect"] == pytest.approx(0.0, abs=0.1)


def test_an_unknown_segment_is_refused():
    resid = resid_table()
    resid.loc[0, "segment"] = "middle"
    with pytest.raises(ValueError, match="middle"):
        segment_effects(resid)


def test_attention_window_crops_to_the_edit_and_the_question():
    window = attention_window(range(40), edited=[15, 16], queries=[36, 37, 38, 39], context=3)
    assert window == [None, 12, 13, 14, 15, 16, 17, 18, 19, None, 36, 37, 38, 39]
    # a window that reaches the question runs on without a gap, and one at the start has no leading gap
    assert attention_window(range(10), edited=[2], queries=[8, 9], context=5) == list(range(10))


def test_recipes_are_compared_on_a_pair_they_share():
    a, b = pd.DataFrame({"pair_id": ["x", "y", "y"]}), pd.DataFrame({"pair_id": ["z", "y"]})
    assert shared_pair([a, b]) == "y"
    assert shared_pair([a, pd.DataFrame({"pair_id": ["z"]})]) is None


def test_tokens_decode_to_their_text():
    assert token_scheme(["Ġclick", "Ġhere", "Ċ"]) == "bytelevel"
    assert decode_tokens(["Ġclick", "Ġhere", "Ċ"], "bytelevel") == " click here\n"
    assert decode_tokens(["Ã©", "t", "Ã©"], "bytelevel") == "été"
    assert token_scheme(["▁click", "▁here", "<0x0A>"]) == "sentencepiece"
    assert decode_tokens(["▁click", "▁here", "<0x0A>"], "sentencepiece") == " click here\n"
    assert token_scheme(["click", "here"]) == "plain"
