"""Weight drift from the base: the size of the merged LoRA update of every adapted module.

A LoRA adapter changes a frozen weight ``W`` (out x in) into ``W + ΔW`` with
``ΔW = scaling · B @ A``, ``A`` (r x in), ``B`` (out x r) and ``scaling = alpha / r`` (``alpha / sqrt(r)``
with rank-stabilised LoRA), where ``r`` and ``alpha`` may be overridden per module by the config's
``rank_pattern`` and ``alpha_pattern``. This is exactly what PEFT adds to the weight on
``merge_and_unload``, so the drift is read from the saved adapter alone: no base model is loaded.

``ΔW`` of a real model is large (4096 x 14336 for an MLP projection), so it is built a block of rows
at a time and only its sum is kept (its squared norm comes from r x r Gram matrices); ``A`` and ``B`` are
read one module at a time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
COLUMNS = ["layer", "module", "mean_abs_delta", "frobenius", "rows", "cols", "rank"]
# Columns of `adapter_drift`'s table that are not keys of a run; `drift_by_layer` groups by the rest.
_PER_MODULE = {"module", "mean_abs_delta", "frobenius", "rows", "cols", "rank"}
# PEFT saves LoRA weights as ``base_model.model.<module path>.lora_{A,B}.weight`` (the adapter name dropped).
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
# Config switches that make ΔW something other than scaling · B @ A, or move it off the decoder layers.
_UNSUPPORTED = {
    "use_dora": "DoRA rescales the merged weight by a learnt magnitude vector, so ΔW needs the base weight",
    "use_qalora": "QA-LoRA pools the input before A, so B @ A is not the weight update",
    "lora_bias": "the adapter also trains a bias (lora_B.bias), which this drift does not cover",
    "layer_replication": "replicated layers share base weights, so the layer index is ambiguous",
    "target_parameters": "LoRA on bare parameters (target_parameters) is not a per-module B @ A update",
    "use_bdlora": "BD-LoRA uses block-diagonal factors",
}
# Rows of ΔW built at once: at most this many elements per block (64 MiB of float32).
_BLOCK_ELEMENTS = 1 << 24


def adapter_drift(adapter_dir: str | Path) -> pd.DataFrame:
    """Mean |ΔW| and ‖ΔW‖_F of every LoRA-adapted module of the PEFT adapter in `adapter_dir`.

    One row per (layer, module), sorted by layer then module, with the columns
    ``layer`` (the decoder layer index, from ``...layers.<i>...`` in the module path), ``module``
    (the last part of the path, e.g. ``q_proj``), ``mean_abs_delta`` (mean |ΔW| over all elements),
    ``frobenius`` (‖ΔW‖_F), ``rows`` and ``cols`` (ΔW's shape, out x in features) and ``rank`` (r).

    Raises FileNotFoundError when the adapter's config or weights are missing and ValueError when
    the adapter is not a plain LoRA adapter (DoRA, QA-LoRA, a trained bias, full weights saved with
    ``modules_to_save``, ...) or holds no LoRA weights.
    """
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / CONFIG_NAME, adapter_dir / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: expected a PEFT LoRA adapter (adapter_config.json and adapter_model.safetensors, "
                f"as the finetune rule saves it with save_pretrained) in {adapter_dir}"
            )
    config = json.loads(config_path.read_text())
    _check_config(config, config_path)

    with safe_open(str(weights_path), framework="pt") as weights:
        parts = _lora_parts(weights.keys(), weights_path, _new_heads(config))
        layers_pattern = config.get("layers_pattern") or "layers"
        rows = []
        for module_path, (key_a, key_b) in parts.items():
            a, b = weights.get_tensor(key_a), weights.get_tensor(key_b)
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise ValueError(
                    f"{weights_path}: {module_path} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}; expected "
                    "2-D factors A (r x in) and B (out x r) of a linear layer"
                )
            r, alpha = _rank_and_alpha(config, module_path)
            if a.shape[0] != r:
                raise ValueError(
                    f"{weights_path}: {module_path} has rank {a.shape[0]} but {config_path} gives r={r} "
                    "(after rank_pattern); the config does not belong to these weights"
                )
            scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
            abs_sum, square_sum = _delta_sums(a, b)
            n = b.shape[0] * a.shape[1]
            rows.append({
                "layer": _layer_index(module_path, layers_pattern, weights_path),
                "module": module_path.rsplit(".", 1)[-1],
                "mean_abs_delta": abs(scaling) * abs_sum / n,
                "frobenius": abs(scaling) * math.sqrt(square_sum),
                "rows": int(b.shape[0]),
                "cols": int(a.shape[1]),
                "rank": int(r),
            })

    table = pd.DataFrame(rows, columns=COLUMNS)
    duplicated = table[table.duplicated(["layer", "module"], keep=False)]
    if not duplicated.empty:
        raise ValueError(
            f"{weights_path}: more than one adapted module per (layer, module) name: "
            f"{sorted(set(map(tuple, duplicated[['layer', 'module']].to_numpy().tolist())))}"
        )
    return table.sort_values(["layer", "module"], kind="stable").reset_index(drop=True)


def drift_by_layer(df: pd.DataFrame) -> pd.DataFrame:
    """`adapter_drift`'s table summed up per layer.

    ``mean_abs_delta`` is the mean |ΔW| over every adapted element of the layer (the modules' means
    weighted by their element counts), ``frobenius`` the norm of all of them together (the root of
    the sum of squares), ``n_modules`` and ``numel`` how many modules and elements that is. Columns
    other than `adapter_drift`'s (arch, recipe, seed, ... of stacked tables) are kept as keys.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"drift table is missing column(s) {missing}; expected {COLUMNS}, got {list(df.columns)}")
    keys = [c for c in df.columns if c not in _PER_MODULE]  # ends with "layer" unless reordered
    keys = [c for c in keys if c != "layer"] + ["layer"]
    numel = df["rows"].astype(np.float64) * df["cols"].astype(np.float64)
    work = df.assign(_numel=numel, _abs=df["mean_abs_delta"] * numel, _sq=df["frobenius"].astype(np.float64) ** 2)
    out = (
        work.groupby(keys, sort=False)
        .agg(_abs=("_abs", "sum"), _sq=("_sq", "sum"), n_modules=("module", "size"), numel=("_numel", "sum"))
        .reset_index()
    )
    out["mean_abs_delta"] = out["_abs"] / out["numel"]
    out["frobenius"] = np.sqrt(out["_sq"])
    out["numel"] = out["numel"].astype(np.int64)
    out = out[[*keys, "mean_abs_delta", "frobenius", "n_modules", "numel"]]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def _check_config(config: dict, path: Path) -> None:
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise ValueError(f"{path}: peft_type is {peft_type!r}; weight drift is defined for LoRA adapters only")
    for key, why in _UNSUPPORTED.items():
        if config.get(key):
            raise ValueError(f"{path}: {key}={config[key]!r} is not supported: {why}")


def _new_heads(config: dict) -> set[str]:
    """Modules a sequence-classification adapter adds (its head): they have no base weight to drift from."""
    if config.get("task_type") != "SEQ_CLS":
        return set()
    return {"score", "classifier"} | set(config.get("modules_to_save") or [])


def _lora_parts(
    keys: Iterable[str], weights_path: Path, new_heads: set[str] = frozenset()
) -> dict[str, tuple[str, str]]:
    """{module path: (lora_A key, lora_B key)} in file order; anything else in the file is refused,
    except the new classification head of a SEQ_CLS adapter (`new_heads`), which is skipped."""
    found: dict[str, dict[str, str]] = {}
    unsupported = []
    for key in keys:
        if key.removeprefix(_PREFIX).split(".")[0] in new_heads:
            continue
        match = _LORA_KEY.match(key)
        if match is None:
            unsupported.append(key)
            continue
        module = match["module"].removeprefix(_PREFIX)
        found.setdefault(module, {})[match["part"]] = key
    if unsupported:
        more = len(unsupported) - 5
        shown = ", ".join(sorted(unsupported)[:5]) + (f" and {more} more" if more > 0 else "")
        raise ValueError(
            f"{weights_path}: unsupported tensors {shown}; only lora_A/lora_B weights of linear layers are supported "
            "(no DoRA magnitude vectors, embedding LoRA, LoRA biases or modules_to_save copies)"
        )
    if not found:
        raise ValueError(f"{weights_path} holds no LoRA weights (no *.lora_A.weight / *.lora_B.weight tensors)")
    unpaired = sorted(m for m, p in found.items() if set(p) != {"A", "B"})
    if unpaired:
        raise ValueError(f"{weights_path}: modules with only one of lora_A/lora_B: {unpaired}")
    return {module: (p["A"], p["B"]) for module, p in found.items()}


def _pattern_key(patterns: Iterable[str], module_path: str) -> str | None:
    """The first pattern matching the end of `module_path`, as PEFT's `get_pattern_key` picks it."""
    for pattern in patterns:
        if re.match(rf"(.*\.)?({pattern})$", module_path):
            return pattern
    return None


def _rank_and_alpha(config: dict, module_path: str) -> tuple[int, float]:
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    r_key, alpha_key = _pattern_key(rank_pattern, module_path), _pattern_key(alpha_pattern, module_path)
    r = rank_pattern[r_key] if r_key is not None else config["r"]
    alpha = alpha_pattern[alpha_key] if alpha_key is not None else config["lora_alpha"]
    return int(r), float(alpha)


def _layer_index(module_path: str, layers_pattern: str | list[str], weights_path: Path) -> int:
    names = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern)
    alternatives = "|".join(re.escape(n) for n in names)
    match = re.search(rf"(?:^|\.)(?:{alternatives})\.(\d+)(?:\.|$)", module_path)
    if match is None:
        raise ValueError(
            f"{weights_path}: adapted module {module_path} is not inside a numbered layer ('{names[0]}.<i>'); "
            "weight drift is reported per decoder layer"
        )
    return int(match.group(1))


@torch.no_grad()
def _delta_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(Σ|B @ A|, Σ(B @ A)²) without holding B @ A.

    Σ|B @ A| is taken a block of rows at a time (float32, like PEFT's merge on CPU, summed in
    float64); Σ(B @ A)² = Σ (BᵀB) ⊙ (AAᵀ) needs only the r x r Gram matrices, in float64.
    """
    a = a.to(torch.float32)
    b = b.to(torch.float32)
    block = max(1, _BLOCK_ELEMENTS // max(1, a.shape[1]))
    abs_sum = torch.zeros((), dtype=torch.float64)
    for start in range(0, b.shape[0], block):
        delta = b[start:start + block] @ a
        abs_sum += delta.abs_().sum(dtype=torch.float64)
    a64, b64 = a.double(), b.double()
    square_sum = ((b64.T @ b64) * (a64 @ a64.T)).sum()
    return float(abs_sum), float(square_sum)
