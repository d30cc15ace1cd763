"""Translation playground and human evaluation in Gradio, safe to share with translators.

    from adaptmllm.playground import serve
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
  each click (:mod:`adaptmllm.humaneval`); a reload continues where the annotator stopped.
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
(:mod:`adaptmllm.webguard`: body sizes, routes closed without a login, login throttling); sharing
requires passwords of 12 characters or more (:func:`check_share`); input characters, lines per file and
upload bytes are limited (:class:`adaptmllm.config.ServeConfig`); requests wait in a bounded queue
and at most ``concurrency_limit`` translation requests are served at once, batched on the model by
one worker thread per model (:class:`Engine`); uploaded files are read only from Gradio's upload
folder; users get short messages, never tracebacks (the server log keeps the details); passwords
and Hugging Face tokens are redacted from log records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import logging
import ipaddress
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from .config import ServeConfig
from .humaneval import (CATEGORIES, DB_NAME, MAX_ITEM_CHARS, MAX_NOTE_CHARS, SEVERITIES, SQM_LABELS, HumanEvalError,
                        HumanEvalStore, Item, items_from_run, items_from_tsv, plot_summary, summarize)
from .io import spreadsheet_cell
from .webguard import LoginThrottle, RequestGuard, body_limits

__all__ = [
    "UserInputError",
    "ShareError",
    "AuthError",
    "Engine",
    "Playground",
    "Server",
    "parse_auth",
    "check_share",
    "MIN_SHARE_PASSWORD_CHARS",
    "build_app",
    "launch",
    "serve",
]

log = logging.getLogger("adaptmllm.playground")

Auth = Union[tuple[str, str], Sequence[tuple[str, str]]]


class UserInputError(ValueError):
    """A request the playground refuses (too long, too many lines, wrong file type...); the message
    is shown to the user as is."""


class ShareError(ValueError):
    """Sharing was asked for without authentication (see :func:`check_share`)."""


class AuthError(ValueError):
    """A malformed login (``USER:PASSWORD``); the message never includes the password."""


# -- the model behind the app ---------------------------------------------------------------------------
@dataclass
class _Request:
    texts: list[str]
    key: tuple
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Engine:
    """One loaded translation model shared by every user of a server.

    A single worker thread owns the model and its tokenizer (which are not thread-safe): requests
    from many users are queued, and those waiting together with the same settings (languages, beam
    size, maximum length) are translated in one batch of at most ``max_batch_segments`` segments.

    Args:
        model, tokenizer: a loaded ``transformers`` sequence-to-sequence model and its tokenizer.
        name: shown in the page (``fine-tuned``, ``baseline``).
        max_batch_segments: segments per model batch.
        batch_wait_s: seconds the worker waits for more requests to fill a batch.
        max_source_length: longest source sentence in tokens (longer ones are cut between words when
            splitting sentences, else truncated).
        options: further :func:`adaptmllm.translate.translate_texts` keywords (``max_batch_tokens``,
            ``split_sentences``, ``length_penalty``, ``no_repeat_ngram_size``).
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = "model", max_batch_segments: int = 32,
                 batch_wait_s: float = 0.005, max_source_length: int = 256, **options: Any) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.options = options
        self.max_batch_segments = max(1, int(max_batch_segments))
        self.batch_wait_s = max(0.0, float(batch_wait_s))
        self.max_source_length = max_source_length
        self.batches = 0
        self._q: "queue.Queue[Optional[_Request]]" = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"adaptmllm-engine-{name}", daemon=True)
        self._thread.start()

    @classmethod
    def from_path(cls, name_or_path: str | os.PathLike, src_lang: str, tgt_lang: str, name: str = "model",
                  **kwargs: Any) -> "Engine":
        """Load a model folder (or hub name) once, on the GPU when there is one (bf16 where supported).
        A CTranslate2 export (``adaptmllm export``) is loaded with CTranslate2.

        Raises:
            adaptmllm.model.ModelError: the folder is incomplete, the hub cannot be reached, or the
                tokenizer lacks a language code (adaptmllm.ct2.CT2Error: ctranslate2 is not installed).
        """
        from .ct2 import is_ct2_model, load_ct2

        if is_ct2_model(name_or_path):
            ct2_model, tokenizer = load_ct2(name_or_path, src_lang, tgt_lang)
            return cls(ct2_model, tokenizer, name=name, **kwargs)
        import torch

        from .model import load_pretrained

        model, tokenizer = load_pretrained(str(name_or_path), src_lang, tgt_lang)
        if torch.cuda.is_available():
            model = model.to("cuda")
            if torch.cuda.is_bf16_supported():
                model = model.to(torch.bfloat16)
        model.eval()
        return cls(model, tokenizer, name=name, **kwargs)

    def _loop(self) -> None:
        from .translate import translate_texts

        while True:
            first = self._q.get()
            if first is None:
                return
            batch, n, stop = [first], len(first.texts), False
            deadline = time.monotonic() + self.batch_wait_s
            while n < self.max_batch_segments:
                try:
                    left = deadline - time.monotonic()
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                n += len(nxt.texts)
            groups: dict[tuple, list[_Request]] = {}
            for r in batch:
                if r.future.set_running_or_notify_cancel():
                    groups.setdefault(r.key, []).append(r)
            for (src, tgt, beams, max_new), reqs in groups.items():
                texts = [t for r in reqs for t in r.texts]
                try:
                    out = translate_texts(self.model, self.tokenizer, texts, src, tgt, num_beams=beams,
                                          max_new_tokens=max_new, batch_size=self.max_batch_segments,
                                          max_source_length=self.max_source_length, **self.options)
                    self.batches += 1
                except BaseException as e:  # handed to the waiting requests
                    for r in reqs:
                        r.future.set_exception(e)
                    continue
                i = 0
                for r in reqs:
                    r.future.set_result(out[i:i + len(r.texts)])
                    i += len(r.texts)
            if stop:
                return

    def translate(self, texts: Sequence[str], src_lang: str, tgt_lang: str, num_beams: int = 4,
                  max_new_tokens: int = 128, timeout: Optional[float] = None) -> list[str]:
        """Translate N segments (blocking; thread-safe); returns N translations in order.

        Raises:
            concurrent.futures.TimeoutError: no result within ``timeout`` seconds.
            RuntimeError: the engine is closed.
            Exception: whatever generation raised.
        """
        if not self._thread.is_alive():
            raise RuntimeError(f"the {self.name} engine is closed")
        texts = list(texts)
        if not texts:
            return []
        req = _Request(texts, (src_lang, tgt_lang, int(num_beams), int(max_new_tokens)))
        self._q.put(req)
        try:
            return req.future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            req.future.cancel()
            raise

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker thread after the requests already queued."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout)


# -- the handlers (plain Python: testable without a browser) ---------------------------------------------
def _upload_root() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def _clean_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines()).strip()


class Playground:
    """The state and handlers behind the app: the engines, the limits and the annotation store.

    Args:
        finetuned: the engine of the fine-tuned model.
        baseline: the engine of the baseline model, or None.
        config: limits and defaults.
        src_lang, tgt_lang: the languages the page starts with (FLORES-200 codes).
        store: the human evaluation database, or None (the tab then says how to enable it).
        title: shown at the top of the page (no file system paths: the page may be public).
        admins: login names of the owner(s): they alone see the Results tab and export the ratings.

    Identity and access (set by :func:`launch`: ``auth_required``, ``shared``): with logins, an
    annotator is always the signed-in user, whatever name a client sends; the results are for
    ``admins``, or, on a server without logins and not shared, for requests from this machine.
    Translated files and exports in ``workdir`` older than ``config.file_ttl_s`` are deleted by a
    background thread (and all of them by :meth:`close`).
    """

    def __init__(self, finetuned: Engine, baseline: Optional[Engine] = None, config: Optional[ServeConfig] = None,
                 src_lang: str = "eng_Latn", tgt_lang: str = "gle_Latn", store: Optional[HumanEvalStore] = None,
                 title: str = "adaptmllm playground", admins: Sequence[str] = ()) -> None:
        self.finetuned, self.baseline = finetuned, baseline
        self.config = config or ServeConfig()
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.store = store
        self.title = title
        self.admins = {str(a).strip() for a in admins if str(a).strip()}
        self.auth_required = False
        self.shared = False
        self.weights = self.config.mqm_weights()
        self.workdir = Path(tempfile.mkdtemp(prefix="adaptmllm-playground-"))
        self._stop = threading.Event()
        self._cleaner = threading.Thread(target=self._clean_loop, name="adaptmllm-playground-cleaner", daemon=True)
        self._cleaner.start()

    def close(self, engines: bool = True) -> None:
        """Delete the temporary output files and stop their clean-up thread; also stop the engines
        unless ``engines`` is False (they serve another app)."""
        self._stop.set()
        if engines:
            for e in (self.finetuned, self.baseline):
                if e is not None:
                    e.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def clean_files(self, max_age_s: Optional[float] = None) -> int:
        """Delete the files in ``workdir`` (translated files, exports, and with :func:`serve` Gradio's
        own cache of uploads and handed-out files) older than ``max_age_s`` seconds (default
        ``config.file_ttl_s``), then the folders left empty. Returns how many files were deleted."""
        age = self.config.file_ttl_s if max_age_s is None else max_age_s
        now, n = time.time(), 0
        for root, dirs, files in os.walk(self.workdir, topdown=False):
            for name in files:
                f = Path(root) / name
                try:
                    if now - f.lstat().st_mtime > age:
                        f.unlink()
                        n += 1
                except OSError:
                    continue
            if Path(root) != self.workdir:
                try:
                    Path(root).rmdir()  # only when empty
                except OSError:
                    pass
        return n

    def _clean_loop(self) -> None:
        period = cache_period_s(self.config.file_ttl_s)
        while not self._stop.wait(period):
            try:
                self.clean_files()
            except Exception:  # noqa: BLE001 - a clean-up failure must not stop the server
                log.warning("clean-up of %s failed", self.workdir, exc_info=True)

    # -- identity and access ---------------------------------------------------------------------------
    def annotator_for(self, typed: Any, username: Optional[str]) -> Any:
        """Who a request acts as: the signed-in user when the server has logins (a name sent by the
        client is ignored), else the typed name.

        Raises:
            UserInputError: the server has logins but the request carries none.
        """
        if username:
            return username
        if self.auth_required:
            raise UserInputError("Sign in first (reload the page).")
        return typed

    def is_owner(self, username: Optional[str], client_host: Optional[str] = None) -> bool:
        """Whether a request may read the results: a login named in ``admins``; without logins, a
        request from this machine to a server that is not shared."""
        if username:
            return username in self.admins
        if self.auth_required or self.shared:
            return False
        try:
            return ipaddress.ip_address(client_host or "").is_loopback
        except ValueError:
            return client_host == "localhost"

    def check_owner(self, username: Optional[str], client_host: Optional[str] = None) -> None:
        """Raises :class:`UserInputError` unless :meth:`is_owner`."""
        if not self.is_owner(username, client_host):
            log.warning("refused the results to %s", "a signed-in annotator" if username else "a remote client")
            raise UserInputError("The results are for the owner of this server only; annotators never see "
                                 "other people's ratings.")

    # -- translation ---------------------------------------------------------------------------------
    def _settings(self, src: Any, tgt: Any, num_beams: Any, max_new_tokens: Any) -> tuple[str, str, int, int]:
        from .languages import check_code

        c = self.config
        src = check_code(src, "Source language")
        tgt = check_code(tgt, "Target language")
        try:
            beams, max_new = int(num_beams), int(max_new_tokens)
        except (TypeError, ValueError) as e:
            raise UserInputError("Beam size and maximum length must be whole numbers.") from e
        if not 1 <= beams <= c.max_beams:
            raise UserInputError(f"Beam size must be from 1 to {c.max_beams}.")
        if not 1 <= max_new <= c.max_new_tokens_limit:
            raise UserInputError(f"Maximum length must be from 1 to {c.max_new_tokens_limit} tokens.")
        return src, tgt, beams, max_new

    def _translate_segments(self, segs: list[str], settings: tuple, progress: Optional[Callable] = None
                            ) -> tuple[list[str], Optional[list[str]]]:
        """Translate with both engines at once (chunked so that other users' requests interleave)."""
        src, tgt, beams, max_new = settings
        chunk = self.config.max_batch_segments
        timeout = self.config.request_timeout_s
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2) if self.baseline is not None else None
        fine: list[str] = []
        base: Optional[list[str]] = [] if self.baseline is not None else None
        try:
            for start in range(0, len(segs), chunk):
                part = segs[start:start + chunk]
                if pool is not None:
                    fb = pool.submit(self.baseline.translate, part, src, tgt, beams, max_new, timeout)
                fine += self.finetuned.translate(part, src, tgt, beams, max_new, timeout)
                if pool is not None:
                    base += fb.result()
                if progress is not None:
                    progress(min(len(segs), start + chunk) / len(segs), desc="translating")
        finally:
            if pool is not None:
                pool.shutdown(wait=False)
        return fine, base

    def translate(self, text: Any, src: Any, tgt: Any, num_beams: Any, max_new_tokens: Any) -> tuple[str, str]:
        """Translate a text box (one segment per line; empty lines kept).

        Returns ``(fine-tuned translation, baseline translation or "")``.

        Raises:
            UserInputError: no text, more than ``max_input_chars`` characters or ``max_file_lines``
                lines, settings out of range; LanguageError: an unknown language code.
        """
        c = self.config
        if not isinstance(text, str) or not text.strip():
            raise UserInputError("Type or paste some text to translate.")
        if len(text) > c.max_input_chars:
            raise UserInputError(f"The text has {len(text):,} characters; the limit is {c.max_input_chars:,} per "
                                 "request. Shorten it, or upload it as a .txt file (one segment per line).")
        settings = self._settings(src, tgt, num_beams, max_new_tokens)
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if len(lines) > c.max_file_lines:
            raise UserInputError(f"The text has {len(lines):,} lines; the limit is {c.max_file_lines:,}.")
        todo = [i for i, line in enumerate(lines) if line.strip()]
        fine, base = self._translate_segments([lines[i].strip() for i in todo], settings)
        out_f, out_b = [""] * len(lines), [""] * len(lines)
        for j, i in enumerate(todo):
            out_f[i] = fine[j]
            if base is not None:
                out_b[i] = base[j]
        return "\n".join(out_f), ("\n".join(out_b) if base is not None else "")

    def read_upload(self, path: Any) -> tuple[list[str], str]:
        """Read an uploaded ``.txt`` (one segment per line) or ``.tsv`` (first column the source; a
        first row whose first cell is ``source`` is a header) from Gradio's upload folder.

        Returns ``(segments, suffix)``.

        Raises:
            UserInputError: no file, a path outside the upload folder, another file type, more than
                ``max_upload_bytes`` bytes, not UTF-8, more than ``max_file_lines`` lines, or a line
                over ``max_input_chars`` characters.
        """
        c = self.config
        if path is None or path == "":
            raise UserInputError("Upload a .txt file (one segment per line) or a .tsv file first.")
        if isinstance(path, dict):  # a FileData payload
            path = path.get("path")
        p = Path(str(getattr(path, "name", path))).resolve()
        root = _upload_root()
        if root not in p.parents:
            log.warning("refused a file outside the upload folder")
            raise UserInputError("Upload the file with the upload button; files are read only from uploads.")
        suffix = p.suffix.lower()
        if suffix not in (".txt", ".tsv"):
            raise UserInputError(f"Upload a .txt or .tsv file (got a {suffix or 'file without extension'}).")
        size = p.stat().st_size
        if size > c.max_upload_bytes:
            raise UserInputError(f"The file has {size:,} bytes; the limit is {c.max_upload_bytes:,}. "
                                 "Split it into smaller files.")
        data = p.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise UserInputError(f"The file is not UTF-8 text (line {line}, byte {e.start}); save it as UTF-8.") from e
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if suffix == ".tsv":
            lines = [line.split("\t", 1)[0] for line in lines]
            if lines and lines[0].strip().lower() == "source":
                lines = lines[1:]
        if not any(line.strip() for line in lines):
            raise UserInputError("The file holds no text.")
        if len(lines) > c.max_file_lines:
            raise UserInputError(f"The file has {len(lines):,} lines; the limit is {c.max_file_lines:,}. "
                                 "Split it into smaller files.")
        for n, line in enumerate(lines, start=1):
            if len(line) > c.max_input_chars:
                raise UserInputError(f"Line {n} has {len(line):,} characters; the limit is {c.max_input_chars:,}.")
        return [line.strip() for line in lines], suffix

    def translate_file(self, path: Any, src: Any, tgt: Any, num_beams: Any, max_new_tokens: Any,
                       progress: Optional[Callable] = None) -> tuple[str, str]:
        """Translate an uploaded file (see :meth:`read_upload`).

        Returns ``(output path, message)``: for a ``.txt``, the translations one per line; for a
        ``.tsv``, columns ``source``, ``translation`` (and ``baseline`` with a baseline model).

        Raises:
            UserInputError, LanguageError: see :meth:`read_upload` and :meth:`translate`.
        """
        segs, suffix = self.read_upload(path)
        settings = self._settings(src, tgt, num_beams, max_new_tokens)
        t0 = time.perf_counter()
        todo = [i for i, s in enumerate(segs) if s]
        fine, base = self._translate_segments([segs[i] for i in todo], settings, progress)
        out_f, out_b = [""] * len(segs), [""] * len(segs)
        for j, i in enumerate(todo):
            out_f[i] = _clean_line(fine[j])
            if base is not None:
                out_b[i] = _clean_line(base[j])
        folder = self.workdir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        stem = Path(str(getattr(path, "name", path))).stem[:60] or "upload"
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
        out = folder / f"{stem}.{settings[1]}{suffix}"
        if suffix == ".txt":
            body = "".join(t + "\n" for t in out_f)
        else:
            head = "source\ttranslation" + ("\tbaseline" if base is not None else "")
            body = head + "\n" + "".join(  # cells a spreadsheet would run as formulas get a leading '
                "\t".join(spreadsheet_cell(x) for x in [_clean_line(s), f] + ([b] if base is not None else [])) + "\n"
                for s, f, b in zip(segs, out_f, out_b))
        out.write_text(body, encoding="utf-8")
        msg = f"Translated {len(todo):,} segments in {time.perf_counter() - t0:.1f} s."
        return str(out), msg

    # -- human evaluation ----------------------------------------------------------------------------
    def _store(self) -> HumanEvalStore:
        if self.store is None:
            raise UserInputError("Human evaluation is not set up on this server: start it with a run folder "
                                 "(adaptmllm serve --run runs/NAME) or a TSV of segments (--segments FILE.tsv).")
        return self.store

    def _highlight(self, item: Item, errors: list[dict]) -> list[tuple[str, Optional[str]]]:
        """The output split into chunks labelled with the errors covering them (overlaps joined)."""
        text = item.output
        labels: list[list[str]] = [[] for _ in text]
        whole = []
        for k, e in enumerate(errors, start=1):
            tag = f"{k}: {e['category']}/{e['severity']}"
            if e["span_start"] is None or e["span_start"] == e["span_end"]:
                whole.append(tag)
                continue
            for i in range(e["span_start"], min(e["span_end"], len(text))):
                labels[i].append(tag)
        chunks: list[tuple[str, Optional[str]]] = []
        for ch, lab in zip(text, labels):
            key = ", ".join(lab) or None
            if chunks and chunks[-1][1] == key:
                chunks[-1] = (chunks[-1][0] + ch, key)
            else:
                chunks.append((ch, key))
        if whole:
            chunks.append(("   [whole segment]", ", ".join(whole)))
        return chunks

    def _view(self, annotator: str, item: Optional[Item]) -> tuple:
        """Outputs of the annotation view: item id, source, translation, progress, highlighted errors,
        cleared score, cleared span (start, end, text)."""
        store = self._store()
        done, total = store.progress(annotator)
        if item is None:
            return (None, "", "", f"**All {total} segments rated. Thank you, {annotator}!** Your ratings are saved.",
                    [], None, None, None, "")
        progress = (f"**Segment {done + 1} of {total}** for {annotator}. Ratings are saved at each click; "
                    "come back any time to continue.")
        return (item.id, item.source, item.output, progress, self._highlight(item, store.errors(annotator, item.id)),
                None, None, None, "")

    def annotator_start(self, annotator: Any, username: Optional[str] = None) -> tuple:
        """Register the annotator and return their next item (see :meth:`_view`). With a login
        (``username``), the annotator is the signed-in user and ``annotator`` is ignored (see
        :meth:`annotator_for`). Raises :class:`HumanEvalError` / :class:`UserInputError`."""
        store = self._store()
        name = store.register(self.annotator_for(annotator, username))
        return self._view(name, store.next_item(name))

    def add_error(self, annotator: Any, item_id: Any, category: Any, severity: Any, span_start: Any = None,
                  span_end: Any = None, note: Any = "", span_text: Any = "", username: Optional[str] = None) -> list:
        """Record an MQM error span and return the highlighted errors.

        The span is character offsets ``[span_start, span_end)`` into the translation, checked
        against ``span_text`` (the selected text) when both are given; neither: the whole segment.
        ``username``: the signed-in user, who is the annotator (see :meth:`annotator_for`).
        Raises :class:`HumanEvalError`."""
        store = self._store()
        annotator = self.annotator_for(annotator, username)
        if item_id is None or item_id == "":
            raise UserInputError("Press Start to get a segment first.")
        store.add_error(annotator, int(item_id), category, severity,
                        None if span_start in (None, "") else int(span_start),
                        None if span_end in (None, "") else int(span_end), span_text=span_text or "", note=note or "")
        item = store.item(int(item_id))
        return self._highlight(item, store.errors(annotator, item.id))

    def undo_error(self, annotator: Any, item_id: Any, username: Optional[str] = None) -> list:
        """Delete the annotator's last error span on the item; return the highlighted errors."""
        store = self._store()
        annotator = self.annotator_for(annotator, username)
        if item_id is None or item_id == "":
            raise UserInputError("Press Start to get a segment first.")
        store.remove_last_error(annotator, int(item_id))
        item = store.item(int(item_id))
        return self._highlight(item, store.errors(annotator, item.id))

    def rate(self, annotator: Any, item_id: Any, sqm: Any, username: Optional[str] = None) -> tuple:
        """Store the SQM score (0-6) of the item and return the annotator's next item (see :meth:`_view`).
        ``username``: the signed-in user, who is the annotator (see :meth:`annotator_for`).

        Raises:
            HumanEvalError: no score, out of range, unknown item; UserInputError: no item yet.
        """
        store = self._store()
        annotator = self.annotator_for(annotator, username)
        if item_id is None or item_id == "":
            raise UserInputError("Press Start to get a segment first.")
        store.rate(annotator, int(item_id), sqm)
        name = store.register(annotator)
        return self._view(name, store.next_item(name))

    def summary(self, username: Optional[str] = None, client_host: Optional[str] = "127.0.0.1"
                ) -> tuple[list[list], Any]:
        """Per-system summary rows (for a table) and the bar chart (a matplotlib figure); for the
        owner only (see :meth:`is_owner`, else :class:`UserInputError`)."""
        self.check_owner(username, client_host)
        store = self._store()
        annotations = store.annotations()
        summary = summarize(annotations, self.weights)
        rows = [[s["system"], s["ratings"], s["annotators"], _r(s["sqm_mean"]), _r(s["sqm_ci_low"]),
                 _r(s["sqm_ci_high"]), _r(s["mqm_per_100_words"]), s["errors"]]
                + [s[f"errors_{c.replace(' ', '_')}"] for c in CATEGORIES] for s in summary]
        return rows, plot_summary(summary, weights=self.weights, annotations=annotations)

    def export_csv(self, username: Optional[str] = None, client_host: Optional[str] = "127.0.0.1") -> str:
        """Write every annotation to a CSV file and return its path; for the owner only (see
        :meth:`is_owner`, else :class:`UserInputError`)."""
        self.check_owner(username, client_host)
        out = self.workdir / uuid.uuid4().hex / "human_eval_annotations.csv"
        return str(self._store().export_csv(out, self.weights))


def _r(x: float) -> Optional[float]:
    return None if x != x else round(x, 3)


SUMMARY_HEADERS = ["system", "ratings", "annotators", "SQM mean", "CI low", "CI high", "MQM / 100 words",
                   "errors"] + list(CATEGORIES)


# -- friendly errors, secrets ------------------------------------------------------------------------------
GENERIC_ERROR = ("Something went wrong on the server; it has been logged. Please try again, "
                 "perhaps with a shorter text.")


def _friendly(fn: Callable) -> Callable:
    """Wrap a handler so that users see a short message (``gr.Error``), never a traceback."""
    import gradio as gr

    from .languages import LanguageError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (UserInputError, HumanEvalError, LanguageError) as e:
            raise gr.Error(str(e), print_exception=False) from None
        except concurrent.futures.TimeoutError:
            raise gr.Error("The server is busy; please try again in a minute.", print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - the user sees a short message; the log keeps the details
            log.error("%s failed: %s", getattr(fn, "__name__", "handler"), type(e).__name__, exc_info=True)
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None

    return wrapper


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


def _install_redactor(secrets: Sequence[str]) -> _Redactor:
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


def _auth_checker(users: list[tuple[str, str]]) -> Callable:
    """An async login check with a constant-time comparison. Guessing is bounded before it gets here:
    :class:`adaptmllm.webguard.LoginThrottle` counts attempts per client address and over all."""
    table = {u: p.encode() for u, p in users}

    async def check(username: str, password: str) -> bool:
        want = table.get(username)
        ok = hmac.compare_digest(want if want is not None else b"\0" * 16, (password or "").encode())
        if not (ok and want is not None):
            await asyncio.sleep(0.05)  # a failure is never faster than a success
            return False
        return True

    return check


def _in_colab() -> bool:
    try:
        import google.colab  # type: ignore  # noqa: F401

        return True
    except ImportError:
        return False


def check_share(share: Optional[bool], auth: Any, insecure_share: bool = False) -> bool:
    """Decide whether the app is shared and refuse sharing without authentication.

    ``share=None`` means Gradio's default: shared on Colab and hosted notebooks or when
    ``GRADIO_SHARE=true``. Returns the effective ``share``.

    Raises:
        ShareError: sharing without ``auth`` and without ``insecure_share``, or with a password shorter
            than :data:`MIN_SHARE_PASSWORD_CHARS` characters (naming the user, never the password).
    """
    effective = bool(share) if share is not None else (
        _in_colab() or os.environ.get("GRADIO_SHARE", "").lower() == "true")
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


def cache_period_s(ttl_s: float) -> float:
    """Seconds between two clean-ups of files older than ``ttl_s`` seconds: half the age, at most 10
    minutes, at least 1 second."""
    return float(max(1, min(600, int(ttl_s) // 2)))


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

    from .languages import choices

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
                btn.click(_friendly(pg.translate), [text, src, tgt, beams, max_new], [out_f, out_b],
                          api_name="translate", **translate_limit)
                text.submit(_friendly(pg.translate), [text, src, tgt, beams, max_new], [out_f, out_b],
                            api_visibility="private", **translate_limit)

                def translate_file(path, s, t, b, m, progress=gr.Progress()):
                    return pg.translate_file(path, s, t, b, m, progress=progress)

                translate_file.__name__ = "translate_file"
                file_btn.click(_friendly(translate_file), [up, src, tgt, beams, max_new], [down, file_msg],
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
                start.click(_friendly(start_fn), [name], view, api_name="annotator_start", **annotate_limit).then(
                    None, None, None, js=READONLY_JS, api_visibility="private", queue=False)
                name.submit(_friendly(start_fn), [name], view, api_visibility="private", **annotate_limit).then(
                    None, None, None, js=READONLY_JS, api_visibility="private", queue=False)

                def on_select(evt: gr.SelectData):
                    idx = evt.index if isinstance(evt.index, (list, tuple)) and len(evt.index) == 2 else None
                    if not idx or idx[0] == idx[1]:
                        return None, None, ""
                    return int(idx[0]), int(idx[1]), evt.value

                on_select.__annotations__ = {"evt": gr.SelectData}
                output.select(on_select, None, [span_start, span_end, span_text], api_visibility="private",
                              queue=False)
                add.click(_friendly(add_fn),
                          [name, item_id, category, severity, span_start, span_end, note, span_text],
                          [marked], api_name="add_error", **annotate_limit).success(
                    lambda: (None, None, "", ""), None, [span_start, span_end, span_text, note],
                    api_visibility="private", queue=False)
                undo.click(_friendly(undo_fn), [name, item_id], [marked], api_name="undo_error",
                           **annotate_limit)
                submit.click(_friendly(rate_fn), [name, item_id, sqm], view, api_name="rate", **annotate_limit).then(
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
                    refresh.click(_friendly(summary_fn), None, [table, chart], api_name="summary", **annotate_limit)
                    export_btn.click(_friendly(export_fn), None, [export_file], api_name="export_csv",
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
    The app is guarded (:class:`adaptmllm.webguard.RequestGuard`): request bodies over the limits of
    :func:`adaptmllm.webguard.body_limits` get 413 before they are read; with logins, every route but
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
    _install_redactor([p for _, p in users or []])
    if effective and not users:
        log.warning("sharing WITHOUT a password (--insecure-share): anyone with the link can use this server")
    if not effective and not users and c.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without a password: anyone on the network can use this server", c.host)
    from starlette.middleware import Middleware

    body_limit, upload_limit = body_limits(c.max_input_chars, c.max_upload_bytes, MAX_ITEM_CHARS, MAX_NOTE_CHARS)
    throttle = LoginThrottle(c.login_max_failures, c.login_lockout_s, c.login_lockout_s, c.login_global_per_minute)
    guard = Middleware(RequestGuard, blocks=app, body_limit=body_limit, upload_limit=upload_limit, throttle=throttle)
    app.launch(
        server_name=c.host, server_port=c.port, share=effective, auth=_auth_checker(users) if users else None,
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
            from .humaneval import _run_languages

            return _run_languages(run_dir)
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
        segments: a TSV of items to rate instead (see :func:`adaptmllm.humaneval.items_from_tsv`).
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
        adaptmllm.model.ModelError: a model cannot be loaded;
        HumanEvalError: the segments file is malformed or does not match the database.
    """
    from .languages import check_code

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
