"""``longer``: the "longer output wins" baseline annotator.

GPT-4 and the AlpacaFarm pool prefer longer outputs (paper Sec. 5 / AlpacaEval's length-bias analysis), so this is
the baseline every learned judge is compared with. Equal lengths are a draw.
"""
from __future__ import annotations

from .base import Annotation, check_lengths, clean_pairs, register_annotator


@register_annotator("longer")
class LongerWinsAnnotator:
    name = "longer"

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed: int = 0) -> list[Annotation]:
        check_lengths(instructions, inputs, outputs_1, outputs_2)
        instructions, inputs, outputs_1, outputs_2 = clean_pairs(instructions, inputs, outputs_1, outputs_2)
        out = []
        for o1, o2 in zip(outputs_1, outputs_2):
            pref = 1.5 if len(o1) == len(o2) else (2.0 if len(o2) > len(o1) else 1.0)
            out.append(Annotation(preference=pref, probability=pref - 1.0, annotator=self.name))
        return out
