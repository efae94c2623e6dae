"""STaRHuBERT as an S3PRL upstream."""
