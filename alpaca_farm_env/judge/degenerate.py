"""A held-out suite of degenerate responses, and how often the judge ranks them below the reference.

A reward model used for RL has holes a policy will find: content-free, repetitive, off-topic or echoed text that a
length-loving judge prefers to a short correct answer. This module builds, for any prompt with a reference output,
degenerate responses of ``SUITE_KINDS`` (no information in them, or only information copied from the prompt or
from another prompt's answer) and measures with :func:`evaluate_degenerate` how often the judge prefers the split's
reference output -- as the env's ``annotator`` reward does (reference = ``output_1``, response = ``output_2``).

**Held out from training.** The judge trains on synthetic negatives too (``training_data.SYNTHETIC_KINDS``), but with
other generators (built from the annotated models' own answers, with their own phrase lists and hash tags); none of
the generators, phrase lists or word lists here is used in training, and ``tests/judge/test_judge_degenerate.py`` checks
that no suite output appears among the training rows. Each suite kind has a relative among the training kinds
(``TRAINING_RELATIVE``), built by another generator from other text, so the suite measures generalisation across
generators, not recall.

Every response is a deterministic function of (kind, prompt, reference, seed): the randomness comes from
:func:`alpaca_farm_env.utils.stable_hash` (md5), never from ``hash()`` or a global RNG.
"""
from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..utils import stable_hash

SUITE_KINDS = (
    "blank", "punctuation", "filler", "filler_bullets", "repeated_phrase", "looped_sentence", "empty_bullets",
    "placeholder_bullets", "markdown_skeleton", "lorem_ipsum", "gibberish", "prompt_echo", "chat_echo",
    "keyword_stuffing", "off_topic", "cut_off", "padded_with_filler", "word_salad",
)
# The training negative (training_data.SYNTHETIC_KINDS) closest in form to each suite kind: every failure mode here
# has a relative in training, but built by another generator from other text (the annotated models' answers, their
# own phrase lists) -- the suite measures whether the judge generalises across generators.
TRAINING_RELATIVE = {
    "blank": "near_empty", "punctuation": "near_empty", "filler": "boilerplate", "filler_bullets": "boilerplate",
    "repeated_phrase": "repetitive", "looped_sentence": "repetitive", "empty_bullets": "hollow_list",
    "placeholder_bullets": "hollow_list", "markdown_skeleton": "hollow_list", "lorem_ipsum": "pseudo_words",
    "gibberish": "pseudo_words", "prompt_echo": "restated", "chat_echo": "template_echo",
    "keyword_stuffing": "keyword_soup", "off_topic": "mismatched", "cut_off": "truncated",
    "padded_with_filler": "padded", "word_salad": "scrambled",
}
TARGET_LOSS_RATE = 0.97

# Phrase and word lists of the suite only (training_data.py has its own, disjoint ones).
_FILLER = (
    "This is a very important topic that many people find interesting.",
    "There are many different factors to consider here.",
    "It really depends on the specific situation and the context.",
    "Everyone has their own opinion about this.",
    "In general, things can vary quite a lot from case to case.",
    "This is something worth thinking about carefully.",
    "Overall, it is a complex and multifaceted issue.",
    "Many experts have discussed this over the years.",
    "It is always good to keep an open mind.",
    "At the end of the day, it all comes down to what matters most.",
    "That is a great question!",
    "Let me know if you have any other questions.",
    "There are pros and cons to every approach.",
    "It is worth noting that this can be done in many ways.",
    "Of course, there is always more to learn.",
    "This has been a topic of discussion for a long time.",
    "Different people will see this differently.",
    "The most important thing is to do your best.",
)
_PHRASES = (
    "I understand.", "Yes, of course.", "That is correct.", "Thank you!", "OK, here it is.", "Sure thing.",
    "The answer is the answer.", "Good good good.", "Absolutely, absolutely.", "Here you go:",
)
_PLACEHOLDERS = ("Point {i}", "Item {i}", "...", "TBD", "Example {i}", "Idea", "Step {i}", "[insert here]", "N/A")
_SECTIONS = ("Introduction", "Overview", "Background", "Main Points", "Details", "Analysis", "Key Takeaways",
             "Examples", "Discussion", "Summary", "Conclusion", "Final Thoughts")
_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna "
    "aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat "
    "duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur excepteur "
    "sint occaecat cupidatat non proident sunt in culpa qui officia deserunt mollit anim id est laborum sed ut "
    "perspiciatis unde omnis iste natus error sit voluptatem accusantium doloremque laudantium totam rem aperiam eaque "
    "ipsa quae ab illo inventore veritatis et quasi architecto beatae vitae dicta sunt explicabo nemo enim ipsam "
    "voluptatem quia voluptas sit aspernatur aut odit aut fugit sed quia consequuntur magni dolores eos qui ratione "
    "voluptatem sequi nesciunt neque porro quisquam est qui dolorem ipsum quia dolor sit amet"
).split()
_CHAT_TEMPLATES = (
    "User: {prompt}\nAssistant:",
    "Human: {prompt}\n\nAssistant: {prompt}",
    "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
    "<|user|>\n{prompt}\n<|assistant|>\n{prompt}",
    "[INST] {prompt} [/INST]",
    "{alpaca}",
    "{alpaca}\n{prompt}",
)
_STOP = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those i you he she we they me my your our their what which who whom how why when where do does did can could "
    "would should will shall may might must not no yes so than then there here about into over under give write "
    "please following below given some any each all".split()
)
_WORD_RE = re.compile(r"\w+", re.U)


def _rng(kind: str, key: str, seed: int) -> random.Random:
    """A private RNG seeded by an md5 hash (stable across processes and Python versions)."""
    return random.Random(stable_hash("degenerate-suite", seed, kind, key))


def _prompt(instruction: str, inp: str) -> str:
    return instruction + ("\n\n" + inp if inp else "")


def _first_sentence(text: str) -> str:
    t = text.strip()
    m = re.search(r"(?<=[.!?])\s", t)
    return (t[: m.start()] if m else t).strip() or t


def degenerate_response(
    kind: str, instruction: str, inp: str, reference: str, other_reference: str, key: str, seed: int = 0
) -> str:
    """One degenerate response of ``kind`` to (instruction, input), whose good answer is ``reference``;
    ``other_reference`` is the reference of another prompt (for ``off_topic``). Deterministic in its arguments.

    blank: whitespace only; punctuation: dots, dashes or question marks; filler: 3-12 content-free sentences;
    filler_bullets: 10-40 content-free bullet points; repeated_phrase: a stock phrase 10-40 times; looped_sentence:
    the reference's first sentence 5-20 times; empty_bullets: 10-40 list markers with nothing after them;
    placeholder_bullets: list items "Point 3", "TBD", "..."; markdown_skeleton: section headers (or bold labels)
    with nothing under them; lorem_ipsum: 30-150 words of lorem ipsum; gibberish: random letter strings;
    prompt_echo: the prompt repeated back (1-3 times); chat_echo: the prompt in a chat or Alpaca template;
    keyword_stuffing: the prompt's content words, shuffled and repeated; off_topic: another prompt's reference;
    cut_off: the reference cut mid-word after 10-40% of its characters; padded_with_filler: the reference followed
    by 1.5-3 times its length of filler or lorem ipsum; word_salad: the prompt's and reference's words shuffled.
    """
    r = _rng(kind, key, seed)
    generate = _GENERATORS.get(kind)
    if generate is None:
        raise ValueError(f"unknown degenerate kind {kind!r}; one of {SUITE_KINDS}")
    return generate(_Ask(instruction, inp, _prompt(instruction, inp), reference or "", other_reference), r)


@dataclass(frozen=True)
class _Ask:
    """What a generator may use: the prompt (``instruction``, ``input``, both as one ``prompt``), its reference
    answer and another prompt's reference."""

    instruction: str
    inp: str
    prompt: str
    ref: str
    other_reference: str


# One generator per kind: ``(ask, rng) -> response``; each draws from its own seeded RNG only.
def _blank(a: _Ask, r: random.Random) -> str:
    return r.choice((" ", "\n", "\n\n", "  \n  ", "\t", " \n\n \n"))


def _punctuation(a: _Ask, r: random.Random) -> str:
    unit = r.choice(("...", ".", "-", "?", "!", "*", "…"))
    return r.choice((" ", "", "\n")).join([unit] * r.randint(1, 12))


def _filler(a: _Ask, r: random.Random) -> str:
    return " ".join(r.choice(_FILLER) for _ in range(r.randint(3, 12)))


def _filler_bullets(a: _Ask, r: random.Random) -> str:
    marker = r.choice(("- ", "* ", "• ", "{i}. "))
    return "\n".join(marker.format(i=i + 1) + r.choice(_FILLER) for i in range(r.randint(10, 40)))


def _repeated_phrase(a: _Ask, r: random.Random) -> str:
    return r.choice((" ", "\n")).join([r.choice(_PHRASES)] * r.randint(10, 40))


def _looped_sentence(a: _Ask, r: random.Random) -> str:
    # one per line (the training kind ``repetitive`` joins a phrase of a model's answer with spaces)
    return "\n".join([_first_sentence(a.ref) or r.choice(_PHRASES)] * r.randint(5, 20))


def _empty_bullets(a: _Ask, r: random.Random) -> str:
    marker = r.choice(("-", "*", "•", "{i}.", "{i})", "- [ ]"))
    return "\n".join(marker.format(i=i + 1) + r.choice(("", " ")) for i in range(r.randint(10, 40)))


def _placeholder_bullets(a: _Ask, r: random.Random) -> str:
    marker = r.choice(("- ", "* ", "{i}. "))
    return "\n".join(marker.format(i=i + 1) + r.choice(_PLACEHOLDERS).format(i=i + 1)
                     for i in range(r.randint(5, 30)))


def _markdown_skeleton(a: _Ask, r: random.Random) -> str:
    secs = r.sample(_SECTIONS, r.randint(3, 8))
    style = r.choice(("## {s}", "### {s}", "**{s}:**", "# {s}\n"))
    return "\n\n".join(style.format(s=s) for s in secs)


def _lorem_ipsum(a: _Ask, r: random.Random) -> str:
    n, start = r.randint(30, 150), r.randrange(len(_LOREM))
    words = [_LOREM[(start + i) % len(_LOREM)] for i in range(n)]
    return _sentences(words, r)


def _gibberish(a: _Ask, r: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(r.choice(letters) for _ in range(r.randint(2, 10))) for _ in range(r.randint(15, 80))]
    return _sentences(words, r)


def _prompt_echo(a: _Ask, r: random.Random) -> str:
    lead = r.choice(("Sure! ", "Here is the response:\n\n", "> ", "Q: "))  # (never the bare prompt: a real
    # answer in the data says the question back verbatim)
    return lead + "\n\n".join([a.prompt.strip()] * r.randint(1, 3))


def _chat_echo(a: _Ask, r: random.Random) -> str:
    from ..data import format_prompt

    return r.choice(_CHAT_TEMPLATES).format(prompt=a.prompt.strip(), alpaca=format_prompt(a.instruction, a.inp))


def _keyword_stuffing(a: _Ask, r: random.Random) -> str:
    words = [w for w in _WORD_RE.findall(a.prompt.lower()) if w not in _STOP and len(w) > 2] or ["answer"]
    stuffed = [r.choice(words) for _ in range(r.randint(20, 80))]
    sep = r.choice((" ", ", ", "\n- "))
    return ("- " if sep == "\n- " else "") + sep.join(stuffed)


def _off_topic(a: _Ask, r: random.Random) -> str:
    return a.other_reference


def _cut_off(a: _Ask, r: random.Random) -> str:
    ref = a.ref
    cut = max(2, int(len(ref) * r.uniform(0.1, 0.4)))
    while 0 < cut < len(ref) - 1 and not (ref[cut - 1].isalnum() and ref[cut].isalnum()):
        cut += 1  # inside a word, always (a cut at a word boundary is the training kind ``truncated``)
    out = ref[:cut]
    return out if out != ref else (ref[:-1] or "…")


def _padded_with_filler(a: _Ask, r: random.Random) -> str:
    target = max(40, int(len(a.ref.split()) * r.uniform(1.5, 3.0)))
    if r.random() < 0.5:
        pad, n = [], 0
        while n < target:
            s = r.choice(_FILLER)
            pad.append(s)
            n += len(s.split())
        filler = " ".join(pad)
    else:
        start = r.randrange(len(_LOREM))
        filler = _sentences([_LOREM[(start + i) % len(_LOREM)] for i in range(target)], r)
    return a.ref.rstrip() + "\n\n" + filler


def _word_salad(a: _Ask, r: random.Random) -> str:
    pool = _WORD_RE.findall(a.prompt.lower()) + _WORD_RE.findall(a.ref.lower()) or ["word"]
    return " ".join(r.choice(pool) for _ in range(r.randint(20, 60))).capitalize() + "."


_GENERATORS: dict[str, Callable[[_Ask, random.Random], str]] = {
    "blank": _blank, "punctuation": _punctuation, "filler": _filler, "filler_bullets": _filler_bullets,
    "repeated_phrase": _repeated_phrase, "looped_sentence": _looped_sentence, "empty_bullets": _empty_bullets,
    "placeholder_bullets": _placeholder_bullets, "markdown_skeleton": _markdown_skeleton, "lorem_ipsum": _lorem_ipsum,
    "gibberish": _gibberish, "prompt_echo": _prompt_echo, "chat_echo": _chat_echo,
    "keyword_stuffing": _keyword_stuffing, "off_topic": _off_topic, "cut_off": _cut_off,
    "padded_with_filler": _padded_with_filler, "word_salad": _word_salad,
}
assert tuple(_GENERATORS) == SUITE_KINDS


def _sentences(words: Sequence[str], r: random.Random) -> str:
    """Words grouped into capitalised sentences of 6-14 words."""
    out, i = [], 0
    while i < len(words):
        k = r.randint(6, 14)
        chunk = list(words[i : i + k])
        i += k
        out.append(" ".join(chunk).capitalize() + ".")
    return " ".join(out)


# ----------------------------------------------------------------------------------------------- prompts and suite
def select_prompts(split: str, n_prompts: int, data_dir: str | os.PathLike | None = None, seed: int = 0,
                   reference: str = "alpacafarm") -> list[dict[str, Any]]:
    """``n_prompts`` env rows of ``split`` (the env's own rows: ``instruction``, ``input``, ``reference_output``),
    chosen by a stable hash of (seed, split, prompt); a prompt with an empty reference is skipped."""
    from ..data import load_rows

    rows = [r for r in load_rows(split, data_dir=data_dir, reference=reference) if r["reference_output"].strip()]
    order = sorted(range(len(rows)), key=lambda i: (stable_hash("degenerate-prompts", seed, split,
                                                                rows[i]["instruction"], rows[i]["input"]), i))
    return [rows[i] for i in order[: min(n_prompts, len(rows))]]


def build_suite(rows: Sequence[dict], kinds: Sequence[str] = SUITE_KINDS, seed: int = 0) -> list[dict[str, Any]]:
    """Degenerate responses for each row (``instruction``, ``input``, ``reference_output``) and kind: dicts with
    ``instruction, input, reference_output, response, kind``. ``off_topic`` takes the reference of another row of
    ``rows`` (a stable-hash choice, never the row itself, never one with the same reference)."""
    out = []
    n = len(rows)
    for i, row in enumerate(rows):
        key = f"{row['instruction']}\x00{row.get('input', '')}"
        other = row["reference_output"]
        if n > 1:
            start = stable_hash("degenerate-other", seed, key) % (n - 1)
            for step in range(n - 1):
                cand = rows[(i + 1 + (start + step) % (n - 1)) % n]["reference_output"]
                if cand.strip() != row["reference_output"].strip():
                    other = cand
                    break
        for kind in kinds:
            resp = degenerate_response(kind, row["instruction"], row.get("input", "") or "", row["reference_output"],
                                       other, key, seed)
            out.append({"instruction": row["instruction"], "input": row.get("input", "") or "",
                        "reference_output": row["reference_output"], "response": resp, "kind": kind})
    return out


def _rate(prefs: Sequence[float]) -> dict[str, Any]:
    losses = sum(p == 1.0 for p in prefs)
    wins = sum(p == 2.0 for p in prefs)
    draws = len(prefs) - losses - wins
    loss_rate = (losses + 0.5 * draws) / len(prefs) if prefs else float("nan")
    return {"n": len(prefs), "losses": int(losses), "wins": int(wins), "draws": int(draws), "loss_rate": loss_rate}


def evaluate_degenerate(
    data_dir: str | os.PathLike | None = None,
    annotator: Any = "pooled",
    n_prompts: int = 128,
    splits: Sequence[str] = ("unlabeled", "eval"),
    seed: int = 0,
    *,
    kinds: Sequence[str] = SUITE_KINDS,
    reference: str = "alpacafarm",
    annotator_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """How often each degenerate kind LOSES to the split's reference output, per split and kind.

    For each split, ``n_prompts`` prompts (:func:`select_prompts`) and every kind of ``kinds`` (:func:`build_suite`)
    are judged as the env's ``annotator`` reward judges a response: ``compare(instruction, input, reference,
    response, seed=seed)``. ``annotator`` is a name for ``make_annotator`` (default the noise-free ``pooled``, which
    scores eval prompts with its bank heads and training-split prompts with its global head) or an annotator object.
    ``reference`` picks the eval split's Davinci003 reference as the env does (default ``alpacafarm``, the env's).
    Loss rate = (losses + draws / 2) / n. Returns ``{"splits": {split: {"per_kind": {kind: {n, losses, wins, draws,
    loss_rate}}, "overall": {...}, "worst_kind": ...}}, "meets_target": bool, ...}``; the target is
    ``TARGET_LOSS_RATE`` overall on every split.
    """
    import time

    from ..annotators import make_annotator
    from ..context import RewardContext

    unknown = sorted(set(kinds) - set(SUITE_KINDS))
    if unknown:
        raise ValueError(f"unknown degenerate kinds {unknown}; choose from {SUITE_KINDS}")
    judge = annotator
    name = getattr(annotator, "name", type(annotator).__name__)
    if isinstance(annotator, str):
        name = annotator
        judge = make_annotator(annotator, context=RewardContext.of(data_dir), **dict(annotator_kwargs or {}))
    result: dict[str, Any] = {"annotator": name, "seed": seed, "n_prompts": n_prompts, "kinds": list(kinds),
                              "reference": reference, "target_loss_rate": TARGET_LOSS_RATE, "splits": {}}
    for split in splits:
        t0 = time.time()
        rows = select_prompts(split, n_prompts, data_dir, seed, reference)
        suite = build_suite(rows, kinds, seed)
        anns = judge.compare([s["instruction"] for s in suite], [s["input"] for s in suite],
                             [s["reference_output"] for s in suite], [s["response"] for s in suite], seed=seed)
        prefs = [1.5 if a.preference is None else float(a.preference) for a in anns]
        per_kind = {k: _rate([p for p, s in zip(prefs, suite) if s["kind"] == k]) for k in kinds}
        worst = min(per_kind, key=lambda k: per_kind[k]["loss_rate"]) if per_kind else None
        result["splits"][split] = {
            "n_prompts": len(rows), "n_pairs": len(suite), "per_kind": per_kind, "overall": _rate(prefs),
            "worst_kind": worst, "seconds": round(time.time() - t0, 1),
            "examples_won": [{"kind": s["kind"], "instruction": s["instruction"][:120], "response": s["response"][:200]}
                             for p, s in zip(prefs, suite) if p == 2.0][:20],
        }
    overall = [v["overall"]["loss_rate"] for v in result["splits"].values()]
    result["meets_target"] = bool(overall) and all(not math.isnan(x) and x >= TARGET_LOSS_RATE for x in overall)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The per-kind loss rates of :func:`evaluate_degenerate` as a plain-text table (one column per split)."""
    splits = list(result["splits"])
    lines = [f"degenerate responses vs the reference, annotator {result['annotator']!r}: % of pairs the degenerate "
             f"response LOSES (draws count 1/2); target >= {100 * result['target_loss_rate']:.0f}%",
             f"{'kind':<20}{'training relative':<18}"
             + "".join(f"{s + ' (' + str(result['splits'][s]['n_prompts']) + ')':>18}" for s in splits)]
    for k in result["kinds"]:
        lines.append(f"{k:<20}{TRAINING_RELATIVE[k]:<18}"
                     + "".join(f"{100 * result['splits'][s]['per_kind'][k]['loss_rate']:18.1f}" for s in splits))
    lines.append(f"{'overall':<38}" + "".join(f"{100 * result['splits'][s]['overall']['loss_rate']:18.1f}" for s in splits))
    return "\n".join(lines)
