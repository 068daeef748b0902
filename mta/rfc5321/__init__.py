"""RFC 5321 values shared by ingress, delivery, policy and bounce: replies and commands."""

from mta.rfc5321.command import (
    Command,
    CommandError,
    Verb,
    parse_command,
    parse_path,
    xtext_decode,
    xtext_encode,
)
from mta.rfc5321.reply import Reply, ReplyParseError

__all__ = [
    "Command",
    "CommandError",
    "Reply",
    "ReplyParseError",
    "Verb",
    "parse_command",
    "parse_path",
    "xtext_decode",
    "xtext_encode",
]
