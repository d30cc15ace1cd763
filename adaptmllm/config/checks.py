"""The checks every section of the config shares: :class:`ConfigError` and :func:`check`, building a section
from a mapping (:func:`build_section`: unknown fields and secrets are refused), the run name (:func:`check_run_name`)
and the HPO storage URL (:func:`check_storage_url`, :func:`mask_storage_url`).

May import: adaptmllm.io, languages (nothing of adaptmllm.config: every other module of it imports this one).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from dataclasses import fields, is_dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field (dotted path) and the fix."""


def check(cond: bool, name: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"<name>: <msg>"`` (the dotted field and the fix) unless ``cond`` holds."""
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def build_section(cls: type, data: dict, prefix: str) -> Any:
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys are errors."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping of fields, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        _check_no_secret(name, key, value)
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known fields: {', '.join(known)}"
            raise ConfigError(f"{name}: unknown field{hint}")
        f = known[key]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and is_dataclass(sub) and isinstance(value, dict):
            value = build_section(sub, value, name)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|passwd|api_?key|auth)($|_)", re.IGNORECASE)
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
_SECRET_FIX = ("a config file is saved in every run folder, so it never holds secrets: set the Hugging Face token "
               "as the HF_TOKEN environment variable, or on Colab as the secret HF_TOKEN (key icon in the left bar)")


def _check_no_secret(name: str, key: Any, value: Any) -> None:
    """Refuse secrets in a config (they would be saved in config.yaml): a key named like a token or
    password, a value that looks like a Hugging Face token (``hf_...``), or a password inside
    ``hpo.storage``. The message never repeats the value.

    Raises:
        ConfigError: naming the field and where the secret belongs instead.
    """
    if isinstance(key, str) and _SECRET_KEY.search(key):
        raise ConfigError(f"{name}: looks like a secret; {_SECRET_FIX}")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, str) and _HF_TOKEN.search(v):
            raise ConfigError(f"{name}: holds what looks like a Hugging Face token (hf_...); {_SECRET_FIX}")
    if name == "hpo.storage" and isinstance(value, str) and value.strip():
        check_storage_url(value)


_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{d}{i}" for d in ("COM", "LPT") for i in list("123456789") + ["\u00b9", "\u00b2", "\u00b3"]}
_FORBIDDEN_CHARS = set('<>:"/\\|?*')


def check_run_name(name: Any, field_name: str = "name") -> str:
    """Check that ``name`` is a plain folder name on every platform (Linux, macOS, Windows), so that
    ``<runs_dir>/<name>`` stays inside ``runs_dir``. Returns the name.

    Refused: empty; ``.`` or ``..``; a path separator or other character Windows forbids
    (``/ \\ : * ? " < > |``); control characters; a leading or trailing space, or a trailing dot
    (Windows drops them); a Windows device name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``-``COM9``,
    ``LPT1``-``LPT9``, also with an extension such as ``nul.txt``); more than 255 bytes in UTF-8.

    Raises:
        ConfigError: naming ``field_name``, what is wrong and an example of a good name.
    """
    fix = "use a plain folder name such as 'demo' or 'en-ga_lora' (letters, digits, '-', '_', '.')"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field_name}: the run name is empty; {fix}")
    shown = ascii(name) if len(name) <= 80 else ascii(name[:80]) + "..."
    if name in (".", ".."):
        raise ConfigError(f"{field_name}: {shown} is not a folder name; {fix}")
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARS})
    if bad:
        raise ConfigError(f"{field_name}: {shown} holds {' '.join(bad)}, which is a path separator or is not "
                          f"allowed in a folder name on Windows; {fix}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise ConfigError(f"{field_name}: {shown} holds control characters; {fix}")
    if name != name.strip() or name.endswith("."):
        raise ConfigError(f"{field_name}: {shown} starts or ends with a space, or ends with a dot (Windows drops "
                          f"them); {fix}")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        raise ConfigError(f"{field_name}: {shown} is a reserved device name on Windows; {fix}")
    if len(name.encode("utf-8")) > 255:
        raise ConfigError(f"{field_name}: the run name is longer than 255 bytes; {fix}")
    return name


_URL_SECRET_KEYS = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
_URL_SAFE_KEYS = {"sslkey", "ssl_key", "sslkeylogfile", "read_default_file"}  # paths to files, not secrets


def mask_storage_url(url: Any) -> str:
    """A database URL safe to show or save: ``driver://user:***@host:port/database?key=***`` (every
    password and every query value hidden; parsed with SQLAlchemy's ``make_url``). A URL that does
    not parse is hidden whole (``<database URL, hidden>``)."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(str(url).strip())
    except Exception:  # noqa: BLE001 - whatever it is, it is not shown
        return "<database URL, hidden>"
    out = f"{u.drivername}://"
    if u.username:
        out += u.username + (":***" if u.password is not None else "") + "@"
    elif u.password is not None:
        out += ":***@"
    if u.host:
        out += u.host + (f":{u.port}" if u.port else "")
    if u.database:
        out += "/" + u.database
    if u.query:
        out += "?" + "&".join(f"{k}=***" for k in u.query)
    return out


def check_storage_url(url: Any, field_name: str = "hpo.storage") -> str:
    """Check an Optuna storage URL (SQLAlchemy form) before it is saved in ``config.yaml`` and
    ``hpo/study_config.yaml``: it must parse (``make_url``) and hold no secret, neither a password
    (``postgresql://user:PASSWORD@host/db``, whatever characters it holds) nor a query parameter named
    like one (``?password=``, ``?sslpassword=``, ``?passwd=``, ``?pwd=``, ``?token=``...). The
    password belongs in ``PGPASSWORD`` or ``~/.pgpass`` (PostgreSQL) or a MySQL option file. Messages
    never repeat the URL. Returns the URL, stripped.

    Raises:
        ConfigError: naming ``field_name`` and the fix.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{field_name}: expected a database URL such as postgresql://user@host/db, got "
                          f"{type(url).__name__}")
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url.strip())
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        raise ConfigError(f"{field_name}: checking the URL needs sqlalchemy (pip install sqlalchemy)") from None
    except Exception:  # noqa: BLE001 - the URL (maybe with a password) is never repeated
        raise ConfigError(f"{field_name}: not a database URL such as postgresql://user@host/db or "
                          "sqlite:////abs/path/study.db (the value is not shown: it may hold a password)") from None
    fix = ("drop it from the URL (postgresql://user@host/db) and give it through the PGPASSWORD environment "
           "variable or ~/.pgpass (PostgreSQL), or a MySQL option file (?read_default_file=~/.my.cnf)")
    if u.password is not None:
        raise ConfigError(f"{field_name}: the URL {mask_storage_url(url)} holds a password, which would be saved "
                          f"in config.yaml; {fix}")
    secret = [k for k in u.query if _URL_SECRET_KEYS.search(k) and k.lower() not in _URL_SAFE_KEYS]
    if secret:
        raise ConfigError(f"{field_name}: the URL {mask_storage_url(url)} holds a secret in its query "
                          f"({', '.join(secret)}), which would be saved in config.yaml; {fix}")
    return url.strip()
