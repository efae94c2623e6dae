"""The package version (``setup.py`` reads this line without importing the package)."""

VERSION = "0.1.0"
