"""The offline judge distilled from real GPT-4 judgments (docs/judge.md).

Read top to bottom: ``features`` (hand features, MiniLM embeddings), ``answer_bank`` (GPT-4-labelled answers to the
same instruction), ``config`` (what determines a judge), ``training_data`` (GPT-4 pairs, synthetic negatives),
``files`` (artifact files), ``heads`` (the global head), ``bank_heads``, ``cross_encoder`` (the ``best`` variant),
``judge`` (``distilled_gpt4``, ``pooled``, ``noisy_pooled``) and ``evaluation`` (fidelity to GPT-4).

The annotators are registered in :mod:`alpaca_farm_env.annotators` by path; import from the submodules.
"""
