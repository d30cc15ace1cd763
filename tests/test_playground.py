"""The playground's API with gradio_client on a local launch: translation (text and files), limits,
friendly errors, authentication, sharing rules, secrets, and human evaluation across a restart.

One server per module (the tiny run's model as both fine-tuned and baseline model), with a
password, as a shared server has.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from adaptmllm.config import ServeConfig  # noqa: E402
from conftest import free_port  # noqa: E402

USER, PASSWORD = "translator", "pw-Zq8-secret-Lx3"
HF_SECRET = "hf_TESTtokenVALUEthatMustNeverShow"
LIMITS = dict(max_input_chars=300, max_file_lines=20, max_upload_bytes=4000, eval_segments=5)


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """A launched playground over the tiny run (baseline = the same model), with logs captured."""
    from adaptmllm.apps.playground.app import serve

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_TOKEN", HF_SECRET)
    db = tmp_path_factory.mktemp("he") / "human_eval.sqlite"
    cfg = ServeConfig(port=free_port(), **LIMITS)
    srv = serve(tiny_run.model_dir, tiny_run.model_dir, run_dir=tiny_run.run_dir, db=db, config=cfg,
                auth=(USER, PASSWORD), show_results=True, admins=[USER], quiet=True)
    srv.db, srv.config, srv.log = db, cfg, stream
    yield srv
    srv.close()
    mp.undo()
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    c = Client(server.local_url, auth=(USER, PASSWORD), verbose=False)
    yield c
    c.close()


def _app_error(fn, *args, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as ei:
        fn(*args, **kwargs)
    return str(ei.value)


def test_factory_never_launches_and_import_is_light(server):
    code = ("import sys, adaptmllm.apps.playground.app, adaptmllm.evaluation.human; "
            "print('gradio' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    from adaptmllm.apps.playground.session import Playground
    from adaptmllm.apps.playground.app import build_app

    pg = Playground(server.playground.finetuned, config=server.config)
    app = build_app(pg)
    assert not app.is_running and getattr(app, "server", None) is None  # built, not launched


def test_translate_endpoint_side_by_side(client):
    fine, base = client.predict("The nurse treats the patient.\n\nThe red child sees a child.", "eng_Latn", "qaa_Latn",
                                2, 64, api_name="/translate")
    lines = fine.split("\n")
    assert len(lines) == 3 and lines[0] and lines[1] == "" and lines[2]
    assert base == fine  # the test serves the same model as baseline


def test_translate_file_txt_and_tsv(client, tmp_path):
    from gradio_client import handle_file

    txt = tmp_path / "in.txt"
    txt.write_text("The nurse treats the patient.\n\nThe red child sees a child.\n", encoding="utf-8")
    path, msg = client.predict(handle_file(str(txt)), "eng_Latn", "qaa_Latn", 1, 64, api_name="/translate_file")
    out = Path(path).read_text(encoding="utf-8").split("\n")
    assert "Translated 2 segments" in msg and len(out) == 4 and out[0] and out[1] == "" and out[3] == ""
    tsv = tmp_path / "in.tsv"
    tsv.write_text("source\tnote\nThe nurse treats the patient.\tx\nA child.\ty\n", encoding="utf-8")
    path, _ = client.predict(handle_file(str(tsv)), "eng_Latn", "qaa_Latn", 1, 64, api_name="/translate_file")
    rows = [r.split("\t") for r in Path(path).read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["source", "translation", "baseline"] and len(rows) == 3
    assert rows[1][0] == "The nurse treats the patient." and rows[1][1] and rows[1][1] == rows[1][2]


def test_limits_are_refused_with_a_message(client, server, tmp_path):
    from gradio_client import handle_file

    msg = _app_error(client.predict, "word " * 100, "eng_Latn", "qaa_Latn", 2, 64, api_name="/translate")
    assert "500 characters; the limit is 300" in msg
    msg = _app_error(client.predict, "Hello.", "eng_Latn", "qaa_Latn", 99, 64, api_name="/translate")
    assert "Beam size" in msg or "maximum" in msg.lower()
    many = tmp_path / "many.txt"
    many.write_text("A line.\n" * 25, encoding="utf-8")
    msg = _app_error(client.predict, handle_file(str(many)), "eng_Latn", "qaa_Latn", 1, 64, api_name="/translate_file")
    assert "25 lines; the limit is 20" in msg
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    msg = _app_error(client.predict, handle_file(str(latin1)), "eng_Latn", "qaa_Latn", 1, 64,
                     api_name="/translate_file")
    assert "not UTF-8" in msg
    big = tmp_path / "big.txt"
    big.write_text("x" * 5000, encoding="utf-8")  # over max_upload_bytes: refused at the upload
    with pytest.raises(ValueError, match=r"big\.txt exceeds the maximum file size of 4000 bytes"):  # gradio_client checks
        client.predict(handle_file(str(big)), "eng_Latn", "qaa_Latn", 1, 64, api_name="/translate_file")
    import httpx

    with httpx.Client(base_url=server.local_url, timeout=30) as h:  # and so does the server, for raw clients
        assert h.post("gradio_api/upload", files={"files": ("big.txt", b"x" * 50)}).status_code == 401
        h.post("login", data={"username": USER, "password": PASSWORD})
        r = h.post("gradio_api/upload", files={"files": ("big.txt", b"x" * 5000)})
        assert r.status_code == 413 and "maximum allowed size of 4000 bytes" in r.text
    msg = _app_error(client.predict, "Hello.", "xxx_Latn", "qaa_Latn", 1, 64, api_name="/translate")
    assert "not a FLORES-200 language code; did you mean" in msg
    # files are read only from Gradio's upload folder, never from a path a user names
    from adaptmllm.apps.playground.session import UserInputError

    with pytest.raises(UserInputError, match="upload"):
        server.playground.read_upload("/etc/hostname")


def test_internal_errors_are_friendly(client, server, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("internal detail at /srv/secret/path")

    monkeypatch.setattr(server.playground.finetuned, "translate", boom)
    msg = _app_error(client.predict, "Hello.", "eng_Latn", "qaa_Latn", 1, 64, api_name="/translate")
    assert "Something went wrong" in msg and "secret/path" not in msg and "Traceback" not in msg
    assert "RuntimeError" in server.log.getvalue()  # the details stay in the server log


def test_auth_refuses_wrong_password(server):
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    with pytest.raises((AuthenticationError, ValueError), match="(?i)login|credentials"):
        Client(server.local_url, auth=(USER, "wrong password"), verbose=False)
    data = urllib.parse.urlencode({"username": USER, "password": "wrong"}).encode()
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(server.local_url + "login", data=data, timeout=10)
    assert ei.value.code in (400, 401)
    with pytest.raises(urllib.error.HTTPError) as ei:  # the API is closed without a login
        urllib.request.urlopen(server.local_url + "config", timeout=10)
    assert ei.value.code == 401


def test_share_needs_auth(monkeypatch, tmp_path):
    from adaptmllm.apps.playground.auth import AuthError, ShareError, check_share, parse_auth

    with pytest.raises(ShareError, match="--auth"):
        check_share(True, None)
    assert check_share(True, None, insecure_share=True) is True
    assert check_share(True, ("u", "a-12-char-pw")) is True and check_share(False, None) is False
    monkeypatch.setenv("GRADIO_SHARE", "true")
    with pytest.raises(ShareError):
        check_share(None, None)
    with pytest.raises(AuthError) as ei:
        parse_auth("user-without-colon-secretpw")
    assert "secretpw" not in str(ei.value)
    assert parse_auth([("a", "b"), "c:d:e"]) == [("a", "b"), ("c", "d:e")]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    env.pop("ADAPTMLLM_AUTH", None)
    env.pop("GRADIO_SHARE", None)
    r = subprocess.run([sys.executable, "-m", "adaptmllm.cli", "serve", "--model", str(tmp_path), "--share"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--insecure-share" in r.stderr


def test_no_secret_in_logs_or_pages(client, server):
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(server.local_url + "login",
                data=urllib.parse.urlencode({"username": USER, "password": PASSWORD}).encode(), timeout=10)
    pages = [opener.open(server.local_url + p, timeout=10).read().decode() for p in ("", "config")]
    assert "Translate" in pages[1]
    logging.getLogger("adaptmllm.test").warning("a careless message with %s and %s", PASSWORD, HF_SECRET)
    logs = server.log.getvalue()
    assert "a careless message with *** and ***" in logs
    for text in pages + [logs]:
        assert PASSWORD not in text and HF_SECRET not in text


def _annotate_then_restart(server, db):
    """Annotate on one server, stop it, start another on the same database."""
    from gradio_client import Client

    from adaptmllm.evaluation.human import HumanEvalStore, items_from_run
    from adaptmllm.apps.playground.session import Playground
    from adaptmllm.apps.playground.app import build_app, launch

    items, meta = items_from_run(server.playground.store.meta["origin"], LIMITS["eval_segments"])

    def start():
        pg = Playground(server.playground.finetuned, config=server.config, src_lang="eng_Latn", tgt_lang="qaa_Latn",
                        store=HumanEvalStore(db, items, meta))
        app = build_app(pg, show_results=False)
        url, _ = launch(app, dataclasses.replace(server.config, port=free_port()), auth=(USER, PASSWORD), quiet=True)
        return app, Client(url, auth=(USER, PASSWORD), verbose=False)

    app, c = start()
    first = c.predict("Ann", api_name="/annotator_start")
    assert "Segment 1 of 10" in first[3]
    c.predict("Ann", first[0], 4, api_name="/rate")
    second = c.predict("Ann", api_name="/annotator_start")
    c.predict("Ann", second[0], "fluency", "major", 0, 2, "", "", api_name="/add_error")
    c.close()
    app.close()  # the server goes away; everything must be on disk
    app, c = start()
    again = c.predict("Ann", api_name="/annotator_start")
    c.close()
    app.close()
    return first, second, again


def test_human_eval_endpoints_and_restart(client, server, tmp_path):
    # with logins the annotator is the signed-in user, whatever name the client sends
    item_id, source, output, progress, marked, sqm, *_ = client.predict("Bea", api_name="/annotator_start")
    assert source and output and "Segment 1 of 10" in progress and sqm is None and f"for {USER}." in progress
    m = client.predict("Bea", item_id, "accuracy", "major", 0, 3, "wrong word", output[:3], api_name="/add_error")
    assert m[0]["class_or_confidence"] == "1: accuracy/major" and m[0]["token"] == output[:3]
    m = client.predict("Bea", item_id, "style", "minor", None, None, "", "", api_name="/add_error")
    assert "whole segment" in m[-1]["token"]
    m = client.predict("Bea", item_id, api_name="/undo_error")
    assert not any("style" in str(x["class_or_confidence"]) for x in m)
    msg = _app_error(client.predict, "Bea", item_id, 9, api_name="/rate")
    assert "0 to 6" in msg or "choices: [0, 1, 2, 3, 4, 5, 6]" in msg  # ours, or Gradio's own check
    msg = _app_error(client.predict, "Bea", item_id, "grammar", "minor", None, None, "", "", api_name="/add_error")
    assert "category" in msg or "choices: ['accuracy'" in msg
    nxt = client.predict("Bea", item_id, 5, api_name="/rate")
    assert nxt[0] != item_id and "Segment 2 of 10" in nxt[3]
    table, _chart = client.predict(api_name="/summary")
    assert len(table["data"]) == 1 and table["data"][0][1:4] == [1, 1, 5.0]
    csv_path = client.predict(api_name="/export_csv")  # USER is the owner (admins) and the annotator
    assert Path(csv_path).read_text(encoding="utf-8").count(f"\n{USER},") == 1
    # annotations survive a server restart
    first, second, again = _annotate_then_restart(server, tmp_path / "restart.sqlite")
    assert again[0] == second[0] and again[0] != first[0]
    assert "Segment 2 of 10" in again[3] and again[4][0]["class_or_confidence"] == "1: fluency/major"
