"""MaskHuBERT as an S3PRL upstream."""
