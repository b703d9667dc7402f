"""Machinery for the Gatehouse API-gateway conformance suite (black box).

Everything here runs on 127.0.0.1 with ports chosen by the kernel (port 0):

* EchoBackend     - HTTP/1.1 backend that answers every request with a JSON description of it.
* H2EchoBackend   - the same over cleartext HTTP/2 with prior knowledge (for `protocol: h2`).
* JwksServer      - JWT issuers: JWK sets, x509 certificate maps, OpenID discovery, key rotation,
                    outages (stop/start on the same port) and fetch counters.
* IdentityServer  - Google-style OAuth token endpoint (JWT-bearer grant -> id_token) and a GCE
                    metadata server identity endpoint, both recording what the gateway asked for.
* Gateway         - starts `$GATEHOUSE_BIN gateway ...` in its own process group, waits for the
                    "listening" log lines, reloads with SIGHUP, kills the group at teardown.
* http_request    - a raw HTTP/1.1 client (http.client) that sends the request target verbatim.

Exact error messages from the spec (§3) are the MSG_* constants below.
"""

import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import ipaddress
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sys

import jwt  # PyJWT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import oas

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gatehouse_common import (  # noqa: E402,F401
    b64url_decode, b64url_encode, free_port, gatehouse_bin as _gatehouse_bin, jwt_payload,
    log_field, stop_process_group, wait_until,
)

START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 15.0
HOST = oas.HOST

# --------------------------------------------------------------------------- spec §3 messages

MSG_MISSING = "Jwt is missing"
MSG_UNKNOWN_ISSUER = "Jwt issuer is not configured"
MSG_EXPIRED = "Jwt is expired"
MSG_NOT_YET_VALID = "Jwt not yet valid"
# Spec §3 abbreviates this one to "Jwt is not in the form of Header.Payload.Signature".
# google/jwt_verify_lib src/status.cc (used unchanged by Envoy/ESPv2) returns the full text below,
# which is what ESPv2 puts on the wire; the suite follows the wire.
MSG_BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
MSG_HEADER_BAD_JSON = "Jwt header is an invalid JSON"
MSG_ALG_NOT_SUPPORTED = "Jwt header [alg] is not supported"
MSG_VERIFICATION_FAILS = "Jwt verification fails"
MSG_NO_MATCHING_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
MSG_JWKS_FETCH_FAILED = "Jwks remote fetch is failed"
MSG_AUDIENCE = "Audiences in Jwt are not allowed"
MSG_NOT_DEFINED = "The current request is not defined by this API."
MSG_API_KEY_MISSING = (
    "UNAUTHENTICATED: Method doesn't allow unregistered callers (callers without established "
    "identity). Please use API Key or other form of API consumer identity to call this API."
)
MSG_API_KEY_INVALID = "INVALID_ARGUMENT: API key not valid. Please pass a valid API key."
MSG_DEADLINE = "upstream request timeout"
MSG_CONNECT_PREFIX = "upstream connect error or disconnect/reset before headers"
MSG_PATH_TOO_LONG = "Path is too long, max allowed size is 8192."


def msg_405(template):
    return (
        f'The current request is matched to the defined url template "{template}" '
        "but its http method is not allowed"
    )


# --------------------------------------------------------------------------- small helpers

b64u = b64url_encode
b64u_decode = b64url_decode


def payload_segment(token):
    return token.split(".")[1]


def dead_port():
    """A loopback port that was free a moment ago and now refuses connections."""
    return free_port()


def pattern_bytes(n, offset=0):
    """Deterministic payload of n bytes (what /bytes/<n> on the echo backend sends)."""
    block = bytes(range(256)) * 256  # 64 KiB
    out = bytearray()
    pos = offset
    while len(out) < n:
        start = pos % len(block)
        take = min(len(block) - start, n - len(out))
        out += block[start:start + take]
        pos += take
    return bytes(out)


def pattern_chunks(n, chunk=64 * 1024):
    sent = 0
    while sent < n:
        size = min(chunk, n - sent)
        yield pattern_bytes(size, sent)
        sent += size


def pattern_sha256(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


# --------------------------------------------------------------------------- HTTP client

class Response:
    def __init__(self, status, reason, headers, body, elapsed, version=11):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as received
        self.body = body
        self.elapsed = elapsed
        self.version = version

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise AssertionError(f"response body is not JSON: {self.describe()}") from exc

    def echo(self):
        """The echo backend's description of the request it received (asserts 200 first)."""
        assert self.status == 200, f"expected 200 from the echo backend, got {self.describe()}"
        data = self.json()
        assert "RequestURI" in data, f"not an echo-backend answer: {self.describe()}"
        return data

    def describe(self):
        hdrs = "; ".join(f"{k}: {v}" for k, v in self.headers)
        body = self.text
        if len(body) > 600:
            body = body[:600] + "...(%d bytes)" % len(self.body)
        return f"HTTP {self.status} [{hdrs}] {body!r}"

    def __repr__(self):
        return f"<Response {self.describe()}>"


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def http_request(addr, method, target, headers=None, body=None, timeout=REQUEST_TIMEOUT,
                 chunked=False):
    """Sends one request with the target exactly as given (no normalisation, no quoting).

    headers: dict or list of (name, value); a "Host" entry replaces the default host:port.
    body: bytes, str, or an iterable of bytes (then sent with chunked transfer encoding).
    """
    host, port = split_addr(addr)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if isinstance(body, str):
        body = body.encode()
    started = time.monotonic()
    try:
        names = {k.lower() for k, _ in items}
        conn.putrequest(method, target, skip_host="host" in names,
                        skip_accept_encoding="accept-encoding" in names)
        for k, v in items:
            conn.putheader(k, v)
        if body is None:
            if method in ("POST", "PUT", "PATCH") and "content-length" not in names:
                conn.putheader("Content-Length", "0")
            conn.endheaders()
        elif isinstance(body, (bytes, bytearray)):
            if "content-length" not in names:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        else:
            chunked = True
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for piece in body:
                if piece:
                    conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.getheaders(), data,
                        time.monotonic() - started, resp.version)
    finally:
        conn.close()


# --------------------------------------------------------------------------- assertions

def assert_json_error(resp, status, message, prefix=False):
    assert resp.status == status, f"expected HTTP {status} {message!r}, got {resp.describe()}"
    ctype = resp.header("content-type", "")
    assert ctype.startswith("application/json"), f"error must be JSON: {resp.describe()}"
    body = resp.json()
    if prefix:
        assert set(body) == {"code", "message"}, resp.describe()
        assert body["code"] == status, resp.describe()
        assert isinstance(body["message"], str) and body["message"].startswith(message), (
            f"message must start with {message!r}: {resp.describe()}")
    else:
        assert body == {"code": status, "message": message}, (
            f"expected body {{'code': {status}, 'message': {message!r}}}, got {resp.describe()}")


def assert_local_error(resp, status, message, prefix=False):
    """A gateway-generated error that is not from JWT authentication: no WWW-Authenticate."""
    assert_json_error(resp, status, message, prefix=prefix)
    assert resp.header("www-authenticate") is None, (
        f"no WWW-Authenticate expected on this error: {resp.describe()}")


def realm(authority, target):
    """Spec §3: Bearer realm="<scheme>://<host><path incl. query, truncated to 256 chars>"."""
    return f'Bearer realm="http://{authority}{target[:256]}"'


def assert_jwt_error(resp, gw, target, status, message, authority=None):
    """A jwt_authn rejection: exact JSON body and exact WWW-Authenticate (spec §3)."""
    assert_json_error(resp, status, message)
    want = realm(authority or gw.addr, target)
    if message != MSG_MISSING:
        want += ', error="invalid_token"'
    got = resp.header_all("www-authenticate")
    assert got == [want], f"WWW-Authenticate: expected [{want!r}], got {got!r}"


# --------------------------------------------------------------------------- local servers

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gw-conformance"
    sys_version = ""

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.owner._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._conn_closed(self.connection)

    def _dispatch(self):
        try:
            self.server.owner.handle(self)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch


def iter_request_body(h, chunk=64 * 1024):
    """Yields the request body; understands Content-Length and chunked transfer encoding."""
    te = (h.headers.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        while True:
            line = h.rfile.readline(65537)
            if not line:
                return
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers
                    t = h.rfile.readline(65537)
                    if t in (b"\r\n", b"\n", b""):
                        return
            left = size
            while left:
                data = h.rfile.read(min(chunk, left))
                if not data:
                    return
                left -= len(data)
                yield data
            h.rfile.readline(3)
    else:
        left = int(h.headers.get("Content-Length") or 0)
        while left:
            data = h.rfile.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data


def send_response(h, status, body=b"", headers=None, content_type="application/json"):
    if isinstance(body, str):
        body = body.encode()
    h.send_response(status)
    for k, v in (headers.items() if isinstance(headers, dict) else (headers or [])):
        h.send_header(k, v)
    if content_type:
        h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def self_signed_tls_context():
    """Server-side TLS for 127.0.0.1 with a self-signed certificate no client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .sign(key, hashes.SHA256()))
    d = tempfile.mkdtemp(prefix="gw-tls-")
    cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; stop() also cuts open connections
    (so a stopped server really is down for keep-alive clients) and start() reuses the port.
    With tls=True it speaks HTTPS with a self-signed (untrusted) certificate."""

    def __init__(self, tls=False):
        self.tls = tls
        self.httpd = None
        self.thread = None
        self.port = None
        self._lock = threading.Lock()
        self._conns = set()
        self.connections_total = 0

    def start(self):
        last = None
        for _ in range(50):
            try:
                httpd = ThreadingHTTPServer(("127.0.0.1", self.port or 0), _Handler)
                break
            except OSError as exc:  # restarting on the same port right after stop()
                last = exc
                time.sleep(0.1)
        else:
            raise last
        httpd.daemon_threads = True
        httpd.owner = self
        if self.tls:
            httpd.socket = self_signed_tls_context().wrap_socket(httpd.socket, server_side=True)
        self.httpd = httpd
        self.port = httpd.server_address[1]
        self.thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True, name=f"{type(self).__name__}:{self.port}")
        self.thread.start()
        return self

    def stop(self):
        httpd, self.httpd = self.httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    close = stop

    @property
    def running(self):
        return self.httpd is not None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _conn_opened(self, sock):
        with self._lock:
            self._conns.add(sock)
            self.connections_total += 1

    def _conn_closed(self, sock):
        with self._lock:
            self._conns.discard(sock)

    def handle(self, h):  # pragma: no cover - abstract
        send_response(h, 404, b"{}")


class EchoBackend(LocalServer):
    """Answers every request with JSON
    {"method","path","query","RequestURI","headers":{lower-name: value},"header_list","body",...}.

    Query parameters understood (anywhere in the forwarded query string):
      sleep=<s>       wait s seconds before answering (also a path segment pair /sleep/<s>)
      status=<n>      answer with status n
      digest=1        do not echo the body, only body_len and body_sha256
      drip=<n>&interval=<s>  answer with n chunks (chunked encoding) s seconds apart
    Paths containing /bytes/<n> answer with n bytes of pattern_bytes().
    response_headers / response_headers_by_method: extra headers on every (or per-method) answer.
    """

    def __init__(self, tls=False):
        super().__init__(tls=tls)
        self.requests = []
        self.response_headers = {}
        self.response_headers_by_method = {}

    def record(self, entry):
        with self._lock:
            self.requests.append(entry)

    def clear(self):
        with self._lock:
            self.requests.clear()

    def handle(self, h):
        target = h.path
        path, _, query = target.partition("?")
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        digest = "digest" in params
        sha = hashlib.sha256()
        size = 0
        parts = []
        for piece in iter_request_body(h):
            size += len(piece)
            sha.update(piece)
            if not digest:
                parts.append(piece)
        headers = {}
        header_list = []
        for k, v in h.headers.items():
            lk = k.lower()
            header_list.append([lk, v])
            headers[lk] = headers[lk] + ", " + v if lk in headers else v
        entry = {
            "method": h.command,
            "path": path,
            "query": query,
            "RequestURI": target,
            "http_version": h.request_version,
            "headers": headers,
            "header_list": header_list,
            "body": None if digest else b"".join(parts).decode("utf-8", "replace"),
            "body_len": size,
            "body_sha256": sha.hexdigest(),
            "received_at": time.time(),
        }
        self.record(entry)

        sleep = params.get("sleep", [None])[0]
        m = re.search(r"/sleep/([0-9.]+)", path)
        if sleep is None and m:
            sleep = m.group(1)
        if sleep:
            time.sleep(float(sleep))

        extra = dict(self.response_headers)
        extra.update(self.response_headers_by_method.get(h.command, {}))

        m = re.search(r"/bytes/(\d+)", path)
        if m:
            n = int(m.group(1))
            h.send_response(200)
            for k, v in extra.items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(n))
            h.end_headers()
            if h.command != "HEAD":
                for c in pattern_chunks(n):
                    h.wfile.write(c)
            return

        if "drip" in params:
            n = int(params["drip"][0])
            interval = float(params.get("interval", ["0.5"])[0])
            h.send_response(200)
            for k, v in extra.items():
                h.send_header(k, v)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for i in range(n):
                if i:
                    time.sleep(interval)
                data = b"chunk-%d\n" % i
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            return

        status = int(params.get("status", ["200"])[0])
        send_response(h, status, json.dumps(entry), extra)


# --------------------------------------------------------------------------- keys and tokens

_UNSET = object()


class SigningKey:
    """A private key for one JWS alg, with its public JWK and (for the x509 map) a certificate."""

    def __init__(self, alg="RS256", kid=_UNSET, publish_alg=True):
        self.alg = alg
        self.kid = f"{alg.lower()}-{secrets.token_hex(6)}" if kid is _UNSET else kid
        self.publish_alg = publish_alg
        if alg[:2] in ("RS", "PS"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES384":
            self.private = ec.generate_private_key(ec.SECP384R1())
        elif alg == "ES512":
            self.private = ec.generate_private_key(ec.SECP521R1())
        else:
            raise ValueError(f"unsupported alg {alg}")
        self._cert = None

    @property
    def public(self):
        return self.private.public_key()

    def jwk(self):
        pub = self.public
        if isinstance(pub, rsa.RSAPublicKey):
            nums = pub.public_numbers()
            d = {
                "kty": "RSA",
                "n": b64u(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
                "e": b64u(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")),
            }
        else:
            nums = pub.public_numbers()
            size = (pub.curve.key_size + 7) // 8
            crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[pub.curve.name]
            d = {
                "kty": "EC",
                "crv": crv,
                "x": b64u(nums.x.to_bytes(size, "big")),
                "y": b64u(nums.y.to_bytes(size, "big")),
            }
        d["use"] = "sig"
        if self.publish_alg:
            d["alg"] = self.alg
        if self.kid is not None:
            d["kid"] = self.kid
        return d

    def cert_pem(self):
        if self._cert is None:
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.kid or "key")])
            now = datetime.datetime.now(datetime.timezone.utc)
            digest = hashes.SHA256() if self.alg[:2] in ("RS", "PS") else hashes.SHA384()
            cert = (x509.CertificateBuilder()
                    .subject_name(name).issuer_name(name)
                    .public_key(self.public)
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(days=1))
                    .not_valid_after(now + datetime.timedelta(days=30))
                    .sign(self.private, digest))
            self._cert = cert.public_bytes(serialization.Encoding.PEM).decode()
        return self._cert

    def private_pem_pkcs8(self):
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()

    def public_pem(self):
        return self.public.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, payload, alg=None, kid=_UNSET, header=None):
        alg = alg or self.alg
        kid = self.kid if kid is _UNSET else kid
        hdr = {"typ": "JWT"}
        if kid is not None:
            hdr["kid"] = kid
        hdr.update(header or {})
        return jwt.encode(payload, self.private, algorithm=alg, headers=hdr)


def claims(iss, aud=_UNSET, sub="user-1", exp=_UNSET, nbf=None, iat=_UNSET, extra=None):
    """A JWT claim set: iat=now, exp=now+600 unless given (None drops the claim), unique jti."""
    now = int(time.time())
    p = {"iss": iss, "sub": sub}
    if iat is not None:
        p["iat"] = now if iat is _UNSET else iat
    if exp is not None:
        p["exp"] = now + 600 if exp is _UNSET else exp
    if nbf is not None:
        p["nbf"] = nbf
    if aud is not _UNSET and aud is not None:
        p["aud"] = aud
    p["jti"] = secrets.token_hex(8)
    if sub is None:
        del p["sub"]
    p.update(extra or {})
    return p


def raw_token(header, payload, signature=b"not-a-signature"):
    """Assembles a compact JWS from parts without signing (for malformed-token cases)."""
    def part(x):
        if isinstance(x, dict):
            x = json.dumps(x, separators=(",", ":"))
        return b64u(x)
    return f"{part(header)}.{part(payload)}.{b64u(signature)}"


def hmac_token(payload, secret, alg="HS256", kid=None):
    """An HMAC-signed JWS built by hand (PyJWT refuses PEM keys as HMAC secrets)."""
    hdr = {"alg": alg, "typ": "JWT"}
    if kid:
        hdr["kid"] = kid
    signing_input = (b64u(json.dumps(hdr, separators=(",", ":"))) + "."
                     + b64u(json.dumps(payload, separators=(",", ":"))))
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret, signing_input.encode(), digest).digest()
    return signing_input + "." + b64u(sig)


# --------------------------------------------------------------------------- JWKS / issuer server

class Provider:
    """One issuer with its keys as served by a JwksServer.

    mode: "ok" (serve keys), "invalid" (200 with a body that is not a JWKS), "error" (503).
    cache_control: value of the Cache-Control header on key responses (None = no header).
    """

    def __init__(self, server, name, alg="RS256", issuer=None, audience=None, cache_control=None,
                 kid=_UNSET, publish_alg=True, paths=None):
        self.server = server
        self.name = name
        self.alg = alg
        self.keys = [SigningKey(alg, kid=kid, publish_alg=publish_alg)]
        self.signing = self.keys[0]
        self.issuer = issuer or f"https://issuer-{name}.example.test"
        self.audience = audience or f"aud-{name}"
        self.cache_control = cache_control
        self.mode = "ok"
        # Paths this provider's keys are served at, relative to the server URL.
        self.jwk_path = (paths or {}).get("jwk", f"/jwks/{name}")
        self.x509_path = (paths or {}).get("x509", f"/x509/{name}")

    # -- publication
    @property
    def jwks_uri(self):
        return self.server.url + self.jwk_path

    @property
    def x509_uri(self):
        return self.server.url + self.x509_path

    def jwk_set(self):
        return {"keys": [k.jwk() for k in self.keys]}

    def x509_map(self):
        return {k.kid: k.cert_pem() for k in self.keys}

    def fetches(self):
        """How many times the key documents (JWK set or x509 map) were fetched."""
        return self.server.count(self.jwk_path) + self.server.count(self.x509_path)

    # -- keys
    def add_key(self, alg=None, kid=_UNSET):
        k = SigningKey(alg or self.alg, kid=kid)
        self.keys.append(k)
        return k

    def rotate(self, keep_old=True):
        """Publishes a new key and signs with it from now on; keep_old=False drops old keys."""
        k = SigningKey(self.alg)
        self.keys = (self.keys + [k]) if keep_old else [k]
        self.signing = k
        return k

    # -- tokens
    def token(self, aud=_UNSET, key=None, alg=None, kid=_UNSET, iss=_UNSET, header=None, **kw):
        aud = self.audience if aud is _UNSET else aud
        iss = self.issuer if iss is _UNSET else iss
        return (key or self.signing).sign(claims(iss, aud=aud, **kw), alg=alg, kid=kid,
                                          header=header)

    # -- OpenAPI
    def definition(self, fmt="jwk", audiences=_UNSET, locations=None, jwks_uri=_UNSET):
        """securityDefinitions entry (oauth2 + x-google-*). fmt: jwk | x509 | discovery."""
        if jwks_uri is _UNSET:
            jwks_uri = {"jwk": self.jwks_uri, "x509": self.x509_uri, "discovery": None}[fmt]
        aud = self.audience if audiences is _UNSET else audiences
        return oas.oauth2(self.issuer, jwks_uri=jwks_uri, audiences=aud, locations=locations)


class JwksServer(LocalServer):
    """Serves providers' keys.

    GET /jwks/<name>                       JWK set           GET /x509/<name>   x509 map
    GET /<name>/.well-known/openid-configuration   discovery (issuer http://127.0.0.1:P/<name>)
    GET /service_accounts/v1/jwk/<email>, /robot/v1/metadata/x509/<email>,
        /service_accounts/v1/metadata/x509/<email>   for service-account issuers
    Every GET is counted per path (count()).
    """

    def __init__(self):
        super().__init__()
        self.providers = {}
        self.counts = {}
        self.log = []

    def add(self, name, **kw):
        assert self.port, "start the JwksServer before adding providers"
        p = Provider(self, name, **kw)
        self.providers[name] = p
        return p

    def add_oidc(self, name, **kw):
        """A provider whose issuer is http://127.0.0.1:P/<name> and which serves discovery."""
        return self.add(name, issuer=f"{self.url}/{name}", **kw)

    def add_service_account(self, email, **kw):
        """A Google service account as issuer: its kid looks like a private_key_id."""
        kw.setdefault("kid", secrets.token_hex(20))
        return self.add(email, issuer=email, paths={
            "jwk": f"/service_accounts/v1/jwk/{email}",
            "x509": f"/robot/v1/metadata/x509/{email}",
        }, **kw)

    def count(self, path):
        with self._lock:
            return self.counts.get(path, 0)

    def discovery_path(self, name):
        return f"/{name}/.well-known/openid-configuration"

    def _find(self, path):
        for p in self.providers.values():
            if path == p.jwk_path:
                return p, "jwk"
            if path in (p.x509_path, f"/service_accounts/v1/metadata/x509/{p.name}"):
                return p, "x509"
            if path == self.discovery_path(p.name):
                return p, "discovery"
        return None, None

    def handle(self, h):
        path = h.path.partition("?")[0]
        for _ in iter_request_body(h):
            pass
        with self._lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            self.log.append((time.time(), h.command, path))
        p, kind = self._find(path)
        if p is None or h.command not in ("GET", "HEAD"):
            send_response(h, 404, b'{"error":"not found"}')
            return
        if kind == "discovery":
            doc = {
                "issuer": p.issuer,
                "jwks_uri": p.jwks_uri,
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [p.alg],
            }
            send_response(h, 200, json.dumps(doc))
            return
        if p.mode == "invalid":
            send_response(h, 200, b"this is not a JWKS", content_type="text/plain")
            return
        if p.mode == "error":
            send_response(h, 503, b'{"error":"unavailable"}')
            return
        body = p.jwk_set() if kind == "jwk" else p.x509_map()
        headers = {"Cache-Control": p.cache_control} if p.cache_control else {}
        send_response(h, 200, json.dumps(body), headers)


# --------------------------------------------------------------------------- backend identity

class IdentityServer(LocalServer):
    """Google-style identity for the gateway's own service account.

    POST /token  (form: grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT)
        verifies the RS256 assertion with the service account's public key
        (iss=sub=client_email, aud=token_uri, target_audience) and answers {"id_token": ...}.
    GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=A&format=full
        with Metadata-Flavor: Google answers the raw ID token.
    Issued ID tokens are RS256, iss https://accounts.google.com, aud = the requested audience.
    """

    GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    METADATA_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"

    def __init__(self, email="gatehouse-gateway@gw-test.iam.gserviceaccount.com"):
        super().__init__()
        self.email = email
        self.sa_key = SigningKey("RS256", kid=secrets.token_hex(20))
        self.google_key = SigningKey("RS256")
        self.token_requests = []
        self.metadata_requests = []
        self.issued = {}  # audience -> [id tokens]

    @property
    def token_uri(self):
        return self.url + "/token"

    def key_json(self):
        return {
            "type": "service_account",
            "project_id": "gw-test",
            "private_key_id": self.sa_key.kid,
            "private_key": self.sa_key.private_pem_pkcs8(),
            "client_email": self.email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }

    def write_key_file(self, directory):
        path = os.path.join(str(directory), "service-account.json")
        with open(path, "w") as f:
            json.dump(self.key_json(), f, indent=2)
        return path

    def mint_id_token(self, audience):
        now = int(time.time())
        tok = self.google_key.sign({
            "iss": "https://accounts.google.com",
            "aud": audience,
            "azp": self.email,
            "email": self.email,
            "email_verified": True,
            "sub": "100000000000000000001",
            "iat": now,
            "exp": now + 3600,
        })
        with self._lock:
            self.issued.setdefault(audience, []).append(tok)
        return tok

    def audiences_requested(self):
        with self._lock:
            return [r.get("audience") for r in self.token_requests + self.metadata_requests]

    def requests_for(self, audience):
        with self._lock:
            return [r for r in self.token_requests + self.metadata_requests
                    if r.get("audience") == audience]

    def handle(self, h):
        path, _, query = h.path.partition("?")
        body = b"".join(iter_request_body(h))
        if path == "/token" and h.command == "POST":
            self._token(h, body)
        elif path == self.METADATA_PATH and h.command == "GET":
            self._metadata(h, query)
        else:
            send_response(h, 404, b'{"error":"not_found"}')

    def _token(self, h, body):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        rec = {"content_type": h.headers.get("Content-Type"), "form": form, "error": None,
               "audience": None, "claims": None}
        try:
            if form.get("grant_type") != [self.GRANT]:
                raise ValueError(f"grant_type must be {self.GRANT}, got {form.get('grant_type')}")
            assertion = (form.get("assertion") or [""])[0]
            c = jwt.decode(assertion, self.sa_key.public, algorithms=["RS256"],
                           audience=self.token_uri, leeway=60,
                           options={"require": ["iss", "aud", "iat", "exp"]})
            rec["claims"] = c
            rec["header"] = jwt.get_unverified_header(assertion)
            if c.get("iss") != self.email:
                raise ValueError(f"assertion iss must be {self.email}, got {c.get('iss')}")
            if c.get("sub", self.email) != self.email:
                raise ValueError(f"assertion sub must be {self.email}, got {c.get('sub')}")
            if not c.get("target_audience"):
                raise ValueError("assertion has no target_audience")
            rec["audience"] = c["target_audience"]
        except Exception as exc:  # recorded for the tests, answered like Google
            rec["error"] = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.token_requests.append(rec)
            send_response(h, 400, json.dumps({"error": "invalid_grant",
                                              "error_description": rec["error"]}))
            return
        with self._lock:
            self.token_requests.append(rec)
        send_response(h, 200, json.dumps({"id_token": self.mint_id_token(rec["audience"])}))

    def _metadata(self, h, query):
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        rec = {"flavor": h.headers.get("Metadata-Flavor"), "params": params,
               "audience": (params.get("audience") or [None])[0],
               "format": (params.get("format") or [None])[0], "error": None}
        if rec["flavor"] != "Google":
            rec["error"] = "missing Metadata-Flavor: Google"
        elif not rec["audience"]:
            rec["error"] = "missing audience"
        with self._lock:
            self.metadata_requests.append(rec)
        if rec["error"]:
            send_response(h, 403 if "Flavor" in rec["error"] else 400, rec["error"],
                          content_type="text/plain")
            return
        send_response(h, 200, self.mint_id_token(rec["audience"]), {"Metadata-Flavor": "Google"},
                      content_type="application/text")


# --------------------------------------------------------------------------- HTTP/2 backend

class H2EchoBackend:
    """Cleartext HTTP/2 (prior knowledge) echo server built on the `h2` package.

    Answers every request with JSON {"http_version":"2","method","path","RequestURI","headers",
    "body"}; headers include the pseudo-headers (":authority" etc.)."""

    def __init__(self):
        import h2.config  # noqa: F401  (fail early if the package is missing)
        self.sock = None
        self.port = None
        self.requests = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns = []

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.settimeout(0.1)
        self.sock = s
        self.port = s.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name=f"h2echo:{self.port}").start()
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self._stop.set()
        if self.sock:
            self.sock.close()
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    close = stop

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        import h2.config
        import h2.connection
        import h2.events
        # Inbound validation is off so a non-conforming request still gets an answer; the
        # violations the tests care about are recorded per request instead (see _respond).
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                             validate_inbound_headers=False))
        conn.initiate_connection()
        streams = {}
        try:
            c.sendall(conn.data_to_send())
            while not self._stop.is_set():
                data = c.recv(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = {"headers": list(ev.headers), "body": b""}
                        if ev.stream_ended:
                            self._respond(conn, ev.stream_id, streams.pop(ev.stream_id))
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in streams:
                            streams[ev.stream_id]["body"] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if ev.stream_id in streams:
                            self._respond(conn, ev.stream_id, streams.pop(ev.stream_id))
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
                out = conn.data_to_send()
                if out:
                    c.sendall(out)
        except Exception:  # a client that is not HTTP/2 ends here; that is the point of some tests
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _respond(self, conn, stream_id, st):
        hdrs = {}
        for k, v in st["headers"]:
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        target = hdrs.get(":path", "")
        violations = []
        if "host" in hdrs and ":authority" in hdrs and hdrs["host"] != hdrs[":authority"]:
            violations.append(f"Host {hdrs['host']!r} differs from :authority "
                              f"{hdrs[':authority']!r} (RFC 9113 §8.3.1: malformed)")
        for k in hdrs:
            if k != k.lower():
                violations.append(f"upper-case header name {k!r} (RFC 9113 §8.2.1)")
            if k in ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                     "upgrade"):
                violations.append(f"connection-specific header {k!r} (RFC 9113 §8.2.2)")
        if hdrs.get("te", "trailers") != "trailers":
            violations.append(f"te: {hdrs['te']!r} (RFC 9113 §8.2.2)")
        entry = {
            "violations": violations,
            "http_version": "2",
            "method": hdrs.get(":method"),
            "path": target.partition("?")[0],
            "query": target.partition("?")[2],
            "RequestURI": target,
            "headers": hdrs,
            "body": st["body"].decode("utf-8", "replace"),
        }
        with self._lock:
            self.requests.append(entry)
        body = json.dumps(entry).encode()
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/json"),
                                      ("content-length", str(len(body)))])
        conn.send_data(stream_id, body, end_stream=True)


# --------------------------------------------------------------------------- the gateway process

def gatehouse_bin():
    """The binary under test from $GATEHOUSE_BIN; fails the test (never skips) when unusable."""
    return _gatehouse_bin("tests/compat/gateway/README.md")


def write_config(directory, config, fmt="yaml", name="openapi"):
    """Writes an OpenAPI document. config: dict (serialised as fmt) or str (written verbatim).
    fmt: "yaml" (block YAML with a comment), "json" (.json), "yaml-json" (JSON text in .yaml)."""
    ext = ".json" if fmt == "json" else ".yaml"
    path = os.path.join(str(directory), name + ext)
    _atomic_write(path, render_config(config, path))
    return path


def render_config(config, path):
    if isinstance(config, str):
        return config
    if path.endswith(".json"):
        return json.dumps(config, indent=2) + "\n"
    if path.endswith(".yaml") and getattr(config, "_as_json", False):
        return json.dumps(config, indent=2) + "\n"
    return oas.to_yaml(config, comment="written by tests/compat/gateway (conformance suite)")


def _atomic_write(path, text):
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class GatewayStartError(AssertionError):
    pass


class Gateway:
    """`$GATEHOUSE_BIN gateway --config FILE --listen 127.0.0.1:0 [...]` in its own process group."""

    def __init__(self, binary, workdir, config, *, backend=None, sa_key=None, api_keys=None,
                 admin=False, env=None, extra_args=(), fmt="yaml", metadata_host=None):
        self.binary = binary
        self.workdir = str(workdir)
        self.fmt = fmt
        if fmt == "yaml-json" and isinstance(config, dict):
            config = oas.AsJson(config)
        self.config_path = write_config(self.workdir, config, fmt)
        self.args = ["gateway", "--config", self.config_path, "--listen", "127.0.0.1:0"]
        if backend:
            self.args += ["--backend", backend]
        if sa_key:
            self.args += ["--service-account-key", sa_key]
        if api_keys is not None:
            kpath = os.path.join(self.workdir, "api-keys.txt")
            with open(kpath, "w") as f:
                f.write("".join(k + "\n" for k in api_keys))
            self.args += ["--api-keys", kpath]
        if admin:
            self.args += ["--admin-listen", "127.0.0.1:0"]
        self.args += list(extra_args)
        self.want_admin = admin
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") or k in (
                    "GCE_METADATA_HOST", "GCE_METADATA_ROOT", "GCE_METADATA_IP",
                    "GOOGLE_APPLICATION_CREDENTIALS"):
                del self.env[k]
        self.env["NO_PROXY"] = self.env["no_proxy"] = "127.0.0.1,localhost"
        if metadata_host:
            self.env["GCE_METADATA_HOST"] = metadata_host
        self.env.update(env or {})
        self.proc = None
        self.addr = None
        self.admin_addr = None
        self.stdout_lines = []
        self.stderr_lines = []
        self.json_lines = []
        self._cond = threading.Condition()
        self._readers = []

    # -- lifecycle
    def _spawn(self):
        self.proc = subprocess.Popen(
            [self.binary] + self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=self.env, start_new_session=True, cwd=self.workdir)
        for stream, is_out in ((self.proc.stdout, True), (self.proc.stderr, False)):
            t = threading.Thread(target=self._read, args=(stream, is_out), daemon=True)
            t.start()
            self._readers.append(t)

    def _read(self, stream, is_out):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                (self.stdout_lines if is_out else self.stderr_lines).append(line)
                if is_out:
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    if isinstance(obj, dict):
                        self.json_lines.append(obj)
                        msg = log_field(obj, "message")
                        addr = log_field(obj, "addr")
                        if msg == "listening" and addr and not self.addr:
                            self.addr = str(addr)
                        elif msg == "admin listening" and addr and not self.admin_addr:
                            self.admin_addr = str(addr)
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    def _ready(self):
        return self.addr is not None and (not self.want_admin or self.admin_addr is not None)

    def start(self, timeout=START_TIMEOUT):
        self._spawn()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready() and self.proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        if self._ready():
            return self
        rc = self.proc.poll()
        self.stop()
        why = (f"exited with status {rc}" if rc is not None
               else f"did not log \"listening\" within {timeout}s")
        raise GatewayStartError(f"gateway {why}\n{self.describe()}")

    def expect_start_failure(self, timeout=START_TIMEOUT):
        """Starts the process expecting it to refuse the config: returns (exit status, output).
        Fails if it starts listening."""
        self._spawn()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.addr is None and self.proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            listening = self.addr is not None
        rc = self.proc.poll()
        self.stop()  # kills the group (also whatever still holds the pipes), joins the readers
        assert not listening and rc is not None, (
            f"gateway was expected to refuse to start, but "
            f"{'it is listening' if listening else 'it is still running'}\n{self.describe()}")
        assert rc != 0, f"gateway refused to serve but exited 0\n{self.describe()}"
        return rc, self.output()

    def stop(self, timeout=5.0):
        stop_process_group(self.proc, timeout)  # the group: also whatever still holds the pipes
        for t in self._readers:
            t.join(2)

    close = stop

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    # -- config
    def reload(self, config):
        """Rewrites --config atomically and sends SIGHUP (to the gateway process only)."""
        if isinstance(config, dict) and self.fmt == "yaml-json":
            config = oas.AsJson(config)
        _atomic_write(self.config_path, render_config(config, self.config_path))
        self.signal(signal.SIGHUP)

    # -- output
    def count_logs(self, predicate):
        """How many JSON log records so far satisfy `predicate`."""
        with self._cond:
            return sum(1 for rec in self.json_lines if predicate(rec))

    def output(self):
        with self._cond:
            return "\n".join(self.stdout_lines + self.stderr_lines)

    def describe(self, tail=60):
        with self._cond:
            out = self.stdout_lines[-tail:]
            err = self.stderr_lines[-tail:]
        return ("command: " + " ".join([self.binary] + self.args)
                + "\n--- stdout (tail) ---\n" + "\n".join(out)
                + "\n--- stderr (tail) ---\n" + "\n".join(err))

    # -- requests
    @property
    def url(self):
        return f"http://{self.addr}"

    def request(self, method, target, headers=None, body=None, **kw):
        return http_request(self.addr, method, target, headers=headers, body=body, **kw)

    def get(self, target, headers=None, **kw):
        return self.request("GET", target, headers=headers, **kw)

    def get_bearer(self, target, token, headers=None, **kw):
        h = dict(headers or {})
        h["Authorization"] = f"Bearer {token}"
        return self.get(target, headers=h, **kw)

    def admin_get(self, target, **kw):
        assert self.admin_addr, "gateway was started without --admin-listen"
        return http_request(self.admin_addr, "GET", target, **kw)


def validate(binary, path, timeout=30):
    """Runs `gatehouse gateway validate FILE`; returns (exit status, stdout + stderr)."""
    env = dict(os.environ)
    env.pop("GCE_METADATA_HOST", None)
    p = subprocess.run([binary, "gateway", "validate", str(path)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=env)
    return p.returncode, (p.stdout.decode("utf-8", "replace") + "\n"
                          + p.stderr.decode("utf-8", "replace"))


# --------------------------------------------------------------------------- Prometheus text

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """[(metric name, {label: value}, float value)] for every sample line."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.encode().decode("unicode_escape") for k, v in _LABEL.findall(m.group(3) or "")}
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


# --------------------------------------------------------------------------- per-test resources

class Stack:
    """Owns the servers and gateways of one test (or one module) and closes them in reverse."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self._closers = []
        self._n = 0

    def _own(self, obj):
        self._closers.append(obj.close)
        return obj

    def echo(self, tls=False):
        return self._own(EchoBackend(tls=tls).start())

    def h2_echo(self):
        return self._own(H2EchoBackend().start())

    def jwks(self):
        return self._own(JwksServer().start())

    def identity(self):
        return self._own(IdentityServer().start())

    def subdir(self, prefix="gw"):
        self._n += 1
        d = os.path.join(self.workdir, f"{prefix}{self._n}")
        os.makedirs(d, exist_ok=True)
        return d

    def gateway_process(self, config, **kw):
        """A Gateway object, not started (for start-failure tests)."""
        return self._own(Gateway(gatehouse_bin(), self.subdir(), config, **kw))

    def gateway(self, config, **kw):
        """Starts the gateway under test and waits until it listens."""
        gw = self.gateway_process(config, **kw)
        gw.start()
        return gw

    def close(self):
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception:
                pass
