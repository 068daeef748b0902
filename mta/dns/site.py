"""The MX rollup: the name of the *site* a domain's mail goes to.

Domains hosted by the same provider publish the same MX host set, so they share one site:
one ready queue, one connection pool and one shaping state per (source, site), as the
receiver sees us. The name is a pure function of the set of MX host names (preference and
order do not matter), written compactly by factoring out the labels every host shares:

    ["mx.a.example"]                                   -> "mx.a.example"
    ["mx1.example.net", "mx2.example.net"]             -> "(mx1|mx2).example.net"
    ["aspmx.l.google.com", "alt1.aspmx.l.google.com",
     "alt2.aspmx.l.google.com"]                        -> "(alt1|alt2)?.aspmx.l.google.com"
    ["mx.a.example", "mx.b.test"]                      -> "(mx.a.example|mx.b.test)"

Read it as a regular expression over the host names: `?` marks that the shared suffix is
itself one of the hosts. Names are lower-cased and lose their trailing dot first, so the
same set always gives the same string. For a domain without MX records (implicit MX) the
host set is the domain itself, so the site is the domain's name.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["site_name"]


def site_name(mx_hosts: Iterable[str]) -> str:
    """The site of an MX host set; "" for an empty set (nowhere to deliver)."""
    names = sorted({h.strip().rstrip(".").lower() for h in mx_hosts} - {""})
    if len(names) <= 1:
        return names[0] if names else ""
    labels = [n.split(".") for n in names]
    shared = 0  # labels every name ends with
    shortest = min(len(ls) for ls in labels)
    while shared < shortest and len({ls[-1 - shared] for ls in labels}) == 1:
        shared += 1
    if shared == 0:
        return "(" + "|".join(names) + ")"
    suffix = ".".join(labels[0][-shared:])
    prefixes = sorted(".".join(ls[:-shared]) for ls in labels)
    optional = prefixes[0] == ""  # the suffix itself is one of the hosts
    group = "(" + "|".join(p for p in prefixes if p) + ")"
    return f"{group}{'?' if optional else ''}.{suffix}"
