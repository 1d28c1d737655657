"""Per-frame encoder features -> per-window fake probabilities from the LSTM head (numpy only).

The video model is two ONNX graphs (models/export/keras_video.py): the encoder turns each face
crop into a feature vector, the head turns a sequence of them into a fake probability. Its time
axis is dynamic, so sequences are never padded. The rule, for ``n`` feature vectors (one per
sampled frame, in time order) and the head's ``seq_len`` / ``stride``:

- ``n > seq_len``: windows of exactly ``seq_len`` frames start every ``stride`` frames; the last
  one is aligned to the end (it may overlap its neighbour by more than the stride), so every
  frame is in a window and every window has the length the head was trained on. A count that
  fits the stride exactly gets no duplicate last window: media/windows.py's rule, shared with
  audio windows (which, unlike frames, also absorb a short tail; that module says why).
- ``0 < n < seq_len``: one window of all ``n`` frames, run at its own length. Zero padding
  would change the verdict (an LSTM keeps stepping through the zeros; its last state is not the
  state after the real frames). Running at the own length computes exactly what the Keras
  model computes with a ``Masking`` layer over post-padded zeros (tests/unit/test_video_export.py
  proves both), without needing a mask input in the graph.
- ``n == 0``: no windows (no face was found: the caller's NO_FACE).

Each window yields one probability; together they form the video's timeline. Nothing here
imports tensorflow or torch: the head is any callable that maps a float32
``(windows, time, features)`` array to the graph's raw output, e.g. ``OnnxModel.run`` or a
batchable model service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from media.windows import window_starts
from models.catalog import SequenceInputSpec, get_entry
from models.postprocess import fake_probabilities

HeadRun = Callable[[np.ndarray], np.ndarray]


def encoder_id_for(head_id: str) -> str:
    """The catalog id of the encoder whose features the video head ``head_id`` takes. To load a
    stored pair, prefer ``models.store.find_video_pair``: it returns the exact encoder export the
    head was verified with."""
    entry = get_entry(head_id)
    if entry.modality != "video-head" or not entry.pair:
        raise ValueError(f"{head_id!r} is not a video head (modality {entry.modality})")
    return entry.pair


def sequence_windows(n_frames: int, seq_len: int, stride: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` frame index ranges (end exclusive), by the rule above."""
    if seq_len < 1 or not 1 <= stride <= seq_len:
        raise ValueError(f"need seq_len >= 1 and 1 <= stride <= seq_len, got {seq_len=} {stride=}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if n_frames == 0:
        return []
    if n_frames <= seq_len:
        return [(0, n_frames)]
    return [(start, start + seq_len) for start in window_starts(n_frames, seq_len, stride)]


def window_batch(features: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
    """The windows' features stacked as one ``(windows, time, features)`` float32 batch. All
    windows of one video have the same length by construction, so they always share a batch."""
    if features.ndim != 2:
        raise ValueError(f"expected (frames, features) features, got shape {features.shape}")
    lengths = {end - start for start, end in windows}
    if len(lengths) != 1:
        raise ValueError(f"windows of one batch must have one length, got {sorted(lengths)}")
    return np.ascontiguousarray(np.stack([features[start:end] for start, end in windows]), dtype=np.float32)


@dataclass(frozen=True)
class WindowScore:
    start: int  # first frame index of the window
    end: int  # one past its last frame
    fake_probability: float


def score_windows(
    features: np.ndarray,
    head: HeadRun,
    spec: SequenceInputSpec,
    *,
    output_kind: Literal["logits", "probabilities"],
    fake_index: int,
    stride: int | None = None,
) -> list[WindowScore]:
    """Run the head over the sliding windows of ``features`` ``(frames, feature_dim)``: one
    score per window, in time order. ``stride`` overrides the stored one (a setting)."""
    if features.ndim != 2 or (spec.feature_dim and features.shape[1] != spec.feature_dim):
        raise ValueError(
            f"the head takes (frames, {spec.feature_dim}) encoder features, got shape {features.shape}"
        )
    windows = sequence_windows(len(features), spec.seq_len, stride or spec.stride)
    if not windows:
        return []
    outputs = head(window_batch(features, windows))
    probabilities = fake_probabilities(outputs, output_kind, fake_index)
    if len(probabilities) != len(windows):
        raise ValueError(f"the head returned {len(probabilities)} rows for {len(windows)} windows")
    return [WindowScore(start, end, float(p)) for (start, end), p in zip(windows, probabilities, strict=True)]
