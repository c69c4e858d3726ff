"""One registry mechanism for rewards, annotators and agents.

A spec may be:
  * a registered name (``"length"``),
  * a ``"package.module:attr"`` string,
  * a class -- instantiated with the keyword arguments,
  * a plain function -- the protocol's function form (e.g. a scoring function), adapted by ``wrap_function``;
    registries without one call it as a factory,
  * an instance that already satisfies the protocol -- returned as is,
The same rules apply to what a name, a "module:attr" string or an entry point resolves to.
  * a name published by another installed package under the registry's entry-point group
    (looked up only when the name is not registered here).
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class UnknownSpecError(ConfigError, KeyError):
    """Raised for a name that is neither registered nor published through an entry point (or a "module:attr" that
    does not import). A :class:`ConfigError` for the CLI and ``except ValueError``; still a ``KeyError`` for callers
    written before."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(
        self,
        kind: str,
        entry_point_group: str,
        is_instance: Callable[[Any], bool],
        wrap_function: Callable[..., T] | None = None,
    ):
        """``wrap_function(f, **kwargs)`` adapts a plain function given by the user (not a registered factory and
        not a class) into an instance, e.g. a scoring function into a reward backend."""
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._is_instance = is_instance
        self._wrap_function = wrap_function
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T] | None = None, *, override: bool = False):
        """Register ``factory`` under ``name``; usable as ``@registry.register("name")``. A ``"package.module:attr"``
        string registers lazily: the module is imported on the first ``resolve``/``make`` of ``name``."""

        def deco(f: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and not override and self._factories[name] is not f:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass override=True to replace it")
            self._factories[name] = f
            return f

        return deco(factory) if factory is not None else deco

    def unregister(self, name: str) -> None:
        self._factories.pop(name, None)

    def names(self) -> list[str]:
        names = set(self._factories)
        try:
            names.update(ep.name for ep in entry_points(group=self.entry_point_group))
        except Exception:  # a broken third-party distribution must not hide our own names
            pass
        return sorted(names)

    def resolve(self, spec: Any) -> Callable[..., T] | T:
        """Map a spec to a factory (or an instance), without calling it."""
        if isinstance(spec, str):
            if spec in self._factories:
                target = self._factories[spec]
                if isinstance(target, str):  # registered by path: imported on first use, then kept
                    target = self._factories[spec] = self.resolve(target)
                return target
            if ":" in spec:
                module_name, _, attr = spec.partition(":")
                try:
                    obj: Any = importlib.import_module(module_name)
                except ImportError as e:
                    raise UnknownSpecError(f"cannot import module {module_name!r} for {self.kind} {spec!r}: {e}") from e
                for part in attr.split("."):
                    if not hasattr(obj, part):
                        raise UnknownSpecError(f"module {module_name!r} has no attribute {attr!r} ({self.kind} {spec!r})")
                    obj = getattr(obj, part)
                return obj
            for ep in entry_points(group=self.entry_point_group):
                if ep.name == spec:
                    return ep.load()
            raise UnknownSpecError(
                f"unknown {self.kind} {spec!r}. Known: {', '.join(self.names()) or '(none)'}; "
                f"or pass 'package.module:attr', a callable, or an instance"
            )
        return spec

    def make(self, spec: Any, **kwargs: Any) -> T:
        target = self.resolve(spec)
        if not isinstance(target, type) and self._is_instance(target):
            if kwargs:
                raise TypeError(f"{self.kind} instance given together with keyword arguments {sorted(kwargs)}")
            return target
        if isinstance(target, type):
            return target(**kwargs)
        if callable(target):
            return self._wrap_function(target, **kwargs) if self._wrap_function else target(**kwargs)
        raise TypeError(f"{self.kind} spec {spec!r} resolved to {type(target).__name__}, which is neither callable nor a {self.kind}")
