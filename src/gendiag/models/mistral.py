"""Mistral (Mistral 7B in the study): Llama-like blocks with optional sliding-window attention.

A tiny Mistral without a sliding window and with Llama's seed is bit-identical to tiny Llama, so
the tiny stand-in keeps a sliding window shorter than its prompts (when the shape gives one) and
every architecture is initialised from its own seed.
"""

from __future__ import annotations

from transformers import MistralConfig, MistralForCausalLM

FAMILY = "mistral"
MODEL_CLASS = MistralForCausalLM
ATTN_IMPLEMENTATION = "sdpa"
LORA_TARGETS_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_ARCHITECTURES = ("mistral",)  # general.architecture of GGUF files of this family


def tiny_config(shape: dict, vocab_size: int, special_ids: dict[str, int]) -> MistralConfig:
    return MistralConfig(
        vocab_size=vocab_size,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_kv_heads"],
        max_position_embeddings=shape["max_position_embeddings"],
        sliding_window=shape.get("sliding_window"),
        tie_word_embeddings=False,
        attn_implementation=ATTN_IMPLEMENTATION,
        **special_ids,
    )
