"""Two real `mta serve` nodes on one real Redis: a suppression added on one node refuses the
recipient on the other as soon as that node has read the additions log, and an import on
one is listed on the other."""

from __future__ import annotations

import time
import urllib.parse

import redis

from tests.integration.test_policy_smtp import _session
from tests.integration.test_suppression_smtp import _api, _suppress, _toml


def _follows(node, rcpt: str, seconds: float = 3.0) -> None:
    """Until `node` refuses `rcpt`: each node reads the others' adds from the additions
    log as they are made (milliseconds), not in the writer's transaction."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with _session(node.smtp_port, "sub") as s:
            s.mail("x@sub.test")
            if s.rcpt(rcpt)[0] == 550:
                return
        time.sleep(0.01)


def test_an_entry_added_on_one_node_applies_at_once_on_the_other(mta_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/13"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    toml = _toml(f'\n[cluster]\nredis_url = "{url}"\n')
    a, b = mta_factory(toml), mta_factory(toml)
    with _session(b.smtp_port, "sub") as s:
        s.mail("x@sub.test")
        assert s.rcpt("gone@dest.test")[0] != 550
    _suppress(a, "gone@dest.test", "shop", "complaint")
    _suppress(a, "@blocked.test", "global")
    _follows(b, "any@blocked.test")
    with _session(b.smtp_port, "sub") as s:  # sub-account of shop, on the other node
        s.mail("x@sub.test")
        code, text = s.rcpt("gone@dest.test")
        assert code == 550 and b'list "shop", reason complaint' in text
        code, text = s.rcpt("any@blocked.test")
        assert code == 550 and b'list "global"' in text
    status, out = _api(a, "POST", "/api/v1/suppressions/import?scope=other",
                       raw="".join(f"r{i}@dest.test\n" for i in range(5000)).encode(),
                       ctype="text/csv")
    assert status == 200 and out["imported"] == 5000
    _, again = _api(a, "POST", "/api/v1/suppressions/import?scope=other",
                    raw=b"r1@dest.test\n", ctype="text/csv")
    assert again["imported"] == 1
    seen, cursor = [], ""
    while True:
        _, page = _api(b, "GET", f"/api/v1/suppressions?scope=other&limit=1000&cursor={cursor}")
        seen += [e["address"] for e in page["entries"]]
        if not page["next"]:
            break
        cursor = urllib.parse.quote(page["next"])
    assert sorted(seen) == sorted(f"r{i}@dest.test" for i in range(5000))
    assert _api(b, "DELETE", "/api/v1/suppressions/shop/gone@dest.test")[0] == 200
    with _session(a.smtp_port, "other") as s:
        s.mail("x@other.test")
        assert s.rcpt("r42@dest.test")[0] == 550
        assert s.rcpt("gone@dest.test")[0] == 250  # removed on b, gone on a
