"""depth2img: fine-tune, evaluate and run depth-conditioned latent diffusion models."""

__version__ = "0.1.0"
