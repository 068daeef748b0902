"""RFC 5321 values shared by ingress, delivery, policy and bounce: replies and commands."""

from mta.rfc5321.reply import Reply, ReplyParseError

__all__ = ["Reply", "ReplyParseError"]
