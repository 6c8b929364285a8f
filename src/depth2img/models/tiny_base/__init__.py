"""Build the shipped tiny depth2img base model (``scripts/build_tiny_base.py``).

The project is used offline, so it ships its own tiny Stable-Diffusion-2-depth-style model, trained
on its own synthetic scenes the way SD2-depth was made from SD2-base: VAE -> 4-channel text-to-image
UNet -> the same UNet widened to 4 + 1 input channels and trained on (latents, depth).

Modules: ``configs`` (architectures and step budgets), ``dataset`` (renders the training set into
memory), ``training`` (one loop per network), ``metrics`` (PSNR, aligned depth errors),
``export`` (diffusers folders, checksums, load checks), ``samples`` (generation grid, depth-following
check), ``report`` (data/models/README.md).
"""
