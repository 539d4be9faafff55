"""A stand-in Application Insights ingestion endpoint for tests, on 127.0.0.1.

It accepts ``POST .../v2.1/track`` with a JSON array (or newline-delimited JSON) of envelopes,
gzip-compressed or not, records each request's raw body and its envelopes, and answers like the
real service. ``mode`` makes it fail: ``"ok"`` (200), ``"fail"`` (500, nothing recorded) or
``"delay"`` (sleep ``delay`` seconds, then 200). With ``token``, a request must carry
``Authorization: Bearer <token>`` (Entra ID) or is answered 401 and recorded in ``refused``;
with ``tls`` (certificate and key files) it serves HTTPS, as bearer tokens require.
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Collector:
    """An ingestion endpoint running on a background thread; use as a context manager."""

    def __init__(
        self, mode: str = "ok", *, delay: float = 0.0, token: str | None = None, tls: tuple[str, str] | None = None
    ) -> None:
        self.mode = mode
        self.delay = delay
        self.token = token
        self.refused = 0
        self.authorizations: list[str] = []
        self.envelopes: list[dict[str, Any]] = []
        self.bodies: list[str] = []
        self.attempts = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="collector", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def connection_string(self, key: str | None = None) -> str:
        return f"InstrumentationKey={key or uuid.uuid4()};IngestionEndpoint={self.endpoint}"

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Envelopes of one kind: ``Message``, ``Exception``, ``Request``, ``RemoteDependency``, ``Metric``."""
        with self._lock:
            return [e for e in self.envelopes if e["name"] == f"Microsoft.ApplicationInsights.{kind}"]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.05)
        return condition()

    def _receive(self, body: bytes, encoding: str | None) -> tuple[int, dict[str, Any]]:
        if encoding == "gzip":
            body = gzip.decompress(body)
        text = body.decode("utf-8")
        stripped = text.strip()
        items = (
            json.loads(stripped) if stripped.startswith("[") else [json.loads(line) for line in stripped.splitlines()]
        )
        with self._lock:
            self.attempts += 1
        if self.mode == "fail":
            return 500, {"itemsReceived": len(items), "itemsAccepted": 0, "errors": []}
        if self.mode == "delay":
            time.sleep(self.delay)
        with self._lock:
            self.bodies.append(text)
            self.envelopes.extend(items)
        return 200, {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                path = "/" + "/".join(p for p in self.path.split("?")[0].split("/") if p)
                if not path.endswith("/v2.1/track"):
                    self._reply(404, {"error": f"unknown path {self.path}"})
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                authorization = self.headers.get("Authorization", "")
                with collector._lock:
                    collector.authorizations.append(authorization)
                if collector.token is not None and authorization != f"Bearer {collector.token}":
                    with collector._lock:
                        collector.refused += 1
                    self._reply(401, {"error": "missing or wrong bearer token"})
                    return
                try:
                    status, answer = collector._receive(body, self.headers.get("Content-Encoding"))
                except (ValueError, OSError) as e:
                    status, answer = 400, {"error": str(e)}
                self._reply(status, answer)

            def _reply(self, status: int, answer: dict[str, Any]) -> None:
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (a timeout test): nothing to answer
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
