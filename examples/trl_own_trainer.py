"""Your own TRL trainer on AlpacaFarm: TRL's GRPOTrainer on the unlabeled split's prompts, rewarded by the package's
reward through TRL's reward-function interface (docs/rl.md, "GRPO and RLOO").

    python examples/trl_own_trainer.py [POLICY] [REWARD] [OUTPUT_DIR]

POLICY: a ``load_policy`` spec (default ``smollm2-135m``; ``tiny-llama`` for a smoke test); REWARD: a registered reward
(default ``annotator``, the simulated judge against the split's reference output; ``length`` is cheap and synthetic).
"""
import sys

import gymnasium as gym
import torch
from trl import GRPOConfig, GRPOTrainer

from alpaca_farm_env import as_trl_dataset, as_trl_reward_func
from alpaca_farm_env.models import load_policy

given = sys.argv[1:4]
policy_spec, reward, output_dir = given + ["smollm2-135m", "annotator", "runs/trl_own_trainer"][len(given):]

env = gym.make("AlpacaFarm-v0", split="unlabeled", reward=reward, max_examples=64)
dataset = as_trl_dataset(env)  # prompt (the AlpacaFarm template), instruction, input, reference_output
reward_func = as_trl_reward_func(env.unwrapped.reward_spec, **env.unwrapped.reward_kwargs)  # scores as env.step does
policy = load_policy(policy_spec)
config = GRPOConfig(output_dir=output_dir, max_steps=2, per_device_train_batch_size=4, num_generations=4,
                    max_completion_length=16, logging_steps=1, bf16=torch.cuda.is_available(), report_to="none")
trainer = GRPOTrainer(model=policy.model, reward_funcs=reward_func, args=config, train_dataset=dataset,
                      processing_class=policy.tokenizer)
trainer.train()
trainer.save_model(output_dir)
print("mean reward per step:", [round(h["reward"], 3) for h in trainer.state.log_history if "reward" in h])
