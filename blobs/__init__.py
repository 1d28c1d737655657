"""Where uploaded media is kept: a local directory (the embedded default) or S3 (``VERITY_BLOBS``)."""
