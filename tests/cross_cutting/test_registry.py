"""All registry forms: name, "module:attr", class, plain function, instance, entry point; errors."""
import sys
import textwrap

import pytest

from alpaca_farm_env.agents import list_agents
from alpaca_farm_env.annotators import Annotation, list_annotators, make_annotator, register_annotator
from alpaca_farm_env.registry import UnknownSpecError
from alpaca_farm_env.rewards import (
    REWARDS,
    BaseReward,
    FunctionReward,
    as_trl_reward_func,
    list_rewards,
    make_reward,
    register_reward,
)

PROMPTS = ["p1", "p2"]
RESPONSES = ["short", "a much longer response"]


class Constant(BaseReward):
    name = "constant"

    def __init__(self, value: float = 1.0):
        self.value = value

    def score(self, prompts, responses, **row):
        return [self.value] * len(responses)


def word_count(prompts, responses, **row):
    return [len(r.split()) for r in responses]


def test_builtin_name_and_kwargs():
    assert "length" in list_rewards()
    r = make_reward("length", unit="words")
    assert r.score(PROMPTS, RESPONSES) == [1.0, 4.0]
    with pytest.raises(ValueError, match="unit must be"):
        make_reward("length", unit="tokens")


def test_module_attr_class_function_instance():
    assert make_reward("test_registry:Constant", value=2.0).score(PROMPTS, RESPONSES) == [2.0, 2.0]
    assert make_reward(Constant, value=3.0).score(PROMPTS, RESPONSES) == [3.0, 3.0]
    fn = make_reward(word_count)
    assert isinstance(fn, FunctionReward) and fn.score(PROMPTS, RESPONSES) == [1.0, 4.0]
    assert make_reward("test_registry:word_count").score(PROMPTS, RESPONSES) == [1.0, 4.0]
    inst = Constant(5.0)
    assert make_reward(inst) is inst
    with pytest.raises(TypeError, match="keyword arguments"):
        make_reward(inst, value=1.0)


def test_function_with_wrong_length_is_rejected():
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        make_reward(lambda p, r, **k: [0.0]).score(PROMPTS, RESPONSES)


def test_register_decorator_duplicate_and_override():
    @register_reward("test-constant")
    class C1(Constant):
        pass

    try:
        with pytest.raises(ValueError, match="already registered"):

            @register_reward("test-constant")
            class C2(Constant):
                pass

        @register_reward("test-constant", override=True)
        class C3(Constant):
            def score(self, prompts, responses, **row):
                return [7.0] * len(responses)

        assert make_reward("test-constant").score(PROMPTS, RESPONSES) == [7.0, 7.0]
    finally:
        REWARDS.unregister("test-constant")


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownSpecError) as e:
        make_reward("no-such-reward")
    msg = str(e.value)
    assert "unknown reward backend 'no-such-reward'" in msg and "length" in msg
    with pytest.raises(UnknownSpecError, match="cannot import module"):
        make_reward("no_such_module_xyz:thing")
    with pytest.raises(UnknownSpecError, match="has no attribute"):
        make_reward("test_registry:missing_attr")


@pytest.fixture
def plugin_distribution(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) that publishes entry points, as `pip install` makes."""
    (tmp_path / "my_rewards_plugin.py").write_text(
        textwrap.dedent(
            """
            class Shouty:
                name = "shouty"
                def score(self, prompts, responses, **row):
                    return [float(r.count("!")) for r in responses]

            def prefer_second(instructions, inputs, outputs_1, outputs_2, seed=0):
                return [2 for _ in outputs_1]
            """
        )
    )
    dist = tmp_path / "my_rewards_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-rewards-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[alpaca_farm_env.rewards]\nshouty = my_rewards_plugin:Shouty\n\n"
        "[alpaca_farm_env.annotators]\nsecond = my_rewards_plugin:prefer_second\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("my_rewards_plugin", None)


def test_entry_point_plugins(plugin_distribution):
    assert "shouty" in list_rewards()
    assert make_reward("shouty").score(PROMPTS, ["hi!", "hey!!!"]) == [1.0, 3.0]
    assert "second" in list_annotators()
    ann = make_annotator("second").compare(["i"], [""], ["a"], ["b"])
    assert isinstance(ann[0], Annotation) and ann[0].preference == 2.0


def test_registered_name_wins_over_entry_point(plugin_distribution):
    register_reward("shouty", Constant)
    try:
        assert make_reward("shouty").score(PROMPTS, RESPONSES) == [1.0, 1.0]
    finally:
        REWARDS.unregister("shouty")


def test_annotator_registry_forms():
    assert "longer" in list_annotators()
    a = make_annotator("longer").compare(["i", "i"], ["", ""], ["aa", "b"], ["a", "bb"])
    assert [x.preference for x in a] == [1.0, 2.0]

    @register_annotator("test-always-one")
    def always_one(instructions, inputs, outputs_1, outputs_2, seed=0):
        return [1] * len(outputs_1)

    try:
        assert [x.preference for x in make_annotator("test-always-one").compare(["i"], [""], ["x"], ["y"])] == [1.0]
    finally:
        from alpaca_farm_env.annotators import ANNOTATORS

        ANNOTATORS.unregister("test-always-one")
    with pytest.raises(UnknownSpecError, match="unknown annotator"):
        make_annotator("nope")


def test_list_functions_exist():
    assert isinstance(list_agents(), list)


def test_trl_reward_adapter_plain_and_conversational():
    f = as_trl_reward_func("length", unit="words")
    assert f(prompts=["p", "q"], completions=["one two", "x"]) == [2.0, 1.0]
    conv = [[{"role": "assistant", "content": "a b c"}], [{"role": "assistant", "content": "d"}]]
    assert f(prompts=[[{"role": "user", "content": "p"}]] * 2, completions=conv, extra=[1, 2]) == [3.0, 1.0]
    seen = {}

    def spy(prompts, responses, **row):
        seen.update(row)
        return [0.0] * len(responses)

    as_trl_reward_func(spy)(prompts=["p"], completions=["c"], reference_output=["r"], trainer_state=object())
    assert seen == {"reference_output": ["r"]}


def test_context_reaches_only_the_classes_that_declare_it(data_dir):
    """``make_reward`` / ``make_annotator`` / the identities pass ``context=`` by declared capability, never by
    signature: a class that takes ``data_dir`` but does not declare ``uses_context`` gets nothing."""
    from alpaca_farm_env.annotators import USES_CONTEXT, RewardContext, annotator_identity

    class Declares:
        name = "declares"
        capabilities = frozenset({USES_CONTEXT})

        def __init__(self, context=None):
            self.context = context

        def compare(self, instructions, inputs, outputs_1, outputs_2, *, seed=0):
            return [Annotation(preference=1.5) for _ in outputs_1]

    class Silent(Declares):
        capabilities = frozenset()

        def __init__(self, data_dir=None):
            self.data_dir = data_dir

    ctx = RewardContext.of(data_dir, "eval")
    assert make_annotator(Declares, context=ctx).context is ctx
    assert make_annotator(Silent, context=ctx).data_dir is None
    assert make_reward("length", context=ctx).unit == "chars"  # length declares nothing and takes no context
    reward = make_reward("annotator", context=ctx, annotator=Declares)
    assert reward.annotator.context is ctx
    # the fallback identity of a context-aware annotator counts the data dir it reads; other annotators' do not
    assert annotator_identity(Declares, context=ctx) != annotator_identity(Declares)
    assert annotator_identity(Silent, context=ctx) == annotator_identity(Silent)
    # the distilled judge named by its context is the judge named by data_dir
    assert annotator_identity("pooled", context=ctx) == annotator_identity("pooled", data_dir=data_dir)
