"""``annotator``: a pairwise annotator turned into a reward against the env's reference output.

Following AlpacaFarm's evaluation protocol the reference (Davinci003) is output_1 and the response is output_2, so
the reward is P(response preferred) = ``preference - 1`` (a draw is 0.5), or the annotator's probability where it
has one. Unlabeled pairs (an unparseable completion) get 0.5 and ``info["labeled"] = False``.

Seeds. With an ``episode_seed`` column (the envs pass one per episode, drawn from their seeded RNG) the annotator's
per-example draws (label noise, pool member, output order) are keyed on ``seed + episode_seed``: a prompt visited
again gets fresh noise. Without it (a dataset annotated once) they are keyed on the instruction and ``seed`` alone,
as in alpaca_eval; ``per_episode=False`` keeps those semantics in an env (the benchmark's evaluation env). Annotators
that take one seed per call (not a pool) get one seed per batch, derived from the
batch's episode seeds.
"""
from __future__ import annotations

from typing import Any

from ..utils import stable_hash
from .base import JUDGES_PAIRS, SCORES_TEXT, BaseReward, register_reward


@register_reward("annotator")
class AnnotatorReward(BaseReward):
    name = "annotator"
    capabilities = frozenset({SCORES_TEXT, JUDGES_PAIRS})

    def __init__(self, annotator: Any = "noisy_pooled", seed: int = 0, use_probability: bool = False,
                 data_dir: Any = None, per_episode: bool = True, **annotator_kwargs: Any):
        from ..annotators import make_annotator, with_data_dir

        kwargs = with_data_dir(annotator, annotator_kwargs, data_dir) if isinstance(annotator, (str, type)) else annotator_kwargs
        self.annotator = make_annotator(annotator, **kwargs)
        self.name = f"annotator:{getattr(self.annotator, 'name', annotator)}"
        self.seed = seed
        self.use_probability = use_probability
        self.per_episode = per_episode  # False: ignore episode seeds (evaluation: alpaca_eval's instruction keys)

    @classmethod
    def check_kwargs(cls, annotator: Any = "noisy_pooled", seed: int = 0, use_probability: bool = False,
                     data_dir: Any = None, per_episode: bool = True, **annotator_kwargs: Any) -> None:
        """Resolve the annotator name and check the keyword arguments its factory takes, without building it (see
        ``check_reward``)."""
        from ..annotators import ANNOTATORS
        from ..registry import UnknownSpecError
        from ..validation import check_call

        try:
            target = ANNOTATORS.resolve(annotator)
        except UnknownSpecError as e:
            raise UnknownSpecError(f"reward_kwargs['annotator']: {e}") from None
        if isinstance(annotator, str):
            check_call(target, annotator_kwargs, f"reward 'annotator' with annotator {annotator!r}",
                       prefix="reward_kwargs.", what=f"annotator {annotator!r}")

    def score_with_info(self, prompts, responses, **row):
        n = len(responses)
        if "reference_output" not in row:
            raise ValueError("the annotator reward needs row['reference_output'] (the env passes it)")
        instructions = row.get("instruction") or list(prompts)
        inputs = row.get("input") or [""] * n
        anns = self.annotator.compare(instructions, inputs, row["reference_output"], list(responses),
                                      seed=self.seeds_for(row.get("episode_seed"), n))
        scores, infos = [], []
        for a in anns:
            if self.use_probability and a.probability is not None:
                s = float(a.probability)
            elif a.preference is None:
                s = 0.5
            else:
                s = float(a.preference) - 1.0
            scores.append(s)
            infos.append({"score": s, "labeled": a.preference is not None, **a.to_dict()})
        return scores, infos

    def score(self, prompts, responses, **row):
        return self.score_with_info(prompts, responses, **row)[0]

    def seeds_for(self, episode_seeds: Any, n: int) -> Any:
        """The ``seed`` argument of ``compare`` for ``n`` pairs: this reward's seed, plus one episode seed per pair when
        given (per-row seeds for a pool, one derived seed for other annotators)."""
        if episode_seeds is None or not self.per_episode:
            return self.seed
        seeds = [self.seed + int(s) for s in episode_seeds]
        if len(seeds) != n:
            raise ValueError(f"episode_seed has {len(seeds)} values for {n} responses")
        if getattr(self.annotator, "per_example_seeds", False):
            return seeds
        return stable_hash("batch", *seeds)  # one seed per call: still fresh on every visit


def reward_is_evaluator(reward: Any, reward_kwargs: dict[str, Any] | None, evaluator: Any,
                        evaluator_kwargs: dict[str, Any] | None = None, data_dir: Any = None) -> bool:
    """True when the reward backend would judge with the evaluator's judge: an annotator reward whose annotator has
    the evaluator's judgment identity (``annotators.judgment_identity``: same artifacts and data, label noise aside,
    so ``reward="annotator"`` with its default ``noisy_pooled`` *is* the ``pooled`` evaluator). Names do not matter:
    a renamed or path-given copy of the evaluator is caught, and an unrelated annotator with a similar name is not."""
    from ..annotators import judgment_identity, with_data_dir
    from .base import REWARDS

    if evaluator is None or reward is None:
        return False
    if isinstance(reward, AnnotatorReward):
        mine = _instance_judgment(reward.annotator)
    else:
        target = REWARDS.resolve(reward) if isinstance(reward, (str, type)) else None
        if not (isinstance(target, type) and issubclass(target, AnnotatorReward)):
            return False
        kw = {k: v for k, v in (reward_kwargs or {}).items() if k not in ("seed", "use_probability")}
        spec = kw.pop("annotator", "noisy_pooled")
        mine = _instance_judgment(spec) if not isinstance(spec, (str, type)) else judgment_identity(spec, **with_data_dir(spec, kw, data_dir))
    if isinstance(evaluator, (str, type)):
        theirs = judgment_identity(evaluator, **with_data_dir(evaluator, dict(evaluator_kwargs or {}), data_dir))
    else:
        theirs = _instance_judgment(evaluator)
    return mine == theirs


def _instance_judgment(annotator: Any) -> str:
    return str(getattr(annotator, "judge_identity", None) or getattr(annotator, "identity", None) or id(annotator))
