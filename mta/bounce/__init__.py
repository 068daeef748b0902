"""Bounce handling: failure-reply classification, DSN generation, inbound DSN / ARF parsing.

    classifier = Classifier.from_config(cfg)          # once, at start-up
    c = classifier.classify(reply)                    # c.category, c.action, c.rule
    data = make_dsn(envelope, [RecipientStatus.from_reply(addr, reply)], body,
                    reporting_mta=...)            # bytes, or None when no DSN is due
    report = parse_report(inbound_bytes)              # DeliveryReport | FeedbackReport | None
"""

from mta.bounce.classify import (
    Action,
    Category,
    Classification,
    Classifier,
    Rule,
    RulesError,
    classify_main,
    parse_rules,
)
from mta.bounce.dsn import (
    DsnMessage,
    RecipientStatus,
    dsn_is_8bit,
    make_dsn,
    notify_wants,
)
from mta.bounce.parse import (
    DeliveryReport,
    FeedbackReport,
    ReportedRecipient,
    parse_arf,
    parse_dsn,
    parse_report,
)

__all__ = [
    "Action",
    "Category",
    "Classification",
    "Classifier",
    "DeliveryReport",
    "DsnMessage",
    "FeedbackReport",
    "RecipientStatus",
    "ReportedRecipient",
    "Rule",
    "RulesError",
    "classify_main",
    "dsn_is_8bit",
    "make_dsn",
    "notify_wants",
    "parse_arf",
    "parse_dsn",
    "parse_report",
    "parse_rules",
]
