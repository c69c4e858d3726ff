"""The judge's training data: GPT-4-labelled pairs from the data dir (or the hub), the synthetic degenerate negatives
added to them, and the labels (P(output_2 better)). The degenerate-response suite the judge is measured on
(``judge/degenerate.py``) is held out: none of its generators, phrase lists or hash tags is used here."""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..utils import stable_hash

if TYPE_CHECKING:
    from .config import JudgeConfig


def load_training_pairs(
    data_dir: str | os.PathLike | None = None,
    models: Sequence[str] | None = None,
    max_pairs_per_model: int | None = None,
) -> list[dict[str, Any]]:
    """GPT-4-labelled pairs with a ``model`` field; rows without a label are dropped.

    Local data dir: the AlpacaEval-1 GPT-4 annotation files. Hub: ``alpaca_gpt4_preference`` (``model`` = "hub").
    """
    from ..data import (
        list_annotated_models,
        load_gpt4_annotations,
        load_preference,
        resolve_data_dir,
    )

    root = resolve_data_dir(data_dir)
    available = list_annotated_models(root) if root is not None else []
    rows: list[dict[str, Any]] = []
    if available:
        chosen = list(models) if models is not None else available
        unknown = sorted(set(chosen) - set(available))
        if unknown:
            raise ValueError(f"no GPT-4 annotations for {unknown} in {root}; available: {', '.join(available)}")
        for m in chosen:
            anns = [r for r in load_gpt4_annotations(m, root) if r["preference"] is not None]
            if max_pairs_per_model is not None:
                anns = anns[:max_pairs_per_model]
            rows += [{"instruction": r["instruction"], "input": r.get("input", ""), "output_1": r["output_1"],
                      "output_2": r["output_2"], "preference": float(r["preference"]), "model": m} for r in anns]
    else:
        # a user's machine without the annotation files: the hub's GPT-4 preference set (real `datasets` path)
        pref = load_preference("alpaca_gpt4_preference", root)
        if max_pairs_per_model is not None:
            pref = pref[:max_pairs_per_model]
        rows = [dict(r, model="alpaca_gpt4_preference") for r in pref if r["preference"] is not None]
    if not rows:
        raise ValueError("no GPT-4-labelled pairs to train the distilled judge on")
    return rows


def labels(rows: Sequence[dict]) -> np.ndarray:
    """GPT-4 preference (1, 1.5, 2 or a float in between) -> P(output_2 better)."""
    return np.asarray([float(r["preference"]) - 1.0 for r in rows], dtype=np.float64)


# Bump when the synthetic negatives or the pairs' loading change: it is part of every artifact's key
# (config.feature_spec), so an old judge's artifacts are not reused for new training data.
TRAINING_DATA_VERSION = 2

SYNTHETIC_KINDS = (
    "mismatched", "truncated", "repetitive", "template_echo", "near_empty",
    # wider kinds, again built from the annotated model's own answers and the instruction; the held-out
    # evaluation suite (judge/degenerate.py) uses other generators, phrase lists and hash tags, never these
    "pseudo_words", "hollow_list", "boilerplate", "padded", "scrambled", "restated", "keyword_soup",
)

SHORT_REFERENCE_WORDS = 15

# Phrase lists and syllables of the training negatives only (the suite in degenerate.py has its own, disjoint ones).
_BOILERPLATE = (
    "{topic} is a subject with a long history.",
    "When it comes to {topic}, opinions differ widely.",
    "Understanding {topic} requires looking at the bigger picture.",
    "{topic} matters for a number of reasons.",
    "People often ask about {topic}.",
    "Researchers continue to study {topic} today.",
    "A good approach to {topic} takes time and effort.",
    "Some would say {topic} is simple, while others disagree.",
    "In summary, {topic} deserves attention.",
    "It goes without saying that {topic} plays a role.",
    "Every situation involving {topic} is unique.",
    "There is no single right answer about {topic}.",
    "Thinking about {topic} can be rewarding.",
    "Much has been written on {topic}.",
)
_RESTATE = (("You asked: ", ""), ("The question is: ", ""), ("Task: ", ". Noted."), ("So, ", "?"),
            ("Your request was to ", "."), ("", " -- that is what you want to know."))
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou") + ("an", "en", "or", "ul", "ix")
_LABELS = ("Step {k}:", "({a})", "Part {k} -", "Tip #{k}:", "{k}/", "Option {a}:")
_WORD = re.compile(r"\w+", re.U)
_STOPWORDS = frozenset("a an the and or but if of to in on at by for with from as is are was were be been it its this "
                       "that these those you your we our they their he she his her i me my not no so can will would "
                       "should could do does did have has had there here what which who how when where why".split())


def _topic(instruction: str, h: int) -> str:
    words = [w for w in _WORD.findall(instruction.lower()) if len(w) > 3 and w not in _STOPWORDS]
    return words[h % len(words)] if words else "this"


def _sentences_of(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip()) > 1]


def _words_prefix(text: str, n_words: int) -> str:
    """The text up to its ``n_words``-th word (keeps the original spacing and formatting)."""
    m = list(re.finditer(r"\S+", text))
    if n_words >= len(m):
        return text
    return text[: m[max(n_words, 1) - 1].end()] if m else ""


def degenerate_output(kind: str, row: dict, other: dict, key: str) -> str:
    """One degenerate answer to ``row``'s instruction, built from ``row``'s model output (``output_2``) and another
    row of the same model (``other``): the failure modes of a weak or base model that no annotated model shows.

    mismatched: the answer to a different instruction; truncated: cut mid-sentence after 15-45% of its words;
    repetitive: an opening phrase looped; template_echo: a short start followed by an echoed Alpaca prompt template
    and another instruction; near_empty: nothing or a few words; pseudo_words: 20-200 made-up words of random
    syllables; hollow_list: 4-44 labels ("Step 3:", "(c)", "Tip #2:") with nothing after them; boilerplate: 3-28
    generic sentences naming a word of the instruction; padded: the first 30-70% of the answer followed by its
    first sentence or boilerplate 4-28 times; scrambled: each line's words in reverse order; restated: the
    instruction said back with a lead-in; keyword_soup: the answer's most frequent content words, repeated.

    These are the judge's training negatives. The held-out evaluation suite (``judge/degenerate.py``) has its own
    generators, phrase lists and hash tags and is never trained on.
    """
    o = row["output_2"].strip()
    h = stable_hash("synthetic", key)
    n = len(o.split())
    if kind == "mismatched":
        return other["output_2"]
    if kind == "truncated":
        cut = _words_prefix(o, max(3, int(n * (0.15 + 0.3 * (h % 100) / 100))))
        return cut.rstrip(" .!?;:)\"'`*")
    if kind == "repetitive":
        phrase = _words_prefix(o, 6 + h % 10).rstrip()
        return " ".join([phrase] * (3 + h % 6))
    if kind == "template_echo":
        start = _words_prefix(o, 8 + h % 20)
        return (f"{start}\n\n### Instruction:\n{other['instruction']}\n\n### Response:\n"
                f"{_words_prefix(other['output_2'], 10 + h % 30)}")
    if kind == "near_empty":
        return _words_prefix(o, h % 4)  # 0 words: the empty answer
    words = o.split()
    if kind == "pseudo_words":  # made-up words in sentence form: no language at all
        out = []
        for i in range(20 + h % 180):
            k = stable_hash("syllable", key, i)
            out.append("".join(_SYLLABLES[(k >> (5 * j)) % len(_SYLLABLES)] for j in range(1 + k % 3)))
        return out[0].capitalize() + " " + " ".join(out[1:]) + "."
    if kind == "hollow_list":  # list labels with no content after them
        label = _LABELS[h % len(_LABELS)]
        return "\n".join(label.format(k=k + 1, a="abcdefghijklmnopqrstuvwxyz"[k % 26]) for k in range(4 + h % 40))
    if kind == "boilerplate":  # generic sentences that name the instruction's topic and say nothing
        topic = _topic(row["instruction"], h)
        picks = [_BOILERPLATE[stable_hash("boiler", key, i) % len(_BOILERPLATE)] for i in range(3 + h % 25)]
        return " ".join((lambda t: t[:1].upper() + t[1:])(p.format(topic=topic)) for p in picks)
    if kind == "padded":  # the first part of the answer, then its opening sentence or boilerplate over and over
        head = _words_prefix(o, max(3, int(n * (0.3 + 0.4 * (h % 100) / 100))))
        if h % 2:
            pad = [(_sentences_of(o) or [o])[0]] * (4 + h % 25)
        else:
            topic = _topic(row["instruction"], h)
            pad = [_BOILERPLATE[(h + i) % len(_BOILERPLATE)].format(topic=topic) for i in range(4 + h % 25)]
        return head + "\n\n" + " ".join(pad)
    if kind == "scrambled":  # each line's words in reverse order: the answer's words, no sentences
        return "\n".join(" ".join(reversed(ln.split())) for ln in o.splitlines())
    if kind == "restated":  # the instruction said back, no answer
        pre, post = _RESTATE[h % len(_RESTATE)]
        instr = row["instruction"].strip().rstrip(".?!")
        return pre + (instr[:1].lower() + instr[1:] if pre else instr) + post
    if kind == "keyword_soup":  # the answer's own most frequent content words, repeated
        content = [w for w in _WORD.findall(o.lower()) if len(w) > 3 and w not in _STOPWORDS] or words or ["answer"]
        top = sorted(set(content), key=lambda w: (-content.count(w), w))[: 3 + h % 8]
        return " ".join(top[(i * 7 + h) % len(top)] for i in range(15 + h % 90))
    raise ValueError(f"unknown synthetic kind {kind!r}; one of {SYNTHETIC_KINDS}")


def synthetic_negatives(rows: Sequence[dict], fraction: float, seed: int = 0) -> list[dict]:
    """Degenerate answers GPT-4 would certainly rank below the davinci003 reference, labelled as reference wins.

    The annotated models are all fluent (the weakest, phi-2, wins 31% against davinci003), so a head fitted on them
    alone never sees incoherent, off-topic, looping, template-echoing or cut-off text and rates it like any other
    short answer. About ``fraction * len(rows)`` rows are chosen by a stable hash of (seed, model, instruction) --
    every row whose reference has at most ``SHORT_REFERENCE_WORDS`` words when ``fraction >= 0.5``, the others at the
    rate that keeps the expected total -- and get the kinds in turn (in stable-hash order), built from the same
    model's outputs only, so a leave-one-model-out fold can drop the held-out model's synthetic rows with its real
    ones. Rows carry ``model``, ``synthetic`` = kind and ``preference`` = 1.0 (output_1 = the reference wins).
    """
    if fraction <= 0:
        return []
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    out = []
    for m, rs in by_model.items():
        if len(rs) < 2:
            continue
        # Rows whose reference is short are picked first (a short correct answer must still beat a long degenerate
        # one: the env's training prompts often have one-line references), the others at the rate that keeps the
        # expected total at ``fraction``.
        short = [len(r["output_1"].split()) <= SHORT_REFERENCE_WORDS for r in rs]
        p_short = min(1.0, 2.0 * fraction)
        n_short = sum(short)
        p_other = max(0.0, fraction * len(rs) - p_short * n_short) / max(len(rs) - n_short, 1)
        picked = []
        for i, r in enumerate(rs):
            key = f"{seed}|{m}|{r['instruction']}|{r.get('input', '')}"
            if (stable_hash("pick", key) % 10_000) / 10_000 < (p_short if short[i] else p_other):
                picked.append((stable_hash("kind", key), i, key))
        # kinds in turn over the picked rows in hash order: every kind gets its share, even for a small model
        offset = stable_hash("kind-offset", seed, m)
        for rank, (_, i, key) in enumerate(sorted(picked)):
            r = rs[i]
            kind = SYNTHETIC_KINDS[(rank + offset) % len(SYNTHETIC_KINDS)]
            other = rs[(i + 1 + stable_hash("other", key) % (len(rs) - 1)) % len(rs)]  # never the row itself
            o2 = degenerate_output(kind, r, other, key)
            if o2 == r["output_1"]:
                continue
            out.append({"instruction": r["instruction"], "input": r.get("input", ""), "output_1": r["output_1"],
                        "output_2": o2, "preference": 1.0, "model": m, "synthetic": kind})
    return out


def with_synthetic(rows: Sequence[dict], config: "JudgeConfig") -> tuple[list[dict], np.ndarray]:
    """``rows`` + their synthetic negatives, and per-row base weights (1 real, ``config.augment_weight`` synthetic)."""
    syn = synthetic_negatives(rows, config.augment_fraction, config.seed) if config.augment_weight > 0 else []
    weights = np.concatenate([np.ones(len(rows)), np.full(len(syn), float(config.augment_weight))])
    return list(rows) + syn, weights
