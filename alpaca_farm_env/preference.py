"""alpaca_eval's preference encoding, shared by the data layer, the win-rate and the methods that learn from pairs
(none of which should reach into another's module for it)."""
from __future__ import annotations

from typing import Any

from .errors import DataFormatError


def parse_preference(value: Any, path: Any = "<preference>", row: int | None = None) -> float | None:
    """alpaca_eval's encoding: 1 (output_1 wins), 2 (output_2 wins), 1.5 or legacy 0 (draw), a float in [1, 2];
    ``None``/NaN/empty means unlabeled. Strings are parsed with ``float()``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, f"preference {value!r} is not a number", row=row, field="preference") from None
    if p != p:  # NaN
        return None
    if p == 0:
        return 1.5
    if not 1.0 <= p <= 2.0:
        raise DataFormatError(path, f"preference {p} outside [1, 2] (or 0 for a draw)", row=row, field="preference")
    return p
