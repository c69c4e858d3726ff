"""OpenAI-compatible annotator backend: one :class:`~.pool.PoolMember` per alpaca_eval config entry.

Works with OpenAI and any server speaking the same API (vLLM, llama.cpp server, Ollama, ...) via ``base_url``; the
requests, retries, throttles and prices are :mod:`.openai_client`'s, the prompt and completion format
:mod:`.alpaca_eval_prompts`'.

Prompting and parsing follow alpaca_eval (tatsu-lab/alpaca_eval ``src/alpaca_eval``):

* the input is folded into the instruction as ``instruction + "\\n\\n" + input`` (alpaca_eval's data layout; its
  ``alpaca_farm`` templates only have ``{instruction}``, ``{output_1}``, ``{output_2}``);
* examples are grouped without-input / with-input (tatsu-lab/alpaca_farm ``pairwise_annotators.py``
  ``PaddingForBatchesProcessorInputNoinput``), put in a seeded order (``SingleAnnotator._preprocess`` ``is_shuffle``)
  and cut into ``batch_size`` chunks; an incomplete chunk is padded with the matching dummy example
  (``DUMMY_EXAMPLE_NOINPUT`` / ``DUMMY_EXAMPLE_INPUT``);
* the k-th ``{field}`` of the template is filled with example k (``utils.make_prompts``; here in one pass so text
  inside an example is never re-substituted); the prompt is stripped; a ChatML template becomes chat messages
  (``utils.prompt_to_chatml``) sent to ``chat.completions``, a plain-text one goes to ``completions``;
* the completion is parsed with ``completion_parsers.regex_parser`` semantics (repeatedly take the earliest match
  among ``outputs_to_match`` and continue after it); if the number of matches differs from ``batch_size`` the whole
  batch is unlabeled (``SingleAnnotator._parse_completions``). Unparseable items are dropped (``None``) and counted,
  never guessed.

``tokens_to_avoid`` / ``tokens_to_favor`` (a logit bias on tiktoken ids of the retired models) are not applied: the
ids are model-specific and meaningless for the override models; they are kept in ``MemberConfig.ignored_kwargs``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import uuid
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from ..utils import stable_hash
from .alpaca_eval_prompts import (  # noqa: F401  (prompt_to_chatml re-exported)
    DUMMY_EXAMPLE_INPUT,
    DUMMY_EXAMPLE_NOINPUT,
    fill_template,
    prompt_to_chatml,
    regex_parse,
)
from .base import Annotation, clean_rows, register_annotator
from .cache import AnnotationCache, example_key
from .configs import MemberConfig, load_member_configs, resolve_config_path
from .openai_client import (  # noqa: F401  (re-exported: the names importable from here before the split)
    DEFAULT_ENDPOINT,
    PRICE_TABLE,
    AnnotatorAPIError,
    ClientSettings,
    OpenAIBackend,
    _SlidingWindowLimiter,
    price_per_token,
    redact_url,
    request_completion,
)
from .pool import AnnotatorPool, _run_coro

logger = logging.getLogger(__name__)

__all__ = [
    "PRICE_TABLE", "ClientSettings", "OpenAIBackend", "OpenAIMember", "AnnotatorAPIError", "OpenAIPool",
    "AlpacaFarmPool", "AlpacaFarmPoolNoisy", "AlpacaFarmGreedyGPT4", "regex_parse", "fill_template", "prompt_to_chatml",
]


class OpenAIMember:
    """A pool member answering through an OpenAI-compatible API, configured by one alpaca_eval config entry."""

    def __init__(self, config: MemberConfig, backend: OpenAIBackend, *, retry_unlabeled: bool = False):
        config.validate()
        self.config = config
        self.backend = backend
        self.name = config.name
        self.config_hash = config.config_hash()
        self.retry_unlabeled = retry_unlabeled
        self._jitter = random.Random(stable_hash("jitter", config.name))

    def __repr__(self) -> str:
        return f"OpenAIMember(name={self.name!r}, model={self.config.model_name!r}, batch_size={self.config.batch_size})"

    # -- PoolMember --
    def annotate(self, rows: list[dict]) -> list[Annotation]:
        return _run_coro(self.aannotate(rows))

    async def aannotate(self, rows: list[dict]) -> list[Annotation]:
        cfg, be = self.config, self.backend
        exs = []
        for r in clean_rows(rows):
            inp = r.get("input") or ""
            ins = r["instruction"] + ("\n\n" + inp if inp else "")  # alpaca_eval layout: input folded in
            exs.append({"instruction": ins, "input": inp, "output_1": r["output_1"], "output_2": r["output_2"],
                        "key": example_key(ins, r["output_1"], r["output_2"]), "has_input": bool(inp)})
        results: dict[str, Annotation] = {}
        hits = be.cache.get_many(self.config_hash, [e["key"] for e in exs]) if be.cache else {}
        for k, c in hits.items():
            if c.preference is None and self.retry_unlabeled:
                continue
            results[k] = Annotation(
                preference=c.preference, probability=None if c.preference is None else c.preference - 1.0,
                annotator=self.name, raw_completion=c.raw_completion, cost=0.0, from_cache=True,
                extra={"model": c.model, "original_cost": c.cost},
            )
        be.stats["cache_hits"] += len(results)
        todo = list({e["key"]: e for e in exs if e["key"] not in results}.values())
        batches = []
        for has_input in (False, True):
            group = sorted((e for e in todo if e["has_input"] == has_input),
                           key=lambda e: stable_hash(self.config_hash, e["key"]))  # seeded order (is_shuffle)
            pad = DUMMY_EXAMPLE_INPUT if has_input else DUMMY_EXAMPLE_NOINPUT
            pad = {**pad, "instruction": pad["instruction"] + ("\n\n" + pad["input"] if pad["input"] else "")}
            for i in range(0, len(group), cfg.batch_size):
                chunk = group[i : i + cfg.batch_size]
                batches.append((chunk, cfg.batch_size - len(chunk), [*chunk, *[pad] * (cfg.batch_size - len(chunk))]))
        if batches:
            bar = tqdm(total=len(batches), desc=f"annotating ({self.name})", leave=False,
                       disable=not be.settings.show_progress)

            async def run(b):
                try:
                    return await self._annotate_batch(*b)
                finally:
                    bar.update(1)

            try:
                for out in await asyncio.gather(*(run(b) for b in batches)):
                    results.update(out)
            finally:
                bar.close()
        return [results[e["key"]] for e in exs]

    async def _annotate_batch(self, chunk: list[dict], n_pad: int, filled: list[dict]) -> dict[str, Annotation]:
        cfg, be = self.config, self.backend
        prompt = fill_template(cfg.prompt_template, filled).strip()  # alpaca_eval is_strip
        answer = await self._request(prompt)
        if answer is None:  # transient failures exhausted, or a rejected prompt: not cached, asked again next run
            be.stats["unlabeled"] += len(chunk)
            return {e["key"]: Annotation(preference=None, annotator=self.name, extra={"error": "request_failed"})
                    for e in chunk}
        text, pt, ct, model = answer
        prefs: list[float | None] = regex_parse(text, cfg.outputs_to_match) if text else []
        if len(prefs) != cfg.batch_size:  # all-or-nothing, as alpaca_eval SingleAnnotator._parse_completions
            be.stats["unparseable_batches"] += 1
            be.stats["unlabeled"] += len(chunk)
            logger.warning("%s: found %d answers for a batch of %d; the whole batch is unlabeled", self.name,
                           len(prefs), cfg.batch_size)
            prefs = [None] * cfg.batch_size
        cost = be.cost(model, pt, ct)
        per_example = (cost or 0.0) / cfg.batch_size
        request_id = uuid.uuid4().hex
        if be.cache is not None:
            be.cache.put_batch(config_hash=self.config_hash, member=self.name, model=model, request_id=request_id,
                               items=[(e["key"], prefs[i]) for i, e in enumerate(chunk)], raw_completion=text,
                               prompt_tokens=pt, completion_tokens=ct, cost=cost or 0.0, n_slots=cfg.batch_size)
        be.stats["labeled"] += sum(p is not None for p in prefs[: len(chunk)])
        return {
            e["key"]: Annotation(
                preference=prefs[i], probability=None if prefs[i] is None else prefs[i] - 1.0, annotator=self.name,
                raw_completion=text, cost=per_example, from_cache=False,
                extra={"model": model, "request_id": request_id, "cost_known": cost is not None, "n_padding": n_pad},
            )
            for i, e in enumerate(chunk)
        }
    async def _request(self, prompt: str) -> tuple[str, int, int, str] | None:
        """One completion with retries (:func:`~.openai_client.request_completion`): returns (text, prompt_tokens,
        completion_tokens, model), or None when the request was given up."""
        return await request_completion(self.backend, self.config, prompt, self._jitter)


class OpenAIPool(AnnotatorPool):
    """An :class:`AnnotatorPool` whose members are the entries of an alpaca_eval config, answered over the API.

    ``config``: a built-in name (``"alpaca_farm"``: the 13-member AlpacaFarm pool; ``"alpaca_farm_greedy_gpt4"``),
    a directory holding ``configs.yaml``, or a yaml path. ``model_overrides`` maps member names or original model
    names to the model to use (the originals are retired), ``model`` overrides all. ``api_key`` defaults to
    ``$OPENAI_API_KEY``; ``base_url`` points at any OpenAI-compatible server. ``cache_path`` is the SQLite cache
    (default under the user cache dir; ``None`` -> default, ``":memory:"`` -> process-local).
    """

    @staticmethod
    def check_requirements(config: str | Path = "alpaca_farm", **_: Any) -> None:
        """Raise a ``ConfigError`` (naming ``pip install alpaca-eval==0.6.6`` for a built-in config) when the config
        cannot be found; called by ``annotators.check_annotator``, so ``gym.make`` fails, not the first step."""
        resolve_config_path(config)

    def __init__(
        self,
        config: str | Path = "alpaca_farm",
        *,
        name: str | None = None,
        p_label_flip: float | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        model_overrides: Mapping[str, str] | None = None,
        members: list[str] | None = None,
        cache_path: str | Path | None = None,
        max_concurrency: int = 8,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 6,
        request_timeout: float = 60.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        price_table: Mapping[str, tuple[float, float]] | None = None,
        text_templates_as_chat: bool = False,
        retry_unlabeled: bool = False,
        is_randomize_output_order: bool = True,
        base_seed: int = 0,
        show_progress: bool = True,
    ):
        import os

        cfgs = load_member_configs(config, model_overrides=model_overrides, model=model, members=members,
                                   text_templates_as_chat=text_templates_as_chat)
        settings = ClientSettings(
            base_url=base_url, api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
            max_concurrency=max_concurrency, requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute, max_retries=max_retries, request_timeout=request_timeout,
            backoff_base=backoff_base, backoff_max=backoff_max, show_progress=show_progress,
        )
        self.backend = OpenAIBackend(settings, AnnotationCache(cache_path), price_table)
        super().__init__(
            [OpenAIMember(c, self.backend, retry_unlabeled=retry_unlabeled) for c in cfgs.values()],
            name=name or (Path(str(config)).parent.name if str(config).endswith((".yaml", ".yml"))
                          else Path(str(config)).name),
            p_label_flip=p_label_flip, is_randomize_output_order=is_randomize_output_order, base_seed=base_seed,
        )

    def compare(self, *args, **kwargs):
        self.backend.fatal_error = None  # a new call may follow a fixed configuration
        return super().compare(*args, **kwargs)

    @property
    def cache(self) -> AnnotationCache:
        return self.backend.cache


@register_annotator("alpaca_farm_pool")
class AlpacaFarmPool(OpenAIPool):
    """The 13-member AlpacaFarm evaluation pool (noise-free), from alpaca_eval's ``evaluators_configs/alpaca_farm``."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("name", "alpaca_farm_pool")
        super().__init__("alpaca_farm", **kwargs)


@register_annotator("alpaca_farm_pool_noisy")
class AlpacaFarmPoolNoisy(OpenAIPool):
    """The AlpacaFarm training pool: the same 13 members with ``p_label_flip=0.25``."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("name", "alpaca_farm_pool_noisy")
        kwargs.setdefault("p_label_flip", 0.25)
        super().__init__("alpaca_farm", **kwargs)


@register_annotator("alpaca_farm_greedy_gpt4")
class AlpacaFarmGreedyGPT4(OpenAIPool):
    """alpaca_eval's ``alpaca_farm_greedy_gpt4`` evaluator (GPT-4, temperature 0, batches of 5)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("name", "alpaca_farm_greedy_gpt4")
        super().__init__("alpaca_farm_greedy_gpt4", **kwargs)


register_annotator("openai_pool", OpenAIPool)
