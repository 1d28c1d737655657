"""The one error a batch run stops on before it starts: the command cannot run as given."""

from __future__ import annotations

# Exit status of a run refused as given (argparse uses the same for its own usage errors), apart
# from 1 (the run started and failed: a model missing from the store, an outage) and 0 (the run
# completed, whatever became of its items).
USAGE_EXIT = 2


class UsageError(Exception):
    """A missing input, an unwritable output, a bad ``--shard`` or manifest line: one line that
    says what to change, and exit status 2 (``USAGE_EXIT``)."""
