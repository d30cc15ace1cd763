"""Notebook front end (Colab, Jupyter): ipywidgets forms generated from the config dataclasses, a
live training plot, and the results as tables and charts. Thin: every step calls the package.

    from adaptmllm.notebook import ConfigForm, LivePlot, show_scores, show_green
    form = ConfigForm()                      # every Config field, its docstring as help
    form                                     # (last line of a cell) shows the form
    config = form.value                      # -> adaptmllm.Config; a bad entry is shown beside its field
    plot = LivePlot(); display(plot)
    result = adaptmllm.pipeline.run(config, callbacks=[plot.callback()])
    show_scores(result); show_green(result)

The form is built from :class:`adaptmllm.config.Config` by :func:`field_specs`: ``bool`` ->
checkbox, a field listed in :data:`adaptmllm.config.CHOICES` -> dropdown, ``*_lang`` -> language
dropdown by name, learning rates -> log slider, ``int``/``float`` -> number box, ``Optional`` -> text
box where empty means "not set", corpus paths -> text box with a file upload, anything else -> YAML
text. A new config field therefore appears in the form without any notebook edit, with its
attribute docstring (the same text ``adaptmllm run --help`` shows) as help.

Works with ipywidgets 7 (Colab) and 8. Importing this module imports ipywidgets, not torch.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import html
import inspect
import io
import json
import logging
import math
import os
import re
import secrets
import sys
import tempfile
import textwrap
import time
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import ipywidgets as widgets
from IPython.display import HTML, Image, display

from .config import (CHOICES, Config, ConfigError, _build, check_model_name, config_from_dict, config_to_dict,
                     learning_rate_warning, load_config, model_preset, save_config)

__all__ = [
    "FieldSpec", "field_docs", "field_specs", "ConfigForm", "start_config", "LivePlot", "show_study",
    "in_colab", "environment", "mount_drive", "preview_data", "scores_html", "green_html", "green_chart_png",
    "samples_html", "show_scores", "show_green", "show_results", "launch_playground", "show_human_eval",
    "run_notebook", "quiet_notebook", "show_plan", "estimate_epoch_seconds", "check_corpus", "HARMLESS_WARNINGS",
]

log = logging.getLogger("adaptmllm")

UPLOAD_FIELDS = ("data.train", "data.dev", "data.test")
"""Fields that get a file-upload button beside their text box (corpora)."""
LOG_SLIDER = re.compile(r"(^|_)(learning_rate|lr)(_|$)")
"""Float fields whose name matches get a log-scale slider (learning rates span decades)."""
TAB_TITLES = {"": "Run", "hpo": "HPO", "eval": "Evaluate", "lora": "LoRA", "deepspeed": "DeepSpeed"}
"""Form tab titles of config sections whose capitalised name reads badly (others: ``data`` -> Data)."""
_LOG_RANGE = (-7.0, -1.0)  # 1e-7 .. 1e-1, widened when a value lies outside


# ------------------------------------------------------------------------------------------ field specs

@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (and its bases): ``{field: text}``, whitespace collapsed.

    These are the string literals right after each annotated attribute, the help text that
    jsonargparse shows for ``adaptmllm run --help``. Fields without one are absent.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@dataclass
class FieldSpec:
    """One leaf field of the config as the form sees it.

    Attributes:
        path: dotted path, ``train.learning_rate`` (as in config errors and CLI flags).
        name: the attribute name, ``learning_rate``.
        kind: the widget: ``bool``, ``choice``, ``language``, ``log``, ``int``, ``float``,
            ``optional`` (text, empty = None), ``text`` or ``yaml``.
        type: the (resolved) annotation; ``base`` is the type inside ``Optional``.
        default: the dataclass default.
        doc: the attribute docstring ('' if none).
        choices: the allowed values of a ``choice`` field.
        group: dotted path of the dataclass holding it ('' for top-level fields).
        upload: whether a file-upload button goes beside it.
    """

    path: str
    name: str
    kind: str
    type: Any
    base: Any
    default: Any
    doc: str
    choices: Optional[tuple] = None
    group: str = ""
    upload: bool = False


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, getattr(types, "UnionType", typing.Union)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _kind(path: str, name: str, base: Any, optional: bool) -> str:
    if path in CHOICES:
        return "choice"
    if base is bool and not optional:
        return "bool"
    if base is str and name.endswith("_lang") and not optional:
        return "language"
    if base is float and LOG_SLIDER.search(name) and not optional:
        return "log"
    if base in (int, float) and not optional:
        return base.__name__
    if base in (int, float, str, bool):
        return "optional" if optional else "text"
    return "yaml"


def field_specs(cls: type = Config, prefix: str = "") -> list[FieldSpec]:
    """Every leaf field of ``cls``, nested dataclasses flattened in declaration order.

    Raises:
        TypeError: ``cls`` is not a dataclass.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[FieldSpec] = []
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints.get(f.name, f.type)
        base, optional = _unwrap_optional(tp)
        if is_dataclass(base):
            out += field_specs(base, f"{path}.")
            continue
        out.append(FieldSpec(path=path, name=f.name, kind=_kind(path, f.name, base, optional), type=tp, base=base,
                             default=_default(f), doc=docs.get(f.name, ""), choices=CHOICES.get(path),
                             group=prefix.rstrip("."), upload=path in UPLOAD_FIELDS))
    return out


def _group_docs(cls: type = Config, prefix: str = "") -> dict[str, str]:
    """``{group path: class docstring}`` for ``cls`` and its nested dataclasses."""
    hints = typing.get_type_hints(cls)
    out = {prefix.rstrip("."): " ".join(inspect.getdoc(cls).split()) if cls.__doc__ else ""}
    for f in fields(cls):
        base, _ = _unwrap_optional(hints.get(f.name, f.type))
        if is_dataclass(base):
            out.update(_group_docs(base, f"{prefix}{f.name}."))
    return out


def _doc_html(text: str) -> str:
    """Escape a docstring and turn ``code`` into <code>code</code>."""
    esc = html.escape(text)
    return re.sub(r"``(.+?)``", r"<code>\1</code>", esc)


def _get(d: dict, path: str) -> Any:
    for key in path.split("."):
        d = d[key]
    return d


def _set(d: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        d = d.setdefault(key, {})
    d[keys[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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
    model = _merge(base, _merge(overrides, top))["model"]["name_or_path"]
    if model_preset(model) is not None:
        kept = {k: v for k, v in overrides.items() if k not in ("train", "eval", "hpo")}
        base = base if preset else _merge(base, model_preset(model))
        return config_from_dict(_merge(base, _merge(kept, top)))
    return config_from_dict(_merge(base, _merge(overrides, top)))


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
            from .languages import choices

            w = widgets.Dropdown(options=[(f"{name} ({code})", code) for name, code in choices()],
                                 description=s.name, style=style, layout=lay)
        elif s.kind == "log":
            w = widgets.FloatLogSlider(base=10, min=_LOG_RANGE[0], max=_LOG_RANGE[1], step=0.01,
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
                                 f'max-width:640px;line-height:1.3">{_doc_html(s.doc)}</div>' if s.doc else "",
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
            exp = math.log10(value) if value and value > 0 else _LOG_RANGE[0]
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
            from .config import PRETRAINED_PRESET

            defaults = config_to_dict(self.cls())
            self.apply({sec: {k: _get(defaults, f"{sec}.{k}") for k in PRETRAINED_PRESET[sec] if k != "space"}
                        for sec in PRETRAINED_PRESET})
            self.apply({"hpo": {"space": defaults["hpo"]["space"]}})
            self.apply(self.demo_overrides)
            self.note.value = "<p>Back to the tiny demo's settings.</p>"

    # -- layout
    def _tabs(self) -> widgets.Widget:
        gdocs = _group_docs(self.cls)
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
                rows.append(widgets.HTML(f'<p style="margin:4px 0 10px 0"><i>{_doc_html(doc)}</i></p>'))
            rows += [f.box for f in groups.get(top, [])]
            for sub in [g for g in groups if g.startswith(top + ".") and g.count(".") == top.count(".") + 1]:
                inner = [widgets.HTML(f"<i>{_doc_html(gdocs.get(sub, ''))}</i>")]
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
                _set(out, path, f.get())
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
            config = _build(self.cls, self.to_dict(), "")  # = config_from_dict for Config
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
        d = config_to_dict(config) if is_dataclass(config) else config_to_dict(_build(self.cls, config, ""))
        self._loading = True
        try:
            for path, f in self.fields.items():
                try:
                    f.set(_get(d, path))
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
        from .languages import iso639_1

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


# ------------------------------------------------------------------------------------------ live feedback

def _history_png(history: list[dict]) -> Optional[bytes]:
    """The training-curve PNG of :func:`adaptmllm.report.plot_history` as bytes (None: nothing logged)."""
    from .report import plot_history

    with tempfile.TemporaryDirectory() as tmp:
        path = plot_history(history, Path(tmp) / "curves.png")
        return path.read_bytes() if path else None


class LivePlot:
    """Loss and dev-metric curves that redraw while training runs, in an ``ipywidgets.Output``.

    ``callback()`` gives the ``transformers.TrainerCallback`` to pass to
    ``adaptmllm.pipeline.run(config, callbacks=[...])``: each Trainer log (training loss every
    ``train.logging_steps``, dev BLEU/chrF++ each evaluation) is appended to :attr:`history` and
    the figure is redrawn (training-loss redraws at most every ``min_interval_s`` seconds).
    """

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.history: list[dict] = []
        self.output = widgets.Output()
        self.label = widgets.HTML("<i>waiting for the first log...</i>")
        self.widget = widgets.VBox([self.label, self.output])
        self.min_interval_s = min_interval_s
        self.redraws = 0
        self._last = 0.0
        self._latest: dict = {}

    def _ipython_display_(self) -> None:
        display(self.widget)

    def update(self, entry: dict) -> None:
        """Add one log entry (a Trainer ``logs`` dict with ``step`` and ``epoch``) and redraw."""
        self.history.append(dict(entry))
        is_eval = any(k.startswith("eval_") for k in entry)
        self._latest.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
        latest = self._latest
        parts = [f"step {latest.get('step', '?')}", f"epoch {float(latest.get('epoch') or 0):.2f}"]
        for key, label in (("loss", "training loss"), ("eval_loss", "dev loss"), ("eval_bleu", "dev BLEU"),
                           ("eval_chrf", "dev chrF++")):
            if key in latest:
                parts.append(f"{label} {latest[key]:.3g}" if "loss" in key else f"{label} {latest[key]:.1f}")
        self.label.value = " &middot; ".join(parts)
        if is_eval or time.monotonic() - self._last >= self.min_interval_s:
            self.redraw()

    def redraw(self) -> None:
        """Draw the curves of :attr:`history` into the output (replacing the previous figure)."""
        png = _history_png(self.history)
        self._last = time.monotonic()
        if png is None:
            return
        # Set the Output widget's state directly (no capture context): works from any thread and
        # without a kernel, and the saved widget state holds the latest figure.
        self.output.outputs = ()
        self.output.append_display_data(Image(data=png, format="png"))
        self.redraws += 1

    def callback(self) -> Any:
        """A ``transformers.TrainerCallback`` that feeds this plot."""
        from transformers import TrainerCallback

        plot = self

        class _LivePlotCallback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - Trainer hook
                if logs:
                    plot.update({**logs, "step": state.global_step, "epoch": state.epoch or 0.0})

            def on_train_end(self, args, state, control, **kwargs):
                plot.redraw()

        return _LivePlotCallback()


# ------------------------------------------------------------------------------------------ environment

def in_colab() -> bool:
    """Whether this runs in Google Colab."""
    if "google.colab" in sys.modules:
        return True
    try:
        import google.colab  # type: ignore  # noqa: F401
    except ImportError:
        return False
    return True


def environment(show: bool = True) -> dict:
    """Python, torch and GPU facts (name, memory, bf16 support) and advice on precision; shown as
    a table when ``show``. Returns the dict."""
    import platform

    import torch

    from . import __version__

    info: dict[str, Any] = {"adaptmllm": __version__, "python": platform.python_version(),
                            "torch": torch.__version__, "colab": in_colab(), "gpu": None,
                            "gpu_memory_gib": None, "bf16": False}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    bf16=bool(torch.cuda.is_bf16_supported()), gpus=torch.cuda.device_count())
    if info["gpu"] is None:
        info["advice"] = ("No GPU: the tiny demo runs on the CPU. For NLLB, pick a GPU runtime "
                          "(Colab: Runtime > Change runtime type > GPU).")
    elif info["bf16"]:
        info["advice"] = "bf16 is supported: train.precision auto uses it (NLLB overflows in fp16)."
    else:
        info["advice"] = ("No bf16 on this GPU: train.precision auto uses fp32 (NLLB can overflow in "
                          "fp16); for NLLB-200 3.3B use LoRA or a bigger GPU.")
    if show:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in info.items())
        display(HTML(f"<table>{rows}</table>"))
    return info


def mount_drive(folder: str = "adaptmllm", mount_point: Optional[str] = None) -> Optional[Path]:
    """On Colab, mount Google Drive and return ``MyDrive/<folder>`` (created) for data and run
    folders; elsewhere do nothing and return None. ``mount_point``: default ``$ADAPTMLLM_DRIVE`` or
    ``/content/drive`` (the environment variable is for tests and unusual set-ups)."""
    if not in_colab():
        print("Not on Colab: Google Drive is not mounted; run folders stay on this machine.")
        return None
    from google.colab import drive  # type: ignore

    mount_point = mount_point or os.environ.get("ADAPTMLLM_DRIVE", "/content/drive")
    drive.mount(mount_point)
    out = Path(mount_point) / "MyDrive" / folder
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------------ quiet output

HARMLESS_WARNINGS = (
    r".*pin_memory.*",                      # DataLoader on a machine without an accelerator
    r".*[Dd]eprecat.*",                     # library deprecations: for developers, not for translators
    r".*(missing|newly initialized|not initialized).*(lm_head|weights).*",  # tied output layer of M2M100/NLLB
    r".*lm_head.*",
    r".*TRANSFORMERS_CACHE.*",
    r".*Setting accelerator to CPU.*",      # DeepSpeed on a machine without a GPU
)
"""Messages (regular expressions) that alarm a non-engineer but change nothing: hidden in the notebook by
:func:`quiet_notebook`, still written to the run folder's ``run.log``."""


class _HarmlessFilter(logging.Filter):
    """Drops records matching :data:`HARMLESS_WARNINGS`; ``forward``: logs them to ``adaptmllm.warnings``
    first (for loggers whose records would otherwise not reach run.log)."""

    def __init__(self, forward: bool = False) -> None:
        super().__init__()
        self.forward = forward

    def filter(self, record: logging.LogRecord) -> bool:  # False: not shown
        msg = record.getMessage()
        harmless = any(re.match(p, msg, re.S) for p in HARMLESS_WARNINGS)
        if harmless and self.forward:
            logging.getLogger("adaptmllm.warnings").info("%s: %s", record.name, msg)
        return not harmless


def quiet_notebook() -> None:
    """Hide :data:`HARMLESS_WARNINGS` in the notebook: Python warnings that match go to the
    ``adaptmllm.warnings`` logger at INFO (so a run's ``run.log`` keeps them), and transformers' console
    handler drops matching log records (its ``run.log`` handler keeps them). Other warnings still show.
    Idempotent."""
    import warnings

    original = getattr(warnings.showwarning, "__wrapped__", warnings.showwarning)
    quiet_log = logging.getLogger("adaptmllm.warnings")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if any(re.match(p, text, re.S) for p in HARMLESS_WARNINGS) or issubclass(
                category, (DeprecationWarning, FutureWarning)):
            quiet_log.info("%s: %s (%s:%s)", category.__name__, text, filename, lineno)
            return
        original(message, category, filename, lineno, file, line)

    showwarning.__wrapped__ = original  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.get_logger()  # creates transformers' own console handler
    except Exception:  # pragma: no cover - transformers always present
        pass
    for handler in logging.getLogger("transformers").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                and not any(isinstance(f, _HarmlessFilter) for f in handler.filters):
            handler.addFilter(_HarmlessFilter())
    deepspeed_log = logging.getLogger("DeepSpeed")  # its own handler, created when deepspeed is imported
    if not any(isinstance(f, _HarmlessFilter) for f in deepspeed_log.filters):
        deepspeed_log.addFilter(_HarmlessFilter(forward=True))


# ------------------------------------------------------------------------------------------ memory plan

GPU_PEAK_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125, "V100": 125,
                   "T4": 65, "4090": 165, "3090": 71}
"""Dense 16-bit tensor-core peak (TFLOP/s) by GPU name, from the vendors' data sheets (NVIDIA A100, H100,
L4, T4, V100 data sheets; H200 as H100)."""
ASSUMED_UTILISATION = 0.3
"""Share of the peak a fine-tuning run reaches (model FLOPs utilisation), an assumption: 0.3-0.5 is usual for
transformer training with mixed precision; seq2seq with short sentences is at the low end."""
CHARS_PER_TOKEN = 4.0
"""Characters per subword token assumed for the time estimate (SentencePiece on European languages: 3-5)."""


def estimate_epoch_seconds(trainable_params: int, total_params: int, tokens: float, gpu_name: Optional[str],
                           gradient_checkpointing: bool = False) -> Optional[float]:
    """An ESTIMATE of the seconds per training epoch: ``6 x parameters x tokens`` FLOPs for full
    fine-tuning (forward 2, backward 4; LoRA: ``2 x total + 4 x trainable``), x 4/3 with gradient
    checkpointing, at :data:`ASSUMED_UTILISATION` of the GPU's peak (:data:`GPU_PEAK_TFLOPS`).
    None when the GPU is unknown or absent (no estimate on a CPU)."""
    if not gpu_name:
        return None
    peak = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in gpu_name.upper()), None)
    if peak is None:
        return None
    flops = (2 * total_params + 4 * trainable_params) * tokens * (4 / 3 if gradient_checkpointing else 1)
    return flops / (peak * 1e12 * ASSUMED_UTILISATION)


def _model_size(config: Config) -> Any:
    """:class:`adaptmllm.deepspeed.ModelSize` of the configured model without loading weights (None: unknown)."""
    from .deepspeed import ModelSize, nllb_config

    name = config.model.name_or_path
    try:
        if name == "tiny":
            from transformers import M2M100Config

            t = config.model.tiny
            return ModelSize.from_config(M2M100Config(
                vocab_size=t.vocab_size, d_model=t.d_model, encoder_layers=t.encoder_layers,
                decoder_layers=t.decoder_layers, encoder_attention_heads=t.attention_heads,
                decoder_attention_heads=t.attention_heads, encoder_ffn_dim=t.ffn_dim, decoder_ffn_dim=t.ffn_dim))
        try:
            return ModelSize.from_config(nllb_config(name))
        except ValueError:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(name, local_files_only=True)
            return ModelSize.from_config(cfg) if hasattr(cfg, "encoder_ffn_dim") else None
    except Exception:
        return None


def show_plan(config: Config, prepared: Any = None, show: bool = True) -> dict:
    """Show, before training, the memory plan (GPU, strategy, estimated GiB per GPU and of host RAM,
    the faster option that did not fit) and an ESTIMATED time per epoch; returns them as a dict.

    Raises:
        SystemExit: a package the config needs is not installed, or no plan fits (after showing one
            sentence naming the pip command or the field to change), so that "Run all" stops here.
    """
    from .deepspeed import check_installed, plan_memory
    from .train import resolve_precision

    def stop(message: str) -> None:
        if show:
            display(HTML(f'<p style="color:#b00020">&#9888; {html.escape(message)}</p>'))
        raise SystemExit(message)

    try:
        check_installed(config)
    except ConfigError as e:
        stop(str(e))
    env = environment(show=False)
    size = _model_size(config)
    tc, lora = config.train, config.model.lora
    info: dict[str, Any] = {"gpu": env["gpu"] or "none (CPU)", "strategy": None, "gpu_gib": None, "host_gib": None,
                            "faster_option": None, "epoch_seconds_estimate": None, "explanation": ""}
    if size is None:
        info["explanation"] = (f"{config.model.name_or_path}: size not known before loading; the plan is made at the "
                               "first step and written to run.log")
    else:
        weight_bytes = 0.5 if lora.load_in_4bit else (2.0 if lora.enabled else 4.0)
        trainable = size.total_params // 100 if lora.enabled else size.total_params
        try:
            plan = plan_memory(size, tc.deepspeed, tc.per_device_train_batch_size, config.model.max_source_length,
                               config.model.max_target_length, resolve_precision(tc.precision),
                               tc.gradient_checkpointing, lora.enabled, weight_bytes,
                               gpu_memory=env["gpu_memory_gib"])
        except ConfigError as e:
            stop(str(e))
        info.update(strategy=plan.name + (", gradient checkpointing" if plan.gradient_checkpointing else ""),
                    gpu_gib=round(plan.gpu_need_gib, 1) if plan.gpu_memory_gib else None,
                    host_gib=round(plan.cpu_gib, 1), explanation=plan.explanation)
        m = re.search(r"the faster (.+?) would need ([\d.]+) GiB", plan.explanation)
        info["faster_option"] = f"{m.group(1)} (~{m.group(2)} GiB)" if m else "none: the fastest option fits"
        if prepared is not None:
            chars = sum(len(a) + len(b) for a, b in zip(prepared.train.src, prepared.train.tgt))
            info["epoch_seconds_estimate"] = estimate_epoch_seconds(
                trainable, size.total_params, chars / CHARS_PER_TOKEN,
                env["gpu"] or (f"{tc.deepspeed.gpu_memory_gib} GiB" if tc.deepspeed.gpu_memory_gib else None),
                plan.gradient_checkpointing)
    if show:
        est = info["epoch_seconds_estimate"]
        rows = [("GPU", info["gpu"]), ("Strategy (estimate)", info["strategy"] or "decided at the first step"),
                ("GPU memory per GPU (estimate)", "n/a (no GPU)" if info["gpu_gib"] is None else f"~{info['gpu_gib']} GiB"
                 f" of {env['gpu_memory_gib'] or tc.deepspeed.gpu_memory_gib} GiB"),
                ("Host RAM for offloaded states (estimate)", f"~{info['host_gib'] or 0} GiB"),
                ("Faster option that did not fit", info["faster_option"] or "n/a"),
                ("Time per epoch (estimate)", f"~{est / 60:.0f} min ({ASSUMED_UTILISATION:.0%} of the GPU's peak "
                 f"assumed; the progress bar shows the real pace)" if est else
                 "no estimate (no known GPU, or the corpus was not read yet): the progress bar shows the pace")]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(str(v))}</td></tr>" for k, v in rows)
        display(HTML(f"<p><b>Memory plan</b> (estimates, before the first step)</p><table>{body}</table>"
                     f"<p style='color:#666;font-size:90%'>{html.escape(info['explanation'])}</p>"))
    return info


# ------------------------------------------------------------------------------------------ data

_CORPUS_CACHE: dict = {}


def _corpus_key(spec: str, data: Any) -> tuple:
    p = Path(spec)
    files = [p] if p.exists() else [Path(f"{spec}.{data.src_suffix}"), Path(f"{spec}.{data.tgt_suffix}")]
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
    return (spec, stamp, data.format, data.src_suffix, data.tgt_suffix, data.src_column, data.tgt_column,
            data.src_lang, data.tgt_lang)


def check_corpus(spec: str, data: Any, n: int = 3) -> str:
    """Check a corpus path as it is entered: it exists, its format is detected, the two sides have as
    many lines, and show the pair count and the first ``n`` pairs. Returns that description as HTML.

    Raises:
        ConfigError: ``data.<train|dev|test>: <what is wrong and the fix>`` (from
            :class:`adaptmllm.data.DataError`: a missing file, uneven line counts, a bad row...).
    """
    from .data import DataError, detect_format, load_pairs

    field = next((f"data.{k}" for k in ("train", "dev", "test") if getattr(data, k, None) == spec), "data.train")
    key = _corpus_key(spec, data)
    if key not in _CORPUS_CACHE:
        try:
            pairs = load_pairs(spec, data)
        except (DataError, OSError, ValueError) as e:
            raise ConfigError(f"{field}: {e}") from None
        fmt = data.format if data.format != "auto" else detect_format(spec)
        rows = "".join(f"<tr><td style='text-align:left'>{html.escape(a[:120])}</td><td style='text-align:left'>"
                       f"{html.escape(b[:120])}</td></tr>" for a, b in list(zip(pairs.src, pairs.tgt))[:n])
        _CORPUS_CACHE.clear()  # one corpus at a time: the cache is only for re-validation
        _CORPUS_CACHE[key] = (f'<div style="margin:0 0 8px 198px;font-size:90%">&#10003; {html.escape(fmt)} corpus, '
                              f"{len(pairs):,} pairs (both sides the same length); first pairs:<table>{rows}</table></div>")
    return _CORPUS_CACHE[key]

def preview_data(config: Config, n: int = 3) -> Any:
    """Load, clean and split ``config.data`` (as the run will) and show the counts per split,
    pairs dropped per cleaning rule, and ``n`` sample training pairs. Returns the
    :class:`~adaptmllm.data.PreparedData`.

    Raises:
        adaptmllm.data.DataError: a corpus cannot be read (the message names the file and the fix).
    """
    from .data import prepare_data
    from .report import _data_md

    prepared = prepare_data(config.data)
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(s)}</td><td style='text-align:left'>"
                   f"{html.escape(t)}</td></tr>" for s, t in list(zip(prepared.train.src, prepared.train.tgt))[:n])
    display(HTML(_md_table_html("\n".join(_data_md(prepared.report))) +
                 f"<p><b>Sample training pairs</b> ({html.escape(config.data.src_lang)} &rarr; "
                 f"{html.escape(config.data.tgt_lang)})</p><table><tr><th>source</th><th>target</th></tr>{rows}</table>"))
    return prepared


def _md_table_html(md: str) -> str:
    """A markdown pipe table (as report.py writes) as an HTML table; other lines as paragraphs."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, body = rows[0], rows[2:] if len(rows) > 1 else []
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            flush()
            if line.strip():
                out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "".join(out)


def _inline(text: str) -> str:
    esc = html.escape(text)
    esc = re.sub(r"`(.+?)`", r"<code>\1</code>", esc)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc)


# ------------------------------------------------------------------------------------------ results

def _metrics(result: Any) -> tuple[dict, Optional[Path]]:
    """(metrics dict, run folder) from a RunResult, a run folder or a metrics dict."""
    if isinstance(result, dict):
        return result, None
    run_dir = Path(getattr(result, "run_dir", result))
    metrics = getattr(result, "metrics", None)
    if metrics is None:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return metrics, run_dir


def scores_html(metrics: dict) -> str:
    """The verdict, the test scores table (baseline vs fine-tuned, difference) and the sacrebleu
    signatures of a ``metrics.json`` dict, as HTML."""
    from .report import LABELS, SCORE_KEYS, system_labels, verdict

    base, fine, delta = metrics.get("baseline"), metrics.get("finetuned"), metrics.get("delta")
    head = "".join(f"<th>{LABELS[k]}</th>" for k in SCORE_KEYS)
    rows = []
    labels = system_labels(metrics)
    for label, s in ((labels["baseline"], base), (labels["finetuned"], fine)):
        cells = "".join(f"<td>{s[k]:.1f}</td>" if s else "<td>not scored</td>" for k in SCORE_KEYS)
        rows.append(f"<tr><td style='text-align:left'>{label}</td>{cells}</tr>")
    if delta:
        rows.append("<tr><td style='text-align:left'><b>Difference</b></td>"
                    + "".join(f"<td><b>{delta[k]:+.1f}</b></td>" for k in SCORE_KEYS) + "</tr>")
    sig = (metrics.get("significance") or {}).get("metrics") if isinstance(metrics.get("significance"), dict) else None
    if sig:
        def cell(k: str) -> str:
            s = sig.get(k) or {}
            if not isinstance(s.get("p_value"), (int, float)):
                return "<td>n/a</td>"
            mark = " (significant)" if s.get("significant") else ""
            return f"<td>{s['p_value']:.3f}{mark}</td>"
        rows.append("<tr><td style='text-align:left'>p-value (paired bootstrap)</td>"
                    + "".join(cell(k) for k in SCORE_KEYS) + "</tr>")
    scored = fine or base or {}
    sigs = "".join(f"<tr><td style='text-align:left'>{LABELS[k]}</td><td style='text-align:left'><code>"
                   f"{html.escape(str(scored.get('signatures', {}).get(k, 'n/a')))}</code></td></tr>"
                   for k in SCORE_KEYS)
    kept = metrics.get("kept")
    kept_line = (f"<p>Kept in <code>model/</code>: the <b>{html.escape(kept)}</b> model"
                 f"{' (fine-tuning never beat it on the dev set)' if kept == 'baseline' else ''}.</p>"
                 if kept else "")
    return (f"<p><b>{html.escape(verdict(metrics))}</b></p>"
            f"<table><tr><th style='text-align:left'>System (test set, {scored.get('n_segments', '?')} segments)"
            f"</th>{head}</tr>{''.join(rows)}</table>"
            "<p>Higher is better for BLEU and chrF++, lower for TER.</p>" + kept_line +
            f"<p>sacrebleu signatures:</p><table>{sigs}</table>")


def samples_html(run_dir: str | os.PathLike, n: int = 5) -> str:
    """The first ``n`` test segments with reference, baseline and fine-tuned translations, as HTML
    ('' when the run folder lacks them)."""
    import yaml

    run_dir = Path(run_dir)
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        src_lang, tgt_lang = cfg["data"]["src_lang"], cfg["data"]["tgt_lang"]
        cols = {"source": run_dir / "data" / f"test.{src_lang}", "reference": run_dir / "data" / f"test.{tgt_lang}",
                "baseline": run_dir / "baseline.hyp.txt", "fine-tuned": run_dir / "finetuned.hyp.txt"}
        texts = {k: p.read_text(encoding="utf-8").splitlines()[:n] for k, p in cols.items() if p.is_file()}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return ""
    if "source" not in texts:
        return ""
    head = "".join(f"<th style='text-align:left'>{k}</th>" for k in texts)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(v[i]) if i < len(v) else ''}</td>"
                                    for v in texts.values()) + "</tr>" for i in range(len(texts["source"])))
    return f"<p><b>Test translations</b> (first {n})</p><table><tr>{head}</tr>{body}</table>"


def green_html(green: Optional[dict]) -> str:
    """The green report (energy in kWh by part, emissions in kgCO2eq, duration, hardware, whether
    measured or estimated, and its caveats) as an HTML table."""
    if not green:
        return "<p>Energy was not tracked for this run.</p>"

    def n(x: Any, fmt: str = ".3g") -> str:
        return "n/a" if x is None else format(x, fmt)

    rows = [("Energy", f"{n(green.get('energy_kwh'))} kWh"),
            ("CPU / GPU / RAM", f"{n(green.get('cpu_energy_kwh'))} / {n(green.get('gpu_energy_kwh'))} / "
                                f"{n(green.get('ram_energy_kwh'))} kWh"),
            ("Emissions", f"{n(green.get('emissions_kg'))} kgCO2eq ({n((green.get('emissions_kg') or 0) * 1000)} g), "
                          f"grid of {green.get('country_iso_code') or '?'}"),
            ("Duration", f"{n(green.get('duration_s'), '.1f')} s"),
            ("Hardware", (green.get("cpu_model") or "unknown CPU")
             + (f" with {green['gpu_model']}" if green.get("gpu_model") else ", no GPU tracked")),
            ("How obtained", green.get("tracking") or "unknown"),
            ("Measured?", "yes, hardware energy counters" if green.get("measured") else "no: these are estimates")]
    body = "".join(f"<tr><th style='text-align:left'>{k}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    notes = "".join(f"<li>{html.escape(x)}</li>" for x in green.get("notes") or [])
    return f"<table>{body}</table>" + (f"<ul>{notes}</ul>" if notes else "")


def green_chart_png(green: Optional[dict]) -> Optional[bytes]:
    """A bar chart of the energy by part (CPU, GPU, RAM, in Wh) with the emissions in the title,
    as PNG bytes (None when energy was not tracked)."""
    if not green:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    parts = ["CPU", "GPU", "RAM"]
    values = [1000 * float(green.get(f"{p.lower()}_energy_kwh") or 0.0) for p in parts]
    fig = Figure(figsize=(6, 2.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bars = ax.barh(parts, values, color=["#4c72b0", "#55a868", "#c44e52"])
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.3g} Wh", va="center")
    ax.set_xlabel("energy (Wh)")
    ax.set_xlim(0, max(values + [1e-6]) * 1.35)
    kind = "measured" if green.get("measured") else "estimated"
    ax.set_title(f"{1000 * float(green.get('energy_kwh') or 0):.3g} Wh, "
                 f"{1000 * float(green.get('emissions_kg') or 0):.3g} gCO2eq ({kind}), "
                 f"{float(green.get('duration_s') or 0):.0f} s", fontsize=10)
    ax.invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def show_scores(result: Any, samples: int = 5, curves: bool = True) -> dict:
    """Show the scores table (baseline vs fine-tuned, signatures), the verdict, ``samples`` test
    translations and (``curves``) the training curves of a run (a ``RunResult`` or a run folder).
    Returns the metrics."""
    metrics, run_dir = _metrics(result)
    display(HTML(scores_html(metrics)))
    if run_dir is not None:
        if samples:
            sample = samples_html(run_dir, samples)
            if sample:
                display(HTML(sample))
        png = run_dir / "training_curves.png"
        if curves and png.is_file():
            display(Image(data=png.read_bytes(), format="png"))
        reports = [name for name in ("report.html", "report.md") if (run_dir / name).is_file()]
        if reports:
            names = ", ".join(f"<code>{html.escape(str(run_dir / r))}</code>" for r in reports)
            display(HTML(f"<p>Full report: {names}</p>"))
    return metrics


def show_green(result: Any) -> Optional[dict]:
    """Show the green report of a run as a table and a chart. Returns its dict (None: not tracked)."""
    metrics, _ = _metrics(result)
    green = metrics.get("green")
    display(HTML(green_html(green)))
    png = green_chart_png(green)
    if png:
        display(Image(data=png, format="png"))
    return green


def show_study(study: Any) -> None:
    """Show a hyperparameter search (an :class:`adaptmllm.hpo.StudyResult`): trials per state, the
    best trial's dev score and parameters, and the optimisation-history and importance plots."""
    counts = ", ".join(f"{n} {state}" for state, n in (study.counts or {}).items() if n)
    params = "".join(f"<tr><td style='text-align:left'>{html.escape(str(k))}</td><td style='text-align:left'>"
                     f"{html.escape(str(v))}</td></tr>" for k, v in (study.best_params or {}).items())
    value = "n/a" if study.best_value is None else f"{study.best_value:.2f}"
    green = (getattr(study, "summary", None) or {}).get("green_total") or {}
    energy = (f" The whole study used {green['energy_kwh']:.3g} kWh ({1000 * (green.get('emissions_kg') or 0):.3g} "
              f"gCO2eq, {'measured' if green.get('measured') else 'estimated'}) over {green.get('n_trials', '?')} "
              "trials." if isinstance(green.get("energy_kwh"), (int, float)) else "")
    display(HTML(f"<p><b>Study {html.escape(str(study.study_name))}</b>: {html.escape(counts)}. Best trial "
                 f"{study.best_trial} with dev score {value}.{html.escape(energy)}</p>"
                 "<table><tr><th style='text-align:left'>parameter</th>"
                 f"<th style='text-align:left'>best value</th></tr>{params}</table>"
                 f"<p>Study folder: <code>{html.escape(str(study.hpo_dir))}</code></p>"))
    for name in ("history.png", "importance.png"):
        path = Path(study.hpo_dir) / name
        if path.is_file():
            display(Image(data=path.read_bytes(), format="png"))


def show_results(result: Any) -> dict:
    """:func:`show_scores` then :func:`show_green`. Returns the metrics."""
    metrics = show_scores(result)
    show_green(result)
    return metrics


# ------------------------------------------------------------------------------------------ playground

def _secret(name: str) -> Optional[str]:
    """An environment variable, else a Colab secret of that name (None if neither)."""
    value = os.environ.get(name)
    if value:
        return value
    if in_colab():
        try:
            from google.colab import userdata  # type: ignore

            return userdata.get(name) or None
        except Exception:  # SecretNotFoundError, NotebookAccessError, TimeoutException
            return None
    return None


def launch_playground(result: Any, share: Optional[bool] = None, auth: Any = None, baseline: Optional[str] = None,
                      **kwargs: Any) -> Any:
    """Launch the translation playground and human evaluation (:func:`adaptmllm.playground.serve`)
    for a run, inline in the notebook. Returns the ``Server`` (``server.close()`` stops it).

    ``share=None`` shares a public link only on Colab, never elsewhere (so CI and local
    notebooks stay local). A shared link always gets a password: ``auth``, else
    ``ADAPTMLLM_AUTH`` (``user:password``, environment or Colab secret), else a random one shown
    once below the link.
    """
    from .playground import serve

    _, run_dir = _metrics(result)
    model_dir = Path(getattr(result, "model_dir", None) or run_dir / "model")
    effective = in_colab() if share is None else bool(share)
    made = None
    if effective and not auth:
        auth = _secret("ADAPTMLLM_AUTH")
        if not auth:
            made = ("translator", secrets.token_urlsafe(9))
            auth = made
    server = serve(model_dir, baseline, run_dir=run_dir, share=effective, auth=auth, quiet=True, **kwargs)
    colab = in_colab()
    lines = [] if colab else [f"Playground running at <a href='{server.local_url}' target='_blank'>{server.local_url}</a>"]
    if server.share_url:
        lines.append(f"Public link for translators: "
                     f"<a href='{server.share_url}' target='_blank'>{server.share_url}</a> (open it in a new tab; "
                     "it lasts while this runtime runs)")
        user = auth[0] if isinstance(auth, (tuple, list)) else str(auth).split(":", 1)[0]
        if made:
            lines.append(f"Sign in as <code>{html.escape(user)}</code> with the password shown below (made for this "
                         "session; to choose your own, add a Colab secret ADAPTMLLM_AUTH = user:password).")
        else:
            lines.append(f"Sign in as <code>{html.escape(user)}</code> with the password of your ADAPTMLLM_AUTH secret.")
    elif colab:
        lines.append("No public link could be made (Gradio's share service did not answer): run this cell again, "
                     "or use the playground from a machine of your own with `adaptmllm serve`.")
    display(HTML("<br>".join(lines)))
    if made and server.share_url:
        # A widget, not an output: Colab does not save widget values in the notebook file, so the password
        # is shown in this session only and never stored with the notebook.
        display(widgets.HTML(f"Password: <code>{html.escape(made[1])}</code>"))
    return server


def show_human_eval(run_dir: str | os.PathLike, weights: Optional[dict] = None) -> Optional[dict]:
    """Summarise the human evaluation of a run (mean SQM with 95% CI, MQM points, error counts;
    :func:`adaptmllm.humaneval.write_report`) as a table and chart. Returns its dict, or None (with
    a note) when nobody has rated yet."""
    from .humaneval import DB_NAME, HumanEvalError, HumanEvalStore, write_report

    db = Path(run_dir) / DB_NAME
    if not db.is_file() or HumanEvalStore(db).count_ratings() == 0:
        display(HTML("<p>No human ratings yet: share the playground link with translators (Human "
                     "evaluation tab), then run this cell again.</p>"))
        return None
    try:
        out = write_report(db, weights=weights)
    except HumanEvalError as e:
        display(HTML(f"<p>{html.escape(str(e))}</p>"))
        return None
    display(HTML(_md_table_html(out["markdown"])))
    plot = out["paths"].get("plot")
    if plot and Path(plot).is_file():
        display(Image(data=Path(plot).read_bytes(), format="png"))
    return out


# ------------------------------------------------------------------------------------------ headless runs

def run_notebook(path: str | os.PathLike, parameters: Optional[dict] = None, cwd: str | os.PathLike | None = None,
                 timeout: int = 600, kernel_name: str = "python3") -> Any:
    """Execute a notebook headless with nbclient, papermill-style: ``parameters`` are assigned in
    a cell (tagged ``injected-parameters``) inserted after the cell tagged ``parameters``. Widget
    state is stored in the notebook's metadata. Returns the executed ``nbformat`` notebook (not saved).

    Used by CI (``tests/test_notebooks_run.py``) and the screenshot tool. Needs ``nbclient`` and
    ``ipykernel``.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised (the message holds its traceback).
        ValueError: ``parameters`` given but no cell is tagged ``parameters``.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    if parameters:
        index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
        if index is None:
            raise ValueError(f"{path}: no cell is tagged 'parameters'")
        source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(index + 1, cell)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=True,
                            resources={"metadata": {"path": str(cwd or Path(path).parent)}})
    client.execute()
    return nb
