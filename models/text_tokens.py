"""Text -> token windows for a sequence classifier, with the ``tokenizers`` package alone (no torch,
no transformers at run time).

The tokenizer is the checkpoint's own, saved by export as ``tokenizer.json`` beside the ONNX graph
(``models/export/hf_text.py``); ``tests/unit/test_text_tokens.py`` proves its ids and offsets
equal to the transformers tokenizer's on a varied text set.

Windows, like audio windows: the text's tokens (no special tokens) are cut into windows of
``max_tokens - 2`` tokens (room for the classifier's ``<s>`` and ``</s>``) every ``stride``
tokens, the last one aligned to the text's end, so every window of a text at least one window
long is full, and such windows batch with any other request's. A text shorter than one window is
one window of its own length (run alone: padding would change its score). Each window carries
the character range it covers, for the result's ``segments``.

Special-token strings typed by a user (``<s>``, ``</s>``, ``<pad>``) are encoded as the plain text
they are: only the window builder adds real special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TextWindows:
    """The windows of one text: ``ids`` (windows, tokens) int64 with the special tokens, and per
    window the character range ``[start_char, end_char)`` it covers."""

    ids: np.ndarray
    spans: list[tuple[int, int]]
    tokens: int  # the text's tokens, without special tokens


class TextTokenizer:
    """A saved ``tokenizer.json`` and the ids of the special tokens a window starts and ends with."""

    def __init__(self, path: Path, *, bos_id: int, eos_id: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        # "<s>" typed in a text is text, not a sequence boundary.
        self._tokenizer.encode_special_tokens = True
        self.bos_id, self.eos_id = bos_id, eos_id

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The text's ids (int64) and character offsets ``(tokens, 2)``, no special tokens."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        ids = np.asarray(encoding.ids, dtype=np.int64)
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        return ids, offsets

    def windows(self, text: str, max_tokens: int, overlap_tokens: int) -> TextWindows:
        ids, offsets = self.encode(text)
        return cut_windows(ids, offsets, max_tokens, overlap_tokens, self.bos_id, self.eos_id)


def window_starts(n_tokens: int, length: int, stride: int) -> list[int]:
    """Where windows of ``length`` tokens start in a text of ``n_tokens``: every ``stride``, the last
    one aligned to the end (a shorter text: one window at 0)."""
    if n_tokens <= length:
        return [0] if n_tokens else []
    starts = list(range(0, n_tokens - length, stride))
    starts.append(n_tokens - length)
    return starts


def cut_windows(
    ids: np.ndarray, offsets: np.ndarray, max_tokens: int, overlap_tokens: int, bos_id: int, eos_id: int
) -> TextWindows:
    length = max_tokens - 2
    stride = length - overlap_tokens
    if length < 1 or stride < 1:
        raise ValueError(f"max_tokens {max_tokens} and overlap_tokens {overlap_tokens} leave no window")
    starts = window_starts(len(ids), length, stride)
    rows, spans = [], []
    for start in starts:
        end = min(start + length, len(ids))
        rows.append(np.concatenate([[bos_id], ids[start:end], [eos_id]]).astype(np.int64))
        spans.append((int(offsets[start][0]), int(offsets[end - 1][1])))
    width = max((len(r) for r in rows), default=0)
    return TextWindows(np.stack(rows) if rows else np.zeros((0, width), np.int64), spans, len(ids))
