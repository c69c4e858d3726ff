"""The HTTP side of the OpenAI-compatible annotators: connection settings, throttles, prices, and one completion
request with retries.

Works with OpenAI and any server speaking the same API (vLLM, llama.cpp server, Ollama, ...) via ``base_url``. A
request is retried on rate limits (after ``Retry-After`` when the server sends it), timeouts, dropped connections and
server errors, with exponential backoff and jitter; a permanent failure (bad key, no access, unknown model, no quota,
nothing listening) raises :class:`AnnotatorAPIError` at once and stops every other request of the backend. The API key
is never printed or stored.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from ..errors import AnnotatorError
from .alpaca_eval_prompts import prompt_to_chatml
from .cache import AnnotationCache
from .configs import MemberConfig

logger = logging.getLogger(__name__)

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


def fatal_error(backend: OpenAIBackend, cfg: MemberConfig, status: Any, what: str, err: Exception,
                hint: str) -> AnnotatorAPIError:
    """The error that stops the run (and every other request of ``backend``, which records it); the key is scrubbed
    out. It names the endpoint, the model, the annotator and its config, and says what to check (``hint``)."""
    detail = (getattr(err, "message", None) or str(err)).rstrip(".")
    if status is None and err.__cause__ is not None:  # no HTTP answer: say why (refused, unknown host)
        detail += f" ({err.__cause__})"
    status_text = f" (HTTP {status})" if status is not None else ""
    msg = (f"{what}{status_text} at {backend.endpoint} for model {cfg.model_name!r} of annotator "
           f"{cfg.name!r} (config {cfg.config_path}): {detail}. {hint}")
    if cfg.model_name == cfg.original_model_name and status in (400, 404):
        msg += (f". {cfg.model_name!r} is one of the retired AlpacaFarm models: pass "
                f"model_overrides={{{cfg.model_name!r}: 'gpt-4o-mini'}} (or per member) or model=...")
    error = AnnotatorAPIError(backend.scrub(msg))
    backend.fatal_error = error
    return error


async def request_completion(backend: OpenAIBackend, cfg: MemberConfig, prompt: str,
                             jitter: random.Random) -> tuple[str, int, int, str] | None:
    """One completion of ``prompt`` for the member ``cfg``, with retries (backoff jittered by ``jitter``).

    Returns ``(text, prompt_tokens, completion_tokens, model)``, or None when the request was rejected or the
    transient failures outlasted the retries (its examples stay unlabeled and uncached). Raises
    :class:`AnnotatorAPIError` on a permanent failure, or when another request of ``backend`` already hit one.
    """
    import openai

    s = backend.settings
    rt = backend._runtime()
    kwargs = dict(cfg.completions_kwargs)
    kwargs["model"] = cfg.model_name
    messages = None
    if cfg.is_chat:
        messages = prompt_to_chatml(prompt) if prompt.startswith("<|im_start|>") else [{"role": "user", "content": prompt}]
    est_tokens = len(prompt) / 4 + float(kwargs.get("max_tokens") or 0)
    limiter, lock = backend.limiter(cfg.model_name)
    unreachable = None  # the last attempt's error when it could not even connect
    for attempt in range(s.max_retries + 1):
        await limiter.acquire(est_tokens, lock)
        delay, unreachable = None, None
        async with rt["sem"]:
            if backend.fatal_error is not None:  # another request already hit a permanent error
                raise backend.fatal_error
            backend.stats["requests"] += 1
            try:
                return await _complete(rt["client"], cfg, prompt, messages, kwargs)
            except openai.APIError as e:
                retry = _after_error(backend, cfg, e, jitter)
                if retry is None:
                    return None
                delay, unreachable = retry
        if attempt == s.max_retries:
            break
        if delay is None:  # exponential backoff with jitter
            delay = min(s.backoff_max, s.backoff_base * 2 ** attempt) * (0.5 + jitter.random())
        backend.stats["retries"] += 1
        backend.retry_sleeps.append(delay)
        await asyncio.sleep(delay)
    backend.stats["failed_requests"] += 1
    if unreachable is not None:  # nothing answers there: every other request would fail the same way
        raise fatal_error(backend, cfg, None, f"cannot connect after {s.max_retries + 1} attempts", unreachable,
                          "Check that the server is running and that base_url is right") from None
    logger.warning("%s: giving up on a request after %d attempts; its examples stay unlabeled and uncached",
                   cfg.name, s.max_retries + 1)
    return None


async def _complete(client: Any, cfg: MemberConfig, prompt: str, messages: list[dict[str, str]] | None,
                    kwargs: dict[str, Any]) -> tuple[str, int, int, str]:
    """One call of ``chat.completions`` (chat members) or ``completions``: returns ``(text, prompt_tokens,
    completion_tokens, model)``, the text empty when the server sent no choice."""
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


_NOT_FOUND_HINT = "Check the model name (model= / model_overrides=) and that base_url is the right server"


def _after_error(backend: OpenAIBackend, cfg: MemberConfig, e: Exception,
                 jitter: random.Random) -> tuple[float | None, Exception | None] | None:
    """What a failed request does next, counted in ``backend.stats``: raises :class:`AnnotatorAPIError` on a
    permanent failure (and re-raises an error of no known kind); returns None to give the request up (a rejected
    prompt), else ``(delay, unreachable)`` to retry: the server's ``Retry-After`` (jittered by up to 10%; None: back
    off), and the error when no connection could be made."""
    import openai

    if isinstance(e, openai.AuthenticationError):
        raise fatal_error(backend, cfg, 401, "authentication failed", e, "Check the API key (OPENAI_API_KEY or "
                          "api_key=...): it is missing, wrong or revoked for this endpoint") from None
    if isinstance(e, openai.PermissionDeniedError):
        raise fatal_error(backend, cfg, 403, "permission denied", e, "The API key has no access to this model: use "
                          "a key that does, or another model (model= / model_overrides=)") from None
    if isinstance(e, openai.NotFoundError):
        raise fatal_error(backend, cfg, 404, "model not found (or wrong base_url)", e, _NOT_FOUND_HINT) from None
    if isinstance(e, openai.RateLimitError):
        code = (getattr(e, "code", None) or "") + str(getattr(e, "body", "") or "")
        if "insufficient_quota" in code:
            raise fatal_error(backend, cfg, 429, "quota exhausted", e, "The account behind the API key has no quota "
                              "left: add credit or use another key") from None
        backend.stats["rate_limited"] += 1
        ra = _retry_after(e.response)
        return (ra * (1 + 0.1 * jitter.random()) if ra is not None else None), None
    if isinstance(e, openai.BadRequestError):
        body = f"{getattr(e, 'code', '')} {getattr(e, 'message', '')}".lower()
        if "model_not_found" in body or "does not exist" in body or "unknown model" in body:
            raise fatal_error(backend, cfg, 400, "model not found", e, _NOT_FOUND_HINT) from None
        backend.stats["bad_requests"] += 1
        logger.warning("%s: request rejected (HTTP 400): %s", cfg.name, backend.scrub(str(e))[:300])
        return None
    if isinstance(e, openai.APITimeoutError):
        backend.stats["timeouts"] += 1
        return None, None
    if isinstance(e, openai.APIConnectionError):
        backend.stats["connection_errors"] += 1
        return None, (e if _could_not_connect(e) else None)
    if isinstance(e, openai.APIStatusError):
        if e.status_code < 500 and e.status_code not in (408, 409):
            backend.stats["bad_requests"] += 1
            logger.warning("%s: HTTP %s: %s", cfg.name, e.status_code, backend.scrub(str(e))[:300])
            return None
        backend.stats["server_errors"] += 1
        return None, None
    raise e
