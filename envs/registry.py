"""Name → class registries: the plug-in points of the simulator.

A new candidate sampler, item generator, choice model, user or creator dynamics, reward,
behaviour model or role joins by writing a class, decorating it with
``@REGISTRY.register("name")`` and naming it in the configuration. Nothing in the package
needs editing. A name may also be an import string, ``"package.module:Class"`` (as Gymnasium's
entry points), which is imported on first use; that form reaches every process that can import
the package, without any registration.

A registry can hold an entry lazily (``register_lazy("name", "package.module:Class")``): the
class is imported the first time the name is looked up, so a registry can list parts whose
module pulls in heavy dependencies (torch) without importing them.

Whatever an import string resolves to (and a lazy entry) must be a class of the registry's
contract (``contract``: the part's base class) before anything constructs it. While names come
from a saved file that the user has not signed (a colleague's checkpoint), :func:`only_imports_from`
narrows import strings to marl-rec's own modules and the plug-ins allowed on the command: a file
cannot make marl-rec import or call anything else.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from typing import Generic, TypeVar
from collections.abc import Callable, Iterable, Iterator

from marl_rec.envs.config import ConfigError

T = TypeVar("T")

PLUGIN_HINT = ("if it comes from a plug-in, name the plug-in's module under 'plugins:' in the experiment file "
               "(or pass --plugin MODULE, or install a package with a 'marl_rec.plugins' entry point)")


class UnknownNameError(KeyError):
    """A configuration named a part that no registry entry provides."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


_allowed_packages: frozenset[str] | None = None  # None: import strings from the user's own files import freely


@contextlib.contextmanager
def only_imports_from(plugins: Iterable[str]) -> Iterator[None]:
    """While names come from a file the user has not signed: an import string resolves only if
    its module is marl-rec's own or in the package of one of ``plugins`` (those the user allowed
    on the command: ``--plugin`` and installed entry points)."""
    global _allowed_packages
    previous = _allowed_packages
    _allowed_packages = frozenset({"marl_rec"} | {p.split(".")[0] for p in plugins})
    try:
        yield
    finally:
        _allowed_packages = previous


def import_allowed(target: str) -> bool:
    """Whether the import string ``target`` may be imported now (see :func:`only_imports_from`)."""
    return _allowed_packages is None or target.partition(":")[0].split(".")[0] in _allowed_packages


def import_object(target: str):
    """The object an import string ``"package.module:attribute"`` names (ImportError/AttributeError if not)."""
    module_name, _, attribute = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """A named collection of pluggable parts of one kind."""

    def __init__(self, kind: str, contract: str | None = None):
        self.kind = kind
        self.contract = contract  # "package.module:Base": what every class this registry hands out must subclass
        self._entries: dict[str, type[T] | str] = {}
        self._origins: dict[str, str] = {}  # name -> the module that registered it (what `marl-rec list` shows)
        self._renamed: dict[str, str] = {}  # old name -> the name it was renamed to (see `renamed`)

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            self._refuse_taken(name, cls, overwrite)
            self._entries[name] = cls
            self._origins[name] = cls.__module__
            cls.registered_name = name
            return cls

        return decorator

    def register_lazy(self, name: str, target: str, *, overwrite: bool = False) -> None:
        """Register ``"package.module:Class"`` under ``name``; imported on the first ``get``.
        A name that is taken is refused as :meth:`register` refuses it."""
        if ":" not in target:
            raise ValueError(f"register_lazy needs 'package.module:Class', got {target!r}")
        self._refuse_taken(name, target, overwrite)
        self._entries[name] = target
        self._origins[name] = target.partition(":")[0]

    def _refuse_taken(self, name: str, new: type[T] | str, overwrite: bool) -> None:
        """A ValueError if ``name`` holds another entry than ``new`` (the same class, or its
        import string, may be registered again: a module imported twice)."""
        existing = self._entries.get(name)
        if existing is None or overwrite or _same_entry(existing, new):
            return
        raise ValueError(
            f"a {self.kind} named {name!r} is already registered "
            f"({existing if isinstance(existing, str) else _path(existing)}, from {self._origins.get(name, '?')}); "
            "pass overwrite=True to replace it"
        )

    def renamed(self, old: str, new: str) -> None:
        """Record that the entry now called ``new`` was called ``old``. Asking for ``old`` stays an
        error, one that names ``new`` (an old file is told what to write, and never silently gets
        a part whose meaning may have changed with its name); ``old`` is not listed in ``names()``.
        A name that is registered now cannot be recorded as renamed."""
        if old in self._entries:
            raise ValueError(f"{self.kind} {old!r} is registered ({self._origins.get(old, '?')}); "
                             f"it cannot also be recorded as renamed to {new!r}")
        if old == new:
            raise ValueError(f"{self.kind} {old!r} cannot be renamed to itself")
        self._renamed[old] = new

    def new_name(self, name: str) -> str | None:
        """The current name of a renamed ``name`` (following renames of renames), None if it was not renamed."""
        seen, current = {name}, self._renamed.get(name)
        while current in self._renamed and current not in self._entries and current not in seen:
            seen.add(current)
            current = self._renamed[current]
        return current

    def origin(self, name: str) -> str | None:
        """The module that registered ``name`` (a plug-in's, or marl-rec's own)."""
        return self._origins.get(name)

    def get(self, name: str) -> type[T]:
        entry = self._entries.get(name)
        if entry is None and isinstance(name, str) and ":" in name:
            if not import_allowed(name):
                allowed = ", ".join(sorted(_allowed_packages - {"marl_rec"})) or "none"
                raise UnknownNameError(
                    f"{self.kind} {name!r}: an import string from a file you have not signed is imported only from "
                    f"marl-rec and the plug-ins allowed on this command ({allowed}); "
                    f"if you trust {name.partition(':')[0].split('.')[0]!r}, pass --plugin {name.partition(':')[0]}, "
                    "or check the folder and sign it with marl-rec trust DIR")
            entry = name  # an import string needs no registration
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        if isinstance(entry, str):
            try:
                cls = import_object(entry)
            except (ImportError, AttributeError) as err:
                raise UnknownNameError(
                    f"{self.kind} {name!r}: cannot import {entry!r} ({type(err).__name__}: {err})") from None
            self._check_contract(name, cls)
            if name in self._entries:
                self._entries[name] = cls
                cls.registered_name = name
            return cls
        return entry

    def _check_contract(self, name: str, obj) -> None:
        """An UnknownNameError unless ``obj`` is a class of this registry's contract."""
        base = import_object(self.contract) if self.contract else None
        if not isinstance(obj, type) or (base is not None and not issubclass(obj, base)):
            what = f"a {type(obj).__name__}" if not isinstance(obj, type) else f"class {_path(obj)}"
            raise UnknownNameError(f"{self.kind} {name!r} names {what}, not a {self.kind} class"
                                   + (f" (a subclass of {self.contract})" if base is not None else ""))

    def unknown_message(self, name) -> str:
        """Why ``name`` is not found: the name it was renamed to (see ``renamed``), or the registered
        names, the closest one and the plug-in hint."""
        names = self.names()
        new = self.new_name(name) if isinstance(name, str) else None
        if new is not None:
            return (f"{self.kind} {name!r} was renamed to {new!r}; did you mean {new!r}? "
                    f"(registered: {', '.join(names) or '(none)'})")
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        return (f"unknown {self.kind} {name!r}; registered: {', '.join(names) or '(none)'}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f"; {PLUGIN_HINT}, or give 'package.module:Class'")

    def resolve(self, name: str, where: str) -> type[T]:
        """``get`` for configuration checks: a ``ConfigError`` naming ``where`` (file and key)."""
        try:
            return self.get(name)
        except UnknownNameError as err:
            raise ConfigError(f"{where}: {err}") from None

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _path(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _same_entry(existing, new) -> bool:
    """Whether two registrations (classes or import strings) name the same class."""
    if existing is new or existing == new:
        return True
    paths = [entry if isinstance(entry, str) else _path(entry) for entry in (existing, new)]
    if paths[0] == paths[1]:
        return True
    if isinstance(existing, str) != isinstance(new, str):  # a lazy entry already imported, registered again
        target, cls = (existing, new) if isinstance(existing, str) else (new, existing)
        try:
            return import_object(target) is cls
        except (ImportError, AttributeError):
            return False
    return False


_BASE = "marl_rec.envs.parts.base"
CANDIDATE_SAMPLERS: Registry = Registry("candidate sampler", f"{_BASE}:CandidateSampler")
ITEM_GENERATORS: Registry = Registry("item generator", f"{_BASE}:ItemGenerator")
CHOICE_MODELS: Registry = Registry("choice model", f"{_BASE}:ChoiceModel")
USER_DYNAMICS: Registry = Registry("user dynamics", f"{_BASE}:UserDynamics")
CREATOR_DYNAMICS: Registry = Registry("creator dynamics", f"{_BASE}:CreatorDynamics")
REWARDS: Registry = Registry("reward function", f"{_BASE}:Reward")
BEHAVIOURS: Registry = Registry("behaviour model", f"{_BASE}:Behaviour")
ROLES: Registry = Registry("role", "marl_rec.envs.roles:Role")
