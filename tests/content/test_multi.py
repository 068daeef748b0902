"""The one-pass body scan (mta.content.multi) gives exactly what `re` alone gives: the same
rules match, for patterns Hyperscan runs, approximates (back-references, lookarounds,
Unicode word boundaries) or refuses, over ASCII, accented, emoji and mixed texts."""

from __future__ import annotations

import itertools
import random

import pytest

from mta.content import multi
from mta.content.multi import PatternSet

PATTERNS = [
    r"(?i)\bwire\s+transfer\b", r"(?i)western\s+union|moneygram", r"(?i)\binheritance\b",
    r"\b\d{4}[- ]\d{4}[- ]\d{4}[- ]\d{4}\b", r"(?i)bit\.ly/[A-Za-z0-9]{6}", r"(?i)<script\b",
    r"(x+)\1y",                     # back-reference
    r"(?<=pay)pal\b",               # lookbehind
    r"prix(?!\s+fixe)",             # negative lookahead
    r"(?i)\bété\b", r"(?i)\bÉTÉ\b", r"\w+é\b", r"(?i)straße", r"(?i)STRASSE",
    r"^Dear\s+\w+,$", r"(?m)^Dear\s+\w+,$", r"(?s)start.*end", r"end\Z", r"(?a)\w+ü",
    r"[😀-🙏]{2}", r"(?i)ǅ", r"\d+\s*€", r"(?x) free \s+ money ", r"\bK\b", r"(?i)\bk\b",
    r"^(a+)+$", r"[^\x00-\x7f]{3}", r"(?i)(?P<w>bonus)\s+(?P=w)",
]
WORDS = ["wire", "transfer", "Western", "union", "inheritance", "1234-5678-9012-3456",
         "bit.ly/AbC123", "<SCRIPT>", "xxxy", "xxy", "paypal", "pal", "prix", "fixe", "été",
         "ÉTÉ", "bébé", "straße", "STRASSE", "Dear", "Bob,", "start", "end", "grüü", "😀😃",
         "ǆ", "12 €", "free", "money", "K", "k", "K", "aaaa", "ñññ", "bonus", "\n", " ",
         "a", "l'été", "café", "naïve", "\t"]


def _texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))) for _ in range(3)]


@pytest.mark.skipif(not multi.available(), reason="the hyperscan package is not installed")
def test_the_one_pass_scan_agrees_with_re_everywhere():
    fast = PatternSet(PATTERNS)
    slow = PatternSet(PATTERNS, engine=False)
    assert fast.accelerated >= len(PATTERNS) - 3  # nearly every pattern rides the scan
    for seed in range(600):
        texts = _texts(seed)
        maybe = fast.prepare(texts)
        for i in range(len(PATTERNS)):
            got = fast.search(i, texts, maybe)
            want = slow.search(i, texts, slow.prepare(texts))
            assert got == want, (PATTERNS[i], texts)


@pytest.mark.skipif(not multi.available(), reason="the hyperscan package is not installed")
def test_edge_texts_agree():
    fast, slow = PatternSet(PATTERNS), PatternSet(PATTERNS, engine=False)
    edge = ["", "\n", "Dear Bob,", "Dear Bob,\n", "x\nDear Bob,\ny", "été", "l'été.",
            "\ud800 lone surrogate", "start\nend", "aaaaaaaaaaaa!", "ǆ", "K"]
    for texts in itertools.combinations(edge, 2):
        maybe = fast.prepare(list(texts))
        for i in range(len(PATTERNS)):
            assert fast.search(i, list(texts), maybe) == slow.search(i, list(texts), None), (
                PATTERNS[i], texts)


def test_without_the_engine_every_pattern_runs():
    p = PatternSet([r"a", r"b"], engine=False)
    assert p.accelerated == 0 and p.prepare(["a"]) is None
    assert p.search(0, ["xa"], None) and not p.search(1, ["xa"], None)
