"""The tiny-base builder's command line refuses inconsistent inputs with one line and exit 2,
before rendering or training anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.build_tiny_base.build import main
from tools.build_tiny_base.extra_models import KEPT_FOLDERS

SHIPPED = str(Path(__file__).resolve().parents[2] / "data" / "models")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps-scale", "0"], "--steps-scale must be > 0"),
        (["--keep-extra", SHIPPED], "pass that build's --parent too"),
        (["--sdxl-controlnet-init", SHIPPED], "pass --keep-extra"),
        (["--sd-controlnet-init", SHIPPED], "pass that build's --parent"),
        (["--sd-controlnet-init", str(Path(SHIPPED).parent)], "lacks tiny-sd-depth-controlnet/"),
        (["--depth-init", str(Path(SHIPPED).parent)], "lacks unet/"),
    ],
)
def test_inconsistent_inputs_exit_2_with_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing written


def test_keep_extra_needs_every_kept_folder(tmp_path, capsys):
    partial = tmp_path / "models"
    (partial / KEPT_FOLDERS[0]).mkdir(parents=True)
    argv = ["--out", str(tmp_path / "o"), "--parent", f"{SHIPPED}/tiny-sd-base"]
    assert main([*argv, "--keep-extra", str(partial)]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in KEPT_FOLDERS[1:]) and KEPT_FOLDERS[0] not in err


def test_set_overrides_one_field_with_its_type():
    from tools.build_tiny_base import configs

    cfg = configs.BuildConfig.continued()
    assert configs.apply_override(cfg, "depth_views=5") is None and cfg.depth_views == 5
    assert configs.apply_override(cfg, "depth_lr=2e-4") is None and cfg.depth_lr == 2e-4
    assert configs.apply_override(cfg, "following_controlnet_scales=[1, 2]") is None
    assert cfg.following_controlnet_scales == (1, 2)
    assert "not a valid int" in configs.apply_override(cfg, "depth_views=many")
    assert "FIELD one of" in configs.apply_override(cfg, "no_such_field=1")
    assert cfg.depth_views == 5  # a refused override changes nothing


def test_bad_set_exits_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "o"), "--set", "depth_views=x"]) == 2
    assert "--set depth_views=x" in capsys.readouterr().err
