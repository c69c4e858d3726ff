"""``annotator``: a pairwise annotator turned into a reward against the env's reference output.

Following AlpacaFarm's evaluation protocol the reference (Davinci003) is output_1 and the response is output_2, so
the reward is P(response preferred) = ``preference - 1`` (a draw is 0.5), or the annotator's probability where it
has one and ``use_probability=True``. Unlabeled pairs (an unparseable completion) get 0.5 and
``info["labeled"] = False``. This is the package's one sign convention for preferences (docs/envs.md): the reward
is that of output_2, as in ``AlpacaFarmPairwise-v0``.

Context and seeds. The backend declares ``USES_CONTEXT``: it is built with the env's
:class:`~alpaca_farm_env.context.RewardContext` (the data dir reaches the annotator, e.g. the distilled judge's
answer bank), and each ``score_with_info`` call gets the batch's context. With ``context.episode_seeds`` (the env's
``seed_mode="episode"``) the annotator's per-example draws (label noise, pool member, output order) are keyed on
``seed + episode_seed``: a prompt visited again gets fresh noise. Without them (``seed_mode="instruction"``, or no
env: a dataset annotated once) they are keyed on the instruction and ``seed`` alone, as in alpaca_eval.
"""
from __future__ import annotations

from typing import Any

from ..context import USES_CONTEXT, RewardContext
from .base import JUDGES_PAIRS, NEEDS_REFERENCE, SCORES_TEXT, BaseReward, register_reward


@register_reward("annotator")
class AnnotatorReward(BaseReward):
    """``annotator`` (a spec for ``make_annotator``), ``seed`` (added to every comparison's seed),
    ``use_probability`` (the annotator's probability instead of its label, where it has one), ``context`` (from the
    env); other keyword arguments go to the annotator."""

    name = "annotator"
    capabilities = frozenset({SCORES_TEXT, JUDGES_PAIRS, NEEDS_REFERENCE, USES_CONTEXT})

    def __init__(self, annotator: Any = "noisy_pooled", seed: int = 0, use_probability: bool = False,
                 context: RewardContext | None = None, **annotator_kwargs: Any):
        from ..annotators import make_annotator

        self.annotator = make_annotator(annotator, context=context, **annotator_kwargs)
        self.name = f"annotator:{getattr(self.annotator, 'name', annotator)}"
        self.seed = seed
        self.use_probability = use_probability

    @classmethod
    def check_kwargs(cls, annotator: Any = "noisy_pooled", seed: int = 0, use_probability: bool = False,
                     context: RewardContext | None = None, **annotator_kwargs: Any) -> None:
        """Resolve the annotator name and check the keyword arguments its factory takes, without building it (see
        ``check_reward``)."""
        from ..annotators import check_annotator
        from ..registry import UnknownSpecError

        try:
            check_annotator(annotator, annotator_kwargs, where="reward_kwargs")
        except UnknownSpecError as e:
            raise UnknownSpecError(f"reward_kwargs['annotator']: {e}") from None

    def score_with_info(self, prompts, responses, *, context: RewardContext | None = None,
                        **row) -> tuple[list[float], list[dict[str, Any]]]:
        """P(response preferred over ``row["reference_output"]``) per response, and the annotation as details."""
        from ..annotators import preference_score

        n = len(responses)
        if "reference_output" not in row:
            raise ValueError("the annotator reward needs row['reference_output'] (the env passes it)")
        instructions = row.get("instruction") or list(prompts)
        inputs = row.get("input") or [""] * n
        seeds = None if context is None else context.episode_seeds
        anns = self.annotator.compare(instructions, inputs, row["reference_output"], list(responses),
                                      seed=self.seeds_for(seeds, n))
        scores, infos = [], []
        for a in anns:
            s = float(a.probability) if self.use_probability and a.probability is not None else preference_score(a)
            scores.append(s)
            infos.append({"score": s, "labeled": a.preference is not None, **a.to_dict()})
        return scores, infos

    def score(self, prompts, responses, *, context: RewardContext | None = None, **row) -> list[float]:
        """The scores of :meth:`score_with_info`."""
        return self.score_with_info(prompts, responses, context=context, **row)[0]

    def seeds_for(self, episode_seeds: Any, n: int) -> Any:
        """The ``seed`` argument of ``compare`` for ``n`` pairs (:func:`~alpaca_farm_env.annotators.annotation_seeds`
        with this reward's seed)."""
        from ..annotators import annotation_seeds

        return annotation_seeds(self.annotator, self.seed, episode_seeds, n)


def reward_is_evaluator(reward: Any, reward_kwargs: dict[str, Any] | None, evaluator: Any,
                        evaluator_kwargs: dict[str, Any] | None = None, data_dir: Any = None) -> bool:
    """True when the reward backend would judge with the evaluator's judge: a ``JUDGES_PAIRS`` reward (an annotator
    turned into a reward, built with ``annotator=``, holding it as ``.annotator``) whose annotator has
    the evaluator's judgment identity (``annotators.judgment_identity``: same artifacts and data, label noise aside,
    so ``reward="annotator"`` with its default ``noisy_pooled`` *is* the ``pooled`` evaluator). Names do not matter:
    a renamed or path-given copy of the evaluator is caught, and an unrelated annotator with a similar name is not."""
    from ..annotators import judgment_identity
    from .base import capabilities_of

    context = RewardContext.of(data_dir)
    if evaluator is None or reward is None or JUDGES_PAIRS not in capabilities_of(reward):
        return False
    if not isinstance(reward, (str, type)):  # a built backend: its annotator
        mine = _instance_judgment(getattr(reward, "annotator", reward))
    else:  # a spec: the annotator its kwargs name (``annotator``, default the noisy pool)
        kw = {k: v for k, v in (reward_kwargs or {}).items() if k not in ("seed", "use_probability")}
        spec = kw.pop("annotator", "noisy_pooled")
        mine = _instance_judgment(spec) if not isinstance(spec, (str, type)) else judgment_identity(spec, context=context, **kw)
    if isinstance(evaluator, (str, type)):
        theirs = judgment_identity(evaluator, context=context, **dict(evaluator_kwargs or {}))
    else:
        theirs = _instance_judgment(evaluator)
    return mine == theirs


def _instance_judgment(annotator: Any) -> str:
    return str(getattr(annotator, "judge_identity", None) or getattr(annotator, "identity", None) or id(annotator))
