"""OpenAI-compatible backend against a real scripted HTTP server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from openai_test_server import ScriptedOpenAIServer  # noqa: E402

from alpaca_farm_env.annotators import make_annotator  # noqa: E402
from alpaca_farm_env.annotators.configs import alpaca_eval_configs_dir, load_member_configs  # noqa: E402
from alpaca_farm_env.annotators.openai_backend import (  # noqa: E402
    AnnotatorAPIError, OpenAIPool, _SlidingWindowLimiter, fill_template, prompt_to_chatml, regex_parse,
)

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-SECRET-0123456789"


def rows(n: int, tag: str = "", with_input_every: int = 3):
    """Rows whose outputs carry distinct scores, so the server's judgement is known: higher score wins."""
    ins = [f"Question {tag}{i}?" for i in range(n)]
    inp = [f"context {i}" if with_input_every and i % with_input_every == 0 else "" for i in range(n)]
    o1 = [f"first answer [[s={(i * 7) % 11}]]" for i in range(n)]
    o2 = [f"second answer [[s={(i * 5 + 3) % 11 if (i * 5 + 3) % 11 != (i * 7) % 11 else 20}]]" for i in range(n)]
    expected = [2.0 if _s(b) > _s(a) else 1.0 for a, b in zip(o1, o2)]
    return (ins, inp, o1, o2), expected


def _s(text: str) -> int:
    return int(text.split("[[s=")[1].split("]]")[0])


def pool(srv, member="gpt4_4", **kw):
    kw.setdefault("cache_path", ":memory:")
    kw.setdefault("api_key", KEY)
    kw.setdefault("model", "test-model")
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("show_progress", False)
    return OpenAIPool("alpaca_farm", members=[member], base_url=srv.url, **kw)


def literal(rx: str) -> str:
    return rx.replace("(?:^|\\n)", "").replace(" ?", "").replace("\\(", "(").replace("\\)", ")").replace("\\n", "\n")


# ---------------------------------------------------------------- configs, prompts, parser


def test_builtin_configs_read_from_installed_alpaca_eval():
    cfgs = load_member_configs("alpaca_farm")
    assert len(cfgs) == 13
    assert sum(n.startswith("gpt4_") for n in cfgs) == 5 and sum(n.startswith("davinci003") for n in cfgs) == 4
    assert {c.batch_size for c in cfgs.values()} == {1, 4, 5}
    assert all(c.is_chat == c.original_model_name.startswith("gpt") for c in cfgs.values())
    root = alpaca_eval_configs_dir()
    assert all(Path(c.prompt_template_path).is_relative_to(root) for c in cfgs.values())
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout
    assert "without_inputs.txt" not in tracked  # prompt files are never copied into the project
    g = load_member_configs("alpaca_farm_greedy_gpt4")["alpaca_farm_greedy_gpt4"]
    assert g.completions_kwargs["temperature"] == 0 and g.batch_size == 5
    ov = load_member_configs("alpaca_farm", model_overrides={"gpt-4-0314": "gpt-4o", "chatgpt_1": "local"}, model="x")
    assert ov["gpt4_2"].model_name == "gpt-4o" and ov["chatgpt_1"].model_name == "local" and ov["davinci003_1"].model_name == "x"
    assert ov["gpt4_2"].config_hash() != cfgs["gpt4_2"].config_hash()  # model is part of the cache key


def test_template_fill_chatml_and_regex_parser():
    t = "A {instruction} {output_1} {output_2} B {instruction} {output_1} {output_2}"
    ex = [dict(instruction="i1 {output_2}", output_1="a1", output_2="b1"), dict(instruction="i2", output_1="a2", output_2="b2")]
    assert fill_template(t, ex) == "A i1 {output_2} a1 b1 B i2 a2 b2"  # example text never re-substituted
    msgs = prompt_to_chatml("<|im_start|>system\nS\n<|im_end|>\n<|im_start|>system name=example_user\nU\n<|im_end|>\n"
                            "<|im_start|>user\nQ\n<|im_end|>")
    assert msgs == [{"role": "system", "content": "S"}, {"role": "system", "name": "example_user", "content": "U"},
                    {"role": "user", "content": "Q"}]
    # examples from alpaca_eval completion_parsers.regex_parser's docstring
    assert regex_parse("\n(b)\n\n### Best output for example 8:\n(a)\n\n### x:\n(b)", {1: r"\n\(a\)", 2: r"\n\(b\)"}) == [2, 1, 2]
    assert regex_parse(' (a)', {1: r" \(a\)", 2: r" \(b\)"}) == [1]


# ---------------------------------------------------------------- end to end


def test_batching_padding_and_input_folding():
    (ins, inp, o1, o2), expected = rows(8, "p", with_input_every=4)  # 2 with input, 6 without; batch_size 5
    with ScriptedOpenAIServer(answers_per_request=5) as srv:
        p = pool(srv, member="gpt4_3")
        anns = p.compare(ins, inp, o1, o2)
        assert [a.preference for a in anns] == expected
        log = srv.log
    assert len(log) == 3  # without input: 5 + (1 + 4 pads); with input: 2 + 3 pads
    pads = sorted(r["prompt"].count("Solve: 1+1=") for r in log)
    assert pads == [0, 0, 4]  # the no-input dummy "Solve: 1+1=" pads only the no-input batch
    with_input = [r for r in log if "context" in r["prompt"]]
    assert len(with_input) == 1 and with_input[0]["prompt"].count("Solve:\n\n1+1=") == 3
    assert "Question p0?\n\ncontext 0" in with_input[0]["prompt"]  # input folded into the instruction
    assert all(r["path"] == "chat" and r["model"] == "test-model" for r in log)
    assert all(a.extra["n_padding"] in (0, 3, 4) for a in anns)


def test_full_13_member_noisy_pool_end_to_end(tmp_path):
    cfgs = load_member_configs("alpaca_farm")
    models = {n: f"model-{n}" for n in cfgs}
    by_model = {f"model-{n}": c for n, c in cfgs.items()}

    def formatter(model, choices):
        c = by_model[model]
        lit = {"a": literal(c.outputs_to_match[1.0]), "b": literal(c.outputs_to_match[2.0])}
        return "".join("\n" + lit[x] for x in choices)

    (ins, inp, o1, o2), expected = rows(300, "full")
    with ScriptedOpenAIServer(answers_per_request=lambda m: by_model[m].batch_size, formatter=formatter) as srv:
        p = make_annotator("alpaca_farm_pool_noisy", base_url=srv.url, api_key=KEY, model_overrides=models,
                           cache_path=tmp_path / "c.sqlite", show_progress=False, backoff_base=0.01)
        anns = p.compare(ins, inp, o1, o2)
        paths = {r["model"]: r["path"] for r in srv.log}
    assert p.p_label_flip == 0.25 and len(p.members) == 13
    noisy = sum(a.is_noisy_label for a in anns)
    assert 0.38 * 300 < noisy < 0.62 * 300  # ~50% replaced and never sent
    assert p.last_stats["queried"] == 300 - noisy and p.last_stats.get("unlabeled", 0) == 0
    assert all(a.preference == e for a, e in zip(anns, expected) if not a.is_noisy_label)  # parsed + un-swapped
    assert len({a.annotator for a in anns if not a.is_noisy_label}) == 13
    assert all(paths[f"model-{n}"] == ("chat" if c.is_chat else "text") for n, c in cfgs.items() if f"model-{n}" in paths)
    assert p.cache.count() == 300 - noisy  # noisy rows never cached


def test_transient_faults_are_retried_nothing_lost_or_billed_twice():
    (ins, inp, o1, o2), expected = rows(6, "t")
    faults = ["429", "429s", "500", "503", "drop", "slow"]
    with ScriptedOpenAIServer(faults=faults, slow_seconds=2.5) as srv:
        p = pool(srv, max_concurrency=1, request_timeout=0.8, price_table={"test-model": (1e6, 2e6)})
        anns = p.compare(ins, inp, o1, o2)
        answered = dict(srv.answered)
    st = p.backend.stats
    assert [a.preference for a in anns] == expected
    assert st["rate_limited"] == 2 and st["server_errors"] == 2 and st["timeouts"] == 1
    assert st["connection_errors"] >= 1 and st["retries"] == 6 and st.get("failed_requests", 0) == 0
    sleeps = p.backend.retry_sleeps
    assert any(0.15 <= s <= 0.165 for s in sleeps) and any(1.0 <= s <= 1.1 for s in sleeps)  # Retry-After honoured
    assert sorted(answered.values()) == [1] * 6  # each example answered (billed) exactly once
    assert p.cache.n_requests() == 6 and abs(sum(a.cost for a in anns) - p.cache.total_cost()) < 1e-9


@pytest.mark.parametrize("fault", ["401", "404"])
def test_auth_and_model_errors_fail_fast_and_never_leak_the_key(fault, tmp_path, caplog):
    (ins, inp, o1, o2), _ = rows(4, "f", with_input_every=0)
    caplog.set_level(logging.DEBUG)
    kw = {"api_key": "wrong-" + KEY} if fault == "401" else {"model": None}  # 404: the retired original model
    with ScriptedOpenAIServer(api_key=KEY, known_models={"test-model"}) as srv:
        p = pool(srv, cache_path=tmp_path / "c.sqlite", max_concurrency=1, **kw)
        with pytest.raises(AnnotatorAPIError) as ei:
            p.compare(ins, inp, o1, o2)
        n_requests = srv.count()
    msg = str(ei.value)
    assert n_requests == 1  # no retries on a permanent error
    model = "test-model" if fault == "401" else "gpt-4-0314"
    assert model in msg and "gpt4_4" in msg and "configs.yaml" in msg
    if fault == "404":
        assert "retired" in msg and "model_overrides" in msg
    everything = msg + caplog.text + (tmp_path / "c.sqlite").read_bytes().decode("latin-1") + repr(p)
    assert KEY not in everything


def test_garbage_and_wrong_count_leave_whole_batch_unlabeled():
    (ins, inp, o1, o2), expected = rows(10, "g", with_input_every=0)  # 10 rows, batch 5 -> 2 requests
    with ScriptedOpenAIServer(answers_per_request=5, faults=["garbage", "wrong_count"]) as srv:
        p = pool(srv, member="gpt4_3")
        anns = p.compare(ins, inp, o1, o2)
        assert all(a.preference is None for a in anns)  # never guessed, not even the 4 of 5 that parsed
        assert p.backend.stats["unparseable_batches"] == 2 and p.last_stats["unlabeled"] == 10
        assert srv.count() == 2
        again = p.compare(ins, inp, o1, o2)  # unparseable answers were paid for: cached, not asked again
        assert srv.count() == 2 and all(a.from_cache and a.preference is None for a in again)
        retry = pool(srv, member="gpt4_3", retry_unlabeled=True, cache_path=p.cache.path)
        retry.backend.cache = p.cache
        assert [a.preference for a in retry.compare(ins, inp, o1, o2)] == expected and srv.count() == 4


def test_exhausted_retries_are_not_cached_and_asked_next_run():
    (ins, inp, o1, o2), expected = rows(1, "x", with_input_every=0)
    with ScriptedOpenAIServer(faults=["500", "503", "500"]) as srv:
        p = pool(srv, max_retries=2)
        assert p.compare(ins, inp, o1, o2)[0].preference is None and p.backend.stats["failed_requests"] == 1
        assert p.cache.count() == 0
        assert [a.preference for a in p.compare(ins, inp, o1, o2)] == expected and srv.count() == 4


def test_cache_and_cost_accounting(tmp_path):
    (ins, inp, o1, o2), expected = rows(5, "c")
    with ScriptedOpenAIServer() as srv:
        p = pool(srv, cache_path=tmp_path / "c.sqlite", price_table={"test-model": (3.0, 5.0)})
        anns = p.compare(ins, inp, o1, o2)
        billed = sum((len(r["prompt"]) // 4) * 3e-6 for r in srv.log)  # prompt tokens as the server counts them
        assert billed > 0 and sum(a.cost for a in anns) > billed  # + completion tokens at 5 USD/M
        p2 = pool(srv, cache_path=tmp_path / "c.sqlite")  # a new process-equivalent reading the same file
        again = p2.compare(ins, inp, o1, o2)
        assert srv.count() == 5 and all(a.from_cache and a.cost == 0 for a in again)
        assert [a.preference for a in again] == expected
        assert abs(sum(a.extra["original_cost"] for a in again) - sum(a.cost for a in anns)) < 1e-12


def test_bounded_concurrency():
    (ins, inp, o1, o2), expected = rows(8, "k")
    with ScriptedOpenAIServer(delay_s=0.15) as srv:
        p = pool(srv, max_concurrency=2)
        assert [a.preference for a in p.compare(ins, inp, o1, o2)] == expected
        assert srv.max_in_flight == 2


def test_rate_limiter_blocks_past_rpm_and_tpm():
    async def run(lim, tokens, n):
        lock = asyncio.Lock()
        for _ in range(n):
            await lim.acquire(tokens, lock)

    asyncio.run(run(_SlidingWindowLimiter(rpm=3, tpm=None), 1, 3))  # within budget: returns
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(asyncio.wait_for(run(_SlidingWindowLimiter(rpm=3, tpm=None), 1, 4), 0.3))
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(asyncio.wait_for(run(_SlidingWindowLimiter(rpm=None, tpm=1000), 400, 3), 0.3))


# ---------------------------------------------------------------- kill and resume

CHILD = r"""
import sys
from alpaca_farm_env.annotators.openai_backend import OpenAIPool
url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = OpenAIPool("alpaca_farm", members=["gpt4_4"], base_url=url, api_key="k", model="test-model", cache_path=cache,
               max_concurrency=1, show_progress=False)
ins = [f"Question kill{i}?" for i in range(n)]
p.compare(ins, [""] * n, [f"a [[s={i % 7}]]" for i in range(n)], [f"b [[s={7 + i % 3}]]" for i in range(n)])
print("finished")
"""


def test_killed_run_resumes_sending_only_missing_items(tmp_path):
    n, k = 10, 4
    cache = tmp_path / "c.sqlite"
    with ScriptedOpenAIServer(faults=["ok"] * k + ["hang"] * 10) as srv:
        child = subprocess.Popen([sys.executable, "-c", CHILD, srv.url, str(cache), str(n)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if cache.exists() and srv.count(fault="hang") >= 1:
                    with sqlite3.connect(cache) as c:
                        if c.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] >= k:
                            break
                assert child.poll() is None, child.communicate()
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == -signal.SIGKILL
        with sqlite3.connect(cache) as c:
            assert c.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == k  # each result written on arrival
        first_run = srv.count()
        srv.faults.clear()
        p = OpenAIPool("alpaca_farm", members=["gpt4_4"], base_url=srv.url, api_key="k", model="test-model",
                       cache_path=cache, show_progress=False)
        ins = [f"Question kill{i}?" for i in range(n)]
        anns = p.compare(ins, [""] * n, [f"a [[s={i % 7}]]" for i in range(n)], [f"b [[s={7 + i % 3}]]" for i in range(n)])
        resumed = srv.count() - first_run
        answered = dict(srv.answered)
    assert resumed == n - k  # only the missing items are sent
    assert sum(a.from_cache for a in anns) == k and all(a.preference == 2.0 for a in anns)
    assert sorted(answered.values()) == [1] * n  # nothing answered (billed) twice across the two runs
    assert p.cache.n_requests() == n
