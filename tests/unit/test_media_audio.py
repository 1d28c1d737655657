"""Untrusted audio bytes -> float32 mono at 16 kHz, or a 4xx error; windows without padding
(media/audio.py, media/sniff.py, issue 4)."""

from __future__ import annotations

import itertools
import struct
import subprocess
import tempfile
import time

import numpy as np
import psutil
import pytest
import soundfile as sf

import media.audio
from errors import BadMedia, TooLarge, UnsupportedMedia, VerityError
from media.audio import TEMP_PREFIX, DecodedAudio, decode_audio, make_windows
from media.sniff import AUDIO_FORMATS, IMAGE_FORMATS, sniff
from tests.audio_factory import (
    SOUNDFILE_WRITERS,
    chirp,
    dominant_frequency,
    encode,
    encode_ffmpeg,
    ffmpeg_path,
    id3_tag,
    noise,
    pcm16,
    sine,
    speech_like,
    stereo,
    wav_header,
)
from tests.media_factory import encode as encode_image
from tests.media_factory import jpeg_bytes, photo

pytestmark = pytest.mark.unit

RATE = 16_000
MAX_BYTES = 20 * 1024 * 1024
MAX_DURATION_S = 300.0
MIN_DURATION_S = 0.5
FFMPEG_TIMEOUT_S = 30.0
SILENT_RMS = 10 ** (-60 / 20)


def decode(
    data: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_duration_s: float = MAX_DURATION_S,
    min_duration_s: float = MIN_DURATION_S,
    ffmpeg_timeout_s: float = FFMPEG_TIMEOUT_S,
) -> DecodedAudio:
    return decode_audio(
        data,
        target_rate=RATE,
        max_bytes=max_bytes,
        max_duration_s=max_duration_s,
        min_duration_s=min_duration_s,
        ffmpeg_timeout_s=ffmpeg_timeout_s,
    )


def codes(decoded: DecodedAudio) -> set[str]:
    return {w["code"] for w in decoded.warnings}


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The decoder's temporary directory, private to this test, so leaks are counted exactly
    (other processes on the machine may use the system one at the same time)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert tempfile.gettempdir() == str(tmp_path)
    return tmp_path


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


def no_children_left() -> bool:
    """No ffmpeg/ffprobe child survives a decode (other fixtures' servers are not our business)."""
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() in ("ffmpeg", "ffprobe"):
                left.append(child)
        except psutil.NoSuchProcess:  # exited while we looked: not left behind
            continue
    return not left


# Formats by the path that decodes them: (writer name, input rate, sniffed format).
SOUNDFILE_CASES = [
    ("wav", 44_100, "wav"),
    ("wav-float", 48_000, "wav"),
    ("flac", 44_100, "flac"),
    ("ogg-vorbis", 44_100, "ogg"),
    ("ogg-opus", 48_000, "ogg"),  # libsndfile's Opus takes 8/12/16/24/48 kHz only
    ("mp3", 44_100, "mp3"),
]
FFMPEG_CASES = [("m4a", 44_100, "m4a"), ("mp4", 48_000, "mp4"), ("adts", 44_100, "aac")]
LOSSY = {"ogg-vorbis", "ogg-opus", "mp3", "m4a", "mp4", "adts"}


def make_file(writer: str, samples: np.ndarray, rate: int) -> bytes:
    if writer in SOUNDFILE_WRITERS:
        return encode(samples, rate, writer)
    return encode_ffmpeg(samples, rate, writer)


# --- decoding each format ------------------------------------------------------------------------


@pytest.mark.parametrize(("writer", "rate", "kind"), SOUNDFILE_CASES + FFMPEG_CASES)
def test_each_format_decodes_to_16k_mono(writer, rate, kind):
    """A 1 kHz tone at 44.1/48 kHz comes back as 16 kHz mono float32 of the same length and pitch."""
    data = make_file(writer, sine(1000, 3.0, rate), rate)
    assert sniff(data) == kind
    decoded = decode(data)
    assert decoded.format == kind
    assert decoded.sample_rate == RATE
    assert decoded.original_rate == rate
    assert decoded.channels == 1
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert decoded.samples.flags.c_contiguous
    # AAC adds encoder priming/padding (~1024 samples); the others are exact or close.
    assert decoded.duration_s == pytest.approx(3.0, abs=0.06 if writer in LOSSY else 1e-3)
    assert len(decoded.samples) == pytest.approx(round(decoded.duration_s * RATE), abs=1)
    assert dominant_frequency(decoded.samples, RATE) == pytest.approx(1000, abs=2)
    assert rms(decoded.samples) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert decoded.warnings == []


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000, 96_000])
def test_resampling_keeps_pitch_and_level(rate):
    """soxr HQ: a 3 kHz tone stays at 3 kHz and keeps its level from any input rate."""
    decoded = decode(encode(sine(3000, 2.0, rate, amplitude=0.4), rate, "wav-float"))
    assert decoded.original_rate == rate
    assert decoded.duration_s == pytest.approx(2.0, abs=1e-3)
    assert dominant_frequency(decoded.samples, RATE) == pytest.approx(3000, abs=1)
    middle = decoded.samples[RATE // 4 : -RATE // 4]  # away from the filter's edge transients
    assert rms(middle) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)


def test_16k_input_is_not_resampled():
    samples = sine(440, 1.0, RATE, amplitude=0.3)
    decoded = decode(encode(samples, RATE, "wav-float"))
    np.testing.assert_array_equal(decoded.samples, samples)


def test_tone_above_the_new_nyquist_is_filtered_not_aliased():
    """10 kHz at 48 kHz cannot exist at 16 kHz (Nyquist 8 kHz): a naive decimator folds it to
    6 kHz; a proper resampler removes it, leaving silence."""
    decoded = decode(encode(sine(10_000, 2.0, 48_000, amplitude=0.5), 48_000, "wav-float"))
    assert rms(decoded.samples[RATE // 4 : -RATE // 4]) < 1e-4
    assert "silence" in codes(decoded)


def test_chirp_through_the_ffmpeg_path_matches_the_soundfile_path():
    """Both paths resample with soxr: the same sweep decoded from FLAC and from M4A agrees
    (up to AAC's own coding error and its priming delay, found by cross-correlation)."""
    sweep = chirp(200, 6000, 2.0, 44_100, amplitude=0.5)
    from_flac = decode(encode(sweep, 44_100, "flac")).samples
    from_m4a = decode(encode_ffmpeg(sweep, 44_100, "m4a")).samples
    lag = int(np.argmax(np.correlate(from_m4a[:4000], from_flac[:2000], mode="valid")))
    assert lag < 800
    aligned = from_m4a[lag : lag + len(from_flac)]
    n = min(len(aligned), len(from_flac))
    error = rms(aligned[:n] - from_flac[:n]) / rms(from_flac[:n])
    assert error < 0.1


@pytest.mark.parametrize(
    ("samples", "rate"), [(speech_like(3.0, 22_050), 22_050), (noise(2.0, RATE, amplitude=0.2), RATE)]
)
def test_speech_like_and_noise_decode_without_warnings(samples, rate):
    decoded = decode(encode(samples, rate, "flac"))
    assert decoded.warnings == []
    assert decoded.duration_s == pytest.approx(len(samples) / rate, abs=1e-3)


def test_mp3_with_an_id3_tag_decodes():
    data = id3_tag("a title") + encode(sine(1000, 2.0, 44_100), 44_100, "mp3")
    assert data[:3] == b"ID3"
    decoded = decode(data)
    assert decoded.format == "mp3"
    assert decoded.duration_s == pytest.approx(2.0, abs=0.05)
    assert dominant_frequency(decoded.samples, RATE) == pytest.approx(1000, abs=2)


# --- stereo mix-down -----------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["wav", "flac", "mp3", "m4a"])
def test_opposite_channels_mix_down_to_silence(writer):
    """L = +x, R = -x: the mean over channels is zero. The file is valid, so it decodes, and
    says it is silent."""
    tone = sine(440, 2.0, 44_100, amplitude=0.5)
    decoded = decode(make_file(writer, stereo(tone, -tone), 44_100))
    assert decoded.channels == 2
    assert decoded.samples.ndim == 1
    assert rms(decoded.samples) < SILENT_RMS
    assert "silence" in codes(decoded)
    assert "silence" in {w["code"] for w in decoded.warnings}
    assert all(set(w) == {"code", "message"} and w["message"] for w in decoded.warnings)


def test_stereo_mix_down_is_the_mean_of_the_channels():
    left, right = sine(440, 1.0, RATE, amplitude=0.6), sine(1250, 1.0, RATE, amplitude=0.2)
    decoded = decode(encode(stereo(left, right), RATE, "wav-float"))
    assert decoded.channels == 2
    np.testing.assert_allclose(decoded.samples, (left + right) / 2, atol=1e-7)


def test_many_channel_file_mixes_down():
    channels = np.stack([sine(300 + 100 * c, 1.0, RATE, amplitude=0.1) for c in range(6)], axis=1)
    decoded = decode(encode(channels, RATE, "wav-float"))
    assert decoded.channels == 6
    np.testing.assert_allclose(decoded.samples, channels.mean(axis=1), atol=1e-7)


# --- warnings --------------------------------------------------------------------------------------


def test_digital_silence_is_a_result_with_a_warning():
    decoded = decode(encode(np.zeros(RATE * 2, dtype=np.float32), RATE, "wav"))
    assert decoded.duration_s == pytest.approx(2.0)
    assert codes(decoded) == {"silence"}
    assert "dBFS" in decoded.warnings[0]["message"]


def test_clipped_audio_gets_a_warning_and_a_loud_clean_one_does_not():
    clipped = decode(encode(sine(440, 2.0, RATE, amplitude=2.0), RATE, "wav"))  # written clipped at ±1
    assert "clipped" in codes(clipped)
    loud = decode(encode(sine(440, 2.0, RATE, amplitude=0.999), RATE, "wav"))
    assert "clipped" not in codes(loud)


@pytest.mark.parametrize("writer", ["wav", "mp3"])
def test_truncated_file_that_still_decodes_says_so(writer):
    """WAV and MP3 decode what is there; the header's longer claim earns a 'truncated' warning."""
    data = make_file(writer, sine(440, 3.0, 44_100), 44_100)
    decoded = decode(data[: int(len(data) * 0.6)])
    assert 1.0 < decoded.duration_s < 2.5
    assert "truncated" in codes(decoded)


# --- sniffing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64", "mp3"),  # MPEG-1 layer III, 128 kb/s, 44.1 kHz
        (b"\xff\xf3\x48\xc4", "mp3"),  # MPEG-2 layer III
        (b"\xff\xe3\x18\xc4", "mp3"),  # MPEG-2.5 layer III (sync 0xFFE)
        (b"\xff\xfd\x90\x00", "mp3"),  # MPEG-1 layer II
        (b"\xff\xf1\x50\x80", "aac"),  # ADTS, MPEG-4 AAC-LC, 44.1 kHz
        (b"\xff\xf9\x4c\x80", "aac"),  # ADTS, MPEG-2 flavour
        (b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00", "m4a"),
        (b"\x00\x00\x00\x1cftypM4B \x00\x00\x02\x00", "m4a"),
        (b"\x00\x00\x00\x1cftypM4P \x00\x00\x02\x00", "m4a"),
        (b"\x00\x00\x00\x1cftypmp42\x00\x00\x00\x00", "mp4"),
        (b"\x00\x00\x00\x20ftypisom", "mp4"),
        (b"\x00\x00\x00\x1cftypheic", "heif"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),  # JPEG's 0xFFD8 is not an MPEG sync
        (b"\xff\xd8\xff\xdb", "jpeg"),
        (b"\xff\xeb\x90\x64", None),  # sync, but version bits 01 are reserved
        (b"\xff\xe1\x50\x80", None),  # layer bits 00 (reserved for MPEG audio) without ADTS's 12-bit sync
        (b"\xff\xf1\x74\x80", None),  # ADTS with the reserved sampling-frequency index 13
        (b"\xff\xfb\xf0\x64", None),  # bitrate index 1111 is invalid
        (b"\xff\xfb\x9c\x64", None),  # sample-rate index 11 is reserved
        (b"\xff\xfb", None),  # too short to be a frame header
        (b"\xff\x00\x00\x00", None),
    ],
)
def test_sniff_audio_signatures(head, kind):
    assert sniff(head) == kind


@pytest.mark.parametrize(("writer", "rate", "kind"), SOUNDFILE_CASES + FFMPEG_CASES)
def test_sniff_names_every_written_format(writer, rate, kind):
    assert sniff(make_file(writer, sine(440, 1.0, rate), rate)) == kind


def test_audio_allow_list():
    assert {"wav", "flac", "ogg", "mp3", "m4a", "mp4"} <= AUDIO_FORMATS
    assert not AUDIO_FORMATS & IMAGE_FORMATS


# --- bad input: 4xx, never anything else -------------------------------------------------------


def test_empty_file_is_422():
    with pytest.raises(BadMedia) as err:
        decode(b"")
    assert (err.value.status, err.value.code) == (422, "empty_file")


def test_too_many_bytes_is_413():
    data = encode(sine(440, 1.0), RATE, "wav")
    with pytest.raises(TooLarge) as err:
        decode(data, max_bytes=len(data) - 1)
    assert (err.value.status, err.value.code) == (413, "file_too_large")
    assert decode(data, max_bytes=len(data)).duration_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (encode_image(photo(32, 24), "PNG"), "png"),
        (jpeg_bytes(64, 48), "jpeg"),
        (b"this is definitely an .mp3 file, honest\n" * 10, "unknown"),
        (b"%PDF-1.7\n" + b"\x00" * 64, "pdf"),
        (b"RIFF\x24\x00\x00\x00AVI LIST" + b"\x00" * 32, "avi"),
        (b"\x1a\x45\xdf\xa3" + b"\x00" * 64, "matroska"),
    ],
    ids=["png", "jpeg", "text", "pdf", "avi", "matroska"],
)
def test_wrong_type_is_415(data, detected):
    with pytest.raises(UnsupportedMedia) as err:
        decode(data)
    assert err.value.status == 415
    assert detected in err.value.message


def test_header_only_wav_with_placeholder_size_is_422():
    """44 bytes: a header whose data size is the 0xFFFFFFFF 'unknown' placeholder, and no samples."""
    header = wav_header(RATE, data_size=0xFFFFFFFF)
    assert len(header) == 44
    with pytest.raises(BadMedia) as err:
        decode(header)
    assert (err.value.status, err.value.code) == (422, "no_audio")


def test_header_only_wav_claiming_huge_data_is_413():
    """44 bytes claiming ~10 hours: refused from the header."""
    with pytest.raises(TooLarge) as err:
        decode(wav_header(RATE, data_size=10 * 3600 * RATE * 2))
    assert (err.value.status, err.value.code) == (413, "audio_too_long")


def test_wav_claiming_ten_hours_is_413_before_reading(monkeypatch):
    """One second of samples behind a header claiming ten hours: refused before any sample is read
    (libsndfile itself would silently clamp the claim to the bytes present)."""
    reads = []
    original_read = sf.SoundFile.read

    def counting_read(self, *args, **kwargs):
        reads.append(args)
        return original_read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    data = wav_header(RATE, data_size=10 * 3600 * RATE * 2) + pcm16(sine(440, 1.0))
    start = time.perf_counter()
    with pytest.raises(TooLarge) as err:
        decode(data)
    assert (err.value.status, err.value.code) == (413, "audio_too_long")
    assert "36000" in err.value.message and "300" in err.value.message
    assert err.value.details["duration_s"] == pytest.approx(36000)
    assert reads == []
    assert time.perf_counter() - start < 0.5


def test_flac_claiming_ten_hours_is_413_before_reading():
    """A FLAC STREAMINFO rewritten to claim ten hours over three seconds of frames."""
    data = bytearray(encode(sine(440, 3.0), RATE, "flac"))
    (packed,) = struct.unpack_from(">Q", data, 18)  # rate(20) channels(3) bits(5) total(36)
    mask = (1 << 36) - 1
    struct.pack_into(">Q", data, 18, (packed & ~mask) | (10 * 3600 * RATE))
    with pytest.raises(TooLarge) as err:
        decode(bytes(data))
    assert err.value.code == "audio_too_long"


def test_real_audio_over_the_duration_cap_is_413():
    data = encode(sine(440, 3.0), RATE, "flac")
    with pytest.raises(TooLarge) as err:
        decode(data, max_duration_s=2.0)
    assert (err.value.status, err.value.code) == (413, "audio_too_long")
    assert decode(data, max_duration_s=3.0).duration_s == pytest.approx(3.0)  # the cap is inclusive


def test_m4a_over_the_duration_cap_is_413():
    with pytest.raises(TooLarge) as err:
        decode(encode_ffmpeg(sine(440, 3.0, 44_100), 44_100, "m4a"), max_duration_s=2.0)
    assert err.value.code == "audio_too_long"


def test_decoding_stops_at_the_cap_when_the_length_is_unknown(monkeypatch):
    """If no header declares a length, reading still stops one frame past the cap: a lying or
    silent header cannot make the worker decode (or hold) more than max_duration_s of audio."""
    monkeypatch.setattr(media.audio, "_UNKNOWN_FRAMES", 0)  # every length reads as unknown
    monkeypatch.setattr(media.audio, "_wav_declared_frames", lambda data: None)
    read_frames = []
    original_read = sf.SoundFile.read

    def counting_read(self, frames=-1, *args, **kwargs):
        block = original_read(self, frames, *args, **kwargs)
        read_frames.append(len(block))
        return block

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    with pytest.raises(TooLarge) as err:
        decode(encode(sine(440, 10.0), RATE, "wav"), max_duration_s=1.0)
    assert err.value.code == "audio_too_long"
    assert sum(read_frames) == RATE + 1


def test_sample_budget_is_inclusive_and_413_from_the_header():
    """Decoding cost is frames x channels: per second of the cap, 8 channels at 48 kHz (or
    stereo at 192 kHz) are allowed, more is refused from the header, before decoding."""
    eight = np.zeros((48_000, 8), np.float32)
    assert decode(encode(eight, 48_000, "flac"), max_duration_s=1.0).channels == 8
    for rate, channels in ((48_000, 10), (384_000, 2)):
        data = encode(np.zeros((rate, channels), np.float32), rate, "wav")  # FLAC stops at 8 channels
        with pytest.raises(TooLarge) as err:
            decode(data, max_duration_s=1.0)
        assert (err.value.status, err.value.code) == (413, "too_many_samples")
        assert f"{channels} channels at {rate} Hz" in err.value.message


def test_sample_budget_holds_when_the_length_is_unknown(monkeypatch):
    monkeypatch.setattr(media.audio, "_UNKNOWN_FRAMES", 0)
    with pytest.raises(TooLarge) as err:
        decode(encode(np.zeros((384_000, 2), np.float32), 384_000, "wav"), max_duration_s=1.0)
    assert err.value.code == "too_many_samples"


@pytest.mark.parametrize("rate", [7, 999, 384_001, 10_000_000])
def test_absurd_sample_rate_is_422(rate):
    data = wav_header(rate, data_size=RATE * 2) + pcm16(sine(440, 1.0))
    with pytest.raises(BadMedia) as err:
        decode(data)
    assert (err.value.status, err.value.code) == (422, "bad_sample_rate")
    assert str(rate) in err.value.message


def test_zero_sample_rate_is_422():
    with pytest.raises(BadMedia) as err:
        decode(wav_header(0, data_size=RATE * 2) + pcm16(sine(440, 1.0)))
    assert err.value.status == 422


def test_too_many_channels_is_422():
    data = wav_header(RATE, channels=64, data_size=64 * 2 * 100) + b"\x00" * (64 * 2 * 100)
    with pytest.raises(BadMedia) as err:
        decode(data)
    assert (err.value.status, err.value.code) == (422, "bad_channels")


@pytest.mark.parametrize("writer", ["wav", "m4a"])
def test_too_short_is_422_with_the_numbers(writer):
    data = make_file(writer, sine(440, 0.2, 44_100), 44_100)
    with pytest.raises(BadMedia) as err:
        decode(data, min_duration_s=1.0)
    assert (err.value.status, err.value.code) == (422, "too_short")
    assert "1 s" in err.value.message
    assert err.value.details["min_duration_s"] == 1.0
    assert err.value.details["duration_s"] == pytest.approx(0.2, abs=0.05)


def test_minimum_duration_is_inclusive():
    assert decode(encode(sine(440, 1.0), RATE, "wav"), min_duration_s=1.0).duration_s == 1.0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_samples_are_422(value):
    samples = sine(440, 1.0)
    samples[1234] = value
    with pytest.raises(BadMedia) as err:
        decode(encode(samples, RATE, "wav-float"))
    assert (err.value.status, err.value.code) == (422, "invalid_samples")


@pytest.mark.parametrize(
    ("writer", "fraction"),
    [("flac", 0.5), ("flac", 0.05), ("ogg-vorbis", 0.3), ("ogg-opus", 0.2), ("mp3", 0.002)],
)
def test_truncated_file_that_cannot_decode_is_422(writer, fraction):
    rate = 48_000 if writer == "ogg-opus" else 44_100
    data = make_file(writer, sine(440, 3.0, rate), rate)
    with pytest.raises(BadMedia) as err:
        decode(data[: max(4, int(len(data) * fraction))])
    assert err.value.status == 422
    assert err.value.code in ("corrupt_audio", "no_audio")


@pytest.mark.parametrize("fraction", [0.7, 0.3, 0.05])
def test_truncated_m4a_is_422(fraction, private_tmp):
    """Without its index (moov at the end) an MP4 cannot be decoded: ffprobe fails -> 422."""
    data = encode_ffmpeg(sine(440, 3.0, 44_100), 44_100, "m4a")
    with pytest.raises(BadMedia) as err:
        decode(data[: int(len(data) * fraction)])
    assert (err.value.status, err.value.code) == (422, "corrupt_audio")
    assert str(private_tmp) not in err.value.message  # the private temporary path stays private
    assert leftovers(private_tmp) == []


def test_truncated_faststart_mp4_decodes_what_is_there():
    data = encode_ffmpeg(sine(440, 3.0, 44_100), 44_100, "mp4", "-movflags", "+faststart")
    decoded = decode(data[: int(len(data) * 0.6)])
    assert 1.0 < decoded.duration_s < 2.5
    assert "truncated" in codes(decoded)


def test_file_that_makes_ffmpeg_fail_is_422(private_tmp):
    data = b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00" + bytes(range(256)) * 16
    assert sniff(data) == "m4a"
    with pytest.raises(BadMedia) as err:
        decode(data)
    assert (err.value.status, err.value.code) == (422, "corrupt_audio")
    assert leftovers(private_tmp) == []
    assert no_children_left()


def ffmpeg_make(directory, *args: str) -> bytes:
    """An MP4 made by ffmpeg from ``args`` (inputs and codecs) in ``directory``."""
    target = directory / "made.mp4"
    command = [ffmpeg_path(), "-nostdin", "-loglevel", "error", *args, "-f", "mp4", str(target)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return target.read_bytes()


def test_mp4_without_an_audio_stream_is_422(tmp_path):
    """A video-only MP4 (the generic mp4 brand is on the audio allow-list) has nothing to decode."""
    data = ffmpeg_make(tmp_path, "-f", "lavfi", "-i", "testsrc=d=1:s=64x64:r=5", "-c:v", "mpeg4")
    with pytest.raises(BadMedia) as err:
        decode(data)
    assert (err.value.status, err.value.code) == (422, "no_audio")


def test_video_mp4_gives_its_audio_and_the_audio_stream_sets_the_duration(tmp_path):
    """5 s of video with 1 s of sound under a 3 s cap: the audio stream's 1 s counts, not the
    container's 5 s, and only the sound is decoded."""
    video = ["-f", "lavfi", "-i", "testsrc=d=5:s=64x64:r=5"]
    sound = ["-f", "lavfi", "-i", "sine=f=1000:d=1"]
    data = ffmpeg_make(tmp_path, *video, *sound, "-c:v", "mpeg4", "-c:a", "aac")
    assert sniff(data) == "mp4"
    decoded = decode(data, max_duration_s=3.0)
    assert decoded.duration_s == pytest.approx(1.0, abs=0.06)
    assert dominant_frequency(decoded.samples, RATE) == pytest.approx(1000, abs=2)


def test_missing_ffmpeg_is_415_naming_it(monkeypatch, private_tmp):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UnsupportedMedia) as err:
        decode(b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00" + b"\x00" * 64)
    assert err.value.status == 415
    assert "ffmpeg" in err.value.message
    assert leftovers(private_tmp) == []
    # libsndfile formats do not need it.
    assert decode(encode(sine(440, 1.0), RATE, "flac")).duration_s == pytest.approx(1.0)


def test_ffmpeg_time_limit_is_422_and_leaks_nothing(private_tmp):
    data = encode_ffmpeg(sine(440, 3.0, 44_100), 44_100, "m4a")
    assert leftovers(private_tmp) == []
    start = time.perf_counter()
    with pytest.raises(BadMedia) as err:
        decode(data, ffmpeg_timeout_s=0.001)
    assert (err.value.status, err.value.code) == (422, "decode_timeout")
    assert time.perf_counter() - start < 5
    assert leftovers(private_tmp) == []
    assert no_children_left()  # the timed-out process was killed and reaped


@pytest.mark.parametrize("writer", ["m4a", "adts"])
def test_ffmpeg_path_leaves_no_temporary_files(writer, private_tmp):
    data = encode_ffmpeg(sine(440, 1.0, 44_100), 44_100, writer)
    assert decode(data).duration_s == pytest.approx(1.0, abs=0.06)
    with pytest.raises(TooLarge):
        decode(data, max_duration_s=0.5)
    assert list(private_tmp.iterdir()) == []
    assert no_children_left()


def _mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """Copies of ``data`` with a burst of random bytes somewhere past its magic."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        start = int(rng.integers(8, len(data) - 16))
        length = int(rng.integers(1, 64))
        mutated[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        out.append(bytes(mutated[: int(rng.integers(len(data) // 2, len(data) + 1))]))
    return out


@pytest.mark.parametrize("writer", ["wav", "flac", "ogg-vorbis", "ogg-opus", "mp3", "m4a", "m4a-faststart"])
def test_corrupted_files_never_escape_as_anything_but_4xx(writer, private_tmp):
    """Random bursts of bytes, then a random cut: a result or a 4xx, nothing else. (A plain M4A
    keeps its index at the end, which the cut removes; faststart puts it first, so damaged
    audio data reaches the decoder.)"""
    rate = 48_000 if writer == "ogg-opus" else 44_100
    if writer == "m4a-faststart":
        data = encode_ffmpeg(speech_like(2.0, rate), rate, "m4a", "-movflags", "+faststart")
    else:
        data = make_file(writer, speech_like(2.0, rate), rate)
    for mutated in _mutations(data, 12, seed=len(writer)):
        try:
            decoded = decode(mutated, ffmpeg_timeout_s=10)
        except VerityError as exc:
            assert 400 <= exc.status < 500
        else:
            assert decoded.samples.dtype == np.float32
            assert np.isfinite(decoded.samples).all()
    assert leftovers(private_tmp) == []


# --- windows ---------------------------------------------------------------------------------------


def ramp(seconds: float, rate: int = RATE) -> np.ndarray:
    """0, 1, 2, ... as float32 (exact up to 2**24): each window's content shows where it came from."""
    return np.arange(round(seconds * rate), dtype=np.float32)


def assert_windows_match(samples, windows, spans, rate=RATE):
    assert windows.dtype == np.float32
    assert windows.flags.c_contiguous
    assert len(windows) == len(spans)
    for window, (start_s, end_s) in zip(windows, spans, strict=True):
        start, end = round(start_s * rate), round(end_s * rate)
        np.testing.assert_array_equal(window, samples[start:end])


def test_clip_shorter_than_one_window_is_one_unpadded_window():
    samples = ramp(1.5)
    windows, spans = make_windows(samples, RATE, 4.0, 2.0)
    assert windows.shape == (1, len(samples))
    assert spans == [(0.0, 1.5)]
    np.testing.assert_array_equal(windows[0], samples)


def test_clip_of_exactly_one_window():
    windows, spans = make_windows(ramp(4.0), RATE, 4.0, 2.0)
    assert windows.shape == (1, 4 * RATE)
    assert spans == [(0.0, 4.0)]


def test_exact_multiple_has_no_duplicate_last_window():
    samples = ramp(10.0)
    windows, spans = make_windows(samples, RATE, 4.0, 2.0)
    assert spans == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert windows.shape == (4, 4 * RATE)
    assert_windows_match(samples, windows, spans)


def test_last_window_is_aligned_to_the_end_not_padded():
    samples = ramp(11.0)
    windows, spans = make_windows(samples, RATE, 4.0, 2.0)
    assert spans == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0), (7.0, 11.0)]
    assert windows.shape == (5, 4 * RATE)
    np.testing.assert_array_equal(windows[-1], samples[-4 * RATE :])
    assert_windows_match(samples, windows, spans)


@pytest.mark.parametrize("tail_s", [0.008, 0.5, 0.99])
def test_a_short_tail_slides_the_last_window_instead_of_adding_one(tail_s):
    """A 10.008 s clip (an M4A's usual encoder padding) is 4 windows, the last aligned to its end,
    not 5 with a near-copy of the fourth; every sample stays covered."""
    samples = 1.0 + ramp(10.0 + tail_s)
    windows, spans = make_windows(samples, RATE, 4.0, 2.0)
    assert len(windows) == 4
    assert spans[:3] == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0)]
    assert spans[-1] == pytest.approx((6.0 + tail_s, 10.0 + tail_s))
    np.testing.assert_array_equal(windows[-1], samples[-4 * RATE :])
    assert all(b[0] <= a[1] for a, b in itertools.pairwise(spans))  # no gaps
    assert_windows_match(samples, windows, spans)


def test_a_tail_one_sample_past_a_window_gets_an_end_aligned_window():
    samples = np.arange(4 * RATE + 1, dtype=np.float32)
    windows, spans = make_windows(samples, RATE, 4.0, 2.0)
    assert len(windows) == 2
    assert spans[-1] == (1 / RATE, 4.0 + 1 / RATE)
    np.testing.assert_array_equal(windows[-1], samples[1:])


def test_windows_cover_the_whole_clip_with_no_zeros_added():
    samples = 1.0 + ramp(9.3)  # no zero anywhere: padding would show up
    windows, spans = make_windows(samples, RATE, 4.0, 2.0)
    assert spans[0][0] == 0.0
    assert spans[-1][1] == pytest.approx(9.3)
    assert all(b[0] <= a[1] for a, b in itertools.pairwise(spans))  # no gaps
    assert (windows != 0).all()


def test_ten_minutes_of_windows():
    samples = ramp(600.0)
    start = time.perf_counter()
    windows, spans = make_windows(samples, RATE, 4.0, 2.0)
    elapsed = time.perf_counter() - start
    assert windows.shape == (299, 4 * RATE)  # (600 - 4) / 2 + 1, and 600 is an exact multiple
    assert spans[0] == (0.0, 4.0)
    assert spans[-1] == (596.0, 600.0)
    starts = np.array([s for s, _ in spans])
    np.testing.assert_allclose(np.diff(starts), 2.0)
    for index in (0, 1, 150, 297, 298):
        assert_windows_match(samples, windows[index : index + 1], spans[index : index + 1])
    assert elapsed < 2.0


@pytest.mark.parametrize(
    ("seconds", "window_s", "hop_s", "count"), [(7.0, 4.0, 4.0, 2), (20.5, 1.0, 0.25, 79)]
)
def test_other_window_settings(seconds, window_s, hop_s, count):
    samples = ramp(seconds, 8_000)
    windows, spans = make_windows(samples, 8_000, window_s, hop_s)
    assert len(windows) == count
    assert spans[-1][1] == pytest.approx(seconds)
    assert_windows_match(samples, windows, spans, rate=8_000)


@pytest.mark.parametrize(
    ("samples", "window_s", "hop_s"),
    [
        (np.zeros(100, np.float32), 4.0, 0.0),
        (np.zeros(100, np.float32), 0.0, 1.0),
        (np.zeros(100, np.float32), 2.0, 3.0),  # hop longer than the window would skip audio
        (np.zeros(0, np.float32), 4.0, 2.0),
        (np.zeros((100, 2), np.float32), 4.0, 2.0),
    ],
)
def test_bad_window_arguments_are_value_errors(samples, window_s, hop_s):
    with pytest.raises(ValueError):
        make_windows(samples, RATE, window_s, hop_s)


def test_decoded_audio_feeds_the_windows():
    decoded = decode(encode(speech_like(9.0, 44_100), 44_100, "flac"))
    windows, spans = make_windows(decoded.samples, decoded.sample_rate, 4.0, 2.0)
    assert windows.shape == (4, 4 * RATE)
    assert spans[-1] == (5.0, 9.0)
