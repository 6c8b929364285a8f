"""No depth: the base UNet as it is (text-to-image / img2img), through the same denoiser.

The img2img baseline of the structure benchmark, and the proof that a second conditioner is one
module: training, checkpoints, export and sampling all work with it unchanged.
"""

from __future__ import annotations

from depth2img.models.components import Components
from depth2img.models.conditioning.base import Conditioner


class NoDepth(Conditioner):
    """``UNet(noisy)``: ``in_channels`` must equal the latent channels."""

    name = "none"
    needs_depth = False

    def attach(self, components: Components, *, convert: bool = False) -> None:
        unet, latent = components.unet, components.latent_channels
        if unet.config.in_channels != latent:
            raise ValueError(
                f"conditioning 'none' needs a text-to-image UNet with {latent} input channels; "
                f"this one has {unet.config.in_channels} (a depth UNet: use conditioning=concat)"
            )
        super().attach(components, convert=convert)
