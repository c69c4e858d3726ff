"""``reward_model``: a learned scalar reward model (placeholder; full backend follows)."""
