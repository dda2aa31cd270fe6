"""A fine-tuned model as one plain network: the LoRA update merged into a full-precision base.

Analyses (SHAP, circuits) run thousands of forward passes, or need weights as ordinary tensors,
so they use a merged model instead of the 4-bit base with an adapter beside it. The adapter was
trained against the NF4-quantised base, so the base it is merged into is that quantised base
dequantised: the merged model computes the function the 4-bit model computes, up to rounding,
rather than the function of the original full-precision weights (which the adapter never saw).
`prediction_agreement` measures how close the two are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from gendiag.models.loading import load_causal_lm

log = logging.getLogger("gendiag.models")


def dequantize_4bit_layers(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Replace every bitsandbytes `Linear4bit` with an `nn.Linear` holding its dequantised weight."""
    import bitsandbytes as bnb

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, bnb.nn.Linear4bit):
                continue
            weight = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state)
            linear = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                     device=weight.device, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(weight.to(dtype))
                if child.bias is not None:
                    linear.bias.copy_(child.bias.to(dtype))
            setattr(parent, name, linear)
            replaced += 1
    if replaced:
        # Without these, transformers and peft keep treating the model as a 4-bit one.
        for attribute in ("is_loaded_in_4bit", "is_quantized"):
            if hasattr(model, attribute):
                setattr(model, attribute, False)
        for attribute in ("hf_quantizer", "quantization_method"):
            if hasattr(model, attribute):
                setattr(model, attribute, None)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return replaced


def load_merged(
    base_dir: str | Path,
    family: str,
    adapter_dir: str | Path | None,
    quantization: dict,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.nn.Module:
    """The base as training saw it (dequantised when trained in 4-bit) with the adapter merged in."""
    model = load_causal_lm(base_dir, family, quantization, device, dtype)
    replaced = dequantize_4bit_layers(model, dtype) if quantization.get("load_in_4bit", True) else 0
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    log.info("merged %s from %s (+ %s): %d layers dequantised to %s", family, base_dir,
             adapter_dir or "no adapter", replaced, dtype)
    return model.eval()


def prediction_agreement(reference_log_odds: np.ndarray, merged_log_odds: np.ndarray) -> dict[str, float]:
    """How far the merged model's log-odds are from the reference (4-bit) model's on the same inputs."""
    reference = np.asarray(reference_log_odds, dtype=float)
    merged = np.asarray(merged_log_odds, dtype=float)
    if reference.shape != merged.shape or reference.size == 0:
        raise ValueError(f"agreement needs two equal, non-empty arrays; got {reference.shape} and {merged.shape}")
    return {
        "n": int(reference.size),
        "label_agreement": float(np.mean((reference > 0) == (merged > 0))),
        "max_abs_log_odds_diff": float(np.max(np.abs(reference - merged))),
        "mean_abs_log_odds_diff": float(np.mean(np.abs(reference - merged))),
    }
