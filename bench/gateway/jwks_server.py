#!/usr/bin/env python3
"""Serves one JWKS file on 127.0.0.1 for the gateway benchmark.

  jwks_server.py PORT FILE     GET /jwks.json -> FILE (Cache-Control: max-age=3600), else 404

The long max-age keeps the gateway from refetching during a run (its default lifetime is 300 s).
"""
import http.server
import sys

PORT, FILE = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path.split("?")[0] != "/jwks.json":
            self.send_error(404)
            return
        body = open(FILE, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "public, max-age=3600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("jwks: " + (fmt % args) + "\n")


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
