"""Every value of the ``paper`` preset and of the methods' config defaults, checked against the reference
(tatsu-lab/alpaca_farm: ``examples/scripts/*.sh``, ``examples/*.py``, ``src/alpaca_farm/...``; the paper, Dubois et al.
2023) as rows ``(source, field, reference value)``.

A default that differs from the reference on purpose has an entry in ``DIFFERENCES`` (our value and why); its row
still states the reference value, and the test asserts the documented difference, so nothing drifts silently. A
field with no counterpart in the reference is listed in ``OURS`` with its reason. Every field of every config is in
one of the two, so a new field needs a row.

Also here: the benchmark's ``generation`` settings never reach a method's own sampling (best-of-n keeps top_p 0.9),
and ``stages.sft: null`` (the given policy is the SFT model) runs no SFT stage.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from alpaca_farm_env.agents.best_of_n import BestOfNAgent, BestOfNConfig
from alpaca_farm_env.agents.binary_feedme import BinaryFeedMEConfig
from alpaca_farm_env.agents.binary_reward_conditioning import RewardConditioningConfig
from alpaca_farm_env.agents.dpo import DPOTrainingConfig
from alpaca_farm_env.agents.expert_iteration import ExpertIterationConfig
from alpaca_farm_env.agents.grpo import GRPOConfig
from alpaca_farm_env.agents.online_dpo import OnlineDPOConfig
from alpaca_farm_env.agents.ppo import PPOConfig
from alpaca_farm_env.agents.preference_collection import CollectionConfig
from alpaca_farm_env.agents.quark import QuarkConfig
from alpaca_farm_env.agents.rloo import RLOOConfig
from alpaca_farm_env.agents.sft import SFTAgent
from alpaca_farm_env.agents.sft_loop import SFTConfig
from alpaca_farm_env.benchmark.config import load_preset
from alpaca_farm_env.rewards.reward_model import RewardModelTrainingConfig

SFT_SH = "examples/scripts/sft.sh"
RM_SH = "examples/scripts/reward_modeling.sh"
RM_PY = "examples/reward_modeling.py"
PPO_SH = "examples/scripts/rlhf_ppo.sh"
PPO_ARGS = "src/alpaca_farm/rl/ppo_utils.py TrainingArguments"
QUARK_SH = "examples/scripts/rlhf_quark.sh"
QUARK_ARGS = "src/alpaca_farm/rl/quark_utils.py TrainingArguments"
DPO_SH = "examples/scripts/dpo.sh"
BON_PY = "examples/best_of_n.py run_decode"
DECODE = "src/alpaca_farm/inference/decode.py HFDecodingArguments"
HF = "transformers.TrainingArguments default"
PAPER = "paper (Dubois et al. 2023)"
GRPO_CFG = "huggingface/trl trl/trainer/grpo_config.py GRPOConfig (TRL 1.16)"
RLOO_CFG = "huggingface/trl trl/trainer/rloo_config.py RLOOConfig (TRL 1.16)"
ODPO_CFG = "huggingface/trl trl/experimental/online_dpo/online_dpo_config.py OnlineDPOConfig (TRL 1.16)"
TRL_MODEL = "huggingface/trl trl/trainer/model_config.py ModelConfig"


def _trl_group_rows(src: str) -> list[tuple[str, str, Any]]:
    """The rows GRPO and RLOO share: TRL's config (``src``), its TrainingArguments base, TRL's ModelConfig."""
    return _trl_rows(src) + [
        (src, "learning_rate", 1e-6), (src, "max_completion_length", 512), (src, "temperature", 1.0),
        (src, "num_iterations", 1), (src, "epsilon", 0.2), (src, "epsilon_high", None),
        (src, "mask_truncated_completions", False)]


def _trl_rows(src: str) -> list[tuple[str, str, Any]]:
    """The rows every TRL online method shares: TRL's config (``src``), its TrainingArguments base, ModelConfig."""
    return [(src, "top_p", 1.0), (src, "top_k", 0), (src, "report_to", "none"),
            (src + " (base config: bf16 unless fp16)", "bf16", True),
            (src + " (base config)", "gradient_checkpointing", True),
            (src + " (num_train_epochs 3 over the dataset)", "max_steps", -1),
            (HF, "lr_scheduler_type", "linear"), (HF, "warmup_steps", 0), (HF, "weight_decay", 0.0),
            (HF, "adam_epsilon", 1e-8), (HF, "max_grad_norm", 1.0), (HF, "per_device_train_batch_size", 8),
            (HF, "gradient_accumulation_steps", 1), (HF, "seed", 42), (HF, "save_steps", 500),
            (TRL_MODEL, "use_peft", False), (TRL_MODEL, "lora_r", 16), (TRL_MODEL, "lora_alpha", 32),
            (TRL_MODEL, "lora_dropout", 0.05)]


# -------------------------------------------------------------------------------------------------- derived fields
# a row may name a value the reference states as one number but we split (batch = per device x accumulation)
DERIVED: dict[str, Callable[[Any], Any]] = {
    "effective_batch_size": lambda c: c.per_device_batch_size * c.gradient_accumulation_steps,
    "effective_train_batch_size": lambda c: c.per_device_train_batch_size * c.gradient_accumulation_steps,
}
COVERED_BY_DERIVED = {"per_device_batch_size", "gradient_accumulation_steps", "per_device_train_batch_size"}

# -------------------------------------------------------------------------------------------------- the SFT recipe
SFT_ROWS = [  # sft.sh -> examples/supervised.py (8 GPUs)
    (SFT_SH, "num_train_epochs", 3),
    (SFT_SH, "learning_rate", 2e-5),
    (SFT_SH, "warmup_ratio", 0.03),
    (SFT_SH, "weight_decay", 0.0),
    (SFT_SH, "effective_batch_size", 128),  # 1 per device x 16 accumulation x 8 GPUs
    (SFT_SH, "max_length", 512),  # --model_max_length
    (SFT_SH, "seed", 42),
    (SFT_SH, "save_steps", 1_000_000_000),  # never: the model is saved at the end
    (SFT_SH, "lora_r", 0),  # full fine-tuning (FSDP full_shard)
    (SFT_SH, "loss_averaging", "example"),  # 1 example per device: each example's tokens averaged, then examples
    (HF, "max_grad_norm", 1.0),
    (HF, "max_steps", None),  # -1: no cap
]

ROWS: dict[type, list[tuple[str, str, Any]]] = {
    SFTConfig: SFT_ROWS,
    # Binary FeedME and reward conditioning: no script in the reference; the SFT recipe (inferred, documented)
    BinaryFeedMEConfig: SFT_ROWS,
    RewardConditioningConfig: SFT_ROWS + [
        ("src/alpaca_farm/data_postprocessor.py RewardConditioningPromptPostprocessor", "positive_token",
         "<reward_0>"),
    ],
    BestOfNConfig: [
        ("README.md best-of-n command --num_return_sequences 16; paper App. E.2 (best-of-16)", "n", 16),
        (BON_PY, "temperature", 1.0),
        (DECODE, "top_p", 0.9),  # run_decode does not override it
        (BON_PY, "max_new_tokens", 300),
        (BON_PY, "batch_size", 4),  # per_device_batch_size
    ],
    ExpertIterationConfig: [
        ("README.md expert iteration: best_of_n.py --num_return_sequences 16", "best_of_n", BestOfNConfig()),
        ("examples/scripts/expiter.sh (sft.sh's arguments)", "sft", SFTConfig()),
        ("README.md expert iteration: --split unlabeled (all 20k)", "n_prompts", None),
    ],
    DPOTrainingConfig: [
        # HEAD of the reference (30717dd); the stored earlier versions read differently: dpo.sh 348fd7d accumulates
        # 16 (batch 128), examples/dpo.py 6aaa775 defaults beta to 1e-2
        ("examples/dpo.py TrainingArguments", "beta", 0.1),
        (DPO_SH, "learning_rate", 1e-6),
        (DPO_SH, "num_train_epochs", 2),
        (DPO_SH, "lr_scheduler_type", "cosine"),
        (DPO_SH, "warmup_ratio", 0.03),
        (DPO_SH, "weight_decay", 0.0),
        (DPO_SH, "effective_batch_size", 64),  # 1 per device x 8 accumulation x 8 GPUs
        (DPO_SH, "max_length", 512),  # --model_max_length
        (DPO_SH, "seed", 42),
        (DPO_SH, "save_steps", 1_000_000_000),
        (DPO_SH, "bf16", True),
        (HF, "max_grad_norm", 1.0),
        (HF, "max_steps", None),
        (HF, "gradient_checkpointing", False),
    ],
    RewardModelTrainingConfig: [
        (RM_SH, "model_max_length", 512),
        (RM_SH, "num_train_epochs", 1),
        (RM_SH, "effective_train_batch_size", 16),  # 1 per device x 2 accumulation x 8 GPUs
        (RM_SH, "learning_rate", 3e-6),
        (RM_SH, "weight_decay", 0.0),
        (RM_SH, "warmup_ratio", 0.03),
        (RM_SH, "lr_scheduler_type", "cosine"),
        (RM_SH, "seed", 42),
        (RM_SH, "logging_steps", 10),
        (RM_SH, "save_steps", 1_000_000_000),
        (RM_SH, "bf16", True),
        (RM_PY + " DataArguments.eval_size", "n_eval", 500),
    ],
    PPOConfig: [
        (PPO_SH, "rollout_batch_size", 512),
        (PPO_SH, "step_batch_size", 256),
        (PPO_SH, "rollout_per_device_batch_size", 32),
        (PPO_SH, "step_per_device_batch_size", 2),
        (PPO_SH, "learning_rate", 1e-5),
        (PPO_SH, "warmup_steps", 5),
        (PPO_SH, "kl_coef", 0.0067),  # the script's default ${5:-0.0067}; README: 0.0067 simulated, 0.02 human
        (PPO_SH, "save_steps", 20),
        (PPO_SH + " --total_epochs 10: floor(20k x 10 / 512)", "total_steps", 390),
        (PPO_ARGS, "noptepochs", 2),
        (PPO_ARGS, "vf_coef", 0.1),
        (PPO_ARGS, "cliprange", 0.2),
        (PPO_ARGS, "cliprange_value", 0.2),
        (PPO_ARGS, "gamma", 1.0),
        (PPO_ARGS, "lam", 1.0),
        (PPO_ARGS, "whiten_rewards", True),
        (PPO_ARGS, "adam_epsilon", 1e-5),
        (PPO_ARGS, "temperature", 1.0),
        (PPO_ARGS, "adaptive_kl", False),
        (PPO_ARGS, "target_kl", 6.0),
        (PPO_ARGS, "k_beta", 0.1),
        (PPO_ARGS, "query_len", 192),
        (PPO_ARGS, "response_len", 300),
        (HF, "weight_decay", 0.0),
        (HF, "max_grad_norm", 1.0),
        (HF, "seed", 42),
    ],
    QuarkConfig: [
        (QUARK_SH, "rollout_batch_size", 512),
        (QUARK_SH, "step_batch_size", 256),
        (QUARK_SH, "rollout_per_device_batch_size", 32),
        (QUARK_SH, "step_per_device_batch_size", 2),
        (QUARK_SH, "learning_rate", 3e-6),
        (QUARK_SH, "warmup_steps", 5),
        (QUARK_SH, "kl_coef", 0.05),  # the script's default ${5:-0.05}
        (QUARK_SH, "save_steps", 20),
        (QUARK_SH + " --total_epochs 10", "total_steps", 390),
        (QUARK_ARGS, "entropy_coef", 0.0),
        (QUARK_ARGS, "num_reward_tokens", 4),
        (QUARK_ARGS, "train_on_best_quantile", True),
        (QUARK_ARGS, "adam_epsilon", 1e-5),
        (QUARK_ARGS, "temperature", 1.0),
        (QUARK_ARGS, "query_len", 192),
        (QUARK_ARGS, "response_len", 300),
        (HF, "weight_decay", 0.0),
        (HF, "max_grad_norm", 1.0),
        (HF, "seed", 42),
    ],
    GRPOConfig: _trl_group_rows(GRPO_CFG) + [
        (GRPO_CFG, "num_generations", 8), (GRPO_CFG, "beta", 0.0), (GRPO_CFG, "loss_type", "dapo"),
        (GRPO_CFG, "scale_rewards", "group"),
    ],
    RLOOConfig: _trl_group_rows(RLOO_CFG) + [
        (RLOO_CFG, "num_generations", 2), (RLOO_CFG, "beta", 0.05), (RLOO_CFG, "normalize_advantages", False),
    ],
    OnlineDPOConfig: _trl_rows(ODPO_CFG) + [
        (ODPO_CFG, "learning_rate", 5e-7), (ODPO_CFG, "temperature", 0.9), (ODPO_CFG, "max_new_tokens", 64),
        (ODPO_CFG, "max_length", 512), (ODPO_CFG, "beta", [0.1]), (ODPO_CFG, "loss_type", "sigmoid"),
        (ODPO_CFG, "missing_eos_penalty", None),
    ],
    CollectionConfig: [
        (PAPER + " Sec. 4.1: two samples from SFT10k at temperature 1.0", "temperature", 1.0),
        ("src/alpaca_farm/models/rl_models.py AutoregressivePolicy._respond", "top_p", 1.0),
        (PAPER + " Sec. 4.1: at most 300 tokens", "max_new_tokens", 300),
        (PAPER + " Sec. 4.1: the PREF split", "n_instructions", None),
    ],
}

# (config, field) -> (our value, why it differs from the reference value of its row)
DIFFERENCES: dict[tuple[type, str], tuple[Any, str]] = {
    **{(c, "save_steps"): (50, "a checkpoint every 50 steps, so a killed run resumes; the reference saves at the end")
       for c in (SFTConfig, BinaryFeedMEConfig, RewardConditioningConfig, DPOTrainingConfig,
                 RewardModelTrainingConfig)},
    (DPOTrainingConfig, "bf16"): (None, "bf16 where the GPU supports it, float32 on CPU (bf16 autocast is slow there)"),
    (RewardModelTrainingConfig, "bf16"): (None, "as DPO; TRL's bf16 default also fixed the process-wide precision"),
    (BestOfNConfig, "batch_size"): (8, "prompts per generate call: throughput only, outputs are seeded per batch"),
    (OnlineDPOConfig, "beta"): (0.1, "one value: TRL's list holds one per epoch, and the run is counted in steps"),
    **{(c, f): d for c in (GRPOConfig, RLOOConfig, OnlineDPOConfig) for f, d in {
        "bf16": (None, "bf16 where the GPU supports it, float32 on CPU (as DPO)"),
        "gradient_checkpointing": (False, "off as for DPO: it only trades speed for memory"),
        "max_steps": (390, "a step count, so the kept steps are known before training; PPO's total_steps"),
        "save_steps": (20, "PPO's save_steps (rlhf_ppo.sh): the RL methods keep the same steps"),
    }.items()},
}

# fields with no counterpart in the reference: field -> why (per config, or for every config)
OURS_ANY = {
    "seed": "sampling seed of our seeded generation (the reference samples unseeded)",
    "lean": "LoRA lean mode: one policy in memory instead of two",
    "lora_r": "LoRA rank in lean mode", "lora_alpha": "LoRA alpha in lean mode",
    "lora_dropout": "LoRA dropout in lean mode (0: the reference turns dropout off in RL)",
    "stop_after": "stop early for resume tests", "n_eval_prompts": "prompts held out for the periodic eval",
    "keep_checkpoints": "a switch for keeping each save's policy (the reference always keeps them, "
                        "src/alpaca_farm/rl/rl_trainer.py train); the benchmark's checkpoint selection sets it",
    "eval_steps": "our periodic eval (reward + the benchmark's win-rate hook)",
    "eval_batch_size": "held-out scoring batch: throughput only",
    "save_candidates": "also keep every candidate in best_of_n.jsonl",
    "batch_size": "prompts per generate call: throughput only",
    "max_prompt_length": "the TRL methods drop prompts longer than PPO's query_len (192); TRL 1.x truncates none",
    "negative_token": "reward conditioning's negative token (unpublished; the reference has reward tokens "
                      "<reward_0>..<reward_3>)",
    "report_to": "where metrics are also logged (TensorBoard, W&B); never part of a key or a result",
}
OURS = {(BestOfNConfig, "seed"), (CollectionConfig, "seed"), (CollectionConfig, "batch_size"),
        (RewardModelTrainingConfig, "eval_batch_size"), (ExpertIterationConfig, "save_candidates"),
        (RewardConditioningConfig, "negative_token")}
OURS |= {(c, "report_to") for c in (SFTConfig, BinaryFeedMEConfig, RewardConditioningConfig, DPOTrainingConfig,
                                    RewardModelTrainingConfig, PPOConfig, QuarkConfig)}
OURS |= {(c, f) for c in (GRPOConfig, RLOOConfig, OnlineDPOConfig)
         for f in ("max_prompt_length", "eval_steps", "keep_checkpoints", "stop_after")}
OURS |= {(c, f) for c in (PPOConfig, QuarkConfig)
         for f in ("lean", "lora_r", "lora_alpha", "lora_dropout", "stop_after", "n_eval_prompts", "eval_steps",
                   "keep_checkpoints")}


def _value(config: Any, field: str) -> Any:
    return DERIVED[field](config) if field in DERIVED else getattr(config, field)


CASES = [pytest.param(cls, source, field, ref, id=f"{cls.__name__}.{field}")
         for cls, rows in ROWS.items() for source, field, ref in rows]


@pytest.mark.parametrize("cls, source, field, reference", CASES)
def test_default_matches_the_reference(cls, source, field, reference):
    ours = _value(cls(), field)
    if (cls, field) in DIFFERENCES:
        documented, why = DIFFERENCES[(cls, field)]
        assert ours == documented and ours != reference, f"{cls.__name__}.{field}: {why} ({source}: {reference})"
    else:
        assert ours == reference, f"{cls.__name__}.{field} = {ours!r}; {source}: {reference!r}"


@pytest.mark.parametrize("cls", list(ROWS), ids=lambda c: c.__name__)
def test_every_field_has_a_row(cls):
    """A field without a reference row must say why it has none (``OURS``): a new field cannot slip in unchecked."""
    rows = {field for _, field, _ in ROWS[cls]}
    missing = []
    for f in dataclasses.fields(cls):
        covered = f.name in rows or (f.name in COVERED_BY_DERIVED and rows & set(DERIVED))
        if not covered and (cls, f.name) not in OURS:
            missing.append(f.name)
    assert not missing, f"{cls.__name__}: fields without a reference row or an OURS reason: {missing}"
    assert all(f in OURS_ANY for c, f in OURS if c is cls)


# -------------------------------------------------------------------------------------------------- the paper preset
PAPER_ROWS = [  # (source, dotted key of configs/paper.yaml, reference value)
    ("Table 2 (805 instructions; data: alpaca_farm_evaluation)", "n_eval", None),
    ("alpaca_farm issue #60: Table 2's PPO checkpoint was chosen with p_sim^eval on the evaluation set; here on the "
     "as many val instructions instead (stricter: the test set never takes part)", "n_select", 805),
    ("Table 2 reference outputs: Davinci003 (set A)", "reference", "alpacafarm"),
    (PAPER + " p_sim^eval: the 13-annotator pool, no noise", "annotator", "alpaca_farm_pool"),
    (PAPER + " Sec. 4.1: evaluation at temperature 0.7", "generation.temperature", 0.7),
    (PAPER + " Sec. 4.1: at most 300 tokens", "generation.max_new_tokens", 300),
    ("src/alpaca_farm/openai_utils.py OpenAIDecodingArguments (the Davinci003 reference's decoding)",
     "generation.top_p", 1.0),
    ("README.md: every method starts from SFT10k (given as the policy)", "stages.sft", None),
    ("Table 2's SFT 10k row: the given SFT10k as it is (stages.sft: null)", "methods.sft", {}),
    ("README.md best-of-n: --num_return_sequences 16; paper App. E.2", "methods.best_of_n.n", 16),
    (BON_PY, "methods.best_of_n.temperature", 1.0),
    (DECODE, "methods.best_of_n.top_p", 0.9),
    ("expiter.sh / best_of_n.py defaults (ExpertIterationConfig)", "methods.expert_iteration", {}),
    ("sft.sh recipe (inferred; BinaryFeedMEConfig)", "methods.binary_feedme", {}),
    ("sft.sh recipe (inferred; RewardConditioningConfig)", "methods.binary_reward_conditioning", {}),
    (DPO_SH + " (DPOTrainingConfig)", "methods.dpo", {}),
    (PPO_SH + " (PPOConfig)", "methods.ppo", {}),
    (QUARK_SH + " (QuarkConfig)", "methods.quark", {}),
    ("beyond the paper: huggingface/trl trl/trainer/grpo_config.py (GRPOConfig)", "methods.grpo", {}),
    ("beyond the paper: huggingface/trl trl/trainer/rloo_config.py (RLOOConfig)", "methods.rloo", {}),
    ("beyond the paper: huggingface/trl trl/experimental/online_dpo/online_dpo_config.py (OnlineDPOConfig)",
     "methods.online_dpo", {}),
    ("alpaca_noisy_multi_preference: p_sim^ann, the pool with 25% label flips", "stages.preferences.annotator",
     "alpaca_farm_pool_noisy"),
    (PAPER + " Sec. 4.1: pairs sampled at temperature 1.0", "stages.preferences.temperature", 1.0),
    (PAPER + " Sec. 4.1: at most 300 tokens", "stages.preferences.max_new_tokens", 300),
    (RM_SH + " --model_name_or_path: SFT10k", "stages.reward_model.backbone", "sft"),
]


def _dotted(data: dict, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize("source, key, reference", PAPER_ROWS, ids=[k for _, k, _ in PAPER_ROWS])
def test_paper_preset_matches_the_reference(source, key, reference):
    assert _dotted(load_preset("paper").to_dict(), key) == reference, source


def test_paper_preset_has_a_row_for_every_setting():
    """Every leaf of paper.yaml that sets something is a row above (runs_root, names, seeds and batching aside)."""
    cfg = load_preset("paper").to_dict()
    rows = {k for _, k, _ in PAPER_ROWS}
    skip = {"name", "policy", "policy_kwargs", "subset_seed", "annotator_kwargs", "annotator_seed", "compare_to",
            "runs_root", "report_to", "generation.batch_size", "generation.seed"}
    leaves = [k for k in cfg if not isinstance(cfg[k], dict) or not cfg[k]]
    leaves += [f"{k}.{sub}" for k in ("generation", "methods", "stages") for sub in cfg[k]]
    leaves += [f"stages.{s}.{f}" for s in ("preferences", "reward_model") for f in cfg["stages"][s]]
    leaves += [f"methods.best_of_n.{f}" for f in cfg["methods"]["best_of_n"]]
    unchecked = [k for k in leaves if k not in rows | skip and not any(r.startswith(k + ".") for r in rows)]
    assert not unchecked, f"paper.yaml settings without a reference row: {unchecked}"
    assert "base" not in cfg["methods"]  # no base model is given (the policy is SFT10k)


# -------------------------------------------------------------------------------------------------- evaluation decoding
def test_generation_settings_do_not_reach_best_of_n_sampling(tmp_path):
    """The benchmark builds each agent from its preset entry plus the ``generation`` fields its class declares: the
    evaluation decoding (top_p 1.0, temperature 0.7) reaches the sampling methods, never best-of-n's candidates."""
    from alpaca_farm_env.agents import AGENTS
    from alpaca_farm_env.benchmark.pipeline import Pipeline
    from alpaca_farm_env.benchmark.runner import _agent_kwargs

    cfg = load_preset("paper")
    cfg.methods["best_of_n"] = {"n": 16, "reward": "length"}  # no sampling settings of its own
    cfg.generation.max_new_tokens = 123
    assert cfg.generation.top_p == 1.0 and cfg.generation.temperature == 0.7
    pipeline = Pipeline(cfg, tmp_path, None, progress=False, log=lambda m: None)
    built = {}
    for method in ("best_of_n", "sft"):
        factory = AGENTS.resolve(method)
        built[method] = AGENTS.make(method, policy="tiny-llama", **_agent_kwargs(cfg, pipeline, method, factory))
    bon, sft = built["best_of_n"], built["sft"]
    assert (bon.top_p, bon.temperature, bon.n) == (0.9, 1.0, 16)  # BestOfNConfig's, not generation's
    assert bon.max_new_tokens == 123  # the answer budget is the benchmark's
    assert (sft.top_p, sft.temperature, sft.max_new_tokens) == (1.0, 0.7, 123)
    assert set(BestOfNAgent.GENERATION_KEYS) == {"max_new_tokens", "batch_size", "seed"}
    assert set(SFTAgent.GENERATION_KEYS) == {"max_new_tokens", "temperature", "top_p", "batch_size", "seed"}


# -------------------------------------------------------------------------------------------------- stages.sft: null
@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_sft_null_runs_no_sft_stage_and_labels_the_given_policy(tmp_path, capsys):
    """``stages.sft: null``: the policy is the SFT model. No SFT stage is built, the ``sft`` row answers with the given
    policy as it is (greedy: the same answers as the ``base`` row), both rows say so, and every later method starts
    from the given policy."""
    from alpaca_farm_env.agents.common import policy_fingerprint
    from alpaca_farm_env.benchmark.pipeline import Pipeline
    from alpaca_farm_env.cli import main
    from alpaca_farm_env.models import load_policy

    cfg = load_preset("paper").to_dict()
    cfg.update(name="given", policy="tiny-llama", annotator="longer", n_eval=3)
    cfg["generation"].update(max_new_tokens=4, batch_size=3, temperature=0.0)
    cfg["methods"] = {"base": {}, "sft": {}}
    path = tmp_path / "given.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = tmp_path / "runs" / "r"
    rc = main(["benchmark", "--preset", str(path), "--run-dir", str(run_dir), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((run_dir / "results.json").read_text())
    by = {m["method"]: m for m in res["methods"]}
    assert by["sft"]["label"] == "sft (the given policy)" and by["base"]["label"] == "base (the given policy)"
    outputs = {m: json.loads(Path(by[m]["outputs_path"]).read_text()) for m in by}
    assert [r["output"] for r in outputs["sft"]] == [r["output"] for r in outputs["base"]]
    assert not (run_dir / "stages").exists() and "sft" not in res["stage_seconds"]
    assert not list((run_dir / "sft").glob("fit-*"))  # nothing trained for the sft row
    pipeline = Pipeline(load_preset(path), run_dir, None, progress=False, log=lambda m: None)
    assert pipeline.sft_given and pipeline.wanted(SFTAgent, {}) == () and pipeline.stage_config(SFTAgent) == {}
    assert policy_fingerprint(pipeline.sft_policy()) == policy_fingerprint(load_policy("tiny-llama"))
