"""Generation metrics during training: a Lightning callback run at validation time.

Every ``every_n_steps`` optimizer steps, during the validation loop (where the LightningModule
has swapped its EMA weights in), the callback generates images for the first ``num_samples``
validation samples — the same samples and seeds every time, so curves are comparable — judges
their depth and logs

- ``val/depth_absrel``, ``val/depth_delta1``, ``val/depth_rmse``, ``val/depth_spearman``,
  ``val/depth_rmse_cnpp`` (means over images, see ``depth_metrics.py``);
- ``val/fd_tiny``, ``val/kid_tiny_mean`` (FD/KID vs the same validation images' real features);
- an image grid (real | depth | generated | judged depth | error) to the logger or the run dir.

Distributed: each rank generates its own validation samples and updates torchmetrics states;
every rank calls ``compute()`` in ``on_validation_epoch_end`` (torchmetrics syncs inside), so no
collective runs in a rank-zero-only hook (torchmetrics #2684 hangs otherwise).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torchmetrics.aggregation import MeanMetric

from depth2img.data.transforms import image_to_float
from depth2img.depth_estimation import resize_depth
from depth2img.evaluation.depth_metrics import DEPTH_METRICS, image_depth_metrics


class GenerationMetricsCallback(pl.Callback):
    """Depth consistency + FD/KID of generated validation images, logged as ``{stage}/...``.

    Args:
        every_n_steps: run when at least this many optimizer steps passed since the last run
            (the first validation after step 0 always runs, sanity checking never does).
        num_samples: how many validation samples (global, over all ranks) to generate for.
        steps, guidance_scale, scheduler, negative_prompt: sampler settings.
        seed: sample with global validation index ``i`` uses seed ``seed + i``.
        judge: depth judge source (``shipped``, folder or hub id).
        extractor, extractor_source: FD features (``tiny`` → ``fd_tiny``; see feature_extractors).
        kid_subset_size: capped at the number of images.
        num_grid: images in the logged grid (rank 0's first ones); 0 = no grid.
        stage: metric key prefix.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        num_samples: int = 16,
        steps: int = 20,
        guidance_scale: float = 7.5,
        scheduler: str = "ddim",
        negative_prompt: str = "",
        seed: int = 0,
        judge: str = "shipped",
        extractor: str = "tiny",
        extractor_source: str | None = None,
        kid_subset_size: int = 50,
        num_grid: int = 4,
        stage: str = "val",
    ) -> None:
        super().__init__()
        if every_n_steps < 1 or num_samples < 1:
            raise ValueError("every_n_steps and num_samples must be >= 1")
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.scheduler = scheduler
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.judge_source = judge
        self.extractor_name = extractor
        self.extractor_source = extractor_source
        self.kid_subset_size = kid_subset_size
        self.num_grid = num_grid
        self.stage = stage
        self._last_step: int | None = None
        self._active = False
        self._seen = 0
        self._real_done = False
        self._grid: list[dict] = []
        self.judge = None
        self.quality = None
        self.depth_means = None

    # ------------------------------------------------------------------ setup
    def setup(self, trainer, pl_module, stage: str) -> None:
        from depth2img.evaluation.feature_extractors import build_feature_extractor
        from depth2img.evaluation.image_quality import ImageQuality
        from depth2img.evaluation.judges import load_judge

        if self.judge is not None:
            return
        self.judge = load_judge(self.judge_source, device=str(pl_module.device))
        extractor = build_feature_extractor(
            self.extractor_name,
            source=self.extractor_source,
            judge=self.judge,  # reused only when it is the extractor's model
        )
        # Real features stay across validations: the real images are the same every time.
        self.quality = ImageQuality(
            extractor, kid_subset_size=self.kid_subset_size, reset_real_features=False
        )
        self.depth_means = {name: MeanMetric(nan_strategy="ignore") for name in DEPTH_METRICS}

    def _move(self, device) -> None:
        self.judge.model.to(device)
        self.judge.device = torch.device(device)
        self.quality.to(device)
        for metric in self.depth_means.values():
            metric.to(device)

    # ------------------------------------------------------------------ schedule
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        step = trainer.global_step
        due = self._last_step is None or step - self._last_step >= self.every_n_steps
        # Same decision on every rank (global_step is global), so all ranks join the sync.
        self._active = bool(due and not trainer.sanity_checking)
        self._seen = 0
        self._grid = []
        if self._active:
            self._move(pl_module.device)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not self._active:
            return
        rank, world = trainer.global_rank, trainer.world_size
        count = len(batch["caption"])
        padding = batch.get("is_padding")
        # ValSet strides samples over ranks: local sample k of rank r is global r + k * world.
        global_idx = [rank + (self._seen + j) * world for j in range(count)]
        self._seen += count
        keep = [
            j
            for j in range(count)
            if global_idx[j] < self.num_samples and not (padding is not None and bool(padding[j]))
        ]
        if keep:
            self._generate_and_update(pl_module, batch, keep, [global_idx[j] for j in keep])

    @torch.no_grad()
    def _generate_and_update(self, pl_module, batch, keep, indices) -> None:
        from depth2img.inference.sampling import generate

        sel = torch.tensor(keep, device=batch["depth"].device)
        depth = batch["depth"].index_select(0, sel)  # [k, 1, H, W]
        valid = batch["valid_mask"].index_select(0, sel)
        real = image_to_float(batch["image"].index_select(0, sel))  # [-1, 1], also from uint8
        real01 = (real + 1) / 2  # [k, 3, H, W] in [0, 1]
        images01 = generate(
            pl_module.components,
            depth,
            [batch["caption"][j] for j in keep],
            negative_prompt=self.negative_prompt,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            seeds=[self.seed + i for i in indices],
            scheduler_name=self.scheduler,
            depth_spec=pl_module.depth_spec,
            depth_valid=valid,
            **getattr(pl_module, "generation_options", dict)(),
        )
        # One judge pass at its native resolution (what depth_rmse_cnpp divides by its max),
        # resized like judge(images) for the other metrics.
        native = self.judge(images01.float(), native=True)  # [k, h, w] near is high
        if self.judge.depth_kind == "inverse":
            judged = resize_depth(native.float(), tuple(images01.shape[-2:]))  # [k, H, W]
        else:
            judged = self.judge(images01.float())
        for j in range(len(keep)):
            metrics = image_depth_metrics(
                judged[j].cpu().numpy(),
                depth[j, 0].cpu().numpy(),
                valid[j, 0].cpu().numpy(),
                pred_native=native[j].cpu().numpy(),
            )
            for name in DEPTH_METRICS:
                self.depth_means[name].update(torch.tensor(metrics[name], dtype=torch.float32))
            if len(self._grid) < self.num_grid:
                self._grid.append(
                    {
                        "image": _hwc_uint8(real01[j]),
                        "depth": depth[j, 0].cpu().numpy(),
                        "valid": valid[j, 0].cpu().numpy(),
                        "generated": _hwc_uint8(images01[j]),
                        "judged": judged[j].cpu().numpy(),
                    }
                )
        device = pl_module.device
        self.quality.update_features(self.quality.extract(images01).to(device), real=False)
        if not self._real_done:
            self.quality.update_features(self.quality.extract(real01).to(device), real=True)

    # ------------------------------------------------------------------ compute + log
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._active:
            return
        self._active = False
        self._last_step = trainer.global_step
        self._real_done = True
        # Every rank computes (torchmetrics syncs states inside compute).
        logs = {f"{self.stage}/{n}": float(m.compute()) for n, m in self.depth_means.items()}
        quality = self.quality.compute()
        for key, value in quality.items():
            if key.startswith(("fd_", "fid", "kid")) and key != "kid_subset_size":
                logs[f"{self.stage}/{key}"] = float("nan") if value is None else float(value)
        logs[f"{self.stage}/gen_metrics_n"] = float(quality["n_fake"])
        for metric in self.depth_means.values():
            metric.reset()
        self.quality.reset()  # fake only; the real features are kept
        # Values are already global and identical on every rank; sync_dist averages identical
        # numbers (exact) and keeps Lightning from warning about unsynced epoch-level logs.
        pl_module.log_dict(logs, sync_dist=True)
        if trainer.is_global_zero and self._grid:
            self._log_grid(trainer)

    def _log_grid(self, trainer) -> None:
        from PIL import Image

        from depth2img.evaluation.report import grid_row

        grid = np.concatenate([grid_row(**g) for g in self._grid], axis=0)
        step = trainer.global_step
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # W&B; loggers without images are skipped
                # Image logging must never stop training.
                with contextlib.suppress(Exception):
                    logger.log_image(key=f"{self.stage}/generation_grid", images=[grid], step=step)
        folder = Path(trainer.default_root_dir) / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(folder / f"gen_metrics_step{step:07d}.png")


def _hwc_uint8(image01: torch.Tensor) -> np.ndarray:
    return (image01.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
