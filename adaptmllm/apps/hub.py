"""Share a fine-tuned model on the Hugging Face Hub: the run's ``model/`` folder (weights,
tokenizer and the model card ``README.md`` that every run writes) is uploaded with
``huggingface_hub.HfApi().upload_folder``.

    from adaptmllm.apps.hub import push_to_hub
    url = push_to_hub("runs/demo", "your-name/nllb-en-ga")        # or: adaptmllm push --run runs/demo --repo ...

The token is read from the ``HF_TOKEN`` environment variable (or ``HUGGING_FACE_HUB_TOKEN``), or
on Colab from the ``HF_TOKEN`` secret, and is passed to each call only: it is never written to a
file, logged, or put into an error message (no ``huggingface_hub.login``, which would store it).
Without network access, or with ``HF_HUB_OFFLINE=1``, the upload fails with :class:`HubError`
saying so and where the model folder is.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional

__all__ = ["HubError", "get_token", "model_folder", "push_to_hub"]

log = logging.getLogger("adaptmllm")

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""Environment variables read for the token, in this order; then the Colab secret ``HF_TOKEN``."""
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


class HubError(RuntimeError):
    """The model could not be uploaded; the message says why and what to do (never the token)."""


def _colab_secret(name: str) -> Optional[str]:
    try:
        from google.colab import userdata  # type: ignore
    except ImportError:
        return None
    try:
        return userdata.get(name) or None
    except Exception:  # SecretNotFoundError, NotebookAccessError, TimeoutException: no secret for us
        return None


def get_token() -> Optional[str]:
    """The Hugging Face token: ``$HF_TOKEN``, ``$HUGGING_FACE_HUB_TOKEN``, else the Colab secret
    ``HF_TOKEN`` (None when there is none). Never stored anywhere."""
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    value = _colab_secret("HF_TOKEN")
    return value.strip() if value else None


def model_folder(path: str | os.PathLike) -> Path:
    """The model folder to upload: ``path`` itself when it holds a saved model (``config.json``),
    else ``path/model`` (a run folder).

    Raises:
        HubError: neither holds a model, or the model card ``README.md`` is missing.
    """
    p = Path(path)
    for candidate in (p, p / "model"):
        if (candidate / "config.json").is_file():
            if not (candidate / "README.md").is_file():
                raise HubError(f"{candidate}: no model card (README.md); a finished `adaptmllm run` writes one")
            return candidate
    raise HubError(f"{p}: no model there (no config.json in it nor in {p / 'model'}); give a run folder "
                   "such as runs/demo or its model/ folder, after the run has finished")


def _is_true(value: Optional[str]) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _offline() -> bool:
    if _is_true(os.environ.get("HF_HUB_OFFLINE")) or _is_true(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)  # read when huggingface_hub was imported
    except Exception:  # pragma: no cover
        return False


def _redact(text: str, token: Optional[str]) -> str:
    return text.replace(token, "***") if token else text


def _friendly(e: BaseException, endpoint: str, repo_id: str, folder: Path, token: str) -> HubError:
    """A HubError for an exception of huggingface_hub or the HTTP layer."""
    later = f" The model stays in {folder}; upload it later with `adaptmllm push --run {folder} --repo {repo_id}`."
    status = getattr(getattr(e, "response", None), "status_code", None)
    name = type(e).__name__
    if name == "OfflineModeIsEnabled":
        return HubError("cannot upload: Hugging Face offline mode is on (HF_HUB_OFFLINE=1); unset it and "
                        "try again with network access." + later)
    if status == 401:
        return HubError("the Hugging Face Hub rejected the token (401 Unauthorized): make a token with write "
                        "access at huggingface.co/settings/tokens and set it as HF_TOKEN." + later)
    if status == 403:
        return HubError(f"the token may not write to {repo_id} (403 Forbidden): use a token with write access "
                        "to that user or organisation." + later)
    if status is not None:
        return HubError(f"the Hugging Face Hub refused the upload to {repo_id} (HTTP {status}): "
                        f"{_redact(str(e), token).splitlines()[0][:300]}." + later)
    if isinstance(e, (ConnectionError, OSError, TimeoutError)) or "Connect" in name or "Timeout" in name \
            or "Network" in name or "Transport" in name:
        return HubError(f"could not reach the Hugging Face Hub at {endpoint} ({name}): check the network "
                        "connection (or HF_ENDPOINT)." + later)
    detail = _redact(str(e), token).splitlines()[0][:300] if str(e) else ""
    return HubError(f"upload to {repo_id} failed ({name}: {detail})." + later)


def push_to_hub(path: str | os.PathLike, repo_id: str, *, private: bool = True, token: Optional[str] = None,
                commit_message: Optional[str] = None, endpoint: Optional[str] = None) -> str:
    """Upload a run's model folder (with its model card) to the Hub repository ``repo_id``,
    creating it (private by default) if needed. Returns the repository URL.

    Args:
        path: a run folder (``runs/demo``) or a model folder (``runs/demo/model``).
        repo_id: ``user-or-org/name``.
        private: create the repository as private (an existing one keeps its visibility).
        token: a token with write access (default :func:`get_token`); used for the calls only.
        commit_message: default ``"adaptmllm: upload <folder>"``.
        endpoint: the Hub address (default ``$HF_ENDPOINT``, else huggingface.co).
    Raises:
        HubError: no model there, a malformed ``repo_id``, no token, offline mode, the Hub
            unreachable or refusing; the message says what to do and never holds the token.
    """
    folder = model_folder(path)
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id.strip()):
        raise HubError(f"{repo_id!r} is not a Hub repository id; give one such as 'your-name/nllb-en-ga'")
    repo_id = repo_id.strip()
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: set the HF_TOKEN environment variable, or on Colab add a secret "
                       "named HF_TOKEN (key icon in the left bar) and give this notebook access; the token needs "
                       "write access (huggingface.co/settings/tokens)")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    if _offline():
        raise HubError("cannot upload: Hugging Face offline mode is on (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1); "
                       f"unset it and try again with network access. The model stays in {folder}.")
    try:
        from huggingface_hub import HfApi
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise HubError("huggingface_hub is not installed: pip install huggingface_hub") from e
    api = HfApi(endpoint=endpoint)
    try:
        url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), token=token,
                          commit_message=commit_message or f"adaptmllm: upload {folder.parent.name or folder.name}",
                          ignore_patterns=["checkpoint-*", "*.tmp", ".*"])
    except HubError:
        raise
    except Exception as e:  # huggingface_hub and HTTP errors: one clear message, no token, no traceback chain
        raise _friendly(e, endpoint, repo_id, folder, token) from None
    log.info("uploaded %s to %s", folder, repo_id)
    return str(getattr(url, "url", None) or f"{endpoint}/{repo_id}")

