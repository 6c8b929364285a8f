"""Training objective: targets per prediction type, min-SNR-γ weights, offset noise, EMA, LR."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from depth2img.models.ema import EMA
from depth2img.models.losses import (
    compute_snr,
    min_snr_weights,
    sample_noise,
    sample_timesteps,
    training_target,
    weighted_mse,
)
from depth2img.models.optim import WarmupSchedule, build_optimizer, build_scheduler
from depth2img.models.tiny import sd_scheduler_config


def _scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(**sd_scheduler_config(prediction_type))


def test_snr_matches_alphas_cumprod():
    sched = _scheduler()
    t = torch.tensor([0, 10, 500, 999])
    a = sched.alphas_cumprod[t].double()
    torch.testing.assert_close(compute_snr(sched, t).double(), a / (1 - a), rtol=1e-5, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_equal_formula(prediction_type):
    sched = _scheduler(prediction_type)
    t = torch.tensor([0, 50, 200, 400, 999])
    gamma = 5.0
    weights = min_snr_weights(compute_snr(sched, t), gamma, prediction_type)
    for i, step in enumerate(t.tolist()):
        a = float(sched.alphas_cumprod[step])
        snr = a / (1 - a)
        denom = snr if prediction_type == "epsilon" else snr + 1
        assert weights[i].item() == pytest.approx(min(snr, gamma) / denom, rel=1e-5)
    # Low-noise steps (huge SNR) are down-weighted, high-noise steps keep weight ~1 (eps).
    assert weights[0] < 0.01
    if prediction_type == "epsilon":
        assert weights[-1].item() == pytest.approx(1.0)


def test_min_snr_off_gives_ones():
    snr = torch.tensor([0.1, 10.0])
    assert torch.equal(min_snr_weights(snr, None), torch.ones(2))


def test_v_target_equals_scheduler_velocity():
    sched = _scheduler("v_prediction")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=gen)
    noise = torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([1, 300, 900])
    target = training_target(sched, x0, noise, t)
    torch.testing.assert_close(target, sched.get_velocity(x0, noise, t))
    # and the closed form v = sqrt(a) * eps - sqrt(1 - a) * x0
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(target, a.sqrt() * noise - (1 - a).sqrt() * x0)


def test_epsilon_target_is_noise_and_bad_type_rejected():
    sched = _scheduler("epsilon")
    x0, noise = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    assert torch.equal(training_target(sched, x0, noise, torch.tensor([5])), noise)
    with pytest.raises(ValueError, match="prediction_type"):
        min_snr_weights(torch.ones(1), 5.0, "flow")


def test_noise_offset_is_constant_per_channel():
    latents = torch.zeros(4, 4, 16, 16)
    plain = sample_noise(latents, 0.0, torch.Generator().manual_seed(1))
    shifted = sample_noise(latents, 0.5, torch.Generator().manual_seed(1))
    offset = shifted - plain  # same base draw, then the offset
    per_channel = offset.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel), atol=1e-6)
    assert per_channel.abs().max() > 0


def test_timestep_sampling_uniform_and_cubic():
    gen = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(20_000, 1000, "uniform", gen)
    cubic = sample_timesteps(20_000, 1000, "cubic", gen)
    for t in (uniform, cubic):
        assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 999
    # P(t >= 500): 0.5 uniform; cubic t = (1 - u^3) T >= T/2 iff u <= 0.5^(1/3) = 0.794
    assert abs((uniform >= 500).float().mean() - 0.5) < 0.02
    assert abs((cubic >= 500).float().mean() - 0.5 ** (1 / 3)) < 0.02
    again = sample_timesteps(5, 1000, "cubic", torch.Generator().manual_seed(1))
    assert torch.equal(again, sample_timesteps(5, 1000, "cubic", torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="valid: uniform, cubic"):
        sample_timesteps(4, 1000, "logit-normal")


def test_weighted_mse():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])
    assert weighted_mse(pred, target).item() == pytest.approx((1 + 4) / 2)
    assert weighted_mse(pred, target, torch.tensor([1.0, 0.5])).item() == pytest.approx(1.5)


def test_ema_update_and_swap():
    param = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([("w", param)], decay=0.9, warmup=False)
    with torch.no_grad():
        param.fill_(1.0)
    ema.update([param])
    torch.testing.assert_close(ema.shadow[0], torch.full((3,), 0.1))
    with ema.swapped([param]):
        torch.testing.assert_close(param.data, torch.full((3,), 0.1))
    torch.testing.assert_close(param.data, torch.ones(3))
    state = ema.state_dict()
    other = EMA([("w", torch.nn.Parameter(torch.zeros(3)))], decay=0.5)
    other.load_state_dict(state)
    assert other.num_updates == 1 and other.decay == 0.9
    torch.testing.assert_close(other.shadow[0], ema.shadow[0])


def test_warmup_then_cosine_and_constant():
    cos = WarmupSchedule(warmup_steps=4, schedule="cosine", total_steps=14)
    assert [cos(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert cos(4) == pytest.approx(1.0)
    assert cos(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cos(14) == pytest.approx(0.0, abs=1e-12)
    const = WarmupSchedule(warmup_steps=0, schedule="constant")
    assert const(0) == const(1000) == 1.0
    with pytest.raises(ValueError, match="max_steps"):
        WarmupSchedule(schedule="cosine", total_steps=None)


def test_lambda_lr_state_is_weights_only_safe(tmp_path):
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(params, learning_rate=1e-3)
    sched = build_scheduler(opt, warmup_steps=2, schedule="cosine", total_steps=10)
    opt.step()
    sched.step()
    torch.save({"s": sched.state_dict(), "o": opt.state_dict()}, tmp_path / "x.pt")
    loaded = torch.load(tmp_path / "x.pt", weights_only=True)
    assert loaded["s"]["lr_lambdas"][0]["schedule"] == "cosine"
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([], learning_rate=1e-3)
