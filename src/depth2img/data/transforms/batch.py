"""Batch assembly: decoded samples -> one training/validation batch (PairedTransform,
BatchBuilder, collate)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from depth2img.data.bad_samples import SampleError
from depth2img.data.decoding import DecodedSample, raws_to_depth
from depth2img.data.depth_spec import DepthSpec
from depth2img.data.shard_format import SampleMeta
from depth2img.data.transforms.depth_resample import (
    _STRIP_ROWS,
    DEPTH_RESIZE_MODES,
    _box_matrix_2d,
    _box_resample_strips,
    _resample_depth_stack,
)
from depth2img.data.transforms.geometry import (
    CropPlan,
    _box_size,
    _depth_window,
    _image_window,
    as_hw,
    plan_crop,
)
from depth2img.data.transforms.image_resample import _classic_image, _resample_windows

USE_LATENTS = ("auto", True, False)


def _check_latents(latents: np.ndarray, out_hw: tuple[int, int], key: str) -> None:
    """Latents must tile the output exactly with one integer factor (e.g. 8 for SD)."""
    lh, lw = latents.shape[1:]
    oh, ow = out_hw
    if oh % lh or ow % lw or oh // lh != ow // lw:
        raise SampleError(
            "latents_mismatch",
            f"{key}: latents {lh}x{lw} do not fit the training size {oh}x{ow}; re-run the latent "
            "cache at this size",
        )


def _meta_json(meta: SampleMeta) -> dict:
    """``meta.to_json()`` without ``dataclasses.asdict``'s deep copy (0.4 ms -> 5 us)."""
    fields = {name: getattr(meta, name) for name in SampleMeta.__dataclass_fields__}
    extra = fields.pop("extra")
    return {**extra, **fields}


# Windows resampled in one call stay below this many pixels: batching saves per-call overhead
# for small crops, while big windows are faster one at a time (they stay in the CPU caches).
_GROUP_PIXELS = 1 << 18


def _chunks(members: list, pixels: int) -> list[list]:
    """``members`` in runs of at most ``_GROUP_PIXELS // pixels`` (at least 1)."""
    size = max(1, _GROUP_PIXELS // max(1, pixels))
    return [members[i : i + size] for i in range(0, len(members), size)]


class PairedTransform:
    """DecodedSample -> one training/validation sample (tensors per CONTRACTS.md, unbatched).

    Args:
        size: output int or (h, w).
        train: random crop (+ flip + caption dropout) when True, center crop otherwise.
        random_flip: horizontal flip with p = 0.5 (train only).
        random_quarter_turns: rotate image, depth and mask together by a random multiple of
            90 deg (train only; square sizes draw 0/90/180/270, others 0/180 so the shape
            stays). With flips, the whole dihedral group: for domains with no "up" (aerial,
            microscopy, endoscopy) and to keep a model from learning one layout. Cached
            latents are not used then (they hold one orientation).
        caption_dropout: probability of replacing the caption by "" (train only).
        depth_resize: "area" or "nearest" (see module docstring).
        depth_spec: how depth becomes the model convention (default SD2: eps 1e-3).
        use_latents: "auto" (use cached latents when the sample has them), True (require them,
            skip samples without: ``missing_latents``) or False (ignore them).

    Output of ``__call__(sample, rng)``: ``image`` (3, h, w) uint8 tensor (0..255; it stays
    uint8 through :func:`collate` and becomes float on the device, :func:`finalize_batch`),
    ``depth`` (1, h, w) float32 tensor in [-1, 1] (near = 1, invalid = -1), ``valid_mask``
    (1, h, w) bool tensor, ``caption`` str, ``key`` str, ``meta`` dict, ``original_size`` (2,)
    int64 (H, W), ``crop_top_left`` (2,) int64 (top, left), ``latents`` (C, h/f, w/f) float32 tensor or None, ``notes``
    list of note reasons for the counter.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        train: bool,
        random_flip: bool = True,
        caption_dropout: float = 0.0,
        depth_resize: str = "area",
        depth_spec: DepthSpec | dict | None = None,
        use_latents: str | bool = "auto",
        random_quarter_turns: bool = False,
    ):
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        if depth_resize not in DEPTH_RESIZE_MODES:
            raise ValueError(f"depth_resize {depth_resize!r}: use one of {DEPTH_RESIZE_MODES}")
        if use_latents not in USE_LATENTS:
            raise ValueError(f"use_latents must be 'auto', true or false, got {use_latents!r}")
        self.size = as_hw(size)
        self.train = train
        self.random_flip = random_flip and train
        self.random_quarter_turns = bool(random_quarter_turns) and train
        if self.random_quarter_turns and use_latents is True:
            raise ValueError(
                "random_quarter_turns and use_latents=true do not go together (cached latents "
                "hold one orientation): set use_latents to auto or false"
            )
        if self.random_quarter_turns:
            use_latents = False
        self.caption_dropout = caption_dropout if train else 0.0
        self.depth_resize = depth_resize
        self.depth_spec = (
            depth_spec if isinstance(depth_spec, DepthSpec) else DepthSpec.from_dict(depth_spec)
        )
        self.use_latents = use_latents

    def with_size(self, size: int | tuple[int, int]) -> PairedTransform:
        """The same transform with another output size (aspect-ratio buckets: one per bucket)."""
        other = copy.copy(self)
        other.size = as_hw(size)
        return other

    def check(self, sample: DecodedSample) -> None:
        """Raise :class:`SampleError` when this transform cannot use ``sample``.

        Reasons: ``missing_latents`` (``use_latents=True`` and none cached),
        ``latents_mismatch`` (cached for another size).
        """
        if self.use_latents is False:
            return
        if sample.latents is None:
            if self.use_latents is True:
                raise SampleError(
                    "missing_latents", f"{sample.key}: use_latents=true but no latents.npy"
                )
            return
        _check_latents(sample.latents, self.size, sample.key)

    def __call__(self, sample: DecodedSample, rng: np.random.Generator) -> dict:
        """One sample (see the class docstring); the same as a batch of one."""
        batch, notes = self.batch([sample], rng)
        latents = batch.get("latents")
        return {
            "image": batch["image"][0],  # [3, h, w] uint8
            "depth": batch["depth"][0],  # [1, h, w]
            "valid_mask": batch["valid_mask"][0],  # [1, h, w]
            "caption": batch["caption"][0],
            "key": batch["key"][0],
            "meta": batch["meta"][0],
            "original_size": batch["original_size"][0],  # [2] int64 (H, W)
            "crop_top_left": batch["crop_top_left"][0],  # [2] int64 (top, left)
            "latents": None if latents is None else latents[0],
            "notes": notes[0],
        }

    def batch(
        self, samples: list[DecodedSample], rng: np.random.Generator
    ) -> tuple[dict, list[list[str]]]:
        """Transform and collate ``samples`` at once -> ``(batch, notes per sample)``.

        The batch is what :func:`collate` makes of ``[self(s, rng) for s in samples]`` (same
        random draws in the same order, same values): crops of same-size sources share one
        resampling call per field, which saves most of the per-sample call overhead at small
        sizes. Raises :class:`SampleError` (see :meth:`check`) for an unusable sample.
        """
        builder = self.builder(len(samples))
        for sample in samples:
            builder.add(sample, rng)
        return builder.finish()

    def builder(self, size: int) -> BatchBuilder:
        """A :class:`BatchBuilder` for a batch of ``size`` samples."""
        return BatchBuilder(self, size)

    def _images(self, samples: list[DecodedSample], plans: list[CropPlan], out: np.ndarray):
        """Write the crops into ``out`` (m, h, w, 3) uint8: one resampling call per group of
        same-size windows, straight into the batch."""
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for i, (sample, plan) in enumerate(zip(samples, plans)):
            if plan.offset is None:
                rows, cols, box_wh = _image_window(plan, sample.image.shape[:2])
                window = sample.image[rows, cols]
                groups.setdefault((window.shape, box_wh), []).append((i, window))
            else:
                out[i] = _classic_image(sample.image, plan)
        for (shape, box_wh), group in groups.items():
            for members in _chunks(group, shape[0] * shape[1]):
                index = [i for i, _ in members]
                windows = [window for _, window in members]
                first = index[0]
                if index == list(range(first, first + len(index))):  # in place
                    _resample_windows(windows, self.size, box_wh, out[first : first + len(index)])
                else:
                    out[index] = _resample_windows(windows, self.size, box_wh)
        images = torch.from_numpy(out)  # [m, h, w, 3]
        for i, plan in enumerate(plans):
            if plan.flip:  # torch's flip: ~10x faster than numpy's reversed 3-byte pixels
                images[i] = images[i].flip(1)

    def _depth(
        self,
        samples: list[DecodedSample],
        plans: list[CropPlan],
        normalized: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Write the normalized depth and valid mask, (m, h, w) float32 / bool: resampled and
        normalized per group of same-size crop windows (one pair of sparse products per group;
        16-bit PNG depth becomes float only in the windows), straight into the batch."""
        spec = self.depth_spec
        kinds = {sample.meta.depth_kind for sample in samples}
        together = len(kinds) == 1 and all(sample.clean for sample in samples)
        kind = next(iter(kinds), "inverse")
        groups: dict[tuple, list[tuple[int, slice, slice]]] = {}
        for i, (sample, plan) in enumerate(zip(samples, plans)):
            rows, cols, box = _depth_window(plan, sample.depth_hw)
            key = (rows.stop - rows.start, cols.stop - cols.start, box)
            groups.setdefault(key, []).append((i, rows, cols))
        flipped = []  # mirrored after normalizing (groups mixing flipped and unflipped crops)
        for (win_h, win_w, box), group in groups.items():
            for members in _chunks(group, win_h * win_w):
                index = [i for i, _, _ in members]
                flips = {plans[i].flip for i in index}
                flip = flips == {True}  # all mirrored: reversed weights, for free
                if len(flips) > 1:
                    flipped += [i for i in index if plans[i].flip]
                if len(members) == 1 and self.depth_resize == "area" and win_h > _STRIP_ROWS:
                    read = self._row_reader(samples[index[0]], *members[0][1:])
                    depth = _box_resample_strips(read, box, self.size, (win_h, win_w), flip)
                    depth = depth[None]
                elif len(members) > 1 and self.depth_resize == "area":
                    # Small windows: one product with both passes for the whole group.
                    columns = self._depth_columns(samples, members, win_h, win_w)
                    matrix = _box_matrix_2d(box, self.size, (win_h, win_w), flip)
                    out = matrix @ columns.reshape(win_h * win_w, len(members))  # [h * w, G]
                    depth = out.T.reshape(len(members), *self.size)
                else:
                    stack = self._depth_windows(samples, members, win_h, win_w)  # [Hw, G, Ww]
                    depth = _resample_depth_stack(stack, box, self.size, self.depth_resize, flip)
                if together:  # one kind, NaN-only invalid: the whole group in a few passes
                    first = index[0]
                    if index == list(range(first, first + len(index))):  # write in place
                        part = slice(first, first + len(index))
                        spec.normalize(depth, kind, clean=True, out=(normalized[part], valid[part]))
                    else:
                        normalized[index], valid[index] = spec.normalize(depth, kind, clean=True)
                    continue
                for j, i in enumerate(index):  # mixed kinds or hand-made samples: all checks
                    normalized[i], valid[i] = spec.normalize(
                        depth[j], samples[i].meta.depth_kind, clean=samples[i].clean
                    )
        if flipped:
            normalized[flipped] = normalized[flipped, :, ::-1]
            valid[flipped] = valid[flipped, :, ::-1]

    @staticmethod
    def _row_reader(sample: DecodedSample, rows: slice, cols: slice):
        """``read(a, b)``: float32 rows ``a:b`` of the sample's depth window (NaN = invalid)."""
        if sample.depth_is_lazy:
            raw, metas = sample.depth_raw[rows, cols], [sample.meta]
            return lambda a, b: raws_to_depth(raw[a:b, None], metas)[:, 0]
        region = sample.depth_region(rows, cols)
        return lambda a, b: region[a:b]

    @staticmethod
    def _depth_columns(samples, members, win_h: int, win_w: int) -> np.ndarray:
        """(Hw, Ww, G) float32 depth windows of a group (NaN = invalid): pixels row-major,
        samples last (the layout of one multi-vector sparse product)."""
        lazy = [j for j, (i, _, _) in enumerate(members) if samples[i].depth_is_lazy]
        if len(lazy) == len(members):
            raw = np.empty((win_h, win_w, len(members)), np.uint16)
            for j, (i, rows, cols) in enumerate(members):
                raw[:, :, j] = samples[i].depth_raw[rows, cols]
            return raws_to_depth(raw, [samples[i].meta for i, _, _ in members], axis=2)
        stack = np.empty((win_h, win_w, len(members)), np.float32)
        for j, (i, rows, cols) in enumerate(members):
            stack[:, :, j] = samples[i].depth_region(rows, cols)
        return stack

    @staticmethod
    def _depth_windows(samples, members, win_h: int, win_w: int) -> np.ndarray:
        """(Hw, G, Ww) float32 depth windows of a group (NaN = invalid); a view when G = 1."""
        lazy = [j for j, (i, _, _) in enumerate(members) if samples[i].depth_is_lazy]
        if len(members) == 1:
            i, rows, cols = members[0]
            if lazy:
                return raws_to_depth(samples[i].depth_raw[rows, cols][:, None], [samples[i].meta])
            return samples[i].depth_region(rows, cols)[:, None]
        stack = np.empty((win_h, len(members), win_w), np.float32)
        if lazy:  # 16-bit PNG windows, converted together (per-sample scale, offset)
            raw = np.empty((win_h, len(lazy), win_w), np.uint16)
            for k, j in enumerate(lazy):
                i, rows, cols = members[j]
                raw[:, k, :] = samples[i].depth_raw[rows, cols]
            converted = raws_to_depth(raw, [samples[members[j][0]].meta for j in lazy])
            if len(lazy) == len(members):
                return converted
            stack[:, lazy, :] = converted
        for j, (i, rows, cols) in enumerate(members):
            if not samples[i].depth_is_lazy:
                stack[:, j, :] = samples[i].depth_region(rows, cols)
        return stack


class BatchBuilder:
    """Fills one batch sample by sample (:meth:`PairedTransform.builder`).

    Each :meth:`add` draws the sample's flip, crop and caption dropout at once (the order of
    :meth:`PairedTransform.batch`); pixel work runs whenever the pending crops reach a budget
    of pixels (one sample at 512 px, the whole batch at 128 px), so a big sample is resampled
    while its decoded pixels are still in the CPU caches and small ones share calls. Results
    go straight into the batch arrays; :meth:`finish` returns ``(batch, notes per sample)``.
    """

    def __init__(self, transform: PairedTransform, size: int):
        self.transform = transform
        self.size = size
        out_h, out_w = transform.size
        self.images = np.empty((size, out_h, out_w, 3), np.uint8)
        self.normalized = np.empty((size, out_h, out_w), np.float32)
        self.valid = np.empty((size, out_h, out_w), bool)
        self.samples: list[DecodedSample] = []
        self.plans: list[CropPlan] = []
        self.captions: list[str] = []
        self.latents: list[np.ndarray | None] = []
        self.turns: list[int] = []  # quarter turns (counter-clockwise) per sample
        self._done = 0  # samples whose pixels are in the arrays
        self._pending_pixels = 0.0

    def add(self, sample: DecodedSample, rng: np.random.Generator, checked: bool = False) -> None:
        """Add the next sample (raises :class:`SampleError` when it is unusable, see
        :meth:`PairedTransform.check`, unless ``checked``; the builder is unchanged then)."""
        transform = self.transform
        if len(self.samples) >= self.size:
            raise ValueError(f"the batch already has {self.size} samples")
        if not checked:
            transform.check(sample)
        lat = sample.latents if transform.use_latents is not False else None
        flip = transform.random_flip and bool(rng.random() < 0.5)
        # Cached latents fix the geometry: deterministic center crop only. Full-size grid;
        # random origins on whole pixels of the (maybe 1/k-size) image.
        crop_rng = rng if (transform.train and lat is None) else None
        plan = plan_crop(sample.depth_hw, transform.size, crop_rng, flip, sample.image_scale)
        caption = sample.caption
        if transform.caption_dropout and rng.random() < transform.caption_dropout:
            caption = ""
        turns = 0
        if transform.random_quarter_turns:  # drawn only when on: other runs keep their draws
            square = transform.size[0] == transform.size[1]
            turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        self.turns.append(turns)
        self.samples.append(sample)
        self.plans.append(plan)
        self.captions.append(caption)
        self.latents.append(lat)
        box_w, box_h = _box_size(plan)
        self._pending_pixels += box_w * box_h
        if self._pending_pixels >= _GROUP_PIXELS:
            self._flush()

    def _flush(self) -> None:
        start, end = self._done, len(self.samples)
        if start == end:
            return
        samples, plans = self.samples[start:end], self.plans[start:end]
        self.transform._images(samples, plans, self.images[start:end])
        self.transform._depth(samples, plans, self.normalized[start:end], self.valid[start:end])
        self._done, self._pending_pixels = end, 0.0

    def finish(self) -> tuple[dict, list[list[str]]]:
        """``(batch, notes)``: the batch dict of :func:`collate` (``image`` channels-last in
        memory) and the note reasons per sample (``crop_no_valid_depth``)."""
        if len(self.samples) != self.size:
            raise ValueError(f"batch has {len(self.samples)} of {self.size} samples")
        self._flush()
        for i, turns in enumerate(self.turns):
            if turns:  # after resampling and normalizing: the same grid for every field
                self.images[i] = np.rot90(self.images[i], turns, axes=(0, 1))
                self.normalized[i] = np.rot90(self.normalized[i], turns)
                self.valid[i] = np.rot90(self.valid[i], turns)
        valid = self.valid
        micro = [plan.micro_conditioning(t) for plan, t in zip(self.plans, self.turns)]
        notes = [["crop_no_valid_depth"] if empty else [] for empty in ~valid.any(axis=(1, 2))]
        batch = {
            "image": torch.from_numpy(self.images).permute(0, 3, 1, 2),  # [n, 3, h, w] uint8
            "depth": torch.from_numpy(self.normalized)[:, None],  # [n, 1, h, w]
            "valid_mask": torch.from_numpy(valid)[:, None],  # [n, 1, h, w]
            "caption": self.captions,
            "key": [sample.key for sample in self.samples],
            "meta": [_meta_json(sample.meta) for sample in self.samples],
            # SDXL micro-conditioning: source (H, W) and crop origin in the resized grid, turned
            # with the pixels (a turned sample reads as a crop of a turned source).
            "original_size": torch.tensor([m[0] for m in micro], dtype=torch.int64),
            "crop_top_left": torch.tensor([m[1] for m in micro], dtype=torch.int64),
        }
        if all(lat is not None for lat in self.latents):
            tensors = [
                torch.from_numpy(
                    np.ascontiguousarray(lat[:, :, ::-1] if plan.flip else lat, dtype=np.float32)
                )
                for lat, plan in zip(self.latents, self.plans)
            ]
            if len({tuple(t.shape) for t in tensors}) == 1:
                batch["latents"] = torch.stack(tensors)
        return batch, notes


def collate(samples: list[dict]) -> dict:
    """Per-sample dicts from :class:`PairedTransform` -> a batch per CONTRACTS.md.

    ``image`` (B, 3, h, w) **uint8** 0..255 (contiguous; :func:`finalize_batch` makes it float32
    in [-1, 1] on the device); ``depth`` (B, 1, h, w) float32 in [-1, 1]; ``valid_mask``
    (B, 1, h, w) bool; ``caption``/``key``/``meta`` lists; ``original_size`` (B, 2) int64
    (H, W) of the source before crop/resize and ``crop_top_left`` (B, 2) int64 (top, left) in
    the resized grid (:meth:`CropPlan.crop_top_left`, SDXL's convention); ``latents``
    (B, C, h', w') float32 only when every sample has latents. Extra per-sample keys that are lists/bools (e.g.
    ``is_padding``) are collated as lists / bool tensors.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch = {
        "image": torch.stack([s["image"] for s in samples]),  # [B, 3, h, w] uint8
        "depth": torch.stack([s["depth"] for s in samples]),
        "valid_mask": torch.stack([s["valid_mask"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "key": [s["key"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }
    for name in ("original_size", "crop_top_left"):  # [B, 2] int64
        if name in samples[0]:
            batch[name] = torch.stack([torch.as_tensor(s[name]) for s in samples])
    latents = [s.get("latents") for s in samples]
    if all(lat is not None for lat in latents):
        shapes = {tuple(lat.shape) for lat in latents}
        if len(shapes) == 1:
            batch["latents"] = torch.stack(latents)
    if "is_padding" in samples[0]:
        batch["is_padding"] = torch.tensor([bool(s["is_padding"]) for s in samples])
    return batch
