"""SUPERB with our students: the S3PRL launcher and the SUPERB score.

- :mod:`recycle_distill.superb.launcher`: registers every hub entry of every family in
  ``s3prl.hub``, applies the compat layer when needed, picks our tweaked task config and hands
  over to S3PRL's own ``run_downstream`` (``recycle-distill superb`` /
  ``python -m recycle_distill.superb``).
- :mod:`recycle_distill.superb.score`: the SUPERB Overall score from per-task results (YAML,
  CSV or S3PRL experiment logs), beside the papers' rows (``recycle-distill superb-score``).

Importing this package imports neither torch's heavy parts nor s3prl.
"""

from __future__ import annotations

__all__ = ["launcher", "score"]
