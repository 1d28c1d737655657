"""Audio files on disk (jobs): decoded in blocks as they are read, never whole. WAV, FLAC, OGG and
MP3 through libsndfile blocks; M4A/MP4/AAC (and a video's audio track) through ffmpeg into a pipe.
The checks and warnings are ``media.audio.decode_audio``'s, on running counts; the windows are
``media.audio.make_windows``' (``WindowCutter``)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from errors import BadMedia, UnsupportedMedia, VerityError
from media import sandbox
from media.audio import (
    FFMPEG_DEMUXERS,
    SOUNDFILE_FORMATS,
    TEMP_PREFIX,
    Tally,
    check_claimed,
    check_long_enough,
    check_stream,
    count_clipped,
    decode_failure_reason,
    ffmpeg_pcm_command,
    ffmpeg_tools,
    ffprobe_command,
    parse_probe,
    quality_warnings,
    soundfile_blocks,
    soundfile_header,
    too_long_while_decoding,
)
from media.sniff import AUDIO_FORMATS, admit_file
from media.tools import DecodeClock, decode_timeout, run_tool, undecodable

log = logging.getLogger(__name__)

_WAV_HEAD_BYTES = 1 << 16  # where a WAV's chunks before "data" are looked for (declared length)
_PIPE_BLOCK_SAMPLES = 1 << 16  # mono samples per block read from ffmpeg (4 s at 16 kHz)


@dataclass(frozen=True)
class AudioFileInfo:
    """What the header said, before any sample was decoded."""

    format: str
    original_rate: int
    channels: int
    claimed_frames: int | None  # at the original rate, when the header declares a length

    @property
    def declared_s(self) -> float | None:
        return None if self.claimed_frames is None else self.claimed_frames / self.original_rate


@dataclass(frozen=True)
class AudioSummary:
    """What ``decode_audio`` would have said of the whole file, once it has been read."""

    duration_s: float  # of the samples handed out, at the target rate
    warnings: list[dict[str, str]]


class AudioFileStream:
    """Mono float32 blocks at ``sample_rate``: what ``decode_audio`` returns for the file, a block
    at a time, with the same errors (raised by ``read_block`` as soon as they show) and warnings
    (in ``summary`` once ``read_block`` has returned None). ``read_block`` blocks: call it from a
    worker thread. ``close`` (or the ``with`` block) stops the decoder, kills and reaps any child
    process and removes the temporary directory; call it whatever happened."""

    def __init__(
        self,
        kind: str,
        info: AudioFileInfo,
        blocks: Iterator[np.ndarray],
        *,
        sample_rate: int,
        min_duration_s: float,
        clock: DecodeClock,
        tally: Tally,
        cleanup: contextlib.ExitStack,
    ) -> None:
        self.kind = kind
        self.info = info
        self.sample_rate = sample_rate
        self.min_duration_s = min_duration_s
        self.clock = clock
        self.summary: AudioSummary | None = None
        self.samples = 0  # handed out so far
        self._blocks = blocks
        self._tally = tally
        self._sumsq = 0.0
        self._cleanup = cleanup
        clock.pause()  # until the first read: the caller's time is not the decoder's

    @property
    def decoded_s(self) -> float:
        return self.samples / self.sample_rate

    def read_block(self) -> np.ndarray | None:
        """The next block (possibly empty), or None at the end (``summary`` is then set)."""
        if self.summary is not None:
            return None
        self.clock.resume()
        try:
            if self.clock.expired():
                raise decode_timeout(self.kind, self.clock.limit_s)
            block = next(self._blocks, None)
        except VerityError:
            raise
        except Exception as exc:
            # libsndfile and its codecs raise on hostile bytes mid-stream; all mean a broken file.
            raise undecodable(self.kind, "corrupt_audio", decode_failure_reason(exc)) from exc
        finally:
            self.clock.pause()
        if block is None:
            self.summary = self._summarize()
            return None
        if not np.isfinite(block).all():
            raise BadMedia(f"the {self.kind} file contains NaN or infinite samples", code="invalid_samples")
        self.samples += len(block)
        self._sumsq += float(np.square(block, dtype=np.float64).sum())
        self.clock.allow(self.decoded_s)
        return block

    def _summarize(self) -> AudioSummary:
        tally, info = self._tally, self.info
        if tally.frames == 0 or self.samples == 0:
            raise BadMedia(f"the {self.kind} file contains no audio samples", code="no_audio")
        check_long_enough(tally.frames / info.original_rate, self.min_duration_s)
        warnings = quality_warnings(
            math.sqrt(self._sumsq / self.samples),
            clipped=tally.clipped,
            total=tally.total,
            frames=tally.frames,
            claimed=info.claimed_frames,
            rate=info.original_rate,
        )
        return AudioSummary(duration_s=self.samples / self.sample_rate, warnings=warnings)

    def close(self) -> None:
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()
        self._cleanup.close()

    def __enter__(self) -> AudioFileStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audio_file(
    path: Path,
    *,
    target_rate: int,
    max_bytes: int | None,
    max_duration_s: float,
    min_duration_s: float,
    timeout_s: float,
    s_per_media_s: float,
) -> AudioFileStream:
    """A stream of the audio file at ``path`` (any of ``AUDIO_FORMATS``, told by its first bytes),
    decoded to float32 mono at ``target_rate`` a block at a time. The errors are ``decode_audio``'s
    (415, 413, 422, never anything else), raised here when the header tells or by ``read_block``
    while decoding. The time limit is ``timeout_s`` or ``s_per_media_s`` per declared (then
    decoded) second, whichever is longer, and counts only the time spent in ``read_block``."""
    path = Path(path).resolve()  # absolute: ffmpeg never takes the name for a protocol
    kind = admit_file(
        path, max_bytes=max_bytes, allowed=AUDIO_FORMATS, noun="audio file", send="WAV, FLAC, OGG, MP3 or M4A"
    )
    clock = DecodeClock(timeout_s, per_media_s=s_per_media_s)
    try:
        if kind in SOUNDFILE_FORMATS:
            return _open_soundfile_file(
                path,
                kind,
                target_rate=target_rate,
                max_duration_s=max_duration_s,
                min_duration_s=min_duration_s,
                clock=clock,
            )
        return _open_ffmpeg_file(
            path,
            kind,
            target_rate=target_rate,
            max_duration_s=max_duration_s,
            min_duration_s=min_duration_s,
            clock=clock,
        )
    except VerityError as exc:
        log.info(
            "audio file rejected: %s",
            exc.message,
            extra={"format": kind, "bytes": path.stat().st_size, "status": exc.status, "code": exc.code},
        )
        raise


def _open_soundfile_file(
    path: Path,
    kind: str,
    *,
    target_rate: int,
    max_duration_s: float,
    min_duration_s: float,
    clock: DecodeClock,
) -> AudioFileStream:
    try:
        sound = sf.SoundFile(str(path))
    except Exception as exc:
        reason = decode_failure_reason(exc).replace(str(path), "input")
        raise undecodable(kind, "corrupt_audio", reason, verb="read as audio") from exc
    cleanup = contextlib.ExitStack()
    cleanup.callback(sound.close)
    try:
        head = b""
        if kind == "wav":
            with path.open("rb") as handle:
                head = handle.read(_WAV_HEAD_BYTES)
        rate, channels, claimed = soundfile_header(sound, kind, head, max_duration_s)
    except BaseException:
        cleanup.close()
        raise
    info = AudioFileInfo(format=kind, original_rate=rate, channels=channels, claimed_frames=claimed)
    if info.declared_s is not None:
        clock.allow(info.declared_s)
    tally = Tally()
    blocks = soundfile_blocks(
        sound, kind, target_rate=target_rate, max_duration_s=max_duration_s, tally=tally
    )
    return AudioFileStream(
        kind,
        info,
        blocks,
        sample_rate=target_rate,
        min_duration_s=min_duration_s,
        clock=clock,
        tally=tally,
        cleanup=cleanup,
    )


def _open_ffmpeg_file(
    path: Path,
    kind: str,
    *,
    target_rate: int,
    max_duration_s: float,
    min_duration_s: float,
    clock: DecodeClock,
) -> AudioFileStream:
    ffmpeg, ffprobe = ffmpeg_tools(kind)
    demuxer = FFMPEG_DEMUXERS[kind]
    probe = run_tool(
        ffprobe_command(ffprobe, demuxer, path),
        kind=kind,
        deadline=clock.deadline,
        timeout_s=clock.limit_s,
        source=path,
        code="corrupt_audio",
        needed_by=f"{kind} audio",
    ).stdout
    rate, channels, claimed_s = parse_probe(probe, kind)
    check_stream(kind, rate, channels)
    claimed = round(claimed_s * rate) if claimed_s is not None else None
    if claimed is not None:
        check_claimed(kind, claimed, rate, channels, max_duration_s)
    info = AudioFileInfo(format=kind, original_rate=rate, channels=channels, claimed_frames=claimed)
    if info.declared_s is not None:
        clock.allow(info.declared_s)
    return pcm_stream(
        ffmpeg_pcm_command(ffmpeg, demuxer, path, target_rate=target_rate, max_duration_s=max_duration_s),
        kind=kind,
        info=info,
        source=path,
        sample_format="f32le",
        target_rate=target_rate,
        max_duration_s=max_duration_s,
        min_duration_s=min_duration_s,
        clock=clock,
    )


def pcm_stream(
    command: list[str],
    *,
    kind: str,
    info: AudioFileInfo,
    source: Path,
    sample_format: Literal["f32le", "s16le"],
    target_rate: int,
    max_duration_s: float | None,
    min_duration_s: float,
    clock: DecodeClock,
) -> AudioFileStream:
    """An ``AudioFileStream`` over ``command``: an ffmpeg writing mono ``sample_format`` PCM at
    ``target_rate`` to its stdout (``source`` is its input, hidden in messages). Its stderr goes
    to a file in a private temporary directory; ``close`` kills and reaps the process and removes
    the directory. More than ``max_duration_s`` of samples is a 413 as soon as it shows."""
    cleanup = contextlib.ExitStack()
    try:
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix=TEMP_PREFIX)))
        log_path = workdir / "ffmpeg.log"
        with log_path.open("wb") as log_file:
            budget = max(clock.limit_s, (max_duration_s or 0.0) * clock.per_media_s)
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=sandbox.child_env(),
                preexec_fn=sandbox.limits(3 * budget + 10),
            )
        # Registered after the directory: runs first, so the process is gone before its log is.
        cleanup.callback(_stop, process)
    except OSError as exc:
        cleanup.close()
        log.error("could not run %s: %s", command[0], exc)
        raise UnsupportedMedia(
            f"{kind} audio needs {Path(command[0]).name}, which could not be run on this server",
            code="decoder_unavailable",
        ) from exc
    except BaseException:
        cleanup.close()
        raise
    tally = Tally()
    blocks = _pcm_blocks(
        process,
        kind=kind,
        source=source,
        log_path=log_path,
        clock=clock,
        sample_format=sample_format,
        rates=(info.original_rate, target_rate),
        max_samples=None if max_duration_s is None else math.ceil(max_duration_s * target_rate),
        max_duration_s=max_duration_s or 0.0,
        tally=tally,
    )
    return AudioFileStream(
        kind,
        info,
        blocks,
        sample_rate=target_rate,
        min_duration_s=min_duration_s,
        clock=clock,
        tally=tally,
        cleanup=cleanup,
    )


def _pcm_blocks(
    process: subprocess.Popen[bytes],
    *,
    kind: str,
    source: Path,
    log_path: Path,
    clock: DecodeClock,
    sample_format: str,
    rates: tuple[int, int],
    max_samples: int | None,
    max_duration_s: float,
    tally: Tally,
) -> Iterator[np.ndarray]:
    """Blocks of ``_PIPE_BLOCK_SAMPLES`` from the process's stdout until it ends; then its exit
    status decides (non-zero: 422 with its last stderr line). Clipping is counted across block
    boundaries, so the counts are those of the whole clip."""
    width = 4 if sample_format == "f32le" else 2
    original_rate, target_rate = rates
    assert process.stdout is not None
    fd = process.stdout.fileno()
    previous = np.zeros(0, dtype=np.float32)
    while True:
        data = _read_pipe(fd, _PIPE_BLOCK_SAMPLES * width, clock, kind)
        usable = len(data) - len(data) % width
        if usable:
            block = _pcm_to_float(data[:usable], sample_format)
            tally.total += len(block)
            if max_samples is not None and tally.total > max_samples:
                raise too_long_while_decoding(kind, max_duration_s)
            tally.frames = round(tally.total * original_rate / target_rate)
            tally.clipped += count_clipped(np.concatenate([previous, block]))
            previous = block[-1:]
            yield block
        if len(data) < _PIPE_BLOCK_SAMPLES * width:
            break
    try:
        code = process.wait(timeout=max(0.0, clock.remaining()))
    except subprocess.TimeoutExpired as exc:
        raise decode_timeout(kind, clock.limit_s) from exc
    if code != 0:
        lines = log_path.read_text("utf-8", "replace").replace(str(source), "input").strip().splitlines()
        reason = lines[-1][:300] if lines else f"{Path(str(process.args[0])).name} exited with {code}"
        raise undecodable(kind, "corrupt_audio", reason)


def _pcm_to_float(data: bytes, sample_format: str) -> np.ndarray:
    if sample_format == "f32le":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    # 16-bit PCM as libsndfile reads it (x / 32768): a WAV of the same samples decodes the same.
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768)


def _read_pipe(fd: int, size: int, clock: DecodeClock, kind: str) -> bytes:
    """``size`` bytes from ``fd``, fewer only at its end; 422 ``decode_timeout`` past the clock."""
    chunks: list[bytes] = []
    got = 0
    poller = select.poll()  # poll(), not select(): descriptors can be numbered past FD_SETSIZE
    poller.register(fd, select.POLLIN)
    while got < size:
        remaining = clock.remaining()
        if remaining <= 0 or clock.cancelled:
            log.warning("ffmpeg timed out after %g s", clock.limit_s, extra={"format": kind})
            raise decode_timeout(kind, clock.limit_s)
        if not poller.poll(math.ceil(remaining * 1000)):
            continue
        data = os.read(fd, size - got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill (a no-op after a clean exit) and reap: no decoder outlives its stream."""
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
