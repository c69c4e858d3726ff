"""The judge's fidelity to GPT-4, measured, with "longer wins" beside every figure. Used by ``alpaca-farm judge eval``.

Three protocols, a module each, on the figures of :mod:`.scoring`:

* :mod:`.lomo` (``evaluate_lomo``): leave-one-model-out over the GPT-4-annotated models on the 805 eval instructions
  (the judge has seen every instruction, not the model), for the bank heads and the global head;
* :mod:`.unseen` (``evaluate_leave_instruction_out``): K folds of eval *instructions*; a fold's instructions give no
  training pair, no synthetic negative and no bank entry, the judge is trained on the rest by the package's own
  training functions and judges them. This is the situation of every RL training prompt (an instruction the judge
  never saw), so it measures the global head;
* :mod:`.cross_annotation` (``evaluate_cross_annotation``): the cross-annotation pairs outside the eval set, each
  judged 8 times by GPT-4, against the packaged judges, beside GPT-4's agreement with itself.
"""
from __future__ import annotations

# (the private helpers are re-exported for tests and benchmarks/judge_best_holdout.py)
from .cross_annotation import (  # noqa: F401
    CROSS_ANNOTATION_GLOB,
    DEFAULT_CROSS_ANNOTATION_JUDGES,
    _cross_report,
    _training_info,
    evaluate_cross_annotation,
    leave_one_out_majorities,
    load_cross_annotations,
    majority_label,
    pairwise_agreement,
)
from .lomo import evaluate_lomo
from .scoring import (  # noqa: F401
    MID_RANGE,
    UNSEEN_TARGETS,
    _agreement,
    _fit_line,
    _gain_over,
    _length_split,
    _logit,
    _model_report,
    _summary,
    cross_fitted_calibration,
    longer_preference,
)
from .unseen import evaluate_leave_instruction_out, instruction_fold, leave_instruction_out_split

__all__ = [
    "CROSS_ANNOTATION_GLOB", "DEFAULT_CROSS_ANNOTATION_JUDGES", "MID_RANGE", "UNSEEN_TARGETS",
    "cross_fitted_calibration", "evaluate_cross_annotation", "evaluate_leave_instruction_out", "evaluate_lomo",
    "instruction_fold", "leave_instruction_out_split", "leave_one_out_majorities", "load_cross_annotations",
    "longer_preference", "majority_label", "pairwise_agreement",
]
