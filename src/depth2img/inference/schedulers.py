"""Inference schedulers by name, all built from the model's own (training) noise schedule.

Every diffusers scheduler can be built from the same config (betas, number of training steps,
``prediction_type``, ``steps_offset``), so the schedule a model was trained with is kept and only
the solver changes. Schedulers are stateful (step index, multistep history): build a fresh one per
generation call with ``make_scheduler``.
"""

from __future__ import annotations

from collections.abc import Mapping

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# name -> (class, overrides applied on top of the base config)
_SCHEDULERS: dict[str, tuple[type, dict]] = {
    "ddim": (DDIMScheduler, {}),
    # skip_prk_steps: the PLMS variant every SD pipeline uses (no Runge-Kutta warm-up steps).
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
}

SCHEDULER_NAMES = tuple(_SCHEDULERS)

# Keys that describe the training schedule; everything else in a base config belongs to the
# scheduler class it was saved from and is dropped, so e.g. a DDIM-only option never leaks into
# DPM-Solver.
_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "steps_offset",
    "timestep_spacing",
    "rescale_betas_zero_snr",
    "clip_sample",
    "set_alpha_to_one",
)


def make_scheduler(name: str, base_config: Mapping) -> SchedulerMixin:
    """Build the inference scheduler ``name`` on the noise schedule of ``base_config``.

    Args:
        name: one of ``SCHEDULER_NAMES`` (``ddim``, ``pndm``, ``dpm++`` = DPM-Solver++(2M),
            ``unipc``, ``euler``, ``euler_a``, ``ddpm``).
        base_config: a scheduler config (e.g. ``components.scheduler.config``) holding the
            training schedule (betas, ``num_train_timesteps``, ``prediction_type`` ...).

    Raises:
        ValueError: unknown name (the message lists the choices).
    """
    if name not in _SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULER_NAMES)}")
    cls, overrides = _SCHEDULERS[name]
    config = {key: base_config[key] for key in _SCHEDULE_KEYS if key in base_config}
    config.update(overrides)
    return cls.from_config(config)
