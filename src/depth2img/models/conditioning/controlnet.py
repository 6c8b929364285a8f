"""Depth ControlNet: a trainable copy of the base UNet's encoder reads the depth map as an image
at pixel resolution and adds residuals to the frozen UNet's skip connections and mid block.

::

    depth (B,1,H',W') model convention --resize to (H,W), min-max per sample--> control image
        (B,3,H,W) in [0,1], near = white (the public depth-ControlNet convention)
    ControlNet(noisy (B,C,h,w), t, text, control image) --> residuals * conditioning_scale
    UNet(noisy, t, text, down_block_additional_residuals, mid_block_additional_residual)

``attach`` builds the ControlNet with ``ControlNetModel.from_unet`` (encoder weights copied, zero
convolutions on every residual), so at step 0 the model computes exactly what its base did. The
base stays frozen; gradients still flow back through the frozen UNet's up path to the residuals
(``gradient_modules`` lists both, for gradient checkpointing).

Control guidance start/end follow diffusers' ControlNet pipelines: at denoising step ``i`` of
``n`` the ControlNet acts only when ``start <= i / n`` and ``(i + 1) / n <= end``.
"""

from __future__ import annotations

import torch

from depth2img.data.depth_spec import DepthSpec
from depth2img.models.components import Components
from depth2img.models.conditioning.base import Conditioner

#: diffusers' default conditioning-embedding widths (4 entries = 8x downsampling for SD/SDXL)
DEFAULT_EMBEDDING_CHANNELS = (16, 32, 96, 256)
CONTROL_OPTIONS = ("conditioning_scale", "guidance_start", "guidance_end")


def embedding_channels(vae_scale_factor: int) -> tuple[int, ...]:
    """Conditioning-embedding widths whose downsampling (``2 ** (n - 1)``) equals the VAE's.

    Raises:
        ValueError: a VAE factor that is not a power of two.
    """
    n = int(vae_scale_factor).bit_length()
    if vae_scale_factor < 1 or 2 ** (n - 1) != vae_scale_factor:
        raise ValueError(f"VAE scale factor {vae_scale_factor} is not a power of two")
    channels = list(DEFAULT_EMBEDDING_CHANNELS[:n])
    while len(channels) < n:
        channels.append(channels[-1] * 2)
    return tuple(channels)


def embedding_downsampling(controlnet) -> int:
    """How much a ControlNet's conditioning embedding shrinks the control image."""
    return 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)


def depth_to_control_image(
    depth: torch.Tensor,
    size_hw: tuple[int, int],
    valid: torch.Tensor | None = None,
    spec: DepthSpec | None = None,
) -> torch.Tensor:
    """Model-convention depth -> the control image of public depth ControlNets.

    Resized (``spec.resize_mode``, bicubic by default) to the image size first, then min-max
    normalized per sample to [0, 1] (near = white), the order diffusers' depth-ControlNet examples
    use; ``spec.eps`` keeps a flat map finite (all black) instead of NaN.

    Args:
        depth: (B, 1, H', W') or (B, H', W') near-is-high depth, any range.
        size_hw: (H, W) of the generated/trained image.
        valid: optional bool mask like ``depth``; invalid pixels become the sample's far end.
        spec: depth convention (eps, resize mode); default ``DepthSpec()``.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    spec = spec or DepthSpec()
    depth = spec.resize(depth, size_hw, valid, same_size_copy=False)  # [B, 1, H, W]
    low = depth.amin((1, 2, 3), keepdim=True)
    high = depth.amax((1, 2, 3), keepdim=True)
    image = ((depth - low) / (high - low + spec.eps)).clamp(0.0, 1.0)  # [B, 1, H, W]
    return image.expand(-1, 3, -1, -1).contiguous()


def _as_list(value):
    """Config values compare alike whether JSON gave a list or Python a tuple."""
    return list(value) if isinstance(value, (list, tuple)) else value


def control_keep(step_index: int, num_steps: int, start: float, end: float) -> float:
    """1.0 when the ControlNet acts at step ``step_index`` of ``num_steps`` (diffusers' rule)."""
    return 1.0 - float(step_index / num_steps < start or (step_index + 1) / num_steps > end)


def check_control_options(conditioning_scale: float, start: float, end: float) -> None:
    """Raise a ValueError for settings diffusers' ControlNet pipelines would reject."""
    if conditioning_scale < 0:
        raise ValueError(f"controlnet conditioning scale must be >= 0, got {conditioning_scale}")
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(
            f"control guidance start/end must satisfy 0 <= start < end <= 1, got {start}/{end}"
        )


def load_controlnet(path, **hub_kwargs):
    """A diffusers ``ControlNetModel`` from a folder / hub id (``subfolder=`` allowed)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(path, **hub_kwargs)


class ControlNetDepth(Conditioner):
    """Depth through a ControlNet on a frozen text-to-image base (SD 1.x/2.x, SDXL, SSD-1B)."""

    name = "controlnet"
    needs_depth = True
    trained_module = "controlnet"
    extra_input_channels = 0
    #: modules gradients flow through in training (gradient checkpointing goes on both)
    gradient_modules = ("controlnet", "unet")
    #: ``generate`` forwards conditioning scale and guidance start/end to this conditioner
    accepts_control_options = True

    def attach(self, components: Components, *, convert: bool = False) -> None:
        """Check the base is text-to-image and build the ControlNet when the folder has none.

        Raises:
            ValueError: a depth (concat) UNet, or a ControlNet that does not fit the base.
        """
        from diffusers import ControlNetModel

        unet, latent = components.unet, components.latent_channels
        if unet.config.in_channels != latent:
            raise ValueError(
                f"a depth ControlNet needs a text-to-image base UNet with {latent} input "
                f"channels; this one has {unet.config.in_channels} (an SD2-depth UNet: use "
                "conditioning=concat, or point model_source at its text-to-image parent)"
            )
        factor = components.vae_scale_factor
        if components.controlnet is None:
            controlnet = ControlNetModel.from_unet(
                unet, conditioning_embedding_out_channels=embedding_channels(factor)
            )
            if controlnet.dtype != unet.dtype:  # diffusers warns on every needless cast
                controlnet.to(dtype=unet.dtype)
            components.controlnet = controlnet.to(unet.device)
        controlnet = components.controlnet
        if embedding_downsampling(controlnet) != factor:
            raise ValueError(
                f"the ControlNet's conditioning embedding downsamples by "
                f"{embedding_downsampling(controlnet)} but the VAE by {factor}: it was built for "
                "another base model"
            )
        shape_keys = ("in_channels", "block_out_channels", "layers_per_block", "down_block_types")
        differ = [
            k
            for k in shape_keys
            if k in controlnet.config
            and k in unet.config
            and _as_list(controlnet.config[k]) != _as_list(unet.config[k])
        ]
        if differ:
            raise ValueError(
                f"the ControlNet does not fit the base UNet ({', '.join(differ)} differ: e.g. "
                f"{differ[0]} {controlnet.config[differ[0]]} vs {unet.config[differ[0]]}): it "
                "was built for another base model; pass the base it was trained on"
            )
        if controlnet.config.cross_attention_dim != unet.config.cross_attention_dim:
            raise ValueError(
                f"the ControlNet's cross_attention_dim {controlnet.config.cross_attention_dim} "
                f"does not match the base UNet's {unet.config.cross_attention_dim}: pass the base "
                "model it was trained on (--base-model)"
            )
        super().attach(components, convert=convert)

    #: layers a ControlNet adds to the copied encoder; with LoRA they train in full (the zero
    #: convolutions start at 0, so adapters alone could never open the path to the UNet)
    new_layers = ("controlnet_cond_embedding", "controlnet_down_blocks", "controlnet_mid_block")

    def set_trainable(self, components: Components, train_mode: str, lora: dict | None) -> None:
        """Base frozen; ``full`` trains the whole ControlNet, ``lora`` adapters on its attention
        plus its new layers (conditioning embedding, zero convolutions)."""
        super().set_trainable(components, train_mode, lora)
        if train_mode == "lora":
            for name in self.new_layers:
                getattr(components.controlnet, name).requires_grad_(True)

    def condition(self, components, depth, latent_hw, valid=None, spec=None):
        """(B, 1, H', W') near-high depth -> (B, 3, H, W) control image in [0, 1] at the image
        size (latent size x VAE factor)."""
        if depth is None:
            raise ValueError("this model is a depth ControlNet: pass a depth map")
        factor = components.vae_scale_factor
        size_hw = (latent_hw[0] * factor, latent_hw[1] * factor)
        return depth_to_control_image(depth, size_hw, valid, spec)

    def unet_inputs(self, components, sample, timesteps, embeds, condition, added_cond, **options):
        """Run the ControlNet; its residuals go to the UNet call in ``Denoiser.predict``.

        Options (all optional): ``conditioning_scale`` (1.0), ``guidance_start`` (0.0),
        ``guidance_end`` (1.0), ``step_index`` and ``num_steps`` (the sampler's position; without
        them the ControlNet always acts, as in training). Other options are ignored.
        """
        scale = float(options.get("conditioning_scale", 1.0))
        step, total = options.get("step_index"), options.get("num_steps")
        if step is not None and total:
            start = float(options.get("guidance_start", 0.0))
            end = float(options.get("guidance_end", 1.0))
            scale *= control_keep(int(step), int(total), start, end)
        if scale == 0.0:
            # Zero residuals change nothing (x + 0 == x exactly): skip the ControlNet's work.
            return sample, {}
        controlnet = components.controlnet
        dtype = next(controlnet.parameters()).dtype  # ModelMixin.dtype walks all submodules
        down, mid = controlnet(
            sample.to(dtype),
            timesteps,
            encoder_hidden_states=embeds.hidden.to(dtype),
            controlnet_cond=condition.to(dtype),  # [B, 3, H, W] in [0, 1]
            conditioning_scale=scale,
            added_cond_kwargs=added_cond,
            return_dict=False,
        )
        residuals = {
            "down_block_additional_residuals": [d.to(sample.dtype) for d in down],
            "mid_block_additional_residual": mid.to(sample.dtype),
        }
        return sample, residuals
