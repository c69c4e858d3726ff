"""The offline judge distilled from real GPT-4 judgments (docs/judge.md).

Read top to bottom: ``encoder`` (MiniLM embeddings and their cache), ``features`` (hand features), ``answer_bank``
(GPT-4-labelled answers to the same instruction), ``config`` (what determines a judge), ``training_data`` (GPT-4 pairs,
synthetic negatives), ``files`` (artifact files), ``heads`` (the global head), ``bank_heads``, ``cross_encoder`` (the
``best`` variant), ``coherence`` (the junk gate), ``judge`` (``distilled_gpt4``, ``pooled``, ``noisy_pooled``) and
``evaluation`` (fidelity to GPT-4: a module per protocol).

The judge registers its annotators here, by the path of each class: ``import alpaca_farm_env`` imports this package
(which imports nothing heavy), and ``judge.py`` with numpy, the encoder and the heads loads on the first
``make_annotator`` of one of these names. Import the classes from the submodules.
"""
from ..annotators.base import register_annotator

register_annotator("distilled_gpt4", "alpaca_farm_env.judge.judge:DistilledJudge")
register_annotator("pooled", "alpaca_farm_env.judge.judge:PooledJudge")
register_annotator("noisy_pooled", "alpaca_farm_env.judge.judge:NoisyPooledJudge")
