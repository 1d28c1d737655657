"""Which frames of a video are analysed: the sampling plan (adaptive or requested fps within a frame
budget) and the samplers that apply it while frames stream by (the in-memory one thins what it
kept; the streaming one, for files, only ever widens its interval). Shared constants of
``media.video``'s modules live here too."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from errors import InvalidInput

log = logging.getLogger(__name__)

TEMP_PREFIX = "verity-video-"

# Adaptive sampling (no fps in the request), by declared duration.
SHORT_CLIP_S, SHORT_CLIP_FPS = 10.0, 2.0
MEDIUM_CLIP_S, MEDIUM_CLIP_FPS = 60.0, 1.0
MAX_REQUEST_FPS = 60.0  # denser than this samples (nearly) every frame of most videos anyway
MAX_STREAM_FPS = 1000.0  # decoded frames per second of duration past this are an attack, not video
VIDEO_SEND = "MP4, MOV, AVI, WebM or MKV"

_TIME_EPS = 1e-3  # a frame 1 ms before a target time (float rounding of pts) counts as on it


@dataclass(frozen=True)
class VideoFrame:
    index: int  # position in the decoded stream, 0-based
    t_s: float  # presentation time, seconds from the stream's start
    rgb: np.ndarray  # uint8, [height, width, 3], upright


@dataclass(frozen=True)
class SamplingPlan:
    interval_s: float  # keep the first frame at or after every multiple of this
    max_frames: int
    rule: str  # how the interval was chosen, for logs and the result's media block


def plan_sampling(
    duration_s: float | None,
    *,
    fps: float | None,
    max_frames: int | None,
    default_max_frames: int,
    max_frames_cap: int,
    long_clip_fps: float | None = None,
) -> SamplingPlan:
    """The sampling interval for a clip of ``duration_s`` (None: unknown) and the frame budget.

    ``fps`` (request) wins; without it: <= 10 s -> 2 fps, <= 60 s -> 1 fps, longer -> ``max_frames``
    spread evenly (or ``long_clip_fps`` when given: files in jobs, whose budget is thousands of
    frames), unknown -> 2 fps (the streaming thinning then halves it as often as the clip's real
    length needs). When ``duration_s * fps`` frames would exceed ``max_frames``, the interval
    becomes ``duration_s / max_frames``: the frames cover the whole clip rather than its start.
    """
    if fps is not None and not 0 < fps <= MAX_REQUEST_FPS:
        raise InvalidInput(f"fps must be in (0, {MAX_REQUEST_FPS:g}]", code="invalid_fps")
    if max_frames is not None and max_frames < 1:
        raise InvalidInput("max_frames must be at least 1", code="invalid_max_frames")
    budget = min(max_frames or default_max_frames, max_frames_cap)
    known = duration_s if duration_s is not None and math.isfinite(duration_s) and duration_s > 0 else None
    if fps is not None:
        interval, rule = 1 / fps, "requested"
    elif known is None or known <= SHORT_CLIP_S:
        interval, rule = 1 / SHORT_CLIP_FPS, "adaptive"
    elif known <= MEDIUM_CLIP_S:
        interval, rule = 1 / MEDIUM_CLIP_FPS, "adaptive"
    elif long_clip_fps is not None:
        interval, rule = 1 / long_clip_fps, "adaptive"
    else:
        interval, rule = known / budget, "spread"
    if known is not None and math.ceil(known / interval - _TIME_EPS) > budget:
        interval, rule = known / budget, "spread"
    return SamplingPlan(interval_s=interval, max_frames=budget, rule=rule)


class Sampler:
    """Keeps the first frame at or after each target ``k * interval``, at most ``max_frames``.

    One more frame than the budget doubles the interval and keeps only the first frame of each new
    slot, so the kept frames stay spread over everything seen so far (a clip whose length was
    unknown or understated) and memory never holds more than ``max_frames + 1`` frames.
    """

    def __init__(self, plan: SamplingPlan) -> None:
        self.interval = plan.interval_s
        self.max_frames = plan.max_frames
        self.next_t = 0.0
        self.kept: list[VideoFrame] = []
        self.thinned = 0

    def wants(self, t_s: float) -> bool:
        return t_s >= self.next_t - _TIME_EPS

    def keep(self, frame: VideoFrame) -> None:
        self.kept.append(frame)
        while len(self.kept) > self.max_frames:
            self.interval *= 2
            self.thinned += 1
            slots: set[int] = set()
            thinned = []
            for kept in self.kept:
                slot = math.floor(kept.t_s / self.interval + _TIME_EPS)
                if slot not in slots:
                    slots.add(slot)
                    thinned.append(kept)
            self.kept = thinned
        self.next_t = (math.floor(frame.t_s / self.interval + _TIME_EPS) + 1) * self.interval


class StreamSampler:
    """Keeps the first frame at or after each target ``k * interval``, for a stream whose frames
    are handed over as they come: a kept frame is never taken back, and never more than
    ``max_frames`` are kept in all.

    Within the declared duration the plan's interval holds (the plan fits the budget). Past it,
    or from the start when nothing is declared, the rest of the budget is spent geometrically:
    each time half of what was left at the last change is used, the interval doubles. Any length
    then fits: every halving of the budget covers as much time as the one before (a 2 fps start
    with 3600 frames covers ~15 minutes per step, three hours in 12 steps), and the frames stay
    spread over the whole stream, denser towards its start.
    """

    def __init__(self, plan: SamplingPlan, declared_s: float | None) -> None:
        self.interval = plan.interval_s
        self.max_frames = plan.max_frames
        self.declared_s = declared_s if declared_s is not None and declared_s > 0 else None
        self.next_t = 0.0
        self.kept = 0
        self.doubled = 0
        self._double_at: int | None = None  # kept count at which the interval next doubles

    def wants(self, t_s: float) -> bool:
        return self.kept < self.max_frames and t_s >= self.next_t - _TIME_EPS

    def keep(self, frame: VideoFrame) -> None:
        self.kept += 1
        if self.declared_s is None or frame.t_s > self.declared_s:
            if self._double_at is None:
                self._double_at = self.kept + (self.max_frames - self.kept) // 2
            if self.kept >= self._double_at:
                self.interval *= 2
                self.doubled += 1
                self._double_at = self.kept + max(1, (self.max_frames - self.kept) // 2)
        self.next_t = (math.floor(frame.t_s / self.interval + _TIME_EPS) + 1) * self.interval
