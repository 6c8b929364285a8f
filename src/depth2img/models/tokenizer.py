"""Build a small CLIP-compatible BPE tokenizer offline (no hub download).

The shipped tiny base model and the tests need a tokenizer that loads with
``CLIPTokenizer.from_pretrained`` exactly like a real SD tokenizer, but nothing may be downloaded.
We build one from a word list: every character is a token (with and without the end-of-word
marker ``</w>``), and each listed word gets the chain of merges that spells it, so known words
are single tokens and unknown words fall back to characters.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
_ALPHABET = string.ascii_lowercase + string.digits + ",.-'!?:;()/&+"


def words_from_texts(texts: Iterable[str]) -> list[str]:
    """Lower-cased alphanumeric words of ``texts``, in first-seen order, without repeats."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            seen.setdefault(word, None)
    return list(seen)


def build_clip_tokenizer(words: Iterable[str], model_max_length: int = 32) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary holds single characters plus ``words``.

    Args:
        words: lower-case words that should be single tokens.
        model_max_length: padded sequence length (SD uses 77; tiny models use fewer).

    Returns:
        A tokenizer; ``save_pretrained`` writes a folder that ``CLIPTokenizer.from_pretrained``
        and diffusers pipelines load.
    """
    vocab: dict[str, int] = {}
    for char in _ALPHABET:
        vocab.setdefault(char, len(vocab))
    for char in _ALPHABET:
        vocab.setdefault(char + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    seen_merges: set[tuple[str, str]] = set()
    for word in words:
        word = word.lower()
        if len(word) < 2 or any(c not in _ALPHABET for c in word):
            continue
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        # Merge left to right: "abc" -> "ab" + "c</w>" -> "abc</w>".
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in seen_merges:
                seen_merges.add(pair)
                merges.append(pair)
            merged = pieces[0] + pieces[1]
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    vocab.setdefault(BOS_TOKEN, len(vocab))
    vocab.setdefault(EOS_TOKEN, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
