"""A real S3 server on loopback for tests and benchmarks: moto's server in its own process, and
a proxy in front of it that fails chosen requests like a flaky store."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# A bucket and credentials for the loopback server; the secret must never show in any output.
BUCKET = "freqscan-test"
KEY_ID = "AKIAFREQSCANTESTKEY7"
SECRET = "fRqScAn/TeSt+SeCrEt/never-in-any-output-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """``moto_server`` on a free loopback port in its own process; yields its endpoint.

    Not ThreadedMotoServer: some deltalake calls (``DeltaTable.is_deltatable``) hold the GIL
    while they wait for the store, so a server thread in the test process could never answer.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# S3's error bodies for the faults the proxy answers; botocore reads the code from them.
_FAULT_BODIES = {
    404: b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
    b"<Message>The specified key does not exist.</Message></Error>",
    503: b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable</Code>"
    b"<Message>The service is unavailable.</Message></Error>",
}
# Connection-level headers the proxy does not pass on (it sets its own Content-Length).
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class FaultProxy:
    """A threaded HTTP proxy to an S3 endpoint that answers chosen GETs with an error.

    Path-style requests only (what botocore sends to an IP endpoint): an object's path is
    ``/bucket/key``.

    Args:
        upstream: The endpoint every request that is not faulted goes to.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream).netloc
        # (method, path) -> requests received / answered with a fault.
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faulted: Counter[tuple[str, str]] = Counter()
        self._faults: dict[str, tuple[int, int]] = {}  # path -> (status, GETs left to fail)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_gets(self, bucket: str, key: str, times: int, status: int) -> None:
        """Answer the next ``times`` GETs of the object with ``status`` (404 or 503)."""
        with self._lock:
            self._faults[f"/{bucket}/{key}"] = (status, times)

    def fault_for(self, method: str, path: str) -> int | None:
        """Count the request; the status to answer it with, or ``None`` to forward it."""
        with self._lock:
            self.requests[method, path] += 1
            status, left = self._faults.get(path, (0, 0))
            if method != "GET" or left == 0:
                return None
            self._faults[path] = (status, left - 1)
            self.faulted[method, path] += 1
            return status

    def serve(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def do_GET(self) -> None:
            self._relay()

        do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = proxy.fault_for(self.command, urlsplit(self.path).path)
            if status is not None:
                self._answer(status, [("Content-Type", "application/xml")], _FAULT_BODIES[status])
                return
            conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = conn.getresponse()
                data = response.read()
                headers = [
                    (k, v) for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS
                ]
                # A HEAD's Content-Length is the object's size, not this (empty) body's.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self._answer(response.status, headers, data, length)
            finally:
                conn.close()

        def _answer(
            self,
            status: int,
            headers: list[tuple[str, str]],
            body: bytes,
            length: str | None = None,
        ) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", length or str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` to ``upstream`` serving on a loopback port in a thread."""
    proxy = FaultProxy(upstream)
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.close()
        thread.join(timeout=30)


@contextmanager
def aws_environment(endpoint: str, **extra: str) -> Iterator[None]:
    """Point every AWS client of this process (and of Ray workers started inside) at
    ``endpoint`` with the test credentials, through the standard ``AWS_*`` environment;
    restore the environment afterwards. ``extra``: more variables (``AWS_MAX_ATTEMPTS="1"``).

    ``AWS_ALLOW_HTTP`` is deliberately unset: freqscan derives it from an ``http://`` endpoint.
    """
    import s3fs

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }
    unset = ("AWS_ALLOW_HTTP", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN")
    saved = {k: os.environ.get(k) for k in (*env, *unset)}
    os.environ.update(env)
    for k in unset:
        os.environ.pop(k, None)
    s3fs.S3FileSystem.clear_instance_cache()  # cached clients keep the endpoint they were made with
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
