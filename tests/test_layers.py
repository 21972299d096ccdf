"""Layers: no module of moshi_mlx imports one of a higher layer.

Every import is read from the source (function-level ones too). A package or
top-level module is one unit; a unit may import units of its own rank or lower.
The model code (modules, mimi, lm, stt) and the audio devices and files stay
apart: neither imports the other.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "moshi_mlx"

# unit -> rank, lowest first
RANKS = {
    # foundation: errors, platform probes, durable files
    "__init__": 0,
    "errors": 0,
    "blas": 0,
    "accelerator": 0,
    "durable": 0,
    "system_memory": 0,
    # building blocks: words and text, weight files and quantization, layers, audio
    "words": 1,
    "text": 1,
    "quantization": 1,
    "weights": 1,
    "modules": 1,
    "audio": 1,
    # the models
    "mimi": 2,
    "lm": 2,
    "stt": 3,
    # which files to load, and whether they fit
    "memory": 4,
    "checkpoints": 5,
    # measuring the models (quantization levels, the codec)
    "benchmark": 6,
    # what runs the models: chat, file mode, codec, transcription, latency
    "app": 7,
    "commands": 8,
    "cli": 9,
    "__main__": 9,
}
MODEL_CODE = {"modules", "mimi", "lm", "stt"}
# (importer, imported) pairs refused whatever their ranks
APART = {(model, "audio") for model in MODEL_CODE} | {
    ("audio", unit) for unit in MODEL_CODE | {"text", "quantization", "weights"}
}


def unit_of(module: str) -> str:
    """The unit of a dotted module name under moshi_mlx ("moshi_mlx.lm.model": lm)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every moshi_mlx module `path` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from .. import blas` imports the module moshi_mlx.blas
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                as_path = REPO_ROOT.joinpath(*sub.split("."))
                if as_path.with_suffix(".py").is_file() or as_path.is_dir():
                    found.append((node.lineno, sub))
    return [(line, m) for line, m in found if m.split(".")[0] == "moshi_mlx"]


def violations(path: Path) -> list[str]:
    """One line for each import of `path` that goes up a layer or across APART."""
    source = unit_of(module_name(path))
    out = []
    for line, module in imported_modules(path):
        target = unit_of(module)
        if target == source:
            continue
        if RANKS[target] > RANKS[source] or (source, target) in APART:
            where = path.relative_to(REPO_ROOT)
            out.append(f"{where}:{line}: {source} imports {module} ({target})")
    return out


def test_every_unit_has_a_rank():
    units = {unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units - RANKS.keys() == set(), "add the new units to RANKS"


def test_no_module_imports_a_higher_layer():
    found = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert found == [], "\n".join(found)


def test_an_upward_import_is_found(tmp_path, monkeypatch):
    """The check sees an upward import, even one inside a function."""
    package = tmp_path / "moshi_mlx"
    (package / "lm").mkdir(parents=True)
    (package / "app").mkdir()
    (package / "app" / "__init__.py").write_text("")
    bad = package / "lm" / "model.py"
    bad.write_text("def f():\n    from ..app import engine\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    assert violations(bad) == [
        "moshi_mlx/lm/model.py:2: lm imports moshi_mlx.app (app)"
    ]
