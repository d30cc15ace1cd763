"""A playground session: translate with the baseline and the fine-tuned model side by side, upload files, rate
translations (SQM/MQM), friendly errors.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from adaptmllm.apps.playground.worker import Engine
from adaptmllm.config import ServeConfig
from adaptmllm.evaluation.human import CATEGORIES, HumanEvalError, HumanEvalStore, Item
from adaptmllm.evaluation.human_report import plot_summary, summarize
from adaptmllm.io import spreadsheet_cell
from adaptmllm.languages import LanguageError, check_code

__all__ = ["UserInputError", "Playground"]

log = logging.getLogger("adaptmllm.apps.playground.app")


class UserInputError(ValueError):
    """A request the playground refuses (too long, too many lines, wrong file type...); the message
    is shown to the user as is."""


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


def friendly(fn: Callable) -> Callable:
    """Wrap a handler so that users see a short message (``gr.Error``), never a traceback."""
    import gradio as gr

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


def cache_period_s(ttl_s: float) -> float:
    """Seconds between two clean-ups of files older than ``ttl_s`` seconds: half the age, at most 10
    minutes, at least 1 second."""
    return float(max(1, min(600, int(ttl_s) // 2)))
