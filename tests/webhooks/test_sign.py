"""Our signatures are the Standard Webhooks ones: the spec's own library verifies them,
and rejects them when the body, id or timestamp changes."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from mta.webhooks.endpoints import EndpointError, check_events, check_url
from mta.webhooks.sign import headers, new_secret, new_webhook_id


def test_the_library_verifies_our_signature_and_refuses_a_changed_body():
    secret, wid, body = new_secret(), new_webhook_id(), b'{"type":"mta.events"}'
    h = headers(secret, wid, int(time.time()), body)
    assert Webhook(secret).verify(body, h) == {"type": "mta.events"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", h)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, h)
    stale = headers(secret, wid, int(time.time()) - 3600, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)


def test_ids_and_secrets_are_unique_and_well_formed():
    ids = {new_webhook_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("msg_") for i in ids)
    assert new_secret().startswith("whsec_") and new_secret() != new_secret()


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "https://localhost/", "http://10.1.2.3/",
                                 "http://[::1]:8080/", "http://169.254.169.254/latest",
                                 "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/"])
def test_a_tenant_may_not_target_a_private_address(url):
    assert check_url(url) == url  # the operator may
    with pytest.raises(EndpointError, match="private"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://x.example/", "http://", "not a url", 42,
                                 "http://x.example:99999/", "https://" + "a" * 3000])
def test_malformed_urls_are_refused_with_a_reason(url):
    with pytest.raises(EndpointError, match="url"):
        check_url(url)


def test_event_filters():
    assert check_events(None) == ("*",)
    assert check_events("delivered, bounced,delivered") == ("delivered", "bounced")
    for bad in ([], ["Delivered"], ["x y"], [1]):
        with pytest.raises(EndpointError):
            check_events(bad)
