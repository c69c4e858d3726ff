"""The cross-annotation set: the AlpacaFarm pairs outside the eval set, each judged 8 times by GPT-4, against the
packaged judges, beside GPT-4's agreement with itself."""
from __future__ import annotations

import os
import time
from itertools import combinations
from typing import Any

import numpy as np

from ..features import full_prompt
from ..training_data import load_training_pairs
from .scoring import UNSEEN_TARGETS, _agreement, _gain_over, longer_preference

CROSS_ANNOTATION_GLOB = "crossannotation_set/gpt4_*_annotations_seed*.json"
DEFAULT_CROSS_ANNOTATION_JUDGES = ("distilled_gpt4", "pooled")


def load_cross_annotations(data_dir: str | os.PathLike | None = None) -> tuple[list[dict], np.ndarray, list[str]]:
    """The AlpacaFarm cross-annotation pairs and GPT-4's labels of them: ``(rows, labels, file names)``.

    The data dir's ``crossannotation_set/gpt4_{b1,b5}_annotations_seed{0..3}.json`` hold the same pairs in the same
    order (checked), each labelled by one GPT-4 configuration and seed: ``labels[i, j]`` is file ``j``'s preference
    for pair ``i`` (1, 2, 1.5, or NaN when unlabelled).
    """
    from ...data import load_annotations_file, resolve_data_dir
    from ...errors import DataFormatError, DataNotFoundError

    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataNotFoundError("the cross-annotation files need a local data dir (set ALPACA_FARM_DATA_DIR or --data-dir)")
    paths = sorted(root.glob(CROSS_ANNOTATION_GLOB))
    if len(paths) < 2:
        raise DataNotFoundError(f"{root / 'crossannotation_set'}: need at least 2 GPT-4 annotation files "
                                f"({CROSS_ANNOTATION_GLOB.split('/')[-1]}), found {len(paths)}")
    files = [load_annotations_file(p) for p in paths]
    fields = ("instruction", "input", "output_1", "output_2")
    for path, f in zip(paths[1:], files[1:]):
        if len(f) != len(files[0]):
            raise DataFormatError(path, f"{len(f)} rows, but {paths[0].name} has {len(files[0])}: not the same pairs")
        for i, (a, b) in enumerate(zip(files[0], f)):
            if any(a[k] != b[k] for k in fields):
                raise DataFormatError(path, f"not the pair of {paths[0].name} at the same row", row=i)
    rows = [{k: r[k] for k in fields} for r in files[0]]
    labels_ = np.asarray([[np.nan if f[i]["preference"] is None else f[i]["preference"] for f in files]
                          for i in range(len(rows))], dtype=np.float64).reshape(len(rows), len(files))
    return rows, labels_, [p.name for p in paths]


def majority_label(labels_: np.ndarray) -> np.ndarray:
    """Per row of ``labels_`` (rows x annotations): 2 if most labels say output_2, 1 if most say output_1, 1.5 on a
    tie or without labels (a draw, which ``_agreement`` excludes from the gold side). Draws count one half."""
    v = np.asarray(labels_, np.float64) - 1.0
    count = np.sum(~np.isnan(v), axis=1)
    total = np.nansum(v, axis=1)
    twice = 2 * total - count  # > 0: output_2 has the majority (exact for labels 0, 1/2, 1)
    return np.where(count == 0, 1.5, np.where(twice > 0, 2.0, np.where(twice < 0, 1.0, 1.5)))


def leave_one_out_majorities(labels_: np.ndarray) -> list[np.ndarray]:
    """``[majority of all annotations but j, for each j]``: the gold a single annotation (or a judge) is compared
    with without counting that annotation in it (with 8 binary labels, 7 never tie)."""
    return [majority_label(np.delete(labels_, j, axis=1)) for j in range(labels_.shape[1])]


def pairwise_agreement(labels_: np.ndarray) -> float:
    """Mean agreement between two annotations of the same pair, over all pairs of annotations (columns)."""
    return float(np.mean([_agreement(labels_[:, a], labels_[:, b])[0]
                          for a, b in combinations(range(labels_.shape[1]), 2)]))


def _cross_report(prefs: dict[str, np.ndarray], labels_: np.ndarray, longer: np.ndarray) -> dict[str, Any]:
    """Agreement of each judge in ``prefs`` with GPT-4's majority (ties excluded), with the leave-one-out majorities
    (mean over annotations j of the majority of the others) and with a single annotation, beside GPT-4's own."""
    maj = majority_label(labels_)
    loo = leave_one_out_majorities(labels_)
    cols = range(labels_.shape[1])
    out: dict[str, Any] = {
        "n_pairs": int(len(labels_)),
        "n_majority_ties": int(np.sum(maj == 1.5)),
        "gpt4_majority_prefers_output_2": _agreement(np.full(len(maj), 2.0), maj)[0],
        "gpt4": {
            "agreement_loo_majority": float(np.mean([_agreement(labels_[:, j], loo[j])[0] for j in cols])),
            "agreement_single": pairwise_agreement(labels_),
            "prefers_longer": float(np.mean([_agreement(labels_[:, j], longer)[0] for j in cols])),
        },
    }
    for key, p in prefs.items():
        out[key] = {
            "agreement_majority": _agreement(p, maj)[0],
            "agreement_loo_majority": float(np.mean([_agreement(p, loo[j])[0] for j in cols])),
            "agreement_single": float(np.mean([_agreement(p, labels_[:, j])[0] for j in cols])),
            "prefers_longer": _agreement(p, longer)[0],
        }
    return out


def _training_info(annotator: Any) -> dict[str, Any] | None:
    """What a distilled judge's global head was trained on (its artifact's meta), for pools too."""
    member = next(iter(annotator.members.values())) if isinstance(getattr(annotator, "members", None), dict) else annotator
    meta = getattr(getattr(member, "artifact", None), "meta", None)
    return {k: meta.get(k) for k in ("n_pairs", "n_synthetic", "models", "source", "built_at")} if meta else None


def _make_judge(spec: Any, root: Any, progress: bool) -> Any:
    """The annotator of ``spec``: an instance as given, a name built with the data dir (in its context) and
    ``bank_holdout=True`` (and ``progress``) where its factory takes them."""
    from ...annotators import ANNOTATORS, make_annotator
    from ...context import RewardContext
    from ...utils import accepts_kwarg

    if not isinstance(spec, str):
        return spec
    factory = ANNOTATORS.resolve(spec)
    kwargs = {k: v for k, v in (("bank_holdout", True), ("progress", progress)) if accepts_kwarg(factory, k)}
    return make_annotator(spec, context=RewardContext.of(root), **kwargs)


def _judge_pairs(annotator: Any, rows: list[dict], outside: np.ndarray) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """``annotator``'s preferences of ``rows`` (NaN where unlabeled) and, per subset (``outside_eval``,
    ``inside_eval``), how many pairs each of its heads scored (``scored_by``)."""
    anns = annotator.compare([r["instruction"] for r in rows], [r["input"] for r in rows],
                             [r["output_1"] for r in rows], [r["output_2"] for r in rows])
    prefs = np.asarray([np.nan if a.preference is None else a.preference for a in anns], np.float64)
    scored_by: dict[str, dict[str, int]] = {}
    for subset, mask in (("outside_eval", outside), ("inside_eval", ~outside)):
        counts: dict[str, int] = {}
        for a, m in zip(anns, mask):
            if m and "scored_by" in a.extra:
                counts[a.extra["scored_by"]] = counts.get(a.extra["scored_by"], 0) + 1
        scored_by[subset] = counts
    return prefs, scored_by


def evaluate_cross_annotation(
    data_dir: str | os.PathLike | None = None,
    judge: Any = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """The packaged judges on the cross-annotation pairs whose instructions lie outside the eval set (327 of 648),
    against GPT-4's 8 judgments of each (``load_cross_annotations``), with "longer wins" and GPT-4's self-agreement.

    ``judge``: an annotator name (built with ``data_dir`` and ``bank_holdout=True`` where it takes them), an
    annotator instance, or a list of either; default ``distilled_gpt4`` (head 0) and ``pooled`` as users get them.
    Figures per judge: agreement with the majority of the 8 GPT-4 labels (4-4 ties excluded, counted in
    ``n_majority_ties``), the mean agreement with the majority of 7 when each annotation in turn is left out
    (``agreement_loo_majority``: the same gold GPT-4's own single annotations are scored against, so the two compare),
    the mean agreement with a single annotation, and how often it picks the longer output. ``inside_eval`` (the 321
    pairs on eval instructions, judged by the bank heads with each pair's outputs hidden from the bank) is context.
    The outside instructions are checked against the eval set and the judge's training pairs
    (``n_outside_in_training``, 0 when the data dir has the GPT-4 annotation files). Returns the figures per subset
    (``subsets``) and per judge (``judges``, ``targets``: agreement over "longer wins" on the outside pairs).
    """
    from ...data import load_eval_set, resolve_data_dir

    t_start = time.time()
    root = resolve_data_dir(data_dir)
    rows, labels_, names = load_cross_annotations(root)
    prompts = [full_prompt(r["instruction"], r["input"]) for r in rows]
    eval_prompts = {full_prompt(r["instruction"], r["input"]) for r in load_eval_set("alpacafarm", root)}
    train_prompts = {full_prompt(r["instruction"], r.get("input", "") or "") for r in load_training_pairs(root)}
    outside = np.asarray([p not in eval_prompts for p in prompts])
    specs = list(DEFAULT_CROSS_ANNOTATION_JUDGES) if judge is None else (
        list(judge) if isinstance(judge, (list, tuple)) else [judge])
    prefs: dict[str, np.ndarray] = {}
    scored_by: dict[str, dict[str, dict[str, int]]] = {}
    judges: dict[str, Any] = {}
    for spec in specs:
        annotator = _make_judge(spec, root, progress)
        name = getattr(annotator, "name", None) or str(spec)
        if name in prefs or name == "longer":
            raise ValueError(f"two judges named {name!r} (the 'longer wins' baseline is always reported as 'longer')")
        prefs[name], scored_by[name] = _judge_pairs(annotator, rows, outside)
        judges[name] = {"spec": spec if isinstance(spec, str) else type(spec).__name__,
                        "trained_on": _training_info(annotator)}
    prefs["longer"] = longer_preference(rows)
    subsets = {}
    for subset, mask in (("outside_eval", outside), ("inside_eval", ~outside)):
        rep = _cross_report({k: v[mask] for k, v in prefs.items()}, labels_[mask], prefs["longer"][mask])
        for name in judges:
            rep[name]["scored_by"] = scored_by[name][subset]
        subsets[subset] = rep
    maj = majority_label(labels_[outside])
    targets = {}
    for name in judges:  # against GPT-4's majority (ties excluded), paired standard error (one pair per instruction)
        gain = _gain_over(prefs[name][outside], prefs["longer"][outside], maj)
        targets[name] = {"agreement_over_longer": gain["points"], "se": gain["se"],
                         "target": UNSEEN_TARGETS["agreement_over_longer"],
                         "met": bool(gain["points"] >= UNSEEN_TARGETS["agreement_over_longer"])}
    return {
        "protocol": "AlpacaFarm cross-annotation pairs outside the eval set, each judged by GPT-4 8 times "
                    "(configs gpt4_b1 and gpt4_b5, seeds 0-3); majority ties excluded",
        "files": names,
        "n_pairs": len(rows),
        "n_outside_eval": int(outside.sum()),
        "n_outside_in_training": int(sum(p in train_prompts for p, o in zip(prompts, outside) if o)),
        "judges": judges,
        "subsets": subsets,
        "targets": targets,
        "seconds": round(time.time() - t_start, 1),
    }
