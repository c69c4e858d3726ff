"""One loader for the AlpacaFarm data, from a local data directory or the Hugging Face hub.

Source order: an explicit ``data_dir`` argument (the CLI's ``--data-dir``), else ``$ALPACA_FARM_DATA_DIR``, else the
hub datasets ``tatsu-lab/alpaca_farm`` and ``tatsu-lab/alpaca_eval`` through the real ``datasets`` library.

The local layout is the one of the project's offline data copy (see docs/data.md). Splits that have no offline copy
get documented substitutes (``OFFLINE_SUBSTITUTES``); RL prompts never come from the evaluation set.

Every file is validated before anything is returned: a malformed file raises :class:`DataFormatError` naming the
file, the row and the field, and nothing is loaded.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataFormatError, DataNotFoundError
from ..preference import parse_preference  # noqa: F401  (re-exported: data.parse_preference)
from ..utils import clean_text, decode_error_text, stable_hash

DATA_DIR_ENV = "ALPACA_FARM_DATA_DIR"
HF_FARM = "tatsu-lab/alpaca_farm"
HF_EVAL = "tatsu-lab/alpaca_eval"
# Override the hub repos (e.g. a mirror or a local folder laid out like the hub repo): used by the tests.
HF_FARM_ENV, HF_EVAL_ENV = "ALPACA_FARM_HF_FARM", "ALPACA_FARM_HF_EVAL"

REFERENCES = {
    # (A) the AlpacaFarm paper's text-davinci-003 outputs: matches the paper's simulated-pool numbers.
    "alpacafarm": "alpacafarm_eval/alpacafarm_paper_reference_text_davinci_003.json",
    # (B) AlpacaEval-1's text-davinci-003 outputs: output_1 of every AlpacaEval-1 GPT-4 annotation file.
    "alpacaeval1": "alpacafarm_eval/alpaca_eval_v1_reference_text_davinci_003_alpacafarm_layout.json",
}
EVAL_DATASET_COUNTS = {"selfinstruct": 252, "oasst": 188, "koala": 156, "helpful_base": 129, "vicuna": 80}
EVAL_SIZE = sum(EVAL_DATASET_COUNTS.values())  # 805
SPLITS = ("sft", "preference", "unlabeled", "val")
PREFERENCE_SETS = ("alpaca_gpt4_preference", "alpaca_human_preference", "alpaca_noisy_multi_preference")

SFT_SAMPLE = "sft/alpaca_data_random5000.json"
VAL_FILE = "alpaca_farm_splits/val_2k_naver.json"
CROSS_ANNOTATION_GPT4 = "crossannotation_set/gpt4_b1_annotations_seed0.json"
OFFLINE_SUBSTITUTES = {
    "sft": f"{SFT_SAMPLE}: the 5k Stanford Alpaca sample minus val rows, hash-partitioned 1:2:2 (sft share)",
    "preference": f"{SFT_SAMPLE}: same partition, preference share (AlpacaFarm's split is 20k)",
    "unlabeled": f"{SFT_SAMPLE}: same partition, unlabeled share (RL prompts; AlpacaFarm's split is 20k)",
    "val": f"{VAL_FILE}: the real AlpacaFarm val split (2000 rows, naver-ai re-format parsed back)",
    "alpaca_gpt4_preference": f"{CROSS_ANNOTATION_GPT4}: real GPT-4 (b1) pairwise labels, eval-set rows removed",
}
# instruction / preference / unlabeled in AlpacaFarm are 10k / 20k / 20k: keep those proportions offline.
_PARTITION = (("sft", 1), ("preference", 2), ("unlabeled", 2))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory in force, or None for the hub."""
    value = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"data directory {path} does not exist (from {'--data-dir' if data_dir else DATA_DIR_ENV})")
    return path


# ----------------------------------------------------------------------------------------------- validation
def read_records(
    path: str | os.PathLike,
    fields: dict[str, type | tuple[type, ...]],
    *,
    optional: dict[str, type | tuple[type, ...]] | None = None,
    unique: Sequence[str] | None = None,
    nonempty: Sequence[str] = ("instruction",),
) -> list[dict[str, Any]]:
    """Read a JSON list of objects and validate it whole; raise :class:`DataFormatError` on the first problem (a file
    that is not UTF-8 names the byte offset of its first bad byte). A JSON escape of a lone surrogate (``"\\ud800"``)
    is read as U+FFFD (:func:`~alpaca_farm_env.utils.clean_text`)."""
    path = Path(path)
    if path.is_dir():
        raise DataNotFoundError(f"{path}: is a directory, expected a JSON file")
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, decode_error_text(e)) from None
    except OSError as e:  # e.g. PermissionError: the file is there but this user cannot read it
        raise DataNotFoundError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise DataFormatError(path, f"expected a JSON list of objects, got {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(text):
        data = _clean_json(data)
    optional = optional or {}
    seen: dict[tuple, int] = {}
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataFormatError(path, f"expected an object, got {type(row).__name__}", row=i)
        for name, typ in {**fields, **optional}.items():
            if name not in row:
                if name in fields:
                    raise DataFormatError(path, "missing field", row=i, field=name)
                continue
            if not isinstance(row[name], typ) or isinstance(row[name], bool) and bool not in _as_tuple(typ):
                want = " or ".join(t.__name__ for t in _as_tuple(typ))
                raise DataFormatError(path, f"expected {want}, got {type(row[name]).__name__}", row=i, field=name)
        for name in nonempty:
            if name in row and isinstance(row[name], str) and not row[name].strip():
                raise DataFormatError(path, "empty value", row=i, field=name)
        if unique:
            key = tuple(row.get(k, "") for k in unique)
            if key in seen:
                raise DataFormatError(
                    path, f"duplicate {'+'.join(unique)} (first seen at row {seen[key]})", row=i, field=unique[0]
                )
            seen[key] = i
    return data


# a JSON escape of a surrogate ("\ud800"): valid JSON, but text that UTF-8 cannot encode once decoded
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _clean_json(value: Any) -> Any:
    """Every string in a decoded JSON value through :func:`~alpaca_farm_env.utils.clean_text` (a lone surrogate
    becomes U+FFFD), as the annotators would see it."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    if isinstance(value, dict):
        return {_clean_json(k): _clean_json(v) for k, v in value.items()}
    return value


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


# ----------------------------------------------------------------------------------------------- eval set
def load_eval_set(reference: str = "alpacafarm", data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The 805 AlpacaFarm evaluation instructions with a text-davinci-003 reference output.

    Rows: ``instruction``, ``input``, ``dataset``, ``reference_output``, ``reference_generator``.
    ``reference="alpacafarm"`` (default) is the paper's reference (A); ``"alpacaeval1"`` is AlpacaEval-1's (B).
    Raises :class:`DataFormatError` unless the set has the 805 rows (``EVAL_DATASET_COUNTS`` per dataset) and,
    for (B), the same (instruction, input) pairs in the same order as (A): a truncated or reordered reference would
    silently evaluate fewer or different rows.
    """
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; choose one of {sorted(REFERENCES)}")
    root = resolve_data_dir(data_dir)
    return [dict(r) for r in _eval_set_cached(reference, str(root) if root else None)]


@lru_cache(maxsize=4)
def _eval_set_cached(reference: str, root: str | None) -> tuple[dict[str, Any], ...]:
    if root is not None:
        path = Path(root) / REFERENCES[reference]
        rows = read_records(
            path,
            {"instruction": str, "input": str, "output": str, "dataset": str},
            optional={"generator": str},
            unique=("instruction", "input"),
        )
        _check_eval_rows(path, rows)
        if reference != "alpacafarm":
            _check_same_prompts(path, rows, Path(root) / REFERENCES["alpacafarm"], _eval_set_cached("alpacafarm", root))
    else:
        rows = _hub_eval_set(reference)
    return tuple(
        {
            "instruction": r["instruction"],
            "input": r["input"],
            "dataset": r["dataset"],
            "reference_output": r["output"],
            "reference_generator": r.get("generator", "text-davinci-003"),
        }
        for r in rows
    )


def _check_eval_rows(source: Any, rows: Sequence[dict[str, Any]]) -> None:
    """The eval set is exactly 805 rows with ``EVAL_DATASET_COUNTS`` per dataset."""
    if len(rows) != EVAL_SIZE:
        raise DataFormatError(source, f"{len(rows)} rows, expected the {EVAL_SIZE} of the AlpacaFarm eval set (truncated?)")
    counts = Counter(r["dataset"] for r in rows)
    diff = [f"{d}: {counts.get(d, 0)} (expected {n})" for d, n in EVAL_DATASET_COUNTS.items() if counts.get(d, 0) != n]
    diff += [f"{d}: {n} (not an eval dataset)" for d, n in counts.items() if d not in EVAL_DATASET_COUNTS]
    if diff:
        raise DataFormatError(source, f"rows per dataset differ from the eval set's: {'; '.join(diff)}", field="dataset")


def _check_same_prompts(source: Any, rows: Sequence[dict], ref_source: Any, ref_rows: Sequence[dict]) -> None:
    """Every reference holds the same (instruction, input) pairs in the same order (row i is the same prompt)."""
    for i, (r, a) in enumerate(zip(rows, ref_rows, strict=True)):
        for field in ("instruction", "input"):
            if r[field] != a[field]:
                raise DataFormatError(
                    source, f"differs from row {i} of {ref_source} (every reference must list the same prompts in the "
                    f"same order): {r[field][:60]!r} vs {a[field][:60]!r}", row=i, field=field,
                )


def _hub_repo(which: str) -> str:
    return os.environ.get(HF_FARM_ENV if which == "farm" else HF_EVAL_ENV) or (HF_FARM if which == "farm" else HF_EVAL)


def hub_dataset(which: str, config: str, split: str):
    """``datasets.load_dataset`` on the AlpacaFarm (``which="farm"``) or AlpacaEval (``"eval"``) hub repo.

    Both repos are script-based, which ``datasets`` >= 4 refuses to run; the hub keeps a parquet export of them
    under ``refs/convert/parquet`` with the same configs and splits, so fall back to it.

    Raises :class:`DataNotFoundError` when the hub cannot be reached (offline, no network) or has no such dataset.
    """
    import datasets

    repo = _hub_repo(which)
    try:
        try:
            return datasets.load_dataset(repo, config, split=split)
        except RuntimeError as e:
            if "scripts are no longer supported" not in str(e):
                raise
            return datasets.load_dataset(repo, config, split=split, revision="refs/convert/parquet")
    except OSError as e:
        # datasets and huggingface_hub raise OSErrors for every network, offline and not-found failure
        # (ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, HfHubHTTPError); anything else is a bug.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataNotFoundError(
            f"no local data dir (set {DATA_DIR_ENV} or --data-dir) and the hub dataset {repo} ({config}, {split}) "
            f"could not be loaded ({reason})"
        ) from e


def _hub_eval_set(reference: str) -> list[dict[str, Any]]:
    farm = hub_dataset("farm", "alpaca_farm_evaluation", "eval")
    rows = [dict(r) for r in farm]
    _check_eval_rows(_hub_repo("farm"), rows)
    if reference == "alpacaeval1":
        # AlpacaEval folds input into instruction; same 805 rows in the same order (checked below).
        ae = hub_dataset("eval", "alpaca_eval", "eval")
        if len(ae) != len(rows):
            raise DataFormatError(_hub_repo("eval"), f"{len(ae)} rows, expected the {len(rows)} of the AlpacaFarm eval set")
        for i, (r, a) in enumerate(zip(rows, ae)):
            joined = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
            if joined != a["instruction"]:
                raise DataFormatError(
                    _hub_repo("eval"), "instruction does not match the AlpacaFarm eval set", row=i, field="instruction"
                )
            r["output"], r["generator"] = a["output"], a["generator"]
    return rows


# ----------------------------------------------------------------------------------------------- splits
def load_split(split: str, data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """An AlpacaFarm instruction split (``sft``, ``preference``, ``unlabeled``, ``val``): ``instruction, input, output``.

    Offline, the splits AlpacaFarm has but the data dir lacks come from ``OFFLINE_SUBSTITUTES``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    root = resolve_data_dir(data_dir)
    if root is None:
        ds = hub_dataset("farm", "alpaca_instructions", split)
        return [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in ds]
    if split == "val":
        return _load_val(root)
    return [dict(r) for r in _partition(str(root))[split]]


def _load_val(root: Path) -> list[dict[str, Any]]:
    path = root / VAL_FILE
    rows = read_records(path, {"input": str, "output": str}, optional={"qtype": str}, nonempty=("input",))
    out = []
    for r in rows:
        # naver-ai folded the input in as instruction + "\n\n### Input:\n" + input; undo it.
        instruction, sep, inp = r["input"].partition("\n\n### Input:\n")
        out.append({"instruction": instruction, "input": inp if sep else "", "output": r["output"]})
    return out


@lru_cache(maxsize=2)
def _partition(root: str) -> dict[str, tuple[dict[str, Any], ...]]:
    rows = read_records(
        Path(root) / SFT_SAMPLE, {"instruction": str, "input": str, "output": str}, unique=("instruction", "input")
    )
    val = {(r["instruction"], r["input"]) for r in _load_val(Path(root))}
    total = sum(w for _, w in _PARTITION)
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in _PARTITION}
    for r in rows:
        if (r["instruction"], r["input"]) in val:
            continue  # keep val disjoint from the training splits
        slot = stable_hash("split", r["instruction"], r["input"]) % total
        for name, w in _PARTITION:
            if slot < w:
                parts[name].append(r)
                break
            slot -= w
    return {k: tuple(v) for k, v in parts.items()}


def load_prompts(split: str = "unlabeled", data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Instruction rows for RL rollouts (never the eval set)."""
    return [{"instruction": r["instruction"], "input": r["input"]} for r in load_split(split, data_dir)]


# ----------------------------------------------------------------------------------------------- preferences
def load_preference(name: str = "alpaca_gpt4_preference", data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Pairwise preference data: ``instruction, input, output_1, output_2, preference`` (1 or 2)."""
    if name not in PREFERENCE_SETS:
        raise ValueError(f"unknown preference set {name!r}; choose one of {list(PREFERENCE_SETS)}")
    root = resolve_data_dir(data_dir)
    if root is None:
        ds = hub_dataset("farm", name, "preference")
        return [
            {k: r[k] for k in ("instruction", "input", "output_1", "output_2")} | {"preference": float(r["preference"])}
            for r in ds
        ]
    if name != "alpaca_gpt4_preference":
        raise DataNotFoundError(
            f"{name} has no offline copy in {root}; offline, use 'alpaca_gpt4_preference' or build simulated "
            "preferences with the noisy_pooled annotator"
        )
    path = root / CROSS_ANNOTATION_GPT4
    rows = read_records(
        path,
        {"instruction": str, "input": str, "output_1": str, "output_2": str, "preference": (int, float, str)},
    )
    eval_keys = {(r["instruction"], r["input"]) for r in load_eval_set("alpacafarm", root)}
    out = []
    for i, r in enumerate(rows):
        if (r["instruction"], r["input"]) in eval_keys:
            continue
        out.append({k: r[k] for k in ("instruction", "input", "output_1", "output_2")} | {"preference": parse_preference(r["preference"], path, i)})
    return out


# ----------------------------------------------------------------------------------------------- model outputs
def list_annotated_models(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Models with AlpacaEval-1 GPT-4 annotations (``alpaca_eval_results/<model>/alpaca_eval_gpt4``) in the data dir."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return []
    return sorted(p.parent.parent.name for p in (root / "alpaca_eval_results").glob("*/alpaca_eval_gpt4/annotations.json"))


def load_gpt4_annotations(model: str, data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """AlpacaEval-1 GPT-4 judgments of ``model`` against reference (B): output_1 = davinci003, output_2 = model."""
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataNotFoundError("GPT-4 annotation files need a local data dir (set ALPACA_FARM_DATA_DIR or --data-dir)")
    path = root / "alpaca_eval_results" / model / "alpaca_eval_gpt4" / "annotations.json"
    return load_annotations_file(path)


def load_annotations_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Pairwise annotation rows in the alpaca_eval layout; ``preference`` parsed to float or None."""
    rows = read_records(
        path,
        {"instruction": str, "output_1": str, "output_2": str},
        optional={"input": str, "dataset": str, "preference": (int, float, str, type(None)), "generator_2": str},
    )
    for i, r in enumerate(rows):
        r["preference"] = parse_preference(r.get("preference"), path, i)
        r.setdefault("input", "")
    return rows


def load_model_outputs(path_or_model: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Model outputs in the alpaca_eval layout (``instruction, output[, generator, dataset]``) or the AlpacaFarm
    layout (with ``input``). A bare model name is looked up under ``alpaca_eval_results/<model>/`` of the data dir."""
    path = Path(path_or_model)
    if not path.exists():
        root = resolve_data_dir(data_dir)
        candidate = root / "alpaca_eval_results" / str(path_or_model) / "model_outputs.json" if root else None
        if candidate is None or not candidate.is_file():
            raise DataNotFoundError(f"{path_or_model}: neither a file nor a model in the data dir")
        path = candidate
    rows = read_records(
        path,
        {"instruction": str, "output": str},
        optional={"input": str, "generator": str, "dataset": str},
        unique=("instruction", "input"),
    )
    for r in rows:
        r.setdefault("input", "")
    return rows


def describe(data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Sizes and sources of every split, for ``alpaca-farm data``. Loading checks every file: each reference has the
    805 eval rows and the same prompts in the same order (else :class:`DataFormatError`)."""
    root = resolve_data_dir(data_dir)
    source = str(root) if root else f"hub: {HF_FARM}, {HF_EVAL}"
    ev = {reference: load_eval_set(reference, root) for reference in REFERENCES}["alpacafarm"]  # loading checks each
    info: dict[str, Any] = {
        "source": source,
        "eval": {"n": len(ev), "with_input": sum(1 for r in ev if r["input"]), "by_dataset": dict(Counter(r["dataset"] for r in ev).most_common())},
        "references": list(REFERENCES),
        "splits": {},
    }
    for split in SPLITS:
        info["splits"][split] = {"n": len(load_split(split, root)), "source": OFFLINE_SUBSTITUTES[split] if root else HF_FARM}
    if root is not None:
        info["splits"]["alpaca_gpt4_preference"] = {
            "n": len(load_preference("alpaca_gpt4_preference", root)),
            "source": OFFLINE_SUBSTITUTES["alpaca_gpt4_preference"],
        }
        info["gpt4_annotated_models"] = list_annotated_models(root)
    return info


