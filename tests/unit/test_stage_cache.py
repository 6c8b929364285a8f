"""The tiny-base build's stage cache: keys change with any input, reuse restores exact weights."""

import torch

from tools.build_tiny_base.stage_cache import StageCache, fingerprint


def _train_linear(seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.add_(1.0)  # "training": weights differ from a fresh build()
    return layer


def _other_recipe() -> None:  # a different function source -> a different key
    return None


def test_fingerprint_changes_with_tensor_bytes_fields_and_code():
    x = torch.arange(6.0).view(2, 3)
    base = fingerprint(x, {"steps": 10}, [_train_linear])
    assert fingerprint(x.clone(), {"steps": 10}, [_train_linear]) == base
    y = x.clone()
    y[1, 2] += 1e-6
    assert fingerprint(y, {"steps": 10}, [_train_linear]) != base
    assert fingerprint(x.double(), {"steps": 10}, [_train_linear]) != base  # dtype counts
    assert fingerprint(x, {"steps": 11}, [_train_linear]) != base
    assert fingerprint(x, {"steps": 10}, [_other_recipe]) != base


def test_run_trains_once_then_reuses_the_exact_weights(tmp_path):
    cache = StageCache(tmp_path / "cache")
    calls = []

    def train():
        calls.append(1)
        return _train_linear(0)

    first, reused_first = cache.run(
        "linear", "k" * 64, build=lambda: torch.nn.Linear(3, 2), train=train
    )
    second, reused_second = cache.run(
        "linear", "k" * 64, build=lambda: torch.nn.Linear(3, 2), train=train
    )
    assert (reused_first, reused_second) == (False, True)
    assert len(calls) == 1
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]  # no temp left

    _, reused_other_key = cache.run(
        "linear", "j" * 64, build=lambda: torch.nn.Linear(3, 2), train=train
    )
    assert not reused_other_key and len(calls) == 2


def test_disabled_cache_always_trains(tmp_path):
    cache = StageCache(None)
    calls = []
    for _ in range(2):
        cache.run(
            "linear",
            "k" * 64,
            build=lambda: torch.nn.Linear(3, 2),
            train=lambda: calls.append(1) or _train_linear(0),
        )
    assert len(calls) == 2
