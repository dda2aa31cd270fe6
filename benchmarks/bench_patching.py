"""patching_<arch>: our batched activation-patching sweep against TransformerLens's per-component loop.

Both sweeps patch the same components of the same minimal pairs on the same `TransformerBridge`
(the merged fine-tuned model, `gendiag.circuits.bridge.wrap_for_analysis`):

* the clean residual stream at every point (`blocks.{l}.hook_resid_pre` for each layer, and the
  last block's `hook_resid_post`) and every position, one position per patched run;
* every head's clean `hook_z` at all positions, one head per patched run.

ours: `gendiag.circuits.patching.patch_resid_positions` / `patch_heads`, which put a different
component back in each row of one batched forward pass (`circuits.patch_batch_size` rows) and read
the metric (label logit difference before any final soft-cap) off the last residual point.

baseline: `transformer_lens.patching` -- `get_act_patch_resid_pre`, `generic_activation_patch` with
`layer_pos_patch_setter` for the final `resid_post` point, and `get_act_patch_attn_head_out_all_pos`
-- i.e. the tutorial loop: one forward pass per component with one hook, the metric computed from
the returned logits (logit[malicious] - logit[legitimate] at the last position; Gemma 2's final
soft-cap undone with atanh, so both sides compute the same number).

The clean cache (`gendiag.circuits.patching.run_cached`) is computed once per pair, untimed, and
given to both. The pairs are the study's: candidates built as the circuits rule builds them, kept
when |clean - corrupted| >= `circuits.min_effect`, taken round-robin over the test sets. Equality:
the two metric matrices must agree (`np.allclose`, atol 1e-4, rtol 1e-4) and the normalised
effects are compared too.
"""

from __future__ import annotations

import time
from itertools import chain, zip_longest
from pathlib import Path

import common
import numpy as np
import pandas as pd


def choose_pairs(model, tokenizer, prompt, config, results: Path, n_pairs: int):
    from gendiag.circuits.study import build_pairs, pair_logit_diffs, select_pairs

    settings = config["circuits"]
    evaluated = config["evaluation"]["testsets"] or sorted(config["corpora"])
    names = settings.get("testsets") or evaluated
    testsets = {name: pd.read_parquet(results / "testsets" / f"{name}.parquet") for name in names}
    pairs, _ = build_pairs(testsets, tokenizer, prompt, int(config["prompt"]["max_length"]), settings)
    clean, corrupt = pair_logit_diffs(model, pairs)
    status = select_pairs(pairs, clean, corrupt, float(settings["min_effect"]), int(settings["pairs_per_testset"]))
    by_testset: dict[str, list] = {}
    for pair, s in zip(pairs, status, strict=True):
        if s == "analysed":
            by_testset.setdefault(pair.testset, []).append(pair)
    interleaved = [p for p in chain.from_iterable(zip_longest(*by_testset.values())) if p is not None]
    return interleaved[:n_pairs], len(pairs)


def ours_sweep(model, pair, clean, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from gendiag.circuits import patching

    resid = np.stack([patching.patch_resid_positions(model, pair, clean, p, batch_size)
                      for p in range(model.n_layers + 1)])
    heads = np.stack([patching.patch_heads(model, pair, clean, layer, batch_size) for layer in range(model.n_layers)])
    return resid, heads


def baseline_sweep(model, pair, clean) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from transformer_lens import patching as tl_patching

    legit, malicious = model.label_ids
    cap = model.quirks.final_logit_softcap(model.hf_model.config)

    def metric(logits):
        last = logits[0, -1].double()
        if cap:
            last = cap * torch.atanh(last / cap)
        return last[malicious] - last[legit]

    tokens = torch.tensor([list(pair.corrupt_ids)], device=model.hf_model.device)
    resid_pre = tl_patching.get_act_patch_resid_pre(model.bridge, tokens, clean, metric)
    last_layer = model.n_layers - 1
    index = pd.DataFrame({"layer": last_layer, "pos": np.arange(pair.n_tokens)})
    resid_post = tl_patching.generic_activation_patch(model.bridge, tokens, clean, metric,
                                                      tl_patching.layer_pos_patch_setter, "resid_post",
                                                      index_df=index)
    heads = tl_patching.get_act_patch_attn_head_out_all_pos(model.bridge, tokens, clean, metric)
    resid = torch.cat([resid_pre, resid_post[None]]).cpu().numpy()
    return resid, heads.cpu().numpy()


def run(arch: str, results: Path, config: dict, n_pairs: int, recipe: str = "generalist") -> dict:
    import torch
    from transformer_lens import patching as tl_patching

    from gendiag.circuits import patching
    from gendiag.circuits.bridge import wrap_for_analysis
    from gendiag.models.loading import load_tokenizer
    from gendiag.models.merge import load_merged

    common.setup_torch()
    tl_patching.tqdm = lambda iterable, *args, **kwargs: iterable  # no progress bar per component
    prompt = common.prompt_format(config)
    family = config["models"][arch]["family"]
    base_dir = results / "models" / arch / "base"
    adapter_dir = results / "finetune" / arch / recipe / "standard" / "seed0" / "adapter"
    merged = load_merged(base_dir, family, adapter_dir, dict(config["training"]["quantization"]),
                         torch.device("cpu"), torch.float32)
    tokenizer = load_tokenizer(base_dir)
    model = wrap_for_analysis(merged, tokenizer, family, prompt)
    model.bridge.eval()
    batch_size = int(config["circuits"]["patch_batch_size"])
    pairs, n_candidates = choose_pairs(model, tokenizer, prompt, config, results, n_pairs)
    if not pairs:
        raise RuntimeError(f"{arch}: no minimal pair moves the prediction by circuits.min_effect")

    load_before = common.loadavg()
    warm = pairs[0]
    warm_clean = patching.run_cached(model, warm.clean_ids)
    patching.patch_heads(model, warm, warm_clean, 0, batch_size)  # warm-up, untimed
    totals = {"ours": 0.0, "baseline": 0.0}
    max_metric_diff = max_effect_diff = 0.0
    same = True
    runs = {"ours": 0, "baseline": 0}
    tokens = []
    for pair in pairs:
        clean = patching.run_cached(model, pair.clean_ids)
        corrupt = patching.run_cached(model, pair.corrupt_ids)
        clean_metric = float(patching.logit_diff_of(model, clean[patching.resid_point(model, model.n_layers)]))
        corrupt_metric = float(patching.logit_diff_of(model, corrupt[patching.resid_point(model, model.n_layers)]))
        started = time.perf_counter()
        ours = ours_sweep(model, pair, clean, batch_size)
        totals["ours"] += time.perf_counter() - started
        started = time.perf_counter()
        baseline = baseline_sweep(model, pair, clean)
        totals["baseline"] += time.perf_counter() - started
        components = (model.n_layers + 1) * pair.n_tokens + model.n_layers * model.n_heads
        runs["baseline"] += components
        runs["ours"] += (model.n_layers + 1) * -(-pair.n_tokens // batch_size) + model.n_layers * -(
            -model.n_heads // batch_size)
        tokens.append(pair.n_tokens)
        for a, b in zip(ours, baseline, strict=True):
            if a.shape != b.shape:
                raise RuntimeError(f"effect matrices differ in shape: {a.shape} vs {b.shape}")
            same = same and bool(np.allclose(a, b, atol=1e-4, rtol=1e-4))
            max_metric_diff = max(max_metric_diff, float(np.max(np.abs(a - b))))
            effect_a = patching.normalised_effect(a, clean_metric, corrupt_metric)
            effect_b = patching.normalised_effect(b, clean_metric, corrupt_metric)
            max_effect_diff = max(max_effect_diff, float(np.max(np.abs(effect_a - effect_b))))
    return {
        "name": f"patching_{arch}",
        "ours": round(totals["ours"] / len(pairs), 3),
        "baseline": round(totals["baseline"] / len(pairs), 3),
        "unit": "s/pair",
        "ratio": round(totals["baseline"] / totals["ours"], 2),
        "baseline_name": "transformer_lens.patching per-component loop (one forward + hook per position/head)",
        "allclose": same,
        "max_abs_metric_diff": max_metric_diff,
        "max_abs_effect_diff": max_effect_diff,
        "n_pairs": len(pairs),
        "n_candidate_pairs": n_candidates,
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "components_per_pair": round(runs["baseline"] / len(pairs), 1),
        "forward_passes_per_pair_ours": round(runs["ours"] / len(pairs), 1),
        "patch_batch_size": batch_size,
        "testsets": sorted({p.testset for p in pairs}),
        "arch": arch,
        "loadavg_1min": [load_before, common.loadavg()],
    }
