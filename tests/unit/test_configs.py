"""Every config under configs/ composes and resolves; every ``_target_`` imports.

Iterates over the files present, so config groups added by other parts of the project (data/,
eval/, depth_estimator/, hydra/launcher/ …) are covered automatically.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from depth2img.paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"
PRIMARIES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
# Importing the CLIs registers the OmegaConf resolvers their configs use.
for _cli in ("train", "evaluate", "generate", "structure_benchmark"):
    if importlib.util.find_spec(f"depth2img.cli.{_cli}") is not None:
        # A broken CLI is that CLI's own test's business.
        with contextlib.suppress(Exception):
            importlib.import_module(f"depth2img.cli.{_cli}")


def _group_options() -> list[tuple[str, str]]:
    """(group, option) for every yaml below configs/ except primaries and hydra/ itself."""
    found = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        rel = path.relative_to(CONFIG_DIR)
        if len(rel.parts) < 2:
            continue
        found.append(("/".join(rel.parts[:-1]), path.stem))
    return found


def _defaults_groups(primary: str) -> set[str]:
    """Groups named in a primary config's defaults list (``- model: x`` / ``- override ...``)."""
    data = yaml.safe_load((CONFIG_DIR / f"{primary}.yaml").read_text()) or {}
    groups = set()
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            for key in entry:
                groups.add(str(key).replace("override ", "").strip().lstrip("/"))
    return groups


def _check_targets(node, where: str) -> None:
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        if target:
            try:
                get_class(target)
            except Exception:
                get_method(target)  # raises with the target name when it does not import
        for key in node:
            _check_targets(node._get_node(key), f"{where}.{key}")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_targets(item, f"{where}[{i}]")


def _compose(primary: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=primary, overrides=overrides)
    # Resolve every interpolation (catches typos in ${...}); hydra.* is not part of cfg here.
    OmegaConf.to_container(cfg, resolve=True)
    _check_targets(cfg, primary)
    return cfg


@pytest.mark.parametrize("primary", PRIMARIES)
def test_primary_config_composes(primary):
    _compose(primary, [])


def _cases():
    cases = []
    for group, option in _group_options():
        top = group.split("/")[0]
        if top == "hydra":
            cases.append(pytest.param("train", group, option, id=f"{group}/{option}"))
            continue
        users = [p for p in PRIMARIES if top in _defaults_groups(p)]
        if group == "experiment" or not users:
            users = ["train"] if "train" in PRIMARIES else PRIMARIES[:1]
        cases.extend(pytest.param(p, group, option, id=f"{p}:{group}/{option}") for p in users)
    return cases


@pytest.mark.parametrize(("primary", "group", "option"), _cases())
def test_group_option_composes(primary, group, option):
    if group.startswith("hydra/launcher") and importlib.util.find_spec("hydra_plugins") is None:
        pytest.skip("launcher plugin not installed (pip install -e .[submitit])")
    if group.startswith("hydra"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            try:
                compose(primary, overrides=[f"{group}={option}"], return_hydra_config=True)
            except Exception as err:
                if "submitit" in str(err).lower():
                    pytest.skip(f"launcher plugin missing: {err}")
                raise
        return
    top = group.split("/")[0]
    in_defaults = top in _defaults_groups(primary) or group == "experiment"
    override = f"{group}={option}" if in_defaults else f"+{group}={option}"
    _compose(primary, [override])


def test_train_config_contract():
    """The keys the CLI and the SLURM scripts rely on are present with sane defaults."""
    cfg = _compose("train", ["experiment=street_tiny"])
    assert cfg.model._target_.endswith("Depth2ImgModule")
    assert cfg.trainer.default_root_dir == cfg.paths.run_dir
    assert cfg.callbacks.model_checkpoint.dirpath == f"{cfg.paths.run_dir}/checkpoints"
    assert cfg.callbacks.model_checkpoint.save_last is True
    assert cfg.logger.wandb.offline is True and cfg.logger.wandb.resume == "allow"
    assert Path(cfg.paths.run_dir).is_absolute()
    assert cfg.run_name.startswith("street_tiny-")
    named = _compose("train", ["run_name=abc"])
    assert named.paths.run_dir.endswith("/abc")


def test_run_name_uses_slurm_job_id(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    cfg = _compose("train", ["experiment=street_tiny"])
    assert cfg.run_name == "street_tiny-4242"
    assert cfg.paths.run_dir.endswith("/train/street_tiny-4242")
