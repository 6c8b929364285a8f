"""What the training CLI needs to know about a built model, without depending on its internals."""

from __future__ import annotations


def model_native_resolution(model) -> int | None:
    """Side length in pixels the model was built for (UNet ``sample_size`` x VAE factor).

    None when the module does not expose ``unet`` and ``vae`` with diffusers configs.
    """
    unet, vae = getattr(model, "unet", None), getattr(model, "vae", None)
    try:
        sample = unet.config.sample_size
        sample = max(sample) if isinstance(sample, list | tuple) else int(sample)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return int(sample) * int(factor)
