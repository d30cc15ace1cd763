"""Who may use a shared playground: ``user:password`` logins (constant-time check), share only with a login, and
tokens redacted from the logs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

from adaptmllm.hardware import in_colab

__all__ = ["ShareError", "AuthError", "parse_auth", "check_share", "MIN_SHARE_PASSWORD_CHARS"]

Auth = Union[tuple[str, str], Sequence[tuple[str, str]]]


class ShareError(ValueError):
    """Sharing was asked for without authentication (see :func:`check_share`)."""


class AuthError(ValueError):
    """A malformed login (``USER:PASSWORD``); the message never includes the password."""


class _Redactor(logging.Filter):
    """Replaces secrets (passwords, Hugging Face tokens) in log records by ``***``."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Sequence[str]) -> None:
        """Redact these too (strings shorter than 4 characters are ignored)."""
        self.secrets = sorted(set(self.secrets) | {s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        text = msg
        for s in self.secrets:
            text = text.replace(s, "***")
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc = record.exc_text
        if exc:
            for s in self.secrets:
                exc = exc.replace(s, "***")
            record.exc_text = exc
        if text != msg:
            record.msg, record.args = text, None
        return True


def _hf_tokens() -> list[str]:
    out = [os.environ.get(k, "") for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN")]
    try:
        from huggingface_hub import get_token

        out.append(get_token() or "")
    except Exception:  # noqa: BLE001 - no hub library or no token file
        pass
    return [t for t in out if t]


_REDACTOR = _Redactor()


def install_redactor(secrets: Sequence[str]) -> _Redactor:
    """Redact ``secrets`` and the Hugging Face tokens from the records of the root logger's
    handlers and of the adaptmllm, uvicorn, gradio and httpx loggers (one filter per process)."""
    _REDACTOR.add(list(secrets) + _hf_tokens())
    for name in ("", "adaptmllm", "uvicorn", "uvicorn.error", "uvicorn.access", "gradio", "httpx"):
        lg = logging.getLogger(name)
        for target in [lg, *lg.handlers]:
            if _REDACTOR not in target.filters:
                target.addFilter(_REDACTOR)
    return _REDACTOR


# -- auth and sharing ---------------------------------------------------------------------------------------
def parse_auth(auth: Any) -> Optional[list[tuple[str, str]]]:
    """Normalise ``auth``: ``"user:password"``, ``("user", "password")``, a list of either, or None.

    Returns a list of ``(user, password)`` or None.

    Raises:
        AuthError: a string without ``:``, an empty user name or password (the message never
            includes the password).
    """
    if auth is None or auth == "" or auth == []:
        return None
    single = isinstance(auth, str) or (isinstance(auth, tuple) and len(auth) == 2 and all(
        isinstance(x, str) for x in auth))
    entries = [auth] if single else list(auth)
    out = []
    for a in entries:
        if isinstance(a, str):
            if ":" not in a:
                raise AuthError("--auth: give USER:PASSWORD (a colon between the user name and the password)")
            user, pw = a.split(":", 1)
        elif isinstance(a, (tuple, list)) and len(a) == 2:
            user, pw = a
        else:
            raise AuthError("auth: give ('user', 'password'), 'user:password' or a list of them")
        if not str(user).strip() or not str(pw):
            raise AuthError("--auth: the user name and the password must not be empty")
        out.append((str(user).strip(), str(pw)))
    return out


def auth_checker(users: list[tuple[str, str]]) -> Callable:
    """An async login check with a constant-time comparison. Guessing is bounded before it gets here:
    :class:`adaptmllm.apps.playground.webguard.LoginThrottle` counts attempts per client address and over all."""
    table = {u: p.encode() for u, p in users}

    async def check(username: str, password: str) -> bool:
        want = table.get(username)
        ok = hmac.compare_digest(want if want is not None else b"\0" * 16, (password or "").encode())
        if not (ok and want is not None):
            await asyncio.sleep(0.05)  # a failure is never faster than a success
            return False
        return True

    return check


def check_share(share: Optional[bool], auth: Any, insecure_share: bool = False) -> bool:
    """Decide whether the app is shared and refuse sharing without authentication.

    ``share=None`` means Gradio's default: shared on Colab and hosted notebooks or when
    ``GRADIO_SHARE=true``. Returns the effective ``share``.

    Raises:
        ShareError: sharing without ``auth`` and without ``insecure_share``, or with a password shorter
            than :data:`MIN_SHARE_PASSWORD_CHARS` characters (naming the user, never the password).
    """
    effective = bool(share) if share is not None else (
        in_colab() or os.environ.get("GRADIO_SHARE", "").lower() == "true")
    users = parse_auth(auth)
    if effective and not users and not insecure_share:
        raise ShareError("a shared link is public: give a user name and password (--auth USER:PASSWORD, or "
                         "auth=('user', 'password') in Python), or pass --insecure-share to share without one")
    if effective:
        short = [u for u, p in users or [] if len(p) < MIN_SHARE_PASSWORD_CHARS]
        if short:
            raise ShareError(f"a shared link is public: the password of {', '.join(repr(u) for u in short)} is shorter "
                             f"than {MIN_SHARE_PASSWORD_CHARS} characters; use a longer one, e.g. from "
                             "python -c \"import secrets; print(secrets.token_urlsafe(16))\"")
    return effective


MIN_SHARE_PASSWORD_CHARS = 12
"""Shortest password accepted for a shared (public) link."""
