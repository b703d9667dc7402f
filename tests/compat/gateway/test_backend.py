import urllib.parse
"""Talking to backends: deadlines, dead backends, streaming, protocols, pooling
(spec §1.2, §3, §7; conformance cases 38, 39).
"""

import hashlib
import time
import types

import pytest
import requests

import harness as h
import oas
from harness import MSG_CONNECT_PREFIX, MSG_DEADLINE, assert_local_error

BIG = 20 * 1024 * 1024


def append(url, **kw):
    return oas.backend(url, path_translation="APPEND_PATH_TO_ADDRESS", **kw)


@pytest.fixture(scope="module")
def env(mstack):
    echo = mstack.echo()
    dead_remote = h.dead_port()
    dead_local = h.dead_port()
    doc = oas.document({
        "/slow": {"get": oas.op("slow", backend=append(echo.url, deadline=1.0))},
        "/dead": {"get": oas.op("dead", backend=append(f"http://127.0.0.1:{dead_remote}"))},
        "/local-dead": {"get": oas.op("localDead")},
        "/upload": {"post": oas.op("upload", backend=append(echo.url)),
                    "put": oas.op("uploadPut", backend=append(echo.url))},
        "/download/bytes/{n}": {"get": oas.op("download", backend=append(echo.url))},
        "/drip": {"get": oas.op("drip", backend=append(echo.url))},
        "/status": {"get": oas.op("status", backend=append(echo.url))},
        "/pool": {"get": oas.op("pool", backend=append(echo.url, protocol="http/1.1"))},
    })
    gw = mstack.gateway(doc, backend=f"http://127.0.0.1:{dead_local}")
    return types.SimpleNamespace(gw=gw, echo=echo)


def session():
    s = requests.Session()
    s.trust_env = False
    return s


# --------------------------------------------------------------------------- deadline / errors

def test_case38_deadline_exceeded_504(env):
    r = env.gw.get("/slow?sleep=2")
    assert_local_error(r, 504, MSG_DEADLINE)
    assert 0.9 <= r.elapsed < 1.9, f"504 after {r.elapsed:.2f}s, deadline is 1.0s"


def test_within_deadline_200(env):
    e = env.gw.get("/slow?sleep=0.3").echo()
    assert e["RequestURI"] == "/slow?sleep=0.3"


def test_case39_dead_remote_backend_503(env):
    assert_local_error(env.gw.get("/dead"), 503, MSG_CONNECT_PREFIX, prefix=True)


def test_dead_local_backend_503(env):
    assert_local_error(env.gw.get("/local-dead"), 503, MSG_CONNECT_PREFIX, prefix=True)


def test_backend_status_and_body_pass_through(env):
    r = env.gw.get("/status?status=418")
    assert r.status == 418, r.describe()
    assert r.json()["RequestURI"] == "/status?status=418"
    r = env.gw.get("/status?status=404")
    assert r.status == 404 and r.json()["path"] == "/status"  # the backend's 404, not ours


# --------------------------------------------------------------------------- bodies

def test_large_chunked_upload_intact(env):
    r = env.gw.request("POST", "/upload?digest=1", body=h.pattern_chunks(BIG), timeout=60)
    e = r.echo()
    assert e["body_len"] == BIG and e["body_sha256"] == h.pattern_sha256(BIG)


def test_large_fixed_length_upload_intact(env):
    data = h.pattern_bytes(BIG)
    r = env.gw.request("PUT", "/upload?digest=1", body=data, timeout=60)
    e = r.echo()
    assert e["body_len"] == BIG and e["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_small_body_echoed(env):
    e = env.gw.request("POST", "/upload", body='{"a":1}',
                       headers={"Content-Type": "application/json"}).echo()
    assert e["body"] == '{"a":1}' and e["headers"]["content-type"] == "application/json"


def test_large_download_intact(env):
    sha = hashlib.sha256()
    n = 0
    with session().get(f"{env.gw.url}/download/bytes/{BIG}", stream=True, timeout=60) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(256 * 1024):
            sha.update(chunk)
            n += len(chunk)
    assert n == BIG and sha.hexdigest() == h.pattern_sha256(BIG)


def test_response_is_streamed_not_buffered(env):
    t0 = time.monotonic()
    with session().get(f"{env.gw.url}/drip?drip=3&interval=0.7", stream=True, timeout=10) as r:
        assert r.status_code == 200
        it = r.iter_content(chunk_size=None)
        first = next(it)
        t_first = time.monotonic() - t0
        rest = b"".join(it)
    total = time.monotonic() - t0
    assert (first + rest) == b"chunk-0\nchunk-1\nchunk-2\n"
    assert t_first < 0.6, f"first chunk after {t_first:.2f}s: the gateway buffered the response"
    assert total >= 1.3


# --------------------------------------------------------------------------- connections

def test_backend_connections_are_pooled(env):
    before = env.echo.connections_total
    for i in range(10):
        env.gw.get(f"/pool?i={i}").echo()
    opened = env.echo.connections_total - before
    assert opened <= 2, f"{opened} backend connections for 10 sequential requests"


def test_h2_backend(stack):
    pytest.importorskip("h2", reason="the h2 package provides the HTTP/2 test backend")
    h2be = stack.h2_echo()
    doc = oas.document({
        "/h2/{x}": {"get": oas.op("h2get", backend=append(h2be.url, protocol="h2")),
                    "post": oas.op("h2post", backend=append(h2be.url, protocol="h2"))},
    })
    gw = stack.gateway(doc)
    r = gw.get("/h2/a?q=1")
    assert r.status == 200, r.describe()
    e = r.json()
    assert e["http_version"] == "2" and e["method"] == "GET" and e["RequestURI"] == "/h2/a?q=1"
    assert e["violations"] == [], f"malformed HTTP/2 request: {e['violations']}"
    # ESPv2 sends the bare hostname; over HTTP/2 Gatehouse's :authority also carries an explicit
    # non-default port from the address (documented deviation; default ports match exactly).
    port = urllib.parse.urlsplit(h2be.url).port
    assert e["headers"][":authority"] in ("127.0.0.1", f"127.0.0.1:{port}")
    r = gw.request("POST", "/h2/b", body=b"hello h2")
    assert r.status == 200 and r.json()["body"] == "hello h2"
    assert len(h2be.requests) == 2


def test_case40_untrusted_backend_certificate_503(stack):
    tls_echo = stack.echo(tls=True)
    doc = oas.document({"/x": {"get": oas.op("x", backend=append(tls_echo.url))}})
    gw = stack.gateway(doc)
    assert_local_error(gw.get("/x"), 503, MSG_CONNECT_PREFIX, prefix=True)
    assert tls_echo.requests == [], "the gateway sent a request over an untrusted TLS connection"


def test_h2_to_http1_only_backend_503(stack, echo):
    doc = oas.document({"/x": {"get": oas.op("x", backend=append(echo.url, protocol="h2"))}})
    gw = stack.gateway(doc)
    assert_local_error(gw.get("/x"), 503, MSG_CONNECT_PREFIX, prefix=True)
