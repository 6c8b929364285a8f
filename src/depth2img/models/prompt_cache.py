"""In-memory cache of prompt embeddings of frozen text encoders (an LRU dict).

Training encodes every caption of every batch, but captions repeat: caption dropout makes a
large share of them "" (half in the ControlNet recipes), and captioned shards reuse templates.
For SDXL the two text encoders (CLIP-L + OpenCLIP-bigG, 818 M parameters) are a real part of a
small-batch step. With frozen encoders a prompt's embedding never changes, so it is computed
once and looked up afterwards::

    cache = PromptEmbedCache(max_entries=1024)
    embeds = cache.encode(encode_fn, [text_encoder, text_encoder_2], captions)

Only the prompts not in the cache are encoded (one batch, each distinct prompt once); the
result equals ``encode_fn(captions)`` row for row (same tensors, up to the batch-size
dependence of the encoder's kernels, which is below float32 rounding on CPU).

Valid only while the encoders are frozen and their weights do not change: :meth:`encode`
refuses to run when any encoder parameter requires grad or an encoder is in training mode,
and :meth:`clear` must be called after new weights are loaded into them.

Memory: one entry is ``L * D + P`` values in the encoder's dtype on its device; SDXL
(77 x 2048 + 1280) in float32 is 0.64 MB, so 1,024 entries take ~650 MB (half in bfloat16).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch

from depth2img.models.families.base import PromptEmbeds


class TextEncodersNotFrozen(RuntimeError):
    """The cache was asked to serve embeddings of text encoders that are being trained."""


def check_frozen(encoders: Iterable[torch.nn.Module | None]) -> None:
    """Raise :class:`TextEncodersNotFrozen` when an encoder trains (a parameter requires grad,
    e.g. LoRA on the text encoder, or the module is in training mode: dropout)."""
    for encoder in encoders:
        if encoder is None:
            continue
        if encoder.training or any(p.requires_grad for p in encoder.parameters()):
            raise TextEncodersNotFrozen(
                f"the prompt-embedding cache needs frozen text encoders, but "
                f"{type(encoder).__name__} trains (requires_grad or train mode): turn the cache "
                "off (model.text_embed_cache=0) when training text encoders"
            )


class PromptEmbedCache:
    """LRU ``prompt -> (hidden (L, D), pooled (P,) or None)``.

    Args:
        max_entries: prompts kept (least recently used dropped first); >= 1.
    """

    def __init__(self, max_entries: int):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (call after loading new text-encoder weights)."""
        self._entries.clear()

    def encode(
        self,
        encode_fn: Callable[[list[str]], PromptEmbeds],
        encoders: Iterable[torch.nn.Module | None],
        prompts: Iterable[str],
    ) -> PromptEmbeds:
        """``encode_fn(prompts)`` with cached rows: hidden (B, L, D), pooled (B, P) or None.

        Args:
            encode_fn: the family's prompt encoder for a list of prompts (e.g.
                ``lambda p: denoiser.encode_prompts(p, device)``); called once, with the
                distinct prompts that are not cached, or not at all.
            encoders: the text encoders behind ``encode_fn`` (checked to be frozen).
            prompts: the batch's prompts.

        Raises:
            TextEncodersNotFrozen: see :func:`check_frozen`.
        """
        check_frozen(encoders)
        prompts = list(prompts)
        found: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for prompt in prompts:
            if prompt in found:
                continue
            entry = self._entries.get(prompt)
            if entry is not None:
                self._entries.move_to_end(prompt)
                found[prompt] = entry
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        self.misses += len(missing)  # encoder rows computed
        self.hits += len(prompts) - len(missing)  # rows served without an encoder row
        if missing:
            embeds = encode_fn(missing)
            for i, prompt in enumerate(missing):
                # clone: a row view would keep the whole batch tensor alive
                pooled = None if embeds.pooled is None else embeds.pooled[i].detach().clone()
                entry = (embeds.hidden[i].detach().clone(), pooled)
                found[prompt] = entry
                self._entries[prompt] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        hidden = torch.stack([found[p][0] for p in prompts])
        first_pooled = found[prompts[0]][1] if prompts else None
        pooled = None if first_pooled is None else torch.stack([found[p][1] for p in prompts])
        return PromptEmbeds(hidden, pooled)
