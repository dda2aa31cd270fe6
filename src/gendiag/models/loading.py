"""Loading base models for training and inference: devices, dtypes, 4-bit quantisation.

bitsandbytes trap (AVX512-BF16 CPUs): the first `eval()` + `no_grad` forward through a
`Linear4bit` repacks its weights into a CPU layout whose matmul has no autograd kernel; gradients
then silently stop flowing through the layer and merging adapters breaks. Every 4-bit load goes
through `disable_cpu_weight_repacking`, and a test checks gradients after an evaluation pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedTokenizerBase,
)

from gendiag.models import family_module

log = logging.getLogger("gendiag.models")


def resolve_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{preference}' was requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(preference)


def resolve_dtype(preference: str, device: torch.device) -> torch.dtype:
    """bf16 on GPUs (Gemma activations overflow fp16), fp32 on CPUs (bf16 is no faster there)."""
    if preference == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[preference]


def resolve_compute(compute: dict) -> tuple[torch.device, torch.dtype]:
    """The device and dtype a model job runs with, from the config's `compute` block."""
    device = resolve_device(compute.get("device", "auto"))
    return device, resolve_dtype(compute.get("dtype", "auto"), device)


def load_tokenizer(base_dir: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def disable_cpu_weight_repacking(model: torch.nn.Module) -> int:
    """Keep bitsandbytes from repacking 4-bit weights on CPU (see module docstring)."""
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_causal_lm(
    base_dir: str | Path,
    family: str,
    quantization: dict,
    device: torch.device,
    dtype: torch.dtype,
    classifier: bool = False,
) -> torch.nn.Module:
    """The base model, in 4-bit NF4 when `quantization.load_in_4bit`, else in `dtype`.

    With `classifier`, the same base with a new two-class sequence-classification head (`score`,
    kept in full precision, initialised from the torch seed) in place of the LM head.
    """
    module = family_module(family)
    kwargs: dict = {"dtype": dtype, "attn_implementation": module.ATTN_IMPLEMENTATION}
    if quantization.get("load_in_4bit", True):
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quantization.get("quant_type", "nf4"),
            bnb_4bit_use_double_quant=quantization.get("double_quant", True),
            bnb_4bit_compute_dtype=dtype,
            **({"llm_int8_skip_modules": ["score"]} if classifier else {}),
        )
        kwargs["device_map"] = {"": str(device)}
    if classifier:
        tokenizer = load_tokenizer(base_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base_dir), use_safetensors=True, num_labels=2, pad_token_id=tokenizer.pad_token_id, **kwargs
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), use_safetensors=True, **kwargs)
    if not quantization.get("load_in_4bit", True):
        model.to(device)
    patched = disable_cpu_weight_repacking(model)
    log.info("loaded %s base from %s (%s, %s, %d 4-bit layers)", family, base_dir, device, dtype, patched)
    return model
