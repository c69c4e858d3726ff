"""The win-rate benchmark: pairing outputs with the Davinci003 reference, annotation, runs, presets, leaderboard."""
from .evaluation import MatchResult, annotate_pairs, fold_instruction, match_outputs, to_alpaca_eval_layout

__all__ = ["MatchResult", "annotate_pairs", "fold_instruction", "match_outputs", "to_alpaca_eval_layout"]
