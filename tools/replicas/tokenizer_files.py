"""Write a CLIP tokenizer folder in the real hub format: ``vocab.json`` + ``merges.txt``.

The public SD/SDXL folders ship ``tokenizer/{vocab.json, merges.txt, tokenizer_config.json,
special_tokens_map.json}`` (no ``tokenizer.json``); transformers builds the fast tokenizer from
those two files at load time. We write the same four files with a vocabulary learned here by byte-
pair encoding on a small word list, in CLIP's layout: the 256 byte-level symbols, the same with the
end-of-word marker ``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``
(the highest id, which CLIP's legacy pooling relies on: it takes the argmax token as the end).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"

# Words that captions of the project's domains use; the merges make them one or a few tokens.
CORPUS = (
    "a photo of the street at night with cars buildings trees road sidewalk snow rain fog day "
    "sunny evening aerial view city river field forest roof house endoscopy tube tissue red pink "
    "bleeding tinted normal light dark bright blue green yellow white black gray sky cloud car "
    "person people walking painting sketch drawing watercolor oil photograph high quality detailed "
    "low worst quality blurry an image scene indoor outdoor room kitchen table chair window door "
    "mountain lake beach sunset sunrise winter summer autumn spring"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table (256 entries)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def learn_bpe(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties: first seen)."""
    table = bytes_to_unicode()
    corpus = Counter(
        tuple([table[b] for b in w.encode()][:-1] + [table[w.encode()[-1]] + END_OF_WORD])
        for w in words
    )
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for word, freq in corpus.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += freq
        if not pairs:
            break
        best = max(pairs, key=lambda p: pairs[p])
        merges.append(best)
        merged: Counter = Counter()
        for word, freq in corpus.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        corpus = merged
    return merges


def build_vocab(num_merges: int = 256) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-layout vocabulary and merges (``len(vocab) == 512 + len(merges) + 2``)."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + END_OF_WORD for s in symbols]
    merges = learn_bpe(CORPUS, num_merges)
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_clip_tokenizer(folder: Path, pad_token: str, model_max_length: int = 77) -> int:
    """Write the four tokenizer files into ``folder`` (replacing what is there).

    Args:
        pad_token: ``"<|endoftext|>"`` (OpenAI CLIP: SD1.x, SDXL's first tokenizer) or ``"!"``
            (OpenCLIP: SD2, SDXL's ``tokenizer_2``), as the public folders have it.

    Returns:
        The vocabulary size (the text encoder's ``vocab_size`` must be at least this).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    vocab, merges = build_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(
        special,
        add_prefix_space=False,
        do_lower_case=True,
        errors="replace",
        model_max_length=model_max_length,
        tokenizer_class="CLIPTokenizer",
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)
