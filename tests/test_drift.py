"""Weight drift of a LoRA adapter, checked against PEFT's own merge, and its figure."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from gendiag.finetune import drift
from gendiag.finetune.drift import COLUMNS, adapter_drift, drift_by_layer
from gendiag.report.drift_figures import plot_weight_drift


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(config)


def _save_adapter(out_dir, **lora_kwargs) -> dict[str, torch.Tensor]:
    """Save a PEFT LoRA adapter with random non-zero A and B to `out_dir`; return {module path: merged − base}."""
    from peft import LoraConfig, get_peft_model

    base = _tiny_llama()
    before = {name: p.detach().clone() for name, p in base.state_dict().items()}
    model = get_peft_model(base, LoraConfig(**lora_kwargs))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    merged = model.merge_and_unload().state_dict()
    return {name.removesuffix(".weight"): merged[name] - before[name]
            for name in before if not torch.equal(merged[name], before[name])}


def _expected(deltas: dict[str, torch.Tensor]) -> pd.DataFrame:
    rows = []
    for path, delta in deltas.items():
        rows.append({"layer": int(path.split("layers.")[1].split(".")[0]), "module": path.rsplit(".", 1)[-1],
                     "mean_abs_delta": delta.abs().mean().item(), "frobenius": delta.norm().item(),
                     "rows": delta.shape[0], "cols": delta.shape[1]})
    return pd.DataFrame(rows).sort_values(["layer", "module"], ignore_index=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapters") / "plain"
    deltas = _save_adapter(out, r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    return out, deltas


@pytest.fixture(scope="module")
def patterned(tmp_path_factory):
    """rsLoRA, a rank pattern on v_proj and an alpha pattern on one layer's q_proj, plus an MLP module."""
    out = tmp_path_factory.mktemp("adapters") / "patterned"
    deltas = _save_adapter(out, r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"],
                           rank_pattern={"v_proj": 3}, alpha_pattern={"layers.1.self_attn.q_proj": 9})
    return out, deltas


def _compare(table: pd.DataFrame, deltas: dict) -> None:
    expected = _expected(deltas)
    assert list(table.columns) == COLUMNS
    shape = ["layer", "module", "rows", "cols"]
    pd.testing.assert_frame_equal(table[shape], expected[shape], check_dtype=False)
    for column in ("mean_abs_delta", "frobenius"):
        np.testing.assert_allclose(table[column], expected[column], rtol=1e-5, atol=0)
    assert (table["mean_abs_delta"] > 0).all()


def test_drift_equals_the_update_peft_merges(plain):
    out, deltas = plain
    table = adapter_drift(out)
    _compare(table, deltas)
    assert table[["layer", "module"]].values.tolist() == [[0, "q_proj"], [0, "v_proj"], [1, "q_proj"], [1, "v_proj"]]
    assert table["rank"].tolist() == [2, 2, 2, 2]
    assert table[["rows", "cols"]].values.tolist() == [[16, 16], [8, 16], [16, 16], [8, 16]]


def test_rslora_and_rank_and_alpha_patterns_follow_peft(patterned):
    out, deltas = patterned
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_rslora"] and config["rank_pattern"] and config["alpha_pattern"]
    table = adapter_drift(out)
    _compare(table, deltas)
    ranks = dict(zip(table["layer"].astype(str) + table["module"], table["rank"], strict=True))
    assert ranks == {"0down_proj": 2, "0q_proj": 2, "0v_proj": 3, "1down_proj": 2, "1q_proj": 2, "1v_proj": 3}
    assert table.loc[table["module"] == "down_proj", ["rows", "cols"]].values.tolist() == [[16, 24], [16, 24]]


def test_blocks_of_rows_give_the_whole_matrix_result(plain, monkeypatch):
    whole = adapter_drift(plain[0])
    monkeypatch.setattr(drift, "_BLOCK_ELEMENTS", 20)  # one row of 16 columns per block
    pd.testing.assert_frame_equal(adapter_drift(plain[0]), whole, rtol=1e-6)


def test_missing_files_name_the_path_and_the_finetune_rule(plain, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json.*finetune rule"):
        adapter_drift(tmp_path / "nowhere")
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    shutil.copy(plain[0] / "adapter_config.json", only_config)
    with pytest.raises(FileNotFoundError, match=rf"{only_config}/adapter_model\.safetensors.*finetune rule"):
        adapter_drift(only_config)


def _copy(src, dst, config_changes=None, tensors=None):
    dst.mkdir()
    config = json.loads((src / "adapter_config.json").read_text())
    config.update(config_changes or {})
    (dst / "adapter_config.json").write_text(json.dumps(config))
    if tensors is None:
        shutil.copy(src / "adapter_model.safetensors", dst)
    else:
        from safetensors.torch import save_file

        save_file(tensors, str(dst / "adapter_model.safetensors"))
    return dst


def test_no_lora_weights_is_an_error(plain, tmp_path):
    with pytest.raises(ValueError, match="no LoRA weights"):
        adapter_drift(_copy(plain[0], tmp_path / "empty", tensors={}))


@pytest.mark.parametrize(("changes", "message"), [
    ({"use_dora": True}, "DoRA"),
    ({"peft_type": "IA3"}, "LoRA adapters only"),
    ({"lora_bias": True}, "bias"),
    ({"r": 4}, "rank 2 but .* r=4"),
])
def test_unsupported_configs_are_refused(plain, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        adapter_drift(_copy(plain[0], tmp_path / "bad", config_changes=changes))


def test_a_real_dora_adapter_is_refused(tmp_path):
    _save_adapter(tmp_path / "dora", r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(ValueError, match="DoRA"):
        adapter_drift(tmp_path / "dora")


def test_unsupported_tensors_are_named(plain, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(str(plain[0] / "adapter_model.safetensors"))
    magnitude = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"
    with pytest.raises(ValueError, match="unsupported tensors .*lora_magnitude_vector"):
        adapter_drift(_copy(plain[0], tmp_path / "extra", tensors={**tensors, magnitude: torch.ones(16)}))
    lonely = {k: v for k, v in tensors.items() if "layers.1.self_attn.v_proj.lora_B" not in k}
    with pytest.raises(ValueError, match=r"only one of lora_A/lora_B: \['model.layers.1.self_attn.v_proj'\]"):
        adapter_drift(_copy(plain[0], tmp_path / "lonely", tensors=lonely))


def test_a_module_outside_the_layers_is_refused(plain, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(str(plain[0] / "adapter_model.safetensors"))
    moved = {k.replace("model.layers.1.self_attn.v_proj", "lm_head"): v for k, v in tensors.items()}
    with pytest.raises(ValueError, match="lm_head is not inside a numbered layer"):
        adapter_drift(_copy(plain[0], tmp_path / "head", tensors=moved))


def test_drift_by_layer_weights_modules_by_size():
    table = pd.DataFrame({
        "arch": ["a", "a", "a", "b"],
        "seed": [0, 0, 0, 0],
        "layer": [0, 0, 1, 0],
        "module": ["q_proj", "v_proj", "q_proj", "q_proj"],
        "mean_abs_delta": [1.0, 4.0, 2.0, 5.0],
        "frobenius": [3.0, 4.0, 2.0, 1.0],
        "rows": [4, 2, 4, 4],
        "cols": [4, 4, 4, 4],
        "rank": [2, 2, 2, 2],
    })
    out = drift_by_layer(table)
    assert list(out.columns) == ["arch", "seed", "layer", "mean_abs_delta", "frobenius", "n_modules", "numel"]
    assert out[["arch", "layer"]].values.tolist() == [["a", 0], ["a", 1], ["b", 0]]
    np.testing.assert_allclose(out["mean_abs_delta"], [(16 * 1.0 + 8 * 4.0) / 24, 2.0, 5.0])
    np.testing.assert_allclose(out["frobenius"], [5.0, 2.0, 1.0])
    assert out["n_modules"].tolist() == [2, 1, 1]
    assert out["numel"].tolist() == [24, 16, 16]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rows'\]"):
        drift_by_layer(table.drop(columns="rows"))


def test_drift_by_layer_of_a_real_adapter_matches_the_merge(plain):
    out, deltas = plain
    by_layer = drift_by_layer(adapter_drift(out))
    for layer in (0, 1):
        mine = [d for path, d in deltas.items() if f"layers.{layer}." in path]
        flat = torch.cat([d.flatten() for d in mine])
        row = by_layer[by_layer["layer"] == layer].iloc[0]
        assert row["mean_abs_delta"] == pytest.approx(flat.abs().mean().item(), rel=1e-5)
        assert row["frobenius"] == pytest.approx(flat.norm().item(), rel=1e-5)
        assert row["numel"] == flat.numel()


def _figure_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for arch, n_layers in (("llama", 4), ("gemma2", 6)):
        for recipe in ("specialist", "generalist"):
            for seed in (0, 1):
                for layer in range(n_layers):
                    rows.append({"arch": arch, "recipe": recipe, "paradigm": "standard", "seed": seed, "layer": layer,
                                 "mean_abs_delta": 1e-4 * (1 + layer) ** 2 * rng.uniform(0.8, 1.2)})
    return pd.DataFrame(rows)


def test_plot_weight_drift_writes_pdf_and_png(tmp_path):
    pdf, png = tmp_path / "fig" / "drift.pdf", tmp_path / "fig" / "drift.png"
    assert plot_weight_drift(_figure_table(), pdf, png) == [pdf, png]
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert sorted(p.name for p in pdf.parent.iterdir()) == ["drift.pdf", "drift.png"]  # no temporaries left


def test_plot_weight_drift_from_real_adapters(plain, patterned, tmp_path):
    table = pd.concat([
        drift_by_layer(adapter_drift(out)).assign(arch="llama", recipe=recipe, paradigm="standard", seed=0)
        for recipe, (out, _) in (("specialist", plain), ("generalist", patterned))
    ])
    paths = plot_weight_drift(table, tmp_path / "d.pdf", tmp_path / "d.png")
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop(columns="mean_abs_delta"), r"missing column\(s\) \['mean_abs_delta'\]"),
    (lambda t: t.iloc[:0], "empty"),
    (lambda t: pd.concat([t, t.iloc[:1]]), "more than one row"),
    (lambda t: t.assign(mean_abs_delta=-t["mean_abs_delta"]), "non-negative"),
    (lambda t: t.assign(layer=t["layer"] + 0.5), "integer layer index"),
])
def test_plot_weight_drift_refuses_bad_tables(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        plot_weight_drift(change(_figure_table()), tmp_path / "x.pdf", tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
