"""The shared link under attack (issue 17), over loopback against a real launched playground.

Each test reproduces one attack of the probe on a real server (in this process on 127.0.0.1, or
``adaptmllm serve`` as a subprocess) and checks that it is refused: annotators acting as someone
else, huge request bodies before the login, annotators reading the results, spreadsheet formulas in
exports, Gradio routes open without a login, parallel password guessing, secrets in HPO storage
URLs, files left behind (on a schedule and on SIGTERM), and run names that are not plain folders.
Every request loop is bounded; nothing is sent to any address but 127.0.0.1.
"""

from __future__ import annotations

import csv
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from adaptmllm.config import ConfigError, ServeConfig  # noqa: E402
from conftest import REPO, free_port  # noqa: E402

OWNER, OWNER_PW = "owner", "owner-pw-Hq7-long-enough"
ANN1, ANN1_PW = "ann1", "ann1-pw-Zr4-long-enough"
ANN2, ANN2_PW = "ann2", "ann2-pw-Kb9-long-enough"
LOGINS = [(OWNER, OWNER_PW), (ANN1, ANN1_PW), (ANN2, ANN2_PW)]
LIMITS = dict(max_input_chars=300, max_file_lines=20, max_upload_bytes=4000, eval_segments=5)
FORMULA = "=HYPERLINK(\"http://198.51.100.9/x\",\"click\")"
DDE = "=cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """A launched playground over the tiny run with three logins; ``owner`` is the admin."""
    from adaptmllm.apps.playground.app import serve

    db = tmp_path_factory.mktemp("sec") / "human_eval.sqlite"
    srv = serve(tiny_run.model_dir, run_dir=tiny_run.run_dir, db=db, config=ServeConfig(port=free_port(), **LIMITS),
                auth=LOGINS, show_results=True, quiet=True, admins=[OWNER])
    srv.db = db
    yield srv
    srv.close()


def _client(server, user, pw):
    from gradio_client import Client

    return Client(server.local_url, auth=(user, pw), verbose=False)


def _app_error(fn, *args, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as ei:
        fn(*args, **kwargs)
    return str(ei.value)


def _db(server, sql, args=()):
    with sqlite3.connect(server.db) as con:
        return con.execute(sql, args).fetchall()


# -- 1. identity ------------------------------------------------------------------------------------------
def test_an_annotator_cannot_act_as_someone_else(server):
    ann1, ann2 = _client(server, ANN1, ANN1_PW), _client(server, ANN2, ANN2_PW)
    try:
        # ann2 rates their first item 2 and marks an error on it
        item2, *_ = ann2.predict(ANN2, api_name="/annotator_start")
        ann2.predict(ANN2, item2, "fluency", "major", None, None, "ann2's note", "", api_name="/add_error")
        ann2.predict(ANN2, item2, 2, api_name="/rate")
        # ann1, signed in as ann1, names ann2 everywhere: every action stays ann1's
        view = ann1.predict(ANN2, api_name="/annotator_start")
        assert f"for {ANN1}." in view[3] and ANN2 not in view[3]
        marked = ann1.predict(ANN2, item2, api_name="/undo_error")  # ann2's error is not theirs to remove
        assert not any("fluency" in str(m["class_or_confidence"]) for m in marked)
        ann1.predict(ANN2, item2, 0, api_name="/rate")  # ann2's 2 must not become 0
    finally:
        ann1.close()
        ann2.close()
    assert _db(server, "SELECT sqm FROM ratings WHERE annotator=? AND item_id=?", (ANN2, item2)) == [(2,)]
    assert _db(server, "SELECT sqm FROM ratings WHERE annotator=? AND item_id=?", (ANN1, item2)) == [(0,)]
    assert _db(server, "SELECT COUNT(*) FROM errors WHERE annotator=?", (ANN2,)) == [(1,)]


def test_plain_handlers_use_the_login_over_the_typed_name(server):
    pg = server.playground
    assert pg.annotator_for("someone", "ann1") == "ann1" and pg.auth_required
    from adaptmllm.apps.playground.session import UserInputError

    with pytest.raises(UserInputError, match="Sign in"):
        pg.annotator_for("someone", None)  # logins on, none in the request


# -- 3. results for the owner only -------------------------------------------------------------------------
def test_results_and_export_are_for_the_owner_only(server):
    ann1 = _client(server, ANN1, ANN1_PW)
    try:
        assert "owner of this server only" in _app_error(ann1.predict, api_name="/summary")
        assert "owner of this server only" in _app_error(ann1.predict, api_name="/export_csv")
    finally:
        ann1.close()
    owner = _client(server, OWNER, OWNER_PW)
    try:
        table, _chart = owner.predict(api_name="/summary")
        assert table["data"]
        rows = list(csv.DictReader(Path(owner.predict(api_name="/export_csv")).open(encoding="utf-8")))
        assert {r["annotator"] for r in rows} >= {ANN1, ANN2}
    finally:
        owner.close()


def test_owner_without_logins_is_this_machine_when_not_shared(server):
    from adaptmllm.apps.playground.session import Playground

    pg = Playground(server.playground.finetuned, config=server.playground.config)
    try:
        assert pg.is_owner(None, "127.0.0.1") and pg.is_owner(None, "::1")
        assert not pg.is_owner(None, "192.0.2.4")  # another machine on the network
        pg.shared = True  # --insecure-share: the tunnel arrives from 127.0.0.1 too
        assert not pg.is_owner(None, "127.0.0.1")
        pg.shared, pg.auth_required = False, True
        assert not pg.is_owner(None, "127.0.0.1") and not pg.is_owner("ann1", "127.0.0.1")
    finally:
        pg.close(engines=False)


def test_admin_must_be_a_login(tiny_run):
    from adaptmllm.apps.playground.auth import AuthError
    from adaptmllm.apps.playground.app import serve

    with pytest.raises(AuthError, match="--admin: no login named 'boss'"):
        serve(tiny_run.model_dir, run_dir=tiny_run.run_dir, auth=LOGINS, admins=["boss"], quiet=True)


# -- 2. request sizes before the login ---------------------------------------------------------------------
def _peak_rss(fn):
    """Run fn() while sampling this process's RSS every 5 ms; returns (fn's result, peak growth in MB)."""
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        stop.set()
        t.join()
    return out, (peak[0] - base) / 2 ** 20


def _stream_post(url: str, path: str, total: int, chunked: bool, extra_headers: str = "") -> tuple[int, int]:
    """POST ``total`` bytes (64 KiB at a time, never held whole) to ``path``, reading the answer as
    soon as there is one. Returns (HTTP status or 0, bytes sent before the answer)."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    assert host == "127.0.0.1"
    chunk = b"x" * 65536
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{extra_headers}"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    sent = 0
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head.encode())
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered before the end of the body
            piece = chunk[:min(len(chunk), total - sent)]
            try:
                s.sendall((f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        else:
            if chunked:
                s.sendall(b"0\r\n\r\n")
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
    m = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return (int(m.group(1)) if m else 0), sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_unauthenticated_body_is_refused_before_it_is_read(server, chunked):
    total = 50 * 2 ** 20
    (status, sent), grown_mb = _peak_rss(lambda: _stream_post(server.local_url, "/gradio_api/queue/join", total,
                                                             chunked))
    assert status == 413
    assert sent < total // 4, f"{sent} of {total} bytes went in before the answer"
    assert grown_mb < 25, f"the server's process grew by {grown_mb:.0f} MB"


def test_limits_follow_the_playground_and_a_full_text_still_fits(server):
    from adaptmllm.apps.playground.webguard import body_limits

    c = server.playground.config
    body, upload = body_limits(c.max_input_chars, c.max_upload_bytes)
    assert upload == c.max_upload_bytes + 65536 and body == 12 * 5000 + 65536
    ann1 = _client(server, ANN1, ANN1_PW)
    try:  # the longest text the playground takes, in 4-byte characters, still reaches the handler
        fine, _ = ann1.predict("\U0001F600" * c.max_input_chars, "eng_Latn", "qaa_Latn", 1, 8, api_name="/translate")
        assert isinstance(fine, str)
    finally:
        ann1.close()
    status, _ = _stream_post(server.local_url, "/gradio_api/upload", upload + 1, False)
    assert status == 413


# -- 5. routes open without a login ------------------------------------------------------------------------
ALLOWED_WITHOUT_LOGIN = {
    ("GET", "/"), ("GET", "/favicon.ico"), ("GET", "/theme.css"), ("GET", "/gradio_api/theme.css"),
    ("GET", "/robots.txt"), ("GET", "/logout"), ("POST", "/login"), ("POST", "/login/"),
    ("GET", "/gradio_api/startup-events"),
    ("GET", "/assets/{path:path}"), ("GET", "/static/{path:path}"), ("GET", "/svelte/{path:path}"),
}


def _routes(routes):
    for r in routes:
        if getattr(r, "path", None) is not None:
            for m in getattr(r, "methods", None) or ["GET"]:
                if m not in ("HEAD", "OPTIONS"):
                    yield m, r.path
        elif getattr(r, "original_router", None) is not None:  # an included router (FastAPI >= 0.120)
            yield from _routes(r.original_router.routes)
        elif getattr(r, "routes", None):
            yield from _routes(r.routes)


def test_only_the_login_page_and_static_files_answer_without_a_login(server):
    import httpx

    app = server.app.server_app
    routes = sorted(set(_routes(app.router.routes)))
    assert len(routes) > 30  # the walk found Gradio's API routes
    answering = set()
    with httpx.Client(base_url=server.local_url, timeout=5) as h:
        for method, path in routes:
            concrete = re.sub(r"\{[^}]+\}", "1", path).lstrip("/")
            try:
                with h.stream(method, concrete, json={} if method == "POST" else None, timeout=5) as r:
                    code = r.status_code
            except httpx.TimeoutException:  # a stream that stays open answered
                code = 200
            if code != 401:
                answering.add((method, path))
    assert answering <= ALLOWED_WITHOUT_LOGIN, sorted(answering - ALLOWED_WITHOUT_LOGIN)
    paths = {p for _, p in routes}
    assert not any("run-history" in p for p in paths)  # run history is off: no routes at all
    assert server.app.run_history is False and "/openapi.json" not in paths and "/docs" not in paths


# -- 6. login throttling -----------------------------------------------------------------------------------
@pytest.fixture()
def throttled(server):
    """A second app on the same model with small login limits (its own throttle)."""
    import dataclasses

    from adaptmllm.apps.playground.session import Playground
    from adaptmllm.apps.playground.app import build_app, launch

    pg = Playground(server.playground.finetuned, config=server.playground.config)
    cfg = dataclasses.replace(server.playground.config, port=free_port(), login_max_failures=5, login_global_per_minute=12)
    app = build_app(pg)
    url, _ = launch(app, cfg, auth=LOGINS, quiet=True)
    yield url, app
    app.close()
    pg.close(engines=False)


def _login(url, user, pw, forwarded=None):
    import httpx

    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return httpx.post(url + "login", data={"username": user, "password": pw}, headers=headers, timeout=60).status_code


def test_parallel_guessing_is_bounded_per_address_and_overall(throttled):
    url, app = throttled
    # 40 guesses from one address over 20 parallel connections: 5 are checked, the rest refused
    with ThreadPoolExecutor(20) as ex:
        codes = list(ex.map(lambda i: _login(url, OWNER, f"guess-{i}", "198.51.100.1"), range(40)))
    assert codes.count(400) == 5 and codes.count(429) == 35, codes
    assert _login(url, OWNER, OWNER_PW, "198.51.100.1") == 429  # locked out, even with the password
    assert _login(url, OWNER, OWNER_PW, "198.51.100.2") == 200  # another address signs in
    # 40 guesses from 40 addresses: at most 12 a minute overall (5 already spent)
    with ThreadPoolExecutor(20) as ex:
        codes = list(ex.map(lambda i: _login(url, OWNER, f"guess-{i}", f"203.0.113.{i + 1}"), range(40)))
    assert codes.count(400) == 12 - 5 and codes.count(429) == 40 - 7, codes
    assert app.adaptmllm_throttle.refused >= 35 + 33


def test_share_needs_a_long_password():
    from adaptmllm.apps.playground.auth import ShareError, check_share

    with pytest.raises(ShareError, match="'translator'.*shorter than 12 characters") as ei:
        check_share(True, [("owner", "a-long-password-1"), ("translator", "short-pw")])
    assert "short-pw" not in str(ei.value)
    assert check_share(True, ("translator", "twelve-chars")) is True
    assert check_share(False, ("translator", "short")) is False  # on this machine only: not refused


# -- 4. spreadsheet formulas --------------------------------------------------------------------------------
@pytest.mark.parametrize("cell, safe", [
    ("=1+1", "'=1+1"), ("+1+cmd", "'+1+cmd"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), (DDE, "'" + DDE), ("-0.5", "-0.5"), ("+1.25", "+1.25"), ("1e-5", "1e-5"), ("a=b", "a=b"),
    ("", ""), (3, 3), (-2.5, -2.5), (None, None),
])
def test_spreadsheet_cell(cell, safe):
    from adaptmllm.io import spreadsheet_cell

    assert spreadsheet_cell(cell) == safe


def test_a_note_with_a_formula_stays_text_in_the_export(server, tmp_path):
    ann1 = _client(server, ANN1, ANN1_PW)
    try:
        item, *_ = ann1.predict(ANN1, api_name="/annotator_start")
        ann1.predict(ANN1, item, "style", "minor", None, None, FORMULA, "", api_name="/add_error")
        ann1.predict(ANN1, item, 3, api_name="/rate")
    finally:
        ann1.close()
    owner = _client(server, OWNER, OWNER_PW)
    try:
        path = owner.predict(api_name="/export_csv")
    finally:
        owner.close()
    rows = list(csv.reader(Path(path).open(encoding="utf-8")))
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row)
    assert any(FORMULA.replace('"', '\\"') in cell for row in rows for cell in row)  # kept, inside the JSON


def test_every_csv_and_tsv_written_neutralises_formulas(tmp_path, server):
    from adaptmllm.evaluation import human as he, human_report
    from adaptmllm.metrics.analysis import write_segments_tsv

    # human evaluation report: names and notes typed over the network, systems from a TSV
    store = he.HumanEvalStore(tmp_path / "he.sqlite", [(0, DDE, "=SUM(1)", "-1+2"), (0, "ok", "=SUM(1)", "fine")])
    for item in (store.next_item(FORMULA), store.next_item(FORMULA)):
        store.add_error(FORMULA, item.id, "accuracy", "minor", note=DDE)
        store.rate(FORMULA, item.id, 4)
    out = human_report.write_human_report(store.path, tmp_path / "report")["paths"]
    # segments.tsv: corpus text and model outputs
    seg = write_segments_tsv(tmp_path / "segments.tsv", {"sentence_chrf": {"baseline": [1.0], "finetuned": [2.0]}},
                             ["@evil"], ["+ref"], [DDE], ["=base"])
    # the playground's translated .tsv
    upload_dir = Path(__import__("gradio.utils", fromlist=["x"]).get_upload_folder()) / "test-security"
    upload_dir.mkdir(parents=True, exist_ok=True)
    up = upload_dir / "in.tsv"
    up.write_text("source\n=1+1\n", encoding="utf-8")
    tsv_path, _ = server.playground.translate_file(str(up), "eng_Latn", "qaa_Latn", 1, 8)
    # the HPO study's trials.csv (an error message from a trial)
    import optuna

    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.hpo.artefacts import write_study_artefacts
    from conftest import tiny_dict

    cfg = config_from_dict(tiny_dict(tmp_path / "runs", "study"))
    study = optuna.create_study(direction="maximize")
    t = study.ask()
    t.set_user_attr("error", DDE)
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    write_study_artefacts(study, cfg, plots=False)
    files = [out["annotations"], out["summary_csv"], seg, Path(tsv_path), cfg.run_dir / "hpo" / "trials.csv"]
    for f in files:
        text = f.read_text(encoding="utf-8")
        rows = list(csv.reader(text.splitlines(), delimiter="\t" if f.suffix == ".tsv" else ","))
        cells = [c for r in rows for c in r]
        bad = [c for c in cells if c.startswith(("=", "+", "-", "@")) and not re.fullmatch(r"[+-][\d.]+", c)]
        assert not bad, (f.name, bad)
        assert any(c.startswith("'=") or c.startswith("'@") for c in cells), f.name  # kept, as text


# -- 7. secrets in HPO storage URLs ------------------------------------------------------------------------
@pytest.mark.parametrize("url, secret", [
    ("postgresql://ann:s3cretPW@db.example.org/adaptmllm", "s3cretPW"),
    ("postgresql://ann@db.example.org/adaptmllm?password=s3cretPW", "s3cretPW"),
    ("postgresql://ann@db.example.org/adaptmllm?sslpassword=s3cretPW", "s3cretPW"),
    ("postgresql://ann:s3cret/PW@db.example.org/adaptmllm", "s3cret/PW"),
    (" postgresql://ann:s3cretPW@db.example.org/adaptmllm", "s3cretPW"),
    ("mysql+pymysql://ann@db.example.org/adaptmllm?passwd=s3cretPW", "s3cretPW"),
    ("postgresql://ann:s3cretPW@db.example.org:5432/adaptmllm?sslmode=require", "s3cretPW"),
    ("postgresql://ann:s3cretPW@[bad", "s3cretPW"),
])
def test_storage_url_with_a_secret_is_refused_and_never_shown(url, secret):
    from adaptmllm.config import config_from_dict

    with pytest.raises(ConfigError) as ei:
        config_from_dict({"hpo": {"storage": url}})
    msg = str(ei.value)
    assert msg.startswith("hpo.storage") and secret not in msg and "s3cret" not in msg
    assert "PGPASSWORD" in msg or "not a database URL" in msg


def test_storage_url_is_masked_and_never_saved_with_a_secret(tmp_path):
    from adaptmllm.config import config_from_dict, mask_storage_url, save_config

    ok = config_from_dict({"hpo": {"storage": "postgresql://ann@db.example.org/adaptmllm?sslmode=require"}})
    assert ok.hpo.storage == "postgresql://ann@db.example.org/adaptmllm?sslmode=require"
    assert mask_storage_url("postgresql://ann:pw@h:5/db?application_name=x&sslpassword=y") == \
        "postgresql://ann:***@h:5/db?application_name=***&sslpassword=***"
    assert mask_storage_url("ann:s3cret at db, no scheme") == "<database URL, hidden>"
    ok.hpo.storage = "postgresql://ann:s3cretPW@db.example.org/adaptmllm"  # set after the checks
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        save_config(ok, tmp_path / "study_config.yaml")
    assert not (tmp_path / "study_config.yaml").exists()


def test_hpo_error_messages_mask_the_url(tmp_path):
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.hpo.study import HPOError, open_study
    from conftest import tiny_dict

    d = tiny_dict(tmp_path / "runs", "pg")
    d["hpo"] = {"storage": "postgresql://ann@127.0.0.1:1/adaptmllm?application_name=leak-me&sslmode=require"}
    with pytest.raises(HPOError) as ei:
        open_study(config_from_dict(d))
    assert "leak-me" not in str(ei.value) and "postgresql://ann@127.0.0.1:1/adaptmllm" in str(ei.value)


# -- 9. run names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a\\b", "..", ".", "a/b", "../x", "C:x", "CON", "nul.txt", "com1", "LPT9",
                                  "run.", "run ", " run", "a\x00b", "a\nb", "a\u202eb", "what?", "a*b", "x" * 256])
def test_run_names_that_are_not_plain_folders_are_refused(name):
    from adaptmllm.config import Config

    with pytest.raises(ConfigError, match=r"^name: .*plain folder name such as 'demo'"):
        Config(name=name)


@pytest.mark.parametrize("name", ["demo", "en-ga_lora", "run.2", "Éire", "a b"])
def test_plain_run_names_pass(name):
    from adaptmllm.config import Config

    assert Config(name=name).run_dir.name == name


# -- 8. files left behind -----------------------------------------------------------------------------------
def _wait_for(cond, timeout=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.5)
    return cond()


def test_uploads_and_exports_are_deleted_on_a_schedule(tiny_run, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    from adaptmllm.apps.playground.app import serve

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # the module's server has its own; this one too
    cfg = ServeConfig(port=free_port(), file_ttl_s=2, **LIMITS)
    srv = serve(tiny_run.model_dir, run_dir=tiny_run.run_dir, db=tmp_path / "he.sqlite", config=cfg, auth=LOGINS,
                admins=[OWNER], quiet=True)
    try:
        c = Client(srv.local_url, auth=(OWNER, OWNER_PW), verbose=False)
        src = tmp_path / "in.txt"
        src.write_text("The nurse treats the patient.\n", encoding="utf-8")
        out, _ = c.predict(handle_file(str(src)), "eng_Latn", "qaa_Latn", 1, 8, api_name="/translate_file")
        export = c.predict(api_name="/export_csv")
        c.close()
        files = [p for p in srv.playground.workdir.rglob("*") if p.is_file()]
        assert Path(out).is_file() and Path(export).is_file() and len(files) >= 4  # upload, outputs, copies
        gone = _wait_for(lambda: not any(p.is_file() for p in srv.playground.workdir.rglob("*")), timeout=60)
        assert gone, [p for p in srv.playground.workdir.rglob("*") if p.is_file()]
    finally:
        srv.close()


def test_sigterm_deletes_uploads_exports_and_temporary_folders(tiny_run, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp), ADAPTMLLM_AUTH=f"{OWNER}:{OWNER_PW}", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=str(REPO))
    env.pop("GRADIO_TEMP_DIR", None)
    cmd = [sys.executable, "-m", "adaptmllm.cli", "serve", "--model", str(tiny_run.model_dir), "--run",
           str(tiny_run.run_dir), "--db", str(tmp_path / "he.sqlite"), "--serve.port", str(port),
           "--serve.eval_segments", "3", "--admin", OWNER]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert _wait_for(lambda: proc.poll() is not None or _up(url), timeout=240) and proc.poll() is None
        from gradio_client import Client, handle_file

        c = Client(url, auth=(OWNER, OWNER_PW), verbose=False)
        src = tmp_path / "in.tsv"
        src.write_text("source\nThe nurse treats the patient.\n", encoding="utf-8")
        out, _ = c.predict(handle_file(str(src)), "eng_Latn", "qaa_Latn", 1, 8, api_name="/translate_file")
        c.predict(api_name="/export_csv")  # every rating, in a file on the server
        c.close()
    except Exception:
        proc.kill()
        raise
    finally:
        files_before = [p for p in tmp.rglob("*") if p.is_file()]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            log, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
    names = {p.name for p in files_before}
    assert {"in.tsv", Path(out).name, "human_eval_annotations.csv"} <= names, names
    left = [p for p in tmp.rglob("*") if p.is_file()] + list(tmp.glob("adaptmllm-playground-*"))
    assert not left, (left, log[-2000:])
    assert proc.returncode == 0, log[-2000:]


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "config", timeout=2).status_code in (200, 401)
    except httpx.HTTPError:
        return False

