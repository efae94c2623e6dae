"""The student family names, in their canonical order: the one list the package, the S3PRL
upstream folders, ``patch_hub.py`` and ``setup.py`` read (no imports: every one of them can)."""

FAMILY_NAMES = ("armhubert", "maskhubert", "starhubert", "fithubert")
