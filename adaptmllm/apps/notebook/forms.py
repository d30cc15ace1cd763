"""The notebook's config form: one widget per config field (help text from the field docstrings), grouped in
tabs, with uploads, a preset and validation that shows the field to fix.

The fields and the widget each gets are :mod:`adaptmllm.apps.notebook.fields`.
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import ipywidgets as widgets
from IPython.display import display

from adaptmllm.apps.notebook.fields import (LOG_RANGE, TAB_TITLES, FieldSpec, doc_html, field_specs, get_path,
                                            group_docs, merge_dicts, set_path)
from adaptmllm.apps.notebook.setup import check_corpus
from adaptmllm.config import (PRETRAINED_PRESET, Config, ConfigError, build_section, check_model_name,
                              config_from_dict, config_to_dict, learning_rate_warning, load_config, model_preset,
                              save_config)
from adaptmllm.hardware import in_colab
from adaptmllm.languages import choices, iso639_1

__all__ = ["start_config", "ConfigForm"]


def start_config(preset: str | os.PathLike | None = None, overrides: Optional[dict] = None, **top: Any) -> Config:
    """The config a notebook starts from: a YAML preset (or the defaults, the embedded demo), with
    ``overrides`` (a nested dict: the tiny demo's settings) and top-level fields (``name=``, ``runs_dir=``...)
    on top.

    ``overrides`` apply to the tiny model only: when the model (from the preset, or ``overrides['model']``)
    is a pretrained one, its ``train``/``eval``/``hpo`` parts are dropped and, without a preset file, the
    pretrained model's preset (:func:`adaptmllm.config.model_preset`: learning rate 2e-5 ...) is used.

    Raises:
        ConfigError: the preset is missing or invalid, or an override is.
    """
    base = config_to_dict(load_config(preset)) if preset else config_to_dict(Config())
    overrides = overrides or {}
    model = merge_dicts(base, merge_dicts(overrides, top))["model"]["name_or_path"]
    if model_preset(model) is not None:
        kept = {k: v for k, v in overrides.items() if k not in ("train", "eval", "hpo")}
        base = base if preset else merge_dicts(base, model_preset(model))
        return config_from_dict(merge_dicts(base, merge_dicts(kept, top)))
    return config_from_dict(merge_dicts(base, merge_dicts(overrides, top)))


# ------------------------------------------------------------------------------------------ the form

def _set_tooltip(w: Any, text: str) -> None:
    for attr in ("tooltip", "description_tooltip"):  # ipywidgets 8, 7
        if attr in getattr(w, "keys", []):
            try:
                setattr(w, attr, text)
                return
            except Exception:  # pragma: no cover - version differences
                pass


def _uploaded(value: Any) -> list[tuple[str, bytes]]:
    """(name, content) of the files in a ``FileUpload.value`` (ipywidgets 8: a tuple of dicts;
    ipywidgets 7: a dict name -> {"metadata", "content"})."""
    if isinstance(value, dict):
        return [(name, bytes(v["content"])) for name, v in value.items()]
    return [(v["name"], bytes(v["content"])) for v in value or ()]


class _Field:
    """The widget of one :class:`FieldSpec`, its error label and its help text."""

    def __init__(self, spec: FieldSpec, form: "ConfigForm") -> None:
        self.spec = spec
        s, style, lay = spec, {"description_width": "190px"}, form._layouts["field"]
        if s.kind == "bool":
            w = widgets.Checkbox(description=s.name, indent=True, style=style, layout=lay)
        elif s.kind == "choice":
            w = widgets.Dropdown(options=list(s.choices or ()), description=s.name, style=style, layout=lay)
        elif s.kind == "language":
            w = widgets.Dropdown(options=[(f"{name} ({code})", code) for name, code in choices()],
                                 description=s.name, style=style, layout=lay)
        elif s.kind == "log":
            w = widgets.FloatLogSlider(base=10, min=LOG_RANGE[0], max=LOG_RANGE[1], step=0.01,
                                       readout_format=".1e", description=s.name, style=style, layout=lay)
        elif s.kind == "int":
            w = widgets.IntText(description=s.name, style=style, layout=lay)
        elif s.kind == "float":
            w = widgets.FloatText(description=s.name, style=style, layout=lay)
        elif s.kind == "yaml":
            w = widgets.Textarea(description=s.name, style=style, layout=form._layouts["yaml"])
        else:
            w = widgets.Text(description=s.name, style=style, layout=lay,
                             placeholder="empty: not set" if s.kind == "optional" else "")
        _set_tooltip(w, s.doc)
        self.widget = w
        self.error = widgets.HTML(layout=form._layouts["error"])
        self.help = widgets.HTML(f'<div style="margin:-4px 0 6px 198px;color:#666;font-size:90%;'
                                 f'max-width:640px;line-height:1.3">{doc_html(s.doc)}</div>' if s.doc else "",
                                 layout=form._layouts["help"])
        row = [w]
        self.upload = None
        if s.upload and in_colab():  # ipywidgets' upload fails silently over ~1 MB in Colab
            self.help.value += ('<div style="margin:0 0 6px 198px;color:#666;font-size:90%">On Colab: upload with the '
                                '<b>Upload a corpus</b> cell below (no size limit), or type a path on Google Drive.</div>')
        elif s.upload:
            self.upload = widgets.FileUpload(multiple=True, description="Upload", layout=form._layouts["upload"])
            _set_tooltip(self.upload, "Upload a corpus file (TSV, CSV, JSONL), or both files of an aligned pair "
                                      "(train.en + train.ga); large corpora: put them on Google Drive instead")
            self.upload.observe(lambda ch: form._on_upload(self, ch["new"]), names="value")
            row.append(self.upload)
        self.box = widgets.VBox([widgets.HBox(row + [self.error], layout=form._layouts["box"]), self.help],
                                layout=form._layouts["box"])

    def get(self) -> Any:
        """The field's value in config terms (None for an empty optional box).

        Raises:
            ConfigError: the text cannot be read as the field's type.
        """
        s, v = self.spec, self.widget.value
        if s.kind in ("bool", "choice", "language", "int", "float"):
            return v
        if s.kind == "log":
            return float(f"{v:.3g}")
        if s.kind == "yaml":
            import yaml

            try:
                return yaml.safe_load(v) if v.strip() else None
            except yaml.YAMLError as e:
                raise ConfigError(f"{s.path}: not valid YAML ({getattr(e, 'problem', e)})") from e
        text = v.strip()
        if text == "" and s.kind == "optional":
            return None
        if s.base is int:
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"{s.path}: {text!r} is not a whole number") from None
        if s.base is float:
            try:
                return float(text)
            except ValueError:
                raise ConfigError(f"{s.path}: {text!r} is not a number") from None
        if s.base is bool:
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise ConfigError(f"{s.path}: {text!r} is not true or false")
        return v if s.kind == "text" else text

    def set(self, value: Any) -> None:
        """Show ``value`` (a config value) in the widget."""
        s, w = self.spec, self.widget
        if s.kind == "log":
            exp = math.log10(value) if value and value > 0 else LOG_RANGE[0]
            w.min, w.max = min(w.min, int(exp) - 1), max(w.max, int(exp) + 1)
            w.value = value
        elif s.kind == "choice" and value not in w.options:
            w.options = list(w.options) + [value]
            w.value = value
        elif s.kind == "language" and value not in [o[1] for o in w.options]:
            w.options = list(w.options) + [(str(value), value)]
            w.value = value
        elif s.kind in ("bool", "choice", "language", "int", "float"):
            w.value = value
        elif s.kind == "yaml":
            import yaml

            w.value = "" if value is None else yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
        else:
            w.value = "" if value is None else str(value)

    def show_error(self, message: str) -> None:
        """Show ``message`` beside the field (empty: clear it)."""
        self.error.value = (f'<span style="color:#b00020">&#9888; {html.escape(message)}</span>' if message else "")

    def show_warning(self, message: str) -> None:
        """Show a warning (not an error: the value is allowed) beside the field."""
        self.error.value = f'<span style="color:#b26a00">&#9888; {html.escape(message)}</span>'


class ConfigForm:
    """An ipywidgets form for a whole :class:`~adaptmllm.config.Config`, generated from the dataclasses.

    One tab per section (Run, Data, Model, Train...), nested sections (``model.tiny``) in a
    collapsed accordion; each field with its docstring as help. Every change is validated at once:
    a :class:`~adaptmllm.config.ConfigError` is shown in red beside the field it names. "Save preset"
    writes the config as YAML, "Load preset" reads one. Corpora can be uploaded (saved under
    ``upload_dir``); their path is filled in.

    Args:
        config: the starting values (default: ``Config()``, the embedded demo).
        upload_dir: where uploaded files are saved (default ``uploads``).
        preset_path: the preset file name the Save/Load buttons start with.
        cls: the config dataclass (for tests and extensions; default :class:`Config`).
        state_path: where every valid change is saved (a YAML preset); when it exists, the form starts
            from it instead of ``config`` (a re-run of the cell keeps the edits; **Reset** goes back).
        demo_overrides: the tiny demo's settings, applied again when the model goes back to ``tiny``.

    Choosing a pretrained model (any name but ``tiny``) fills in :data:`adaptmllm.config.PRETRAINED_PRESET`
    (learning rate 2e-5, ...). A model name that is neither ``tiny``, a folder nor a hub id, and a corpus
    that cannot be read, are errors beside their field; a corpus that can is described below its field.
    """

    def __init__(self, config: Optional[Config] = None, upload_dir: str | os.PathLike = "uploads",
                 preset_path: str = "preset.yaml", cls: type = Config, state_path: str | os.PathLike | None = None,
                 demo_overrides: Optional[dict] = None) -> None:
        self.cls = cls
        self.start = config if config is not None else cls()
        self.state_path = Path(state_path) if state_path else None
        self.demo_overrides = demo_overrides or {}
        self.note = widgets.HTML()
        self.corpus_info = widgets.HTML()
        self.upload_dir = Path(upload_dir)
        self.specs = field_specs(cls)
        # Shared layouts: one widget model each instead of one per field (smaller saved widget state).
        self._layouts = {"field": widgets.Layout(width="460px"), "yaml": widgets.Layout(width="460px", height="5em"),
                         "error": widgets.Layout(margin="0 0 0 8px"), "help": widgets.Layout(),
                         "upload": widgets.Layout(width="110px"), "box": widgets.Layout()}
        self.fields: dict[str, _Field] = {s.path: _Field(s, self) for s in self.specs}
        self._loading = False
        self.error_message = ""
        self.status = widgets.HTML()
        self.preset = widgets.Text(value=preset_path, description="preset file", style={"description_width": "90px"},
                                   layout=widgets.Layout(width="420px"))
        save = widgets.Button(description="Save preset", tooltip="Write the form as a YAML preset")
        load = widgets.Button(description="Load preset", tooltip="Fill the form from a YAML preset")
        save.on_click(lambda _: self.save_preset())
        load.on_click(lambda _: self.load_preset())
        reset = widgets.Button(description="Reset", tooltip="Back to the notebook's parameters (step 2)")
        reset.on_click(lambda _: self.reset())
        self.buttons = (save, load, reset)
        if "data.train" in self.fields:
            train = self.fields["data.train"]
            train.box.children = tuple(train.box.children) + (self.corpus_info,)
        self.widget = widgets.VBox([self._tabs(), widgets.HBox([self.preset, save, load, reset]), self.status,
                                    self.note])
        for f in self.fields.values():
            f.widget.observe(self._changed, names="value")
        restored = self._restore()
        if restored is None:
            self.set_config(self.start)

    def _restore(self) -> Optional[Config]:
        """The saved state (``state_path``) if it exists and is valid, shown in the form."""
        if self.state_path is None or not self.state_path.is_file():
            return None
        try:
            config = load_config(self.state_path)
        except ConfigError as e:
            self.note.value = (f'<p style="color:#b26a00">Could not restore the form from {html.escape(str(e))}; '
                               "started from the notebook's parameters.</p>")
            return None
        self.set_config(config)
        self.note.value = (f"<p>Restored your last settings from <code>{html.escape(str(self.state_path))}</code> "
                           "(<b>Reset</b> goes back to the notebook's parameters).</p>")
        return config

    def reset(self) -> None:
        """Back to the starting config (the notebook's parameters); the saved state is replaced."""
        self.note.value = ""
        self.set_config(self.start)
        config = self.validate()
        if config is not None:
            self._save_state(config)

    def _save_state(self, config: Config) -> None:
        if self.state_path is None:
            return
        try:
            save_config(config, self.state_path)
        except OSError as e:  # a read-only folder: the form still works, without memory
            self.note.value = f'<p style="color:#b26a00">Form not saved: {html.escape(str(e))}</p>'

    def apply(self, values: dict) -> None:
        """Set the fields named by a nested dict (``{"train": {"learning_rate": 2e-5}}``) without validating."""
        flat: dict[str, Any] = {}

        def walk(d: dict, prefix: str) -> None:
            for k, v in d.items():
                path = f"{prefix}{k}"
                if isinstance(v, dict) and not (path in self.fields):
                    walk(v, path + ".")
                else:
                    flat[path] = v

        walk(values, "")
        self._loading = True
        try:
            for path, v in flat.items():
                if path in self.fields:
                    self.fields[path].set(v)
        finally:
            self._loading = False

    def _model_changed(self, old: Any, new: Any) -> None:
        """Switching between ``tiny`` and a pretrained model loads that model's preset."""
        was, now = model_preset(str(old or "")) is not None, model_preset(str(new or ""))
        if now is not None and not was:
            self.apply(now)
            self.note.value = ("<p>Loaded the preset for fine-tuning a pretrained model: learning rate 2e-5, weight "
                               "decay 0.01, batch 16, up to 5 epochs with early stopping, beam 5, the whole dev set, "
                               "HPO learning rates 1e-5 to 1e-4 (adaptMLLM's values).</p>")
        elif now is None and was:  # the preset's fields back to their defaults, then the demo's settings

            defaults = config_to_dict(self.cls())
            self.apply({sec: {k: get_path(defaults, f"{sec}.{k}") for k in PRETRAINED_PRESET[sec] if k != "space"}
                        for sec in PRETRAINED_PRESET})
            self.apply({"hpo": {"space": defaults["hpo"]["space"]}})
            self.apply(self.demo_overrides)
            self.note.value = "<p>Back to the tiny demo's settings.</p>"

    # -- layout
    def _tabs(self) -> widgets.Widget:
        gdocs = group_docs(self.cls)
        groups: dict[str, list[_Field]] = {}
        for f in self.fields.values():
            groups.setdefault(f.spec.group, []).append(f)
        tops = [g for g in groups if "." not in g and g]  # 'data', 'model', ... then '' (run) last
        tops += [g.split(".")[0] for g in groups if "." in g and g.split(".")[0] not in tops]
        tops += [""] if "" in groups else []
        tops = list(dict.fromkeys(tops))
        children, titles = [], []
        for top in tops:
            rows: list[widgets.Widget] = []
            doc = gdocs.get(top, "")
            if doc:
                rows.append(widgets.HTML(f'<p style="margin:4px 0 10px 0"><i>{doc_html(doc)}</i></p>'))
            rows += [f.box for f in groups.get(top, [])]
            for sub in [g for g in groups if g.startswith(top + ".") and g.count(".") == top.count(".") + 1]:
                inner = [widgets.HTML(f"<i>{doc_html(gdocs.get(sub, ''))}</i>")]
                inner += [f.box for g in groups if g == sub or g.startswith(sub + ".") for f in groups[g]]
                acc = widgets.Accordion(children=[widgets.VBox(inner)])
                acc.set_title(0, sub.split(".")[-1])
                acc.selected_index = None
                rows.append(acc)
            children.append(widgets.VBox(rows))
            titles.append(TAB_TITLES.get(top, top.replace("_", " ").capitalize()))
        tab = widgets.Tab(children=children)
        for i, t in enumerate(titles):
            tab.set_title(i, t)
        return tab

    def _ipython_display_(self) -> None:
        display(self.widget)

    # -- values
    def to_dict(self) -> dict:
        """The form's values as a nested dict (not validated).

        Raises:
            ConfigError: a text box cannot be read as its field's type (shown beside the field).
        """
        out: dict = {}
        for path, f in self.fields.items():
            try:
                set_path(out, path, f.get())
            except ConfigError as e:
                f.show_error(str(e).split(": ", 1)[-1])
                raise
        return out

    def validate(self) -> Optional[Config]:
        """Build the config, show any error beside its field and in the status line.

        Returns the :class:`Config`, or None when a value is invalid.
        """
        for f in self.fields.values():
            f.show_error("")
        self.error_message = ""
        try:
            config = build_section(self.cls, self.to_dict(), "")  # = config_from_dict for Config
            self._check_paths(config)
        except (ConfigError, ValueError) as e:
            self._show(str(e))
            return None
        model = getattr(getattr(config, "model", None), "name_or_path", None)
        lr = getattr(getattr(config, "train", None), "learning_rate", None)
        warning = learning_rate_warning(model, lr) if model and lr and "train.learning_rate" in self.fields else None
        if warning:
            self.fields["train.learning_rate"].show_warning(warning)
        self.status.value = ('<span style="color:#1b5e20">&#10003; valid configuration</span>'
                             + (' <span style="color:#b26a00">(see the warning beside train.learning_rate)</span>'
                                if warning else ""))
        return config

    def _check_paths(self, config: Any) -> None:
        """Model name and corpus paths, checked as they are entered (ConfigError naming the field)."""
        model = getattr(getattr(config, "model", None), "name_or_path", None)
        if model is not None:
            problem = check_model_name(model)
            if problem:
                raise ConfigError(f"model.name_or_path: {problem}")
        data = getattr(config, "data", None)
        if data is None or not hasattr(data, "train"):
            return
        self.corpus_info.value = ""
        for name in ("train", "dev", "test"):
            spec = getattr(data, name)
            if spec:
                info = check_corpus(spec, data)  # raises ConfigError naming data.<name>
                if name == "train":
                    self.corpus_info.value = info

    def _show(self, message: str) -> None:
        self.error_message = message
        path, _, rest = message.partition(": ")
        field = self.fields.get(path.strip())
        if field is not None:
            field.show_error(rest or message)
        self.status.value = (f'<span style="color:#b00020">&#9888; {html.escape(message)}</span>'
                             + ("" if field is None else " (see the field)"))

    @property
    def value(self) -> Config:
        """The form as a validated :class:`Config`.

        Raises:
            ConfigError: a field is invalid (the message names it; it is also shown beside the field).
        """
        config = self.validate()
        if config is None:
            raise ConfigError(self.error_message)
        return config

    def set_config(self, config: Config | dict) -> None:
        """Fill the form from a :class:`Config` (or a dict of one)."""
        d = config_to_dict(config) if is_dataclass(config) else config_to_dict(build_section(self.cls, config, ""))
        self._loading = True
        try:
            for path, f in self.fields.items():
                try:
                    f.set(get_path(d, path))
                except KeyError:
                    pass
        finally:
            self._loading = False
        self.validate()

    def _changed(self, change: Any) -> None:
        if self._loading:
            return
        model = self.fields.get("model.name_or_path")
        if model is not None and isinstance(change, dict) and change.get("owner") is model.widget:
            self._model_changed(change.get("old"), change.get("new"))
        config = self.validate()
        if config is not None:
            self._save_state(config)

    # -- presets
    def save_preset(self, path: str | os.PathLike | None = None) -> Optional[Path]:
        """Write the form as a YAML preset (``path`` or the preset box). Returns the path, or None
        (and shows why) when the form is invalid or the file cannot be written."""
        config = self.validate()
        if config is None:
            return None
        target = Path(path or self.preset.value.strip() or "preset.yaml")
        try:
            out = save_config(config, target)
        except OSError as e:
            msg = html.escape(f"{target}: {e.strerror or e}")
            self.status.value = f'<span style="color:#b00020">&#9888; {msg}</span>'
            return None
        self.status.value = f'<span style="color:#1b5e20">&#10003; saved preset {html.escape(str(out))}</span>'
        return out

    def load_preset(self, path: str | os.PathLike | None = None) -> Optional[Config]:
        """Fill the form from a YAML preset (``path`` or the preset box). Returns the config, or
        None (and shows the error, naming the field) when it is missing or invalid."""
        target = Path(path or self.preset.value.strip() or "preset.yaml")
        try:
            config = load_config(target)
        except ConfigError as e:
            msg = str(e)
            # "<file>: field: ..." or, from a YAML file, "<file> line N: field: ..."
            where = re.match(re.escape(str(target)) + r"(?: line \d+(?: column \d+)?)?: ", msg)
            inner = msg[where.end():] if where else ""
            if inner.partition(": ")[0] in self.fields:
                self._show(inner)
                self.status.value = self.status.value.replace("&#9888; ", f"&#9888; {html.escape(str(target))}: ", 1)
            else:
                self.status.value = f'<span style="color:#b00020">&#9888; {html.escape(msg)}</span>'
            return None
        self.set_config(config)
        self.status.value = f'<span style="color:#1b5e20">&#10003; loaded preset {html.escape(str(target))}</span>'
        return config

    # -- uploads
    def _on_upload(self, field: _Field, value: Any) -> None:
        files = [(Path(name).name, content) for name, content in _uploaded(value) if Path(name).name]
        if not files:
            return
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, content in files:
            target = self.upload_dir / name
            target.write_bytes(content)
            saved.append(target)
        self.set_upload(field.spec.path, saved)

    def upload_from_colab(self, path: str = "data.train") -> list[Path]:
        """Colab's own upload dialog (``google.colab.files.upload``: no size limit, unlike ipywidgets'
        FileUpload there): the files are saved under ``upload_dir`` and field ``path`` points at them.
        Returns the saved paths ([] when nothing was chosen).

        Raises:
            RuntimeError: not on Colab (use the Upload button beside the field instead).
        """
        if not in_colab():
            raise RuntimeError("not on Colab: use the Upload button beside the field, or type the corpus path")
        from google.colab import files  # type: ignore

        uploaded = files.upload() or {}
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, content in uploaded.items():
            target = self.upload_dir / Path(name).name
            target.write_bytes(bytes(content))
            saved.append(target)
        if saved:
            self.set_upload(path, saved)
            print(f"uploaded {', '.join(f'{p.name} ({p.stat().st_size / 2**20:.1f} MB)' for p in saved)} -> {path}")
        return saved

    def set_upload(self, path: str, files: Sequence[Path]) -> None:
        """Point field ``path`` at uploaded ``files``: one file -> its path; the two files of an
        aligned pair (``train.en`` + ``train.ga``) -> their prefix, setting ``data.src_suffix`` and
        ``data.tgt_suffix`` when they are empty and a suffix is the source language's ISO 639-1 code."""
        files = [Path(f) for f in files]
        field = self.fields[path]
        stems = {f.with_suffix("") for f in files}
        note = ""
        if len(files) == 1:
            field.set(str(files[0]))
        elif len(files) == 2 and len(stems) == 1:
            field.set(str(stems.pop()))
            suffixes = [f.suffix.lstrip(".") for f in files]
            src_f, tgt_f = self.fields.get("data.src_suffix"), self.fields.get("data.tgt_suffix")
            lang = self.fields["data.src_lang"].get() if "data.src_lang" in self.fields else None
            src_iso = iso639_1(lang) if lang else None
            if src_f and tgt_f and not src_f.get() and not tgt_f.get():
                if src_iso in suffixes:
                    src_f.set(src_iso)
                    tgt_f.set([s for s in suffixes if s != src_iso][0])
                else:
                    note = f"; set data.src_suffix and data.tgt_suffix ({' / '.join(suffixes)})"
        else:
            field.show_error("upload one corpus file, or the two files of an aligned pair (train.en + train.ga)")
            return
        self.validate()
        self.status.value += f" &nbsp; uploaded {html.escape(', '.join(f.name for f in files))}{html.escape(note)}"
