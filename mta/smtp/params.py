"""ESMTP parameters of MAIL FROM and RCPT TO: which are accepted, and how each is checked
and decoded before it travels with the message: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
(RFC 6531), RET, ENVID, NOTIFY and ORCPT (RFC 3461), AUTH= (RFC 4954). Anything else is
refused with 555 (RFC 5321 4.1.1.11). The session (session.py) calls these per parameter.
"""

from __future__ import annotations

from mta.rfc5321.command import xtext_decode
from mta.rfc5321.reply import Reply

__all__ = ["R_TOO_BIG", "mail_param", "rcpt_param"]

R_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")

# RFC 3461 4.4: ENVID is at most 100 characters; 4.2: ORCPT at most 500.
_MAX_ENVID = 100
_MAX_ORCPT = 500
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def mail_param(key: str, value: str, out: dict[str, str], max_message_size: int
               ) -> Reply | None:
    """Accept one MAIL parameter into `out`, or return the reply refusing it."""
    if key == "SIZE":  # RFC 1870
        if not value.isdigit() or len(value) > 20:
            return Reply(501, "5.5.4", "Error: bad SIZE= value")
        if int(value) > max_message_size:
            return R_TOO_BIG
    elif key == "BODY":  # RFC 6152
        body = value.upper()
        if body not in ("7BIT", "8BITMIME"):
            return Reply(501, "5.5.4", "Error: BODY= must be 7BIT or 8BITMIME")
        out["BODY"] = body
    elif key == "SMTPUTF8":  # RFC 6531 3.4
        if value:
            return Reply(501, "5.5.4", "Error: SMTPUTF8 takes no value")
        out["SMTPUTF8"] = ""
    elif key == "RET":  # RFC 3461 4.3
        ret = value.upper()
        if ret not in ("FULL", "HDRS"):
            return Reply(501, "5.5.4", "Error: RET= must be FULL or HDRS")
        out["RET"] = ret
    elif key == "ENVID":  # RFC 3461 4.4
        try:
            xtext_decode(value)
        except ValueError:
            return Reply(501, "5.5.4", "Error: ENVID= is not valid xtext")
        if not value or len(value) > _MAX_ENVID:
            return Reply(501, "5.5.4", "Error: bad ENVID= length")
        # Kept as xtext, as received: the next hop is sent it as is (delivery/wire.py) and
        # the DSN decodes it once (bounce/dsn.py). Decoding here decoded it twice there.
        out["ENVID"] = value
    elif key == "AUTH":  # RFC 4954 5: accepted and ignored (we do not trust it)
        try:
            xtext_decode(value)
        except ValueError:
            return Reply(501, "5.5.4", "Error: AUTH= is not valid xtext")
    else:
        return Reply(555, "5.5.4", f"Error: unsupported parameter {key}")
    return None


def rcpt_param(key: str, value: str, out: dict[str, str]) -> Reply | None:
    """Accept one RCPT parameter into `out`, or return the reply refusing it."""
    if key == "NOTIFY":  # RFC 3461 4.1
        words = value.upper().split(",")
        if words != ["NEVER"] and not (set(words) <= _NOTIFY_VALUES
                                       and len(set(words)) == len(words)):
            return Reply(501, "5.5.4", "Error: bad NOTIFY= value")
        out["NOTIFY"] = ",".join(words)
    elif key == "ORCPT":  # RFC 3461 4.2: addr-type ";" xtext
        addr_type, sep, encoded = value.partition(";")
        try:
            xtext_decode(encoded)
        except ValueError:
            return Reply(501, "5.5.4", "Error: ORCPT= is not valid xtext")
        if not sep or not addr_type or not encoded or len(value) > _MAX_ORCPT:
            return Reply(501, "5.5.4", "Error: bad ORCPT= value")
        out["ORCPT"] = f"{addr_type};{encoded}"  # xtext, as received (see ENVID)
    else:
        return Reply(555, "5.5.4", f"Error: unsupported parameter {key}")
    return None
