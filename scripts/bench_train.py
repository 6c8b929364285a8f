"""Training-loop overhead: Lightning vs a plain PyTorch loop doing the same work.

Same process, same tiny model, same pre-built batches in memory, same optimizer, LR schedule,
gradient clipping and EMA update; warm-up steps excluded; several interleaved repeats; the median
seconds per step is reported. Also: step time with cached latents vs VAE-encoding in the step,
and with ``--text-cache N`` the plain loop with the prompt-embedding cache (N entries) vs
without. Goal: Lightning / plain <= 1.05. Wall and process-CPU time are both reported: on a shared machine
other processes inflate wall time, not this process's CPU time (use --threads 1 there).

    python scripts/bench_train.py                         # CPU, 1 thread, tiny model, 64 px
    python scripts/bench_train.py --device cuda --size 256 --batch-size 16 --threads 8
    python scripts/bench_train.py --model-source tiny-sdxl --conditioning controlnet \
        --caption-pool 8 --caption-dropout 0.5 --text-cache 64   # SDXL ControlNet step
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from tqdm import tqdm

from depth2img.data.transforms import finalize_batch
from depth2img.models.components import vae_scale_factor
from depth2img.training.lightning_module import Depth2ImgModule

CAPTIONS = (
    "a street with trees",
    "a narrow street at night",
    "a wide road with parked cars",
    "an aerial view of houses",
    "a courtyard in the rain",
    "a bridge over a river",
    "a market square in fog",
    "a parking lot in snow",
)


def now() -> tuple[float, float]:
    """(wall seconds, process CPU seconds). On a shared CPU machine other processes inflate wall
    time but not this process's CPU time, so with 1 thread CPU time is the stable measure."""
    return time.perf_counter(), time.process_time()


def elapsed(start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    return end[0] - start[0], end[1] - start[1]


def make_batches(
    n: int,
    batch_size: int,
    size: int,
    latent: tuple | None,
    seed: int = 0,
    caption_pool: int = 1,
    caption_dropout: float = 0.0,
):
    """``n`` batches per CONTRACTS.md (uint8 images, as the reader ships them); with
    ``latent=(C, h, w)`` also cached ``latents``. Captions: drawn from the first
    ``caption_pool`` of ``CAPTIONS``, each "" with probability ``caption_dropout`` (the reader's
    caption dropout); SDXL micro-conditioning sizes as the reader gives them."""
    gen = torch.Generator().manual_seed(seed)
    pool = CAPTIONS[: max(1, caption_pool)]
    batches = []
    for i in range(n):
        picks = torch.randint(0, len(pool), (batch_size,), generator=gen).tolist()
        dropped = (torch.rand(batch_size, generator=gen) < caption_dropout).tolist()
        captions = ["" if drop else pool[k] for k, drop in zip(picks, dropped)]
        batch = {
            "image": torch.randint(
                0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=gen
            ),
            "depth": torch.rand(batch_size, 1, size, size, generator=gen) * 2 - 1,
            "valid_mask": torch.ones(batch_size, 1, size, size, dtype=torch.bool),
            "caption": captions,
            "key": [f"b{i}_{j}" for j in range(batch_size)],
            "original_size": torch.tensor([[size + 16, size + 8]] * batch_size),
            "crop_top_left": torch.tensor([[8, 4]] * batch_size),
        }
        if latent is not None:
            batch["latents"] = torch.randn(batch_size, *latent, generator=gen)
        batches.append(batch)
    return batches


def to_device(batch: dict, device: torch.device) -> dict:
    """Move to ``device`` and finish there (uint8 image -> float32 [-1, 1]), like
    ``ShardDataModule.on_after_batch_transfer`` (``Trainer.fit`` without a datamodule leaves
    that to ``encode_latents``: the same conversion, once)."""
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return finalize_batch(moved)


def new_module(args, text_cache: int = 0) -> Depth2ImgModule:
    torch.manual_seed(0)
    return Depth2ImgModule(
        model_source=args.model_source,
        conditioning=args.conditioning,
        text_embed_cache=text_cache,
        learning_rate=1e-4,
        lr_warmup_steps=10,
        ema_decay=0.999,
        snr_gamma=5.0,
        seed=0,
    )


def plain_loop(args, batches, device, text_cache: int = 0) -> list[float]:
    """A hand-written loop: loss, backward, clip, AdamW, LambdaLR, EMA. Returns step times."""
    module = new_module(args, text_cache).to(device)
    module.train()
    module.ema.to(device)
    opt_cfg = module.configure_optimizers()
    optimizer, scheduler = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    params = module.trainable_parameters()
    times = []
    last = now()
    for batch in batches:
        batch = to_device(batch, device)
        loss = module.diffusion_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        module.ema.update(params)
        if device.type == "cuda":
            torch.cuda.synchronize()
        current = now()
        times.append(elapsed(last, current))
        last = current
    return times


class _StepClock(pl.Callback):
    def __init__(self):
        self.times: list[tuple[float, float]] = []
        self.last: tuple[float, float] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.last is None:
            self.last = now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        current = now()
        self.times.append(elapsed(self.last, current))
        self.last = current


def lightning_loop(args, batches, device) -> list[float]:
    """The same work through ``Trainer.fit`` (no logger/checkpoint/progress bar)."""
    module = new_module(args)
    clock = _StepClock()
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=len(batches),
        max_epochs=-1,
        gradient_clip_val=args.clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=loader)
    return clock.times


def median_after_warmup(times: list[tuple[float, float]], warmup: int, which: int) -> float:
    return statistics.median(t[which] for t in times[warmup:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-source", default="tiny", help="tiny | tiny-sdxl | shipped | folder"
    )
    parser.add_argument(
        "--conditioning", default="concat", help="concat | none | controlnet (the trained part)"
    )
    parser.add_argument("--caption-pool", type=int, default=1, help="distinct captions used")
    parser.add_argument(
        "--caption-dropout", type=float, default=0.0, help="share of empty captions"
    )
    parser.add_argument(
        "--text-cache",
        type=int,
        default=0,
        help="also time the plain loop with a prompt-embedding cache of N entries (0 = skip)",
    )
    parser.add_argument("--size", type=int, default=64, help="image side in px")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient clipping norm")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/train.json"))
    args = parser.parse_args(argv)
    if args.steps < 3 or args.repeats < 1:
        parser.error("need --steps >= 3 and --repeats >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pl.seed_everything(0, verbose=False)

    probe = new_module(args)
    factor = vae_scale_factor(probe.vae.config)
    latent = (probe.vae.config.latent_channels, args.size // factor, args.size // factor)
    del probe
    n = args.warmup + args.steps
    captions = dict(caption_pool=args.caption_pool, caption_dropout=args.caption_dropout)
    encode_batches = make_batches(n, args.batch_size, args.size, None, **captions)
    cached_batches = make_batches(n, args.batch_size, args.size, latent, **captions)

    runs = [
        ("plain", plain_loop, encode_batches),
        ("lightning", lightning_loop, encode_batches),
        ("plain_cached", plain_loop, cached_batches),
    ]
    if args.text_cache:
        runs.append(
            (
                "plain_text_cache",
                lambda a, b, d: plain_loop(a, b, d, text_cache=args.text_cache),
                encode_batches,
            )
        )
    results = {name: [] for name, _, _ in runs}
    results_cpu = {name: [] for name in results}
    with tqdm(total=args.repeats * len(runs), desc="bench_train", unit="run") as bar:
        for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
            for name, loop, batches in runs:
                times = loop(args, batches, device)
                results[name].append(median_after_warmup(times, args.warmup, 0))
                results_cpu[name].append(median_after_warmup(times, args.warmup, 1))
                bar.update()

    med = {k: statistics.median(v) for k, v in results.items()}
    cpu = {k: statistics.median(v) for k, v in results_cpu.items()}
    report = {
        "config": {**{k: str(v) for k, v in vars(args).items()}},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "sec_per_step": med,
        "repeats": results,
        "cpu_sec_per_step": cpu,
        "repeats_cpu": results_cpu,
        "lightning_over_plain": med["lightning"] / med["plain"],
        "lightning_over_plain_cpu": cpu["lightning"] / cpu["plain"],
        "encode_over_cached": med["plain"] / med["plain_cached"],
        "encode_over_cached_cpu": cpu["plain"] / cpu["plain_cached"],
        "samples_per_sec_lightning": args.batch_size / med["lightning"],
    }
    if args.text_cache:
        report["text_cache_over_plain"] = med["plain_text_cache"] / med["plain"]
        report["text_cache_over_plain_cpu"] = cpu["plain_text_cache"] / cpu["plain"]
    print(f"{'median ms/step':18s}{'wall':>10s}{'cpu':>10s}")
    for name, label in (
        ("plain", "plain loop"),
        ("lightning", "lightning loop"),
        ("plain_cached", "plain, cached"),
        ("plain_text_cache", "plain, text cache"),
    ):
        if name in med:
            print(f"{label:18s}{med[name] * 1e3:10.2f}{cpu[name] * 1e3:10.2f}")
    ratios = [
        ("lightning_over_plain", "lightning / plain"),
        ("encode_over_cached", "encode / cached"),
    ]
    if args.text_cache:
        ratios.append(("text_cache_over_plain", "text cache / not"))
    for key, label in ratios:
        print(f"{label:18s}{report[key]:10.3f}{report[key + '_cpu']:10.3f}")
    ratio = report["lightning_over_plain"]
    print(f"goal lightning / plain <= 1.05 (wall): {'met' if ratio <= 1.05 else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
