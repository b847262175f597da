"""No credential from a URL in any log: `redact_url` masks the whole userinfo and the values
of credential-like query and fragment parameters, keeps the rest, and never raises; the
audit trail uses it for every URL in a request body."""

from __future__ import annotations

import pytest

from netweave.redaction import redact_text, redact_url
from server.auth.audit import redact


@pytest.mark.parametrize(
    ("url", "expected", "secrets"),
    [
        (
            "https://user:hunter2@smo.example:8443/notify",
            "https://[redacted]@smo.example:8443/notify",
            ["user", "hunter2"],
        ),
        ("http://:hunter2@smo.example/n", "http://[redacted]@smo.example/n", ["hunter2"]),
        ("http://tok3n@smo.example/n", "http://[redacted]@smo.example/n", ["tok3n"]),
        (
            "https://u:p%40ss@[2001:db8::1]:8443/n",
            "https://[redacted]@[2001:db8::1]:8443/n",
            ["p%40ss"],
        ),
        (
            "https://smo.example/n?token=t1&access_token=t2&api_key=t3&apikey=t4&key=t5&x=1",
            "https://smo.example/n?token=[redacted]&access_token=[redacted]"
            "&api_key=[redacted]&apikey=[redacted]&key=[redacted]&x=1",
            ["t1", "t2", "t3", "t4", "t5"],
        ),
        (
            "https://smo.example/n?secret=a1&password=a2&sig=a3&signature=a4"
            "&client_secret=a5&code=a6&myAuthToken=a7&db_password=a8&keep=yes",
            "https://smo.example/n?secret=[redacted]&password=[redacted]&sig=[redacted]"
            "&signature=[redacted]&client_secret=[redacted]&code=[redacted]"
            "&myAuthToken=[redacted]&db_password=[redacted]&keep=yes",
            ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"],
        ),
        (
            "https://smo.example/n?X-Amz-Signature=b1&access%5Ftoken=b2#access_token=b3&state=ok",
            "https://smo.example/n?X-Amz-Signature=[redacted]&access%5Ftoken=[redacted]"
            "#access_token=[redacted]&state=ok",
            ["b1", "b2", "b3"],
        ),
        (
            "https://a:b@smo.example/n?x=1#section-2",
            "https://[redacted]@smo.example/n?x=1#section-2",
            ["a:b"],
        ),
        # Nothing to hide: unchanged, to the character.
        (
            "http://127.0.0.1:9999/notify?filter=(eq,name,x)&page=2#top",
            "http://127.0.0.1:9999/notify?filter=(eq,name,x)&page=2#top",
            [],
        ),
        ("https://smo.example/users/@me", "https://smo.example/users/@me", []),
    ],
)
def test_redact_url_masks_credentials_and_keeps_the_rest(
    url: str, expected: str, secrets: list[str]
) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    for secret in secrets:
        assert secret not in redacted


@pytest.mark.parametrize(
    ("url", "survives"),
    [
        # Unbalanced bracket: urlsplit raises ValueError.
        ("http://user:pw@[::1/notify?token=abc", "/notify?token=[redacted]"),
        # An unencoded "?" or "/" in the password: the port does not parse.
        ("https://user:p?ss@smo.example/n", "smo.example/n"),
        ("https://user:pa/ss@smo.example/n", "smo.example/n"),
        ("https://user:pw@smo.example:99999/n", "smo.example:99999/n"),
    ],
)
def test_malformed_urls_never_raise_and_mask_up_to_the_at(url: str, survives: str) -> None:
    redacted = redact_url(url)
    assert redacted.startswith(url.partition("://")[0] + "://[redacted]@")
    assert redacted.endswith(survives)
    for secret in ("pw", "p?ss", "pa/ss", "abc"):
        assert secret not in redacted


def test_urls_inside_text_are_redacted() -> None:
    text = "has an invalid port, got 'http://u:pw@smo:x/n?token=abc' (see http://docs/x)"
    assert redact_text(text) == (
        "has an invalid port, got 'http://[redacted]@smo:x/n?token=[redacted]' (see http://docs/x)"
    )
    assert redact_text("no url here, token=abc") == "no url here, token=abc"


def test_audit_bodies_keep_no_url_credential() -> None:
    body = {
        "callback": "https://user:hunter2@smo.example/n?access_token=t0k3n",
        "consumerSubscriptionId": "token=not-a-url",
        "nested": [{"clientSecret": "s", "accessToken": "t", "name": "ok"}],
    }
    assert redact(body) == {
        "callback": "https://[redacted]@smo.example/n?access_token=[redacted]",
        "consumerSubscriptionId": "token=not-a-url",
        "nested": [{"clientSecret": "[redacted]", "accessToken": "[redacted]", "name": "ok"}],
    }
