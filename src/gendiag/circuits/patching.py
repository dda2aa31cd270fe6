"""Logit lens, direct logit attribution, activation patching and attribution patching on one pair.

Conventions (TransformerLens names; layer index l counts the blocks already applied):

* residual point l < n_layers is `blocks.{l}.hook_resid_pre`; point n_layers is the last block's
  `hook_resid_post`, so the logit lens has n_layers + 1 values, from the embeddings to the output;
* the metric is the label logit difference at the answer position before any final soft-cap
  (see gendiag.circuits.bridge), and patching effects are normalised per pair:
  0 = the corrupted run's value, 1 = the clean run's (`normalised_effect`);
* activation patching runs the corrupted prompt with one clean activation put back. The sweep
  puts a different position (or head) back in each row of one batch, so a layer costs one
  batched forward pass instead of one pass per position;
* attribution patching is its first-order estimate from one forward and one backward pass on the
  corrupted prompt: (clean - corrupted activation) . d metric / d activation;
* no analysis reads the model's logits: the metric is computed from the last residual point. Every
  forward here therefore asks the model for the last position's logits only (`ANSWER_LOGITS_ONLY`,
  transformers' `logits_to_keep=1`), so the LM head (and Gemma 2's soft-cap) runs on one position
  instead of all of them. Only the LM head's input is trimmed: the blocks and the final norm
  still run on every position, so every hook (`hook_resid_*`, `hook_z`, `hook_pattern`,
  `ln_final.hook_scale`) sees the full sequence and the metric is unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gendiag.circuits.bridge import AnalysedModel
from gendiag.circuits.pairs import MinimalPair

# Passed through TransformerBridge's forward to the HF causal LM: the LM head only at the last position
# (the answer position: prompts are unpadded, or left-padded). See the module docstring.
ANSWER_LOGITS_ONLY = {"logits_to_keep": 1}


def resid_point(model: AnalysedModel, point: int) -> str:
    if point < model.n_layers:
        return f"blocks.{point}.hook_resid_pre"
    return f"blocks.{model.n_layers - 1}.hook_resid_post"


def normalised_effect(patched, clean, corrupted):
    """(patched - corrupted) / (clean - corrupted): 0 = corrupted, 1 = fully restored to clean.

    Fails when clean and corrupted are equal, where the ratio means nothing; callers drop such
    pairs first (see `min_effect` in the circuits config).
    """
    clean = np.asarray(clean, dtype=float)
    corrupted = np.asarray(corrupted, dtype=float)
    gap = clean - corrupted
    if np.any(np.abs(gap) < 1e-9):
        raise ValueError("clean and corrupted metrics are equal: the normalised effect is undefined")
    return (np.asarray(patched, dtype=float) - corrupted) / gap


def _tokens(ids, device) -> torch.Tensor:
    return torch.tensor([list(ids)], dtype=torch.long, device=device)


def _cache_names(model: AnalysedModel) -> set[str]:
    names = {resid_point(model, p) for p in range(model.n_layers + 1)}
    names.add("ln_final.hook_scale")
    for layer in range(model.n_layers):
        names.update({f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.attn.hook_pattern",
                      f"blocks.{layer}.hook_mlp_out"})
        if model.quirks.attention_output_norm is not None:
            # TransformerLens's name for Gemma 2's post-attention norm.
            names.add(f"blocks.{layer}.ln1_post.hook_scale")
    return names


@torch.no_grad()
def run_cached(model: AnalysedModel, ids) -> dict[str, torch.Tensor]:
    """The activations the analyses read, for one prompt (batch of one)."""
    names = _cache_names(model)
    _, cache = model.bridge.run_with_cache(_tokens(ids, model.hf_model.device), names_filter=lambda n: n in names,
                                           **ANSWER_LOGITS_ONLY)
    return {name: cache[name].detach().float() for name in names}


def logit_diff_of(model: AnalysedModel, final_resid: torch.Tensor) -> torch.Tensor:
    """The metric from the last block's output at the answer position, per batch row."""
    return model.final_norm(final_resid[:, -1, :]).float() @ model.direction


def logit_lens(model: AnalysedModel, cache: dict[str, torch.Tensor]) -> np.ndarray:
    """The metric read off each residual point (final norm applied), shape (n_layers + 1,)."""
    points = torch.stack([cache[resid_point(model, p)][0, -1] for p in range(model.n_layers + 1)])
    with torch.no_grad():
        return (model.final_norm(points).float() @ model.direction).cpu().numpy()


def direct_logit_attribution(model: AnalysedModel, cache: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Each component's direct contribution to the metric, with the final norm's scale frozen.

    Components: the embeddings, every attention head (its z times its slice of W_O, through the
    frozen post-attention norm where the architecture has one) and every MLP. They add up to the
    metric exactly.
    """
    scale = cache["ln_final.hook_scale"][0, -1]
    readout = model.final_gain().float() * model.direction / scale
    W_O = model.bridge.W_O.detach().float()  # (layer, head, d_head, d_model)
    rows = [{"component": "embed", "layer": -1, "head": -1,
             "dla": float(cache[resid_point(model, 0)][0, -1] @ readout)}]
    for layer in range(model.n_layers):
        heads = torch.einsum("hd,hdm->hm", cache[f"blocks.{layer}.attn.hook_z"][0, -1], W_O[layer])
        gain = model.attention_output_gain(layer)
        if gain is not None:
            heads = heads * gain.float() / cache[f"blocks.{layer}.ln1_post.hook_scale"][0, -1]
        for head, value in enumerate((heads @ readout).tolist()):
            rows.append({"component": "head", "layer": layer, "head": head, "dla": value})
        rows.append({"component": "mlp", "layer": layer, "head": -1,
                     "dla": float(cache[f"blocks.{layer}.hook_mlp_out"][0, -1] @ readout)})
    return pd.DataFrame(rows)


def attention_to_positions(model: AnalysedModel, cache: dict[str, torch.Tensor], positions) -> np.ndarray:
    """Attention of the answer position to `positions`, summed, per (layer, head)."""
    index = list(positions)
    return np.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1, index].sum(-1).cpu().numpy()
                     for layer in range(model.n_layers)])


@torch.no_grad()
def _patched_metrics(model: AnalysedModel, corrupt_ids, hook_name: str, patch, n_rows: int,
                     batch_size: int) -> np.ndarray:
    """The metric of `n_rows` corrupted runs in which `patch(act, rows)` edits `hook_name`."""
    final_name = resid_point(model, model.n_layers)
    out = np.empty(n_rows)
    for start in range(0, n_rows, batch_size):
        rows = range(start, min(start + batch_size, n_rows))
        tokens = _tokens(corrupt_ids, model.hf_model.device).expand(len(rows), -1)
        captured = {}

        def edit(act, hook, rows=rows):
            return patch(act, rows)

        def capture(act, hook, captured=captured):
            captured["final"] = act

        model.bridge.run_with_hooks(tokens, fwd_hooks=[(hook_name, edit), (final_name, capture)],
                                    **ANSWER_LOGITS_ONLY)
        out[rows.start : rows.stop] = logit_diff_of(model, captured["final"].float()).cpu().numpy()
    return out


def patch_resid_positions(model: AnalysedModel, pair: MinimalPair, clean: dict, point: int,
                          batch_size: int, corrupt_metric: float | None = None) -> np.ndarray:
    """Metric with the clean residual at `point` restored at one position per row, shape (n_tokens,).

    Attention is causal, so before the first edited position the clean and corrupted residuals are
    the same at every point: restoring one there changes nothing, and those rows are the corrupted
    metric without a forward pass (most of a pair whose edit comes late in the message). Pass
    `corrupt_metric` when it is known; otherwise one unpatched forward gives it.
    """
    name = resid_point(model, point)
    source = clean[name][0]
    first = min(pair.edited_positions)

    def patch(act, rows):
        act = act.clone()
        for i, position in enumerate(rows):
            act[i, first + position] = source[first + position].to(act.dtype)
        return act

    out = np.empty(pair.n_tokens)
    if first and corrupt_metric is None:
        corrupt_metric = _patched_metrics(model, pair.corrupt_ids, name, lambda act, rows: act, 1, 1)[0]
    out[:first] = corrupt_metric
    out[first:] = _patched_metrics(model, pair.corrupt_ids, name, patch, pair.n_tokens - first, batch_size)
    return out


def patch_heads(model: AnalysedModel, pair: MinimalPair, clean: dict, layer: int, batch_size: int) -> np.ndarray:
    """Metric with one head's clean output (z, every position) restored per row, shape (n_heads,)."""
    name = f"blocks.{layer}.attn.hook_z"
    source = clean[name][0]

    def patch(act, rows):
        act = act.clone()
        for i, head in enumerate(rows):
            act[i, :, head] = source[:, head].to(act.dtype)
        return act

    return _patched_metrics(model, pair.corrupt_ids, name, patch, model.n_heads, batch_size)


def attribution_patching(model: AnalysedModel, pair: MinimalPair, clean: dict
                         ) -> tuple[np.ndarray, np.ndarray, float]:
    """First-order patching estimates from the corrupted run's gradients.

    Returns the residual estimate (n_layers + 1, n_tokens), the head estimate (n_layers, n_heads),
    both in metric units (not normalised), and the corrupted metric.
    """
    names = [resid_point(model, p) for p in range(model.n_layers + 1)]
    names += [f"blocks.{layer}.attn.hook_z" for layer in range(model.n_layers)]
    saved: dict[str, torch.Tensor] = {}

    def keeper(name):
        # Saved under the name asked for: hook.name can be the canonical name behind an alias.
        def keep(act, hook):
            if not act.requires_grad:  # the embeddings: a leaf the rest of the graph grows from
                act = act.detach().requires_grad_(True)
            act.retain_grad()
            saved[name] = act
            return act

        return keep

    final_name = resid_point(model, model.n_layers)
    with torch.enable_grad():
        model.bridge.run_with_hooks(_tokens(pair.corrupt_ids, model.hf_model.device),
                                    fwd_hooks=[(name, keeper(name)) for name in names], **ANSWER_LOGITS_ONLY)
        metric = logit_diff_of(model, saved[final_name].float())[0]
        metric.backward()
    resid = np.stack([((clean[name][0] - saved[name][0].detach().float()) * saved[name].grad[0].float()).sum(-1)
                      .cpu().numpy() for name in names[: model.n_layers + 1]])
    heads = np.stack([((clean[name][0] - saved[name][0].detach().float()) * saved[name].grad[0].float())
                      .sum(dim=(0, 2)).cpu().numpy() for name in names[model.n_layers + 1 :]])
    return resid, heads, float(metric.detach())
