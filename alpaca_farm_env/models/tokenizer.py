"""A byte-level tokenizer built locally (no download): one token per byte, no merges.

Ids 0..255 are the bytes themselves, then ``<pad>`` (256), ``<s>`` (257) and ``</s>`` (258): 259 tokens in all.
Used by the tiny random test models and by the token-level env, where a small ``Discrete`` action space matters.
"""
from __future__ import annotations

from functools import lru_cache

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
BYTE_VOCAB_SIZE = 259


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (the alphabet of the ``ByteLevel`` pre-tokenizer)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def byte_tokenizer(add_bos: bool = True):
    """A ``transformers.PreTrainedTokenizerFast`` over raw UTF-8 bytes.

    ``tokenizer("hé").input_ids == [257, 104, 195, 169]`` (``<s>`` then the bytes; ``add_bos=False`` drops ``<s>``).
    ``padding_side="left"``, as decoder-only batched generation needs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    b2u = _bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab.update({PAD: 256, BOS: 257, EOS: 258})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: every byte stays its own token
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([PAD, BOS, EOS])
    if add_bos:  # like Llama's tokenizer: <s> starts every sequence
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, 257)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, padding_side="left",
        model_max_length=1 << 20,
    )
