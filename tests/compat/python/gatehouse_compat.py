"""Shared helpers for the Gatehouse Python compatibility suite.

Everything here talks to the server under test over plain HTTP (client REST
calls) or decodes tokens locally. Admin calls go through the real
firebase-admin SDK (see conftest.py).
"""

import os
import secrets
import sys
import time
import urllib.parse

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gatehouse_common import (  # noqa: E402,F401
    b64url_decode, b64url_encode, error_object, json_segment, jwt_header, jwt_parts, jwt_payload,
)

HTTP_TIMEOUT = 30  # seconds, for every raw request

REQUIRED_ENV = (
    "GATEHOUSE_URL",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "GATEHOUSE_PROJECT",
    "GATEHOUSE_API_KEY",
    "GATEHOUSE_OTHER_PROJECT",
    "GATEHOUSE_OTHER_API_KEY",
)

X509_PATH = "/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
JWK_PATH = "/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"


class Config:
    def __init__(self, env):
        self.url = env["GATEHOUSE_URL"].rstrip("/")
        self.emulator_host = env["FIREBASE_AUTH_EMULATOR_HOST"]
        self.project = env["GATEHOUSE_PROJECT"]
        self.api_key = env["GATEHOUSE_API_KEY"]
        self.other_project = env["GATEHOUSE_OTHER_PROJECT"]
        self.other_api_key = env["GATEHOUSE_OTHER_API_KEY"]

    @property
    def x509_url(self):
        return self.url + X509_PATH

    @property
    def jwk_url(self):
        return self.url + JWK_PATH


def load_config(environ=None):
    """Reads the environment; raises RuntimeError naming every missing variable."""
    environ = os.environ if environ is None else environ
    missing = [name for name in REQUIRED_ENV if not environ.get(name)]
    if missing:
        raise RuntimeError(
            "Gatehouse compat suite: missing environment variable(s): "
            + ", ".join(missing)
            + ". See tests/compat/python/README.md."
        )
    cfg = Config(environ)
    parsed = urllib.parse.urlparse(cfg.url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RuntimeError(f"GATEHOUSE_URL must look like http://host:port, got {cfg.url!r}")
    if "//" in cfg.emulator_host:
        raise RuntimeError(
            "FIREBASE_AUTH_EMULATOR_HOST must be host:port without a scheme, "
            f"got {cfg.emulator_host!r}"
        )
    if parsed.netloc != cfg.emulator_host:
        raise RuntimeError(
            f"FIREBASE_AUTH_EMULATOR_HOST ({cfg.emulator_host}) must name the same host:port "
            f"as GATEHOUSE_URL ({cfg.url}); the Admin SDK and the REST calls must hit one server."
        )
    return cfg


# ---------------------------------------------------------------- identifiers

def rand_suffix(n=10):
    return secrets.token_hex(n // 2 + 1)[:n]


def unique_email(tag="user"):
    return f"compat-{tag}-{rand_suffix(12)}@gatehouse-compat.test"


def unique_uid(tag="u"):
    return f"compat{tag}{rand_suffix(16)}"


def unique_phone():
    # +1 555 01xx xxxx: fictional numbers, random enough for concurrent runs.
    return "+1555" + "".join(str(secrets.randbelow(10)) for _ in range(7))


# ---------------------------------------------------------------- REST client

class Rest:
    """Client-side (API key) calls against the server under test."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.session = requests.Session()

    def idt_url(self, method, key=None):
        key = self.cfg.api_key if key is None else key
        return (
            f"{self.cfg.url}/identitytoolkit.googleapis.com/v1/accounts:{method}"
            f"?key={urllib.parse.quote(key)}"
        )

    def post(self, method, body, key=None):
        return self.session.post(self.idt_url(method, key), json=body, timeout=HTTP_TIMEOUT)

    def token(self, form, key=None):
        key = self.cfg.api_key if key is None else key
        url = f"{self.cfg.url}/securetoken.googleapis.com/v1/token?key={urllib.parse.quote(key)}"
        return self.session.post(url, data=form, timeout=HTTP_TIMEOUT)

    # convenience wrappers -------------------------------------------------
    def sign_in_password(self, email, password, key=None):
        return self.post(
            "signInWithPassword",
            {"email": email, "password": password, "returnSecureToken": True},
            key=key,
        )

    def sign_in_ok(self, email, password, key=None):
        resp = self.sign_in_password(email, password, key=key)
        assert resp.status_code == 200, f"sign-in failed: {resp.status_code} {resp.text}"
        body = resp.json()
        assert body.get("idToken") and body.get("refreshToken"), body
        return body

    def refresh(self, refresh_token, key=None):
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token}, key=key)

    def lookup(self, id_token, key=None):
        return self.post("lookup", {"idToken": id_token}, key=key)

    def get_json(self, path):
        resp = self.session.get(self.cfg.url + path, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, f"GET {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()


# ---------------------------------------------------------------- assertions

def assert_error(resp, *codes, status=400):
    """Asserts the Google API error envelope and that message starts with one of codes.

    Shape: {"error": {"code": <status>, "message": "CODE[ : detail]", "errors": [...]}}
    Returns the error code (the part of message before any " : " / ":").
    """
    err = error_object(resp, status, f"with {codes}")
    assert err.get("code") == status and isinstance(err.get("code"), int), err
    message = err.get("message")
    assert isinstance(message, str) and message, err
    assert isinstance(err.get("errors"), list) and err["errors"], err
    for item in err["errors"]:
        assert isinstance(item, dict) and isinstance(item.get("message"), str), err
    if codes:
        assert any(message == c or message.startswith(c + " ") or message.startswith(c + ":")
                   for c in codes), f"expected message starting with one of {codes}, got {message!r}"
    return message.split(":", 1)[0].strip()


def wait_for_next_second():
    """Sleeps past the next whole-second boundary plus a little (second-granularity stamps)."""
    time.sleep(1.1)
