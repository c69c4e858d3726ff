"""OpenAI-compatible annotator backend: one :class:`~.pool.PoolMember` per alpaca_eval config entry.

Works with OpenAI and any server speaking the same API (vLLM, llama.cpp server, Ollama, ...) via ``base_url``.

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
import os
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from tqdm.auto import tqdm

from ..errors import AnnotatorError
from ..utils import stable_hash
from .base import Annotation, clean_rows, register_annotator
from .cache import AnnotationCache, example_key
from .configs import PLACEHOLDER_RE, MemberConfig, load_member_configs
from .pool import AnnotatorPool, _run_coro

logger = logging.getLogger(__name__)

__all__ = [
    "PRICE_TABLE", "ClientSettings", "OpenAIBackend", "OpenAIMember", "AnnotatorAPIError", "OpenAIPool",
    "AlpacaFarmPool", "AlpacaFarmPoolNoisy", "AlpacaFarmGreedyGPT4", "regex_parse", "fill_template", "prompt_to_chatml",
]

# tatsu-lab/alpaca_farm src/alpaca_farm/auto_annotations/pairwise_annotators.py
DUMMY_EXAMPLE_NOINPUT = dict(instruction="Solve: 1+1=", input="", output_1="2", output_2="3")
DUMMY_EXAMPLE_INPUT = dict(instruction="Solve:", input="1+1=", output_1="2", output_2="3")

# USD per 1M (input, output) tokens; matched exactly, else by the longest matching prefix. Override with
# ``price_table=``. The retired models use their 2023 list prices (alpaca_eval decoders/openai.py _get_price_per_token).
PRICE_TABLE: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4-1106": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-3.5-turbo-0301": (2.00, 2.00),
    "text-davinci-003": (20.00, 20.00),
}


class AnnotatorAPIError(AnnotatorError):
    """A non-retryable API failure (bad key, no permission, unknown model: raised at once; an endpoint that refuses
    connections: after the retries), naming the endpoint, model and config and saying what to check. Never holds
    the API key. An :class:`~alpaca_farm_env.errors.AnnotatorError` (so a ``RuntimeError``): the CLI prints one line."""


DEFAULT_ENDPOINT = "https://api.openai.com/v1"  # the openai client's default base_url


def redact_url(url: str) -> str:
    """The endpoint as it may be shown: scheme, host, port and path (no user:password, query or fragment)."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if u.port is not None:
        host += f":{u.port}"
    return urlunsplit((u.scheme, host, u.path, "", "")) if u.scheme else url.split("?", 1)[0]


def _could_not_connect(err: Exception) -> bool:
    """Whether an ``openai.APIConnectionError`` means no connection was made (refused, unknown host), as opposed to
    one dropped mid-request. The openai client raises it ``from`` the httpx ``ConnectError``."""
    cause = err.__cause__
    return cause is not None and any(k.__name__ == "ConnectError" for k in type(cause).__mro__)


@dataclass
class ClientSettings:
    """Connection and throttling settings shared by the members of a pool. The key is never printed or stored."""

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 6
    request_timeout: float = 60.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    show_progress: bool = True


def price_per_token(model: str, table: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    if model in table:
        p = table[model]
    else:
        cands = [k for k in table if model.startswith(k)]
        if not cands:
            return None
        p = table[max(cands, key=len)]
    return float(p[0]) / 1e6, float(p[1]) / 1e6


def fill_template(template: str, examples: Sequence[Mapping[str, Any]]) -> str:
    """Fill the k-th occurrence of each ``{field}`` with ``examples[k][field]`` (alpaca_eval ``make_prompts``)."""
    seen: Counter = Counter()

    def repl(m: re.Match) -> str:
        key = m.group(1)
        i = seen[key]
        seen[key] += 1
        return str(examples[i][key])

    return PLACEHOLDER_RE.sub(repl, template)


def prompt_to_chatml(prompt: str, start: str = "<|im_start|>", end: str = "<|im_end|>") -> list[dict[str, str]]:
    """ChatML text -> chat messages (alpaca_eval ``utils.prompt_to_chatml``; ``system name=x`` keeps the name)."""
    prompt = prompt.strip()
    if not (prompt.startswith(start) and prompt.endswith(end)):
        raise ValueError("not a ChatML prompt")
    messages = []
    for part in prompt.split(start)[1:]:
        head, _, body = part.partition("\n")
        role = head.strip()
        msg: dict[str, str] = {"content": body.split(end, 1)[0].strip()}
        if role.startswith("system") and role != "system":
            msg["role"] = "system"
            for kv in role[len("system"):].split(","):
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    msg[k.strip()] = v.strip()
        else:
            msg["role"] = role
        messages.append(msg)
    return messages


def regex_parse(completion: str, outputs_to_match: Mapping[float, str | re.Pattern]) -> list[float]:
    """alpaca_eval ``regex_parser``: keys in the order their patterns match, each match consumed."""
    pats = {k: (v if isinstance(v, re.Pattern) else re.compile(v)) for k, v in outputs_to_match.items()}
    out, text = [], completion
    while True:
        best = None
        for k, p in pats.items():
            m = p.search(text)
            if m and (best is None or m.start() < best[1].start()):
                best = (k, m)
        if best is None:
            return out
        out.append(best[0])
        text = text[best[1].end():]


class _SlidingWindowLimiter:
    """Requests-per-minute and tokens-per-minute over a sliding 60 s window."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.rpm, self.tpm = rpm, tpm
        self.events: list[tuple[float, float]] = []  # (monotonic time, tokens)

    async def acquire(self, tokens: float, lock: asyncio.Lock) -> None:
        if not self.rpm and not self.tpm:
            return
        loop = asyncio.get_running_loop()
        async with lock:
            while True:
                now = loop.time()
                self.events = [(t, n) for t, n in self.events if now - t < 60.0]
                ok_r = not self.rpm or len(self.events) < self.rpm
                ok_t = not self.tpm or not self.events or sum(n for _, n in self.events) + tokens <= self.tpm
                if ok_r and ok_t:
                    self.events.append((now, tokens))
                    return
                await asyncio.sleep(max(0.01, 60.0 - (now - self.events[0][0])))


class OpenAIBackend:
    """What the members of one pool share: settings, the SQLite cache, the price table, throttles and counters."""

    def __init__(self, settings: ClientSettings, cache: AnnotationCache | None, price_table: Mapping | None = None):
        self.settings = settings
        self.cache = cache
        self.price_table = {**PRICE_TABLE, **dict(price_table or {})}
        self.stats: Counter = Counter()
        self.retry_sleeps: list[float] = []
        self._limiters: dict[str, _SlidingWindowLimiter] = {}
        self._per_loop: dict[int, dict[str, Any]] = {}
        self._warned_price: set[str] = set()
        self.fatal_error: AnnotatorAPIError | None = None  # set on the first permanent error: stop sending

    def _runtime(self) -> dict[str, Any]:
        """Client, semaphore and locks bound to the running event loop (asyncio objects cannot cross loops)."""
        loop = asyncio.get_running_loop()
        rt = self._per_loop.get(id(loop))
        if rt is None or rt["loop"] is not loop:
            import openai

            s = self.settings
            key = s.api_key
            if not key:
                if s.base_url:
                    key = "EMPTY"  # local servers usually need no key
                else:
                    raise AnnotatorAPIError("no API key: set OPENAI_API_KEY or pass api_key=..., or point base_url= "
                                            "at a local OpenAI-compatible server")
            client = openai.AsyncOpenAI(api_key=key, base_url=s.base_url, max_retries=0, timeout=s.request_timeout)
            rt = {"loop": loop, "client": client, "sem": asyncio.Semaphore(max(1, s.max_concurrency)), "locks": {}}
            self._per_loop = {id(loop): rt}  # older loops are closed; drop them
        return rt

    def limiter(self, model: str) -> tuple[_SlidingWindowLimiter, asyncio.Lock]:
        rt = self._runtime()
        lim = self._limiters.setdefault(model, _SlidingWindowLimiter(self.settings.requests_per_minute,
                                                                     self.settings.tokens_per_minute))
        return lim, rt["locks"].setdefault(model, asyncio.Lock())

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        p = price_per_token(model, self.price_table)
        if p is None:
            if model not in self._warned_price:
                logger.warning("no price for model %r: cost is reported as 0; pass price_table={%r: (in, out)} "
                               "in USD per 1M tokens", model, model)
                self._warned_price.add(model)
            return None
        return prompt_tokens * p[0] + completion_tokens * p[1]

    def scrub(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text

    @property
    def endpoint(self) -> str:
        # the openai client falls back to $OPENAI_BASE_URL, so the message must name that endpoint too
        return redact_url(self.settings.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_ENDPOINT)


def _retry_after(response) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if response is None:
        return None
    h = response.headers
    try:
        if h.get("retry-after-ms"):
            return max(0.0, float(h["retry-after-ms"]) / 1000.0)
        ra = h.get("retry-after")
        if ra:
            try:
                return max(0.0, float(ra))
            except ValueError:
                import time as _t

                return max(0.0, parsedate_to_datetime(ra).timestamp() - _t.time())
    except (TypeError, ValueError):
        return None
    return None


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

    def _fatal(self, status: Any, what: str, err: Exception, hint: str) -> AnnotatorAPIError:
        """The error that stops the run (and every other request of the backend); the key is scrubbed out."""
        cfg = self.config
        detail = (getattr(err, "message", None) or str(err)).rstrip(".")
        if status is None and err.__cause__ is not None:  # no HTTP answer: say why (refused, unknown host)
            detail += f" ({err.__cause__})"
        status_text = f" (HTTP {status})" if status is not None else ""
        msg = (f"{what}{status_text} at {self.backend.endpoint} for model {cfg.model_name!r} of annotator "
               f"{cfg.name!r} (config {cfg.config_path}): {detail}. {hint}")
        if cfg.model_name == cfg.original_model_name and status in (400, 404):
            msg += (f". {cfg.model_name!r} is one of the retired AlpacaFarm models: pass "
                    f"model_overrides={{{cfg.model_name!r}: 'gpt-4o-mini'}} (or per member) or model=...")
        err = AnnotatorAPIError(self.backend.scrub(msg))
        self.backend.fatal_error = err
        return err

    async def _request(self, prompt: str) -> tuple[str, int, int, str] | None:
        """One completion with retries. Returns (text, prompt_tokens, completion_tokens, model) or None."""
        import openai

        cfg, be, s = self.config, self.backend, self.backend.settings
        rt = be._runtime()
        client = rt["client"]
        kwargs = dict(cfg.completions_kwargs)
        kwargs["model"] = cfg.model_name
        if cfg.is_chat:
            messages = prompt_to_chatml(prompt) if prompt.startswith("<|im_start|>") else [{"role": "user", "content": prompt}]
        est_tokens = len(prompt) / 4 + float(kwargs.get("max_tokens") or 0)
        limiter, lock = be.limiter(cfg.model_name)
        not_found = "Check the model name (model= / model_overrides=) and that base_url is the right server"
        unreachable = None  # the last attempt's error when it could not even connect
        for attempt in range(s.max_retries + 1):
            await limiter.acquire(est_tokens, lock)
            delay, unreachable = None, None
            async with rt["sem"]:
                if be.fatal_error is not None:  # another request already hit a permanent error
                    raise be.fatal_error
                be.stats["requests"] += 1
                try:
                    if cfg.is_chat:
                        resp = await client.chat.completions.create(messages=messages, **kwargs)
                        text = resp.choices[0].message.content or "" if resp.choices else ""
                    else:
                        resp = await client.completions.create(prompt=prompt, **kwargs)
                        text = resp.choices[0].text or "" if resp.choices else ""
                    u = resp.usage
                    pt = int(getattr(u, "prompt_tokens", 0) or 0) if u else 0
                    ct = int(getattr(u, "completion_tokens", 0) or 0) if u else 0
                    return text, pt, ct, cfg.model_name
                except openai.AuthenticationError as e:
                    raise self._fatal(401, "authentication failed", e, "Check the API key (OPENAI_API_KEY or "
                                      "api_key=...): it is missing, wrong or revoked for this endpoint") from None
                except openai.PermissionDeniedError as e:
                    raise self._fatal(403, "permission denied", e, "The API key has no access to this model: use "
                                      "a key that does, or another model (model= / model_overrides=)") from None
                except openai.NotFoundError as e:
                    raise self._fatal(404, "model not found (or wrong base_url)", e, not_found) from None
                except openai.RateLimitError as e:
                    code = (getattr(e, "code", None) or "") + str(getattr(e, "body", "") or "")
                    if "insufficient_quota" in code:
                        raise self._fatal(429, "quota exhausted", e, "The account behind the API key has no quota "
                                          "left: add credit or use another key") from None
                    be.stats["rate_limited"] += 1
                    ra = _retry_after(e.response)
                    delay = ra * (1 + 0.1 * self._jitter.random()) if ra is not None else None
                except openai.BadRequestError as e:
                    body = f"{getattr(e, 'code', '')} {getattr(e, 'message', '')}".lower()
                    if "model_not_found" in body or "does not exist" in body or "unknown model" in body:
                        raise self._fatal(400, "model not found", e, not_found) from None
                    be.stats["bad_requests"] += 1
                    logger.warning("%s: request rejected (HTTP 400): %s", self.name, be.scrub(str(e))[:300])
                    return None
                except openai.APITimeoutError:
                    be.stats["timeouts"] += 1
                except openai.APIConnectionError as e:
                    be.stats["connection_errors"] += 1
                    unreachable = e if _could_not_connect(e) else None
                except openai.APIStatusError as e:
                    if e.status_code < 500 and e.status_code not in (408, 409):
                        be.stats["bad_requests"] += 1
                        logger.warning("%s: HTTP %s: %s", self.name, e.status_code, be.scrub(str(e))[:300])
                        return None
                    be.stats["server_errors"] += 1
            if attempt == s.max_retries:
                break
            if delay is None:  # exponential backoff with jitter
                delay = min(s.backoff_max, s.backoff_base * 2 ** attempt) * (0.5 + self._jitter.random())
            be.stats["retries"] += 1
            be.retry_sleeps.append(delay)
            await asyncio.sleep(delay)
        be.stats["failed_requests"] += 1
        if unreachable is not None:  # nothing answers there: every other request would fail the same way
            raise self._fatal(None, f"cannot connect after {s.max_retries + 1} attempts", unreachable,
                              "Check that the server is running and that base_url is right") from None
        logger.warning("%s: giving up on a request after %d attempts; its examples stay unlabeled and uncached",
                       self.name, s.max_retries + 1)
        return None


class OpenAIPool(AnnotatorPool):
    """An :class:`AnnotatorPool` whose members are the entries of an alpaca_eval config, answered over the API.

    ``config``: a built-in name (``"alpaca_farm"``: the 13-member AlpacaFarm pool; ``"alpaca_farm_greedy_gpt4"``),
    a directory holding ``configs.yaml``, or a yaml path. ``model_overrides`` maps member names or original model
    names to the model to use (the originals are retired), ``model`` overrides all. ``api_key`` defaults to
    ``$OPENAI_API_KEY``; ``base_url`` points at any OpenAI-compatible server. ``cache_path`` is the SQLite cache
    (default under the user cache dir; ``None`` -> default, ``":memory:"`` -> process-local).
    """

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
