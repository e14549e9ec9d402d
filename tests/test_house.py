"""Rules of the house, read from the source (ast only: nothing is imported, no Ray).

- no function or method over MAX_FUNCTION_LINES lines, decorators and docstring included;
- no compiled kernel (a function decorated with the project's numba ``jit``) over
  MAX_KERNEL_PARAMETERS parameters: a longer list is a missing type (docs/architecture.md);
- no import circle between modules of the package. Every import counts, at module level or
  inside a function, except those under ``if TYPE_CHECKING:``: a function-level import only
  postpones the circle to the first call, and two modules that need each other are a missing
  third module (rllib's train.py and trainable.py were one such pair);
- no private Ray API (``ray._private``, ``ray._raylet``, any ``_`` part of a ``ray.`` module
  or attribute) outside the one helper module that wraps it, with its reason
  (PRIVATE_RAY_HELPER);
- the simulator (envs/) imports no Ray, torch or transformers;
- ``ruff check`` with the project's configuration ([tool.ruff] in pyproject.toml) finds
  nothing (ruff comes with the test extra).

Each test lists every offender (file:line and what), so one run says everything to fix.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the package's folders and the names setup.py installs them under
PACKAGE_ROOTS = {"marl_rec": ROOT / "marl_rec", "marl_rec.envs": ROOT / "envs", "marl_rec.policies": ROOT / "policies"}
MAX_FUNCTION_LINES = 60
MAX_KERNEL_PARAMETERS = 8
JIT_DECORATORS = ("jit", "njit")  # the project's ``jit = numba.njit(...)``, and numba's own
PRIVATE_RAY_HELPER = "marl_rec/rllib/ray_private.py"  # the one module allowed to reach into Ray's private API
SIMULATOR = "marl_rec.envs"
NOT_IN_SIMULATOR = ("ray", "torch", "transformers")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages as their __init__)."""
    found = {}
    for package, folder in PACKAGE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def where(name: str, node: ast.AST) -> str:
    return f"{MODULES[name].relative_to(ROOT)}:{node.lineno}"


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_is_longer_than_the_limit():
    offenders = []
    for name, tree in TREES.items():
        for node in functions(tree):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - first + 1
            if length > MAX_FUNCTION_LINES:
                offenders.append(f"{where(name, node)} {node.name}: {length} lines")
    assert not offenders, (f"{len(offenders)} function(s) over {MAX_FUNCTION_LINES} lines (decorators and docstring "
                           "included):\n" + "\n".join(offenders))


def is_jit(decorator: ast.expr) -> bool:
    """``@jit``, ``@numba.njit``, ``@kernels.jit``, or any of them called (``@njit(cache=True)``)."""
    if isinstance(decorator, ast.Call):
        decorator = decorator.func
    name = decorator.attr if isinstance(decorator, ast.Attribute) else getattr(decorator, "id", None)
    return name in JIT_DECORATORS


def test_no_kernel_takes_more_than_a_few_parameters():
    offenders = []
    for name, tree in TREES.items():
        for node in functions(tree):
            if any(is_jit(d) for d in node.decorator_list):
                args = node.args
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
                if count > MAX_KERNEL_PARAMETERS:
                    offenders.append(f"{where(name, node)} {node.name}: {count} parameters")
    assert not offenders, (f"{len(offenders)} kernel(s) over {MAX_KERNEL_PARAMETERS} parameters (pass typed views "
                           "instead):\n" + "\n".join(offenders))


def runtime_imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_names(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute module names an import statement in module ``name`` names (for ``from X
    import y``: X.y when that is a module, else X)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package
        package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def import_graph(function_level: bool = True) -> dict[str, set[str]]:
    """module -> the package's modules it names in an import (``from a.b import c``: a.b.c
    when that is a module, else a.b; the parent packages a import also runs are not counted,
    as in pylint's cyclic-import). ``function_level=False``: only imports at module level."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        nodes = runtime_imports(tree) if function_level else (
            node for node in runtime_imports(ast.Module(body=[n for n in tree.body if not isinstance(
                n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))], type_ignores=[])))
        for node in nodes:
            for target in imported_names(name, node):
                if target in MODULES and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_circles_are_found():  # the detector itself, on a hand-made graph
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_no_import_circle_between_modules():
    graph = import_graph()
    found = circles(graph)
    lines = []
    for component in found:
        edges = [f"    {a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
        lines.append(f"  circle of {len(component)}: {', '.join(component)}\n" + "\n".join(edges))
    assert not found, f"{len(found)} import circle(s) (function-level imports included):\n" + "\n".join(lines)


def private_ray_uses(name: str, tree: ast.AST) -> list[str]:
    """Where module ``name`` reaches into Ray's private API: a ``ray.`` module or attribute with
    a part that starts with ``_`` (dunders such as ``ray.__version__`` are public)."""
    def private(parts) -> bool:
        return any(p.startswith("_") and not p.startswith("__") for p in parts)

    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            uses += [f"{where(name, node)} import {a.name}" for a in node.names
                     if a.name.split(".")[0] == "ray" and private(a.name.split("."))]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray" and not node.level:
            parts = node.module.split(".")
            names = [a.name for a in node.names if private(parts) or private([a.name])]
            uses += [f"{where(name, node)} from {node.module} import {', '.join(names)}"] if names else []
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ray":
            if private([node.attr]):  # ray._private.worker...: found once, where it leaves the public name
                uses.append(f"{where(name, node)} ray.{node.attr}")
    return uses


def test_private_ray_api_only_in_its_helper():
    offenders = []
    for name, tree in TREES.items():
        if str(MODULES[name].relative_to(ROOT)) != PRIVATE_RAY_HELPER:
            offenders += private_ray_uses(name, tree)
    assert not offenders, (f"{len(offenders)} use(s) of Ray's private API outside {PRIVATE_RAY_HELPER} (wrap it "
                           "there, with the reason):\n" + "\n".join(offenders))


def test_the_simulator_imports_no_ray_torch_or_transformers():
    offenders = []
    for name, tree in TREES.items():
        if name != SIMULATOR and not name.startswith(SIMULATOR + "."):
            continue
        for node in runtime_imports(tree):
            for target in imported_names(name, node):
                if target.split(".")[0] in NOT_IN_SIMULATOR:
                    offenders.append(f"{where(name, node)} imports {target}")
    assert not offenders, "envs/ must run without Ray, torch and transformers:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, expected", [
    ("import ray._private.services", ["import ray._private.services"]),
    ("from ray._raylet import GcsClient", ["from ray._raylet import GcsClient"]),
    ("from ray.train._internal.session import get_session", ["from ray.train._internal.session import get_session"]),
    ("from ray.tune import _private_thing", ["from ray.tune import _private_thing"]),
    ("import ray\nray._private.worker.global_worker", ["ray._private"]),
    ("import ray\nray.init()\nray.__version__\nfrom ray import tune", []),
])
def test_private_ray_uses_are_recognised(source, expected):
    MODULES["_house_probe"] = ROOT / "tests" / "test_house.py"
    try:
        found = private_ray_uses("_house_probe", ast.parse(source))
    finally:
        del MODULES["_house_probe"]
    assert [use.split(" ", 1)[1] for use in found] == expected


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff check:\n{result.stdout}{result.stderr}"
