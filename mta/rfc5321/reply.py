"""SMTP replies: code, enhanced status (RFC 3463) and text, as one value type.

Shared by ingress (replies we send), delivery (replies we receive), policy (decisions are
replies) and bounce (classification). Reply bytes are assembled only in `to_bytes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Reply", "ReplyParseError"]

_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


class ReplyParseError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str | None = None  # "5.1.1"
    text: str = ""

    # --- RFC 5321 4.2.1 reply classes --------------------------------------------------
    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def is_too_many_recipients(self) -> bool:
        """RFC 5321 4.5.3.1.10: a 452 (or, from old servers, 552) to RCPT means "too many
        recipients in this transaction": send the rest in another transaction."""
        return self.code == 452 or (self.code == 552 and self.enhanced in (None, "5.5.3"))

    # --- wire format -------------------------------------------------------------------
    def lines(self) -> list[str]:
        return self.text.split("\n") if self.text else [""]

    def to_bytes(self) -> bytes:
        """The reply as CRLF-terminated lines, multi-line per RFC 5321 4.2.1."""
        prefix = f"{self.enhanced} " if self.enhanced else ""
        lines = self.lines()
        last = len(lines) - 1
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{prefix}{line}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{' / '.join(self.lines())}".rstrip()

    @classmethod
    def parse(cls, text: str) -> Reply:
        """Parse "550 5.1.1 No such user" (single line, as operators write them) or the lines
        of a received multi-line reply joined by newlines."""
        raw_lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]
        if not raw_lines:
            raise ReplyParseError("empty reply")
        code_s = raw_lines[0][:3]
        if not code_s.isdigit() or not 200 <= int(code_s) <= 599:
            raise ReplyParseError(f"no reply code in {raw_lines[0]!r}")
        enhanced: str | None = None
        texts = []
        for ln in raw_lines:
            if ln[:3] != code_s:
                raise ReplyParseError(f"inconsistent reply code in {ln!r}")
            body = ln[4:] if len(ln) > 3 and ln[3] in " -" else ln[3:].lstrip()
            m = _ENHANCED_RE.match(body)
            # RFC 3463 section 2: the enhanced class must agree with the reply class.
            if m and m.group(1) == code_s[0]:
                enhanced = enhanced or f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
                body = body[m.end():]
            texts.append(body)
        return cls(int(code_s), enhanced, "\n".join(texts))
