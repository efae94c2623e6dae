"""FitHuBERT as an S3PRL upstream."""
