"""Build the shipped tiny depth2img base model (``python -m tools.build_tiny_base``).

A tool, not part of the library: the project is used offline, so it ships its own tiny
Stable-Diffusion-2-depth-style model trained on its own synthetic scenes the way SD2-depth was
made from SD2-base (VAE -> 4-channel text-to-image UNet -> the same UNet widened to 4 + 1 input
channels and trained on (latents, depth)), plus a tiny depth judge. Training reuses the
library's losses, EMA, optimizer and LR schedule; sampling uses the library's sampler;
evaluation the library's alignment, depth metrics, priors and bootstrap.

Modules: ``configs`` (architectures and step budgets), ``dataset`` (renders the training sets
into memory), ``training`` (one loop per network), ``judge_eval`` (judge vs layout priors under
rotations and crops), ``samples`` (generation grid, depth following), ``export`` (diffusers
folders, checksums, load checks), ``report`` (data/models/README.md), ``stage_cache``.
"""
