"""S3PRL upstream folders, one per student family (installed as ``recycle_distill.upstreams``)."""

FAMILIES = ("armhubert", "maskhubert", "starhubert", "fithubert")
