"""Checks on a composed training config, run before anything is built or touched.

- :func:`check_argument_types`: every value given to a ``_target_`` class must fit the type
  its ``__init__`` declares (``learning_rate=abc`` used to fail deep inside the optimizer with a
  traceback, after the run dir had been written);
- :func:`check_ranges`: values that must be positive / non-negative;
- :func:`origin_of`: where a value came from (the command line, or which config file), so
  messages say what to change.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, ListConfig

# (config key, minimum, inclusive?) checked when present; None values are allowed (defaults).
_RANGES: tuple[tuple[str, float, bool], ...] = (
    ("model.learning_rate", 0.0, False),
    ("model.lr_warmup_steps", 0, True),
    ("model.ema_update_every", 1, True),
    ("model.val_num_inference_steps", 1, True),
    ("data.global_batch_size", 1, True),
    ("data.num_workers", 0, True),
    ("data.val_samples", 1, True),
    ("data.samples_per_epoch", 1, True),
    ("trainer.accumulate_grad_batches", 1, True),
    ("trainer.log_every_n_steps", 1, True),
)


class ConfigValueError(ValueError):
    """A config value of the wrong type or range (message: one line, names the key)."""


def _import_target(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _allowed(hint) -> tuple[set, bool] | None:
    """(allowed kinds among {"int", "float", "bool", "none"}, strict) or None = not checked."""
    origin = typing.get_origin(hint)
    members = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    kinds = set()
    for member in members:
        if member is type(None):
            kinds.add("none")
        elif member is bool:
            kinds.add("bool")
        elif member is int:
            kinds.add("int")
        elif member is float:
            kinds |= {"float", "int"}
        else:
            return None  # str, containers, Any, classes: not checked here
    return (kinds, True) if kinds - {"none"} else None


def _kind(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return type(value).__name__


_WORDS = {"int": "an integer", "float": "a number", "bool": "true/false", "none": "null"}


def check_argument_types(section: DictConfig | Mapping | None, prefix: str) -> None:
    """Raise :class:`ConfigValueError` for a value that does not fit its ``__init__`` type.

    ``section`` is an instantiable node (with ``_target_``); ``prefix`` its key (e.g. "model").
    Only ``int``/``float``/``bool`` (and their ``| None``) parameters are checked.
    """
    if not section or "_target_" not in section:
        return
    try:
        target = _import_target(str(section["_target_"]))
        hints = typing.get_type_hints(target.__init__)
        params = inspect.signature(target.__init__).parameters
    except Exception:  # unknown target: instantiate() reports it with its own message
        return
    for key in section:
        if key.startswith("_") or key not in params or key not in hints:
            continue
        allowed = _allowed(hints[key])
        if allowed is None:
            continue
        value = section[key]
        if isinstance(value, (DictConfig, ListConfig, Sequence)) and not isinstance(value, str):
            kind = "list"
        else:
            kind = _kind(value)
        if kind not in allowed[0]:
            shown = allowed[0] - ({"int"} if "float" in allowed[0] else set())
            words = " or ".join(_WORDS[k] for k in sorted(shown))
            raise ConfigValueError(f"{prefix}.{key}={value!r} must be {words}")


def _select(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, (DictConfig, Mapping)) or part not in node:
            return None
        node = node[part]
    return node


def check_ranges(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` for values below their minimum (see ``_RANGES``)."""
    for key, minimum, inclusive in _RANGES:
        value = _select(cfg, key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value < minimum or (not inclusive and value == minimum):
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise ConfigValueError(f"{key}={value} must be {bound}")
    max_steps = _select(cfg, "trainer.max_steps")
    if isinstance(max_steps, int) and max_steps != -1 and max_steps < 1:
        raise ConfigValueError(f"trainer.max_steps={max_steps} must be >= 1 (or -1 = no limit)")


def origin_of(key: str, overrides: Sequence[str], choices: Mapping[str, str | None]) -> str:
    """Where ``key`` (e.g. "data.train_shards") got its value, in words.

    ``overrides``: the command-line overrides (``HydraConfig.get().overrides.task``);
    ``choices``: the chosen config group options (``HydraConfig.get().runtime.choices``).
    """
    for item in overrides:
        name = item.split("=", 1)[0].lstrip("+~")
        if name == key:
            return "set on the command line"
    group = key.split(".", 1)[0]
    experiment = choices.get("experiment")
    choice = choices.get(group)
    where = f"configs/{group}/{choice}.yaml (the default {group}={choice})" if choice else ""
    if experiment:
        where = (
            f"{where or 'the config'}, possibly overridden by configs/experiment/{experiment}.yaml"
        )
    return f"from {where}" if where else "from configs/train.yaml"
