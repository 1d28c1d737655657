"""What a decoder process (ffprobe, ffmpeg, the OpenCV decoding child) may see and use.

They parse untrusted bytes with large C libraries, so they get only what decoding needs:

* a minimal environment (``child_env``): the search path, the locale and the library path; never
  the service's secrets (JWT secret, key pepper, AWS credentials), which a decoder exploited by a
  hostile file could otherwise read from its own environment;
* resource limits (``limits``, applied in the child between fork and exec): CPU seconds a little
  over the decode's own time limit, an address-space cap (``VERITY_DECODER_MEMORY_MB``), a few
  dozen open files, bounded file writes and no core dumps. A decoder that spins, balloons or
  sprays files is stopped by the kernel, and its request fails with a 422 like any broken file.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Callable

MB = 1024 * 1024
PASSED_ON = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LD_LIBRARY_PATH", "TMPDIR", "TZ")
OPEN_FILES = 64
FILE_WRITE_MB = 1024  # the largest thing a decoder writes is a WAV of a long audio track
DEFAULT_MEMORY_MB = 4096

_memory_mb = DEFAULT_MEMORY_MB


def configure(memory_mb: int) -> None:
    """The address-space cap of decoder processes from now on (``VERITY_DECODER_MEMORY_MB``)."""
    global _memory_mb
    _memory_mb = memory_mb


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    env["HOME"] = "/nonexistent"  # nothing to read or write there
    env.update(extra or {})
    return env


def limits(cpu_s: float) -> Callable[[], None]:
    """A ``preexec_fn`` that sets the limits in the child before it runs the decoder (only
    ``setrlimit`` calls: safe between fork and exec)."""
    cpu = max(1, math.ceil(cpu_s))
    memory = _memory_mb * MB

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_WRITE_MB * MB, FILE_WRITE_MB * MB))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply
