"""Evaluation: depth judges, depth-consistency metrics, FD/KID, reports, benchmarks.

Modules (import what you need; nothing heavy is imported here):

- ``alignment``: least-squares scale + shift alignment.
- ``depth_metrics``: AbsRel, delta1, RMSE, Spearman, ControlNet++ RMSE; floor and chance.
- ``bootstrap``: mean / median / bootstrap CI summaries.
- ``judges``: load a depth judge, warn when it made the conditioning depth.
- ``feature_extractors`` + ``image_quality``: FD (``fd_<name>`` / ``fid``) and KID.
- ``runner``: ``evaluate(EvalSettings)`` behind ``depth2img-eval``.
- ``report``: grids, Markdown and HTML reports.
- ``structure_benchmark``: img2img vs concat depth2img vs depth ControlNet on synthetic pairs
  (``depth2img-benchmark``); ``structure_comparison``: their table and plot across domains.
- ``in_training``: ``GenerationMetricsCallback`` for Lightning validation.

Metric definitions: docs/evaluation.md.
"""
