"""Which receivers' replies say our IP is on a blocklist: real-world reply texts."""

from __future__ import annotations

import pytest

from mta.shaping.blocklist_reply import BlocklistReply, parse, parse_reply

LISTED = [
    # Postfix reject_rbl_client with Spamhaus zones
    ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.7",
     "spamhaus-zen", "zen.spamhaus.org", "203.0.113.7"),
    ("550 5.7.1 Service unavailable; Client host [127.0.0.10] blocked using zen.spamhaus.org",
     "spamhaus-zen", "zen.spamhaus.org", "127.0.0.10"),
    ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "sbl.spamhaus.org; https://www.spamhaus.org/sbl/query/SBL512345",
     "spamhaus-sbl", "sbl.spamhaus.org", "203.0.113.7"),
    ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "xbl.spamhaus.org", "spamhaus-xbl", "xbl.spamhaus.org", "203.0.113.7"),
    ("550 5.7.1 Service unavailable; Client host [198.51.100.4] blocked using "
     "pbl.spamhaus.org; https://www.spamhaus.org/query/ip/198.51.100.4",
     "spamhaus-pbl", "pbl.spamhaus.org", "198.51.100.4"),
    ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "abcdefkey.zen.dq.spamhaus.net", "spamhaus-zen", "abcdefkey.zen.dq.spamhaus.net",
     "203.0.113.7"),
    # Exim's dnslists message
    ("550 rejected because 203.0.113.7 is in a black list at zen.spamhaus.org",
     "spamhaus-zen", "zen.spamhaus.org", "203.0.113.7"),
    ("550 5.7.1 JunkMail rejected - mail.example.net [203.0.113.7]:25 is in an RBL: "
     "https://www.spamhaus.org/sbl/query/SBL500123", "spamhaus-sbl", None, "203.0.113.7"),
    ("554 5.7.1 Your IP is listed in Spamhaus CSS, see https://www.spamhaus.org/css/",
     "spamhaus-css", None, None),
    # Yahoo / AOL: the Spamhaus list and its own codes
    ("553 5.7.1 [BL21] Connections will not be accepted from 203.0.113.7, because the ip "
     "is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes",
     "spamhaus", None, "203.0.113.7"),
    ("553 5.7.1 [BL23] Connections not accepted from IP addresses on Spamhaus XBL; see "
     "https://postmaster.yahooinc.com/error-codes", "spamhaus-xbl", None, None),
    ("421 4.7.0 [BL25] Connections will not be accepted from 203.0.113.7; see "
     "https://postmaster.yahooinc.com/error-codes", "yahoo", None, "203.0.113.7"),
    # Outlook.com / Hotmail
    ("550 5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact "
     "your Internet service provider since part of their network is on our block list "
     "(S3150). You can also refer your provider to http://mail.live.com/mail/"
     "troubleshooting.aspx#errors. [AM1PEPF000252DA.eurprd07.prod.outlook.com]",
     "microsoft", None, "203.0.113.7"),
    ("550 5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact "
     "your Internet service provider since part of their network is on our block list "
     "(S3140).", "microsoft", None, "203.0.113.7"),
    ("550 5.7.606 Access denied, banned sending IP [203.0.113.7]. To request removal from "
     "this list please visit https://sender.office.com/ and follow the directions.",
     "microsoft", None, "203.0.113.7"),
    # Gmail
    ("550-5.7.1 [203.0.113.7] The IP address sending this message is listed on a "
     "blocklist. / 550 5.7.1 https://support.google.com/mail/?p=BlockedIP gsmtp",
     "gmail", None, "203.0.113.7"),
    # Barracuda, SpamCop, UCEPROTECT, SORBS, PSBL
    ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "b.barracudacentral.org; http://www.barracudanetworks.com/reputation/?pr=1&ip=203.0.113.7",
     "barracuda", "b.barracudacentral.org", "203.0.113.7"),
    ("554 Service unavailable; Client host [203.0.113.7] blocked using Barracuda "
     "Reputation; http://www.barracudanetworks.com/reputation/?ip=203.0.113.7",
     "barracuda", None, "203.0.113.7"),
    ("550 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "bl.spamcop.net; Blocked - see https://www.spamcop.net/bl.shtml?203.0.113.7",
     "spamcop", "bl.spamcop.net", "203.0.113.7"),
    ("550 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "dnsbl-1.uceprotect.net; IP 203.0.113.7 is UCEPROTECT-Level 1 listed.",
     "uceprotect", "dnsbl-1.uceprotect.net", "203.0.113.7"),
    ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
     "dnsbl.sorbs.net; Currently Sending Spam See: http://www.sorbs.net/lookup.shtml?"
     "203.0.113.7", "sorbs", "dnsbl.sorbs.net", "203.0.113.7"),
    ("550 5.7.1 Rejected: 203.0.113.7 listed at psbl.surriel.com", "psbl",
     "psbl.surriel.com", "203.0.113.7"),
    # Other providers' IP lists
    ("550 5.7.1 Service unavailable; client [203.0.113.7] poor reputation; see "
     "https://csi.cloudmark.com/reset-request/?ip=203.0.113.7", "cloudmark", None,
     "203.0.113.7"),
    ("554 5.7.1 Blocked - see https://ipcheck.proofpoint.com/?ip=203.0.113.7",
     "proofpoint", None, "203.0.113.7"),
    ("554 resimta-po-01v.sys.comcast.net comcast 203.0.113.7 Comcast block for spam. "
     "Please see http://postmaster.comcast.net/smtp-error-codes.php#BL000000",
     "comcast", None, "203.0.113.7"),
    # A zone we do not know (our tests' zone, a private list) still names a list.
    ("554 5.7.1 Service unavailable; Client host [127.0.0.10] blocked using bl.test",
     "bl.test", "bl.test", "127.0.0.10"),
    # Generic words
    ("550 5.7.1 Your IP 203.0.113.7 is listed in RBL", "rbl", None, "203.0.113.7"),
    ("554 5.7.1 Rejected: IP listed in DNSBL", "rbl", None, None),
    ("421 4.7.1 Your address 2001:db8::25 is blacklisted", "rbl", None, "2001:db8::25"),
    ("550 Message rejected: sending host is on our blocklist", "rbl", None, None),
    ("554 5.7.0 Blocked by RBL, contact postmaster", "rbl", None, None),
]

NOT_LISTED = [
    "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual "
    "mailbox table",
    "550 5.1.1 The email account that you tried to reach does not exist. gsmtp",
    "550 5.1.1 User not listed in public Name & Address Book",
    "550 5.1.1 bob@example.net: recipient not listed",
    "552 5.2.2 Mailbox full",
    "451 4.7.1 Greylisted, please try again later",
    "450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted",
    "421 4.7.0 Try again later, closing connection. (EHLO) gsmtp",
    "550 5.7.1 Sender is on the recipient's block list",
    "550 5.7.1 Message rejected: sender blocked by recipient",
    "554 5.7.1 Message rejected because it contains a URL listed in dbl.spamhaus.org",
    "554 5.7.1 Service unavailable; Sender address [x@example.org] blocked using "
    "dbl.spamhaus.org",
    "550 5.7.1 Message contains a link listed on URIBL",
    "550 5.7.1 [203.0.113.7] Our system has detected that this message is likely "
    "unsolicited mail. gsmtp",
    "421 4.7.28 [203.0.113.7] Our system has detected an unusual rate of unsolicited mail",
    "550 5.7.1 Relaying denied",
    # Spamhaus refuses the receiver's resolver: not a listing of ours.
    "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using "
    "zen.spamhaus.org; Error: open resolver; https://www.spamhaus.org/returnc/pub/",
    "421 4.7.0 [TSS04] Messages from 203.0.113.7 temporarily deferred due to unexpected "
    "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
    "554 5.7.1 <unknown[203.0.113.7]>: Client host rejected: Access denied",
    "550 5.7.1 Client host rejected: cannot find your reverse hostname, [203.0.113.7]",
    "550 5.7.1 sender domain is listed at dbl.spamhaus.org",
    "250 2.0.0 Ok: queued as 3F2A1 (listed in zen.spamhaus.org? no)",
    "554 5.7.1 Message rejected as spam by Content Filtering",
    "",
]


@pytest.mark.parametrize(("reply", "name", "zone", "ip"), LISTED)
def test_replies_naming_a_blocklist(reply, name, zone, ip):
    assert parse_reply(reply) == BlocklistReply(name, zone, ip)


@pytest.mark.parametrize("reply", NOT_LISTED)
def test_ordinary_replies_name_no_blocklist(reply):
    assert parse_reply(reply) is None


def test_parse_takes_code_enhanced_and_text_apart():
    got = parse(550, "5.7.1", "Client host [192.0.2.1] blocked using zen.spamhaus.org")
    assert got == BlocklistReply("spamhaus-zen", "zen.spamhaus.org", "192.0.2.1")
    # Address replies only count when a list is named outright.
    assert parse(550, "5.1.1", "recipient blacklisted") is None
    assert parse(550, "5.1.1", "blocked using zen.spamhaus.org") is not None


def test_the_bounce_corpus_names_blocklists_only_in_spam_blocks():
    """The classifier's corpus of real replies: none outside spam blocks names a blocklist,
    and the blocklist ones are found (the corpus writes multi-line replies with "\\n")."""
    from tests.bounce.test_classify import CORPUS

    named = [(cat, r) for cat, _, r in CORPUS
             if parse_reply(r.replace("\n", " / ")) is not None]
    assert {cat for cat, _ in named} == {"spam_block"}
    assert any("zen.spamhaus.org" in r for _, r in named) and len(named) >= 8
