"""Checks of user settings against the dataclasses and signatures that will receive them, run before any work.

A preset's method configs, stage configs and backend keyword arguments are plain mappings until a method builds
its config. :func:`check_fields` checks such a mapping against the dataclass itself, so a field added to a config
is checked without new code:

* unknown keys, with a "did you mean" from the known ones;
* types, read from the field annotations (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``Literal[...]``,
  ``tuple``/``list``/``dict``, nested config dataclasses, checked recursively);
* ranges: a config class may state them in ``RANGES = {"field": (low, high)}`` (inclusive, ``None`` = open);
  without one, :func:`default_range` applies the conventions every config here follows (no negative
  hyper-parameter; counts and sizes at least 1; ratios, probabilities and dropouts in [0, 1]).

:func:`check_call` checks keyword arguments against a factory's signature in the same way.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from typing import Any, Callable, Literal, Mapping

from .errors import ConfigError

__all__ = ["check_fields", "check_call", "accepted_parameters", "default_range", "did_you_mean", "config_class_for"]

_COUNT = re.compile(r"(^n_|^num_|_steps$|batch_size$|_len$|^max_length$|^model_max_length$|epochs$|^n$|^top_k$)")
_UNIT = re.compile(r"(ratio$|dropout$|^top_p$|^gamma$|^lam$|^p_|quantile$)")
_UNBOUNDED = re.compile(r"(^seed$|_seed$)")


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def default_range(name: str, typ: Any) -> tuple[float | None, float | None]:
    """The range a numeric field ``name`` has unless its class says otherwise: seeds are free; counts and sizes
    (``*_steps``, ``*batch_size``, ``*_len``, ``n_*``, ``num_*``, ``*epochs``) are at least 1, except warm-up steps
    (at least 0); ratios, probabilities, dropouts, ``gamma``/``lam`` and quantiles lie in [0, 1]; every other number
    is at least 0."""
    if _UNBOUNDED.search(name):
        return (None, None)
    if name.startswith("warmup"):
        return (0, None)
    if _COUNT.search(name) and typ is int:
        return (1, None)
    if _UNIT.search(name):
        return (0, 1)
    return (0, None)


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that does not resolve is not checked
        return {}


def _describe(typ: Any) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
             list: "a list", tuple: "a list"}
    if typ in words:
        return words[typ]
    origin = typing.get_origin(typ)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(typ))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) if a is not type(None) else "null" for a in typing.get_args(typ))
    if dataclasses.is_dataclass(typ):
        return f"a mapping of {typ.__name__} fields"
    if origin in words:
        return words[origin]
    return getattr(typ, "__name__", str(typ))


def _matches(value: Any, typ: Any) -> bool | None:
    """Whether ``value`` fits ``typ``; None when the annotation is not one this checker understands."""
    if typ is Any:
        return True
    if typ is type(None):
        return value is None
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(typ) and isinstance(typ, type):
        return isinstance(value, (Mapping, typ))
    origin = typing.get_origin(typ)
    if origin is Literal:
        return value in typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, a) for a in typing.get_args(typ)]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin in (list, tuple, typing.Sequence, set, frozenset) or typ in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping) or typ is dict:
        return isinstance(value, Mapping)
    if isinstance(typ, type):
        return isinstance(value, typ)
    return None


def _nested_dataclass(typ: Any) -> type | None:
    if dataclasses.is_dataclass(typ) and isinstance(typ, type):
        return typ
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        for a in typing.get_args(typ):
            if dataclasses.is_dataclass(a) and isinstance(a, type):
                return a
    return None


def _check_value(value: Any, typ: Any, name: str, key: str, ranges: Mapping[str, Any], where: str) -> None:
    ok = _matches(value, typ)
    if ok is False:
        raise ConfigError(f"{where}: {key}: expected {_describe(typ)}, got {value!r} ({type(value).__name__})")
    nested = _nested_dataclass(typ)
    if nested is not None and isinstance(value, Mapping):
        check_fields(nested, value, where, prefix=key + ".")
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        base = float if (typ is float or float in typing.get_args(typ)) else int
        lo, hi = ranges.get(name, default_range(name, base))
        if value != value:  # NaN
            raise ConfigError(f"{where}: {key}: must be a number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
            raise ConfigError(f"{where}: {key}: must be {span}, got {value!r}")


def check_fields(cls: type, data: Any, where: str, prefix: str = "") -> None:
    """Check the mapping ``data`` against the fields of dataclass ``cls`` (keys, types, ranges; nested config
    dataclasses recursively). An instance of ``cls`` is accepted as is. Raises :class:`ConfigError` naming
    ``where`` and the key (``prefix`` + field)."""
    if isinstance(data, cls):
        return
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: expected a mapping of {cls.__name__} "
                          f"fields, got {data!r} ({type(data).__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {prefix + str(key)!r}{did_you_mean(key, list(fields))}; "
                              f"{cls.__name__} has {sorted(fields)}")
    hints = _hints(cls)
    ranges = getattr(cls, "RANGES", {}) or {}
    for key, value in data.items():
        if key in hints:
            _check_value(value, hints[key], key, prefix + key, ranges, where)
    if hasattr(cls, "__post_init__") and not any(isinstance(v, Mapping) for v in data.values()):
        try:  # the class's own checks across fields
            cls(**data)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {e}") from None


def config_class_for(factory: Any, param: str) -> type | None:
    """The config dataclass a factory's keyword argument ``param`` receives as a mapping: the dataclass named in
    the parameter's annotation, else, for ``config``, the factory's ``CONFIG_CLASS``."""
    cls = _nested_dataclass(accepted_parameters(factory)[0].get(param))
    if cls is None and param == "config":
        cls = getattr(factory, "CONFIG_CLASS", None)
    return cls if cls is not None and dataclasses.is_dataclass(cls) else None


def accepted_parameters(factory: Any) -> tuple[dict[str, Any], bool]:
    """``(name -> annotation, takes_any)`` of the keyword arguments ``factory`` accepts. For a class, an
    ``__init__`` that forwards ``**kwargs`` to its parent's adds the parent's parameters (along the MRO), so an agent
    subclass's typo is still found; ``takes_any`` is True only when the last ``__init__`` reached takes any key."""
    targets: list[Any] = []
    if isinstance(factory, type):
        targets = [c.__dict__["__init__"] for c in factory.__mro__ if "__init__" in c.__dict__ and c is not object]
    else:
        targets = [factory]
    named: dict[str, Any] = {}
    for target in targets:
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return named, True
        hints = _hints(target)
        for n, p in params.items():
            if n != "self" and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                named.setdefault(n, hints.get(n, Any))
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return named, False
    return named, True


def check_call(factory: Callable[..., Any], kwargs: Mapping[str, Any], where: str, prefix: str = "",
               what: str = "") -> None:
    """Check keyword arguments for ``factory(**kwargs)``: unknown names (unless it takes any), the types its
    annotations state, and mappings given for config dataclasses (:func:`check_fields`)."""
    named, takes_any = accepted_parameters(factory)
    label = what or getattr(factory, "__name__", repr(factory))
    for key in kwargs:
        if key not in named and not takes_any:
            raise ConfigError(f"{where}: unknown key {prefix + str(key)!r}{did_you_mean(key, list(named))}; {label} "
                              f"takes {sorted(named)}")
    for key, value in kwargs.items():
        cls = config_class_for(factory, key) if isinstance(value, Mapping) else None
        if cls is not None:
            check_fields(cls, value, where, prefix=prefix + key + ".")
        elif key in named and value is not None:
            _check_value(value, named[key], key, prefix + key, {}, where)
