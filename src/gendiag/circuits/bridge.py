"""A merged fine-tuned model wrapped with TransformerLens, and the label direction it is read along.

TransformerLens 4 wraps a Hugging Face model in place (`TransformerBridge`) and exposes the usual
hook points (`blocks.{l}.hook_resid_pre`, `blocks.{l}.attn.hook_z`, ...). It must be given the
merged causal LM, not the `PeftModel` (which it cannot read), and the tokenizer (otherwise it tries
to reach the hub). What differs between architectures for the analysis (Gemma 2's post-block norms,
its (1 + weight) RMSNorm gain and its final soft-cap) comes from gendiag.circuits.architectures.

Every quantity is the label logit difference logit(malicious) - logit(legitimate) at the answer
position *before* any final soft-cap: the cap is monotone per logit, so it never changes which
label wins, and without it the difference is linear in the residual stream once the final norm's
scale is fixed, which is what direct logit attribution needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from gendiag.circuits.architectures import AnalysisQuirks, quirks_of
from gendiag.prompts import PromptFormat

log = logging.getLogger("gendiag.circuits")


@dataclass
class AnalysedModel:
    """A TransformerBridge over a merged model, with what the analyses need to read it."""

    bridge: torch.nn.Module
    hf_model: torch.nn.Module
    quirks: AnalysisQuirks
    label_ids: tuple[int, int]
    direction: torch.Tensor  # W_U[:, malicious] - W_U[:, legitimate], shape (d_model,)

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def decoder_layers(self) -> list[torch.nn.Module]:
        return list(self.hf_model.model.layers)

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The model's own final norm applied to residual vectors (the logit lens)."""
        return self.hf_model.model.norm(resid)

    def final_gain(self) -> torch.Tensor:
        return self.quirks.rms_norm_gain(self.hf_model.model.norm)

    def attention_output_gain(self, layer: int) -> torch.Tensor | None:
        """Gain of the norm between a layer's attention output and the residual (Gemma 2), or None."""
        norm = self.quirks.attention_output_norm_of(self.decoder_layers[layer])
        return None if norm is None else self.quirks.rms_norm_gain(norm)


def wrap_for_analysis(
    merged: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, family: str, prompt: PromptFormat
) -> AnalysedModel:
    """Wrap a merged causal LM (see gendiag.models.merge.load_merged) with TransformerLens."""
    from transformer_lens import TransformerBridge

    if hasattr(merged, "peft_config"):
        raise TypeError("wrap the merged model (load_merged / merge_and_unload()), not the PeftModel")
    quirks = quirks_of(family)
    merged.requires_grad_(False)
    bridge = TransformerBridge.boot_transformers(
        merged.config.name_or_path or family, hf_model=merged, tokenizer=tokenizer, device=merged.device
    )
    label_ids = prompt.label_token_ids(tokenizer)
    unembed = merged.get_output_embeddings().weight.detach()
    if getattr(merged.get_output_embeddings(), "bias", None) is not None and merged.get_output_embeddings().bias.any():
        raise ValueError("the label direction assumes an LM head without bias")
    direction = (unembed[label_ids[1]] - unembed[label_ids[0]]).float()
    log.info(
        "wrapped %s with TransformerBridge: %d layers x %d heads (%d KV heads), final soft-cap %s",
        family,
        bridge.cfg.n_layers,
        bridge.cfg.n_heads,
        getattr(bridge.cfg, "n_key_value_heads", None) or bridge.cfg.n_heads,
        quirks.final_logit_softcap(merged.config),
    )
    return AnalysedModel(bridge, merged, quirks, label_ids, direction)
