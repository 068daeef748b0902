"""What content rules look at, taken from a message once: `Facts`.

Owns the reading of a message for the rules: its header fields (unfolded, RFC 2047 words
decoded), its text parts (transfer encoding and charset undone, cut at the scan limit),
its attachments (file name extension, content type; the files inside a zip too), its MIME
part count, its size, and the hosts its http(s) URLs name. Pure and synchronous: it runs
in the rules' worker process. A malformed message is read as far as it goes (the stdlib
parser records defects instead of raising); whatever still raises leaves the facts
gathered so far.
"""

from __future__ import annotations

import email.errors
import email.header
import email.parser
import email.policy
import functools
import io
import ipaddress
import itertools
import mimetypes
import quopri
import re
import zipfile
from dataclasses import dataclass, field
from email._encoded_words import decode_b  # what Message.get_payload decodes base64 with
from email.message import Message

__all__ = ["Facts", "read_facts", "url_hosts"]

_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_FOLD = re.compile(r"\r?\n[ \t]+")
# The host of an http(s) URL: after "//" and any userinfo, up to a port, path, query, quote
# or markup. Matched in the lower-cased text (HTML writers use HTTP:// too): a literal
# "http" first lets the regex engine skip ahead, ~8x faster than (?i) with a leading \b;
# the word-boundary test ("xhttp://" is no URL) is the look-behind after it.
_URL = re.compile(r"http(?<!\w....)s?://(?:[^\s/@\"'<>]*@)?"
                  r"(\[[0-9a-f:.]+\]|[^\s/:?#\"'<>\\)\]]+)")
_ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
_ZIP_NAMES = 1000
# A member's type from its name by Python's own table, not /etc/mime.types: the same
# rules match the same files on every machine.
_MIME = mimetypes.MimeTypes()
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


@dataclass(slots=True)
class Facts:
    size: int = 0
    # (lower-case name, value) in order, unfolded and decoded.
    headers: list[tuple[str, str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # each text part, at most scan_limit
    # (lower-case extension without dot or "", lower-case content type) per attachment.
    attachments: list[tuple[str, str]] = field(default_factory=list)
    parts: int = 0
    hosts: list[str] = field(default_factory=list)  # distinct URL hosts, first seen first
    # headers' values by name, built when first asked (header_values)
    _by_name: dict[str, list[str]] | None = field(default=None, init=False, repr=False,
                                                  compare=False)

    def header_values(self, name: str) -> list[str]:
        """The values of every `name` field (lower case), in order; do not modify."""
        by_name = self._by_name
        if by_name is None:  # the rules ask about a few names each: one pass for all
            by_name = self._by_name = {}
            for n, v in self.headers:
                by_name.setdefault(n, []).append(v)
        return by_name.get(name, [])


def _decode_header(value: str) -> str:
    value = (_FOLD.sub(" ", value) if "\n" in value else value).strip()
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, ValueError, UnicodeError, email.errors.HeaderParseError):
        return value  # an unknown charset or a broken word: the raw text still matches


def _text(part: Message, limit: int) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return _decoded(payload, part.get_content_charset() or "utf-8", limit)


def _decoded(payload: bytes, charset: str, limit: int) -> str:
    try:
        text = payload[: limit * 4].decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        text = payload[: limit * 4].decode("latin-1")
    return text[:limit]


def _zip_members(part: Message) -> list[tuple[str, str]]:
    """The files inside a zip attachment, as attachments of their own: an .exe does not
    become acceptable by being zipped. Only the archive's directory is read (never a
    member's data, so a zip bomb costs nothing); one level deep, at most _ZIP_NAMES names;
    an encrypted archive still lists its names. Not a zip after all: nothing."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload.startswith(b"PK"):
        return []
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            names = [i.filename for i in itertools.islice(z.infolist(), _ZIP_NAMES)
                     if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return []
    return [(_extension(n), _MIME.guess_type(n)[0] or "application/octet-stream")
            for n in names]


def _extension(filename: str) -> str:
    base = filename.strip().strip('"').rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    if "." not in base:
        return ""
    return base.rsplit(".", 1)[1].strip().lower()


def url_hosts(text: str, limit: int, into: list[str]) -> None:
    """Append the distinct, valid hosts of the http(s) URLs in `text` to `into`, up to
    `limit` in all (IDN hosts in their A-label form, as the blocklists list them)."""
    seen = set(into)
    # A message names the same few hosts many times: each distinct one is judged once.
    for raw in dict.fromkeys(_URL.findall(text.lower())):
        if len(into) >= limit:
            return
        host = _host(raw)
        if host and host not in seen:
            seen.add(host)
            into.append(host)


@functools.lru_cache(maxsize=8192)  # a campaign's links recur in every copy
def _host(raw: str) -> str:
    raw = raw.strip(".").lower()
    if raw.startswith("["):
        return ""  # IPv6 literal: no RFC 5782 form is used for URI lists
    if raw[:1].isdigit():  # only then can it be a dotted quad
        try:
            return str(ipaddress.IPv4Address(raw))
        except ValueError:
            pass
    if not raw.isascii():
        try:
            raw = raw.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
    labels = raw.split(".")
    if len(labels) < 2 or len(raw) > 253 or not all(_LABEL.match(x) for x in labels):
        return ""
    return raw


# A header line as the stdlib's feed parser takes it without a defect: a field name of
# printable characters but ":" (RFC 5322 2.2), then ":" -- or a continuation line.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


def _header_fields(head: bytes) -> list[tuple[str, str]] | None:
    """The (name, raw value) fields of a header block (ending with its empty line) as
    compat32's BytesParser reads them, for the common case only: ASCII, CRLF line ends,
    every line a field or a continuation of one, no "From " line. None for anything else
    (the stdlib reads it). `tests/content/test_message.py` checks both give the same on
    a corpus."""
    if not head.isascii() or head.startswith(b"From "):
        return None
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return None  # a bare CR or LF: the stdlib splits lines there too
    lines = head.split(b"\r\n")
    if lines[-2:] != [b"", b""]:
        return None  # not ended by exactly one empty line
    fields: list[tuple[str, str]] = []
    name = value = None
    for line in lines[:-2]:
        if line[:1] in (b" ", b"\t"):
            if name is None:
                return None  # a first line that continues nothing: a defect
            value += "\r\n" + line.decode("ascii")
            continue
        m = _FIELD.match(line)
        if m is None:
            return None
        if name is not None:
            fields.append((name, value.rstrip("\r\n")))
        end = m.end()
        name = line[:end - 1].decode("ascii")
        value = line[end:].decode("ascii").lstrip(" \t")
    if name is not None:
        fields.append((name, value.rstrip("\r\n")))
    return fields


def _plain_headers(head: bytes) -> Message | None:
    """`_header_fields` as the Message the stdlib parser would make of the block."""
    fields = _header_fields(head)
    if fields is None:
        return None
    msg = Message(policy=email.policy.compat32)
    for name, value in fields:
        msg.set_raw(name, value)
    msg.set_payload("")
    return msg


def _head_end(data: bytes) -> int:
    """Where the body starts (after the header block's empty line), or -1."""
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    if not ends:
        return -1
    cut = min(ends)
    return cut + (4 if data.startswith(b"\r\n\r\n", cut) else 2)


# A Content-Type the fast path reads itself: one type/subtype, then only plain
# `name=value` parameters (no RFC 2231 `*`, no escapes); anything else takes the stdlib's.
_CTYPE = re.compile(r'\s*([^\s;/"]+/[^\s;/"]+)\s*((?:;\s*[A-Za-z0-9_.-]+\s*=\s*'
                    r'(?:"[A-Za-z0-9_.:+/=-]*"|[A-Za-z0-9_.:+/=-]+)\s*)*);?\s*', re.ASCII)
_PARAM = re.compile(r';\s*([A-Za-z0-9_.-]+)\s*=\s*"?([^";\s]*)', re.ASCII)
_UU = ("x-uuencode", "uuencode", "uue", "x-uue")


def _one_text_part(data: bytes, facts: Facts, scan_limit: int, max_hosts: int,
                   want_hosts: bool) -> bool:
    """The facts of the commonest message, read from its bytes without building a
    Message: a plain header block (`_header_fields`), one part whose type is not a
    container, no file name, a simple Content-Type, not uuencoded. False, with `facts`
    untouched, for anything else. What it finds is what the stdlib path finds
    (`tests/content/test_message.py` runs both over a corpus)."""
    head_end = _head_end(data)
    if head_end < 0:
        return False
    fields = _header_fields(data[:head_end])
    if fields is None:
        return False
    first: dict[str, str] = {}
    for name, value in fields:  # Message.get answers with a name's first field
        first.setdefault(name.lower(), value)
    if "content-disposition" in first:
        return False  # an attachment, perhaps: the stdlib reads its file name
    ctype, charset = "text/plain", ""
    raw = first.get("content-type")
    if raw is not None:
        m = _CTYPE.fullmatch(raw)
        if m is None or "name" in raw.lower():
            return False
        ctype = m[1].lower()
        charset = next((v for k, v in _PARAM.findall(m[2]) if k.lower() == "charset"), "")
    major = ctype.split("/", 1)[0]
    if major in ("multipart", "message"):
        return False
    cte = first.get("content-transfer-encoding", "").lower()
    if cte in _UU:
        return False
    facts.headers = [(k.lower(), _decode_header(v)) for k, v in fields]
    facts.parts = 1
    if major != "text":
        return True  # one part, not text, no file name: nothing more to read
    body = data[head_end:]
    if cte == "quoted-printable":
        body = quopri.decodestring(body)
    elif cte == "base64":  # as Message.get_payload(decode=True) does it
        body = decode_b(b"".join(body.splitlines()))[0]
    text = _decoded(body, charset.lower() or "utf-8", scan_limit)
    facts.texts.append(text)
    if want_hosts:
        url_hosts(text, max_hosts, facts.hosts)
    return True


def _single_part(data: bytes) -> Message | None:
    """A message of one part, read by parsing its header block alone (the stdlib parser
    splits even a body it will not look at into lines); None for MIME containers and for
    anything unusual, which take the full parse."""
    head_end = _head_end(data)
    if head_end < 0:
        return None
    msg = _plain_headers(data[:head_end]) or _PARSER.parsebytes(data[:head_end],
                                                                headersonly=True)
    if msg.get_payload() or msg.get_content_maintype() in ("multipart", "message"):
        return None  # a header block the parser ended early, or parts to walk
    # As BytesParser hands a body over: undecoded bytes kept as surrogates.
    msg.set_payload(data[head_end:].decode("ascii", "surrogateescape"))
    return msg


def read_facts(data: bytes, *, scan_limit: int, max_hosts: int, want_hosts: bool) -> Facts:
    facts = Facts(size=len(data))
    try:
        if _one_text_part(data, facts, scan_limit, max_hosts, want_hosts):
            return facts
    except Exception:  # whatever it cannot take, the stdlib's reading below does
        facts = Facts(size=len(data))
    try:
        # The header parse first: most mail is one text part, whose body the full parse would
        # only walk line by line to hand back unchanged. Only MIME containers need it.
        msg = _single_part(data)
        if msg is None:
            msg = _PARSER.parsebytes(data)
    except Exception:  # compat32 rarely raises; a bad message must not crash the scan
        return facts
    try:
        facts.headers = [(k.lower(), _decode_header(str(v))) for k, v in msg.items()]
        for part in msg.walk():
            facts.parts += 1
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            raw_disposition = part.get("Content-Disposition")
            # A file name lives in Content-Disposition or in Content-Type's "name": skip the
            # parameter parse (the costliest part of a plain text part) when neither can hold one.
            filename = (part.get_filename() if raw_disposition is not None
                        or "name" in str(part.get("Content-Type", "")).lower() else None)
            disposition = str(raw_disposition or "").split(";")[0].strip().lower()
            if filename is not None or disposition == "attachment":
                ext = _extension(filename or "")
                facts.attachments.append((ext, ctype))
                if ext == "zip" or ctype in _ZIP_TYPES:
                    facts.attachments.extend(_zip_members(part))
                continue
            if ctype in ("text/plain", "text/html") or (part is msg and
                                                        part.get_content_maintype() == "text"):
                text = _text(part, scan_limit)
                facts.texts.append(text)
                if want_hosts:
                    url_hosts(text, max_hosts, facts.hosts)
    except Exception:  # a broken part ends the reading: the facts so far stand
        pass
    return facts
