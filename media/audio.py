"""Decode untrusted audio into float32 mono at the model's rate, or fail with a 4xx error.

Issue 4. WAV, FLAC, OGG (Vorbis, Opus) and MP3 go through libsndfile (``soundfile``) in memory;
M4A/MP4/AAC go through the ffmpeg binary from the system packages (``make system-deps``), run
with a time limit, no network protocols and the input in a private temporary directory that is
always removed. librosa is deliberately not used here: its numba JIT costs seconds on the first
request of every worker. Resampling is soxr (high quality), the same resampler on both paths.

Every check that can be made from the header (sample rate, channels, declared duration, samples
to decode) is made before any sample is decoded, and decoding never reads past the caps, so a
header that lies cannot make the worker decode (or hold) more than ``max_duration_s`` of audio.

Files on disk (jobs: uploads of hundreds of MB, hours long) go through
``media.audio_files.open_audio_file``: never read whole, decoded a block at a time (libsndfile
from the path, or ffmpeg from the path into a pipe) while the caller scores what came before;
``WindowCutter`` cuts the blocks into exactly ``make_windows``' windows. Memory is a few blocks
whatever the length; the time limit grows with the declared duration and counts only decoding,
not the scoring the decoder waits for (``DecodeClock``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from errors import BadMedia, TooLarge, UnsupportedMedia, VerityError
from media.sniff import AUDIO_FORMATS, admit
from media.tools import input_format, run_tool, undecodable
from media.windows import window_starts

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32  # 7.1.4 and ambisonics fit; more is a decoding-cost attack, not a recording
# Decoding cost is samples (frames x channels), not seconds: a 1 MB FLAC of silence can hold
# five minutes of 8 channels at 384 kHz (~0.9 G samples, 10+ s of CPU). Per second of the
# duration cap, decode at most what 8 channels at 48 kHz (or stereo at 192 kHz) need.
SAMPLE_BUDGET_PER_S = 8 * 48_000
RESAMPLE_QUALITY = "HQ"  # soxr's 20-bit quality; ffmpeg's soxr precision 20 is the same setting
SILENCE_DBFS = -60.0  # RMS below this is reported as silence
CLIP_LEVEL = 0.9999  # |x| at or above this is full scale (16-bit: 32765/32768 and up)
CLIPPED_FRACTION = 0.001  # share of samples on flat full-scale tops that earns a warning
TEMP_PREFIX = "verity-audio-"

SOUNDFILE_FORMATS = frozenset({"wav", "flac", "ogg", "mp3"})
FFMPEG_DEMUXERS = {"m4a": "mov", "mp4": "mov", "mov": "mov", "aac": "aac"}
_READ_BLOCK_SAMPLES = 1 << 20  # samples (all channels) per libsndfile read: bounds peak memory
_UNKNOWN_FRAMES = 1 << 62  # libsndfile's SF_COUNT_MAX and friends mean "length unknown"


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, at ``sample_rate``
    sample_rate: int
    original_rate: int
    channels: int  # of the file, before the mix-down
    duration_s: float  # of ``samples``
    format: str
    warnings: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Raw:
    """What either decoder path hands back: mono at the target rate plus what it saw on the way."""

    samples: np.ndarray
    original_rate: int
    channels: int
    frames: int  # decoded, at the original rate
    claimed_frames: int | None  # what the header declared, when it declared anything
    clipped: int = 0  # samples on flat full-scale tops (all channels)
    total: int = 0  # samples looked at for clipping (all channels)


def decode_audio(
    data: bytes,
    *,
    target_rate: int,
    max_bytes: int,
    max_duration_s: float,
    min_duration_s: float,
    ffmpeg_timeout_s: float,
) -> DecodedAudio:
    """Decode ``data`` (any of ``AUDIO_FORMATS``, told by magic bytes) to float32 mono at
    ``target_rate``. Raises ``UnsupportedMedia`` (415) for other types (or M4A without ffmpeg),
    ``TooLarge`` (413) over ``max_bytes``, ``max_duration_s`` or the sample budget, ``BadMedia``
    (422) for empty, corrupt, too short, undecodable or timed-out audio; never anything else.
    Silence, clipping and truncation are warnings on a valid result, not errors."""
    kind = admit(
        data, max_bytes=max_bytes, allowed=AUDIO_FORMATS, noun="audio file", send="WAV, FLAC, OGG, MP3 or M4A"
    )
    started = time.perf_counter()
    try:
        if kind in SOUNDFILE_FORMATS:
            raw = _decode_soundfile(data, kind, target_rate=target_rate, max_duration_s=max_duration_s)
        else:
            raw = _decode_ffmpeg(
                data,
                kind,
                target_rate=target_rate,
                max_duration_s=max_duration_s,
                timeout_s=ffmpeg_timeout_s,
            )
        decoded = _finish(raw, kind, target_rate=target_rate, min_duration_s=min_duration_s)
    except VerityError as exc:
        log.info(
            "audio rejected: %s",
            exc.message,
            extra={"format": kind, "bytes": len(data), "status": exc.status, "code": exc.code},
        )
        raise
    log.debug(
        "audio decoded",
        extra={
            "format": kind,
            "bytes": len(data),
            "duration_s": round(decoded.duration_s, 3),
            "original_rate": decoded.original_rate,
            "channels": decoded.channels,
            "decode_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return decoded


def _finish(raw: _Raw, kind: str, *, target_rate: int, min_duration_s: float) -> DecodedAudio:
    if raw.frames == 0 or raw.samples.size == 0:
        raise BadMedia(f"the {kind} file contains no audio samples", code="no_audio")
    if not np.isfinite(raw.samples).all():
        # Float WAVs can carry NaN/inf; the model would turn them into NaN scores.
        raise BadMedia(f"the {kind} file contains NaN or infinite samples", code="invalid_samples")
    check_long_enough(raw.frames / raw.original_rate, min_duration_s)
    rms = float(np.sqrt(np.mean(np.square(raw.samples, dtype=np.float64))))
    warnings = quality_warnings(
        rms,
        clipped=raw.clipped,
        total=raw.total,
        frames=raw.frames,
        claimed=raw.claimed_frames,
        rate=raw.original_rate,
    )
    samples = np.ascontiguousarray(raw.samples, dtype=np.float32)
    return DecodedAudio(
        samples=samples,
        sample_rate=target_rate,
        original_rate=raw.original_rate,
        channels=raw.channels,
        duration_s=len(samples) / target_rate,
        format=kind,
        warnings=warnings,
    )


def check_long_enough(decoded_s: float, min_duration_s: float) -> None:
    if decoded_s < min_duration_s:
        raise BadMedia(
            f"the audio is {decoded_s:.3f} s long; at least {min_duration_s:g} s is needed",
            code="too_short",
            details={"duration_s": round(decoded_s, 3), "min_duration_s": min_duration_s},
        )


def quality_warnings(
    rms: float, *, clipped: int, total: int, frames: int, claimed: int | None, rate: int
) -> list[dict[str, str]]:
    """Silence, clipping and truncation: warnings on a valid result (``rms`` of the mono samples,
    ``frames`` decoded at the original ``rate``, ``claimed`` by the header)."""
    warnings: list[dict[str, str]] = []
    rms_dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    if rms_dbfs < SILENCE_DBFS:
        warnings.append(
            {
                "code": "silence",
                "message": f"the audio is silent (RMS {rms_dbfs:.1f} dBFS, below {SILENCE_DBFS:g}); "
                "the verdict says little about it",
            }
        )
    if total and clipped / total >= CLIPPED_FRACTION:
        warnings.append(
            {
                "code": "clipped",
                "message": f"{100 * clipped / total:.2f}% of the samples are clipped at full "
                "scale; distortion can affect the verdict",
            }
        )
    if claimed and frames < 0.98 * claimed - 0.1 * rate:
        warnings.append(
            {
                "code": "truncated",
                "message": f"the file declares {claimed / rate:.2f} s but only "
                f"{frames / rate:.2f} s could be decoded; it looks truncated",
            }
        )
    return warnings


# --- header checks shared by both paths ----------------------------------------------------------


def check_stream(kind: str, rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadMedia(
            f"the {kind} file declares a sample rate of {rate} Hz; "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz is accepted",
            code="bad_sample_rate",
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadMedia(
            f"the {kind} file declares {channels} channels; 1-{MAX_CHANNELS} are accepted",
            code="bad_channels",
        )


def _sample_budget(max_duration_s: float) -> int:
    return math.ceil(max_duration_s * SAMPLE_BUDGET_PER_S)


def check_claimed(kind: str, frames: int, rate: int, channels: int, max_duration_s: float) -> None:
    """413 from the header alone: more seconds than the cap, or more samples than the budget."""
    claimed_s = frames / rate
    if claimed_s > max_duration_s:
        raise TooLarge(
            f"the {kind} file declares {claimed_s:.1f} s of audio; the limit is {max_duration_s:g} s",
            code="audio_too_long",
            details={"duration_s": round(claimed_s, 3), "max_duration_s": max_duration_s},
        )
    if frames * channels > _sample_budget(max_duration_s):
        raise _too_many_samples(kind, channels, rate, max_duration_s)


def _too_many_samples(kind: str, channels: int, rate: int, max_duration_s: float) -> TooLarge:
    return TooLarge(
        f"the {kind} file holds more samples ({channels} channels at {rate} Hz) than "
        f"{max_duration_s:g} s of 8-channel 48 kHz audio; send fewer channels or a lower sample rate",
        code="too_many_samples",
    )


def too_long_while_decoding(kind: str, max_duration_s: float) -> TooLarge:
    return TooLarge(
        f"the {kind} audio is longer than the limit of {max_duration_s:g} s",
        code="audio_too_long",
        details={"max_duration_s": max_duration_s},
    )


def _wav_declared_frames(data: bytes) -> int | None:
    """Frames the WAV's ``data`` chunk declares, or None when it declares nothing usable.

    libsndfile clamps a data chunk that runs past the end of the file to the bytes present, so a
    header claiming ten hours over one second of samples reads as one second. The header's own
    claim is what a client sent, though, and over the cap it is refused before decoding. 0 and
    0xFFFFFFFF are the placeholders streaming writers leave when they cannot seek back: unknown.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, block_align = 12, 0
    for _ in range(64):  # a handful of chunks precede "data" in real files
        if pos + 8 > len(data):
            return None
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"fmt " and size >= 16 and pos + 24 <= len(data):
            (block_align,) = struct.unpack_from("<H", data, pos + 20)
        elif chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) or block_align == 0:
                return None
            # For compressed WAV (ADPCM) this undercounts, which only makes the check laxer.
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


# --- libsndfile path -----------------------------------------------------------------------------


def count_clipped(block: np.ndarray) -> int:
    """Samples on flat full-scale tops: at full scale and equal to the sample before.

    A loud but clean waveform passes its peaks with changing values; a clipped one sits on the
    same value. Lossless input only, in effect: lossy decoders and resampling smear flat tops.
    """
    flat = (np.abs(block[1:]) >= CLIP_LEVEL) & (block[1:] == block[:-1])
    return int(np.count_nonzero(flat))


@dataclass
class Tally:
    """What a decoder saw on the way: the inputs of the length checks and warnings."""

    frames: int = 0  # decoded, at the original rate
    clipped: int = 0  # samples on flat full-scale tops
    total: int = 0  # samples looked at for clipping


def soundfile_header(
    sound: sf.SoundFile, kind: str, head: bytes, max_duration_s: float
) -> tuple[int, int, int | None]:
    """(rate, channels, claimed frames or None) of an open file, refused (413/422) from the header
    alone when it is out of bounds. ``head`` is the file's start (a WAV's chunks)."""
    rate, channels, frames = int(sound.samplerate), int(sound.channels), int(sound.frames)
    check_stream(kind, rate, channels)
    claimed = frames if 0 < frames < _UNKNOWN_FRAMES else None
    if kind == "wav":
        declared = _wav_declared_frames(head)
        if declared is not None and declared > (claimed or 0):
            claimed = declared
    if claimed is not None:
        check_claimed(kind, claimed, rate, channels, max_duration_s)
    return rate, channels, claimed


def soundfile_blocks(
    sound: sf.SoundFile, kind: str, *, target_rate: int, max_duration_s: float, tally: Tally
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``target_rate``, read a block at a time and resampled by streaming
    soxr, so the file at its original rate never sits in memory whole. Stops one frame past the
    caps (413), whatever the header said."""
    rate, channels = int(sound.samplerate), int(sound.channels)
    max_frames = math.ceil(max_duration_s * rate)
    limit = min(max_frames, _sample_budget(max_duration_s) // channels)
    block_frames = max(1024, _READ_BLOCK_SAMPLES // channels)
    mixdown = np.full(channels, 1 / channels, dtype=np.float32)  # matmul: 2-3x faster than mean
    resampler = (
        None
        if rate == target_rate
        else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    )
    while tally.frames <= limit:
        # Never ask for more than one frame past the caps, whatever the header said.
        block = sound.read(min(block_frames, limit + 1 - tally.frames), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        tally.frames += len(block)
        tally.total += block.size
        tally.clipped += count_clipped(block)
        if not np.isfinite(block).all():
            raise BadMedia(f"the {kind} file contains NaN or infinite samples", code="invalid_samples")
        mono = block @ mixdown if channels > 1 else block[:, 0]
        yield mono if resampler is None else resampler.resample_chunk(mono)
    if tally.frames > max_frames:
        raise too_long_while_decoding(kind, max_duration_s)
    if tally.frames > limit:
        raise _too_many_samples(kind, channels, rate, max_duration_s)
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def _decode_soundfile(data: bytes, kind: str, *, target_rate: int, max_duration_s: float) -> _Raw:
    try:
        sound = sf.SoundFile(io.BytesIO(data))
    except Exception as exc:
        raise undecodable(kind, "corrupt_audio", decode_failure_reason(exc), verb="read as audio") from exc
    with sound:
        rate, channels, claimed = soundfile_header(sound, kind, data, max_duration_s)
        tally = Tally()
        try:
            blocks = list(
                soundfile_blocks(
                    sound, kind, target_rate=target_rate, max_duration_s=max_duration_s, tally=tally
                )
            )
        except VerityError:
            raise
        except Exception as exc:
            # libsndfile and its codecs raise on hostile bytes mid-stream; all mean a broken file.
            raise undecodable(kind, "corrupt_audio", decode_failure_reason(exc)) from exc
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return _Raw(
        samples=samples,
        original_rate=rate,
        channels=channels,
        frames=tally.frames,
        claimed_frames=claimed,
        clipped=tally.clipped,
        total=tally.total,
    )


def decode_failure_reason(exc: Exception) -> str:
    # LibsndfileError's text names the in-memory buffer object; keep only the reason.
    message = str(exc)
    return message.split(": ", 1)[1] if message.startswith("Error opening <") else message


# --- ffmpeg path ---------------------------------------------------------------------------------


def _decode_ffmpeg(
    data: bytes, kind: str, *, target_rate: int, max_duration_s: float, timeout_s: float
) -> _Raw:
    """M4A/MP4/ADTS through ffprobe (header checks) then ffmpeg (decode), both under one deadline.

    ffmpeg reads a private temporary file rather than stdin: MP4 often keeps its index (moov) at
    the end, which a pipe cannot seek to. The demuxer is named (``-f mov``/``-f aac``), never
    guessed from the content, and ``-protocol_whitelist`` stops a crafted file from making ffmpeg
    open URLs (HLS/concat-style references); ``-t`` caps the decoded duration.
    """
    ffmpeg, ffprobe = ffmpeg_tools(kind)
    demuxer = FFMPEG_DEMUXERS[kind]
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as workdir:
        source = Path(workdir) / f"input.{kind}"
        source.write_bytes(data)
        probe = run_tool(
            ffprobe_command(ffprobe, demuxer, source),
            kind=kind,
            deadline=deadline,
            timeout_s=timeout_s,
            source=source,
            code="corrupt_audio",
            needed_by=f"{kind} audio",
        ).stdout
        rate, channels, claimed_s = parse_probe(probe, kind)
        check_stream(kind, rate, channels)
        if claimed_s is not None:
            check_claimed(kind, round(claimed_s * rate), rate, channels, max_duration_s)
        pcm = run_tool(
            ffmpeg_pcm_command(
                ffmpeg, demuxer, source, target_rate=target_rate, max_duration_s=max_duration_s
            ),
            kind=kind,
            deadline=deadline,
            timeout_s=timeout_s,
            source=source,
            code="corrupt_audio",
            needed_by=f"{kind} audio",
        ).stdout
    samples = np.frombuffer(pcm, dtype="<f4").astype(np.float32)
    frames = round(len(samples) * rate / target_rate)
    if len(samples) > math.ceil(max_duration_s * target_rate):
        raise too_long_while_decoding(kind, max_duration_s)
    return _Raw(
        samples=samples,
        original_rate=rate,
        channels=channels,
        frames=frames,
        claimed_frames=round(claimed_s * rate) if claimed_s is not None else None,
        clipped=count_clipped(samples),
        total=len(samples),
    )


def ffmpeg_tools(kind: str) -> tuple[str, str]:
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        log.error("ffmpeg/ffprobe not found on PATH: %s audio cannot be decoded (make system-deps)", kind)
        raise UnsupportedMedia(
            f"{kind} audio needs ffmpeg, which is not installed on this server; "
            "send WAV, FLAC, OGG or MP3 instead",
            code="decoder_unavailable",
        )
    return ffmpeg, ffprobe


def ffprobe_command(ffprobe: str, demuxer: str, source: Path) -> list[str]:
    """The first audio stream's rate, channels and declared duration, file protocol only."""
    return [
        ffprobe,
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        *input_format(demuxer),
        "-select_streams",
        "a:0",
        "-show_entries",
        "stream=sample_rate,channels,duration:format=duration",
        "-of",
        "json",
        str(source),
    ]


def ffmpeg_pcm_command(
    ffmpeg: str, demuxer: str, source: Path, *, target_rate: int, max_duration_s: float
) -> list[str]:
    """The first audio stream as float32 mono at ``target_rate`` on stdout, cut one second past
    ``max_duration_s`` (so that an overlong file is told apart from one at the cap)."""
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file",  # the input's: the output is stdout (pipe:1), which this does not govern
        *input_format(demuxer),
        "-i",
        str(source),
        "-map",
        "0:a:0",
        "-t",
        f"{max_duration_s + 1:g}",
        "-vn",
        "-sn",
        "-dn",
        # Mix-down and resampling by soxr inside ffmpeg: the same resampler as the other
        # path, and only target-rate mono ever crosses the pipe (bounded memory).
        "-af",
        "aresample=resampler=soxr:precision=20",
        "-ac",
        "1",
        "-ar",
        str(target_rate),
        "-f",
        "f32le",
        "pipe:1",
    ]


def parse_probe(output: bytes, kind: str) -> tuple[int, int, float | None]:
    """(sample rate, channels, declared seconds or None) of the first audio stream."""
    try:
        probe = json.loads(output or b"{}")
        streams = probe.get("streams") or []
        if not streams:
            raise BadMedia(f"the {kind} file has no audio stream", code="no_audio")
        stream = streams[0]
        rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
        # The audio stream's own duration; the container's (the longest stream, maybe video) only
        # when the stream has none.
        declared = [
            float(value)
            for value in (stream.get("duration"), (probe.get("format") or {}).get("duration"))
            if value not in (None, "N/A")
        ][:1]
    except VerityError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadMedia(f"the {kind} file could not be probed", code="corrupt_audio") from exc
    # ADTS has no index: ffprobe guesses its duration from the first frames' bitrate, which can be
    # far off for VBR. Only a real container's declared duration is trusted for the early 413.
    claimed = declared[0] if declared and kind != "aac" else None
    if claimed is not None and not math.isfinite(claimed):
        claimed = None
    return rate, channels, claimed


# --- windows -------------------------------------------------------------------------------------


def make_windows(
    samples: np.ndarray, rate: int, window_s: float, hop_s: float
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Cut mono ``samples`` into overlapping windows: ``(windows [n, window_len] float32, spans)``,
    spans being ``(start_s, end_s)`` of each window in the clip.

    Windows start every ``hop_s`` and hold exactly ``window_s`` of audio. The last window is
    aligned to the end of the clip (it may overlap its neighbour by more than the hop), and a
    clip shorter than one window is a single window of its own length. No window is ever padded:
    zeros would change the model's input statistics (the per-window normalisation and the
    share of silence it sees), so a padded tail could score differently from the audio it holds
    and flip the clip's verdict. The model takes a dynamic length axis, which makes the short
    single window possible. Where the windows start is media/windows.py's rule (shared with video
    frames), with a short tail absorbed: no duplicate or near-duplicate last window.
    """
    window_len = round(window_s * rate)
    hop = round(hop_s * rate)
    if window_len < 1 or hop < 1:
        raise ValueError(f"window ({window_s} s) and hop ({hop_s} s) must be at least one sample")
    if hop > window_len:
        raise ValueError(f"hop ({hop_s} s) longer than the window ({window_s} s) would skip audio")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"expected non-empty mono samples, got shape {samples.shape}")
    total = len(samples)
    if total <= window_len:
        return samples[np.newaxis, :].copy(), [(0.0, total / rate)]
    starts = window_starts(total, window_len, hop, absorb_short_tail=True)
    view = np.lib.stride_tricks.sliding_window_view(samples, window_len)
    windows = np.ascontiguousarray(view[starts])
    spans = [(int(s) / rate, (int(s) + window_len) / rate) for s in starts]
    return windows, spans


class WindowCutter:
    """``make_windows`` over a stream of blocks: the same windows and spans, each handed out as
    soon as no later sample can change it, so a clip of any length holds at most one window, one
    hop and one block of samples here.

    Only the last regular window can still change (``absorb_short_tail`` slides it to the end, or
    an end-aligned window follows it), and only the clip's end tells which one is last; so a
    window is handed out once the next regular one has arrived whole, and ``finish`` hands out
    the rest by ``window_starts`` over the final length.
    """

    def __init__(self, rate: int, window_s: float, hop_s: float) -> None:
        self.rate = rate
        self.window_len = round(window_s * rate)
        self.hop = round(hop_s * rate)
        if self.window_len < 1 or self.hop < 1:
            raise ValueError(f"window ({window_s} s) and hop ({hop_s} s) must be at least one sample")
        if self.hop > self.window_len:
            raise ValueError(f"hop ({hop_s} s) longer than the window ({window_s} s) would skip audio")
        self.total = 0  # samples fed so far
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # position of _buffer[0] in the clip
        self._next = 0  # start of the next window to hand out

    def feed(self, block: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """The windows ``block`` completes (possibly none): ``(windows [n, window_len], spans)``."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {block.shape}")
        self._buffer = np.concatenate([self._buffer, block])
        self.total += len(block)
        starts = []
        while self._next + self.hop + self.window_len <= self.total:
            starts.append(self._next)
            self._next += self.hop
        windows = self._cut(starts)
        drop = self._next - self._offset
        self._buffer, self._offset = self._buffer[drop:].copy(), self._next
        return windows

    def finish(self) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """The windows left once the clip has ended (a clip shorter than one window: itself)."""
        if self.total == 0:
            raise ValueError("expected non-empty mono samples, got none")
        if self.total <= self.window_len:
            return self._buffer[np.newaxis, :].copy(), [(0.0, self.total / self.rate)]
        starts = window_starts(self.total, self.window_len, self.hop, absorb_short_tail=True)
        return self._cut([s for s in starts if s >= self._next])

    def _cut(self, starts: list[int]) -> tuple[np.ndarray, list[tuple[float, float]]]:
        if not starts:
            return np.zeros((0, self.window_len), dtype=np.float32), []
        view = np.lib.stride_tricks.sliding_window_view(self._buffer, self.window_len)
        windows = np.ascontiguousarray(view[[s - self._offset for s in starts]])
        return windows, [(s / self.rate, (s + self.window_len) / self.rate) for s in starts]
