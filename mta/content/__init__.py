"""Content rules and the optional scanner, checked at the end of DATA (before DKIM).

    filter = ContentFilter(cfg.content, resolver=resolver, events=events)
    verdict = await filter.check(envelope, data, msg_id=id)
    verdict.action: none | tag | hold | tempfail | reject; verdict.reply (reject/tempfail),
    verdict.apply(data) (the tag header), verdict.reason (the hold reason)

message.py  what the rules look at (headers, text parts, attachments, URL hosts)
rules.py    the compiled [[content.rules]]: one scan of a message -> matching rule names
worker.py   where the rules run: worker processes (or a thread), with a timeout
blocklist.py URL hosts against DNS URI blocklists (RFC 5782), through the resolver cache
scanner.py  rspamd over HTTP (/checkv2)
filter.py   how findings add up to one action, and the `content` event
"""

from mta.content.filter import ContentFilter, Verdict

__all__ = ["ContentFilter", "Verdict"]
