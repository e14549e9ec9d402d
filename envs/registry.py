"""Name → class registries: the plug-in points of the simulator.

A new candidate sampler, choice model, user or creator dynamics, reward, behaviour model or
role joins by writing a class, decorating it with ``@REGISTRY.register("name")`` and naming it
in the configuration. Nothing in the package needs editing.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A configuration named a part that no registry entry provides."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of pluggable parts of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and not overwrite and self._entries[name] is not cls:
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered "
                    f"({self._entries[name].__qualname__}); pass overwrite=True to replace it"
                )
            self._entries[name] = cls
            cls.registered_name = name
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._entries))}"
            ) from None

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


CANDIDATE_SAMPLERS: Registry = Registry("candidate sampler")
ITEM_GENERATORS: Registry = Registry("item generator")
CHOICE_MODELS: Registry = Registry("choice model")
USER_DYNAMICS: Registry = Registry("user dynamics")
CREATOR_DYNAMICS: Registry = Registry("creator dynamics")
REWARDS: Registry = Registry("reward function")
BEHAVIOURS: Registry = Registry("behaviour model")
ROLES: Registry = Registry("role")
