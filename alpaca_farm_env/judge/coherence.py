"""The coherence gate: evidence, per output, that a response is junk, put in front of the judge's preference.

The learned heads rank fluent answers; on text unlike any answer they were trained on (random characters, shuffled
words, an echoed prompt, a skeleton of headers) their scores are arbitrary, and junk can win. The gate asks questions
junk cannot answer by imitation, each with a measured false-positive rate on real answers (docs/judge.md):

- **Is it language?** Each word is split into the encoder's WordPiece vocabulary (30.5k pieces): an English word is
  one or two pieces, a random string of letters is cut into pieces of 1-2 characters. Characters of a script the
  prompt does not use (Cyrillic, CJK, emoji in an English exchange) count against it too, unless the prompt asks for
  another language.
- **Is the word order English?** A real language model (SmolLM2, ``lm_evidence.py``) reads the first and last 24
  tokens of outputs of 8+ words and the same words shuffled: prose gains several nats a token from its order,
  shuffled or random words gain nothing. And a determiner, preposition or conjunction is followed by a word that can
  follow it (not "the of", "a and"), and no sentence ends on "the".
- **Does it say anything once?** Sentences or word 8-grams that repeat earlier ones.
- **Is it the prompt said back?** Nearly all of its word 3-grams come from the prompt, which it mostly contains.
- **Is there content under the structure?** Headers, bullets and table cells with no words under them.
- **Is it about the instruction?** MiniLM cosine of the prompt and the output's opening, for outputs of 3+ words.

Each question is asked of the whole output and of its segments (lines, sentences, 16-word windows), so an answer
padded with junk is junk in proportion to the junk it carries. The answer is ``junk`` in [0, 1], and the judge's
score becomes ``s(x, o) - GATE_PENALTY * junk(x, o)``: still a per-output score, so swapping the outputs still gives
``1 - P`` exactly. A junk output loses to a real one whatever the heads say; two junk outputs are ranked by the heads.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Sequence

import numpy as np

GATE_VERSION = 3  # bump when the evidence or a threshold changes: it is part of every judge's identity
GATE_PENALTY = 40.0  # logits; the heads' scores of real answers span about +-10

_TOKEN_RE = re.compile(r"\S+")
_ALPHA_TOKEN_RE = re.compile(r"^[\"'(\[*_]*([^\W\d_]+(?:['’-][^\W\d_]+)*)[\"')\]*_.,;:!?]*$", re.U)
_WORD_RE = re.compile(r"\w+", re.U)
_SENT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_STRUCT_RE = re.compile(r"^\s*(?:#{1,6}|[-*\u2022+]|\d+[.)]|[a-zA-Z][.)]|>|\|)")
_RULE_RE = re.compile(r"^\s*(?:[-*_=]{3,}|\|?(?:\s*:?-{2,}:?\s*\|)+\s*:?-*:?\s*)\s*$")
_PLACEHOLDER_WORDS = frozenset("todo tbd item items section point step example idea text xxx na n a insert here etc "
                               "heading title subtitle placeholder lorem".split())
_DET = frozenset("the a an every".split())
_PREP = frozenset("of to in on at by for with from into onto upon than".split())
_CONJ = frozenset("and or nor but".split())
_FUNCTION = frozenset(
    "a about after all also an and any are as at be because been but by can could did do does each for from had has "
    "have he her his how i if in into is it its may more most must my no not of on one only or other our out she "
    "should so some such than that the their them then there these they this those to up was we were what when where "
    "which while who will with would you your".split())
# prompts that ask for text outside English (a translation, a script, emoji): another script is no sign of junk there
_LANGUAGE_RE = re.compile(
    r"translat|\b(?:chinese|japanese|korean|russian|greek|arabic|hebrew|hindi|thai|cyrillic|mandarin|cantonese|kanji|"
    r"emojis?|unicode|spanish|french|german|italian|portuguese|latin|dutch|swedish|turkish|vietnamese|persian|"
    r"polish|esperanto|ipa|phonetic|pronunciation|pronounce)\b", re.I)
_CODE_RE = re.compile(r"```|\b(?:code|coding|program|programming|function|regex|regular expression|html|css|sql|"
                      r"script|python|java|javascript|c\+\+|latex|math|equation|formula|symbols?|emojis?|ascii|json|"
                      r"xml|markdown|table|grid|matri(?:x|ces))\b", re.I)


@lru_cache(maxsize=1)
def _tokenizer():
    from tokenizers import Tokenizer

    from .encoder import encoder_path

    tok = Tokenizer.from_file(str(encoder_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def _latin(c: str) -> bool:
    if ord(c) < 0x250:  # ASCII, Latin-1, Latin Extended-A/B
        return True
    name = unicodedata.name(c, "")
    return name.startswith(("LATIN", "MODIFIER LETTER", "COMBINING", "IPA")) or unicodedata.category(c) in (
        "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sc", "Sm", "Zs")


def _ramp(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def _piece_lengths(words: Sequence[str]) -> list[float]:
    """Characters per WordPiece of each alphabetic word (an English word: 4+; a random letter string: about 1.5)."""
    if not words:
        return []
    enc = _tokenizer().encode_batch([w.lower() for w in words], add_special_tokens=False)
    return [len(w) / max(1, len(e.tokens)) if "[UNK]" not in e.tokens else 0.0 for w, e in zip(words, enc)]


def _name_like(word: str) -> bool:
    """A name, an acronym or a brand (``Paris``, ``NASA``, ``PCIe``, ``iPhone``): title case, all capitals, or at most
    two switches between lower and upper case (random letters switch at every other letter)."""
    if word.isupper() or (word[0].isupper() and word[1:].islower()):
        return True
    letters = [c.isupper() for c in word if c.isalpha()]
    return sum(a != b for a, b in zip(letters, letters[1:])) <= 2 and any(letters)


def _not_language(words: Sequence[str], cpp: Sequence[float]) -> float:
    """Share of alphabetic words cut into short pieces (under 2.5 characters a piece; 1-2 letter words and names in
    title case aside)."""
    judged = [c for w, c in zip(words, cpp) if len(w) >= 3 and not _name_like(w)]
    if not judged:
        return 0.0
    return sum(c < 2.5 for c in judged) / len(judged)


def _alpha_words(text: str) -> list[str]:
    """Whitespace tokens that are a word and nothing else (quotes and punctuation around it aside), and the letter
    runs of tokens mixing letters with symbols (``xQz#wK!rt``); code, formulas, paths and identifiers (``sqrt(5)``,
    ``fn1``, ``a.b``, ``snake_case``) are not asked whether they are English."""
    out = []
    for tok in _TOKEN_RE.findall(text):
        m = _ALPHA_TOKEN_RE.match(tok)
        if m:
            out.append(m.group(1))
        elif not re.search(r"[\d._/\\()=:<>{}\[\]@]|^[#$%&*]", tok):
            out.extend(w for w in re.findall(r"[^\W\d_]{3,}", tok))
    return out


def _broken_order(tokens: Sequence[str], final_ends: bool = True) -> tuple[int, int]:
    """(impossible transitions, function words) in a token sequence: a determiner followed by a function word or a
    sentence end; a preposition or conjunction followed by a conjunction, auxiliary or sentence end (``of and``,
    ``and.``); a word repeated at once (``the the``)."""
    bad = n_func = 0
    words = [re.sub(r"^\W+|\W+$", "", t).lower() if not re.search(r"[\"“”]", t) else "" for t in tokens]
    for i, w in enumerate(words):
        if w not in _FUNCTION or re.fullmatch(r"[A-Za-z][.)]", tokens[i]):  # (list labels "A." / "a)")
            continue
        n_func += 1
        ends = bool(re.search(r"[.!?;:]$", tokens[i])) or (final_ends and i == len(words) - 1)
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _DET:
            bad += ends or nxt in _FUNCTION and nxt not in ("most", "other", "only", "more", "one", "first", "same")
        elif w in _PREP or w in _CONJ:
            bad += (ends and w in _CONJ) or nxt in _CONJ
        if nxt == w and w in (_DET | _PREP | _CONJ):
            bad += 1
    return bad, n_func


def _repeated(units: Sequence[str]) -> float:
    """Share of units (normalised, 3+ words) that repeat an earlier one."""
    seen: set[str] = set()
    rep = n = 0
    for u in units:
        key = " ".join(_WORD_RE.findall(u.lower()))
        if len(key.split()) < 3:
            continue
        n += 1
        rep += key in seen
        seen.add(key)
    return rep / n if n else 0.0


def _repeated_grams(words: Sequence[str], k: int = 8) -> float:
    grams = [tuple(words[i: i + k]) for i in range(len(words) - k + 1)]
    return 1.0 - len(set(grams)) / len(grams) if len(grams) >= 4 else 0.0


def _hollow_lines(lines: Sequence[str]) -> tuple[int, int]:
    """(structural lines with no content, structural lines): a header, bullet, numbered item or table row whose
    words are all placeholders ("Section 2", "TODO", "...", nothing), or a rule."""
    hollow = struct = 0
    for ln in lines:
        if _RULE_RE.match(ln):
            struct += 1
            hollow += 1
            continue
        if not _STRUCT_RE.match(ln):
            continue
        struct += 1
        words = _WORD_RE.findall(ln.lower())
        hollow += all((w in _PLACEHOLDER_WORDS or len(w) == 1) and not w.isdigit() for w in words[1:]) and (
            not words or words[0].isdigit() or words[0] in _PLACEHOLDER_WORDS or len(words[0]) == 1)
    return hollow, struct


def _segments(text: str) -> list[str]:
    """Lines, long lines cut into sentences, long sentences into 16-word windows."""
    out = []
    for ln in text.splitlines():
        for sent in _SENT_RE.split(ln):
            toks = sent.split()
            if not toks:
                continue
            for i in range(0, len(toks), 16):
                out.append(" ".join(toks[i: i + 16]))
    return out


def text_junk(prompt: str, output: str) -> dict[str, float]:
    """The gate's text evidence for one output (each in [0, 1], 0 for real answers; see the module docstring):
    returns ``{question: evidence}`` for the questions asked of this output (``{"empty": 1.0}`` for a blank one)."""
    o = output or ""
    visible = [c for c in o if not c.isspace()]
    if not visible:
        return {"empty": 1.0}
    ev: dict[str, float] = {}
    asks_symbols = bool(re.search(r"emoji|symbol|ascii|unicode|character|punctuat", prompt, re.I))
    tokens = _TOKEN_RE.findall(o)
    alpha = _alpha_words(o)
    _character_evidence(prompt, o, visible, alpha, asks_symbols, ev)
    lines = [ln for ln in o.splitlines() if ln.strip()]
    bad, n_func = _broken_order(tokens)
    ev["word_order"] = _ramp(bad / n_func, 0.12, 0.25) if n_func >= 4 else (1.0 if bad >= 2 else 0.0)
    if len(tokens) >= 2 and (cut := _cut_off(tokens[-1])) is not None:
        ev["cut_off"] = cut
    if (no_grammar := _no_grammar(prompt, lines, tokens)) is not None:
        ev["no_grammar"] = no_grammar
    sents = [s for s in _SENT_RE.split(o) if s.strip()]
    ev["repeated_sentences"] = _ramp(_repeated(sents), 0.4, 0.6)
    words = _WORD_RE.findall(o.lower())
    ev["repeated_grams"] = _ramp(_repeated_grams(words), 0.6, 0.8)
    hollow, struct = _hollow_lines(lines)
    content = [w for w in alpha if len(w) >= 3 and w.lower() not in _PLACEHOLDER_WORDS]
    ev["hollow_structure"] = (_ramp(hollow / len(lines), 0.5, 0.8) if len(lines) >= 2 and struct and len(content) < 4
                              else 0.0)
    if (echo := _echo(prompt, words)) is not None:
        ev["echo"] = echo
    segs = _segments(o)
    if len(segs) >= 2:
        ev["padding"] = _padding(segs, ev)
        if hollow >= 2:  # a skeleton of headers or bullets around an answer
            ev["padding"] = max(ev["padding"], _ramp(hollow / len(lines), 0.3, 0.5))
    return ev


def _character_evidence(prompt: str, o: str, visible: Sequence[str], alpha: Sequence[str], asks_symbols: bool,
                        ev: dict[str, float]) -> None:
    """Adds to ``ev`` the evidence of the characters and words: no word at all (``empty``), another script than the
    prompt's (``foreign_script``), words that are not language (``not_language``) and symbols (``symbols``), each
    where the prompt does not ask for them."""
    if not _WORD_RE.search(o) and not asks_symbols:
        ev["empty"] = 1.0
    # another script than the prompt's, in an exchange that is not about languages
    foreign = sum(not _latin(c) for c in visible) / len(visible)
    p_visible = [c for c in prompt if not c.isspace()]
    p_foreign = sum(not _latin(c) for c in p_visible) / max(1, len(p_visible))
    if p_foreign < 0.05 and not _LANGUAGE_RE.search(prompt):
        ev["foreign_script"] = _ramp(foreign, 0.1, 0.3)
    cpp = _piece_lengths(alpha)
    if not _LANGUAGE_RE.search(prompt):  # (a translation is not English)
        ev["not_language"] = (_ramp(_not_language(alpha, cpp), 0.35, 0.6) if len(alpha) >= 2
                              else float(len(alpha) == 1 and len(alpha[0]) >= 6 and cpp[0] < 2.5))
    # symbols: visible characters that are neither letters, digits nor ordinary punctuation
    sym = sum(not (c.isalnum() or c in ".,;:!?'\"()-–—/%$&*#|") for c in visible) / len(visible)
    if not _CODE_RE.search(prompt) and not asks_symbols:
        ev["symbols"] = _ramp(sym, 0.15, 0.3) if len(visible) >= 3 else 0.0


def _cut_off(last: str) -> float | None:
    """Evidence that the output is cut off, from its last token (None when it ends on a stop): 0.3 when the last
    word is a fragment (cut into short pieces, or a hyphen) or a determiner, preposition or conjunction with nothing
    after it."""
    last_word = re.sub(r"^\W+", "", last).lower()
    if re.search(r"[.!?:;)\]\"'`*]$", last):
        return None
    fragment = last.endswith("-") or (last_word.isalpha() and len(last_word) >= 3
                                      and _piece_lengths([last_word])[0] < 2.0)
    dangling = last_word in (_DET | _PREP | _CONJ)
    return 0.3 if fragment or dangling else 0.0


def _no_grammar(prompt: str, lines: Sequence[str], tokens: Sequence[str]) -> float | None:
    """Words with no grammar: 6+ words in running text (not list lines, not formulas), almost no function words
    (None when the output has no such running text, or the prompt is about languages). ``junk_scores`` counts it
    only for an output unrelated to the prompt (a list of related words is an answer)."""
    prose = [t for ln in lines if not _STRUCT_RE.match(ln) for t in ln.split()]
    if (len(prose) >= 6 and len(prose) >= 0.5 * len(tokens) and len(_alpha_words(" ".join(prose))) >= 0.8 * len(prose)
            and not _LANGUAGE_RE.search(prompt)):
        n_f = sum(re.sub(r"^\W+|\W+$", "", t).lower() in _FUNCTION for t in prose)
        return _ramp(0.12 - n_f / len(prose), 0.0, 0.06) * (len(prose) >= 10 or 0.5)
    return None


def _echo(prompt: str, words: Sequence[str]) -> float | None:
    """Evidence that the output is the prompt said back (its lower-cased ``words``): 1 for the prompt or the
    instruction itself, else how much of it is copied from the prompt and holds the instruction (None when the
    output is too short to tell)."""
    p_words = _WORD_RE.findall(prompt.lower())
    p_grams = {tuple(p_words[i: i + 3]) for i in range(len(p_words) - 2)}
    o_grams = [tuple(words[i: i + 3]) for i in range(len(words) - 2)]
    norm_o, norm_p = " ".join(words), " ".join(p_words)
    instr_words = _WORD_RE.findall(prompt.split("\n\n")[0].lower())
    norm_i = " ".join(instr_words)
    if norm_o and (norm_o == norm_p or norm_o == norm_i or (len(instr_words) >= 3 and norm_i in norm_o
                                                              and len(words) <= len(instr_words) + 3)):
        return 1.0
    if len(o_grams) >= 3 and p_grams:
        copied = sum(g in p_grams for g in o_grams) / len(o_grams)
        f_grams = {tuple(instr_words[i: i + 3]) for i in range(len(instr_words) - 2)}
        holds = sum(g in set(o_grams) for g in f_grams) / len(f_grams) if f_grams else 0.0
        return _ramp(copied, 0.85, 0.95) * _ramp(holds, 0.5, 0.8)
    return None


def _padding(segs: Sequence[str], ev: dict[str, float]) -> float:
    """Padding: the share of the output's words in segments (``_segments``) that are junk on their own, by the
    questions ``ev`` asked of the whole output (not language, another script, symbols) and by their word order."""
    junk_words = total = 0
    for seg in segs:
        toks = seg.split()
        total += len(toks)
        a = _alpha_words(seg)
        s_vis = [c for c in seg if not c.isspace()]
        junk = (
            (len(a) >= 3 and "not_language" in ev and _not_language(a, _piece_lengths(a)) >= 0.5)
            or (len(s_vis) >= 6 and sum(not _latin(c) for c in s_vis) / len(s_vis) >= 0.5
                and "foreign_script" in ev)
            or (len(s_vis) >= 6 and "symbols" in ev and sum(not (c.isalnum() or c in ".,;:!?'\"()-/%$&*#|")
                                                            for c in s_vis) / len(s_vis) >= 0.4)
            or (len(toks) >= 6 and (lambda b: b[1] >= 3 and b[0] / b[1] >= 0.3)(_broken_order(toks, False)))
        )
        junk_words += len(toks) if junk else 0
    return _ramp(junk_words / max(1, total), 0.1, 0.25)


def junk_scores(prompts: Sequence[str], outputs: Sequence[str], cos: np.ndarray | None = None,
                lm: np.ndarray | None = None) -> np.ndarray:
    """``junk(x, o)`` in [0, 1] per output: the largest of the text evidence (:func:`text_junk`) and, where the
    MiniLM cosine ``cos`` of prompt and output is given, an opening unrelated to the prompt: for 12+ words, 0.3 of the
    way to junk at cosine 0.08 (from 0.2) and all the way under 0.04 (from 0.09; 99% of real answers are above 0.11);
    for 3-11 words, under 0.05 (a short answer may be terse); and where the
    language model's ``(ll, ll_shuffled)`` pairs ``lm`` are given (lm_evidence.py), text it does not read as language."""
    from .lm_evidence import lm_junk

    out = np.zeros(len(outputs), np.float64)
    lm_j = lm_junk(lm) if lm is not None else np.zeros(len(outputs))
    for i, (p, o) in enumerate(zip(prompts, outputs)):
        ev = text_junk(p, o)
        unrelated = _ramp(0.3 - float(cos[i]), 0.0, 0.15) if cos is not None else 0.0
        if "no_grammar" in ev:
            ev["no_grammar"] *= unrelated
        j = max(ev.values()) if ev else 0.0
        n = len(_WORD_RE.findall(o or ""))
        if cos is not None and n >= 3:
            c = float(cos[i])
            j = max(j, max(_ramp(0.09 - c, 0.0, 0.05), 0.3 * _ramp(0.2 - c, 0.0, 0.12)) if n >= 12
                    else _ramp(0.05 - c, 0.0, 0.04))
        out[i] = max(j, float(lm_j[i]))
    return out


def explain(prompt: str, output: str) -> dict[str, float]:
    """The non-zero evidence of :func:`text_junk` (for reading why an output was gated)."""
    return {k: round(v, 3) for k, v in text_junk(prompt, output).items() if v > 0}
