"""The content check at the end of DATA: `ContentFilter.check(envelope, data) -> Verdict`.

Owns how the findings add up. The rules (in their worker, mta.content.worker), then the
URL blocklist lookups of the hosts they found (mta.content.blocklist), run beside the
scanner (mta.content.scanner); then:

  - each matching rule with action reject / hold / tag asks for that action;
  - the `score` rules' scores (plus rspamd's score times [content] scanner_score) are
    added up; the total reaching reject_score / hold_score / tag_score asks for that;
  - rspamd's action asks for what [content] scanner_actions maps it to;
  - a scanner that failed asks for `tempfail` if scanner_fail = "closed", and rules that
    timed out likewise with rules_fail;
  - the most severe request wins: reject > tempfail > hold > tag > none.

`reject` is 550 5.7.1 with the first matching reject rule's public text (or [content]
reject_text), `tempfail` 451 4.7.1; `hold` and `tag` add the [content] tag_header naming the
rules and the score, and `hold` stores the message held with the reason. Each check that
found anything is one `content` event (rule names, score, action, scanner). Ingress calls
this before DKIM signing, so the tag header is signed like the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from mta.config.content import ContentConfig, ContentRuleConfig
from mta.content.blocklist import Listing, Lookup, check_hosts
from mta.content.rules import Scan
from mta.content.scanner import RspamdClient, ScannerError, ScannerVerdict
from mta.content.worker import RuleRunner
from mta.observe.events import EventLog
from mta.queue.envelope import Envelope
from mta.rfc5321.reply import Reply

__all__ = ["ContentFilter", "Verdict"]

log = logging.getLogger("mta.content")

_SEVERITY = {"none": 0, "tag": 1, "hold": 2, "tempfail": 3, "reject": 4}
R_UNAVAILABLE = Reply(451, "4.7.1", "Content check unavailable, try again later")


@dataclass(slots=True)
class Verdict:
    action: str = "none"  # none | tag | hold | tempfail | reject
    rules: list[str] = field(default_factory=list)  # matching rules, config order
    score: float = 0.0
    reply: Reply | None = None  # reject / tempfail: what the client is told
    reason: str = ""  # why: the hold reason, the refusal, the failure
    header: bytes = b""  # tag / hold: the header line prepended to the message
    scanner: dict[str, Any] | None = None  # rspamd's verdict, or {"error": ...}
    listings: list[Listing] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.action == "hold"

    @property
    def hold_reply(self) -> Reply | None:
        """Held: the reason, as the recipients' last reply (`mta queue show` prints it)."""
        if self.action != "hold":
            return None
        return Reply(250, "2.7.0", f"Held by content policy: {self.reason}"[:400])

    def apply(self, data: bytes) -> bytes:
        return self.header + data if self.header else data

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "rules": self.rules, "score": self.score,
                "reply": str(self.reply) if self.reply is not None else None,
                "reason": self.reason,
                "header": self.header.decode("ascii").rstrip("\r\n") or None,
                "scanner": self.scanner,
                "listings": [{"host": h, "zone": z, "code": c} for h, z, c in self.listings]}


def _worse(a: str, b: str) -> str:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


class ContentFilter:
    def __init__(self, cfg: ContentConfig, *, resolver: Lookup | None = None,
                 events: EventLog | None = None, hostname: str = "") -> None:
        self.resolver = resolver
        self.events = events
        self.hostname = hostname
        self.file_cfg = cfg  # [content] as the config file says
        self.runtime_rules: list[ContentRuleConfig] = []  # added at run time (runtime.py)
        self.cfg = cfg  # the file's, with the run-time rules after its own
        self.runner = RuleRunner(cfg)
        self.runtime: Any = None  # its RuntimeRules (mta.content.runtime), set by the daemon
        self.scanner: RspamdClient | None = None
        self._set_scanner(cfg)

    @property
    def active(self) -> bool:
        """Whether there is anything to check (no rules, no scanner: the check is free)."""
        return bool(self.runner.rules) or self.scanner is not None

    def _set_scanner(self, cfg: ContentConfig) -> None:
        old = self.scanner
        if old is not None and old.url == cfg.scanner_url.rstrip("/") + "/checkv2" \
                and old.timeout == cfg.scanner_timeout:
            return
        self.scanner = RspamdClient(cfg.scanner_url, cfg.scanner_timeout) \
            if cfg.scanner_url else None
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.aclose())
            task.add_done_callback(lambda t: t.exception())

    @property
    def config_rules(self) -> list[ContentRuleConfig]:
        return self.file_cfg.rules

    def _merged(self) -> ContentConfig:
        """The file's rules, then the run-time ones whose names the file does not use."""
        taken = {r.name for r in self.file_cfg.rules}
        extra = [r for r in self.runtime_rules if r.name not in taken]
        if not extra:
            return self.file_cfg
        return dataclasses.replace(self.file_cfg, rules=[*self.file_cfg.rules, *extra])

    def reload(self, cfg: ContentConfig) -> None:
        """SIGHUP: the new rules (new workers) and scanner settings; checks in flight
        finish with the old ones."""
        self.file_cfg = cfg
        self._swap()
        self._set_scanner(cfg)

    def set_runtime_rules(self, rules: list[ContentRuleConfig]) -> None:
        """The run-time rules changed (this node's admin API, or another node's)."""
        self.runtime_rules = list(rules)
        self._swap()

    def _swap(self) -> None:
        self.cfg = self._merged()
        self.runner.reload(self.cfg)
        self.runner.warm()

    def warm(self) -> None:
        self.runner.warm()

    async def aclose(self) -> None:
        await self.runner.aclose()
        if self.scanner is not None:
            await self.scanner.aclose()

    def describe(self) -> dict[str, Any]:
        """The rules and settings in force (the admin API's GET)."""
        c = self.cfg
        file_names = {r.name for r in self.file_cfg.rules}
        return {
            "rules": [{"name": r.name, "kind": r.kind, "action": r.action, "score": r.score,
                       "text": r.text, "source": "config" if r.name in file_names
                       else "runtime", **({"zone": r.zone} if r.zone else {})}
                      for r in self.runner.rules.rules],
            "thresholds": {"reject_score": c.reject_score, "hold_score": c.hold_score,
                           "tag_score": c.tag_score},
            "tag_header": c.tag_header, "workers": c.workers, "rules_fail": c.rules_fail,
            "scanner": {"url": c.scanner_url, "timeout": c.scanner_timeout,
                        "fail": c.scanner_fail, "score_weight": c.scanner_score}
            if c.scanner_url else None}

    # --- the check -------------------------------------------------------------------

    async def check(self, envelope: Envelope, data: bytes, *, msg_id: str = "",
                    origin: str = "smtp", emit: bool = True) -> Verdict:
        if not self.active:
            return Verdict()
        cfg, runner, scanner = self.cfg, self.runner, self.scanner
        rules_part = self._rules_and_urls(data)
        if scanner is not None:
            scan_part = self._scanner(scanner, envelope, data, msg_id)
            (scan, listings), sv = await asyncio.gather(rules_part, scan_part)
        else:
            (scan, listings), sv = await rules_part, None
        v = Verdict(listings=listings)
        requests: list[tuple[str, str]] = []  # (action, reason)
        if scan is None:
            v.reason = "content rules did not finish"
            if cfg.rules_fail == "closed":
                requests.append(("tempfail", v.reason))
            scan = Scan((), ())
        listed_zones = {z for _, z, _ in listings}
        hit = set(scan.hits)
        rules = runner.rules.rules
        # Most mail matches nothing: no walk over every rule for it.
        matched = [r for r in rules if r.name in hit or (r.zone and r.zone in listed_zones)
                   ] if hit or listed_zones else []
        v.rules = [r.name for r in matched]
        score = sum(r.score for r in matched if r.action == "score")
        for r in matched:
            if r.action != "score":
                requests.append((r.action, r.text))
        if isinstance(sv, ScannerVerdict):
            v.scanner = sv.as_dict()
            score += sv.score * cfg.scanner_score
            mapped = cfg.scanner_action(sv.action)
            if mapped != "none":
                requests.append((mapped, f"scanner: {sv.action}"))
        elif isinstance(sv, ScannerError):
            v.scanner = {"error": str(sv)}
            if cfg.scanner_fail == "closed":
                requests.append(("tempfail", f"scanner unavailable: {sv}"))
        v.score = round(score, 3)
        for threshold, action in ((cfg.reject_score, "reject"), (cfg.hold_score, "hold"),
                                  (cfg.tag_score, "tag")):
            if threshold > 0 and score >= threshold:
                requests.append((action, f"score {v.score:g}"))
                break
        for action, _ in requests:
            v.action = _worse(v.action, action)
        reasons = [why for action, why in requests if action == v.action]
        if v.action == "reject":
            # The first reject rule's public text; a refusal by score or by the scanner
            # says only the generic text.
            text = next((r.text for r in matched if r.action == "reject"), cfg.reject_text)
            v.reply = Reply(550, "5.7.1", text)
            v.reason = reasons[0]
        elif v.action == "tempfail":
            v.reply = R_UNAVAILABLE
            v.reason = reasons[0]
        elif v.action in ("hold", "tag"):
            names = v.rules + (["rspamd"] if isinstance(sv, ScannerVerdict)
                               and cfg.scanner_action(sv.action) != "none" else [])
            value = f"{', '.join(names) or 'score'}; score={v.score:g}"
            v.header = f"{cfg.tag_header}: {value}\r\n".encode("ascii", "replace")
            v.reason = "; ".join(dict.fromkeys(reasons))
        if emit and self.events is not None and (v.action != "none" or v.rules
                                                 or (v.scanner and "error" in v.scanner)):
            self.events.emit("content", id=msg_id or None, tenant=envelope.tenant,
                             action=v.action, rules=v.rules, score=v.score,
                             reason=v.reason or None,
                             scanner=(v.scanner or {}).get("action")
                             or ("unavailable" if v.scanner else None),
                             protocol=origin)
        return v

    async def _rules_and_urls(self, data: bytes) -> tuple[Scan | None, list[Listing]]:
        scan = await self.runner.scan(data)
        zones = self.runner.rules.zones
        if scan is None or not scan.hosts or not zones or self.resolver is None:
            return scan, []
        return scan, await check_hosts(self.resolver, scan.hosts, zones)

    async def _scanner(self, scanner: RspamdClient, envelope: Envelope, data: bytes,
                       msg_id: str) -> ScannerVerdict | ScannerError:
        try:
            return await scanner.check(
                data, client_ip=envelope.client_ip, helo=envelope.helo,
                mail_from=envelope.mail_from,
                recipients=[r.address for r in envelope.recipients], queue_id=msg_id,
                user=envelope.auth_user, mta_name=self.hostname)
        except ScannerError as e:
            log.warning("content scanner: %s", e)
            return e
