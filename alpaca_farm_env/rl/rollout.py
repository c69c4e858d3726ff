"""Rollouts through the env: tokenisation of prompts and responses, sampling, the per-token log-probs the scoring
forward passes read, and the choice of which prompts a step rolls out.

A rollout chunk is one vector-env episode (:func:`env_episode`): ``reset(options={"index": positions})`` puts the
chosen prompts in the sub-envs, the policy answers them (:func:`sample_responses`), and ``step(responses)`` scores
them with the env's reward in ONE batched call. :func:`collect_rollouts` does that for a step's prompts, chunk by chunk,
and returns the tensors the losses need.

Reference (tatsu-lab/alpaca_farm): ``src/alpaca_farm/rl/ppo_trainer.py`` (``rollout``), ``src/alpaca_farm/models/
rl_models.py`` (``AutoregressivePolicy.forward``: logits of the response tokens divided by the temperature),
``src/alpaca_farm/data_preprocessor.py`` (``QueryDataset``: prompts longer than ``query_len`` are dropped),
``examples/scripts/rlhf_ppo.sh`` (sampling at temperature 1.0, top_p 1.0, top_k 0).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..envs.base import AlpacaFarmEnvBase
from ..utils import stable_hash

Tensor = torch.Tensor

__all__ = ["cat_rollouts", "collect_rollouts", "decode_responses", "encode_queries", "env_episode", "env_rows",
           "eos_ids", "is_alpaca_farm_env", "epoch_order", "pad_responses", "position_ids", "positions_for_step",
           "query_fits", "response_logits", "retokenize_pairs", "sample_responses", "seeded", "sequence_inputs",
           "token_logprobs"]


def encode_queries(tokenizer: Any, prompts: Sequence[str], pad_id: int) -> tuple[Tensor, Tensor]:
    """Returns the left-padded query ids and attention mask, as wide as the longest prompt of the batch (the
    reference pads to ``query_len``; with position ids rebuilt from the mask both give the same logits). Prompts
    longer than ``query_len`` never get here: the rollout env holds only the prompts that fit (:func:`query_fits`)."""
    ids = [tokenizer(p).input_ids for p in prompts]
    width = max(len(x) for x in ids)
    out = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return out, mask


def query_fits(tokenizer: Any, prompt: str, query_len: int) -> bool:
    """Whether a prompt is at most ``query_len`` tokens (longer ones are dropped from RL training: reference
    ``data_preprocessor.QueryDataset``)."""
    return len(tokenizer(prompt).input_ids) <= query_len


def pad_responses(generated: Tensor, eos_ids: Sequence[int], pad_id: int, response_len: int) -> tuple[Tensor, Tensor]:
    """Generated tokens -> ``(responses [B, response_len], mask)``: everything after the first EOS becomes the pad
    id and the mask is True up to and including that EOS (reference: EOS kept, then pads; ``rlhf_ppo.py``)."""
    B = generated.shape[0]
    out = torch.full((B, response_len), pad_id, dtype=torch.long, device=generated.device)
    g = generated[:, :response_len]
    out[:, : g.shape[1]] = g
    is_eos = torch.zeros_like(out, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= out == e
    is_eos[:, g.shape[1]:] = False
    # a position is real when no EOS came strictly before it
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = before == 0
    mask[:, g.shape[1]:] = False
    out = torch.where(mask, out, torch.full_like(out, pad_id))
    return out, mask


def position_ids(attention_mask: Tensor) -> Tensor:
    """Returns the position ids of a (left-padded) attention mask, as ``generate`` builds them, so that the forward
    passes that score a rollout see the positions it was sampled with."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)


def sequence_inputs(queries: Tensor, query_mask: Tensor, responses: Tensor,
                    response_mask: Tensor) -> dict[str, Tensor]:
    """Returns ``input_ids``, ``attention_mask`` and ``position_ids`` of ``[queries; responses]``."""
    ids = torch.cat([queries, responses], dim=1)
    attn = torch.cat([query_mask.long(), response_mask.long()], dim=1)
    return {"input_ids": ids, "attention_mask": attn, "position_ids": position_ids(attn)}


def response_logits(model: Any, inputs: Mapping[str, Tensor], response_len: int, temperature: float) -> Tensor:
    """Returns the logits [B, response_len, V] that predict each response token (reference
    ``rl_models.AutoregressivePolicy.forward``: ``logits[:, -response_len - 1 : -1] / temperature``)."""
    logits = model(**inputs, use_cache=False).logits
    return logits[:, -response_len - 1: -1].float() / temperature


def token_logprobs(logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(logp, entropy)`` per response token from ``response_logits``; ``logp`` is 0 at pads (the reference's
    ``compute_logprobs(..., ignore_index=pad)``), the entropy is of the full distribution."""
    logp_all = F.log_softmax(logits, dim=-1)
    logp = torch.gather(logp_all, -1, labels.unsqueeze(-1)).squeeze(-1) * mask
    ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seeds the torch RNG inside the block (yields nothing); the caller's RNG state is restored after it."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(int(seed))
        yield


@torch.no_grad()
def sample_responses(model: Any, tokenizer: Any, prompts: Sequence[str], *, response_len: int, temperature: float,
                     seed: int, eos_ids: Sequence[int], prefix: str = "") -> dict[str, Any]:
    """Sample one response per prompt (top_p 1.0, top_k 0: reference ``rlhf_ppo.sh`` rollouts), return the query
    and response tensors (padded as above) and the decoded response texts (special tokens skipped, as the reference
    decodes them for the reward model)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    queries, qmask = encode_queries(tokenizer, [prefix + p for p in prompts], pad)
    queries, qmask = queries.to(device), qmask.to(device)
    with seeded(seed):
        seqs = model.generate(input_ids=queries, attention_mask=qmask, do_sample=True, temperature=temperature,
                              top_p=1.0, top_k=0, max_new_tokens=response_len, pad_token_id=pad,
                              eos_token_id=list(eos_ids) or None)
    responses, rmask = pad_responses(seqs[:, queries.shape[1]:], eos_ids, pad, response_len)
    texts = decode_responses(tokenizer, responses)
    return {"queries": queries, "query_mask": qmask, "responses": responses, "response_mask": rmask, "texts": texts}


def decode_responses(tokenizer: Any, responses: Tensor) -> list[str]:
    """Returns the texts of padded response tokens as the reward scores them: special tokens (EOS, pads, reward
    tokens) skipped, NUL characters removed (the reference decodes with ``skip_special_tokens=True``)."""
    return [t.replace("\x00", "") for t in tokenizer.batch_decode(responses, skip_special_tokens=True)]


def retokenize_pairs(tokenizer: Any, queries: Sequence[str], responses: Sequence[str], query_len: int,
                     response_len: int) -> tuple[dict[str, Tensor], list[int]]:
    """Tokenise (query text, response text) pairs from their text, as the reference's Quark pool does
    (``data_preprocessor.QueryResponseDataset``): the query is ``tokenizer(query)``, the response is what
    ``tokenizer(query + response)`` holds after the query's tokens, so no EOS (nor any special token the decoded text
    dropped) is ever a response token. Pairs whose query is longer than ``query_len`` tokens are dropped, as the
    reference drops them. A response longer than ``response_len`` tokens is cut to it, where the reference drops the
    pair: re-tokenisation lengthens a response only where the decoded text differs from the sampled bytes (invalid
    UTF-8 decoded as U+FFFD, three bytes again), rare for a trained model, the rule for a random byte-level test
    model, whose pool would otherwise empty. Queries are left-padded as :func:`encode_queries` pads them; responses
    are right-padded to ``response_len`` (the reference left-pads them, which makes the first response token predicted
    from a pad position; here it is predicted from the last query token, as it was sampled).

    Returns ``(tensors, kept)``: ``queries``, ``query_mask``, ``responses``, ``response_mask`` (True on response
    tokens) of the kept pairs, and the kept pairs' indices into the inputs."""
    pad = tokenizer.pad_token_id
    kept, qs, rs = [], [], []
    for i, (q, r) in enumerate(zip(queries, responses)):
        q_ids = tokenizer(q).input_ids
        r_ids = tokenizer(q + r).input_ids[len(q_ids):][:response_len]
        if len(q_ids) <= query_len:
            kept.append(i)
            qs.append(q_ids)
            rs.append(r_ids)
    width = max([len(x) for x in qs], default=0)
    out = {"queries": torch.full((len(qs), width), pad, dtype=torch.long),
           "query_mask": torch.zeros((len(qs), width), dtype=torch.long),
           "responses": torch.full((len(rs), response_len), pad, dtype=torch.long),
           "response_mask": torch.zeros((len(rs), response_len), dtype=torch.bool)}
    for j, (q_ids, r_ids) in enumerate(zip(qs, rs)):
        out["queries"][j, width - len(q_ids):] = torch.tensor(q_ids, dtype=torch.long)
        out["query_mask"][j, width - len(q_ids):] = 1
        out["responses"][j, : len(r_ids)] = torch.tensor(r_ids, dtype=torch.long)
        out["response_mask"][j, : len(r_ids)] = True
    return out, kept


def left_pad_to(x: Tensor, width: int, value: int) -> Tensor:
    """Returns ``x`` with its last dimension left-padded with ``value`` to ``width``."""
    return F.pad(x, (width - x.shape[-1], 0), value=value)


def cat_rollouts(chunks: Sequence[Mapping[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Returns the rollout chunks concatenated along the batch; queries (and their masks) are left-padded to the widest
    chunk first."""
    width = max(c["queries"].shape[1] for c in chunks)
    out: dict[str, Tensor] = {}
    for k in chunks[0]:
        if k == "queries":
            out[k] = torch.cat([left_pad_to(c[k], width, pad_id) for c in chunks])
        elif k == "query_mask":
            out[k] = torch.cat([left_pad_to(c[k], width, 0) for c in chunks])
        else:
            out[k] = torch.cat([c[k] for c in chunks])
    return out


def is_alpaca_farm_env(env: Any) -> bool:
    """Whether ``env`` (single or vector, wrapped or not) is an AlpacaFarm env (its base class is
    :class:`~alpaca_farm_env.envs.base.AlpacaFarmEnvBase`)."""
    return isinstance(getattr(env, "unwrapped", env), AlpacaFarmEnvBase)


def env_rows(env: Any) -> list[dict[str, Any]]:
    """Returns the prompt rows an AlpacaFarm env (single or vector, wrapped or not) already holds."""
    base = getattr(env, "unwrapped", env)
    if not is_alpaca_farm_env(env):
        raise TypeError(f"{type(env).__name__} is not an AlpacaFarm-v0 env (gym.make / gym.make_vec('AlpacaFarm-v0'))")
    return list(base.rows)


def env_episode(env: Any, positions: Sequence[int],
                respond: Callable[[list[str]], list[str]]) -> tuple[list[str], list[str], list[float]]:
    """One vector-env step on chosen rows: ``reset(options={"index": positions})`` puts those prompts in the
    sub-envs, ``respond(prompts)`` answers them, ``step(responses)`` scores them in one reward call. Returns
    ``(prompts, responses, raw scores)``."""
    obs, _ = env.reset(options={"index": list(positions)})
    prompts = list(obs["prompt"])
    responses = respond(prompts)
    _, rewards, *_ = env.step(list(responses))
    return prompts, list(responses), [float(r) for r in rewards]


def epoch_order(n: int, seed: int, epoch: int, salt: str) -> list[int]:
    """Returns a permutation of ``range(n)`` that is a stable function of ``(salt, seed, epoch)``."""
    return sorted(range(n), key=lambda i: stable_hash(salt, seed, epoch, i))


def positions_for_step(n_rows: int, per_step: int, step: int, seed: int, salt: str) -> list[int]:
    """Returns the row positions of step ``step`` (0-based): consecutive slices of stable per-epoch permutations, so
    every prompt is used once per epoch and a resumed run sees the prompts the uninterrupted one would."""
    out, start = [], step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n_rows)
        order = epoch_order(n_rows, seed, epoch, salt)
        out.extend(order[offset: offset + per_step - len(out)])
    return out


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Returns the token ids that end a response of ``model`` (a peft model's base model is asked)."""
    from ..models.policy import _eos_ids

    return _eos_ids(getattr(model, "get_base_model", lambda: model)(), tokenizer)


def collect_rollouts(env: Any, positions: Sequence[int], chunk: int, model: Any, tokenizer: Any, *,
                     response_len: int, temperature: float, seed_of: Callable[[int], int], prefix: str = "",
                     context: Callable[[], ContextManager[Any]] = nullcontext,
                     ) -> tuple[list[dict[str, Tensor]], list[float], list[str]]:
    """Roll out the prompts at ``positions`` of ``env`` (an :class:`~alpaca_farm_env.envs.vector_env.
    AlpacaFarmVectorEnv` with ``chunk`` sub-envs), ``chunk`` prompts per env episode: each is sampled from ``model``
    (``prefix``, e.g. a reward token, before each prompt; sampling seeded with ``seed_of(offset of the chunk)``,
    inside ``context()``) and scored by the env in one reward call. A short last chunk is filled up with the first
    positions and the extra answers dropped.

    Returns ``(chunks, scores, prompts)``: per chunk the tensors of :func:`sample_responses` plus ``scores``, the raw
    scores of all rollouts, and their prompts (without the prefix).
    """
    chunks, scores, prompts_out = [], [], []
    eos = eos_ids(model, tokenizer)
    for c in range(0, len(positions), chunk):
        pos = list(positions[c: c + chunk])
        if len(pos) < chunk:  # a short last chunk: the env has num_envs sub-envs; extra answers discarded
            pos = pos + list(positions[: chunk - len(pos)])
        holder: dict[str, Any] = {}

        def respond(prompts: list[str], _h: dict[str, Any] = holder, _c: int = c) -> list[str]:
            with context():
                _h.update(sample_responses(model, tokenizer, prompts, response_len=response_len,
                                           temperature=temperature, eos_ids=eos, prefix=prefix, seed=seed_of(_c)))
            return _h["texts"]

        prompts, _, sc = env_episode(env, pos, respond)
        keep = min(chunk, len(positions) - c)
        out = {k: v[:keep] for k, v in holder.items() if isinstance(v, Tensor)}
        out["scores"] = torch.tensor(sc[:keep], dtype=torch.float32, device=out["queries"].device)
        chunks.append(out)
        scores.extend(sc[:keep])
        prompts_out.extend(prompts[:keep])
    return chunks, scores, prompts_out
