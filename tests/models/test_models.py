"""Policies: byte tokenizer, tiny Llama generation (shapes, seeding, left padding, EOS), logprobs, loading, registry,
and one test on the real packaged SmolLM2-135M-Instruct."""
from __future__ import annotations

import re

import pytest
import torch

from alpaca_farm_env.data import format_prompt
from alpaca_farm_env.models import (
    BYTE_VOCAB_SIZE,
    Policy,
    byte_tokenizer,
    list_policies,
    load_policy,
    register_policy,
    resolve_dtype,
    tiny_llama,
    weights_fingerprint,
)
from alpaca_farm_env.models import presets

PROMPTS = ["Hi", "A considerably longer prompt, so that the batch needs padding", "Émile says: ünïcode ✓"]


@pytest.fixture(autouse=True)
def _tmp_cache(request, tmp_path, monkeypatch):
    if "smollm2" not in request.node.name:  # the SmolLM2 test deliberately uses the persistent cache
        monkeypatch.setenv("ALPACA_FARM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def policy() -> Policy:
    return tiny_llama(seed=0)


def test_byte_tokenizer_roundtrip_and_left_padding():
    tok = byte_tokenizer()
    assert len(tok) == BYTE_VOCAB_SIZE == 259
    text = "Émile says: ünïcode ✓\n\ttabs"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id == 257
    assert ids[1:] == list(text.encode("utf-8"))
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert (tok.pad_token_id, tok.eos_token_id) == (256, 258)
    batch = tok(["a", "abcd"], padding=True)
    assert tok.padding_side == "left"
    assert batch.input_ids[0][:3] == [256, 256, 256] and batch.attention_mask[0] == [0, 0, 0, 1, 1]
    assert byte_tokenizer(add_bos=False)("ab").input_ids == [97, 98]


def test_tiny_llama_is_seeded():
    a, b, c = tiny_llama(seed=1), tiny_llama(seed=1), tiny_llama(seed=2)
    wa, wb, wc = (p.model.model.embed_tokens.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.model.config.vocab_size == 259 and a.model.config.num_hidden_layers == 2


def test_generate_shapes_and_prompt_stripped(policy):
    out = policy.generate(PROMPTS, max_new_tokens=5, num_return_sequences=3, batch_size=2, seed=0)
    assert len(out) == len(PROMPTS) and all(len(r) == 3 and all(isinstance(s, str) for s in r) for r in out)
    # every byte decodes to at most one character, so 5 new tokens give at most 5 characters: no prompt text
    assert all(len(s) <= 5 for r in out for s in r)
    assert any(s for r in out for s in r)


def test_generate_is_seeded(policy):
    kw = dict(max_new_tokens=8, num_return_sequences=2, temperature=1.0, batch_size=2)
    first = policy.generate(PROMPTS, seed=3, **kw)
    assert policy.generate(PROMPTS, seed=3, **kw) == first
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    policy.generate(PROMPTS[:1], seed=3, **kw)
    assert torch.equal(torch.rand(1), before), "generate must not consume the caller's global RNG"
    assert policy.generate(PROMPTS, seed=4, **kw) != first


def test_greedy_batched_equals_unbatched(policy):
    batched = policy.generate(PROMPTS, max_new_tokens=12, temperature=0, batch_size=3)
    single = [policy.generate([p], max_new_tokens=12, do_sample=False)[0] for p in PROMPTS]
    assert batched == single
    # and greedy ignores the seed
    assert policy.generate(PROMPTS, max_new_tokens=12, temperature=0, seed=99) == batched


def test_eos_stops_generation_and_special_tokens_are_skipped():
    pol = tiny_llama(seed=0)
    head = torch.nn.Linear(pol.model.config.hidden_size, pol.model.config.vocab_size, bias=True)
    head.weight.data.zero_()
    head.bias.data.zero_()
    head.bias.data[ord("a")] = 10.0
    pol.model.lm_head = head
    assert pol.generate(["x"], max_new_tokens=4, temperature=0) == [["aaaa"]]
    head.bias.data[pol.tokenizer.eos_token_id] = 20.0
    assert pol.generate(["x", "longer prompt"], max_new_tokens=4, temperature=0) == [[""], [""]]


def test_progress_bar(policy, capsys):
    policy.generate(PROMPTS, max_new_tokens=2, temperature=0, batch_size=2, progress=True)
    assert "generate (tiny-llama)" in capsys.readouterr().err


def test_generate_rejects_bad_input(policy):
    with pytest.raises(TypeError):
        policy.generate("a single string")
    with pytest.raises(ValueError):
        policy.generate(["x"], temperature=-1)
    with pytest.raises(ValueError):
        policy.generate(["x"], do_sample=False, num_return_sequences=2)


def test_logprobs_chain_rule_and_batching(policy):
    p, r1, r2 = PROMPTS[1], " first part,", " second part"
    whole = policy.logprobs([p], [r1 + r2])[0]
    parts = policy.logprobs([p, p + r1], [r1, r2])
    # byte tokens: log p(r1 r2 | p) = log p(r1 | p) + log p(r2 | p r1)
    assert whole == pytest.approx(parts[0] + parts[1], abs=1e-4)
    assert whole < parts[0] < 0
    single = [policy.logprobs([q], [" ok"])[0] for q in PROMPTS]
    assert policy.logprobs(PROMPTS, [" ok"] * 3, batch_size=2) == pytest.approx(single, abs=1e-4)
    assert policy.logprobs(["x"], [""]) == [0.0]
    with pytest.raises(ValueError):
        policy.logprobs(["a", "b"], ["c"])


def test_load_policy_from_local_folder(policy, tmp_path):
    folder = tmp_path / "my-policy"
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    loaded = load_policy(str(folder), dtype="float32", device="cpu")
    assert loaded.name == "my-policy" and loaded.tokenizer.padding_side == "left"
    kw = dict(max_new_tokens=6, temperature=0)
    assert loaded.generate(PROMPTS, **kw) == policy.generate(PROMPTS, **kw)
    bf16 = load_policy(folder, dtype="bf16")
    assert bf16.model.dtype == torch.bfloat16


def test_weights_fingerprint_tells_trained_weights_apart(policy):
    """Equal weights give the same 16-digit digest (another instance, another seed's model copied over); any change to
    one tensor changes it."""
    fp = weights_fingerprint(policy.model)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    twin = tiny_llama(seed=1)
    assert weights_fingerprint(twin.model) != fp
    twin.model.load_state_dict(policy.model.state_dict())
    assert weights_fingerprint(twin.model) == fp
    with torch.no_grad():
        next(twin.model.parameters())[0, 0] += 1.0
    assert weights_fingerprint(twin.model) != fp


def test_registry_and_errors(tmp_path):
    assert {"smollm2-135m", "tiny-llama"} <= set(list_policies())
    assert isinstance(load_policy("tiny-llama"), Policy)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("tiny-llama", lambda **kw: tiny_llama(**kw))
    try:
        register_policy("test-tiny-wide", lambda **kw: tiny_llama(hidden_size=64, **kw))
        assert load_policy("test-tiny-wide").model.config.hidden_size == 64
        register_policy("test-tiny-wide", lambda **kw: tiny_llama(hidden_size=16, **kw), override=True)
        assert load_policy("test-tiny-wide").model.config.hidden_size == 16
    finally:
        presets.POLICIES.unregister("test-tiny-wide")
    with pytest.raises(OSError, match="Registered presets"):
        load_policy(str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8")
    with pytest.raises(TypeError):
        load_policy(42)


@pytest.fixture(scope="session")
def smollm2():
    """The real preset, through the real (persistent) cache, so the suite converts the GGUF at most once."""
    return load_policy("smollm2-135m")


@pytest.mark.slow
def test_smollm2_preset_generates_english_and_reuses_cache(smollm2, monkeypatch):
    folder = presets.smollm2_folder(convert=False)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not list(folder.parent.glob(folder.name + ".tmp-*")), "no half-written temp folder is left behind"
    tok = smollm2.tokenizer
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert smollm2.model.dtype == torch.float32

    prompt = format_prompt("What is the capital of France?")
    (text,), = smollm2.generate([prompt], max_new_tokens=12, temperature=0)
    assert text.strip(), "empty response"
    assert "Paris" in text
    assert re.fullmatch(r"[\x20-\x7e\n]+", text), f"not plain English text: {text!r}"

    # A second load must come from the cached folder, never convert again.
    def _no_convert(*a, **k):
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(presets, "_convert_gguf", _no_convert)
    again = load_policy("smollm2-135m")
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, smollm2.model(ids).logits)
