"""Many patterns, one pass: which of a rule set's regular expressions may match a text.

Python's `re` runs each pattern over each text, so 40 body rules read a message 40 times.
With Hyperscan (the `hyperscan` package, Intel's multi-pattern engine; x86-64 only), every
pattern goes into one database compiled in prefilter mode, UTF-8 and Unicode properties:
one linear scan over the text names the patterns that may match (prefilter mode matches
a superset of what each pattern matches, approximating what Hyperscan cannot run itself:
back-references, lookarounds, Unicode word boundaries). Only those are then run with `re`,
so the result is exactly Python's, and a text none of them can match costs one scan.

A pattern Hyperscan refuses even in prefilter mode, a text that cannot be encoded, or a
machine without the package: that pattern (or text) goes to `re` as before.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence

__all__ = ["PatternSet", "available"]

log = logging.getLogger("mta.content")

try:  # optional: x86-64 wheels only
    import hyperscan as _hs
except ImportError:  # pragma: no cover - depends on the machine
    _hs = None


def available() -> bool:
    return _hs is not None


class PatternSet:
    """`PatternSet(patterns).search(i, texts)`: whether pattern i matches one of the texts
    (re.search semantics), after `prepare(texts)` scanned them once."""

    def __init__(self, patterns: Sequence[str], *, engine: bool = True) -> None:
        self.regexes = [re.compile(p) for p in patterns]
        self._db = None
        self._local = threading.local()  # a scan's scratch space is per thread
        self._always: set[int] = set(range(len(patterns)))  # run with re whatever
        if engine and _hs is not None and patterns:
            self._compile(patterns)

    @property
    def accelerated(self) -> int:
        """How many patterns the one-pass scan covers."""
        return len(self.regexes) - len(self._always)

    def _compile(self, patterns: Sequence[str]) -> None:
        assert _hs is not None
        flags = (_hs.HS_FLAG_UTF8 | _hs.HS_FLAG_UCP | _hs.HS_FLAG_PREFILTER
                 | _hs.HS_FLAG_SINGLEMATCH)
        ok: list[int] = []
        for i, p in enumerate(patterns):
            try:  # one at a time first: a refused pattern must not sink the others
                _hs.Database().compile(expressions=[p.encode()], ids=[i], elements=1,
                                       flags=[flags])
            except Exception as e:
                log.info("content pattern %r runs without the multi-pattern engine: %s", p, e)
                continue
            ok.append(i)
        if not ok:
            return
        db = _hs.Database()
        db.compile(expressions=[patterns[i].encode() for i in ok], ids=ok, elements=len(ok),
                   flags=[flags] * len(ok))
        self._db = db
        self._always -= set(ok)

    def prepare(self, texts: Sequence[str]) -> set[int] | None:
        """The patterns that may match one of the texts (None: every one may)."""
        if self._db is None:
            return None
        maybe: set[int] = set(self._always)

        def hit(pattern: int, start: int, end: int, flags: int, ctx: object) -> None:
            maybe.add(pattern)

        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = _hs.Scratch(self._db)
        for t in texts:
            try:
                data = t.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: not valid UTF-8 for the scan
                return None
            self._db.scan(data, match_event_handler=hit, scratch=scratch)
        return maybe

    def search(self, i: int, texts: Sequence[str], maybe: set[int] | None) -> bool:
        if maybe is not None and i not in maybe:
            return False
        rx = self.regexes[i]
        return any(rx.search(t) for t in texts)
