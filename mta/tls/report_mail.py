"""The e-mail form of a TLS report (RFC 8460 5.3): pure, bytes out.

A multipart/report; report-type="tlsrpt" message from the configured address, with the
RFC's TLS-Report-Domain and TLS-Report-Submitter headers and its Subject, a short
text/plain part for people, and the gzip JSON as an application/tlsrpt+gzip attachment
named per RFC 8460 5.1. `TLS-Required: No` (RFC 8689) asks receivers down the line not to
refuse the report over the very TLS problem it reports (RFC 8460 5.3).
"""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from mta.tls.report import MEDIA_TYPE_GZIP

__all__ = ["report_message"]


def report_message(*, sender: str, to: str, domain: str, submitter: str, report_id: str,
                   filename: str, data: bytes, day: dt.date, now: float) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = to
    # RFC 8460 5.3: "Report Domain: <domain> Submitter: <submitter> Report-ID: <id>"
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    msg["Date"] = format_datetime(dt.datetime.fromtimestamp(now, dt.UTC))
    msg["Message-ID"] = f"<{report_id}>"
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no autoreplies to it
    msg["TLS-Required"] = "No"
    msg.set_content(
        f"This is an aggregate TLS report (RFC 8460) from {submitter} for {domain}, "
        f"covering {day.isoformat()} (UTC).\n")
    maintype, subtype = MEDIA_TYPE_GZIP.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    # add_attachment made it multipart/mixed; RFC 8460 5.3 wants multipart/report.
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()
