"""One source tree per measuring subprocess: ``run_in_tree`` and the subprocess's side of it.

A figure is measured in a fresh ``python -P trees.py REQUEST`` process, which first makes
``marl_rec`` the package of the tree it measures (``load_tree``: this checkout, or an older
commit's worktree given by ``--against``) and only then imports from it. So the top level of
this module imports only the standard library: it is that script. The timed loops are called by
name in the measured tree's own ``marl_rec.bench`` (a single file in older trees, this package
now: its ``__init__`` exports every ``bench_*`` function); ``probe``, ``bench_many`` and
``bench_memory`` come from this checkout instead (an older tree may lack them) and run against
the measured tree's package.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

RESULT_MARK = "@@marl-rec-bench-result@@ "


class BenchError(RuntimeError):
    """A measurement that produced no figure (its subprocess failed, timed out or printed none)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class _TreeOnly:
    """A meta path finder placed first: every ``marl_rec.*`` module comes from its parent
    package's ``__path__`` (the measured tree) or not at all, never from an installed marl-rec
    (whose own finder would otherwise fill in a module the tree lacks)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if not name.startswith("marl_rec.") or path is None:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} in the measured tree ({', '.join(path)})", name=name)
        return spec


def load_tree(tree: str | Path) -> None:
    """Make ``marl_rec`` in this process the package of the source tree ``tree``, laid out as
    setup.py installs it: ``marl_rec/`` is ``marl_rec``; ``envs/``, ``policies/`` and
    ``experiments/`` are ``marl_rec.envs``, ``marl_rec.policies``, ``marl_rec.experiments``
    (the tree's root is on the package's search path). Call it before anything imports marl_rec."""
    if "marl_rec" in sys.modules:
        raise RuntimeError(f"marl_rec is already imported in this process (from {sys.modules['marl_rec'].__file__})")
    root = Path(tree).resolve()
    sys.meta_path.insert(0, _TreeOnly)
    spec = importlib.util.spec_from_file_location(
        "marl_rec", root / "marl_rec" / "__init__.py", submodule_search_locations=[str(root / "marl_rec"), str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["marl_rec"] = module
    spec.loader.exec_module(module)


def probe(functions: Sequence[str] = ()) -> dict:
    """Where the measured package comes from, and which of ``functions`` its bench lacks."""
    import marl_rec.envs  # noqa: F401  (its file is part of the answer: _where)

    bench = measured_bench()
    return {"missing": [name for name in functions if not callable(getattr(bench, name, None))]}


def measured_bench():
    """The measured tree's ``marl_rec.bench``, looked up by name: another commit's code, which
    this module calls into but does not depend on (this package, or an older single-file bench)."""
    return importlib.import_module("marl_rec.bench")


def bench_many(calls: Sequence[Mapping]) -> list:
    """Several calls ({"call", "args", "kwargs"}) of the tree's bench functions, in turn, in one process."""
    return [_function(c["call"])(*c.get("args", ()), **c.get("kwargs", {})) for c in calls]


def _bench_memory(*args, **kwargs) -> dict:
    """This checkout's memory benchmark (memory.py, loaded by its path: the measured tree's
    ``marl_rec.bench`` may have none), run against the measured tree's package."""
    spec = importlib.util.spec_from_file_location("_marl_rec_bench_memory", Path(__file__).with_name("memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.bench_memory(*args, **kwargs)


# run in the subprocess from this checkout (the tree's package may not have them), not the tree's bench
_LOCAL_CALLS = {"probe": probe, "bench_memory": _bench_memory, "bench_many": bench_many}


def _where() -> dict:
    return {name: sys.modules[name].__file__ for name in ("marl_rec", "marl_rec.bench", "marl_rec.envs",
                                                           "marl_rec.envs.core") if name in sys.modules}


def _child(request: dict) -> dict:
    """The subprocess's side of ``run_in_tree``."""
    if request.get("tree"):
        load_tree(request["tree"])
    import marl_rec  # noqa: F401  (the installed package when no tree is given)

    if request.get("plugins"):
        from marl_rec.plugins import load_plugins

        load_plugins(request["plugins"], where="--plugin")
    warmup = request.get("warmup")
    if warmup is not None:  # first episodes, caches, any compilation: not timed
        _function(warmup.get("call") or request["call"])(*warmup["args"], **warmup["kwargs"])
    result = _function(request["call"])(*request["args"], **request["kwargs"])
    return {"result": result, "where": _where()}


def _function(name: str) -> Callable:
    if name in _LOCAL_CALLS:
        return _LOCAL_CALLS[name]
    return getattr(measured_bench(), name)


def _to_json(value):
    return value.item() if hasattr(value, "item") else str(value)


def run_in_tree(tree: str | Path | None, call: str, args: Sequence = (), kwargs: Mapping | None = None,
                warmup: Mapping | None = None, timeout: float = 600.0, plugins: Sequence[str] = ()) -> dict:
    """``call(*args, **kwargs)`` in a fresh ``python -P`` subprocess that measures ``tree``
    (``None``: this checkout's installed package): a function of that tree's ``marl_rec.bench``
    (or ``probe`` / ``bench_memory`` / ``bench_many`` of this checkout, run against that tree's
    package). ``warmup`` ({"call" (default ``call``), "args", "kwargs"}) is one untimed call
    first. Returns {"result", "where": the files of marl_rec, its bench and envs}."""
    request = {"tree": str(Path(tree).resolve()) if tree else None, "call": call, "args": list(args),
               "kwargs": dict(kwargs or {}), "plugins": list(plugins),
               "warmup": None if warmup is None else {"call": warmup.get("call"), "args": list(warmup.get("args", ())),
                                                      "kwargs": dict(warmup.get("kwargs", {}))}}
    command = [sys.executable, "-P", str(Path(__file__).resolve()), json.dumps(request)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{call} ran past {timeout:.0f} s", str(err.stderr or "")[-3000:]) from None
    replies = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not replies:
        lines = done.stderr.strip().splitlines() or ["(no error output)"]
        raise BenchError(f"{call} failed (exit {done.returncode}): {lines[-1]}", "\n".join(lines[-25:]))
    return json.loads(replies[-1][len(RESULT_MARK):])


# ---------------------------------------------------------------------- the sides of a comparison
def git_label(root: Path) -> str:
    """``root`` and its git commit (and whether it has uncommitted changes), for the table's header."""
    def git(*args):
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return str(root)
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{root} at {head}" + (" + uncommitted changes" if dirty else "")


@dataclasses.dataclass
class Side:
    name: str  # "ours" or "reference"
    tree: Path | None  # None: this checkout's installed package
    label: str = ""
    root: Path | None = None  # the source tree its marl_rec came from (the probe's finding)
    error: str | None = None  # the probe's failure: nothing measured


def probe_side(side: Side, functions: Sequence[str], log: Callable[[str], None]) -> None:
    """Fill in ``side``'s root and label from a probe of its tree, or its error (``functions``
    its bench lacks, a package that does not import)."""
    try:
        reply = run_in_tree(side.tree, "probe", [list(functions)], timeout=300)
    except BenchError as err:
        side.error = f"cannot import its marl_rec: {err}"
        log(f"[bench] {side.name}: {side.error}\n{err.detail}")
        return
    where = reply["where"]
    # marl_rec/__init__.py: the tree's root two levels up, whether its bench is a file or a package
    root = Path(where["marl_rec"]).resolve().parent.parent
    bench_file = Path(where["marl_rec.bench"]).resolve()
    if side.tree is not None and (root != Path(side.tree).resolve() or not bench_file.is_relative_to(root)):
        raise BenchError(f"--against {side.tree}: the subprocess imported {bench_file}, not that tree's code")
    side.root, side.label = root, git_label(root)
    log(f"[bench] {side.name}: {side.label} (marl_rec.envs from {where.get('marl_rec.envs')})")
    if reply["result"]["missing"]:
        side.error = f"its marl_rec.bench has no {', '.join(reply['result']['missing'])}"
        log(f"[bench] {side.name}: {side.error}")


if __name__ == "__main__":  # a measuring subprocess (run_in_tree): one call, its JSON on stdout
    reply = _child(json.loads(sys.argv[1]))
    print(RESULT_MARK + json.dumps(reply, default=_to_json), flush=True)
