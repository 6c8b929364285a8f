"""The shard reader as a LightningDataModule: equal batch counts on every rank, safe decoding.

Training stream (per rank, per DataLoader worker):
    resampled shards (each worker draws shards with its own RNG) -> raw samples (only
    whitelisted members read) -> shuffle buffer of *encoded* samples (small in memory) ->
    decode (bad samples skipped and counted; big JPEGs decoded at reduced DCT scale) -> paired
    transform -> batches of ``batch_size``.

    Seeds derive from ``(seed, epoch, rank, worker)``: equal seeds on every rank would give
    identical streams (webdataset #25). Each epoch has exactly
    ``samples_per_epoch // global_batch_size`` batches on every rank, split across its workers,
    so DDP never waits on a rank that ran out of data (webdataset #194/#250, Lightning #9851).
    Because shards are resampled, a sample can appear twice in an epoch and the epoch is a count
    of samples, not a pass over the data. The epoch used for seeding is the trainer's
    ``current_epoch``, so a resumed run continues with the same streams; resuming in the middle
    of an epoch restarts that epoch's stream (samples are not skipped exactly).

Aspect-ratio buckets (``buckets``, off by default; :mod:`depth2img.data.buckets`):
    after the shuffle buffer, each encoded sample's image size is read from its header and the
    sample waits in the queue of its nearest bucket (encoded, so waiting costs little memory).
    When a queue holds ``batch_size`` samples they are decoded (big JPEGs at the reduced scale
    that still covers that bucket), resized to cover the bucket and cropped (random origin in
    training), so ``original_size`` is the source (H, W) and ``crop_top_left`` the crop origin
    in the resized image, as without buckets. Every batch has one shape and exactly
    ``batch_size`` samples; the per-rank batch count is the same fixed number as without
    buckets, and a worker keeps drawing samples (resampled shards never run out) until it has
    made its share; samples still waiting in partly filled queues at the end of the epoch are
    dropped. So every rank makes the same number of steps. Cached latents are not used with
    buckets (they were encoded at one size); validation stays at the fixed ``size``.

Validation set (fixed):
    the first ``val_samples`` usable samples of the validation shards, in shard order (shard
    specs expanded and sorted) and tar order. Global sample ``i`` goes to rank ``i % world``;
    ranks with fewer samples are padded by wrapping around (``is_padding`` is True there; drop
    those in metrics). Same samples, same order, on any number of workers; the union over ranks
    is the same set for any world size. The encoded bytes of the set are held in memory (cap it
    with ``val_samples``); every sample is decoded and transformed once at set-up to make sure
    it is usable, so every rank has the same number of batches.
"""

from __future__ import annotations

import logging
import os
import tarfile
import warnings
from collections.abc import Callable, Iterator

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from depth2img.data.bad_samples import SKIP_REASONS, BadSampleCounter, SampleError
from depth2img.data.buckets import BucketBatcher, resolve_buckets
from depth2img.data.decoding import (
    DecodedSample,
    decode_sample,
    expand_shard_urls,
    iter_shard_samples,
    source_size,
)
from depth2img.data.depth_spec import DepthSpec
from depth2img.data.fixed_set import read_fixed_set
from depth2img.data.shard_format import read_manifest
from depth2img.data.transforms import PairedTransform, collate, finalize_batch

log = logging.getLogger("depth2img.data")

# Consecutive shard reads without a single usable sample before the train stream gives up.
_MAX_EMPTY_SHARD_READS = 50


def get_rank_world(
    trainer: object | None = None, rank: int | None = None, world_size: int | None = None
) -> tuple[int, int]:
    """(rank, world_size) for data sharding.

    Priority: explicit ``rank``/``world_size`` (tests, custom launchers) > an initialized
    ``torch.distributed`` process group > the Lightning ``trainer`` (``global_rank``,
    ``world_size``) > single process (0, 1).
    """
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("give both rank and world_size, or neither")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        return int(rank), int(world_size)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if trainer is not None:
        return int(trainer.global_rank), int(trainer.world_size)
    return 0, 1


def _plain(value):
    """Hydra's ListConfig/DictConfig -> list/dict (anything else unchanged)."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _is_local(url: str) -> bool:
    return not (url.startswith("pipe:") or "://" in url)


def count_samples(urls: list[str]) -> int:
    """Samples in ``urls``: from each folder's ``manifest.json``, else by listing local tars.

    Raises:
        ValueError: a remote/pipe shard is not covered by a manifest (cannot count cheaply).
    """
    total = 0
    manifests: dict[str, dict | None] = {}
    for url in urls:
        if not _is_local(url):
            raise ValueError(
                f"cannot count samples of {url!r} (not a local file, no manifest): set "
                "data.samples_per_epoch explicitly"
            )
        folder = os.path.dirname(os.path.abspath(url))
        if folder not in manifests:
            manifests[folder] = read_manifest(folder)
        listed = (manifests[folder] or {}).get("shards", {})
        name = os.path.basename(url)
        if name in listed:
            total += int(listed[name])
            continue
        log.warning("%s is not in a manifest.json: counting its samples by listing the tar", url)
        with tarfile.open(url, "r:") as tar:  # headers only, seeks over member data
            keys = {m.name.split("/")[-1].split(".")[0] for m in tar if m.isreg()}
        total += len(keys)
    return total


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class TrainStream(IterableDataset):
    """Endless resampled shard stream cut into a fixed number of batches per epoch.

    Yields collated batches (:meth:`transforms.PairedTransform.batch`, the format of
    :func:`transforms.collate`); use with ``batch_size=None``.
    ``len()`` is the number of batches per epoch on this rank (the same on every rank).

    Args:
        urls: shard URLs (all ranks/workers sample from all of them).
        transform: the train :class:`PairedTransform`.
        batch_size: per-rank batch size.
        batches_per_rank: batches in one epoch on this rank, split across its workers.
        rank, world_size: this process's data rank.
        seed: global seed; streams are seeded by (seed, epoch, rank, worker).
        shuffle_buffer: encoded samples held for shuffling (0 = no shuffle).
        counter: bad-sample counter (shared memory, sized for the workers).
        keep_constant_depth: keep flat depth maps (they become all -1) instead of skipping.
        buckets: aspect-ratio bucket shapes (H, W); None = every batch at ``transform.size``.
    """

    # Consecutive unusable samples before the stream stops with an error instead of spinning.
    max_consecutive_bad = 5000

    def __init__(
        self,
        urls: list[str],
        transform: PairedTransform,
        batch_size: int,
        batches_per_rank: int,
        rank: int,
        world_size: int,
        seed: int,
        shuffle_buffer: int,
        counter: BadSampleCounter,
        keep_constant_depth: bool = False,
        buckets: list[tuple[int, int]] | None = None,
    ):
        super().__init__()
        self.urls = list(urls)
        self.buckets = [tuple(b) for b in buckets] if buckets else None
        self.transform = transform
        self.batch_size = batch_size
        self.batches_per_rank = batches_per_rank
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.counter = counter
        self.keep_constant_depth = keep_constant_depth
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Set before each epoch (in the main process): new shard draws and crops per epoch.

        ``skip_batches``: batches of this epoch already delivered on this rank before a resume;
        they are replayed (not yielded) so the stream continues where it stopped.
        """
        self.epoch = int(epoch)
        self.skip_batches = int(skip_batches)

    def worker_skip(self, worker: int, num_workers: int) -> int:
        """Batches of ``skip_batches`` that came from ``worker`` (batch k from worker k % W)."""
        base, extra = divmod(self.skip_batches, num_workers)
        return base + (worker < extra)

    def __len__(self) -> int:
        return self.batches_per_rank

    def worker_batches(self, worker: int, num_workers: int) -> int:
        """Batches this worker yields in one epoch (they sum to ``batches_per_rank``)."""
        base, extra = divmod(self.batches_per_rank, num_workers)
        return base + (worker < extra)

    def _raw_samples(self, rng: np.random.Generator) -> Iterator[dict]:
        """Endless raw samples from randomly drawn shards, through the shuffle buffer."""
        buffer: list[dict] = []
        empty_reads = 0
        while True:
            url = self.urls[int(rng.integers(len(self.urls)))]
            got_any = False
            for raw in iter_shard_samples(url, self.counter):
                got_any = True
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(raw)
                    continue
                if buffer:
                    index = int(rng.integers(len(buffer)))
                    buffer[index], raw = raw, buffer[index]
                yield raw
            empty_reads = 0 if got_any else empty_reads + 1
            if empty_reads >= _MAX_EMPTY_SHARD_READS:
                raise RuntimeError(
                    f"{empty_reads} shard reads in a row gave no sample (e.g. {url!r}); bad "
                    f"samples so far: {self.counter.counts()}. Check the shards with "
                    "`depth2img-shards check`."
                )

    # Bad samples named in the log, per worker (a shard is re-read whenever it is drawn again,
    # so each key is named once; the counts still count every read).
    max_named_bad = 20

    def _decode_named(
        self, raw: dict, draft_for: tuple[int, int] | None = None
    ) -> DecodedSample | None:
        """``decode_or_count``, also logging the first bad samples by shard and key.
        ``draft_for``: the output size the JPEG decode scale is chosen for (default: the
        transform's)."""
        try:
            decoded = decode_sample(raw, self.keep_constant_depth, draft_for or self.transform.size)
        except SampleError as exn:
            self.counter.add(exn.reason)
            named = self.__dict__.setdefault("_named_bad", set())
            key = (raw.get("__url__"), raw.get("__key__"))
            if not self.counter.muted and key not in named and len(named) < self.max_named_bad:
                named.add(key)
                log.warning("bad sample %s:%s skipped: %s", key[0], key[1], exn)
            return None
        for note in decoded.notes:
            self.counter.add(note)
        return decoded

    def _samples(self, rng: np.random.Generator) -> Iterator[DecodedSample]:
        """Endless decoded samples the transform can use; bad ones are counted and skipped."""
        misses = 0
        for raw in self._raw_samples(rng):
            decoded = self._decode_named(raw)
            if decoded is not None:
                try:
                    self.transform.check(decoded)
                except SampleError as exn:
                    self.counter.add(exn.reason)
                    decoded = None
            if decoded is None:
                misses += 1
                if misses >= self.max_consecutive_bad:
                    raise RuntimeError(
                        f"{misses} unusable samples in a row in {len(self.urls)} shard(s) "
                        f"(e.g. {self.urls[0]!r}); bad samples so far: {self.counter.counts()}. "
                        "Check the shards with `depth2img-shards check`."
                    )
                continue
            misses = 0
            yield decoded

    def _fixed_batches(self, rng: np.random.Generator) -> Iterator[tuple[dict, list]]:
        """Endless ``(batch, notes)`` of ``batch_size`` samples at ``transform.size``."""
        samples = self._samples(rng)
        while True:
            # Samples go into the batch as they are decoded (resampled right away when big,
            # a few at a time in one call when small: see transforms.BatchBuilder).
            builder = self.transform.builder(self.batch_size)
            for _ in range(self.batch_size):
                builder.add(next(samples), rng, checked=True)  # _samples checked it
            yield builder.finish()

    def _bucket_transform(self, bucket: tuple[int, int]) -> PairedTransform:
        cache = self.__dict__.setdefault("_bucket_transforms", {})
        if bucket not in cache:
            cache[bucket] = self.transform.with_size(bucket)
        return cache[bucket]

    def _bucket_batches(self, rng: np.random.Generator) -> Iterator[tuple[dict, list]]:
        """Endless ``(batch, notes)`` of ``batch_size`` samples, each batch one bucket's shape
        (module docstring: encoded samples wait per bucket; a full bucket is decoded)."""
        batcher = BucketBatcher(self.batch_size, self.buckets)
        misses = 0
        for raw in self._raw_samples(rng):
            size_hw = source_size(raw)
            if size_hw is None:  # no readable image header: decoding names and counts it
                self._decode_named(raw)
                misses += 1
                self._check_misses(misses)
                continue
            full = batcher.add(raw, size_hw)
            if full is None:
                continue
            bucket, raws = full
            transform = self._bucket_transform(bucket)
            usable = []
            for item in raws:
                decoded = self._decode_named(item, bucket)
                if decoded is not None:
                    try:
                        transform.check(decoded)
                    except SampleError as exn:
                        self.counter.add(exn.reason)
                        decoded = None
                if decoded is None:
                    misses += 1
                    self._check_misses(misses)
                else:
                    usable.append((item, decoded))
            if len(usable) < self.batch_size:  # some were bad: wait for more of this bucket
                batcher.requeue(bucket, [item for item, _ in usable])
                continue
            misses = 0
            builder = transform.builder(self.batch_size)
            for _, decoded in usable:
                builder.add(decoded, rng, checked=True)
            yield builder.finish()

    def _check_misses(self, misses: int) -> None:
        if misses >= self.max_consecutive_bad:
            raise RuntimeError(
                f"{misses} unusable samples in a row in {len(self.urls)} shard(s) "
                f"(e.g. {self.urls[0]!r}); bad samples so far: {self.counter.counts()}. "
                "Check the shards with `depth2img-shards check`."
            )

    def __iter__(self) -> Iterator[dict]:
        physical, num_workers = _worker()
        # The DataLoader asks worker 0 first. After a resume at batch k of the epoch the next
        # batch belongs to stream k % W, so physical worker p plays stream (p + k) % W (the
        # identity when nothing is skipped).
        worker = (physical + self.skip_batches) % num_workers
        n_batches = self.worker_batches(worker, num_workers)
        if n_batches == 0:
            return
        seq = np.random.SeedSequence([self.seed, self.epoch, self.rank, worker])
        rng = np.random.default_rng(seq)
        batches = self._bucket_batches(rng) if self.buckets else self._fixed_batches(rng)
        skip = min(self.worker_skip(worker, num_workers), n_batches)
        for index in range(n_batches):
            # Replayed batches (before a resume point) draw the same samples and random numbers
            # as the first time, but are neither counted nor yielded.
            self.counter.muted = index < skip
            batch, notes = next(batches)
            for sample_notes in notes:
                for note in sample_notes:
                    self.counter.add(note)
            if index >= skip:
                yield batch
        self.counter.muted = False


class ValSet(Dataset):
    """Fixed validation samples for one rank (see the module docstring for the layout).

    Args:
        urls: validation shard URLs, in order.
        transform: the deterministic (val) :class:`PairedTransform`.
        rank, world_size: this process's data rank.
        max_samples: cap on usable samples (None = all).
        counter: bad-sample counter for skipped validation samples.
        keep_constant_depth: as in training.
        progress: show a progress bar while indexing.
    """

    def __init__(
        self,
        urls: list[str],
        transform: PairedTransform,
        rank: int,
        world_size: int,
        max_samples: int | None,
        counter: BadSampleCounter,
        keep_constant_depth: bool = False,
        progress: bool = True,
    ):
        self.transform = transform
        self.keep_constant_depth = keep_constant_depth
        fixed = read_fixed_set(
            urls,
            max_samples,
            transform=transform,
            keep_constant_depth=keep_constant_depth,
            counter=counter,
            progress=progress,
            desc="indexing validation shards",
        )
        self.entries: list[dict] = fixed.entries
        if not self.entries:
            raise ValueError(
                f"no usable validation sample in {len(urls)} shard(s) ({urls[:3]}…); bad "
                f"samples: {counter.counts()}"
            )
        total = len(self.entries)
        per_rank = -(-total // world_size)  # ceil
        # (global index, is_padding): strided slice, wrapped around to equal length.
        self.indices = [
            ((rank + k * world_size) % total, rank + k * world_size >= total)
            for k in range(per_rank)
        ]
        self.total = total

    def __len__(self) -> int:
        return len(self.indices)

    def global_keys(self) -> list[str]:
        """Keys of the whole validation set (all ranks), in global order."""
        return [str(raw["__key__"]) for raw in self.entries]

    def __getitem__(self, index: int) -> dict:
        global_index, padding = self.indices[index]
        raw = self.entries[global_index]  # checked at set-up: decodes
        decoded = decode_sample(raw, self.keep_constant_depth, self.transform.size)
        sample = self.transform(decoded, np.random.default_rng(global_index))
        sample.pop("notes")
        sample["is_padding"] = padding
        return sample


def _as_is(batch):
    """Collate function of the train loader: TrainStream already yields finished batches."""
    return batch


class _EpochLoader(DataLoader):
    """DataLoader that tells its dataset the epoch before workers start.

    Workers are not persistent, so each epoch's workers get a fresh copy of the dataset with
    the right epoch (and therefore new shard draws, shuffles and crops, reproducibly).

    Args:
        epoch_fn: returns the epoch to use (the trainer's); None = count iterations.
    """

    def __init__(
        self,
        dataset: TrainStream,
        *args,
        epoch_fn: Callable[[], int] | None = None,
        skip_fn: Callable[[int], int] | None = None,
        **kwargs,
    ):
        super().__init__(dataset, *args, **kwargs)
        self.epoch_fn = epoch_fn  # public attribute: Lightning can re-create the loader
        self.skip_fn = skip_fn  # epoch -> batches to replay (a resume inside that epoch)
        self._iterations = 0

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._iterations
        self._iterations += 1
        skip = self.skip_fn(epoch) if self.skip_fn is not None else 0
        self.dataset.set_epoch(epoch, skip_batches=skip)
        return super().__iter__()


class ShardDataModule(L.LightningDataModule):
    """WebDataset shards -> batches per CONTRACTS.md, for training and validation.

    Loaders yield ``image`` as uint8 (B, 3, H, W); :meth:`on_after_batch_transfer` turns it into
    float32 in [-1, 1] once the batch is on the device (Lightning calls it for any module).

    Args:
        train_shards: shard spec(s) for training (folder, glob, brace pattern, list, pipe:).
        val_shards: shard spec(s) for the fixed validation set, or None.
        size: training size, int or [H, W].
        global_batch_size: samples per optimizer step over all ranks.
        batch_size: per-rank batch size; None = global_batch_size / world_size (must divide).
        num_workers: DataLoader workers per rank.
        samples_per_epoch: samples per epoch over all ranks; None = from manifest.json.
        caption_dropout: probability of an empty caption (train only).
        random_flip: horizontal flips (train only).
        random_quarter_turns: also rotate image, depth and mask together by a random multiple
            of 90 deg (train only; 0/180 for non-square sizes; cached latents are not used).
        seed: global data seed.
        shuffle_buffer: encoded samples held for shuffling per worker.
        depth_spec: DepthSpec fields (dict) or None for the SD2 default.
        val_samples: cap on the validation set size (None = every usable sample).
        keep_constant_depth: keep flat depth maps (all -1 after normalization) instead of
            skipping them; they are counted either way.
        use_latents: "auto" | true | false (see :class:`PairedTransform`).
        depth_resize: "area" (default) or "nearest".
        val_batch_size: per-rank validation batch size (None = batch_size).
        buckets: aspect-ratio buckets for training (module docstring; off by default): None,
            true (``size``'s pixel count, step 64 (8 below 512 px), ratios up to 2:1),
            ``{area, step, max_ratio}`` or a list of ``[H, W]``
            (:func:`depth2img.data.buckets.resolve_buckets`). Cached latents are then not used
            (``use_latents: true`` is refused); validation stays at ``size``.
        rank, world_size: overrides for the data rank (tests); None = automatic.
    """

    def __init__(
        self,
        train_shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        size: int | list[int] = 128,
        global_batch_size: int = 8,
        batch_size: int | None = None,
        num_workers: int = 2,
        samples_per_epoch: int | None = None,
        caption_dropout: float = 0.1,
        random_flip: bool = True,
        random_quarter_turns: bool = False,
        seed: int | None = 0,
        shuffle_buffer: int = 200,
        depth_spec: dict | None = None,
        val_samples: int | None = None,
        keep_constant_depth: bool = False,
        use_latents: str | bool = "auto",
        depth_resize: str = "area",
        val_batch_size: int | None = None,
        buckets: bool | dict | list | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        if num_workers < 0 or shuffle_buffer < 0:
            raise ValueError("num_workers and shuffle_buffer must be >= 0")
        if global_batch_size < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError("global_batch_size and batch_size must be >= 1")
        # Expand now: a wrong path fails when the config is instantiated, before training starts.
        self.train_urls = None if train_shards is None else expand_shard_urls(train_shards)
        self.val_urls = None if val_shards is None else expand_shard_urls(val_shards)
        self.train_shards = train_shards
        self.val_shards = val_shards
        self.size = size if isinstance(size, int) else tuple(size)
        self.global_batch_size = int(global_batch_size)
        self.batch_size_override = batch_size
        self.num_workers = int(num_workers)
        self.samples_per_epoch = samples_per_epoch
        if seed is None:  # e.g. `seed: null` in the run config: stay reproducible anyway
            log.info("data seed is null: using 0")
        self.seed = int(seed or 0)
        self.shuffle_buffer = int(shuffle_buffer)
        self.depth_spec = DepthSpec.from_dict(dict(depth_spec) if depth_spec else None)
        self.val_samples = val_samples
        self.keep_constant_depth = keep_constant_depth
        self.val_batch_size = val_batch_size
        self._rank_override = (rank, world_size)
        transform_args = dict(
            size=self.size,
            depth_resize=depth_resize,
            depth_spec=self.depth_spec,
            use_latents=use_latents,
        )
        self.buckets = resolve_buckets(_plain(buckets), self.size)
        if self.buckets and use_latents is True:
            raise ValueError(
                "data.buckets and data.use_latents=true do not go together (cached latents have "
                "one size): set data.use_latents=auto or false, or data.buckets=null"
            )
        train_args = dict(transform_args, use_latents=False) if self.buckets else transform_args
        self.train_transform = PairedTransform(
            train=True,
            random_flip=random_flip,
            random_quarter_turns=random_quarter_turns,
            caption_dropout=caption_dropout,
            **train_args,
        )
        self.val_transform = PairedTransform(train=False, **transform_args)
        self._counters: dict[str, BadSampleCounter] = {}
        self._val_set: ValSet | None = None
        self._manual_epoch = 0
        self._resume_position: dict | None = None  # from load_state_dict, used once

    # ------------------------------------------------------------------ sizes and ranks

    def rank_world(self) -> tuple[int, int]:
        """(rank, world_size) used for sharding (overrides > torch.distributed > trainer)."""
        return get_rank_world(self.trainer, *self._rank_override)

    @property
    def batch_size(self) -> int:
        """Per-rank batch size."""
        if self.batch_size_override is not None:
            return int(self.batch_size_override)
        _, world = self.rank_world()
        if self.global_batch_size % world:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} does not divide over {world} ranks: "
                f"choose a multiple of {world} or set data.batch_size per rank"
            )
        return self.global_batch_size // world

    def batches_per_epoch(self) -> int:
        """Batches per epoch on every rank: samples_per_epoch // (batch_size * world_size)."""
        _, world = self.rank_world()
        samples = self.samples_per_epoch
        if samples is None:
            if self.train_urls is None:
                raise ValueError("no train_shards configured")
            samples = count_samples(self.train_urls)
        step = self.batch_size * world
        batches = int(samples) // step
        if batches < 1:
            raise ValueError(
                f"samples_per_epoch={samples} is smaller than one global batch ({step}); add data, "
                "lower the batch size or set data.samples_per_epoch"
            )
        return batches

    def _counter(self, stage: str) -> BadSampleCounter:
        if stage not in self._counters:
            self._counters[stage] = BadSampleCounter(self.num_workers)
        return self._counters[stage]

    def _current_epoch(self) -> int:
        if self.trainer is not None:
            return int(self.trainer.current_epoch)
        epoch, self._manual_epoch = self._manual_epoch, self._manual_epoch + 1
        return epoch

    # ------------------------------------------------------------------ loaders

    def train_dataloader(self) -> DataLoader:
        if self.train_urls is None:
            raise ValueError("ShardDataModule: set train_shards to train")
        rank, world = self.rank_world()
        urls = self.train_urls
        stream = TrainStream(
            urls,
            self.train_transform,
            batch_size=self.batch_size,
            batches_per_rank=self.batches_per_epoch(),
            rank=rank,
            world_size=world,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            counter=self._counter("train"),
            keep_constant_depth=self.keep_constant_depth,
            buckets=self.buckets,
        )
        # Lightning warns that __len__ of an IterableDataset may be wrong with several workers;
        # here it is exact by construction (worker_batches sums to len), so silence just that.
        warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
        # A mid-epoch resume replays the stream to its saved position (state_dict), so Lightning's
        # "dataloader is not resumable" warning does not apply.
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended")
        if self.buckets:
            log.info("aspect-ratio buckets (H, W): %s", self.buckets)
        log.info(
            "train data: %d shards, %d batches of %d per rank per epoch (rank %d/%d, %d workers)",
            len(urls),
            len(stream),
            self.batch_size,
            rank,
            world,
            self.num_workers,
        )
        return _EpochLoader(
            stream,
            epoch_fn=self._current_epoch,
            skip_fn=self._resume_skip,
            batch_size=None,
            collate_fn=_as_is,  # batches are complete; skip torch's default_convert walk
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ stream position

    def _stream_layout(self) -> dict:
        """What, besides the epoch, determines the train streams (must match to replay)."""
        _, world = self.rank_world()
        return {
            "seed": self.seed,
            "world_size": world,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "train_urls": len(self.train_urls or []),
            # only when on: positions saved before buckets existed still replay
            **({"buckets": [list(b) for b in self.buckets]} if self.buckets else {}),
        }

    def state_dict(self) -> dict:
        """The train stream's position, saved by Lightning in every checkpoint.

        ``batches_done``: batches of ``epoch`` whose training step finished on this rank (the
        same on every rank); the per-worker offsets follow from it (module docstring).
        """
        trainer = self.trainer
        if trainer is None or self.train_urls is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {
            "stream_position": {
                "epoch": int(trainer.current_epoch),
                "batches_done": int(progress.processed),
                **self._stream_layout(),
            }
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Remember the position; the next train loader of that epoch replays up to it."""
        self._resume_position = dict(state_dict.get("stream_position") or {}) or None

    def _resume_skip(self, epoch: int) -> int:
        position, self._resume_position = self._resume_position, None
        if not position or int(position.get("epoch", -1)) != epoch:
            return 0
        done = int(position.get("batches_done", 0))
        saved_layout = {k: position.get(k) for k in self._stream_layout()}
        if saved_layout != self._stream_layout():
            log.warning(
                "cannot replay the data stream exactly (saved %s, now %s): epoch %d restarts",
                saved_layout,
                self._stream_layout(),
                epoch,
            )
            return 0
        if done:
            log.info("resuming the data stream of epoch %d after %d batches", epoch, done)
        return done

    def val_set(self) -> ValSet:
        """The fixed validation set of this rank (built once)."""
        if self.val_urls is None:
            raise ValueError("ShardDataModule: no val_shards configured")
        if self._val_set is None:
            rank, world = self.rank_world()
            self._val_set = ValSet(
                self.val_urls,
                self.val_transform,
                rank,
                world,
                self.val_samples,
                self._counter("val"),
                self.keep_constant_depth,
                progress=rank == 0,
            )
        return self._val_set

    def val_dataloader(self) -> DataLoader | list:
        if self.val_urls is None:
            return []
        return DataLoader(
            self.val_set(),
            batch_size=self.val_batch_size or self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Images travel as uint8 (B, 3, H, W); on the device they become float32 in [-1, 1]
        (:func:`transforms.finalize_batch`), so steps and callbacks see the model's range."""
        return finalize_batch(batch)

    # ------------------------------------------------------------------ bad samples

    def bad_sample_counts(self, stage: str | None = None, per_worker: bool = False) -> dict:
        """Bad/odd sample counts of this rank.

        Args:
            stage: "train", "val" or None (sum of both).
            per_worker: return ``{stage: {worker: {reason: count}}}`` instead of totals.

        Returns:
            ``{reason: count}`` (only reasons that occurred), or the per-worker breakdown.
        """
        stages = [stage] if stage else sorted(self._counters)
        if per_worker:
            return {s: self._counters[s].per_worker() for s in stages if s in self._counters}
        totals: dict[str, int] = {}
        for s in stages:
            if s in self._counters:
                for reason, count in self._counters[s].counts().items():
                    totals[reason] = totals.get(reason, 0) + count
        return totals

    def report_bad_samples(self, since: dict | None = None, label: str = "") -> dict:
        """Log a line per stage (and warn when samples were skipped). Returns the totals.

        ``since``: totals from an earlier call; then only what happened after it is reported
        (per-epoch counts instead of ever-growing totals).
        """
        if since is None:
            for stage, counter in sorted(self._counters.items()):
                counter.report(f"{stage} data (rank {self.rank_world()[0]})")
            return self.bad_sample_counts()
        totals = self.bad_sample_counts()
        new = {r: c - since.get(r, 0) for r, c in totals.items() if c > since.get(r, 0)}
        skipped = {r: c for r, c in new.items() if r in SKIP_REASONS}
        line = ", ".join(f"{r}={c}" for r, c in new.items()) or "none"
        log.info("%s bad/odd sample reads: %s", label, line)
        if skipped:
            log.warning(
                "%s: skipped %d bad sample reads (%s); `depth2img-shards check` names them",
                label,
                sum(skipped.values()),
                line,
            )
        return totals

    def teardown(self, stage: str) -> None:
        if self._counters:
            self.report_bad_samples()


class BadSampleLogger(L.Callback):
    """Logs ``data/bad_<reason>`` (cumulative, this rank) at each train epoch end and warns.

    Add it to the trainer's callbacks when the datamodule is a :class:`ShardDataModule`.
    """

    def __init__(self) -> None:
        self._previous: dict[str, int] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, ShardDataModule):
            return
        # This epoch's reads only (the totals grow with every epoch that re-reads a shard).
        label = f"epoch {trainer.current_epoch} (rank {trainer.global_rank})"
        counts = datamodule.report_bad_samples(since=self._previous, label=label)
        self._previous = dict(counts)
        for reason, count in counts.items():
            pl_module.log(f"data/bad_{reason}", float(count), rank_zero_only=True)
