"""S3PRL upstream folders, one per student family (installed as ``recycle_distill.upstreams``)."""

from recycle_distill.families import FAMILY_NAMES as FAMILIES  # noqa: F401  (the one list)
