"""``sft``: supervised fine-tuning on the ``sft`` split's demonstrations (the paper's SFT10k, Table 2), and ``base``:
the starting policy as it is (the table's labelled ``base`` row, as LLaMA 7B in the paper).

SFT reads its demonstrations through the env (``AlpacaFarm-v0`` on split ``sft``, attribute ``demonstrations``) and
trains with the shared loop (``sft_loop.train_sft``: loss on output + EOS only, AlpacaFarm's ``preprocess_for_sft``;
recipe of ``examples/scripts/sft.sh``). Every later method starts from the trained SFT policy.

AlpacaFarm samples every method's outputs at temperature 0.7 with at most 300 new tokens (paper Sec. 4 / App. D;
alpaca_farm ``examples/*`` decoding defaults), which are these agents' defaults; the tiny preset shortens them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from ..envs.reward_info import format_prompt
from ..utils import stable_hash
from .base import EvalHook, register_agent
from .sft_loop import SFTConfig, train_sft


def prompts_of(observations: Sequence[dict[str, Any]]) -> list[str]:
    """The prompt of each observation (``prompt``, else the AlpacaFarm template over ``instruction``/``input``)."""
    return [o.get("prompt") or format_prompt(o["instruction"], o.get("input", "")) for o in observations]


@register_agent("base")
class BaseAgent:
    """Sample one response per observation from ``policy`` (a ``Policy`` or a ``load_policy`` spec, loaded lazily),
    untrained: the table's ``base`` row.

    Sampling is seeded from ``(seed, the batch's prompts)``, so the same observations give the same responses however
    a caller splits them into calls of ``batch_size`` (the benchmark resumes per batch).
    """

    name = "base"
    ENVS: ClassVar[dict[str, dict[str, Any]]] = {}
    STAGES: ClassVar[tuple[str, ...]] = ()
    # the benchmark's generation settings (``GenerationConfig`` fields) this agent takes as constructor keywords
    GENERATION_KEYS: ClassVar[tuple[str, ...]] = ("max_new_tokens", "temperature", "top_p", "batch_size", "seed")
    eval_hook: EvalHook | None = None  # assigned by the benchmark; sampling alone has no eval steps to call it at

    def __init__(
        self,
        policy: Any = "smollm2-135m",
        *,
        max_new_tokens: int = 300,
        temperature: float = 0.7,
        top_p: float = 1.0,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = False,
        evaluator: Any = None,
    ):
        self.evaluator = evaluator  # the benchmark's evaluator spec: methods that rerank or learn from a reward check it
        self._policy = policy
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self.history: list[dict[str, Any]] = []  # per-step training statistics (none: nothing is trained)
        self.n_generate_calls = 0  # how many times the policy was sampled (the benchmark's resume test reads it)

    @property
    def policy(self) -> Any:
        """The :class:`~alpaca_farm_env.models.Policy` this agent answers with (a spec is loaded on first use)."""
        if isinstance(self._policy, str) or not hasattr(self._policy, "generate"):
            from ..models import load_policy

            self._policy = load_policy(self._policy)
        return self._policy

    @policy.setter
    def policy(self, policy: Any) -> None:
        self._policy = policy

    def fit(self, envs: Mapping[str, Any] | None = None, **stages: Any) -> None:
        """Nothing to train: the policy is used as it is."""
        return None

    def _start_policy(self, policy: Any, **required_stages: Any) -> Any:
        """The loaded policy ``fit`` starts from (the ``policy`` stage, else the constructor's), after checking that
        the other stages it needs were given; a clear error names what is missing."""
        missing = [name for name, value in required_stages.items() if value is None]
        if missing:
            raise ValueError(f"{self.name} needs the {' and '.join(missing)} stages")
        if policy is not None:
            self._policy = policy
        if self._policy is None:
            raise ValueError(f"{self.name} needs the policy stage (the trained SFT policy)")
        from ..models import load_policy

        self._policy = load_policy(self._policy)  # a Policy as is; a spec is loaded
        return self._policy

    def _sample(self, prompts: list[str], n: int, temperature: float) -> list[list[str]]:
        self.n_generate_calls += 1
        out = self.policy.generate(
            prompts,
            max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            top_p=self.top_p,
            do_sample=temperature > 0,
            num_return_sequences=n,
            batch_size=self.batch_size,
            seed=stable_hash(self.name, self.seed, *prompts),
            progress=self.progress,
        )
        return [[s.strip() for s in group] for group in out]

    def respond(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        """One sampled response per observation, in order."""
        return [g[0] for g in self._sample(prompts_of(observations), 1, self.temperature)]

    def describe(self) -> dict[str, Any]:
        """The settings that determine the outputs (no ``"reward"``: sampling uses none)."""
        return {"agent": self.name, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed}


@register_agent("sft")
class SFTAgent(BaseAgent):
    """Supervised fine-tuning of ``policy`` on the demonstrations of the env ``envs["sft"]`` (``AlpacaFarm-v0`` on
    split ``sft``), then sampling as :class:`BaseAgent`. ``sft``: an :class:`~.sft_loop.SFTConfig` or a mapping of
    its fields (defaults: ``examples/scripts/sft.sh``). Full fine-tuning, or LoRA with ``sft={"lora_r": 8}``."""

    name = "sft"
    ENVS = {"sft": {"id": "AlpacaFarm-v0", "split": "sft", "reward": "length", "shuffle": False}}
    STAGES = ("policy", "output_dir")

    def __init__(self, policy: Any = "smollm2-135m", *, sft: SFTConfig | Mapping[str, Any] | None = None,
                 max_new_tokens: int = 300, temperature: float = 0.7, top_p: float = 1.0, batch_size: int = 8,
                 seed: int = 0, progress: bool = False, evaluator: Any = None):
        super().__init__(policy, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         batch_size=batch_size, seed=seed, progress=progress, evaluator=evaluator)
        self.sft_config = sft if isinstance(sft, SFTConfig) else SFTConfig(**dict(sft or {}))
        self.summary: dict[str, Any] = {}

    def fit(self, envs: Mapping[str, Any] | None = None, *, policy: Any = None, output_dir: str | None = None,
            **_: Any) -> None:
        if not envs or "sft" not in envs:
            raise ValueError("sft needs envs['sft']: gym.make('AlpacaFarm-v0', split='sft', ...)")
        if output_dir is None:
            raise ValueError("sft needs an output_dir for its checkpoints and the trained model")
        if policy is not None:
            self.policy = policy
        demos = _demonstrations(envs["sft"])
        pairs = [(d["prompt"], d["output"]) for d in demos]
        self.summary = train_sft(self.policy, pairs, self.sft_config, Path(output_dir), progress=self.progress)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sft": dataclasses.asdict(self.sft_config)}


def _demonstrations(env: Any) -> list[dict[str, str]]:
    """The env's ``demonstrations`` (through Gymnasium's wrappers)."""
    for obj in (env, getattr(env, "unwrapped", None)):
        if obj is not None and hasattr(obj, "demonstrations"):
            return list(obj.demonstrations)
    raise TypeError(f"{type(env).__name__} has no demonstrations: pass an AlpacaFarm-v0 env")
