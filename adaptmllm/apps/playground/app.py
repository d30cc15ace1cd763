"""Translation playground and human evaluation in Gradio, safe to share with translators.

    from adaptmllm.apps.playground.app import serve
    server = serve("runs/demo/model", share=True, auth=("translator", "a long password"))

:func:`build_app` is a factory: it returns a ``gr.Blocks`` and never launches anything (nor does
importing this module, which does not even import Gradio). :func:`launch` starts a built app with
the safety settings; :func:`serve` loads the model(s) once, builds and launches (the ``adaptmllm
serve`` command and the notebooks call it).

Tabs:

- **Translate**: source/target languages by name (FLORES-200 codes behind them), a text box (one
  segment per line), beam size and maximum length; the fine-tuned and baseline translations side by
  side when a baseline model is given. A ``.txt`` (one segment per line) or ``.tsv`` (first column
  the source) upload is translated into a file to download.
- **Human evaluation**: an annotator (the signed-in user when the server has logins; else a typed
  name) rates outputs one at a time (source + one
  system's translation; systems hidden and shuffled): an SQM score (0-6) and MQM error spans
  (select text in the translation, pick category and severity). Everything is stored in SQLite at
  each click (:mod:`adaptmllm.evaluation.human`); a reload continues where the annotator stopped.
- **Results** (the owner only: a login named in ``admins``, ``--admin``; without logins, this
  machine when not shared): the per-system summary table, bar chart and a CSV export. Annotators
  never see other people's ratings or which system is which; the owner can also read the results
  with ``adaptmllm human-eval-report`` or in the notebook.

Every action is an API endpoint (``gradio_client``): ``/translate``, ``/translate_file``,
``/annotator_start``, ``/add_error``, ``/undo_error``, ``/rate``, and without sharing ``/summary``
and ``/export_csv``::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/", auth=("translator", "a long password"))
    finetuned, baseline = client.predict("The nurse treats the patient.", "eng_Latn", "gle_Latn", 4, 128,
                                         api_name="/translate")
    path, message = client.predict(handle_file("segments.txt"), "eng_Latn", "gle_Latn", 4, 128,
                                   api_name="/translate_file")
    item_id, source, translation, *_ = client.predict("Aoife", api_name="/annotator_start")
    client.predict("Aoife", item_id, "accuracy", "major", 0, 5, "", translation[:5], api_name="/add_error")
    client.predict("Aoife", item_id, 4, api_name="/rate")    # SQM 0-6; returns the next item

Safety (see docs/security.md): requests are guarded before Gradio sees them
(:mod:`adaptmllm.apps.playground.webguard`: body sizes, routes closed without a login, login throttling); sharing
requires passwords of 12 characters or more (:func:`check_share`); input characters, lines per file and
upload bytes are limited (:class:`adaptmllm.config.ServeConfig`); requests wait in a bounded queue
and at most ``concurrency_limit`` translation requests are served at once, batched on the model by
one worker thread per model (:class:`Engine`); uploaded files are read only from Gradio's upload
folder; users get short messages, never tracebacks (the server log keeps the details); passwords
and Hugging Face tokens are redacted from log records.
"""

from __future__ import annotations
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from adaptmllm.apps.playground.auth import AuthError, auth_checker, check_share, install_redactor, parse_auth
from adaptmllm.apps.playground.session import SUMMARY_HEADERS, Playground, cache_period_s, friendly
from adaptmllm.apps.playground.webguard import LoginThrottle, RequestGuard, body_limits
from adaptmllm.apps.playground.worker import Engine
from adaptmllm.config import ServeConfig
from adaptmllm.evaluation.human import (CATEGORIES, DB_NAME, MAX_ITEM_CHARS, MAX_NOTE_CHARS, SEVERITIES, SQM_LABELS,
                                        HumanEvalError, HumanEvalStore, items_from_run, items_from_tsv, run_languages)
from adaptmllm.languages import check_code, choices

__all__ = ["Server", "build_app", "launch", "serve"]

log = logging.getLogger("adaptmllm.apps.playground.app")


# -- the app ----------------------------------------------------------------------------------------------
def _username(request: Any) -> Optional[str]:
    return getattr(request, "username", None) or None


def _client_host(request: Any) -> Optional[str]:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


CSS = """
.am-output textarea {font-size: 1.05em}
.am-progress {min-height: 2em}
.am-output textarea:disabled, #am-source textarea:disabled {
    color: var(--body-text-color) !important; -webkit-text-fill-color: var(--body-text-color); opacity: 1 !important}
"""

# The translation to annotate must be selectable with the mouse: a disabled (non-interactive) textarea is
# not, so it is interactive and made read-only in the browser; the server checks the marked text anyway.
READONLY_JS = "() => { document.querySelectorAll('#am-target textarea').forEach(t => { t.readOnly = true; }); }"


def build_app(playground: Playground, show_results: bool = True) -> Any:
    """Build the ``gr.Blocks`` app over ``playground``'s handlers. Never launches it.

    Args:
        playground: the loaded models, limits and annotation store.
        show_results: add the Results tab (summary, chart, CSV export). It is shown only to the owner
            (:meth:`Playground.is_owner`), and its endpoints refuse everyone else.
    Returns:
        the ``gr.Blocks``, its queue configured (size and concurrency from the config); uploads and
        files it hands out are deleted once older than ``config.file_ttl_s`` seconds.
    """
    import gradio as gr

    pg, c = playground, playground.config
    langs = [(name, code) for name, code in choices()]
    two = pg.baseline is not None
    translate_limit = dict(concurrency_limit=c.concurrency_limit, concurrency_id="translate")
    annotate_limit = dict(concurrency_limit=8, concurrency_id="annotate")

    ttl = int(c.file_ttl_s)
    with gr.Blocks(title=pg.title, analytics_enabled=False, delete_cache=(int(cache_period_s(ttl)), ttl)) as app:
        gr.Markdown(f"# {pg.title}")
        with gr.Tabs():
            with gr.Tab("Translate", id="translate"):
                with gr.Row():
                    # custom values (a typed code) reach check_code, whose message suggests the closest codes
                    src = gr.Dropdown(langs, value=pg.src_lang, label="Source language", filterable=True,
                                      allow_custom_value=True)
                    tgt = gr.Dropdown(langs, value=pg.tgt_lang, label="Target language", filterable=True,
                                      allow_custom_value=True)
                    beams = gr.Slider(1, c.max_beams, value=c.num_beams, step=1, label="Beam size")
                    max_new = gr.Slider(8, c.max_new_tokens_limit, value=c.max_new_tokens, step=8,
                                        label="Maximum length (tokens)")
                text = gr.Textbox(lines=4, label=f"Text (one segment per line, up to {c.max_input_chars:,} characters)",
                                  placeholder="Type or paste text here", elem_id="am-text")
                btn = gr.Button("Translate", variant="primary")
                with gr.Row():
                    out_f = gr.Textbox(lines=4, label="Fine-tuned model", elem_classes="am-output", elem_id="am-fine",
                                       buttons=["copy"], interactive=False)
                    out_b = gr.Textbox(lines=4, label="Baseline model", elem_classes="am-output", elem_id="am-base",
                                       buttons=["copy"], interactive=False, visible=two)
                with gr.Accordion("Translate a file", open=False):
                    gr.Markdown(f"Upload a `.txt` file (one segment per line) or a `.tsv` file (the first column is "
                                f"the source; a header `source` is skipped): up to {c.max_file_lines:,} lines and "
                                f"{c.max_upload_bytes / 1e6:g} MB.")
                    with gr.Row():
                        up = gr.File(label="File to translate", file_types=[".txt", ".tsv"], type="filepath")
                        down = gr.File(label="Translations", interactive=False)
                    file_btn = gr.Button("Translate file")
                    file_msg = gr.Markdown()
                btn.click(friendly(pg.translate), [text, src, tgt, beams, max_new], [out_f, out_b],
                          api_name="translate", **translate_limit)
                text.submit(friendly(pg.translate), [text, src, tgt, beams, max_new], [out_f, out_b],
                            api_visibility="private", **translate_limit)

                def translate_file(path, s, t, b, m, progress=gr.Progress()):
                    return pg.translate_file(path, s, t, b, m, progress=progress)

                translate_file.__name__ = "translate_file"
                file_btn.click(friendly(translate_file), [up, src, tgt, beams, max_new], [down, file_msg],
                               api_name="translate_file", **translate_limit)

            with gr.Tab("Human evaluation", id="human_eval"):
                gr.Markdown(
                    "Rate translations one at a time. **1.** Mark each error: select the wrong words in the "
                    "translation, pick a category and a severity, press *Add error* (no selection: the error "
                    "concerns the whole segment, e.g. an omission). **2.** Score the translation from 0 to 6 "
                    "(SQM) and press *Submit*. Severities: *minor* (a small flaw), *major* (meaning or "
                    "understanding is affected), *non-translation* (not a translation of the source at all).")
                with gr.Row():
                    # with logins the annotator is the signed-in user: the box shows it, read-only (see who())
                    name = gr.Textbox(label="Your name or annotator id", max_lines=1, scale=3, elem_id="am-name")
                    start = gr.Button("Start / continue", variant="primary", scale=1)
                progress_md = gr.Markdown(elem_classes="am-progress", label="progress")
                item_id = gr.Number(visible=False, precision=0, label="item id")
                span_start = gr.Number(visible=False, precision=0, label="span start")
                span_end = gr.Number(visible=False, precision=0, label="span end")
                with gr.Row():
                    source = gr.Textbox(label="Source", lines=3, interactive=False, elem_id="am-source")
                    output = gr.Textbox(label="Translation", info="Select words here to mark an error.", lines=3,
                                        interactive=True, elem_id="am-target")
                with gr.Row():
                    span_text = gr.Textbox(label="Marked text", interactive=False, scale=2, elem_id="am-span")
                    category = gr.Dropdown(list(CATEGORIES), value="accuracy", label="Error category", scale=1)
                    severity = gr.Radio(list(SEVERITIES), value="minor", label="Severity", scale=2)
                note = gr.Textbox(label="Note (optional)", max_lines=1)
                with gr.Row():
                    add = gr.Button("Add error")
                    undo = gr.Button("Undo last error")
                marked = gr.HighlightedText(label="Marked errors", combine_adjacent=False, show_legend=False,
                                            elem_id="am-marked")
                sqm = gr.Radio([(label, v) for v, label in SQM_LABELS.items()], label="Overall quality (SQM, 0-6)",
                               elem_id="am-sqm")
                submit = gr.Button("Submit score and go to the next segment", variant="primary")

                view = [item_id, source, output, progress_md, marked, sqm, span_start, span_end, span_text]

                def start_fn(annotator, request: gr.Request):
                    return pg.annotator_start(annotator, _username(request))

                start_fn.__name__ = "annotator_start"
                start_fn.__annotations__ = {"request": gr.Request}  # real types: annotations are strings here

                def add_fn(annotator, item, cat, sev, s0, s1, note_, text_, request: gr.Request):
                    return pg.add_error(annotator, item, cat, sev, s0, s1, note_, text_, username=_username(request))

                def undo_fn(annotator, item, request: gr.Request):
                    return pg.undo_error(annotator, item, username=_username(request))

                def rate_fn(annotator, item, score, request: gr.Request):
                    return pg.rate(annotator, item, score, username=_username(request))

                for fn, fname in ((add_fn, "add_error"), (undo_fn, "undo_error"), (rate_fn, "rate")):
                    fn.__name__ = fname
                    fn.__annotations__ = {"request": gr.Request}
                start.click(friendly(start_fn), [name], view, api_name="annotator_start", **annotate_limit).then(
                    None, None, None, js=READONLY_JS, api_visibility="private", queue=False)
                name.submit(friendly(start_fn), [name], view, api_visibility="private", **annotate_limit).then(
                    None, None, None, js=READONLY_JS, api_visibility="private", queue=False)

                def on_select(evt: gr.SelectData):
                    idx = evt.index if isinstance(evt.index, (list, tuple)) and len(evt.index) == 2 else None
                    if not idx or idx[0] == idx[1]:
                        return None, None, ""
                    return int(idx[0]), int(idx[1]), evt.value

                on_select.__annotations__ = {"evt": gr.SelectData}
                output.select(on_select, None, [span_start, span_end, span_text], api_visibility="private",
                              queue=False)
                add.click(friendly(add_fn),
                          [name, item_id, category, severity, span_start, span_end, note, span_text],
                          [marked], api_name="add_error", **annotate_limit).success(
                    lambda: (None, None, "", ""), None, [span_start, span_end, span_text, note],
                    api_visibility="private", queue=False)
                undo.click(friendly(undo_fn), [name, item_id], [marked], api_name="undo_error",
                           **annotate_limit)
                submit.click(friendly(rate_fn), [name, item_id, sqm], view, api_name="rate", **annotate_limit).then(
                    None, None, None, js=READONLY_JS, api_visibility="private", queue=False)

            results_tab = None
            if show_results:
                # hidden until who() finds the owner; the endpoints check again (check_owner)
                with gr.Tab("Results", id="results", visible=False) as results_tab:
                    gr.Markdown("Per system: mean SQM with its 95% confidence interval, MQM points per 100 source "
                                f"words (weights {', '.join(f'{k} {v:g}' for k, v in pg.weights.items())}) and "
                                "error counts by category.")
                    refresh = gr.Button("Refresh")
                    table = gr.Dataframe(headers=SUMMARY_HEADERS, interactive=False, label="Summary per system")
                    chart = gr.Plot(label="Chart")
                    export_btn = gr.Button("Export annotations (CSV)")
                    export_file = gr.File(label="Annotations", interactive=False)

                    def summary_fn(request: gr.Request):
                        return pg.summary(_username(request), _client_host(request))

                    def export_fn(request: gr.Request):
                        return pg.export_csv(_username(request), _client_host(request))

                    for fn, fname in ((summary_fn, "summary"), (export_fn, "export_csv")):
                        fn.__name__ = fname
                        fn.__annotations__ = {"request": gr.Request}
                    refresh.click(friendly(summary_fn), None, [table, chart], api_name="summary", **annotate_limit)
                    export_btn.click(friendly(export_fn), None, [export_file], api_name="export_csv",
                                     **annotate_limit)

        def who(request: gr.Request):
            user = _username(request)
            box = gr.update(value=user, interactive=False) if user else gr.update()
            owner = pg.is_owner(user, _client_host(request))
            return (box, gr.update(visible=owner)) if results_tab is not None else box

        who.__annotations__ = {"request": gr.Request}
        app.load(who, None, [name] + ([results_tab] if results_tab is not None else []), api_visibility="private",
                 queue=False)
    app.adaptmllm_playground = pg
    app.queue(max_size=c.queue_size, default_concurrency_limit=4)
    return app


@dataclass
class Server:
    """A launched app.

    Attributes:
        app: the ``gr.Blocks``.
        playground: its handlers and models.
        local_url: ``http://127.0.0.1:PORT/``.
        share_url: the public link, or None.
    """

    app: Any
    playground: Playground
    local_url: str
    share_url: Optional[str]
    gradio_cache: Optional[str] = None

    def close(self) -> None:
        """Stop the server and the engines; delete the uploads and files the app handed out (Gradio's
        cache) and the playground's temporary folder. Safe to call twice."""
        try:
            self.app.close()
        finally:
            try:
                delete_app_files(self.app)
            finally:
                self.playground.close()
                if self.gradio_cache is not None and os.environ.get("GRADIO_TEMP_DIR") == self.gradio_cache:
                    os.environ.pop("GRADIO_TEMP_DIR", None)

    def block(self) -> None:
        """Block until Ctrl-C (SIGINT) or SIGTERM, then close (deleting every temporary file).

        The signal handlers are installed here (in the main thread only); the previous ones are put
        back when it returns."""
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, _interrupt)
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            log.info("stopping: deleting uploads, exports and temporary files")
        finally:
            try:
                self.close()
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def delete_app_files(app: Any) -> int:
    """Delete every file a Gradio app keeps in its cache (uploads, and files handed out such as
    translated files and exports), and the folders Gradio made for them when left empty.
    Returns how many files were deleted."""
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder()).resolve()
    files = [Path(f) for s in getattr(app, "temp_file_sets", []) for f in list(s)]
    n = 0
    for f in files:
        try:
            f.unlink()
            n += 1
        except OSError:
            continue
        parent = f.parent.resolve()
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent
    for s in getattr(app, "temp_file_sets", []):
        s.clear()
    return n


def launch(app: Any, config: Optional[ServeConfig] = None, share: Optional[bool] = False, auth: Any = None,
           insecure_share: bool = False, quiet: bool = False) -> tuple[str, Optional[str]]:
    """Launch a built app without blocking, with the safety settings.

    Args:
        app: from :func:`build_app`.
        config: host, port and the upload limit.
        share: create a public ``gradio.live`` link (None: Gradio's default, shared on Colab).
        auth: ``"user:password"``, ``("user", "password")`` or a list of them.
        insecure_share: allow sharing without ``auth``.
        quiet: print nothing.
    Returns:
        ``(local_url, share_url or None)``.
    The app is guarded (:class:`adaptmllm.apps.playground.webguard.RequestGuard`): request bodies over the limits of
    :func:`adaptmllm.apps.playground.webguard.body_limits` get 413 before they are read; with logins, every route but
    the login page and static files needs a session, and logins are throttled
    (``config.login_*``). Gradio features the app does not use are off: run history, the OpenAPI
    schema and docs pages, MCP, monitoring, the PWA manifest, server-side rendering.

    Raises:
        ShareError: sharing without auth, or with a short password (see :func:`check_share`).
        AuthError: a malformed ``auth``, or an admin (``Playground.admins``) without a login.
        OSError: the port is taken.
    """
    c = config or ServeConfig()
    users = parse_auth(auth)
    effective = check_share(share, users, insecure_share)
    pg = getattr(app, "adaptmllm_playground", None)
    if pg is not None:
        missing = sorted(pg.admins - {u for u, _ in users or []})
        if users and missing:
            raise AuthError(f"--admin: no login named {', '.join(map(repr, missing))}; add it to --auth_file "
                            "(USER:PASSWORD lines) or --auth")
        pg.auth_required, pg.shared = bool(users), bool(effective)
    install_redactor([p for _, p in users or []])
    if effective and not users:
        log.warning("sharing WITHOUT a password (--insecure-share): anyone with the link can use this server")
    if not effective and not users and c.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without a password: anyone on the network can use this server", c.host)
    from starlette.middleware import Middleware

    body_limit, upload_limit = body_limits(c.max_input_chars, c.max_upload_bytes, MAX_ITEM_CHARS, MAX_NOTE_CHARS)
    throttle = LoginThrottle(c.login_max_failures, c.login_lockout_s, c.login_lockout_s, c.login_global_per_minute)
    guard = Middleware(RequestGuard, blocks=app, body_limit=body_limit, upload_limit=upload_limit, throttle=throttle)
    app.launch(
        server_name=c.host, server_port=c.port, share=effective, auth=auth_checker(users) if users else None,
        auth_message="Sign in with the user name and password you were given." if users else None,
        max_file_size=c.max_upload_bytes, show_error=False, prevent_thread_lock=True, quiet=quiet,
        ssr_mode=False, enable_monitoring=False, mcp_server=False, pwa=False, strict_cors=True, css=CSS,
        footer_links=["api"], run_history=False,
        app_kwargs={"middleware": [guard], "openapi_url": None, "docs_url": None, "redoc_url": None},
    )
    app.adaptmllm_throttle = throttle
    return app.local_url, (app.share_url if effective else None)


def _default_languages(model: str, run_dir: Optional[Path]) -> tuple[str, str]:
    if run_dir is not None:
        try:
            return run_languages(run_dir)
        except HumanEvalError:
            pass
    import json

    cfg = Path(model) / "tokenizer_config.json"
    if cfg.is_file():
        d = json.loads(cfg.read_text(encoding="utf-8"))
        if d.get("src_lang") and d.get("tgt_lang"):
            return d["src_lang"], d["tgt_lang"]
    return "eng_Latn", "gle_Latn"


def _open_store(run_dir: Optional[Path], segments: Optional[str | Path], db: Optional[str | Path],
                config: ServeConfig) -> Optional[HumanEvalStore]:
    if segments is not None:
        items, meta = items_from_tsv(segments), {"origin": Path(segments).name}
        db_path = Path(db) if db is not None else Path(segments).with_suffix(".sqlite")
    elif run_dir is not None:
        try:
            items, meta = items_from_run(run_dir, config.eval_segments, config.seed, config.eval_include_reference)
        except HumanEvalError as e:
            if db is not None and Path(db).is_file():
                items, meta = None, {}
            else:
                log.warning("human evaluation off: %s", e)
                return None
        db_path = Path(db) if db is not None else run_dir / DB_NAME
    elif db is not None:
        items, meta, db_path = None, {}, Path(db)
    else:
        return None
    store = HumanEvalStore(db_path, items if not (Path(db_path).is_file() and _has_items(db_path)) else None,
                           meta, seed=config.seed)
    log.info("human evaluation: %d items in %s", store.n_items, db_path)
    return store


def _has_items(db_path: Path) -> bool:
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(db_path)) as con:
            return con.execute("SELECT COUNT(*) FROM items").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def serve(model: str | os.PathLike | Engine, baseline: str | os.PathLike | Engine | None = None, *,
          run_dir: str | os.PathLike | None = None, segments: str | os.PathLike | None = None,
          db: str | os.PathLike | None = None, src_lang: Optional[str] = None, tgt_lang: Optional[str] = None,
          config: Optional[ServeConfig] = None, share: Optional[bool] = False, auth: Any = None,
          insecure_share: bool = False, show_results: Optional[bool] = None, admins: Sequence[str] = (),
          quiet: bool = False) -> Server:
    """Load the model(s) once, build the app and launch it (non-blocking; ``server.block()`` waits).

    Args:
        model: the fine-tuned model folder (``runs/<name>/model``), a hub name, or an :class:`Engine`.
        baseline: a baseline model to show side by side (folder, hub name or Engine), or None.
        run_dir: the run folder whose test set annotators rate (default: the model folder's parent
            when it holds a run). Human evaluation is off when there is neither a run nor ``segments``.
        segments: a TSV of items to rate instead (see :func:`adaptmllm.evaluation.human.items_from_tsv`).
        db: the annotation database (default ``<run_dir>/human_eval.sqlite``).
        src_lang, tgt_lang: the languages the page starts with (default: the run's, else the tokenizer's).
        config: :class:`ServeConfig` (limits, batching, MQM weights).
        share, auth, insecure_share: see :func:`launch`.
        show_results: add the Results tab (default: yes). Only the owner sees it: a login named in
            ``admins``, or, without logins on a server that is not shared, this machine.
        admins: login names of the owner(s) (``adaptmllm serve --admin NAME``); annotators never see
            the results.
        quiet: print nothing.
    Raises:
        ShareError, AuthError: see :func:`launch` (also: an admin without a login);
        adaptmllm.modeling.model.ModelError: a model cannot be loaded;
        HumanEvalError: the segments file is malformed or does not match the database.
    """
    c = config or ServeConfig()
    users = parse_auth(auth)
    effective = check_share(share, users, insecure_share)  # refuse before loading anything
    missing = sorted({str(a).strip() for a in admins} - {u for u, _ in users or []})
    if missing:
        raise AuthError(f"--admin: no login named {', '.join(map(repr, missing))}; the owner signs in like the "
                        "annotators: add a USER:PASSWORD line for them to --auth_file (or --auth)")
    model_ref = model if isinstance(model, Engine) else Path(model) if Path(model).exists() else model
    rd = Path(run_dir) if run_dir is not None else None
    if rd is None and isinstance(model_ref, Path) and (model_ref.parent / "config.yaml").is_file():
        rd = model_ref.parent
    src0, tgt0 = _default_languages(str(model_ref) if not isinstance(model_ref, Engine) else "", rd)
    src_lang = check_code(src_lang or src0, "--src")
    tgt_lang = check_code(tgt_lang or tgt0, "--tgt")
    store = _open_store(rd, segments, db, c)
    kw = dict(max_batch_segments=c.max_batch_segments, batch_wait_s=c.batch_wait_ms / 1000,
              max_batch_tokens=c.max_batch_tokens, split_sentences=c.split_sentences,
              length_penalty=c.length_penalty, no_repeat_ngram_size=c.no_repeat_ngram_size)
    fine = model if isinstance(model, Engine) else Engine.from_path(model, src_lang, tgt_lang, "fine-tuned", **kw)
    base = baseline if (baseline is None or isinstance(baseline, Engine)) else \
        Engine.from_path(baseline, src_lang, tgt_lang, "baseline", **kw)
    name = rd.name if rd is not None else (Path(str(model)).name if not isinstance(model, Engine) else model.name)
    pg = Playground(fine, base, c, src_lang, tgt_lang, store, title=f"adaptmllm playground: {name}", admins=admins)
    # Gradio's cache (uploads, its leftover upload buffers, copies of handed-out files) goes inside the
    # playground's own folder, so the clean-up on a schedule and at exit covers it (unless you set
    # GRADIO_TEMP_DIR yourself: then Gradio's delete_cache covers the uploads it tracks)
    own_cache = None
    if not os.environ.get("GRADIO_TEMP_DIR"):
        own_cache = str(pg.workdir / "gradio")
        os.environ["GRADIO_TEMP_DIR"] = own_cache
    try:
        app = build_app(pg, show_results=True if show_results is None else show_results)
        local_url, share_url = launch(app, c, effective, users, insecure_share, quiet)
    except BaseException:
        pg.close()
        if own_cache is not None and os.environ.get("GRADIO_TEMP_DIR") == own_cache:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        raise
    return Server(app, pg, local_url, share_url, own_cache)
