"""The playground's front door: an ASGI middleware in front of Gradio's FastAPI app.

It runs before Gradio routes a request, so before Gradio authenticates it and before any request
body is read:

- **Request sizes** (:class:`RequestGuard`): a body larger than its limit is refused with 413, by its
  ``Content-Length`` before a byte of it is read, and while it streams when it is sent chunked (at
  most the limit is ever held). The limits follow the playground's own (:func:`body_limits`).
- **Closed by default** when the server has logins: a request without a valid session cookie gets
  401 unless it is for the login page, the login form or a static asset (:data:`PUBLIC_PATHS`).
  Gradio leaves some of its own routes open (run history, heartbeats, startup events, tokens...);
  they stay closed here whatever a Gradio version adds.
- **Login throttling** (:class:`LoginThrottle`): failed logins are counted per client address and
  over all addresses; an address with too many failures is locked out for a while, and beyond the
  global rate every login attempt waits (429 with ``Retry-After``). Parallel connections do not help
  a guesser: logins are checked one at a time, each failure counted before the next attempt.

Nothing here imports Gradio; :func:`adaptmllm.apps.playground.app.launch` installs the middleware.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
import threading
import time
from typing import Any, Callable, Optional

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "LoginThrottle", "RequestGuard", "body_limits", "JSON_OVERHEAD_BYTES"]

log = logging.getLogger("adaptmllm.apps.playground.app")

PUBLIC_PATHS = {
    ("GET", "/"), ("GET", "/favicon.ico"), ("GET", "/theme.css"), ("GET", "/gradio_api/theme.css"),
    ("GET", "/robots.txt"), ("GET", "/config"), ("GET", "/gradio_api/login_check"), ("GET", "/logout"),
    ("POST", "/login"), ("GET", "/gradio_api/startup-events"),
}
"""``(method, path)`` a client may reach before signing in (a trailing ``/`` is ignored; HEAD counts as
GET): the page, its theme and icon, the login form. ``/config`` and ``/gradio_api/login_check`` only
answer 401 with the login message before a login (the page needs that answer to show the form);
``/gradio_api/startup-events`` is what Gradio itself calls once at launch (it runs the app's start-up
events once, then answers ``false``)."""

PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/")
"""Path prefixes of Gradio's static files (JavaScript, CSS, fonts), public too."""

JSON_OVERHEAD_BYTES = 64 * 1024
"""Room for everything in a request besides its text: JSON keys, session ids, multipart headers."""


def body_limits(max_input_chars: int, max_upload_bytes: int, max_item_chars: int = 5000,
                max_note_chars: int = 500) -> tuple[int, int]:
    """The largest request bodies (bytes) the playground accepts: ``(any request, an upload)``.

    A request carries at most one text field of ``max(max_input_chars, max_item_chars, max_note_chars)``
    characters (the translation box, or a marked span of an item); JSON may write a character as up to
    12 bytes (an escaped surrogate pair), plus :data:`JSON_OVERHEAD_BYTES`. An upload carries at most
    ``max_upload_bytes`` of file plus the multipart overhead.
    """
    text = max(int(max_input_chars), int(max_item_chars), int(max_note_chars))
    return 12 * text + JSON_OVERHEAD_BYTES, int(max_upload_bytes) + JSON_OVERHEAD_BYTES


class LoginThrottle:
    """Counts failed logins per client address and over all addresses (thread-safe).

    :class:`RequestGuard` checks one login at a time (a lock around :meth:`admit`, the password check
    and :meth:`done`), so each failure is counted before the next attempt is admitted: parallel
    connections do not multiply the guesses. A successful login is never counted.

    Args:
        max_failures: failed attempts an address may make within ``window_s`` seconds; reaching it
            locks the address out for ``lockout_s`` seconds (even with the right password).
        window_s: seconds a failed attempt counts for the per-address limit.
        lockout_s: seconds an address stays locked out.
        global_per_minute: failed attempts over all addresses in any 60 seconds; beyond it, every
            login attempt is refused until the oldest is a minute old (behind a share tunnel all
            clients may come from one address: this limit is what bounds guessing then).
        clock: seconds, monotonic (tests may pass their own).
    """

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, lockout_s: float = 300.0,
                 global_per_minute: int = 30, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.lockout_s = int(max_failures), float(window_s), float(lockout_s)
        self.global_per_minute = int(global_per_minute)
        self.clock = clock
        self._lock = threading.Lock()
        self._per_addr: dict[str, collections.deque] = {}
        self._global: collections.deque = collections.deque()
        self._locked_until: dict[str, float] = {}
        self.refused = 0
        self.failed = 0

    def _prune(self, now: float) -> None:
        while self._global and now - self._global[0] >= 60.0:
            self._global.popleft()
        for addr in [a for a, q in self._per_addr.items() if not q or now - q[-1] >= self.window_s]:
            del self._per_addr[addr]
        for addr in [a for a, t in self._locked_until.items() if t <= now]:
            del self._locked_until[addr]

    def admit(self, addr: str) -> Optional[float]:
        """May ``addr`` try a login now? Returns None (yes: check it, then call :meth:`done`) or the
        seconds to wait (locked out, or too many failures overall)."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            until = self._locked_until.get(addr)
            if until is not None:
                self.refused += 1
                return until - now
            if len(self._global) >= self.global_per_minute:
                self.refused += 1
                return max(1.0, 60.0 - (now - self._global[0]))
            return None

    def done(self, addr: str, ok: bool) -> None:
        """Record the outcome of an admitted attempt from ``addr`` (only failures count)."""
        if ok:
            return
        with self._lock:
            now = self.clock()
            self.failed += 1
            q = self._per_addr.setdefault(addr, collections.deque())
            while q and now - q[0] >= self.window_s:
                q.popleft()
            q.append(now)
            self._global.append(now)
            if len(q) >= self.max_failures:
                self._locked_until[addr] = now + self.lockout_s
                log.warning("login: a client address is locked out for %.0f s after %d failed attempts",
                            self.lockout_s, len(q))
            elif len(self._global) >= self.global_per_minute:
                log.warning("login: %d failed attempts in the last minute over all addresses; refusing logins "
                            "for a while", len(self._global))
            else:
                log.warning("failed login attempt")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def client_key(scope: dict) -> str:
    """The address a request comes from: the peer's, or, when the peer is this machine (a share tunnel
    or a local proxy), the first ``X-Forwarded-For`` address it passed on."""
    peer = (scope.get("client") or ("unknown", 0))[0] or "unknown"
    if _is_loopback(peer):
        for k, v in scope.get("headers") or []:
            if k == b"x-forwarded-for":
                first = v.decode("latin-1").split(",")[0].strip()
                if first:
                    return first
    return peer


async def _respond(send: Callable, status: int, detail: Any, headers: Optional[list] = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class RequestGuard:
    """ASGI middleware: request size limits, closed-by-default routes and login throttling (see the
    module's docstring).

    Args:
        app: the next ASGI application (Gradio's, inside its CORS and compression middleware).
        blocks: the launched ``gr.Blocks`` (read at request time: ``blocks.server_app`` holds the
            logins and the session tokens).
        body_limit: largest body in bytes of any request but an upload.
        upload_limit: largest body in bytes of ``/gradio_api/upload``.
        throttle: the :class:`LoginThrottle` (None: no throttling).
    """

    def __init__(self, app: Any, blocks: Any, body_limit: int, upload_limit: int,
                 throttle: Optional[LoginThrottle] = None) -> None:
        self.app, self.blocks = app, blocks
        self.body_limit, self.upload_limit = int(body_limit), int(upload_limit)
        self.throttle = throttle
        self._login_lock: Optional[asyncio.Lock] = None

    # -- who is asking -----------------------------------------------------------------------------
    def _auth_on(self) -> bool:
        server_app = getattr(self.blocks, "server_app", None)
        return server_app is not None and (getattr(server_app, "auth", None) is not None
                                           or getattr(server_app, "auth_dependency", None) is not None)

    def _signed_in(self, scope: dict) -> bool:
        server_app = getattr(self.blocks, "server_app", None)
        if server_app is None:
            return False
        from starlette.requests import cookie_parser

        cookies: dict[str, str] = {}
        for k, v in scope.get("headers") or []:
            if k == b"cookie":
                cookies.update(cookie_parser(v.decode("latin-1")))
        cid = getattr(server_app, "cookie_id", "")
        tokens = getattr(server_app, "tokens", {})
        for name in (f"access-token-{cid}", f"access-token-unsecure-{cid}"):
            token = cookies.get(name)
            if token and tokens.get(token) is not None:
                return True
        return False

    @staticmethod
    def is_public(method: str, path: str) -> bool:
        """Whether ``method path`` may be reached without signing in (:data:`PUBLIC_PATHS`)."""
        method = "GET" if method == "HEAD" else method
        p = path.rstrip("/") or "/"
        return (method, p) in PUBLIC_PATHS or (method == "GET" and path.startswith(PUBLIC_PREFIXES))

    # -- the middleware ------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        limit = self.upload_limit if path.rstrip("/").endswith("/upload") else self.body_limit
        length, chunked = None, False
        for k, v in scope.get("headers") or []:
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    await _respond(send, 400, "Malformed Content-Length.")
                    return
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if length is not None and length > limit:
            log.warning("refused a %d-byte request to %s (limit %d bytes)", length, path, limit)
            await _respond(send, 413, f"The request is too large ({length:,} bytes; the limit is {limit:,}).")
            return
        login = method == "POST" and (path.rstrip("/") or "/") == "/login" and self._auth_on()
        if chunked or (length is None and method not in ("GET", "HEAD")) or login:
            # a body of unknown size (and a login form) is read up to the limit, never further, before
            # anything else: the 413 comes before the 401, as for a Content-Length over the limit
            try:
                receive = await self._buffered(receive, limit)
            except _TooLarge:
                log.warning("refused a streamed request to %s over %d bytes", path, limit)
                await _respond(send, 413, f"The request is too large (the limit is {limit:,} bytes).")
                return
        if self._auth_on() and not self.is_public(method, path) and not self._signed_in(scope):
            await _respond(send, 401, "Not authenticated")
            return
        if not login or self.throttle is None:
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        status = {"code": 0}

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:  # one login check at a time: each failure counts before the next try
            wait = self.throttle.admit(key)
            if wait is not None:
                await _respond(send, 429, "Too many login attempts; try again later.",
                               [(b"retry-after", str(max(1, round(wait))).encode())])
                return
            try:
                await self.app(scope, receive, send_status)
            finally:
                self.throttle.done(key, status["code"] == 200)

    @staticmethod
    async def _buffered(receive: Callable, limit: int) -> Callable:
        """Read a body of unknown length, at most ``limit`` bytes (else :class:`_TooLarge`); return a
        ``receive`` that replays it."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message])
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                raise _TooLarge()
            chunks.append(body)
            if not message.get("more_body", False):
                break
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)


def _replay(messages: list, then: Optional[Callable] = None) -> Callable:
    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
