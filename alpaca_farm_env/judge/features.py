"""Per-output features for the distilled judge: hand features, and the MiniLM embeddings of :mod:`.encoder`.

Every feature here depends on one (instruction, output) pair only: the judge's score ``s(x, o)`` is a function of
them, which is what makes ``P(o2 beats o1) = sigmoid(s(x, o2) - s(x, o1))`` symmetric in the output order.
"""
from __future__ import annotations

import math
import re
import zlib
from functools import lru_cache
from typing import Sequence

import numpy as np

# the encoder and its cache live in .encoder; re-exported here, where the judge's modules and users import them
from .encoder import (  # noqa: F401
    DEFAULT_MAX_TOKENS,
    EMBED_DIM,
    ENCODER_NAME,
    ENCODER_PACKAGE,
    PROMPT_MAX_TOKENS,
    EmbeddingCache,
    MiniLMEncoder,
    encoder_path,
    text_digest,
)

# ----------------------------------------------------------------------------------------------- hand features
_LIST_RE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", re.M)
_HEADER_RE = re.compile(r"^\s*#{1,6}\s|^\s*\*\*[^*\n]+\*\*\s*:?\s*$", re.M)
_REFUSAL_RE = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|as an ai|as a language model|i cannot|i can'?t|i'?m not able|"
    r"i am not able|i'?m unable|i am unable|i do not have (?:access|the ability)|i don'?t have (?:access|the ability))\b",
    re.I,
)
_WORD_RE = re.compile(r"\w+", re.U)
# Prompt-template fragments a weak or base model echoes into its answer (Alpaca "### Instruction:", chat-ML tags,
# "User:/Assistant:" turns): GPT-4 never prefers such an output, and none of the 21 annotated models does this.
_TEMPLATE_RE = re.compile(
    r"#{2,}\s*(?:instruction|input|response)\b|<\|(?:im_start|im_end|endoftext|user|assistant|system)\|>|"
    r"^\s*(?:user|assistant|human|instruction|response)\s*:",
    re.I | re.M,
)

# Degeneracy: a list item with nothing (or one short token) after its marker, and sentence boundaries.
_BARE_ITEM_RE = re.compile(r"^\s*(?:[-*\u2022+]|\d+[.):]|[a-zA-Z][.)]|\(\w{1,3}\))\s*(?:\[[ xX]?\])?\s*\S?\s*$"
                           r"|^\W*(?:\w+\W+){0,2}\w*\W*:\W*$")  # or a label with nothing after it: "Step 2:", "**Tips:**"
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
# Function words: ordinary English prose is about 40-50% of them; lorem ipsum, gibberish, keyword lists ~0%.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves also may might must shall one many much s t don isn aren wasn
""".split())

# Function words that never follow "the", "a" or "an" in English ("the most", "a few", "the other" are fine).
_CORE_FUNCTION_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those i you he she we they me my your our their them him her his us what which who whom how why when where do "
    "does did can could would should will shall may might must not nor so than then there here into onto upon".split()
)

HAND_FEATURES = (
    "log_chars", "log_words", "log_words_sq", "words_cap_50", "words_cap_150", "words_cap_400", "log_lines",
    "list_items", "headers", "bold", "code_block", "refusal", "refusal_start", "ends_with_punct", "unique_word_ratio",
    "repeated_lines", "instr_overlap", "echo_instruction", "non_ascii", "question_marks", "empty",
    "log_words_x_log_instr_words", "repeated_trigrams", "template_markers", "ends_mid_sentence",
    # degeneracy: how much information the text carries, whether it is language, whether it is about the
    # instruction or copied from it, hollow structure
    "redundancy", "log_info_chars", "log_unique_words", "stopword_excess", "low_stopwords", "oov_ratio",
    "alpha_ratio", "content_overlap", "copied_from_prompt", "content_from_prompt", "bare_list_items",
    "short_lines", "repeated_sentences",
    # the same beyond what real answers show (a linear head cannot tell "some rare words: specific" from "all rare
    # words: not language" otherwise): hinges at about the 99th percentile of the 21 models' answers
    "oov_excess", "redundancy_excess", "copied_excess", "hollow_lines",
    # word order: "the"/"a"/"an" followed by another function word ("the of", "a and") is rare in English and
    # common in shuffled or reversed word lists
    "broken_determiners",
    # all of it in one number: how surely the text is degenerate (0 for >99% of real answers)
    "degeneracy", "padding",
)
# Features that grow with the amount of output: the global head credits them only in proportion to the output's
# relevance to the instruction (``relevance_gate``), so a long off-topic or content-free output earns no length credit.
SIZE_FEATURES = ("log_chars", "log_words", "log_words_sq", "words_cap_50", "words_cap_150", "words_cap_400",
                 "log_lines", "list_items", "headers", "bold", "log_words_x_log_instr_words", "log_info_chars",
                 "log_unique_words")


@lru_cache(maxsize=1)
def english_vocabulary() -> frozenset[str]:
    """The whole lower-case words of the encoder's WordPiece vocabulary (about 21.7k English words): a word outside
    it is rare, a name, or not English (lorem ipsum, random letters)."""
    vocab = encoder_path() / "vocab.txt"
    with open(vocab, encoding="utf-8") as f:
        return frozenset(w for w in (ln.strip() for ln in f) if w.isalpha() and w.islower())


def _repeated_trigrams(words: Sequence[str]) -> float:
    """Fraction of word 3-grams that repeat an earlier one (degenerate looping text is near 1, prose near 0)."""
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def hand_features(instruction: str, output: str) -> np.ndarray:
    """Hand-made per-output features (see ``HAND_FEATURES`` for the order)."""
    o = output or ""
    words = _WORD_RE.findall(o.lower())
    nw = len(words)
    instr_words = set(_WORD_RE.findall(instruction.lower()))
    lines = [ln.strip() for ln in o.splitlines() if ln.strip()]
    # the length features count content words only: repeated sentences, bare list items and sentences that are not
    # English (lorem ipsum, random letters) earn no length credit (for a normal answer nc == nw)
    nc = content_word_count(o)
    lw = math.log1p(nc)
    head = o.strip()[:200]
    feats = [
        math.log1p(len(o)),
        lw,
        lw * lw / 10.0,
        min(nc, 50) / 50.0,
        min(nc, 150) / 150.0,
        min(nc, 400) / 400.0,
        math.log1p(len(lines)),
        math.log1p(len(_LIST_RE.findall(o))),
        math.log1p(len(_HEADER_RE.findall(o))),
        math.log1p(o.count("**") // 2),
        float("```" in o),
        float(bool(_REFUSAL_RE.search(o))),
        float(bool(_REFUSAL_RE.search(head))),
        float(o.rstrip()[-1:] in ".!?)]}\"'`*" if o.strip() else 0.0),
        len(set(words)) / nw if nw else 1.0,  # (nothing repeats in an empty output)
        1.0 - len(set(lines)) / len(lines) if lines else 0.0,
        len(instr_words & set(words)) / len(instr_words) if instr_words else 0.0,
        float(bool(instruction.strip()) and instruction.strip()[:60].lower() in o.lower()),
        sum(ord(c) > 127 for c in o) / len(o) if o else 0.0,
        math.log1p(o.count("?")),
        float(nw == 0),
        lw * math.log1p(len(instr_words)) / 10.0,
        _repeated_trigrams(words),
        math.log1p(len(_TEMPLATE_RE.findall(o))),
        # cut off mid-sentence: ends on a word or comma after a non-trivial answer (generation-length truncation)
        # (a one-sentence answer without a final stop -- a title, a phrase -- is not cut off)
        float(nw >= 5 and bool(re.search(r"[\w,;:\-]\s*$", o)) and not o.rstrip().endswith("```")
              and (nw >= 25 or bool(re.search(r"[.!?:]\s", o.strip())))),
    ]
    feats += _degeneracy_features(instruction, o, words, lines)
    feats.append(math.log1p(nw) - lw)  # padding: words that earned no length credit
    return np.asarray(feats, dtype=np.float32)


def content_word_count(output: str) -> int:
    """Words of the output's distinct sentences (and lines) that read as English, list markers and labels aside:
    a sentence repeating an earlier one, a bare list item and a sentence whose words are mostly outside the English
    vocabulary (at least 3 words, over half unknown) count zero."""
    vocab = english_vocabulary()
    seen: set[str] = set()
    n = 0
    for piece in _SENT_SPLIT_RE.split(output or ""):
        piece = piece.strip()
        ws = _WORD_RE.findall(piece.lower())
        if not ws:
            continue
        norm = " ".join(ws)
        if norm in seen or (len(piece) <= 60 and _BARE_ITEM_RE.match(piece)):
            continue
        seen.add(norm)
        alpha = [w for w in ws if w.isalpha() and len(w) > 1]
        if len(alpha) >= 3 and sum(w not in vocab for w in alpha) > len(alpha) / 2:
            continue
        n += len(ws)
    return n


def _degeneracy_features(prompt: str, o: str, words: Sequence[str], lines: Sequence[str]) -> list[float]:
    """Features of content-free, non-language, off-topic, echoed and hollow outputs (see ``HAND_FEATURES``)."""
    nw = len(words)
    raw = o.encode("utf-8")
    packed = len(zlib.compress(raw, 6)) - 8 if raw else 0  # ~8 bytes of zlib header/trailer
    uniq = set(words)
    n_stop = sum(w in STOPWORDS for w in words)
    stop_ratio = n_stop / nw if nw else 0.0
    vocab = english_vocabulary()
    alpha = [w for w in words if w.isalpha() and len(w) > 1]
    oov = sum(w not in vocab for w in alpha) / len(alpha) if alpha else 0.0
    visible = [c for c in o if not c.isspace()]
    alpha_ratio = sum(c.isalpha() for c in visible) / len(visible) if visible else 1.0
    p_words = _WORD_RE.findall(prompt.lower())
    p_set = set(p_words)
    p_content = {w for w in p_set if w not in STOPWORDS and len(w) > 2}
    content = [w for w in words if w not in STOPWORDS and len(w) > 2]
    p_grams = {tuple(p_words[i : i + 3]) for i in range(len(p_words) - 2)}
    o_grams = [tuple(words[i : i + 3]) for i in range(nw - 2)]
    sents = [s.strip().lower() for s in _SENT_SPLIT_RE.split(o) if len(s.strip()) > 1]
    items = _LIST_RE.findall(o)
    bare = sum(len(ln) <= 60 and bool(_BARE_ITEM_RE.match(ln)) for ln in lines)
    dets = [i for i, w in enumerate(words[:-1]) if w in ("the", "a", "an")]
    broken = sum(words[i + 1] in _CORE_FUNCTION_WORDS for i in dets)
    copied = sum(g in p_grams for g in o_grams) / len(o_grams) if o_grams else 0.0
    hollow = bare
    # How surely the text is degenerate, whatever the instruction wants: the largest of several signs, each ramped
    # from about the most extreme value real answers show (the 21 annotated models' answers and the davinci003
    # references: each sign is 0 for over 99% of them) to a value only degenerate text reaches.
    # (Not English -- lorem ipsum, random letters -- is a sign only for an output unrelated to the instruction: a
    # translation is not English either; ``build_features`` adds it with the MiniLM relevance.)
    first = prompt.strip().split("\n\n")[0]
    f_words = _WORD_RE.findall(first.lower())
    f_grams = {tuple(f_words[i : i + 3]) for i in range(len(f_words) - 2)}
    o_gram_set = set(o_grams)
    signs = [
        _ramp(1.0 - packed / len(raw), 0.75, 0.9) if len(raw) >= 100 else 0.0,  # loops: compresses like a repeat
        _ramp(1.0 - len(set(sents)) / len(sents), 0.4, 0.7) if len(sents) >= 4 else 0.0,  # repeated sentences
        _ramp(hollow / len(lines), 0.7, 0.95) if len(lines) >= 4 else 0.0,  # list markers, labels, no content
        # the prompt said back: nearly all of the output is the prompt's, and it holds most of the instruction (its
        # first paragraph; an answer that edits the input copies the input, one that restates the question adds to it)
        _ramp(copied, 0.8, 0.95) if len(o_grams) >= 5 and len(f_grams) >= 3
        and sum(g in o_gram_set for g in f_grams) >= 0.6 * len(f_grams) else 0.0,
        _ramp(broken / len(dets), 0.2, 0.4) if len(dets) >= 6 else 0.0,  # shuffled word order
        # the prompt's words, repeated, without sentences (a real list of the prompt's words names each once)
        float(nw >= 15 and stop_ratio < 0.1 and len(uniq) < 0.5 * nw
              and sum(w in p_set for w in content) >= 0.7 * max(len(content), 1)),
        # the prompt echoed inside a chat or prompt template
        float(bool(_TEMPLATE_RE.search(o)) and len(f_grams) >= 3
              and sum(g in o_gram_set for g in f_grams) >= 0.6 * len(f_grams)),
    ]
    return [
        max(0.0, 1.0 - packed / len(raw)) if raw else 0.0,
        math.log1p(max(packed, 0)),
        math.log1p(len(uniq)),
        # function words beyond 30% (chatty or generic text); fewer earn nothing (else lorem ipsum, random letters
        # and keyword lists would earn what lists and dense answers do); a short answer's ratio says little
        max(0.0, stop_ratio - 0.3) * min(1.0, nw / 20.0),
        max(0.0, 0.25 - stop_ratio) * 4.0 if nw >= 8 else 0.0,
        oov,
        alpha_ratio,
        len(p_content & uniq) / len(p_content) if p_content else 0.0,
        sum(g in p_grams for g in o_grams) / len(o_grams) if o_grams else 0.0,
        sum(w in p_set for w in content) / len(content) if content else 0.0,
        math.log1p(bare) + (bare / max(len(items), bare, 1)),
        sum(len(_WORD_RE.findall(ln)) <= 2 for ln in lines) / len(lines) if len(lines) >= 3 else 0.0,
        1.0 - len(set(sents)) / len(sents) if sents else 0.0,
    ] + [
        max(0.0, oov - 0.3) / 0.7 if len(alpha) >= 5 else 0.0,
        max(0.0, (1.0 - packed / len(raw)) - 0.65) / 0.35 if len(raw) >= 100 else 0.0,
        max(0.0, sum(g in p_grams for g in o_grams) / len(o_grams) - 0.5) * 2.0 if len(o_grams) >= 5 else 0.0,
        math.log1p(sum(len(_WORD_RE.findall(ln)) <= 2 for ln in lines)) if len(lines) >= 4 else 0.0,
        broken / len(dets) if len(dets) >= 3 else 0.0,
        max(signs),
    ]


def _ramp(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def full_prompt(instruction: str, inp: str) -> str:
    """The text embedded for the instruction side (AlpacaEval folds the input into the instruction the same way)."""
    return instruction + ("\n\n" + inp if inp else "")


def build_features(
    encoder: MiniLMEncoder,
    instructions: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    progress: bool = False,
) -> np.ndarray:
    """Feature matrix for (instruction, input, output) triples: ``[hand | cos(x,o) | e(o) | e(x)*e(o) | e(x)*log_words(o)]``."""
    prompts = [full_prompt(i, x) for i, x in zip(instructions, inputs)]
    ex, eo = embed_pairs(encoder, prompts, outputs, progress)
    et = encoder.encode([output_tail(o) for o in outputs], progress=progress, desc="embedding output tails")
    hand = np.stack([hand_features(p, o) for p, o in zip(prompts, outputs)]) if len(outputs) else np.zeros((0, len(HAND_FEATURES)), np.float32)
    cos = (ex * eo).sum(1, keepdims=True)
    # The tail (the last words of a long output): is the end still about the instruction, and about what the output
    # began with? (An answer padded with filler, or one that drifts off, is not.)
    cos_tail = (ex * et).sum(1, keepdims=True)
    head_tail = (eo * et).sum(1, keepdims=True)
    gate = relevance_gate(cos, cos_tail)
    size = [HAND_FEATURES.index(f) for f in SIZE_FEATURES]
    hand = hand.copy()
    n_content = np.expm1(hand[:, HAND_FEATURES.index("log_words")])
    n_lines = np.expm1(hand[:, HAND_FEATURES.index("log_lines")])
    hand[:, size] *= gate
    lw = hand[:, HAND_FEATURES.index("log_words")][:, None]  # gated
    feats = np.concatenate([hand, cos, cos * lw, cos_tail, head_tail, eo, ex * eo, ex * lw / 5.0], axis=1)
    # A degenerate output is judged as no output at all: its features move toward those of the empty output to the
    # same prompt, in proportion to how surely it is degenerate (its text, or an opening -- or, for half, a tail --
    # unrelated to the instruction).
    n_words = np.expm1(hand[:, HAND_FEATURES.index("padding")] + np.log1p(n_content))
    d = degeneracy(hand[:, HAND_FEATURES.index("degeneracy")], cos[:, 0], cos_tail[:, 0], n_content,
                   np.asarray([o != output_tail(o) for o in outputs], bool), hand[:, HAND_FEATURES.index("oov_ratio")],
                   n_words, hand[:, HAND_FEATURES.index("short_lines")], n_lines)[:, None]
    if (d > 0).any():
        e0 = encoder.encode([""])
        empty = {p: hand_features(p, "") for p in set(prompts)}
        h0 = np.stack([empty[p] for p in prompts])
        c0 = ex @ e0[0]
        lw0 = h0[:, HAND_FEATURES.index("log_words")][:, None]
        z = np.zeros((len(prompts), 1), np.float32)
        f0 = np.concatenate([h0, c0[:, None], c0[:, None] * lw0, c0[:, None], z + 1.0, np.repeat(e0, len(prompts), 0),
                             ex * e0, ex * lw0 / 5.0], axis=1)
        feats = (1.0 - d) * feats + d * f0
    return np.concatenate([feats, d], axis=1).astype(np.float32)


def degeneracy(text_sign: np.ndarray, cos: np.ndarray, cos_tail: np.ndarray, n_content: np.ndarray,
               has_tail: np.ndarray, oov: np.ndarray, n_words: np.ndarray, short_lines: np.ndarray,
               n_lines: np.ndarray) -> np.ndarray:
    """How surely each output is degenerate (the largest of these signs): its text's own signs (the
    ``degeneracy`` hand feature); an opening unrelated to the instruction (MiniLM cosine under 0.04, ramping from
    0.09; only for outputs of 12+ content words: a short answer may well be unlike its question); a tail unrelated
    to it (cosine under 0.03, ramping from 0.08: an answer padded with filler). 99% of the 21 models' answers have
    an opening cosine above 0.11 and a tail cosine above 0.07. Two signs count only for an output that is not about
    the instruction (cosine under 0.15, ramping from 0.3): text that is mostly not English words (lorem ipsum,
    random letters -- not a translation), and 4+ lines mostly of one or two words (placeholder lists, section
    headers with nothing under them -- not a list of related words)."""
    unrelated = np.clip((0.3 - cos) / 0.15, 0.0, 1.0)
    rel = np.clip((0.09 - cos) / 0.05, 0.0, 1.0) * (n_content >= 12)
    tail = np.clip((0.08 - cos_tail) / 0.05, 0.0, 1.0) * has_tail
    not_english = np.clip((oov - 0.5) / 0.25, 0.0, 1.0) * unrelated * (n_words >= 5)
    hollow = np.clip((short_lines - 0.6) / 0.3, 0.0, 1.0) * unrelated * (n_lines >= 4)
    return np.maximum.reduce([text_sign, rel, tail, not_english, hollow]).astype(np.float32)


def relevance_gate(cos: np.ndarray, cos_tail: np.ndarray) -> np.ndarray:
    """How much of its size an output is credited for: 0 when its opening is unrelated to the instruction (MiniLM
    cosine below 0.1: 99% of the 21 models' answers are above), 1 from cosine 0.3 on (94% of them); halved at most
    when its tail is unrelated (an answer padded with filler)."""
    g = np.clip((cos - 0.1) / 0.2, 0.0, 1.0)
    g_tail = np.clip((cos_tail - 0.05) / 0.15, 0.0, 1.0)
    return (g * (0.5 + 0.5 * g_tail)).astype(np.float32)


TAIL_WORDS = 32


def output_tail(output: str) -> str:
    """The last ``TAIL_WORDS`` words of an output of more than 1.5 times that many words, else the output itself
    (whose embedding is then the cached one of the output)."""
    words = (output or "").split()
    return " ".join(words[-TAIL_WORDS:]) if len(words) > TAIL_WORDS * 3 // 2 else output


EMBEDDING_FEATURES = ("cos(x,o)", "cos(x,o)*log_words(o)", "cos(x,tail(o))", "cos(o,tail(o))", "e(o)[384]",
                      "e(x)*e(o)[384]", "e(x)*log_words(o)[384]", "degeneracy(x,o)")
N_FEATURES = len(HAND_FEATURES) + 5 + 3 * EMBED_DIM


def embed_pairs(encoder: MiniLMEncoder, prompts: Sequence[str], outputs: Sequence[str],
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM embeddings of the prompts (first 128 word pieces) and of the outputs' openings (the encoder's
    ``max_tokens``), from the on-disk cache where they are there."""
    ex = encoder.encode(prompts, progress=progress, desc="embedding instructions", max_tokens=PROMPT_MAX_TOKENS)
    eo = encoder.encode(list(outputs), progress=progress, desc="embedding outputs")
    return ex, eo
