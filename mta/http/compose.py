"""The body of `POST /api/v1/messages` -> an envelope and RFC 5322 message bytes.

Owns the two request shapes of the injection API and their validation, without I/O:

    {"raw": "<RFC 5322 message>", "from": "a@example.com", "to": ["b@example.net"]}
    {"from": "Ann <a@example.com>", "to": [...], "cc": [...], "bcc": [...],
     "subject": "...", "text": "...", "html": "...", "headers": {"Reply-To": "..."},
     "attachments": [{"filename": "a.pdf", "content_type": "application/pdf",
                      "content_base64": "..."}]}

The second is built with the standard library's `email` package (EmailMessage), with Date
and Message-ID added. Envelope recipients are to + cc + bcc (Bcc never becomes a header).
Both get a Received: trace header (RFC 5321 4.4) and CRLF line ends. Every problem raises
`ComposeError` with a stable code the API returns as is.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from mta.config import SmtpConfig
from mta.rfc5321.command import parse_path, xtext_encode

__all__ = ["ComposeError", "Limits", "Submission", "compose"]

_RAW_KEYS = frozenset({"raw", "from", "to", "dsn"})
_JSON_KEYS = frozenset({"from", "to", "cc", "bcc", "subject", "text", "html", "headers",
                        "attachments", "dsn"})
# "dsn": {"notify": "SUCCESS,FAILURE" | ["DELAY"] | "NEVER", "ret": "FULL"|"HDRS",
# "envid": "the client's reference", "orcpt": {"rcpt@x": "original@y"}}: what RFC 3461
# lets an SMTP client ask (ORCPT per recipient, as RCPT TO carries it).
_DSN_KEYS = frozenset({"notify", "ret", "envid", "orcpt"})
_MAX_ORCPT = 500  # RFC 3461 4.2, the whole "rfc822;xtext" value
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_MAX_ENVID = 100  # RFC 3461 4.4
_ATTACHMENT_KEYS = frozenset({"filename", "content_type", "content_base64"})
# Headers with a field of their own, or that the MIME structure owns: setting them through
# "headers" would contradict the envelope or break the message.
_RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "mime-version", "content-type",
    "content-transfer-encoding", "content-disposition", "received", "return-path"})
# RFC 5322 2.2: field-name = 1*ftext, printable US-ASCII except ":".
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


class ComposeError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Limits:
    """From the [smtp] section: the same limits apply whichever way mail comes in."""

    max_message_size: int = SmtpConfig.max_message_size  # defaults: mta/config's
    max_recipients: int = SmtpConfig.max_recipients
    hostname: str = "localhost"


@dataclass
class Submission:
    mail_from: str
    recipients: list[str]
    data: bytes  # CRLF line ends, Received: first
    mail_params: dict[str, str] = field(default_factory=dict)
    notify: str | None = None  # RFC 3461 NOTIFY for every recipient (None: not given)
    # RFC 3461 ORCPT by envelope recipient, "rfc822;" + xtext as RCPT TO would carry it.
    orcpt: dict[str, str] = field(default_factory=dict)


def _orcpt(value: object, rcpts: list[str]) -> dict[str, str]:
    """dsn.orcpt: {envelope recipient: original address} -> ORCPT values by recipient."""
    if not isinstance(value, dict):
        raise ComposeError("bad_field", "dsn.orcpt: an object of recipient: original address")
    by_lower = {r.lower(): r for r in rcpts}
    out: dict[str, str] = {}
    for rcpt, original in value.items():
        envelope = by_lower.get(str(rcpt).lower())
        if envelope is None:
            raise ComposeError("bad_field", f"dsn.orcpt: {rcpt!r} is not a recipient")
        if not isinstance(original, str) or "@" not in original \
                or not (original.isascii() and original.isprintable()) or " " in original:
            raise ComposeError("bad_field", f"dsn.orcpt.{rcpt}: an ASCII address")
        encoded = "rfc822;" + xtext_encode(original)
        if len(encoded) > _MAX_ORCPT:
            raise ComposeError("bad_field", f"dsn.orcpt.{rcpt}: longer than RFC 3461 allows")
        out[envelope] = encoded
    return out


def _dsn(doc: dict[str, Any], params: dict[str, str],
         rcpts: list[str]) -> tuple[str | None, dict[str, str]]:
    """The "dsn" member: RET and ENVID into the MAIL parameters; NOTIFY and ORCPTs returned."""
    d = doc.get("dsn")
    if d is None:
        return None, {}
    if not isinstance(d, dict) or set(d) - _DSN_KEYS:
        raise ComposeError("bad_field", "dsn: an object with notify, ret, envid and orcpt only")
    ret, envid, notify = d.get("ret"), d.get("envid"), d.get("notify")
    if ret is not None:
        if not isinstance(ret, str) or ret.upper() not in ("FULL", "HDRS"):
            raise ComposeError("bad_field", 'dsn.ret: "FULL" or "HDRS"')
        params["RET"] = ret.upper()
    if envid is not None:
        if not isinstance(envid, str) or not envid or len(envid) > _MAX_ENVID \
                or not (envid.isascii() and envid.isprintable()):
            raise ComposeError("bad_field", f"dsn.envid: 1 to {_MAX_ENVID} printable ASCII "
                               "characters")
        params["ENVID"] = xtext_encode(envid)  # kept as xtext, as over SMTP
    orcpt = _orcpt(d["orcpt"], rcpts) if d.get("orcpt") is not None else {}
    if notify is None:
        return None, orcpt
    words = notify if isinstance(notify, list) else (
        notify.split(",") if isinstance(notify, str) else None)
    if not words or not all(isinstance(w, str) for w in words):
        raise ComposeError("bad_field", 'dsn.notify: "NEVER" or SUCCESS, FAILURE, DELAY')
    words = [w.strip().upper() for w in words]
    if words != ["NEVER"] and not (set(words) <= _NOTIFY and len(set(words)) == len(words)):
        raise ComposeError("bad_field", 'dsn.notify: "NEVER" or SUCCESS, FAILURE, DELAY')
    return ",".join(words), orcpt


def _mailbox(value: object, what: str) -> tuple[str, str]:
    """"a@b" or "Name <a@b>" -> (header form, envelope address); RFC 5321 path syntax."""
    if not isinstance(value, str) or not value.strip():
        raise ComposeError("bad_address", f"{what}: expected an address string")
    if "\r" in value or "\n" in value:
        raise ComposeError("bad_address", f"{what}: line breaks are not allowed")
    pairs = email.utils.getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1]:
        raise ComposeError("bad_address", f"{what}: expected one address, got {value!r}")
    name, addr = pairs[0]
    try:
        parsed, end = parse_path(f"<{addr}>", allow_null=False, allow_postmaster=False)
    except ValueError:
        parsed, end = "", -1
    if end != len(addr) + 2 or "@" not in parsed:
        raise ComposeError("bad_address", f"{what}: not a valid address: {addr!r}")
    return (email.utils.formataddr((name, addr)) if name else addr), parsed


def _address_list(doc: dict[str, Any], key: str) -> list[tuple[str, str]]:
    value = doc.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ComposeError("bad_address", f"{key}: expected an address or a list of them")
    return [_mailbox(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _string(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ComposeError("bad_field", f"{key}: expected a string")
    return value


def _envelope(mail_from: str, rcpts: list[str], limits: Limits) -> list[str]:
    if not rcpts:
        raise ComposeError("missing_field", "at least one recipient (to, cc or bcc) is "
                           "required")
    seen: set[str] = set()
    unique = []
    for r in rcpts:
        if r.lower() not in seen:
            seen.add(r.lower())
            unique.append(r)
    if len(unique) > limits.max_recipients:
        raise ComposeError("too_many_recipients",
                           f"at most {limits.max_recipients} recipients per message")
    return unique


def _normalize(data: bytes) -> bytes:
    data = _LINE_ENDS.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _header_block(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end + 2]


def _trace(data: bytes, *, client_ip: str, tls: bool, recipients: list[str], limits: Limits,
           now: float) -> bytes:
    """Received: first (RFC 5321 4.4; "with HTTP(S)": the protocol it came by), then
    Date: and Message-ID: after the header block when the message has none (RFC 5322
    3.6: Date is required, Message-ID should be present)."""
    date = email.utils.formatdate(now, localtime=False)
    received = (f"Received: from [{client_ip}]\r\n\tby {limits.hostname} (mta) with "
                f"{'HTTPS' if tls else 'HTTP'}")
    if len(recipients) == 1:  # "for" with one recipient only: a list would disclose Bcc
        received += f"\r\n\tfor <{recipients[0]}>"
    head = _header_block(data)
    lower = b"\r\n" + head.lower()
    extra = b""
    if b"\r\ndate:" not in lower:
        extra += f"Date: {date}\r\n".encode()
    if b"\r\nmessage-id:" not in lower:
        extra += f"Message-ID: {email.utils.make_msgid(domain=limits.hostname)}\r\n".encode()
    return (received + f"; {date}\r\n").encode() + head + extra + data[len(head):]


def _raw(doc: dict[str, Any], limits: Limits) -> tuple[str, list[str], bytes]:
    unknown = set(doc) - _RAW_KEYS
    if unknown:
        raise ComposeError("unknown_field", f"unknown field(s) with raw: "
                           f"{', '.join(sorted(unknown))}")
    raw = doc["raw"]
    if not isinstance(raw, str) or not raw:
        raise ComposeError("bad_field", "raw: expected the message as a non-empty string")
    if "from" not in doc or "to" not in doc:
        raise ComposeError("missing_field", "raw needs the envelope: from and to")
    _, mail_from = _mailbox(doc["from"], "from")
    rcpts = [a for _, a in _address_list(doc, "to")]
    data = _normalize(raw.encode("utf-8"))
    if not _HEADER_LINE.match(data):
        raise ComposeError("bad_message", "raw: the message must start with a header field "
                           "(RFC 5322 2.1)")
    return mail_from, rcpts, data


def _attachment(i: int, a: object) -> tuple[bytes, str, str, str]:
    if not isinstance(a, dict):
        raise ComposeError("bad_attachment", f"attachments[{i}]: expected an object")
    unknown = set(a) - _ATTACHMENT_KEYS
    if unknown:
        raise ComposeError("unknown_field", f"attachments[{i}]: unknown field(s) "
                           f"{', '.join(sorted(unknown))}")
    filename = a.get("filename")
    ctype = a.get("content_type", "application/octet-stream")
    content = a.get("content_base64")
    if not isinstance(filename, str) or not filename or "\n" in filename or "\r" in filename:
        raise ComposeError("bad_attachment", f"attachments[{i}].filename: expected a name")
    if not isinstance(ctype, str) or not _MIME_TYPE.fullmatch(ctype):
        raise ComposeError("bad_attachment", f"attachments[{i}].content_type: expected "
                           "type/subtype")
    if not isinstance(content, str):
        raise ComposeError("bad_attachment", f"attachments[{i}].content_base64: required")
    try:
        payload = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise ComposeError("bad_attachment",
                           f"attachments[{i}].content_base64: not valid base64") from None
    maintype, subtype = ctype.lower().split("/")
    return payload, maintype, subtype, filename


def _described(doc: dict[str, Any], limits: Limits,
               now: float) -> tuple[str, list[str], bytes]:
    unknown = set(doc) - _JSON_KEYS
    if unknown:
        raise ComposeError("unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "from" not in doc:
        raise ComposeError("missing_field", "from is required")
    from_header, mail_from = _mailbox(doc["from"], "from")
    to, cc, bcc = (_address_list(doc, k) for k in ("to", "cc", "bcc"))
    subject, text, html = (_string(doc, k) for k in ("subject", "text", "html"))
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict):
        raise ComposeError("bad_header", "headers: expected an object of name: value")
    attachments = doc.get("attachments") or []
    if not isinstance(attachments, list):
        raise ComposeError("bad_attachment", "attachments: expected a list")
    parts = [_attachment(i, a) for i, a in enumerate(attachments)]
    rcpts = [a for _, a in (*to, *cc, *bcc)]
    utf8 = any(not a.isascii() for a in (mail_from, *rcpts))
    msg = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
    try:
        msg["From"] = from_header
        if to:
            msg["To"] = ", ".join(h for h, _ in to)
        if cc:
            msg["Cc"] = ", ".join(h for h, _ in cc)
        msg["Subject"] = subject or ""
        lowered = {str(k).lower() for k in headers}
        if "date" not in lowered:
            msg["Date"] = email.utils.formatdate(now, localtime=False)
        if "message-id" not in lowered:
            msg["Message-ID"] = email.utils.make_msgid(domain=limits.hostname)
        for name, value in headers.items():
            if not _FIELD_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
                raise ComposeError("bad_header", f"headers: {name!r} cannot be set here")
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise ComposeError("bad_header", f"headers.{name}: expected a one-line string")
            msg[name] = value
        if html is not None and text is not None:
            msg.set_content(text)
            msg.add_alternative(html, subtype="html")
        elif html is not None:
            msg.set_content(html, subtype="html")
        else:
            msg.set_content(text or "")
        for payload, maintype, subtype, filename in parts:
            msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
        data = msg.as_bytes()
    except ComposeError:
        raise
    except (ValueError, TypeError, LookupError) as e:  # email's header and MIME errors
        raise ComposeError("bad_message", f"cannot build the message: {e}") from None
    return mail_from, rcpts, _normalize(data)


def compose(doc: object, *, limits: Limits, client_ip: str, tls: bool = False,
            now: float) -> Submission:
    """Validate a request body (already JSON-decoded) and build the submission."""
    if not isinstance(doc, dict):
        raise ComposeError("bad_request", "the body must be a JSON object")
    if "raw" in doc:
        mail_from, rcpts, data = _raw(doc, limits)
    else:
        mail_from, rcpts, data = _described(doc, limits, now)
    rcpts = _envelope(mail_from, rcpts, limits)
    data = _trace(data, client_ip=client_ip, tls=tls, recipients=rcpts, limits=limits, now=now)
    if len(data) > limits.max_message_size:
        # RFC 3463 5.3.4 "message too big for system", as SMTP answers 552 to it.
        raise ComposeError("message_too_large", f"the message is {len(data)} bytes; the "
                           f"limit is {limits.max_message_size}", status=413)
    params: dict[str, str] = {}
    if any(not a.isascii() for a in (mail_from, *rcpts)):
        params["SMTPUTF8"] = ""
    if not data.isascii():
        params["BODY"] = "8BITMIME"
    notify, orcpt = _dsn(doc, params, rcpts)
    return Submission(mail_from, rcpts, data, params, notify, orcpt)
