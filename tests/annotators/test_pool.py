"""AlpacaFarm pool semantics (issue 3, item 2), checked with counts on real deterministic members."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from alpaca_farm_env.annotators import Annotation, make_annotator
from alpaca_farm_env.annotators.pool import AnnotatorMember, AnnotatorPool, PoolMember


class RecordingLonger:
    """A real member: "longer output wins" on the rows as presented; records every row it is sent."""

    def __init__(self, name: str):
        self.name = name
        self.seen: list[dict] = []

    def annotate(self, rows):
        self.seen.extend(rows)
        out = []
        for r in rows:
            l1, l2 = len(r["output_1"]), len(r["output_2"])
            pref = 1.5 if l1 == l2 else (2.0 if l2 > l1 else 1.0)
            out.append(Annotation(preference=pref, probability=pref - 1.0))
        return out


class FirstPosition:
    """A maximally position-biased member: always prefers the output shown first."""

    name = "first"

    def annotate(self, rows):
        return [Annotation(preference=1.0, probability=0.0) for _ in rows]


def make_rows(n: int, tag: str = ""):
    ins = [f"Instruction {tag}{i}: describe item {i * 7919 % 1000}" for i in range(n)]
    inp = ["" if i % 3 else f"context {i}" for i in range(n)]
    # lengths differ in both directions so the noise-free label is 1 or 2 at about equal rates
    o1 = ["a" * (5 + (i * 37) % 50) for i in range(n)]
    o2 = ["b" * (5 + (i * 53 + 11) % 50) for i in range(n)]
    o2 = [b if len(a) != len(b) else b + "b" for a, b in zip(o1, o2)]
    return ins, inp, o1, o2


def test_member_protocol_and_adapter():
    m = AnnotatorMember(make_annotator("longer"), name="longer_a")
    assert isinstance(m, PoolMember) and isinstance(RecordingLonger("x"), PoolMember)
    anns = m.annotate([{"instruction": "i", "input": "", "output_1": "aa", "output_2": "a"}])
    assert anns[0].preference == 1.0 and anns[0].annotator == "longer_a"


def test_noise_rate_and_noisy_rows_never_queried():
    n = 2000
    ins, inp, o1, o2 = make_rows(n)
    clean_members = [RecordingLonger(f"m{i}") for i in range(3)]
    noisy_members = [RecordingLonger(f"m{i}") for i in range(3)]
    clean = AnnotatorPool(clean_members, p_label_flip=None).compare(ins, inp, o1, o2)
    noisy_pool = AnnotatorPool(noisy_members, p_label_flip=0.25)
    noisy = noisy_pool.compare(ins, inp, o1, o2)

    truth = [2.0 if len(b) > len(a) else 1.0 for a, b in zip(o1, o2)]
    assert [a.preference for a in clean] == truth  # swaps undone exactly
    assert sum(len(m.seen) for m in clean_members) == n

    n_replaced = sum(a.is_noisy_label for a in noisy)
    n_differ = sum(a.preference != b.preference for a, b in zip(noisy, clean))
    n_queried = sum(len(m.seen) for m in noisy_members)
    # Binomial(2000, 0.5) sd = 22 rows, Binomial(2000, 0.25) sd = 19 rows: 4-5 sd tolerances
    assert 0.45 * n < n_replaced < 0.55 * n
    assert 0.21 * n < n_differ < 0.29 * n
    assert n_queried == n - n_replaced == noisy_pool.last_stats["queried"]
    assert noisy_pool.last_stats["noisy"] == n_replaced
    # a replaced row is a fair coin: 1 and 2 equally often; and no replaced row reached a member
    coin = Counter(a.preference for a in noisy if a.is_noisy_label)
    assert set(coin) == {1.0, 2.0} and abs(coin[1.0] - coin[2.0]) < 0.12 * n_replaced
    queried_ins = {r["instruction"] for m in noisy_members for r in m.seen}
    assert all((a.is_noisy_label) == (i not in queried_ins) for a, i in zip(noisy, ins))
    # kept rows are exactly the noise-free label, with the member's probability
    assert all(a.preference == b.preference and a.probability == b.probability
               for a, b in zip(noisy, clean) if not a.is_noisy_label)
    # a replaced row is a coin, not a judgment: no probability (P(second better) is only ever a judge's)
    assert all(a.probability is None for a in noisy if a.is_noisy_label)


def test_a_reward_on_probabilities_keeps_the_noisy_labels():
    from alpaca_farm_env.annotators import preference_score
    from alpaca_farm_env.rewards import make_reward

    ins, inp, refs, outs = make_rows(400, tag="r")
    pool = AnnotatorPool([RecordingLonger("m0")], p_label_flip=0.25)
    reward = make_reward("annotator", annotator=pool, use_probability=True)
    scores, infos = reward.score_with_info(ins, outs, instruction=ins, input=inp, reference_output=refs)
    noisy = [i for i, info in enumerate(infos) if info["is_noisy_label"]]
    assert 120 < len(noisy) < 280  # Binomial(400, 0.5)
    # the noisy rows score their coin (0 or 1), as a reward on preferences would; the rest the member's probability
    assert {scores[i] for i in noisy} == {0.0, 1.0}
    assert all(scores[i] == preference_score(Annotation(preference=infos[i]["preference"])) for i in noisy)


def test_member_assignment_uniform_and_stable_across_processes():
    n = 2600
    ins, inp, o1, o2 = make_rows(n, tag="u")
    members = [RecordingLonger(f"annotator_{i}") for i in range(13)]
    pool = AnnotatorPool(members)
    anns = pool.compare(ins, inp, o1, o2, seed=0)
    counts = Counter(a.annotator for a in anns)
    assert set(counts) == {m.name for m in members}
    # expected 200 each; chi-square with 12 dof: 99.9% quantile is 32.9
    chi2 = sum((c - n / 13) ** 2 / (n / 13) for c in counts.values())
    assert chi2 < 32.9, counts
    for m in members:  # each member was sent exactly the rows assigned to it
        assert len(m.seen) == counts[m.name]

    # same assignment in a fresh interpreter (no salted hash()); a different seed changes it
    code = (
        "import json,sys; from alpaca_farm_env.annotators.pool import AnnotatorPool\n"
        "class M:\n    def __init__(s,n): s.name=n\n    def annotate(s,r): return []\n"
        "p=AnnotatorPool([M(f'annotator_{i}') for i in range(13)])\n"
        "d=json.load(sys.stdin); print(json.dumps([p.assign_member(i,x,0) for i,x in zip(d[0],d[1])]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps([ins[:300], inp[:300]]), text=True,
                          capture_output=True, check=True, env={"PYTHONHASHSEED": "123", **_env()})
    assert json.loads(proc.stdout) == [a.annotator for a in anns[:300]]
    other = [pool.assign_member(i, x, seed=1) for i, x in zip(ins[:300], inp[:300])]
    assert sum(a != b.annotator for a, b in zip(other, anns[:300])) > 200  # ~12/13 change


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}


def test_output_order_randomised_and_undone():
    n = 1000
    ins, inp, o1, o2 = make_rows(n, tag="s")
    rec = RecordingLonger("rec")
    pool = AnnotatorPool([rec])
    pool.compare(ins, inp, o1, o2)
    by_ins = {r["instruction"]: r for r in rec.seen}
    switched = [by_ins[i]["output_1"] == b and by_ins[i]["output_2"] == a for i, a, b in zip(ins, o1, o2)]
    kept = [by_ins[i]["output_1"] == a and by_ins[i]["output_2"] == b for i, a, b in zip(ins, o1, o2)]
    assert all(s != k for s, k in zip(switched, kept))
    assert 0.44 * n < sum(switched) < 0.56 * n
    assert switched == [pool.is_switched(i, x) for i, x in zip(ins, inp)]

    # a member that always prefers the first shown output: after un-swapping, preference == 1 + switched
    biased = AnnotatorPool([FirstPosition()]).compare(ins, inp, o1, o2)
    assert [a.preference for a in biased] == [2.0 if s else 1.0 for s in switched]
    assert [a.probability for a in biased] == [1.0 if s else 0.0 for s in switched]
    assert [a.extra["is_switched_outputs"] for a in biased] == switched

    # with randomisation off the member sees the original order and its bias shows up unchanged
    flat = AnnotatorPool([FirstPosition()], is_randomize_output_order=False).compare(ins, inp, o1, o2)
    assert {a.preference for a in flat} == {1.0}


def test_identical_outputs_draw_and_duplicates_annotated_once():
    rec = RecordingLonger("rec")
    pool = AnnotatorPool([rec], p_label_flip=0.25)
    ins = [f"q{i}" for i in range(200)]
    same = pool.compare(ins, [""] * 200, ["same"] * 200, ["same"] * 200)
    assert {a.preference for a in same} == {1.5} and not any(a.is_noisy_label for a in same)
    assert rec.seen == [] and pool.last_stats["same_outputs"] == 200

    rec2 = RecordingLonger("rec2")
    pool2 = AnnotatorPool([rec2])
    base = (["x", "y", "z"], ["", "in", ""], ["short", "a longer one", "p"], ["a longer one", "short", "qq"])
    rows = [list(col) * 4 for col in base]  # every row 4 times
    anns = pool2.compare(*rows)
    assert len(anns) == 12 and len(rec2.seen) == 3
    assert [a.preference for a in anns] == [2.0, 1.0, 2.0] * 4
    assert pool2.last_stats["unique"] == 3 and sum(a.extra.get("is_duplicate", False) for a in anns) == 9


def test_unlabeled_passes_through_and_is_counted():
    class Unparseable:
        name = "garbage"

        def annotate(self, rows):
            return [Annotation(preference=None, raw_completion="I cannot decide") for _ in rows]

    ins, inp, o1, o2 = make_rows(50, tag="g")
    pool = AnnotatorPool([Unparseable()])
    anns = pool.compare(ins, inp, o1, o2)
    assert all(a.preference is None and a.probability is None for a in anns)
    assert pool.last_stats["unlabeled"] == 50


def test_bad_arguments():
    with pytest.raises(ValueError):
        AnnotatorPool([])
    with pytest.raises(ValueError):
        AnnotatorPool([RecordingLonger("a"), RecordingLonger("a")])
    with pytest.raises(ValueError):
        AnnotatorPool([RecordingLonger("a")], p_label_flip=0.7)
    with pytest.raises(ValueError):
        AnnotatorPool([RecordingLonger("a")]).compare(["a"], [""], ["x"], [])

    class Short:
        name = "short"

        def annotate(self, rows):
            return []

    with pytest.raises(RuntimeError, match="short"):
        AnnotatorPool([Short()]).compare(["a"], [""], ["x"], ["y"])
