"""Random-weight replicas of public diffusion model folders (real layout, reduced or real size).

    python -m tools.replicas --kind sdxl --dtype fp16 --out /tmp/sdxl-replica --controlnet small

See ``builders`` for the API, ``real_configs`` for the real sizes, ``reduced`` for the shrinking.
"""

from tools.replicas.builders import (
    CONTROLNET_SIZES,
    DTYPES,
    KINDS,
    build_controlnet,
    build_modules,
    build_replica,
    model_configs,
)

__all__ = [
    "CONTROLNET_SIZES",
    "DTYPES",
    "KINDS",
    "build_controlnet",
    "build_modules",
    "build_replica",
    "model_configs",
]
