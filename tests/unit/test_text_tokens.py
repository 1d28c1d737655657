"""Run-time tokenization (``models/text_tokens.py``, the ``tokenizers`` package alone) equals the
transformers tokenizer's, and text windows are cut as documented."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from models.text_tokens import TextTokenizer, cut_windows, window_starts

pytestmark = pytest.mark.unit

VARIED = [
    "The committee met on Tuesday to review the budget.",
    "  leading and trailing spaces  ",
    "whitespace   runs\t\tand\n\n\nnewlines \r\n mixed",
    "emoji 😂👍🏽 and a family 👨‍👩‍👧 and flags 🇫🇷",
    "Ünïcödé têxt — “quotes”, naïve café, ß, İstanbul, ﬁ ligature",
    "中文字符和日本語のテキスト، والعربية من اليمين",
    "combining e\u0301 and zero\u200bwidth and a\u00adsoft hyphen",
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 20,  # one very long word
    "x" * 3000,
    "special strings typed by a user: <s> </s> <pad> <unk> <mask> stay text",
    "control \x07 bell \x1b escape and \x7f delete",
    "1234567890 3.14159 2026-12-05 https://example.com/a?b=c&d=e#f",
    "def main():\n    return {'a': [1, 2, 3]}  # code",
    "ÀÁÂÃÄÅ àáâãäå " * 50,
]


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev tokenizer as export saves it: tokenizer.json, plus the vocab.json / merges.txt that
    transformers builds its own RoBERTa tokenizer from."""
    from models.export.hf_text import build_dev_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = build_dev_tokenizer(1000)
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer.model.save(str(folder))
    return folder


def test_ids_and_offsets_equal_the_transformers_tokenizer(saved_tokenizer: Path) -> None:
    from transformers import RobertaTokenizer

    # Built by transformers from the BPE's vocabulary and merges (RoBERTa's own pre-tokenizer,
    # decoder and post-processor), not from our tokenizer.json.
    reference = RobertaTokenizer(
        vocab=str(saved_tokenizer / "vocab.json"), merges=str(saved_tokenizer / "merges.txt")
    )
    ours = TextTokenizer(saved_tokenizer / "tokenizer.json", bos_id=0, eos_id=2)
    for text in VARIED:
        expected = reference(
            text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True
        )
        ids, offsets = ours.encode(text)
        assert ids.tolist() == expected["input_ids"], text[:40]
        assert [tuple(o) for o in offsets.tolist()] == [tuple(o) for o in expected["offset_mapping"]], text[
            :40
        ]
        # A short text is one window: <s> text </s>, what transformers gives with special tokens.
        if len(ids) <= 510:
            window = ours.windows(text, 512, 128)
            with_specials = reference(text, split_special_tokens=True)["input_ids"]
            assert window.ids.tolist() == [with_specials]
    # The special strings a user typed are text, never the ids 0-4.
    ids, _ = ours.encode("<s></s><pad>")
    assert not set(ids.tolist()) & {0, 1, 2, 3, 4}


def test_window_starts_cover_the_text_with_the_last_aligned_to_its_end() -> None:
    assert window_starts(0, 10, 5) == []
    assert window_starts(7, 10, 5) == [0]
    assert window_starts(10, 10, 5) == [0]
    assert window_starts(23, 10, 6) == [0, 6, 12, 13]
    for n in (511, 557, 1020, 1021, 5000):
        starts = window_starts(n, 510, 382)
        assert starts[0] == 0 and starts[-1] == n - 510
        assert all(0 < b - a <= 382 for a, b in itertools.pairwise(starts))


def test_windows_carry_their_special_tokens_and_character_ranges() -> None:
    ids = np.arange(10, 30, dtype=np.int64)
    offsets = np.asarray([[3 * i, 3 * i + 2] for i in range(20)])
    windows = cut_windows(ids, offsets, max_tokens=10, overlap_tokens=3, bos_id=0, eos_id=2)
    assert windows.tokens == 20 and windows.ids.shape == (4, 10)  # starts 0, 5, 10, 12
    assert windows.ids[0].tolist() == [0, *range(10, 18), 2]
    assert windows.ids[-1].tolist() == [0, *range(22, 30), 2]
    assert windows.spans == [(0, 23), (15, 38), (30, 53), (36, 59)]
    short = cut_windows(ids[:4], offsets[:4], max_tokens=10, overlap_tokens=3, bos_id=0, eos_id=2)
    assert short.ids.tolist() == [[0, 10, 11, 12, 13, 2]] and short.spans == [(0, 11)]
    with pytest.raises(ValueError, match="no window"):
        cut_windows(ids, offsets, max_tokens=4, overlap_tokens=2, bos_id=0, eos_id=2)
