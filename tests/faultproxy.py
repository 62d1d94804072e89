"""A fault-injecting TCP proxy for tests: put it between artfs and a real server on 127.0.0.1.

Tests must show that artfs keeps its promises when the network misbehaves, on real sockets and a
real server (moto's S3 server from :class:`artfs.testing.S3Server`, or any HTTP/1.1 server), never
by patching boto3 or httpx. This proxy listens on 127.0.0.1, relays each client connection to the
upstream server, and reads the client's HTTP/1.1 requests as they pass (request line, headers,
``Content-Length`` body), so a fault can be aimed at "the n-th request" even over keep-alive
connections. Responses are relayed as a byte stream (clients do not pipeline: a client sends its
next request only after reading the whole previous answer, so the bytes coming back after request
n are n's answer).

Faults, chosen per request when its headers have arrived (``action`` in :attr:`FaultProxy.log`):

``"error"``  the request never reaches the server; the proxy answers ``503 Slow Down`` (the
             status is :attr:`status`) itself, with an S3-style XML body, and closes the
             connection. (With ``Expect: 100-continue`` it answers before the body is sent, as a
             server would; otherwise it reads the body first.)
``"reset"``  the request reaches the server (so a write *happens*), but the answer is cut in
             the middle of its body (after its headers and half its ``Content-Length``; a short
             answer is cut in its headers) and the client's connection is reset (RST). An
             interim ``100 Continue`` is relayed whole: the request body follows it.
``"stall"``  the server stops answering: the request (and whatever the client sends after it)
             is read and dropped, so the client's sends complete and it waits for an answer
             that never comes (its read timeout is what is tested); nothing more is relayed on
             that connection. It stays open until the client closes it, :meth:`release` or
             :meth:`stop`.
``"pass"``   relayed unchanged.

What happens to each request (set at any time by the test; all are read when a request arrives):

* ``script``: ``{n: action}`` for exact request numbers (1-based, counted over every request
  that matches ``only``), e.g. ``{1: "reset"}``;
* ``stall_from`` / ``error_from`` / ``reset_from``: every matching request from number n on;
* ``error_rate`` / ``reset_rate``: probabilities per matching request (seeded: ``seed``);
* ``only``: a predicate ``(method, target) -> bool`` choosing which requests count and may be
  faulted (e.g. ``lambda m, t: "partNumber=" in t`` for the parts of multipart uploads); the
  others always pass and are not counted.

:meth:`refuse` closes the listening socket and the open connections (a client then gets
"connection refused": nothing listens on the port) and :meth:`accept` listens on the same port
again. :meth:`configure` sets several knobs at once and :meth:`clear` turns every fault off.
What happened is in :attr:`FaultProxy.log` (a :class:`Seen` per request, in arrival order;
``n`` is 0 for requests that ``only`` left alone) and :attr:`FaultProxy.requests` (how many
counted so far: ``stall_from=proxy.requests + 1`` stalls from the next one).

Bounded: every thread is a daemon; :meth:`stop` (also on leaving the ``with`` block) closes
every connection, including stalled ones; and the proxy stops itself after ``lifetime`` seconds
(default 300) so a forgotten proxy cannot hold a test run forever. A request with
``Transfer-Encoding: chunked`` cannot be framed by this reader: its connection is then relayed
unchanged and uncounted from that point (botocore and httpx send ``Content-Length``).

    with S3Server() as s3, FaultProxy(s3) as proxy:
        proxy.configure(error_rate=0.2, reset_rate=0.1)
        backend = S3Backend("s3://bucket", endpoint_url=proxy.url, timeout=5)
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

ACTIONS = ("pass", "error", "reset", "stall")

_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>injected by the test's fault proxy</Message></Error>"
)


@dataclass(frozen=True)
class Seen:
    """One request the proxy saw: its number among matching requests (0 if not matching)."""

    n: int
    method: str
    target: str
    action: str
    at: float = 0.0  #: time.monotonic() when it arrived


class _Conn:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.lock = threading.Lock()
        self.closed = False
        self.stalled = False
        self.cut_pending = False  # the answer now coming back is to be cut, then the client reset

    def close(self, *, reset: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        if reset:
            try:  # SO_LINGER 0: close() sends RST instead of FIN
                self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        for s in (self.client, self.upstream):
            # the shutdown wakes a thread blocked in recv() on the socket (close() alone does
            # not, and the socket only really closes when that recv returns); SHUT_RD sends
            # nothing, so the close that follows sends the RST
            try:
                s.shutdown(socket.SHUT_RD if reset and s is self.client else socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (a URL or ``host:port``); see the module."""

    def __init__(self, upstream: str, *, seed: int = 0, lifetime: float = 300.0,
                 status: int = 503) -> None:
        u = urlparse(upstream if "//" in upstream else f"tcp://{upstream}")
        assert u.hostname and u.port, f"{upstream!r}: need a host and a port"
        self.upstream = (u.hostname, u.port)
        self.lifetime = lifetime
        self.status = status
        self.script: dict[int, str] = {}
        self.stall_from: int | None = None
        self.error_from: int | None = None
        self.reset_from: int | None = None
        self.error_rate = 0.0
        self.reset_rate = 0.0
        self.only: Callable[[str, str], bool] | None = None
        self.log: list[Seen] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._count = 0
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._released = threading.Condition(self._lock)
        self._release_gen = 0
        self.port = 0

    # -- control -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        """How many matching requests have arrived so far."""
        with self._lock:
            return self._count

    def configure(self, **knobs: object) -> None:
        """Set several knobs at once (``error_rate=0.2, reset_rate=0.1``, ``stall_from=2``, ...)."""
        with self._lock:
            for k, v in knobs.items():
                if k not in ("script", "stall_from", "error_from", "reset_from", "error_rate",
                             "reset_rate", "only", "status"):
                    raise TypeError(f"unknown knob {k!r}")
                setattr(self, k, v)

    def clear(self) -> None:
        """No more faults (stalled connections stay stalled until :meth:`release`)."""
        self.configure(script={}, stall_from=None, error_from=None, reset_from=None,
                       error_rate=0.0, reset_rate=0.0)

    def release(self) -> None:
        """Close every stalled connection (their clients see the connection end)."""
        with self._lock:
            stalled = [c for c in self._conns if c.stalled]
        for c in stalled:
            self._finish(c)

    def refuse(self, *, drop: bool = True) -> None:
        """Stop listening: new connections are refused until :meth:`accept`. With ``drop`` (the
        default) the open connections are closed too, as when a server goes away; without it
        they keep working (a server that stopped accepting)."""
        with self._lock:
            s, self._listener = self._listener, None
            conns = list(self._conns) if drop else []
        if s is not None:
            try:  # wakes the thread blocked in accept(); close() alone would leave it listening
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for c in conns:
            self._finish(c)

    def accept(self) -> None:
        """Listen again (on the same port)."""
        with self._lock:
            if self._listener is not None:
                return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        with self._lock:
            self._listener = s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True,
                         name=f"faultproxy-{self.port}").start()

    def start(self) -> "FaultProxy":
        self.accept()
        threading.Thread(target=self._watchdog, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and close every connection (stalled ones too)."""
        self._stopped.set()
        self.refuse(drop=True)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------
    def _watchdog(self) -> None:
        if not self._stopped.wait(self.lifetime):
            self.stop()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse()/stop()
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, upstream)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._client_to_server, args=(conn,), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(conn,), daemon=True).start()

    def _decide(self, method: str, target: str) -> tuple[int, str]:
        with self._lock:
            if self.only is not None and not self.only(method, target):
                return 0, "pass"
            self._count += 1
            n = self._count
            if n in self.script:
                action = self.script[n]
            elif self.stall_from is not None and n >= self.stall_from:
                action = "stall"
            elif self.error_from is not None and n >= self.error_from:
                action = "error"
            elif self.reset_from is not None and n >= self.reset_from:
                action = "reset"
            else:
                r = self._rng.random()
                action = ("error" if r < self.error_rate
                          else "reset" if r < self.error_rate + self.reset_rate else "pass")
            assert action in ACTIONS, action
            return n, action

    def _finish(self, conn: _Conn, *, reset: bool = False) -> None:
        conn.close(reset=reset)
        with self._lock:
            self._conns.discard(conn)

    def _client_to_server(self, conn: _Conn) -> None:
        buf = b""
        body_left = 0
        framing = True
        try:
            while not conn.closed:
                if framing and body_left == 0 and b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    head += b"\r\n\r\n"
                    lines = head.decode("latin-1").split("\r\n")
                    method, target = (lines[0].split(" ") + ["", ""])[:2]
                    headers = {k.strip().lower(): v.strip()
                               for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                    if "chunked" in headers.get("transfer-encoding", "").lower():
                        framing = False  # cannot frame it: relay the rest as it is
                        conn.upstream.sendall(head)
                        continue
                    length = int(headers.get("content-length") or 0)
                    n, action = self._decide(method, target)
                    with self._lock:
                        self.log.append(Seen(n, method, target, action, time.monotonic()))
                    if action == "stall":
                        conn.stalled = True
                        while conn.client.recv(1 << 20):
                            pass  # swallowed: the client's sends complete, no answer comes
                        break  # the client gave up, or release()/stop() closed the connection
                    if action == "error":
                        if "100-continue" not in headers.get("expect", "").lower():
                            need = length - len(buf)
                            while need > 0:
                                data = conn.client.recv(min(need, 1 << 20))
                                if not data:
                                    break
                                need -= len(data)
                        self._answer_error(conn)
                        return
                    if action == "reset":
                        conn.cut_pending = True
                    conn.upstream.sendall(head)
                    body_left = length
                    continue
                if buf and (body_left > 0 or not framing):
                    take = len(buf) if not framing else min(body_left, len(buf))
                    conn.upstream.sendall(buf[:take])
                    buf = buf[take:]
                    body_left -= take if framing else 0
                    continue
                data = conn.client.recv(1 << 20)
                if not data:
                    break
                buf += data
        except OSError:
            pass
        self._finish(conn)

    def _answer_error(self, conn: _Conn) -> None:
        reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Slow Down",
                  504: "Gateway Timeout"}.get(self.status, "Error")
        answer = (f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: application/xml\r\n"
                  f"Content-Length: {len(_ERROR_BODY)}\r\nConnection: close\r\n\r\n").encode()
        try:
            conn.client.sendall(answer + _ERROR_BODY)
        except OSError:
            pass
        self._finish(conn)

    def _server_to_client(self, conn: _Conn) -> None:
        head = b""
        try:
            while not conn.closed:
                data = conn.upstream.recv(1 << 20)
                if not data or conn.stalled:
                    break
                if not conn.cut_pending:
                    conn.client.sendall(data)
                    continue
                head += data
                while head.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in head:
                    # "100 Continue" (werkzeug sends two): not the answer; the body follows it
                    top, _, head = head.partition(b"\r\n\r\n")
                    conn.client.sendall(top + b"\r\n\r\n")
                if b"\r\n\r\n" not in head and len(head) < 64 * 1024:
                    continue  # wait for the whole head to know how long the body is
                top, _, body = head.partition(b"\r\n\r\n")
                length = 0
                for ln in top.decode("latin-1").split("\r\n")[1:]:
                    k, _, v = ln.partition(":")
                    if k.strip().lower() == "content-length" and v.strip().isdigit():
                        length = int(v.strip())
                if length > 1:
                    keep = len(top) + 4 + length // 2
                    if len(head) < keep:
                        continue  # relay nothing until half the body is there
                else:
                    keep = max(1, len(top) // 2)  # no body to cut: cut the head
                conn.client.sendall(head[:keep])
                self._finish(conn, reset=True)
                return
        except OSError:
            pass
        if not conn.stalled:
            self._finish(conn)
