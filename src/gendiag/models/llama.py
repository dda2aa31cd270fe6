"""Llama (Llama 3.1 8B in the study): grouped-query attention, RoPE, SwiGLU, RMSNorm.

Nothing architecture-specific is needed beyond the config: SDPA attention supports everything
Llama does, and the hub checkpoints have no pad token (we pad with end-of-sequence instead).
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

FAMILY = "llama"
MODEL_CLASS = LlamaForCausalLM
ATTN_IMPLEMENTATION = "sdpa"
LORA_TARGETS_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_ARCHITECTURES = ("llama",)  # general.architecture of GGUF files of this family


def tiny_config(shape: dict, vocab_size: int, special_ids: dict[str, int]) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_kv_heads"],
        max_position_embeddings=shape["max_position_embeddings"],
        tie_word_embeddings=False,
        attn_implementation=ATTN_IMPLEMENTATION,
        **special_ids,
    )
