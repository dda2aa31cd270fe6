"""Model families. Each family's quirks live in its own module (llama, gemma2, gemma3, mistral)."""

from __future__ import annotations

from types import ModuleType

from gendiag.models import gemma2, gemma3, llama, mistral

FAMILIES: dict[str, ModuleType] = {m.FAMILY: m for m in (llama, gemma2, gemma3, mistral)}


def family_module(name: str) -> ModuleType:
    """The module that owns a family's quirks; fails with the list of known families."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family '{name}'; known families: {sorted(FAMILIES)}") from None
