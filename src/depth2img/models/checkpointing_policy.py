"""Gradient-checkpointing policies for diffusers models, and a meter for what they keep alive.

diffusers' ``enable_gradient_checkpointing()`` recomputes every ResNet block and every transformer
block in the backward pass: for the SD2-depth UNet at 512 px that is 0.596 TFLOP more per sample
on top of fwd + bwd = 2.409 TFLOP (x1.25; counted by ``scripts/count_flops.py``). The policies
here trade differently:

``full``
    diffusers' default (every ResNet and transformer block recomputed).
``attention``
    only the transformer blocks (self/cross-attention + feed-forward) are checkpointed.
``attention_hires``
    only the transformer blocks at the highest-resolution attention level (>= ``HIRES_TOKENS``
    tokens): they hold most of the activation memory (attention over 4096 tokens) but a minority
    of the FLOPs, where SDXL's deep level (10 transformer layers on 1024 tokens) is the reverse.
``resnets``
    only the ResNet blocks.
``save_matmuls``
    selective activation checkpointing (``torch.utils.checkpoint`` with a policy): inside every
    block diffusers would checkpoint, the outputs of matmuls, convolutions and attention kernels
    are saved and everything else (norms, activations, elementwise ops) is recomputed. No
    matmul/conv/attention FLOP is repeated (FLOPs per sample = fwd + bwd), while the
    norm/activation outputs, a large share of a UNet's activation memory, are not stored.

``enable_selective_checkpointing(unet, policy)`` turns one on; ``none`` turns checkpointing off.
``LiveTensorMeter`` measures the bytes a forward pass leaves alive for the backward (works on the
meta device, so real sizes can be measured without memory).
"""

from __future__ import annotations

import functools
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

POLICIES = ("none", "full", "attention", "attention_hires", "resnets", "save_matmuls")
# attention_hires: transformer blocks with at least this many tokens (64 x 64 latents: SD at
# 512 px, SDXL's middle level at 1024 px) are checkpointed, the deeper levels are not.
HIRES_TOKENS = 4096

_aten = torch.ops.aten
# Ops whose outputs ``save_matmuls`` keeps: everything FlopCounterMode counts as FLOPs.
COMPUTE_OPS = {
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
    _aten.convolution.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
}


def _save_compute_outputs(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    del ctx, args, kwargs
    return CheckpointPolicy.MUST_SAVE if op in COMPUTE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _plain_checkpoint(module, *args):
    return checkpoint(module.__call__, *args, use_reentrant=False)


def _selective_checkpoint(module, *args):
    context = functools.partial(create_selective_checkpoint_contexts, _save_compute_outputs)
    return checkpoint(module.__call__, *args, use_reentrant=False, context_fn=context)


def _is_transformer_block(module) -> bool:
    return "TransformerBlock" in type(module).__name__


def _is_hires_transformer_block(module, *args) -> bool:
    hidden = args[0] if args else None  # [B, tokens, C]
    tokens = hidden.shape[1] if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 else 0
    return _is_transformer_block(module) and tokens >= HIRES_TOKENS


def _only(predicate):
    def run(module, *args):
        return _plain_checkpoint(module, *args) if predicate(module, *args) else module(*args)

    return run


def enable_selective_checkpointing(model: torch.nn.Module, policy: str = "save_matmuls") -> None:
    """Set the gradient-checkpointing policy of a diffusers model (UNet, ControlNet).

    Args:
        model: a diffusers ``ModelMixin`` that supports gradient checkpointing.
        policy: one of ``POLICIES`` (see the module docstring).

    Raises:
        ValueError: an unknown policy.
    """
    if policy not in POLICIES:
        raise ValueError(
            f"checkpointing policy must be one of {', '.join(POLICIES)}, got {policy!r}"
        )
    if policy == "none":
        model.disable_gradient_checkpointing()
        return
    function = {
        "full": _plain_checkpoint,
        "attention": _only(lambda m, *a: _is_transformer_block(m)),
        "attention_hires": _only(_is_hires_transformer_block),
        "resnets": _only(lambda m, *a: not _is_transformer_block(m)),
        "save_matmuls": _selective_checkpoint,
    }[policy]
    model.enable_gradient_checkpointing(function)


class LiveTensorMeter(TorchDispatchMode):
    """Bytes of tensors created inside the mode that are still alive (current and peak).

    A storage counts once however many views share it, and stops counting when its last tensor
    is freed. Use it around a forward pass: ``live`` afterwards = activations kept for backward.
    Works on the meta device (shapes only), so full-size models are measured without memory.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list] = {}  # storage id -> [bytes, tensors alive]
        self._seen: set[int] = set()

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._refs[key]

    def _track(self, tensor: torch.Tensor) -> None:
        if id(tensor) in self._seen:
            return
        key = tensor.untyped_storage()._cdata
        if key not in self._refs:
            self._refs[key] = [tensor.untyped_storage().nbytes(), 0]
            self.live += self._refs[key][0]
            self.peak = max(self.peak, self.live)
        self._refs[key][1] += 1
        self._seen.add(id(tensor))
        weakref.finalize(tensor, self._forget, id(tensor), key)

    def _forget(self, tensor_id: int, key: int) -> None:
        self._seen.discard(tensor_id)
        self._release(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self._track(item)
        return out
