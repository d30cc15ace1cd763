"""Sharing a model on the Hugging Face Hub: token from the environment or Colab secrets, never
written anywhere; clear errors offline, with an unreachable Hub, and for refused tokens. No
network: the Hub is either unreachable (a closed port on 127.0.0.1) or a fake HfApi."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, free_port  # noqa: E402

from adaptmllm.apps import hub
from adaptmllm.apps.hub import HubError, get_token, model_folder, push_to_hub

FAKE = "hf_FAKEtokenPLANTEDbyTHEtests0123456789"


@pytest.fixture()
def run_dir(tmp_path):
    """A finished run folder's shape: model/ with config.json, weights and the model card."""
    model = tmp_path / "runs" / "demo" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "m2m_100"}', encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    (model / "README.md").write_text("---\nlicense: apache-2.0\n---\n# demo\n", encoding="utf-8")
    return model.parent


@pytest.fixture()
def no_token(monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


def _colab_with_secret(monkeypatch, value):
    """A fake google.colab whose userdata.get returns ``value`` (or raises like a missing secret)."""
    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")

    def get(name):
        if value is None:
            raise RuntimeError("SecretNotFoundError: Secret HF_TOKEN does not exist.")
        return value

    colab.userdata = SimpleNamespace(get=get)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", colab.userdata)


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_token_comes_from_the_environment_then_colab_secrets(monkeypatch, no_token):
    assert get_token() is None
    _colab_with_secret(monkeypatch, None)
    assert get_token() is None  # a missing secret is no token, not a crash
    _colab_with_secret(monkeypatch, FAKE + "-colab")
    assert get_token() == FAKE + "-colab"
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", FAKE + "-old")
    assert get_token() == FAKE + "-old"
    monkeypatch.setenv("HF_TOKEN", FAKE)
    assert get_token() == FAKE


def test_model_folder(run_dir, tmp_path):
    assert model_folder(run_dir) == run_dir / "model" and model_folder(run_dir / "model") == run_dir / "model"
    with pytest.raises(HubError, match="no model there"):
        model_folder(tmp_path / "nothing")
    (run_dir / "model" / "README.md").unlink()
    with pytest.raises(HubError, match="no model card"):
        model_folder(run_dir)


def test_no_token_or_bad_repo_is_a_clear_error(run_dir, no_token):
    with pytest.raises(HubError, match="no Hugging Face token: set the HF_TOKEN"):
        push_to_hub(run_dir, "me/demo")
    with pytest.raises(HubError, match="not a Hub repository id"):
        push_to_hub(run_dir, "just-a-name", token=FAKE)


def test_offline_mode_fails_clearly_and_keeps_the_token_secret(run_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE)
    with pytest.raises(HubError) as err:
        push_to_hub(run_dir, "me/demo")
    assert "offline mode is on (HF_HUB_OFFLINE=1" in str(err.value) and str(run_dir / "model") in str(err.value)
    assert FAKE not in str(err.value)
    assert _files_containing(tmp_path, FAKE) == []


class _FakeApi:
    """Stands in for huggingface_hub.HfApi: records calls, or raises ``fail`` on create_repo."""

    calls: list = []
    fail: Exception | None = None

    def __init__(self, endpoint=None, **kw):
        self.endpoint = endpoint

    def create_repo(self, repo_id, **kw):
        type(self).calls.append(("create_repo", repo_id, kw))
        if type(self).fail is not None:
            raise type(self).fail
        return SimpleNamespace(url=f"{self.endpoint}/{repo_id}")

    def upload_folder(self, **kw):
        type(self).calls.append(("upload_folder", kw["repo_id"], kw))


@pytest.fixture()
def fake_api(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.calls, _FakeApi.fail = [], None
    return _FakeApi


def test_push_uploads_the_model_folder_with_its_card(run_dir, fake_api, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", FAKE)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    url = push_to_hub(run_dir, "me/demo")
    assert url == "https://huggingface.co/me/demo"
    (c_name, c_repo, c_kw), (u_name, u_repo, u_kw) = fake_api.calls
    assert (c_name, c_repo, c_kw["private"], c_kw["exist_ok"]) == ("create_repo", "me/demo", True, True)
    assert c_kw["token"] == FAKE
    assert (u_name, u_kw["folder_path"], u_kw["token"]) == ("upload_folder", str(run_dir / "model"), FAKE)
    assert "checkpoint-*" in u_kw["ignore_patterns"]
    assert _files_containing(tmp_path, FAKE) == []


@pytest.mark.parametrize("status, expected", [(401, "rejected the token (401"), (403, "may not write to me/demo"),
                                              (500, "refused the upload to me/demo (HTTP 500)")])
def test_refusals_are_explained_without_the_token(run_dir, fake_api, status, expected):
    err = RuntimeError(f"Client error for url https://huggingface.co/api/repos/create (Authorization: Bearer {FAKE})")
    err.response = SimpleNamespace(status_code=status)
    fake_api.fail = err
    with pytest.raises(HubError) as info:
        push_to_hub(run_dir, "me/demo", token=FAKE)
    assert expected in str(info.value) and FAKE not in str(info.value)
    assert info.value.__cause__ is None  # no chained traceback carrying the token either


def test_cli_push_with_an_unreachable_hub_fails_clearly_and_writes_no_token(run_dir, tmp_path):
    """``adaptmllm push`` against a closed port: a clear error, exit 2, and the planted token in no
    output and no file (HF_HOME and HOME point into tmp_path, so any cache write would be seen)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_TOKEN": FAKE, "HF_HOME": str(tmp_path / "hf-home"), "HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "adaptmllm.cli", "push", "--run", str(run_dir), "--repo", "me/demo"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"could not reach the Hugging Face Hub at http://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr and "adaptmllm push --run" in proc.stderr
    assert FAKE not in proc.stdout + proc.stderr
    assert _files_containing(tmp_path, FAKE) == []


def test_cli_push_offline(run_dir, tmp_path, monkeypatch, capsys):
    from adaptmllm.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE)
    assert main(["push", "--run", str(run_dir), "--repo", "me/demo"]) == 2
    out = capsys.readouterr()
    assert "offline mode is on" in out.err and FAKE not in out.err + out.out


def test_hub_module_is_light():
    """Importing adaptmllm.apps.hub does not import huggingface_hub (only pushing does)."""
    code = "import sys, adaptmllm.apps.hub; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert hub.TOKEN_VARIABLES[0] == "HF_TOKEN"
