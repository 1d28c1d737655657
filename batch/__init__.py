"""``python -m batch``: the detectors over a folder, a JSONL manifest or an S3 prefix of media,
in this process, sharded across tasks and resumable. No HTTP server is involved.

One module per concern: ``cli`` (arguments, exit statuses), ``items`` (what to run: listing and
manifest parsing), ``shards`` (which items are this task's and where its results go),
``sources`` (an item's bytes as a local file: a path, or an S3 object downloaded), ``results``
(the JSONL file: resume and crash-safe appends), ``runner`` (items through the pipelines a few at
a time), ``summary`` (counts and throughput), ``progress`` (a bar on a terminal, JSON log lines
elsewhere), ``usage`` (the refusal of a command that cannot run: exit status 2).
"""
