"""SUPERB with our students: the S3PRL launcher and the SUPERB score.

- :mod:`recycle_distill.s3prl.superb.launcher`: registers every hub entry of every family in
  ``s3prl.hub``, applies the compat layer when needed, picks our tweaked task config and hands
  over to S3PRL's own ``run_downstream`` (``recycle-distill superb`` /
  ``python -m recycle_distill superb``).
- :mod:`recycle_distill.s3prl.superb.score`: the SUPERB Overall score from per-task results (YAML,
  CSV or S3PRL experiment logs), beside the papers' rows (``recycle-distill superb-score``).

Importing this package imports neither s3prl nor torchaudio; ``register_upstreams()`` is what
makes ``s3prl.nn.S3PRLUpstream("armhubert", path_or_url=CKPT)`` work in your own code.
"""

from __future__ import annotations

from recycle_distill.s3prl.superb.launcher import register_upstreams

__all__ = ["launcher", "register_upstreams", "score"]
