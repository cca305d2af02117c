"""The import rule (STYLE.md, ARCHITECTURE.md): the faces are the folders cli/, magics/,
widgets/ and server/; core modules import neither Jupyter packages nor a face at module level;
magics/ and widgets/ import the core and not each other; and the package's modules import each
other at module level without a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import womm_jupyter

PACKAGE = Path(womm_jupyter.__file__).resolve().parent
FACES = ("cli", "magics", "widgets", "server")  # the faces, one folder each
JUPYTER = ("IPython", "ipywidgets", "ipykernel", "traitlets", "anywidget", "jupyter_server")


def _modules():
    """(dotted name, path) of every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ("_vendor", "_fsserver"):
            continue  # shipped files, not modules of the package (fsserver imports none)
        if path.name == "__main__.py":
            continue  # runs the CLI when imported
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _is_core(name: str) -> bool:
    parts = name.split(".")
    return not (len(parts) > 1 and parts[1] in FACES)


def _imports(path: Path, name: str, *, module_level_only: bool) -> list[tuple[str, int]]:
    """Absolute names a module imports, with line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # also imports under module-level if/try blocks
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef,
                                                                 ast.AsyncFunctionDef,
                                                                 ast.ClassDef))
                 for n in ast.walk(top)]
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            nodes += [n for n in cls.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                # `from . import widgets` names a submodule
                found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
                found.append((target, node.lineno))
            else:
                found.append((node.module or "", node.lineno))
    return found


def test_core_modules_found():
    core = [name for name, _ in _modules() if _is_core(name)]
    for expected in ("womm_jupyter", "womm_jupyter.options", "womm_jupyter.run.coordinator",
                     "womm_jupyter.backends.docker", "womm_jupyter.run.handle"):
        assert expected in core
    assert "womm_jupyter.magics" not in core and "womm_jupyter.cli" not in core


def test_importing_the_core_and_cli_loads_no_jupyter_package():
    names = [name for name, _ in _modules() if _is_core(name)] + ["womm_jupyter.cli"]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "from womm_jupyter.cli import build_parser\n"
        "build_parser().format_help()\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {JUPYTER!r})\n"
        "assert not loaded, loaded\n"
        "faces = sorted(m for m in sys.modules if m.startswith(('womm_jupyter.magics', "
        "'womm_jupyter.widgets')))\n"
        "assert not faces, faces\n"
        "print('ok', len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_core_has_no_module_level_import_of_jupyter_or_faces():
    offenders = []
    for name, path in _modules():
        if not _is_core(name):
            continue
        for target, line in _imports(path, name, module_level_only=True):
            top = target.split(".")[0]
            face = target.split(".")[1] if target.startswith("womm_jupyter.") else ""
            if top in JUPYTER or face in FACES:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_magics_and_widgets_do_not_import_each_other():
    offenders = []
    for name, path in _modules():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in ("magics", "widgets"):
            continue
        other = "widgets" if parts[1] == "magics" else "magics"
        for target, line in _imports(path, name, module_level_only=False):
            if target.startswith(f"womm_jupyter.{other}"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_faces_are_folders():
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir()}
    assert set(FACES) <= folders
    assert not [path.name for path in PACKAGE.glob("cli*.py")]  # no face outside its folder


def _module_edges() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at module level: ``from .x import y`` names
    module ``x.y`` when that is a module, else ``x`` (a package's ``__init__`` counts as the
    package). Imports inside functions are left out: they run at call time."""
    modules = dict(_modules())
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        nodes = [n for top in tree.body
                 if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                           else source for alias in node.names]
            else:
                continue
            edges[name] |= {target for target in targets if target in modules and target != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_at_module_level():
    edges = _module_edges()
    assert "womm_jupyter.run.coordinator" in edges["womm_jupyter.run.handle"]  # edges found
    assert _cycles(edges) == []
