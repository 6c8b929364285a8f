"""Depth2ImgModule in process: LoRA parameters and checkpoint, deterministic validation loss."""

from __future__ import annotations

import torch

from depth2img.models.lora import merge_lora
from depth2img.training.lightning_module import Depth2ImgModule


def _batch(keys: list[str], size: int = 32) -> dict:
    gen = torch.Generator().manual_seed(sum(map(ord, "".join(keys))))
    n = len(keys)
    return {
        "image": torch.rand(n, 3, size, size, generator=gen) * 2 - 1,
        "depth": torch.rand(n, 1, size, size, generator=gen) * 2 - 1,
        "valid_mask": torch.ones(n, 1, size, size, dtype=torch.bool),
        "caption": ["a street"] * n,
        "key": keys,
    }


def _pick(batch: dict, idx: list[int]) -> dict:
    return {k: (v[idx] if torch.is_tensor(v) else [v[i] for i in idx]) for k, v in batch.items()}


def test_validation_loss_independent_of_batch_composition():
    torch.manual_seed(0)
    module = Depth2ImgModule(model_source="tiny", ema_decay=None, snr_gamma=None).eval()
    batch = _batch(["a", "b", "c"])

    def val_loss(b):
        noise, t = module.validation_noise(b, module._latent_shape(b))
        with torch.no_grad():
            return module.diffusion_loss(b, noise=noise, timesteps=t, sample_latents=False)

    whole = val_loss(batch)
    reordered = val_loss(_pick(batch, [2, 0, 1]))
    singles = torch.stack([val_loss(_pick(batch, [i])) for i in range(3)]).mean()
    torch.testing.assert_close(whole, reordered, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(whole, singles, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(val_loss(batch), whole)  # repeatable


def test_lora_trains_adapters_and_conv_in_only(tmp_path):
    module = Depth2ImgModule(model_source="tiny", train_mode="lora", lora_rank=4)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.startswith("unet.conv_in.") for n in names)
    assert any(n.startswith("unet.conv_in.") for n in names)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(names)
    assert set(checkpoint["ema"]["shadow"]) == set(names)
    # A fresh module restores the adapters from that checkpoint (frozen weights rebuilt).
    with torch.no_grad():
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.normal_()
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    fresh = Depth2ImgModule(model_source="tiny", train_mode="lora", lora_rank=4)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    x, t, e = torch.randn(1, 5, 8, 8), torch.tensor([7]), torch.randn(1, 16, 32)
    with torch.no_grad():
        expected = module.unet(x, t, e).sample
        torch.testing.assert_close(fresh.unet(x, t, e).sample, expected)
        merged = merge_lora(fresh.unet)
        assert not any("lora" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(x, t, e).sample, expected, rtol=1e-4, atol=1e-4)


def test_sigterm_saves_last_checkpoint(tmp_path):
    import os
    import signal

    import lightning.pytorch as pl
    import pytest
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from depth2img.callbacks.interrupt import SaveOnInterrupt
    from depth2img.models.checkpointing import AtomicCheckpointIO

    class KillAtStep2(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends at preemption

    torch.set_num_threads(1)
    module = Depth2ImgModule(model_source="tiny")
    batches = [_batch([f"k{i}a", f"k{i}b"]) for i in range(8)]
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[KillAtStep2(), SaveOnInterrupt()],
        plugins=[AtomicCheckpointIO()],
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    with pytest.raises(SIGTERMException):
        trainer.fit(module, train_dataloaders=loader)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2


def test_gradient_checkpointing_and_math_attention_give_same_loss_and_grads():
    batch = _batch(["x", "y"])
    results = []
    for kwargs in ({}, {"gradient_checkpointing": True, "enable_sdpa": False}):
        module = Depth2ImgModule(model_source="tiny", ema_decay=None, **kwargs).train()
        assert module.unet.is_gradient_checkpointing == bool(kwargs)
        noise, t = module.validation_noise(batch, module._latent_shape(batch))
        loss = module.diffusion_loss(batch, noise=noise, timesteps=t, sample_latents=False)
        loss.backward()
        results.append((loss.detach(), module.unet.conv_in.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_training_latents_match_cached_latents_unless_sampling():
    """Default ``vae_latents="mean"``: a step on images trains on exactly the latents a
    latent-cache shard holds (the posterior mean); ``"sample"`` draws from the posterior."""
    torch.manual_seed(0)
    module = Depth2ImgModule(model_source="tiny", ema_decay=None)
    batch = _batch(["a", "b"])
    with torch.no_grad():
        cached = {**batch, "latents": module.vae.encode(batch["image"]).latent_dist.mean}

    def step_loss(b, vae_latents):
        module.hparams.vae_latents = vae_latents
        torch.manual_seed(1)  # same noise and timesteps for every call
        with torch.no_grad():
            return module.training_loss(b)

    reference = step_loss(cached, "mean")
    torch.testing.assert_close(step_loss(batch, "mean"), reference, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(step_loss(batch, "sample"), reference, rtol=1e-3)


def test_timestep_sampling_reaches_the_training_loss():
    """``timestep_sampling=cubic`` draws the training timesteps towards high noise (mean 0.75 T
    vs 0.5 T uniform); an unknown name is refused at construction."""
    import pytest

    means = {}
    for sampling in ("uniform", "cubic"):
        torch.manual_seed(0)
        module = Depth2ImgModule(model_source="tiny", ema_decay=None, timestep_sampling=sampling)
        seen = []
        add_noise = module.noise_scheduler.add_noise

        def recording(latents, noise, timesteps, add_noise=add_noise, seen=seen):
            seen.append(timesteps)
            return add_noise(latents, noise, timesteps)

        module.noise_scheduler.add_noise = recording
        batch = _batch([str(i) for i in range(16)], size=16)
        with torch.no_grad():
            for _ in range(8):
                module.training_loss(batch)
        means[sampling] = torch.cat(seen).float().mean().item() / 1000
    assert abs(means["uniform"] - 0.5) < 0.07 and abs(means["cubic"] - 0.75) < 0.07, means
    with pytest.raises(ValueError, match="timestep_sampling must be one of"):
        Depth2ImgModule(model_source="tiny", timestep_sampling="late")
