"""Helpers shared by several methods (written once, imported by the method files)."""
from __future__ import annotations

from typing import Any, Mapping


def reward_of_stage(stage: Any) -> tuple[Any, dict[str, Any]]:
    """``(spec, kwargs)`` of a ``reward`` stage product: ``{"reward": ..., "reward_kwargs": {...}}``, or a plain spec
    (a registered name, a backend instance)."""
    if isinstance(stage, Mapping) and "reward" in stage:
        return stage["reward"], dict(stage.get("reward_kwargs") or {})
    return stage, {}
