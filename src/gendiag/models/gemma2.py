"""Gemma 2 (Gemma 2 9B in the study): the architecture with the most quirks.

* Attention logits are soft-capped (tanh, cap 50) and so are the final logits (cap 30). SDPA
  cannot soft-cap, so Gemma 2 must run with eager attention (or flash-attention >= 2.6); the
  soft-capped final logits bound p(label) but do not change which label wins.
* Layers alternate local sliding-window and global attention.
* Embeddings are scaled by sqrt(hidden_size) and the attention scale uses
  `query_pre_attn_scalar` instead of head_dim.
* Its 256K vocabulary makes full-vocabulary logits expensive: score only the answer position.
"""

from __future__ import annotations

from transformers import Gemma2Config, Gemma2ForCausalLM

FAMILY = "gemma2"
MODEL_CLASS = Gemma2ForCausalLM
ATTN_IMPLEMENTATION = "eager"
LORA_TARGETS_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_ARCHITECTURES = ("gemma2",)  # general.architecture of GGUF files of this family


def tiny_config(shape: dict, vocab_size: int, special_ids: dict[str, int]) -> Gemma2Config:
    head_dim = shape["hidden_size"] // shape["num_heads"]
    return Gemma2Config(
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
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        tie_word_embeddings=False,
        attn_implementation=ATTN_IMPLEMENTATION,
        **special_ids,
    )
