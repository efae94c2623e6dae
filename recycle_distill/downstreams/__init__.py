"""S3PRL downstreams shipped with recycle-distill (importable as ``s3prl.downstream.<name>``
through ``recycle-distill superb`` or a ``patch_hub.py`` shim)."""
