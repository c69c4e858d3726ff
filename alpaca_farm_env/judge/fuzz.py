"""A fuzzer of junk responses: parameterised generator families, and how often the judge lets junk beat the reference.

``degenerate.py`` is a fixed list of junk; this module draws junk from families with continuous parameters
(alphabet, length, repeat count, cut point, padding ratio, ...), so a property-based test can search the space
rather than check a list. Every response is a deterministic function of (family, row, other reference, draw): the
randomness comes from :func:`alpaca_farm_env.utils.stable_hash` (md5), never from ``hash()``.

Families (``FUZZ_KINDS``):

- ``random_chars``: characters of one of ``ALPHABETS`` (Latin letters, letters with spaces and ``#``/``!``,
  printable ASCII, digits and symbols, Cyrillic, Greek, CJK, emoji), 1 to 2,000 of them (log-uniform);
- ``random_words``: 1 to 400 words of the encoder's English vocabulary, either uniform or mixed with function
  words at the rate of English prose, as one run or as capitalised sentences;
- ``shuffled_reference``: the reference's own words in a random order;
- ``truncated_reference``: the reference cut at a random point (5% to 90% of its characters);
- ``off_topic``: another prompt's reference (a fluent answer to another question);
- ``prompt_echo``: the instruction (and input) said back, 1-3 times, bare, after a lead-in or in a chat template;
- ``repetition``: a stock phrase, a sentence of the reference or of the prompt, repeated 2 to 60 times;
- ``markdown_skeleton``: headers, bullets, numbered items, table rows or rules with no content under them;
- ``padded_answer``: the reference with junk of another family added after it, before it or both (0.5x-3x its
  length).

**Held in and held out.** The judge's coherence gate (``coherence.py``) was designed and its thresholds chosen by
looking at ``HELD_IN_KINDS`` (with draw seed 0); ``HELD_OUT_KINDS`` were run only to report them. None of these
generators, nor their word lists, is used in the judge's training data (``training_data.py`` has its own).
"""
from __future__ import annotations

import math
import os
import random
import re
from typing import Any, Callable, Sequence

from ..utils import stable_hash

FUZZ_KINDS = ("random_chars", "random_words", "shuffled_reference", "truncated_reference", "off_topic",
              "prompt_echo", "repetition", "markdown_skeleton", "padded_answer")
HELD_OUT_KINDS = ("shuffled_reference", "truncated_reference", "markdown_skeleton")
HELD_IN_KINDS = tuple(k for k in FUZZ_KINDS if k not in HELD_OUT_KINDS)
TARGET_LOSS_RATE = 0.97  # noise-free: junk of every kind loses to the reference at least this often
TARGET_NOISY_WIN_RATE = 0.15  # noisy_pooled: junk wins at most this often (p_label_flip = 0.25 alone gives 12.5%)

ALPHABETS = {
    "lower": "abcdefghijklmnopqrstuvwxyz",
    "letters_space_marks": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ     #!",
    "printable": "".join(chr(c) for c in range(33, 127)) + "  ",
    "digits_symbols": "0123456789+-*/=%$#@!?()[]{}<>.,;:  ",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя ",
    "greek": "αβγδεζηθικλμνξοπρστυφχψω ",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "emoji": "😀😂🥲😍🤔🙃🔥✨👍🎉🌟💡🚀🐍🍕 ",
}
_PHRASES = ("Thank you.", "I hope this helps!", "Yes.", "As an AI, I am here.", "Great question!", "Okay okay.",
            "This is the answer.", "Please see below.", "Certainly!", "Here it is.")
_TEMPLATES = ("{p}", "Sure! {p}", "Question: {p}\nAnswer:", "### Instruction:\n{p}\n\n### Response:",
              "<|user|>\n{p}\n<|assistant|>", "You asked: \"{p}\"", "{p}\n\n{p}")
_FUNCTION = ("the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
             "not", "this", "are", "or", "an", "which", "from", "can", "you", "will", "have", "they", "their", "at")
_PLACEHOLDER_TEXT = ("", "", "", "...", "TODO", "Item", "[text]", "-", "N/A", "xxx")
_WORD_RE = re.compile(r"\S+")


def _rng(kind: str, key: str, draw: int) -> random.Random:
    return random.Random(stable_hash("fuzz", kind, key, draw))


def _log_uniform_int(r: random.Random, lo: int, hi: int) -> int:
    return int(round(math.exp(r.uniform(math.log(lo), math.log(hi)))))


def _vocabulary() -> Sequence[str]:
    from .features import english_vocabulary

    return sorted(english_vocabulary())


def _sentences(words: Sequence[str], r: random.Random) -> str:
    out, i = [], 0
    while i < len(words):
        k = r.randint(5, 15)
        out.append(" ".join(words[i: i + k]).capitalize() + r.choice(".!?."))
        i += k
    return " ".join(out)


def random_chars(r: random.Random, n: int | None = None, alphabet: str | None = None) -> str:
    alphabet = alphabet or r.choice(sorted(ALPHABETS))
    n = n or _log_uniform_int(r, 1, 2000)
    s = "".join(r.choice(ALPHABETS[alphabet]) for _ in range(n))
    return s if s.strip() else "?" * n


def random_words(r: random.Random, n: int | None = None, *, pool: Sequence[str] | None = None) -> str:
    n = n or _log_uniform_int(r, 1, 400)
    vocab = pool or _vocabulary()
    mixed = pool is None and r.random() < 0.5  # English's share of function words, in random places
    words = [r.choice(_FUNCTION) if mixed and r.random() < 0.4 else r.choice(vocab) for _ in range(n)]
    return _sentences(words, r) if r.random() < 0.5 else " ".join(words)


def repetition(r: random.Random, prompt: str, reference: str) -> str:
    source = r.choice(("phrase", "reference", "prompt"))
    units = {"phrase": list(_PHRASES),
             "reference": [s for s in re.split(r"(?<=[.!?])\s+|\n+", reference) if s.strip()],
             "prompt": [s for s in re.split(r"(?<=[.!?])\s+|\n+", prompt) if s.strip()]}[source] or list(_PHRASES)
    unit = r.choice(units).strip()
    return r.choice((" ", "\n", "\n\n")).join([unit] * r.randint(2, 60))


def markdown_skeleton(r: random.Random) -> str:
    style = r.choice(("headers", "bullets", "numbered", "table", "mixed"))
    n = r.randint(2, 40)
    lines = []
    for i in range(n):
        s = style if style != "mixed" else r.choice(("headers", "bullets", "numbered", "table", "rule"))
        fill = r.choice(_PLACEHOLDER_TEXT)
        if s == "headers":
            lines.append(r.choice(("#", "##", "###")) + " " + (fill or f"Section {i + 1}"))
        elif s == "bullets":
            lines.append(r.choice(("-", "*", "•")) + " " + fill)
        elif s == "numbered":
            lines.append(f"{i + 1}. {fill}")
        elif s == "table":
            k = r.randint(2, 5)
            lines.append("|" + "|".join([" " + fill + " "] * k) + "|" if i != 1 else "|" + "---|" * k)
        else:
            lines.append(r.choice(("---", "***", "___")))
    return "\n".join(lines)


def truncated_reference(r: random.Random, reference: str) -> str:
    ref = reference.strip()
    if len(ref) < 2:
        return ""
    cut = max(1, min(len(ref) - 1, int(len(ref) * r.uniform(0.05, 0.9))))
    return ref[:cut]


def shuffled_reference(r: random.Random, reference: str) -> str:
    words = _WORD_RE.findall(reference)
    if len(words) < 2:
        return random_words(r, 3)
    for _ in range(10):
        r.shuffle(words)
        out = " ".join(words)
        if out != " ".join(_WORD_RE.findall(reference)):
            return out
    return " ".join(reversed(words))


def prompt_echo(r: random.Random, instruction: str, inp: str) -> str:
    p = r.choice((instruction + ("\n\n" + inp if inp else ""), instruction, inp or instruction)).strip()
    return "\n\n".join([r.choice(_TEMPLATES).format(p=p)] * r.randint(1, 3))


_PADDING: dict[str, Callable[[random.Random, int, str, str], str]] = {
    "random_chars": lambda r, n, p, ref: random_chars(r, n),
    "random_words": lambda r, n, p, ref: random_words(r, max(1, n // 6)),
    "shuffled_words": lambda r, n, p, ref: " ".join(r.sample(_WORD_RE.findall(ref) * 3, min(len(_WORD_RE.findall(ref)) * 3, max(1, n // 6)))) if ref.split() else "x",
    "repetition": lambda r, n, p, ref: " ".join([r.choice(_PHRASES)] * max(2, n // 12)),
    "markdown": lambda r, n, p, ref: markdown_skeleton(r),
}


def padded_answer(r: random.Random, prompt: str, reference: str) -> str:
    ref = reference.strip()
    n = max(20, int(len(ref) * r.uniform(0.5, 3.0)))
    pad = _PADDING[r.choice(sorted(_PADDING))](r, n, prompt, ref)
    where = r.choice(("after", "after", "before", "both"))
    if where == "after":
        return ref + r.choice((" ", "\n\n")) + pad
    if where == "before":
        return pad + r.choice((" ", "\n\n")) + ref
    return pad + "\n\n" + ref + "\n\n" + pad


def fuzz_response(kind: str, instruction: str, inp: str, reference: str, other_reference: str, draw: int = 0) -> str:
    """One junk response of family ``kind`` to (instruction, input) whose good answer is ``reference``; the
    parameters are drawn from a generator seeded by (kind, prompt, ``draw``)."""
    prompt = instruction + ("\n\n" + inp if inp else "")
    r = _rng(kind, prompt, draw)
    if kind == "random_chars":
        return random_chars(r)
    if kind == "random_words":
        return random_words(r)
    if kind == "shuffled_reference":
        return shuffled_reference(r, reference)
    if kind == "truncated_reference":
        return truncated_reference(r, reference)
    if kind == "off_topic":
        return other_reference
    if kind == "prompt_echo":
        return prompt_echo(r, instruction, inp)
    if kind == "repetition":
        return repetition(r, prompt, reference)
    if kind == "markdown_skeleton":
        return markdown_skeleton(r)
    if kind == "padded_answer":
        return padded_answer(r, prompt, reference)
    raise ValueError(f"unknown fuzz kind {kind!r}; one of {FUZZ_KINDS}")


def other_reference(rows: Sequence[dict], i: int, draw: int = 0) -> str:
    """The reference of another row (a stable-hash choice, never one equal to row ``i``'s)."""
    n, ref = len(rows), rows[i]["reference_output"]
    if n < 2:
        return ref
    start = stable_hash("fuzz-other", draw, rows[i]["instruction"], rows[i].get("input", "")) % (n - 1)
    for step in range(n - 1):
        cand = rows[(i + 1 + (start + step) % (n - 1)) % n]["reference_output"]
        if cand.strip() != ref.strip():
            return cand
    return ref


def build_fuzz(rows: Sequence[dict], kinds: Sequence[str] = FUZZ_KINDS, draws: int = 1) -> list[dict[str, Any]]:
    """``draws`` junk responses of each kind for each row: dicts ``instruction, input, reference_output, response,
    kind, draw``; a response identical to its reference is dropped (it is not junk)."""
    out = []
    for i, row in enumerate(rows):
        inp = row.get("input", "") or ""
        for kind in kinds:
            for d in range(draws):
                resp = fuzz_response(kind, row["instruction"], inp, row["reference_output"],
                                     other_reference(rows, i, d), d)
                if resp.strip() != row["reference_output"].strip():
                    out.append({"instruction": row["instruction"], "input": inp,
                                "reference_output": row["reference_output"], "response": resp, "kind": kind,
                                "draw": d})
    return out


def _rate(prefs: Sequence[float]) -> dict[str, Any]:
    losses = sum(p == 1.0 for p in prefs)
    wins = sum(p == 2.0 for p in prefs)
    draws = len(prefs) - losses - wins
    n = len(prefs)
    return {"n": n, "losses": int(losses), "wins": int(wins), "draws": int(draws),
            "loss_rate": (losses + 0.5 * draws) / n if n else float("nan"),
            "win_rate": (wins + 0.5 * draws) / n if n else float("nan")}


def judge_suite(judge: Any, suite: Sequence[dict], seed: int = 0) -> list[float]:
    """Preferences of ``judge.compare(reference, response)`` (reference = ``output_1``, as the env's reward)."""
    anns = judge.compare([s["instruction"] for s in suite], [s["input"] for s in suite],
                         [s["reference_output"] for s in suite], [s["response"] for s in suite], seed=seed)
    return [1.5 if a.preference is None else float(a.preference) for a in anns]


def evaluate_fuzz(
    data_dir: str | os.PathLike | None = None,
    n_prompts: int = 256,
    splits: Sequence[str] = ("unlabeled", "eval"),
    *,
    kinds: Sequence[str] = FUZZ_KINDS,
    draws: int = 1,
    seed: int = 0,
    members: bool = True,
    noisy: bool = True,
    reference: str = "alpacafarm",
    progress: bool = False,
) -> dict[str, Any]:
    """The robustness table: for each split, kind and judge -- the noise-free ``pooled``, each of its members on its
    own (``members``) and ``noisy_pooled`` (``noisy``) -- how often the junk loses (noise-free) or wins (noisy).

    Returns ``{"splits": {split: {judge: {kind: rate dict, "overall": rate dict}}}, "targets": {...}, "meets": ...}``.
    """
    from ..annotators import make_annotator
    from .degenerate import select_prompts

    unknown = sorted(set(kinds) - set(FUZZ_KINDS))
    if unknown:
        raise ValueError(f"unknown fuzz kinds {unknown}; choose from {FUZZ_KINDS}")
    pooled = make_annotator("pooled", data_dir=data_dir)
    judges: dict[str, Any] = {"pooled": pooled}
    if members:
        judges.update({f"member {i + 1}": m for i, m in enumerate(pooled.members.values())})
    if noisy:
        judges["noisy_pooled"] = make_annotator("noisy_pooled", data_dir=data_dir)
    result: dict[str, Any] = {"n_prompts": n_prompts, "draws": draws, "seed": seed, "kinds": list(kinds),
                              "held_out": [k for k in kinds if k in HELD_OUT_KINDS], "splits": {}}
    for split in splits:
        rows = select_prompts(split, n_prompts, data_dir, seed, reference)
        suite = build_fuzz(rows, kinds, draws)
        per: dict[str, Any] = {}
        for name, judge in judges.items():
            prefs = judge_suite(judge, suite, seed)
            per[name] = {k: _rate([p for p, s in zip(prefs, suite) if s["kind"] == k]) for k in kinds}
            per[name]["overall"] = _rate(prefs)
            per[name]["examples_won"] = [{"kind": s["kind"], "instruction": s["instruction"][:100],
                                          "response": s["response"][:160]}
                                         for p, s in zip(prefs, suite) if p == 2.0][:12]
        result["splits"][split] = {"n_prompts": len(rows), "n_pairs": len(suite), "judges": per}
    ok = True
    for split in result["splits"].values():
        for name, per in split["judges"].items():
            for k in kinds:
                if name == "noisy_pooled":
                    ok &= per[k]["win_rate"] <= TARGET_NOISY_WIN_RATE
                else:
                    ok &= per[k]["loss_rate"] >= TARGET_LOSS_RATE
    result["meets_target"] = bool(ok)
    return result


def format_fuzz_table(result: dict[str, Any]) -> str:
    """Kind x split x judge: % of pairs the junk loses (noise-free judges) or wins (``noisy_pooled``)."""
    lines = []
    for split, res in result["splits"].items():
        names = list(res["judges"])
        lines.append(f"{split}: {res['n_prompts']} prompts, {res['n_pairs']} pairs; % the junk LOSES (noise-free, "
                     f"target >= {100 * TARGET_LOSS_RATE:.0f}) / noisy_pooled: % it WINS (target <= "
                     f"{100 * TARGET_NOISY_WIN_RATE:.0f}); * = held out")
        lines.append(f"{'kind':<22}" + "".join(f"{n:>14}" for n in names))
        for k in result["kinds"] + ["overall"]:
            label = k + (" *" if k in result["held_out"] else "")
            cells = []
            for n in names:
                v = res["judges"][n][k]
                cells.append(f"{100 * (v['win_rate'] if n == 'noisy_pooled' else v['loss_rate']):14.1f}")
            lines.append(f"{label:<22}" + "".join(cells))
        lines.append("")
    return "\n".join(lines)
