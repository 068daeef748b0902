"""TLS-RPT (RFC 8460), the pure parts: the `_smtp._tls` record (section 3), result types
(4.3), the report (4.4), its file name (5.1), gzip (5.2) and its e-mail form (5.3)."""

from __future__ import annotations

import datetime as dt
import email
import gzip
import json
import re
from email.policy import default

import pytest

from mta.tls.report import (
    FailureDetail,
    PolicyCounts,
    ReportPolicy,
    TlsRptRecord,
    TlsRptSyntaxError,
    build_report,
    day_bounds,
    encode,
    parse_record,
    reason_text,
    report_filename,
    result_type,
    select_record,
    sts_fetch_result_type,
)
from mta.tls.report_mail import report_message
from tests.support.tlsrpt import check_report

DAY = dt.date(2026, 12, 7)


# --- section 3: the TXT record ----------------------------------------------------------

@pytest.mark.parametrize(("text", "rua"), [
    # The RFC's own examples (3.1).
    ("v=TLSRPTv1;rua=mailto:reports@example.com", ("mailto:reports@example.com",)),
    ("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
     ("https://reporting.example.com/v1/tlsrpt",)),
    ("v=TLSRPTv1; rua=mailto:a@example.com , https://r.example.com/x;",
     ("mailto:a@example.com", "https://r.example.com/x")),
    ("v=TLSRPTv1 ;\trua=mailto:a@example.com;ext-1.x=value:1", ("mailto:a@example.com",)),
    # An unknown scheme is skipped, the rest kept.
    ("v=TLSRPTv1; rua=ftp://x.example.com/r,mailto:a@example.com", ("mailto:a@example.com",)),
])
def test_section_3_valid_records(text, rua):
    assert parse_record(text) == TlsRptRecord(rua)


@pytest.mark.parametrize("text", [
    "", "v=TLSRPTv1", "v=TLSRPTv1;", "v=TLSRPTv2; rua=mailto:a@example.com",
    "v=tlsrptv1; rua=mailto:a@example.com",  # %s"v=TLSRPTv1": case-sensitive
    " v=TLSRPTv1; rua=mailto:a@example.com",
    "v=TLSRPTv1; rua=",
    "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com",
    "v=TLSRPTv1; rua=reports@example.com",  # not a URI
    "v=TLSRPTv1; rua=mailto:a@example.com; bad ext=1",
    "v=TLSRPTv1; rua=mailto:a@example.com; x=a=b",
    "v=TLSRPTv1; rua=mailto:a@example.com;; ",
    "v=TLSRPTv1; rua=ftp://x.example.com/r",  # no usable URI left
    "v=TLSRPTv1; rua=mailto:not-an-address",
    "v=TLSRPTv1; rua=https:///no-host",
])
def test_section_3_invalid_records(text):
    with pytest.raises(TlsRptSyntaxError):
        parse_record(text)


def test_section_3_record_selection():
    good = "v=TLSRPTv1; rua=mailto:a@example.com"
    assert select_record(["v=spf1 -all", good]) == parse_record(good)
    # Two TLSRPT records: the domain takes no reports.
    assert select_record([good, "v=TLSRPTv1; rua=mailto:b@example.com"]) is None
    assert select_record(["v=TLSRPTv1x; rua=mailto:a@example.com"]) is None
    assert select_record(["v=TLSRPTv1; rua=nothing"]) is None
    assert select_record([]) is None


def test_mailto_addresses_are_decoded():
    r = parse_record("v=TLSRPTv1; rua=mailto:tls%2Brpt@example.com?subject=x,"
                     "https://r.example.com/")
    assert r.mailto == ("tls+rpt@example.com",)
    assert r.https == ("https://r.example.com/",)


# --- section 4.3: result types -------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind"), [
    ("TLS required but mx.a.test does not offer STARTTLS", "starttls-not-supported"),
    ("TLS required but STARTTLS refused: 454 4.7.0 not now", "starttls-not-supported"),
    ("MTA-STS policy of a.test (enforce): TLS handshake with mx.a.test[127.0.0.3] failed: "
     "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
     "certificate is not valid for 'mx.a.test'. (_ssl.c:1010)", "certificate-host-mismatch"),
    ("TLS handshake with mx[1.2.3.4] failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
     "verify failed: certificate has expired (_ssl.c:1010)", "certificate-expired"),
    ("TLS handshake with mx[1.2.3.4] failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
     "verify failed: self-signed certificate (_ssl.c:1010)", "certificate-not-trusted"),
    ("certificate verify failed: unable to get local issuer certificate",
     "certificate-not-trusted"),
    ("MX host mx.elsewhere.test does not match the policy (mx: mx.a.test)",
     "validation-failure"),
    ("TLS handshake: connection closed", "validation-failure"),
])
def test_section_4_3_result_types(text, kind):
    assert result_type(text) == kind


@pytest.mark.parametrize(("detail", "kind"), [
    ("https://mta-sts.a.test/.well-known/mta-sts.txt: HTTP 404", "sts-policy-fetch-error"),
    ("https://mta-sts.a.test/.well-known/mta-sts.txt: no answer within 20s",
     "sts-policy-fetch-error"),
    ("https://mta-sts.a.test/.well-known/mta-sts.txt: certificate: Hostname mismatch",
     "sts-webpki-invalid"),
    ("policy without any mx", "sts-policy-invalid"),
])
def test_section_4_3_policy_fetch_result_types(detail, kind):
    assert sts_fetch_result_type(detail) == kind


def test_failure_reason_is_short_and_without_our_prefix():
    text = reason_text("MTA-STS policy of a.test (enforce): TLS handshake failed: x "
                       "(_ssl.c:1010)" + " y" * 500)
    assert text.startswith("TLS handshake failed: x") and "_ssl.c" not in text
    assert len(text) <= 256


# --- section 4.4: the report ----------------------------------------------------------------

STS = ReportPolicy("sts", "a.test", ("version: STSv1", "mode: enforce", "mx: mx.a.test",
                                     "max_age: 86400"), ("mx.a.test",))


def test_section_4_4_report_fields_and_counts():
    bad = FailureDetail("certificate-host-mismatch", sending_mta_ip="127.0.0.1",
                        receiving_mx_hostname="mx.a.test", receiving_ip="127.0.0.3",
                        failure_reason_code="Hostname mismatch")
    fetch = FailureDetail("sts-policy-fetch-error", failure_reason_code="HTTP 404")
    report = build_report(
        organization="Example Platform", contact="mailto:tlsrpt@mta.test",
        report_id="2026-12-07.x.a.test@mta.test", day=DAY,
        policies=[PolicyCounts(STS, 5, {bad: 2, fetch: 1}),
                  PolicyCounts(ReportPolicy("no-policy-found", "a.test"), 3)])
    check_report(report, domain="a.test", day=DAY)
    assert report["date-range"] == {"start-datetime": "2026-12-07T00:00:00Z",
                                    "end-datetime": "2026-12-07T23:59:59Z"}
    no_policy, sts = report["policies"]
    assert no_policy == {"policy": {"policy-type": "no-policy-found",
                                    "policy-domain": "a.test"},
                         "summary": {"total-successful-session-count": 3,
                                     "total-failure-session-count": 0}}
    assert sts["policy"] == {"policy-type": "sts", "policy-string": list(STS.strings),
                             "policy-domain": "a.test", "mx-host": ["mx.a.test"]}
    assert sts["summary"] == {"total-successful-session-count": 5,
                              "total-failure-session-count": 3}
    assert {d["result-type"]: d["failed-session-count"] for d in sts["failure-details"]} \
        == {"certificate-host-mismatch": 2, "sts-policy-fetch-error": 1}
    [host] = [d for d in sts["failure-details"] if "receiving-ip" in d]
    assert host == {"result-type": "certificate-host-mismatch",
                    "sending-mta-ip": "127.0.0.1", "receiving-mx-hostname": "mx.a.test",
                    "receiving-ip": "127.0.0.3", "failure-reason-code": "Hostname mismatch",
                    "failed-session-count": 2}


def test_section_5_1_filename_and_5_2_gzip():
    name = report_filename("mta.test", "a.test", DAY, "0a1b")
    start, end = day_bounds(DAY)
    assert name == f"mta.test!a.test!{start}!{end}!0a1b.json.gz"
    assert re.fullmatch(r"[a-z0-9.-]+![a-z0-9.-]+!\d+!\d+(![A-Za-z0-9]+)?\.json\.gz", name)
    assert start == 1796601600 and end - start == 86399
    with pytest.raises(ValueError):
        report_filename("mta.test", "a.test", DAY, "not-alnum")
    report = build_report(organization="o", contact="c", report_id="r", day=DAY,
                          policies=[PolicyCounts(STS, 1)])
    data = encode(report)
    assert data[:2] == b"\x1f\x8b" and json.loads(gzip.decompress(data)) == report
    assert encode(report) == data  # no timestamp in the gzip header


def test_section_5_3_mail_form():
    data = encode(build_report(organization="o", contact="c", report_id="r", day=DAY,
                               policies=[PolicyCounts(STS, 1)]))
    raw = report_message(sender="tlsrpt@mta.test", to="rua@a.test", domain="a.test",
                         submitter="mta.test", report_id="2026-12-07.ab.a.test@mta.test",
                         filename="mta.test!a.test!1!2!ab.json.gz", data=data, day=DAY,
                         now=1796700000.0)
    assert b"\r\n" in raw and not re.search(rb"[^\r]\n", raw)  # CRLF only
    msg = email.message_from_bytes(raw, policy=default)
    assert msg["TLS-Report-Domain"] == "a.test"
    assert msg["TLS-Report-Submitter"] == "mta.test"
    assert msg["Subject"] == ("Report Domain: a.test Submitter: mta.test "
                              "Report-ID: <2026-12-07.ab.a.test@mta.test>")
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/tlsrpt+gzip"]
    assert parts[1].get_filename() == "mta.test!a.test!1!2!ab.json.gz"
    assert parts[1].get_content() == data


def test_config_errors_name_each_key():
    from mta.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as e:
        parse_config('[tls.reports]\nenabled = true\nreport_from = "nobody"\n'
                     'submitter = "Example.COM"\nhttp_attempts = 0\nflush_interval = "0s"\n'
                     'send_after = "2d"\ncolour = "blue"\n')
    keys = sorted(line.split(": ")[1] for line in e.value.errors)
    assert keys == ["tls.reports.colour", "tls.reports.contact", "tls.reports.flush_interval",
                    "tls.reports.http_attempts", "tls.reports.organization",
                    "tls.reports.report_from", "tls.reports.send_after",
                    "tls.reports.submitter"], e.value.errors
    cfg = parse_config('[tls.reports]\nenabled = true\norganization = "o"\n'
                       'contact = "mailto:p@mta.test"\nreport_from = "tlsrpt@Mail.Example"\n')
    assert cfg.tls.reports.domain() == "mail.example"
    assert parse_config("").tls.reports.enabled is False
