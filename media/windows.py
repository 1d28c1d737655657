"""Where fixed-length windows start over a sequence: audio samples (media/audio.py) and video
frames (models/temporal.py) follow the same rule.

Windows hold exactly ``length`` items and start every ``hop`` items. The last one is aligned to
the end of the sequence, so every item is in a window and no window is padded (padding would
change what the model sees: per-window normalisation, an LSTM stepping through zeros). A
sequence that fits the hop exactly gets no duplicate last window.

With ``absorb_short_tail``, neither does a tail shorter than half a hop that the windows' overlap
can absorb: the last regular window slides to the end instead. Audio uses it (a 10.008 s clip is
4 windows, not a fifth near-copy of the fourth: each window is a full wav2vec2 pass). Video
frames do not: a window there is one cheap LSTM run over features already computed, and starts
never more than a stride apart keep the timeline's resolution.
"""

from __future__ import annotations


def window_starts(total: int, length: int, hop: int, *, absorb_short_tail: bool = False) -> list[int]:
    """Start offsets of the windows over ``total`` items (``total > length >= hop >= 1``)."""
    if not 1 <= hop <= length < total:
        raise ValueError(f"need 1 <= hop <= length < total, got {hop=} {length=} {total=}")
    starts = list(range(0, total - length + 1, hop))
    tail = total - (starts[-1] + length)
    if tail > 0:
        # Sliding the last window by `tail` keeps every item covered when its neighbour overlaps
        # it by at least `tail`.
        absorbable = len(starts) > 1 and tail < hop / 2 and tail <= length - hop
        if absorb_short_tail and absorbable:
            starts[-1] = total - length
        else:
            starts.append(total - length)
    return starts
