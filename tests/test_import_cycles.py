"""The package's modules import each other without cycles: a graph of the imports of hf_compress/**/*.py read with
``ast``, searched for a cycle. Every import counts: at module level, inside functions and classes (a lazy import is
still an arrow), under ``if TYPE_CHECKING:``, and the package ``__init__`` an import of a submodule runs first."""

from __future__ import annotations

import ast
from pathlib import Path

import hf_compress

PACKAGE = Path(hf_compress.__file__).parent


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's ``__init__``), for every ``.py`` file under the package ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], deferred: bool, type_checking: bool = False):
    """The import statements of ``body``: at module level (also inside module-level ``if``/``try``/``with``), with
    ``deferred`` those inside functions and classes too, with ``type_checking`` those under ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if type_checking or not _is_type_checking(node):
                yield from _imports(node.body, deferred, type_checking)
            yield from _imports(node.orelse, deferred, type_checking)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _imports(block, deferred, type_checking)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _imports(node.body, deferred, type_checking)
        elif deferred and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _imports(node.body, deferred, type_checking)


def _enclosing_packages(module: str, importer: str, modules: dict) -> set[str]:
    """The packages whose ``__init__`` importing ``module`` runs first, from ``importer``: those above ``module`` that
    do not also hold ``importer`` (its own packages are already being imported)."""
    parts = module.split(".")
    outer = {".".join(parts[:i]) for i in range(1, len(parts))}
    return {p for p in outer if p in modules and not (importer == p or importer.startswith(p + "."))}


def import_graph(
    root: Path, deferred: bool = False, type_checking: bool = False, packages: bool = False
) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from .x import y`` names ``x.y`` when that is a module); with
    ``deferred`` imports inside functions and classes count, with ``type_checking`` those under ``TYPE_CHECKING``,
    with ``packages`` the package ``__init__`` modules an import runs on the way (``from ..export.graph import x``
    runs ``export/__init__.py``)."""
    modules = _modules(root)
    graph = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, deferred, type_checking):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        targets = {t for t in targets if t in modules and t != name}
        if packages:
            targets |= {p for t in targets for p in _enclosing_packages(t, name, modules)}
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def every_import(root: Path) -> dict[str, set[str]]:
    """The graph with every kind of import: module level, inside functions, under ``TYPE_CHECKING``, packages run."""
    return import_graph(root, deferred=True, type_checking=True, packages=True)


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and graph["hf_compress.quantization.route"] >= {
        "hf_compress.int8_routes",
        "hf_compress.checks",
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_arrow_runs_back_up_even_through_lazy_or_type_checking_imports():
    graph = every_import(PACKAGE)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    # the arrows that used to close circles run one way now
    assert "hf_compress.architectures" in graph["hf_compress.targets"]
    assert "hf_compress.architectures" not in graph["hf_compress.modules"]
    assert "hf_compress.int8_routes" in graph["hf_compress.recipe"]
    assert not {"hf_compress.int8_routes", "hf_compress.export"} & graph["hf_compress.configs"]
    assert not {"hf_compress.pipeline", "hf_compress.trainer"} & graph["hf_compress.trainer_recipe"]
    assert "hf_compress.model_sources" in graph["hf_compress.trainer_recipe"] & graph["hf_compress.pipeline"]
    assert "hf_compress.lowrank.embeddings" not in graph["hf_compress.lowrank.layers"]


def test_the_export_half_of_int8_does_not_reach_into_quantization_aware_training():
    """int8.py and configs.py reach neither the quantization package nor each other's importers, even counting the
    imports inside functions: the formats both use are hf_compress.int8_formats."""
    graph = every_import(PACKAGE)
    for module in ("hf_compress.export.int8", "hf_compress.configs", "hf_compress.int8_formats"):
        assert not {m for m in _reachable(graph, module) if m.startswith("hf_compress.quantization")}, module
    assert (
        "hf_compress.int8_formats" in graph["hf_compress.export.int8"] & graph["hf_compress.quantization.fake_quant"]
    )


def test_the_walk_finds_a_cycle_and_skips_type_checking_and_function_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from .c import thing\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .a import x\n"
        "def later():\n    from . import a\n"
        "try:\n    from .d import y\nexcept ImportError:\n    pass\n"
    )
    (package / "d.py").write_text("import pkg.b\n")
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.d"}, "pkg.d": {"pkg.b"}}
    assert find_cycle(graph) == ["pkg.b", "pkg.c", "pkg.d", "pkg.b"]
    assert import_graph(package, deferred=True)["pkg.c"] == {"pkg.a", "pkg.d"}


def test_the_walk_counts_type_checking_imports_and_the_packages_an_import_runs(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .x import thing\n")
    (package / "sub" / "x.py").write_text("from ..a import y\n")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.x import z\n")
    assert import_graph(package)["pkg.a"] == set()
    assert import_graph(package, type_checking=True)["pkg.a"] == {"pkg.sub.x"}
    graph = every_import(package)
    assert graph["pkg.a"] == {"pkg.sub.x", "pkg.sub"} and graph["pkg.sub.x"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub", "pkg.sub.x", "pkg.a"]
