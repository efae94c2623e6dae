"""ARMHuBERT as an S3PRL upstream."""
