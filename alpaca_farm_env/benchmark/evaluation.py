"""Pairing model outputs with the Davinci003 reference, and annotating pairs with a resumable on-disk cache.

The AlpacaEval protocol (alpaca_eval ``main.py::evaluate``): the reference is ``output_1``, the model ``output_2``;
rows are matched by instruction. AlpacaFarm keeps ``instruction`` and ``input`` apart while AlpacaEval folds the
input into the instruction as ``instruction + "\\n\\n" + input``; both forms are matched here. Rows that do not match
are returned (``missing`` / ``extra``) so callers report them; nothing is silently dropped.
"""
from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..preference import parse_preference
from ..utils import atomic_write_text, digest, file_lock

logger = logging.getLogger(__name__)

__all__ = ["MatchResult", "fold_instruction", "match_outputs", "AnnotationCache", "annotate_pairs",
           "to_alpaca_eval_layout"]


def fold_instruction(instruction: str, input: str = "") -> str:  # noqa: A002 - upstream field name
    """AlpacaEval's single-field instruction: ``instruction + "\\n\\n" + input`` when there is an input."""
    return instruction + ("\n\n" + input if input else "")


@dataclass
class MatchResult:
    """``pairs``: one dict per matched eval row (eval order) with ``instruction, input, dataset, output_1`` (the
    reference), ``generator_1``, ``output_2`` (the model) and ``generator_2``. ``missing``: eval rows without a model
    output; ``extra``: model rows that are not in the eval set."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.pairs)} matched, {len(self.missing)} eval rows missing, {len(self.extra)} extra rows"


def match_outputs(outputs: Sequence[dict[str, Any]], eval_rows: Sequence[dict[str, Any]], generator: str | None = None) -> MatchResult:
    """Match model output rows (``instruction[, input], output[, generator]``) to eval rows (``load_eval_set``)."""
    by_key: dict[tuple[str, str], int] = {}
    for j, e in enumerate(eval_rows):
        by_key[(e["instruction"], e["input"])] = j
        if e["input"]:  # the alpaca_eval layout: input folded into the instruction
            by_key.setdefault((fold_instruction(e["instruction"], e["input"]), ""), j)
    found: dict[int, dict[str, Any]] = {}
    result = MatchResult()
    for r in outputs:
        j = by_key.get((r["instruction"], r.get("input", "") or ""))
        if j is None or j in found:  # a second output for the same eval row is an extra, not an overwrite
            result.extra.append(r)
        else:
            found[j] = r
    for j, e in enumerate(eval_rows):
        r = found.get(j)
        if r is None:
            result.missing.append(e)
            continue
        result.pairs.append(
            {
                "instruction": e["instruction"],
                "input": e["input"],
                "dataset": e.get("dataset", ""),
                "output_1": e["reference_output"],
                "generator_1": e.get("reference_generator", "text-davinci-003"),
                "output_2": r["output"],
                "generator_2": r.get("generator") or generator or "model",
            }
        )
    return result


class AnnotationCache:
    """An annotations file (alpaca_eval's layout, a JSON list of rows) used as a cache: a row is reused for a pair
    with the same key -- the annotator's identity, the seed, the instruction, the input and both outputs -- so another
    judge, seed or output is annotated afresh. Rows are written whole (atomic rename, under a file lock)."""

    def __init__(self, path: str | os.PathLike | None, annotator_id: str, seed: int):
        self.path, self.annotator_id, self.seed = path, annotator_id, seed
        self.rows: dict[str, dict[str, Any]] = _read_cached_rows(path) if path is not None else {}

    def key(self, pair: dict[str, Any]) -> str:
        """The cache key of ``pair`` (``instruction, input, output_1, output_2``)."""
        return digest([self.annotator_id, self.seed, pair["instruction"], pair["input"], pair["output_1"],
                       pair["output_2"]])[:32]

    def get(self, pair: dict[str, Any]) -> dict[str, Any] | None:
        """The cached annotation row of ``pair``, or None."""
        return self.rows.get(self.key(pair))

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Replace the file's rows with ``rows`` (nothing without a path)."""
        if self.path is not None:
            _write_rows(self.path, rows)


class LazyAnnotator:
    """Wraps an annotator factory and builds the annotator at its first ``compare`` call (loading the offline
    judge's answer bank takes seconds; a resumed run whose annotations are all cached should not pay it)."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self.annotator: Any = None

    def compare(self, *args: Any, **kwargs: Any) -> Any:
        if self.annotator is None:
            self.annotator = self._factory()
        return self.annotator.compare(*args, **kwargs)


def annotate_pairs(
    annotator: Any,
    pairs: Sequence[dict[str, Any]],
    *,
    cache_path: str | os.PathLike | None = None,
    annotator_id: str | None = None,
    seed: int = 0,
    chunk_size: int = 16,
    progress: bool = True,
    desc: str = "annotate",
) -> tuple[list[dict[str, Any]], int]:
    """Annotate each pair (``output_1`` vs ``output_2``) with ``annotator.compare``; return the annotation rows (the
    pair's fields plus ``annotator, preference, probability, raw_completion, key``, and ``bank_hidden`` where the
    judge hid a banked answer from its bank) and how many came from the cache. ``annotator_id`` should be the
    annotator's identity (``annotators.annotator_identity``): it keys the cache, so another judge never reuses these.

    With ``cache_path`` the rows are written after every chunk (atomic rename), and rows already there with the same
    key (annotator id, seed, instruction, input, both outputs) are reused, so a killed run resumes where it stopped.
    The file is in the alpaca_eval annotations layout, readable by ``alpaca-farm evaluate --annotations``.
    """
    from tqdm.auto import tqdm

    ann_id = annotator_id or str(getattr(annotator, "name", type(annotator).__name__))
    cache = AnnotationCache(cache_path, ann_id, seed)
    keys = [cache.key(p) for p in pairs]
    rows: list[dict[str, Any] | None] = [cache.rows.get(k) for k in keys]
    n_cached = sum(r is not None for r in rows)
    todo = [i for i, r in enumerate(rows) if r is None]
    bar = tqdm(total=len(pairs), initial=n_cached, desc=desc, unit="pair", disable=not progress)
    for start in range(0, len(todo), chunk_size):
        idx = todo[start : start + chunk_size]
        chunk = [pairs[i] for i in idx]
        anns = annotator.compare(
            [p["instruction"] for p in chunk],
            [p["input"] for p in chunk],
            [p["output_1"] for p in chunk],
            [p["output_2"] for p in chunk],
            seed=seed,
        )
        if len(anns) != len(chunk):
            raise ValueError(f"annotator {ann_id!r} returned {len(anns)} annotations for {len(chunk)} pairs")
        for i, a in zip(idx, anns):
            rows[i] = {
                **pairs[i],
                "annotator": getattr(a, "annotator", "") or ann_id,
                "preference": a.preference,
                "probability": a.probability,
                "raw_completion": a.raw_completion,
                "key": keys[i],
            }
            if a.extra.get("bank_hidden"):  # the output was a banked GPT-4-labelled answer, hidden from the judge
                rows[i]["bank_hidden"] = True
        cache.write([r for r in rows if r is not None])
        bar.update(len(idx))
    bar.close()
    done = [r for r in rows if r is not None]
    if not todo:
        cache.write(done)  # exactly these pairs (drops stale rows of an older run)
    return done, n_cached


def _read_cached_rows(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Rows of an annotations cache by key. A cache is recomputable: an unreadable file or a malformed row is
    reported (naming the file and row) and annotated again, never trusted and never a crash."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory; the annotations cache must be a file path", str(path))
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        logger.warning("%s: unreadable annotations cache (%s); annotating every pair again", path, e)
        return {}
    if not isinstance(data, list):
        logger.warning("%s: expected a JSON list of annotation rows, got %s; annotating every pair again",
                       path, type(data).__name__)
        return {}
    cached: dict[str, dict[str, Any]] = {}
    bad = []
    for i, row in enumerate(data):
        try:
            if not (isinstance(row, dict) and isinstance(row["key"], str) and isinstance(row["output_2"], str)):
                raise TypeError
            parse_preference(row.get("preference"), path, i)
        except (KeyError, TypeError, ValueError):
            bad.append(i)
            continue
        cached[row["key"]] = row
    if bad:
        logger.warning("%s: %d malformed row(s) (e.g. row %d) ignored; those pairs are annotated again",
                       path, len(bad), bad[0])
    return cached


def _write_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    # the lock orders concurrent writers of one cache (two evaluations of one model into one directory)
    with file_lock(path):
        atomic_write_text(path, json.dumps(rows, indent=1, ensure_ascii=False))


def to_alpaca_eval_layout(rows: Sequence[dict[str, Any]], generator: str) -> list[dict[str, Any]]:
    """Model outputs in alpaca_eval's layout: ``instruction`` (input folded in), ``output``, ``generator``, ``dataset``."""
    return [
        {
            "instruction": fold_instruction(r["instruction"], r.get("input", "")),
            "output": r["output"],
            "generator": generator,
            "dataset": r.get("dataset", ""),
        }
        for r in rows
    ]
