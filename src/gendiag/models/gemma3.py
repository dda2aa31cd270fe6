"""Gemma 3 (Gemma 3 270M in real-small): Gemma 2's block with query/key norms instead of soft-caps.

* Queries and keys are RMS-normalised per head (`q_norm`, `k_norm`) and nothing is soft-capped:
  neither the attention logits nor the final logits, so SDPA attention computes it exactly.
* Like Gemma 2: each block's attention and feed-forward outputs are normalised before they join
  the residual stream (`post_attention_layernorm`, `post_feedforward_layernorm`), RMSNorms scale
  by (1 + weight), and embeddings are multiplied by sqrt(hidden_size).
* Five sliding-window layers (window 512) per global layer, with a separate RoPE base for each.
* Its 262K vocabulary makes full-vocabulary logits expensive: score only the answer position.
* The public 270M checkpoint is a base model with no chat template; the embeddings (tied to the
  LM head) are 170M of its 268M parameters.
"""

from __future__ import annotations

from transformers import Gemma3ForCausalLM, Gemma3TextConfig

FAMILY = "gemma3"
MODEL_CLASS = Gemma3ForCausalLM
ATTN_IMPLEMENTATION = "sdpa"
LORA_TARGETS_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_ARCHITECTURES = ("gemma3",)


def tiny_config(shape: dict, vocab_size: int, special_ids: dict[str, int]) -> Gemma3TextConfig:
    head_dim = shape["hidden_size"] // shape["num_heads"]
    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_kv_heads"],
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=shape.get("sliding_window") or shape["max_position_embeddings"],
        max_position_embeddings=shape["max_position_embeddings"],
        tie_word_embeddings=False,
        attn_implementation=ATTN_IMPLEMENTATION,
        **special_ids,
    )
