"""The import rules of ARCHITECTURE.md, checked on the source (every import statement, also those inside
functions): which part may import which, no circle between modules, no private name across modules."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "radpriv"

FOUNDATION = {"paths", "progress", "hashing", "netguard", "device", "papers", "kernel", "__init__"}
#: part -> the parts it may import (besides itself and the foundation); mirrors ARCHITECTURE.md
ALLOWED = {
    "schemas": set(),
    "models": set(),
    "data": {"schemas"},
    "baselines": {"schemas"},
    "evaluate": {"schemas", "data"},
    "llm": {"schemas", "models"},
    "dp": {"schemas", "data", "models", "evaluate"},
    "downstream": {"schemas", "data", "models", "evaluate"},
    "audit": {"schemas", "data", "models", "evaluate", "dp"},
    "studies": {"schemas", "data", "models", "evaluate", "baselines", "llm", "dp", "downstream", "audit"},
    "cli": {"schemas", "data", "models", "evaluate", "baselines", "llm", "downstream"},
    "run": {"models", "frontpage"},
    "frontpage": set(),
}


#: the one explained exception: backends.create_backend imports hf_backend on the first model of kind "hf"
#: (a plugin that registers itself and subclasses Backend), so torch and transformers load only when needed
PLUGIN_PAIRS = {frozenset({"radpriv.llm.backends", "radpriv.llm.hf_backend"})}


def _module_name(path: Path, lib: Path = LIB) -> str:
    rel = path.relative_to(lib.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, lib: Path = LIB) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import of radpriv in the file."""
    mod = _module_name(path, lib)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if target == "radpriv":  # `from radpriv import paths`: each name is a module of its own
                out += [(f"radpriv.{n}", [], node.lineno) for n in names if (lib / n).exists()
                        or (lib / f"{n}.py").exists()]
                names = [n for n in names if not ((lib / n).exists() or (lib / f"{n}.py").exists())]
                if not names:
                    continue
            out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
    return [(t, n, line) for t, n, line in out if t == "radpriv" or t.startswith("radpriv.")]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


FILES = sorted(LIB.rglob("*.py"))


def test_the_rules_cover_every_part():
    parts = {_part(_module_name(f)) for f in FILES}
    assert parts <= FOUNDATION | set(ALLOWED), f"parts without a rule in ALLOWED (add them and ARCHITECTURE.md): " \
                                               f"{sorted(parts - FOUNDATION - set(ALLOWED))}"


def layering_violations(lib: Path = LIB) -> list[str]:
    """Every import of a part that its rule in ALLOWED does not permit."""
    bad = []
    for f in sorted(lib.rglob("*.py")):
        src = _part(_module_name(f, lib))
        allowed = set() if src in FOUNDATION else ALLOWED.get(src, set())
        for target, _, line in _imports(f, lib):
            dst = _part(target)
            if dst in (src, "__init__") or dst in FOUNDATION and (src not in FOUNDATION or dst != "kernel"):
                continue
            if dst not in allowed:
                bad.append(f"{f.relative_to(lib)}:{line}: {src} imports {target} ({dst} is not allowed for {src})")
    return bad


def test_every_import_follows_the_layering():
    bad = layering_violations()
    assert not bad, "imports against ARCHITECTURE.md:\n" + "\n".join(bad)


def test_the_checker_reports_a_violation(tmp_path):
    """Not vacuous: a data module that imports the LLM engine inside a function is reported."""
    lib = tmp_path / "radpriv"
    (lib / "data").mkdir(parents=True)
    (lib / "data" / "leak.py").write_text("def f():\n    from radpriv.llm import engine\n    return engine\n")
    (lib / "dp").mkdir()
    (lib / "dp" / "ok.py").write_text("from radpriv.evaluate.scoring import binarize\n")
    assert layering_violations(lib) == ["data/leak.py:2: data imports radpriv.llm (llm is not allowed for data)"]


def test_foundation_modules_import_only_the_foundation():
    bad = [f"{f.relative_to(LIB)}:{line} imports {t}" for f in FILES if _part(_module_name(f)) in FOUNDATION
           for t, _, line in _imports(f) if _part(t) not in FOUNDATION]
    assert not bad, bad


def test_no_circle_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {_module_name(f) for f in FILES}
    for f in FILES:
        src = _module_name(f)
        for target, names, _ in _imports(f):
            for t in [target] + [f"{target}.{n}" for n in names]:
                if t in modules and t != src and not src.startswith(t + "."):  # a package's own __init__
                    graph[src].add(t)
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph[m]):
            if not (n.startswith(m + ".") and m + "." in n):  # a package importing its submodules
                visit(n)
        stack.pop()

    for m in sorted(modules):
        visit(m)
    cycles = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))
              and frozenset(c) not in PLUGIN_PAIRS]
    assert not cycles, "modules that import each other: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_crosses_a_module():
    bad = []
    for f in FILES:
        src = _module_name(f)
        for target, names, line in _imports(f):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target != src:
                    bad.append(f"{f.relative_to(LIB)}:{line}: imports private {target}.{n}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", sorted((LIB.parents[1] / "bench").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_public_names_only(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [f"{path.name}:{n.lineno}: {n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
           and (n.module or "").startswith("radpriv") for a in n.names if a.name.startswith("_")
           and not a.name.startswith("__")]
    assert not bad, bad
