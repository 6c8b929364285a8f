"""Procedural 3-D scenes with exact depth, rendered on the CPU with numpy.

Three domains stand in for user domains: ``street`` (pinhole z-depth in metres), ``aerial``
(height above ground in metres, nadir orthographic view) and ``endoscopy`` (z-depth in mm inside
a bumpy tube). Every scene renders under several appearance conditions with bit-identical depth.

>>> s = render_sample("street", 3, "night", size=64)
>>> s.image.shape, s.depth.dtype, s.depth_kind
((64, 64, 3), dtype('float32'), 'depth')
"""

from .api import (
    DOMAINS,
    SyntheticSample,
    iter_samples,
    make_geometry,
    render_geometry,
    render_sample,
    scene_id,
)
from .conditions import CONDITIONS

__all__ = [
    "CONDITIONS",
    "DOMAINS",
    "SyntheticSample",
    "iter_samples",
    "make_geometry",
    "render_geometry",
    "render_sample",
    "scene_id",
]
