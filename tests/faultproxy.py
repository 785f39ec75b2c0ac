"""A fault-injecting HTTP proxy for the S3 server: a small threaded stdlib server on 127.0.0.1 that
forwards every request to the upstream endpoint unless a rule matches it.

A rule matches on the method, a substring of the path and a substring of the query, with a
probability; it then answers an S3 error (``503 SlowDown`` by default) or holds the request until a
gate is opened (to make two writers overlap at a known point). Counters say how often each rule
fired, so a test can check that faults were really injected.
"""

from __future__ import annotations

import http.client
import random
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
ERROR_BODY = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'


@dataclass
class Rule:
    """Requests this rule applies to, and what happens to them."""

    method: str | None = None  # None: any method
    path: str = ""  # substring of the decoded path (``/bucket/key`` with path-style access)
    query: str = ""  # substring of the query string
    probability: float = 1.0
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    gate: threading.Event | None = None  # hold matching requests until this is set, then forward them
    arrived: threading.Event = field(default_factory=threading.Event)  # set when a request matched
    fired: int = 0

    def matches(self, method: str, path: str, query: str) -> bool:
        return (self.method is None or self.method == method) and self.path in path and self.query in query


class FaultProxy:
    """``with FaultProxy(upstream) as proxy:`` serves on ``proxy.endpoint`` until the block ends."""

    def __init__(self, upstream: str, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.rules: list[Rule] = []
        self.requests = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def faults(self) -> int:
        return sum(r.fired for r in self.rules if r.gate is None)

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            self.rules.remove(rule)
        if rule.gate is not None:
            rule.gate.set()

    def clear(self) -> None:
        with self._lock:
            for rule in self.rules:
                if rule.gate is not None:
                    rule.gate.set()  # never leave a request hanging
            self.rules = []

    def _decide(self, method: str, path: str, query: str) -> Rule | None:
        with self._lock:
            self.requests += 1
            for rule in self.rules:
                if rule.matches(method, path, query) and self._random.random() < rule.probability:
                    rule.fired += 1
                    return rule
        return None

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.clear()
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and ``Expect: 100-continue`` like a real S3

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: request lines would only clutter test output

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                path, _, query = self.path.partition("?")
                rule = proxy._decide(self.command, unquote(path), query)  # keys arrive URL-encoded
                if rule is not None:
                    rule.arrived.set()
                    if rule.gate is None:
                        self._error(rule)
                        return
                    rule.gate.wait(timeout=120)
                self._forward(body)

            def _error(self, rule: Rule) -> None:
                payload = ERROR_BODY.format(code=rule.code, message=rule.message).encode()
                self.send_response(rule.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _forward(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"expect"}}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    head = self.command == "HEAD"  # a HEAD answer keeps the object's Content-Length
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP and (head or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if not head:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
