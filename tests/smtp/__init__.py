"""Tests of SMTP ingress (mta/smtp, mta/rfc5321/command.py)."""
