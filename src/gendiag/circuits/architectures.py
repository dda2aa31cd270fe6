"""What the circuit analysis must know about each architecture, in one place.

The analyses read a model through TransformerLens hook points, which look the same for every
architecture. What does not look the same, and how each difference is handled:

* Gemma 2 and Gemma 3 normalise each block's output before adding it to the residual stream (a
  post-attention and a post-feed-forward RMSNorm). Per-head outputs therefore add up to what the attention block
  writes only once that norm's scale is frozen at its value on the prompt; Llama and Mistral add
  the attention output as is. (In HF's Gemma2DecoderLayer `post_attention_layernorm` is that
  post-attention norm; in Llama and Mistral the same name is the norm *before* the MLP.)
* Gemma 2's and Gemma 3's RMSNorms scale by (1 + weight); Llama's and Mistral's by weight.
* Gemma 2 soft-caps the final logits (tanh, cap 30). The cap is monotone per logit, so the lens,
  DLA and patching all read the logit difference before it (gendiag.circuits.bridge).
* Gemma 2 multiplies the embeddings by sqrt(d_model): the lens starts at `blocks.0.hook_resid_pre`,
  which TransformerLens takes after the scaling, never at the raw embedding matrix.
* Gemma 2 alternates sliding-window and global layers, and Mistral may use a sliding window: a
  position outside a query's window gets no attention, and the cached patterns already show it.
* Every model here uses grouped-query attention: `hook_z` and `hook_pattern` are per query head,
  so heads are patched and ranked per query head (KV heads are shared by groups of them).

This module is separate from gendiag.models.<family> on purpose: those files are inputs of the
training rules, and a change to how circuits read a model must not retrain it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AnalysisQuirks:
    family: str
    norm_weight_offset: float  # an RMSNorm scales by (offset + weight)
    attention_output_norm: str | None  # the decoder layer's norm between attention and residual
    final_softcap_attribute: str | None  # the config attribute of the final logit soft-cap

    def rms_norm_gain(self, norm: torch.nn.Module) -> torch.Tensor:
        return self.norm_weight_offset + norm.weight

    def attention_output_norm_of(self, layer: torch.nn.Module) -> torch.nn.Module | None:
        return None if self.attention_output_norm is None else getattr(layer, self.attention_output_norm)

    def final_logit_softcap(self, config) -> float | None:
        return None if self.final_softcap_attribute is None else getattr(config, self.final_softcap_attribute, None)


QUIRKS = {
    "llama": AnalysisQuirks("llama", 0.0, None, None),
    "mistral": AnalysisQuirks("mistral", 0.0, None, None),
    "gemma2": AnalysisQuirks("gemma2", 1.0, "post_attention_layernorm", "final_logit_softcapping"),
    # Gemma 3 keeps Gemma 2's post-block norms and (1 + weight) gains; its config has the soft-cap
    # attribute set to None (it normalises queries and keys instead), which reads as no cap.
    "gemma3": AnalysisQuirks("gemma3", 1.0, "post_attention_layernorm", "final_logit_softcapping"),
}


def quirks_of(family: str) -> AnalysisQuirks:
    try:
        return QUIRKS[family]
    except KeyError:
        raise ValueError(
            f"circuit analysis does not know model family '{family}'; known: {sorted(QUIRKS)}"
            " (add its norms and soft-cap to gendiag.circuits.architectures)"
        ) from None
