"""Texts UTF-8 cannot encode, and input files that are not UTF-8.

A lone surrogate (what ``errors="surrogateescape"`` decoding or a JSON escape such as ``"\\ud800"`` produces) is judged
by every registered annotator exactly like the same text with U+FFFD in its place; the hashing helpers, the envs'
step and the reward-model backend take it too. A preset, a data file or an annotator config that is not UTF-8 is a
user error: one line naming the file and the byte offset, exit code 2.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import gymnasium as gym
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from openai_test_server import ScriptedOpenAIServer  # noqa: E402

from alpaca_farm_env.annotators import ANNOTATORS, RewardContext, list_annotators, make_annotator  # noqa: E402
from alpaca_farm_env.annotators.configs import load_member_configs  # noqa: E402
from alpaca_farm_env.annotators.openai_backend import OpenAIPool  # noqa: E402
from alpaca_farm_env.cli import main  # noqa: E402
from alpaca_farm_env.errors import AlpacaFarmError  # noqa: E402
from alpaca_farm_env.utils import digest, stable_hash  # noqa: E402

KEY = "sk-test-unicode"
FFFD = "\ufffd"

# Lone surrogates at the start, middle and end of texts, in every column. The outputs carry the scripted server's
# score markers, so the API-backed annotators get a definite answer. The fourth pair holds a high + low surrogate
# pair, which is the character it encodes: three of them are shorter than "smile", so even ``longer`` judges them
# differently from six lone code points. The last pair differs only by a surrogate against U+FFFD: cleaned, its
# outputs are identical.
INSTRUCTIONS = ["Name a caf\udce9 in Paris.", "\ud800Translate the word.", "Spell it", "Smile", "Repeat after me"]
INPUTS = ["", "caf\udce9", "na\udcefve\udbff", "", ""]
OUTPUTS_1 = ["Le caf\udce9 de Flore [[s=3]]", "coffee [[s=1]]", "\udc80n-a-i-v-e [[s=4]]", "\ud83d\ude00" * 3 + " [[s=1]]",
             "x\udce9 [[s=2]]"]
OUTPUTS_2 = ["Les Deux Magots, a caf\udce9 on the left bank [[s=5]]", "caf\udce9\ud800 [[s=2]]", "naive [[s=0]]",
             "smile [[s=3]]", "x" + FFFD + " [[s=2]]"]
_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _replaced(texts: list[str]) -> list[str]:
    """The texts as the documented rule reads them, written out independently of the package: a high + low surrogate
    pair is the character it encodes, every other surrogate U+FFFD."""
    def joined(m: re.Match) -> str:
        hi, lo = (ord(c) for c in m.group(0))
        return chr(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))

    return ["".join(FFFD if 0xD800 <= ord(c) <= 0xDFFF else c for c in _PAIR.sub(joined, t)) for t in texts]


def _literal(rx: str) -> str:
    """An answer text matching one of alpaca_eval's ``outputs_to_match`` patterns."""
    return rx.replace("(?:^|\\n)", "").replace(" ?", "").replace("\\(", "(").replace("\\)", ")").replace("\\n", "\n")


def _is_api_pool(name: str) -> bool:
    target = ANNOTATORS.resolve(name)
    return isinstance(target, type) and issubclass(target, OpenAIPool)


def _comparable(a) -> tuple:
    extra = {k: v for k, v in a.extra.items() if k not in ("request_id", "model")}
    return a.preference, a.probability, a.annotator, a.is_noisy_label, extra


def _compare_over_api(name: str, columns: tuple[list[str], ...]) -> tuple[list, list[str]]:
    """``compare`` of an OpenAI-compatible annotator against a real HTTP server on 127.0.0.1 (no network): each
    member gets its own model name, answered in its own format with as many answers as its batch size."""
    with ScriptedOpenAIServer() as probe_srv:
        probe = make_annotator(name, base_url=probe_srv.url, api_key=KEY, cache_path=":memory:", show_progress=False)
    configs = {m.name: m.config for m in probe.members.values()}
    by_model = {f"model-{n}": c for n, c in configs.items()}

    def formatter(model, choices):
        c = by_model[model]
        lit = {"a": _literal(c.outputs_to_match[1.0]), "b": _literal(c.outputs_to_match[2.0])}
        return "".join("\n" + lit[x] for x in choices)

    with ScriptedOpenAIServer(answers_per_request=lambda m: by_model[m].batch_size, formatter=formatter) as srv:
        ann = make_annotator(name, base_url=srv.url, api_key=KEY, cache_path=":memory:", show_progress=False,
                             backoff_base=0.01, model_overrides={n: f"model-{n}" for n in configs})
        anns = ann.compare(*columns, seed=0)
        prompts = sorted(r["prompt"] for r in srv.log)
    return anns, prompts


# the package's own annotators (other test modules register stateful ones in the same registry)
PACKAGE_ANNOTATORS = [n for n in list_annotators()
                      if getattr(ANNOTATORS.resolve(n), "__module__", "").startswith("alpaca_farm_env")]


@pytest.mark.parametrize("name", PACKAGE_ANNOTATORS)
def test_every_annotator_judges_a_lone_surrogate_as_the_replacement_character(name, data_dir):
    raw = (INSTRUCTIONS, INPUTS, OUTPUTS_1, OUTPUTS_2)
    replaced = tuple(_replaced(col) for col in raw)
    assert all(not any(0xD800 <= ord(c) <= 0xDFFF for t in col for c in t) for col in replaced)
    if _is_api_pool(name):
        got, prompts = _compare_over_api(name, raw)
        want, want_prompts = _compare_over_api(name, replaced)
        assert prompts == want_prompts and prompts, "the server must see the same requests"
        assert any(FFFD in p for p in prompts)
        assert not any(0xD800 <= ord(c) <= 0xDFFF for p in prompts for c in p), "no surrogate reaches the server"
        assert all(a.preference is not None for a in got), [a.extra for a in got]
    else:
        ann = make_annotator(name, context=RewardContext.of(data_dir))
        got = ann.compare(*raw, seed=0)
        want = ann.compare(*replaced, seed=0)
    assert len(got) == len(INSTRUCTIONS)
    assert [_comparable(a) for a in got] == [_comparable(a) for a in want]
    assert got[-1].preference == 1.5, "outputs that differ only by a surrogate against U+FFFD are a draw"
    if name == "longer":
        assert got[3].preference == 2.0


def test_a_pool_member_called_directly_cleans_its_rows(data_dir):
    judge = make_annotator("distilled_gpt4", context=RewardContext.of(data_dir))
    rows = [{"instruction": i, "input": x, "output_1": a, "output_2": b}
            for i, x, a, b in zip(INSTRUCTIONS, INPUTS, OUTPUTS_1, OUTPUTS_2)]
    clean = [{k: _replaced([v])[0] for k, v in r.items()} for r in rows]
    assert [_comparable(a) for a in judge.annotate(rows)] == [_comparable(a) for a in judge.annotate(clean)]


def test_clean_text_rule():
    from alpaca_farm_env.utils import clean_text

    assert clean_text("caf\udce9") == "caf" + FFFD
    assert clean_text("\ud800x\udfff") == FFFD + "x" + FFFD
    assert clean_text("end\ud83d") == "end" + FFFD
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a high + low pair is the character it encodes
    assert clean_text("\ude00\ud83d") == FFFD * 2  # the wrong order is two lone surrogates
    text = "héllo wörld \U0001f600"
    assert clean_text(text) is text
    assert clean_text(None) is None and clean_text(3) == 3


def test_stable_hashing_takes_surrogates():
    assert stable_hash("caf\udce9", 1) == stable_hash("caf" + FFFD, 1)
    assert digest({"text": ["caf\udce9"]}) == digest({"text": ["caf" + FFFD]})
    assert stable_hash("café") != stable_hash("caf" + FFFD)


def test_env_step_and_reward_model_take_a_lone_surrogate(tmp_path, data_dir):
    env = gym.make("AlpacaFarm-v0", split="val", max_examples=2, shuffle=False,
                   reward="annotator", reward_kwargs={"annotator": "pooled"})
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("Le caf\udce9 de Flore\ud800")
    env.reset(seed=0)
    _, reward_clean, _, _, _ = env.step("Le caf" + FFFD + " de Flore" + FFFD)
    assert terminated and info["labeled"] and reward == reward_clean

    pair_env = gym.make("AlpacaFarmPairwise-v0", split="preference", max_examples=2, annotator="noisy_pooled")
    pair_env.reset(seed=0)
    _, _, terminated, _, info = pair_env.step(("caf\udce9", "a caf\ud800 in Paris"))
    assert terminated and info["preference"] in (1.0, 1.5, 2.0)

    from alpaca_farm_env.rewards import reward_model as rm

    r = rm.RewardModelReward(rm.tiny_reward_model(tmp_path / "tiny-rm", seed=0))
    assert r.score(["Q: "], ["caf\udce9"]) == r.score(["Q: "], ["caf" + FFFD])


# ------------------------------------------------------------------------------------------- files not UTF-8


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"alpaca-farm {argv[0]}: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_benchmark_preset_not_utf8_is_a_one_line_user_error(tmp_path, capsys):
    preset = tmp_path / "latin1.yaml"
    preset.write_bytes("name: café\n".encode("latin-1"))
    _one_line_error(capsys, ["benchmark", "--preset", str(preset), "--print-config"], str(preset), "not UTF-8",
                    "offset 9")


def test_evaluate_outputs_not_utf8_is_a_one_line_user_error(tmp_path, capsys):
    outputs = tmp_path / "outputs.json"
    outputs.write_bytes('[{"instruction": "café", "output": "x"}]'.encode("latin-1"))
    _one_line_error(capsys, ["evaluate", "--model-outputs", str(outputs), "--annotator", "longer", "--output-dir",
                             str(tmp_path / "out"), "--no-progress"], str(outputs), "not UTF-8", "offset 21")
    _one_line_error(capsys, ["evaluate", "--annotations", str(outputs)], str(outputs), "not UTF-8", "offset 21")


def test_evaluate_outputs_with_surrogate_escapes_are_judged_as_replacement_characters(tmp_path, capsys, data_dir):
    from alpaca_farm_env.data import load_eval_set

    rows = [{"instruction": e["instruction"], "input": e["input"], "output": f"caf\udce9 answer {i}\ud800"}
            for i, e in enumerate(load_eval_set()[:3])]
    results = {}
    for tag, text in (("escaped", json.dumps(rows)), ("replaced", json.dumps(rows).replace("\\udce9", "\\ufffd")
                                                       .replace("\\ud800", "\\ufffd"))):
        path = tmp_path / f"{tag}.json"
        path.write_text(text, encoding="utf-8")
        assert main(["evaluate", "--model-outputs", str(path), "--annotator", "longer", "--output-dir",
                     str(tmp_path / tag), "--json", "--no-progress"]) == 0, capsys.readouterr().err
        res = json.loads(capsys.readouterr().out)
        annotations = json.loads(Path(res["annotations_path"]).read_text(encoding="utf-8"))
        results[tag] = [(a["output_2"], a["preference"], a["probability"]) for a in annotations]
    assert results["escaped"] == results["replaced"]
    assert all(o.endswith(FFFD) for o, _, _ in results["escaped"])


def test_annotator_config_not_utf8_is_a_user_error(tmp_path):
    cfg = tmp_path / "configs.yaml"
    cfg.write_bytes("member:\n  prompt_template: café.txt\n".encode("latin-1"))
    with pytest.raises(AlpacaFarmError, match=r"configs\.yaml: not UTF-8 text: byte 0xe9 at offset 30"):
        load_member_configs(cfg)
