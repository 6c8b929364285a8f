"""The model axes compose independently: base x conditioning x recipe x optimizer.

``experiment=sd2_depth_512 recipe=lora`` must train LoRA with the SD2 base's LoRA learning rate
while keeping SD2's validation settings; ``trainer=cpu`` must drop the GPU precision.
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import depth2img.cli.train  # noqa: F401  (registers the d2i resolvers)
from depth2img.paths import REPO_ROOT


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def test_lora_on_sd2_gets_lora_lr_and_keeps_sd2_validation():
    full = _compose(["experiment=sd2_depth_512"])
    lora = _compose(["experiment=sd2_depth_512", "recipe=lora"])
    assert full["model"]["train_mode"] == "full"
    assert full["model"]["learning_rate"] == pytest.approx(2e-5)
    assert lora["model"]["train_mode"] == "lora"
    assert lora["model"]["learning_rate"] == pytest.approx(1e-4)
    assert lora["model"]["lr_warmup_steps"] == 100
    for key in ("val_num_inference_steps", "val_guidance_scale", "ema_decay", "model_source"):
        assert lora["model"][key] == full["model"][key], key
    assert lora["model"]["val_guidance_scale"] == 7.5


def test_convert_recipe_widens_a_four_channel_base():
    cfg = _compose(["base=sd2_base", "recipe=convert"])
    assert cfg["model"]["convert_to_depth"] is True
    assert cfg["model"]["train_mode"] == "full"
    assert cfg["model"]["learning_rate"] == pytest.approx(5e-5)


@pytest.mark.parametrize("experiment", ["sd2_depth_512", "aerial_finetune", "street_tiny"])
def test_trainer_cpu_smoke_path_for_every_experiment(experiment):
    cfg = _compose([f"experiment={experiment}", "trainer=cpu"])
    assert cfg["trainer"]["accelerator"] == "cpu"
    assert cfg["trainer"]["precision"] == "32-true"


def test_axes_are_independent_groups():
    cfg = _compose(["base=tiny", "conditioning=none", "recipe=lora", "optim=adamw8bit"])
    model = cfg["model"]
    assert (model["model_source"], model["conditioning"], model["train_mode"]) == (
        "tiny",
        "none",
        "lora",
    )
    assert model["use_8bit_adam"] is True
    assert model["learning_rate"] == pytest.approx(1e-3)


def test_experiment_lr_table_overrides_reach_the_model():
    cfg = _compose(["experiment=aerial_finetune"])
    assert cfg["model"]["learning_rate"] == pytest.approx(5e-4)
    assert cfg["model"]["lr_warmup_steps"] == 50


def _readme_train_commands() -> list[list[str]]:
    """Every `depth2img-train ...` command in README.md code blocks (continuations joined)."""
    import re
    import shlex

    text = (REPO_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("depth2img-train"):
                commands.append([a for a in shlex.split(line)[1:] if "=" in a])
    return commands


def test_readme_train_commands_compose():
    commands = _readme_train_commands()
    assert len(commands) >= 4
    for overrides in commands:
        cfg = _compose(overrides)
        assert cfg["model"]["_target_"].endswith("Depth2ImgModule"), overrides
        if "recipe=convert" in overrides:
            assert cfg["model"]["convert_to_depth"] is True
            assert cfg["data"]["train_shards"] != "???"
        if "recipe=lora" in overrides:
            assert cfg["model"]["train_mode"] == "lora"


def test_fsdp_trainer_builds_its_strategy():
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import FSDPStrategy

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=sd2_depth_512", "trainer=fsdp"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert cfg.trainer.precision == "bf16-mixed"
