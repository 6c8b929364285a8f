"""Procedural 3-D scenes with exact per-pixel depth, rendered on the CPU with numpy.

Three domains stand in for user domains; each renders one geometry under several appearance
conditions (the first is the neutral default) with bit-identical depth:

==========  ========================================  ==========  =====  ======================
domain      content                                   depth_kind  units  depth definition
==========  ========================================  ==========  =====  ======================
street      road, buildings, props, trees, lamps, sky "depth"     m      z-depth (optical axis);
                                                                         sky = far = 200 m
aerial      nadir orthographic town: roofs, roads,    "height"    m      height above ground
            cars, trees, river                                           (nDSM); ground = 0
endoscopy   bent bumpy folded tube, polyps, tip light "depth"     mm     z-depth; open lumen =
                                                                         far = 150 mm
==========  ========================================  ==========  =====  ======================

Geometry is a pure function of ``(domain, seed, scene_index)``; the condition only changes
appearance. :func:`render_geometry` renders an explicit geometry spec (see ``street``,
``aerial`` and ``endoscopy`` modules), which the closed-form depth tests use.

>>> s = render_sample("street", 3, "night", size=64)
>>> s.image.shape, s.depth.dtype, s.depth_kind, s.depth_units
((64, 64, 3), dtype('float32'), 'depth', 'm')
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
