"""Per-step training metrics as a CSV file that survives a crash and a resume (used by the RL trainer and the SFT
loop)."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .utils import atomic_write_text

__all__ = ["CSVLogger"]


class CSVLogger:
    """Per-step metrics appended to a CSV: the header written once, each row flushed and fsynced (a crash loses at
    most the row being written). ``resume(step)`` drops rows after ``step`` (written after the last checkpoint and
    about to be redone), so a resumed run never duplicates a step."""

    def __init__(self, path: str | os.PathLike, fields: Sequence[str]):
        self.path, self.fields = Path(path), list(fields)

    def resume(self, step: int) -> None:
        """Drop the rows after ``step`` (the file is rewritten atomically); returns nothing."""
        if not self.path.is_file():
            return
        rows = list(csv.DictReader(io.StringIO(self.path.read_text(encoding="utf-8"))))
        keep = [r for r in rows if r.get("step") and int(r["step"]) <= step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
        atomic_write_text(self.path, buf.getvalue())

    def log(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (floats written with 6 significant digits), the header first if the file is new."""
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, str]]:
        """Returns the rows written so far, as strings (``[]`` when there is no file)."""
        if not self.path.is_file():
            return []
        return list(csv.DictReader(io.StringIO(self.path.read_text(encoding="utf-8"))))
