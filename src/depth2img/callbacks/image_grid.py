"""Image grid every N steps: depth | real | generated (fixed seeds, EMA weights).

Uses the first validation samples seen (or, before any validation, the first training batch),
generates with ``depth2img.inference.sampling.generate`` and writes
``<out_dir>/step=<N>.png``; loggers with ``log_image`` (W&B) get it too. Generation runs on rank
0 only and involves no collective op, so it cannot hang DDP.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image

from depth2img.data.transforms import image_to_float

log = logging.getLogger(__name__)


def make_grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Stack rows of images into one uint8 grid.

    Args:
        rows: each (N, 3, H, W) float in [0, 1] (same N, H, W for all rows).
        pad: white pixels between tiles.

    Returns:
        (rows*(H+pad)-pad, N*(W+pad)-pad, 3) uint8.
    """
    n, _, h, w = rows[0].shape
    grid = np.full((len(rows) * (h + pad) - pad, n * (w + pad) - pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        tiles = (row.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        for c in range(n):
            grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tiles[c]
    return grid


class ImageGridCallback(pl.Callback):
    """Generate and log a depth | real | generated grid every ``every_n_steps`` optimizer steps.

    Args:
        every_n_steps: cadence in global steps; None/0 disables the callback.
        num_images: columns of the grid.
        out_dir: folder for the PNGs (default ``<trainer.default_root_dir>/images``).
        seeds: one seed per column (default ``pl_module.hparams.val_seeds`` or 0..N-1).
    """

    def __init__(
        self,
        every_n_steps: int | None = 500,
        num_images: int = 4,
        out_dir: str | None = None,
        seeds: list[int] | None = None,
    ):
        self.every_n_steps = int(every_n_steps or 0)
        self.num_images = int(num_images)
        self.out_dir = out_dir
        self.seeds = seeds
        self._batch: dict | None = None
        self._from_val = False
        self._warned = False

    def _keep(self, batch: dict, from_val: bool) -> None:
        n = self.num_images
        self._batch = {
            "depth": batch["depth"][:n].detach().cpu(),
            "image": batch["image"][:n].detach().cpu() if batch.get("image") is not None else None,
            "valid_mask": (
                batch["valid_mask"][:n].detach().cpu()
                if batch.get("valid_mask") is not None
                else None
            ),
            "caption": list(batch["caption"][:n]),
        }
        self._from_val = from_val

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.every_n_steps and not self._from_val and batch_idx == 0:
            self._keep(batch, from_val=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.every_n_steps:
            return
        if self._batch is None:
            self._keep(batch, from_val=False)
        step = trainer.global_step
        final = trainer.max_steps is not None and step == trainer.max_steps > 0
        if step == 0 or (step % self.every_n_steps and not final) or not trainer.is_global_zero:
            return  # every n steps, and at the last step (short runs get a grid too)
        if getattr(self, "_last_step", None) == step:  # gradient accumulation: once per step
            return
        self._last_step = step
        self.log_grid(trainer, pl_module, step)

    @torch.no_grad()
    def render(self, pl_module) -> np.ndarray | None:
        """The grid (uint8 HxWx3) for the kept samples, or None when no sampler is available."""
        try:
            from depth2img.inference.sampling import generate
        except ImportError as err:
            if not self._warned:
                log.warning("image grid skipped: sampler unavailable (%s)", err)
                self._warned = True
            return None
        batch = self._batch
        n = batch["depth"].shape[0]
        hp = pl_module.hparams
        seeds = list(self.seeds or hp.get("val_seeds") or range(n))
        seeds = (seeds * n)[:n]
        device = pl_module.device
        was_training = pl_module.training
        pl_module.eval()
        try:
            with pl_module.ema_weights():
                generated = generate(
                    pl_module.components,
                    batch["depth"].to(device),
                    batch["caption"],
                    num_inference_steps=int(hp.get("val_num_inference_steps", 20)),
                    guidance_scale=float(hp.get("val_guidance_scale", 5.0)),
                    seeds=seeds,
                    depth_spec=pl_module.depth_spec,
                    depth_valid=(
                        batch["valid_mask"].to(device) if batch["valid_mask"] is not None else None
                    ),
                    **getattr(pl_module, "generation_options", dict)(),
                )
        finally:
            pl_module.train(was_training)
        h, w = generated.shape[-2:]
        depth = (batch["depth"].float() + 1) / 2  # model convention [-1, 1] -> [0, 1]
        depth = torch.nn.functional.interpolate(depth, size=(h, w), mode="nearest").repeat(
            1, 3, 1, 1
        )
        rows = [depth]
        if batch["image"] is not None:
            real = (image_to_float(batch["image"]).float() + 1) / 2  # uint8 or [-1, 1]
            rows.append(torch.nn.functional.interpolate(real, size=(h, w), mode="bilinear"))
        rows.append(generated.float().cpu())
        return make_grid(rows)

    def log_grid(self, trainer, pl_module, step: int) -> Path | None:
        grid = self.render(pl_module)
        if grid is None:
            return None
        out_dir = Path(self.out_dir or Path(trainer.default_root_dir) / "images")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"step={step}.png"
        Image.fromarray(grid).save(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(
                    key="val/images",
                    images=[grid],
                    step=step,
                    caption=["rows: depth | real | generated"],
                )
        return path
