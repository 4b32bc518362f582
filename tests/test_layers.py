"""The package's layer rules (docs/architecture.md#layers), read from the source with `ast`.

A rule broken here is an architecture change: change docs/architecture.md in the same commit.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "syvla"

# The modules that wrap a stage for Ray: the only ones that may import `ray` at all.
RAY_MODULES = {
    "syvla.data.prepare",  # Ray Data: read, clean, statistics, chunk, write
    "syvla.data.stream",  # Ray Data: the mixture stream the trainer consumes
    "syvla.sim.ray_collect",  # Ray tasks: expert demo collection
    "syvla.train.ray_train",  # Ray Train: TorchTrainer + DeepSpeed
    "syvla.serving.deployment",  # Ray Serve: the deployment and its weight registry
    "syvla.serving.launch",  # Ray Serve: starting the application
    "syvla.rl.actors",  # Ray actors: RL workers
}

# layer -> layers it must never import (module level or inside functions).
FORBIDDEN = {
    "syvla.model": ("syvla.data", "syvla.sim", "syvla.train", "syvla.serving", "syvla.rl", "syvla.client"),
    "syvla.data": ("syvla.sim", "syvla.train", "syvla.serving", "syvla.rl", "syvla.client"),
    "syvla.serving": ("syvla.sim", "syvla.client", "syvla.train", "syvla.rl"),
    "syvla.sim": ("syvla.train", "syvla.serving", "syvla.rl"),
    "syvla.train": ("syvla.serving", "syvla.rl"),
    "syvla.client": ("syvla.model", "syvla.data", "syvla.sim", "syvla.train", "syvla.rl"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# Parsing runs in a fresh interpreter: CPython 3.11's AST conversion keeps its recursion depth in
# interpreter-wide state, so a parse racing another thread's (a background thread left in this
# process by an earlier test) fails with "AST constructor recursion depth mismatch".
_SCAN = r"""
import ast, json, sys
out = {}
for path in json.load(sys.stdin):
    tree = ast.parse(open(path).read(), filename=path)
    top = {id(node) for node in tree.body}
    imports, inits = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [[alias.name, 0, node.lineno, id(node) in top] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append([node.module or "", node.level, node.lineno, id(node) in top])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "init" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "ray":
            inits.append(node.lineno)
    out[path] = {"imports": imports, "ray_init": inits}
json.dump(out, sys.stdout)
"""


@functools.lru_cache(maxsize=None)
def _scan(package: Path) -> dict[str, dict]:
    """path -> {"imports": [[module, level, line, top level]], "ray_init": [line]} for every source."""
    paths = [str(p) for p in sorted(package.rglob("*.py"))]
    done = subprocess.run([sys.executable, "-c", _SCAN], input=json.dumps(paths), capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement in `path`."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for module, level, line, top in _scan(PACKAGE)[str(path)]["imports"]:
        if level:
            base = package.split(".")
            base = base[: len(base) - level + 1]
            module = ".".join(base + ([module] if module else []))
        found.append((module, line, top))
    return found


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_named_ray_modules_exist():
    missing = sorted(m for m in RAY_MODULES if not (ROOT / (m.replace(".", "/") + ".py")).is_file())
    assert not missing, f"RAY_MODULES names modules that do not exist: {missing}"


def test_only_the_named_ray_modules_import_ray():
    offenders = [f"{_module_name(p)}:{line} imports {name}" for p in _sources() for name, line, _ in _imports(p)
                 if _under(name, "ray") and _module_name(p) not in RAY_MODULES]
    assert not offenders, "ray imported outside the Ray modules:\n" + "\n".join(offenders)


def test_nothing_in_the_library_calls_ray_init():
    offenders = [f"{_module_name(path)}:{line}" for path in _sources()
                 for line in _scan(PACKAGE)[str(path)]["ray_init"]]
    assert not offenders, f"ray.init called under syvla/ (pipelines connect): {offenders}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer):
    offenders = []
    for path in _sources():
        module = _module_name(path)
        if not _under(module, layer):
            continue
        for name, line, _ in _imports(path):
            hit = next((f for f in FORBIDDEN[layer] if _under(name, f)), None)
            if hit:
                offenders.append(f"{module}:{line} imports {name}")
    assert not offenders, f"{layer} may not import {FORBIDDEN[layer]}:\n" + "\n".join(offenders)


def test_the_client_shares_only_the_wire_protocol_with_the_server():
    shared = {name for name, _, _ in _imports(PACKAGE / "client.py") if _under(name, "syvla.serving")}
    assert shared <= {"syvla.serving", "syvla.serving.protocol"}, shared


def test_planted_violations_are_caught(tmp_path, monkeypatch):
    """The checker itself: a serving module importing the client and a model module importing ray."""
    fake = tmp_path / "syvla"
    (fake / "serving").mkdir(parents=True)
    (fake / "model").mkdir()
    (fake / "serving" / "bad.py").write_text("from syvla.client import PolicyClient\n")
    (fake / "model" / "bad.py").write_text("def f():\n    import ray.train\n    from ..sim import robot\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match="syvla.serving.bad:1 imports syvla.client"):
        test_layer_imports("syvla.serving")
    with pytest.raises(AssertionError, match=r"syvla.model.bad:3 imports syvla.sim\b"):
        test_layer_imports("syvla.model")
    with pytest.raises(AssertionError, match="syvla.model.bad:2 imports ray.train"):
        test_only_the_named_ray_modules_import_ray()


def test_importing_the_package_and_client_loads_neither_torch_nor_ray():
    code = ("import sys, syvla, syvla.client, syvla.sim.metaworld; "
            "bad = [m for m in ('torch', 'ray', 'mujoco', 'metaworld') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_concept_table_names_real_files_and_functions():
    """docs/architecture.md's "Where each paper concept lives" table: every file exists and holds every name."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Where each paper concept lives", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) >= 15, "the concept table is missing"
    for _, files, names in rows:
        sources = "".join((ROOT / f).read_text() for f in re.findall(r"`([^`]+\.py)`", files))
        for name in re.findall(r"`([^`]+)`", names):
            leaf = name.split(".")[-1]
            assert re.search(rf"\b(def|class)\s+{leaf}\b|^{leaf}\s*[:=]", sources, re.M), \
                f"docs/architecture.md names {name} in {files.strip()}, which does not define it"
