"""``UnicodeText``: a Gymnasium space of arbitrary Python strings.

Gymnasium's ``spaces.Text`` only admits characters from a fixed charset (alphanumerics by default), so instructions
and responses with punctuation, newlines or non-Latin scripts would fall outside it. This space admits *any* ``str``
whose length (in characters) lies in ``[min_length, max_length]``; ``sample()`` draws printable text.
"""
from __future__ import annotations

import string
from typing import Any, Sequence

import numpy as np
from gymnasium.spaces import Space

# What sample() draws from: ASCII printables plus a few multi-byte characters, so samples exercise UTF-8 paths.
DEFAULT_SAMPLE_CHARSET = (
    string.ascii_letters + string.digits + string.punctuation + " " * 8 + "\n" + "éüñßçøåαβγжд中文字€😀"
)


class UnicodeText(Space[str]):
    """Any ``str`` with ``min_length <= len(x) <= max_length``.

    ``sample(mask=None)`` returns printable text of a uniformly drawn length in
    ``[min_length, min(max_length, sample_max_length)]``; ``mask`` may be an int: the exact length to sample.
    """

    def __init__(
        self,
        max_length: int,
        *,
        min_length: int = 0,
        sample_max_length: int = 64,
        sample_charset: str = DEFAULT_SAMPLE_CHARSET,
        seed: int | np.random.Generator | None = None,
    ):
        if min_length < 0 or max_length < min_length:
            raise ValueError(f"need 0 <= min_length <= max_length, got min_length={min_length}, max_length={max_length}")
        if not sample_charset:
            raise ValueError("sample_charset must not be empty")
        self.min_length = int(min_length)
        self.max_length = int(max_length)
        self.sample_max_length = int(sample_max_length)
        self.sample_charset = sample_charset
        self._chars = np.array(list(sample_charset), dtype=object)
        super().__init__(dtype=str, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any | None = None, probability: Any | None = None) -> str:
        if probability is not None:
            raise ValueError("UnicodeText.sample does not support `probability`")
        if mask is not None:
            length = int(mask)
            if not self.min_length <= length <= self.max_length:
                raise ValueError(f"mask length {length} outside [{self.min_length}, {self.max_length}]")
        else:
            hi = max(self.min_length, min(self.max_length, self.sample_max_length))
            length = int(self.np_random.integers(self.min_length, hi + 1))
        return "".join(self.np_random.choice(self._chars, size=length))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def to_jsonable(self, sample_n: Sequence[str]) -> list[str]:
        return [str(s) for s in sample_n]

    def from_jsonable(self, sample_n: Sequence[str]) -> list[str]:
        return [str(s) for s in sample_n]

    def __repr__(self) -> str:
        return f"UnicodeText(min_length={self.min_length}, max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        if "_chars" not in self.__dict__:
            self._chars = np.array(list(self.sample_charset), dtype=object)
