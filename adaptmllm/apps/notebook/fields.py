"""The notebook form's fields, generated from the config dataclasses: one :class:`FieldSpec` per config
field (path, type, default, choices, help text from the field's attribute docstring), and which widget it
gets (:func:`field_specs`).

The widget is chosen by :func:`field_specs`: ``bool`` -> checkbox, a field listed in
:data:`adaptmllm.config.CHOICES` -> dropdown, ``*_lang`` -> language dropdown by name, learning rates -> log
slider, ``int``/``float`` -> number box, ``Optional`` -> text box where empty means "not set", corpus paths ->
text box with a file upload, anything else -> YAML text. A new config field therefore appears in the form
(:class:`adaptmllm.apps.notebook.forms.ConfigForm`) without any notebook edit, with its attribute docstring
(the same text ``adaptmllm run --help`` shows) as help. Imports no widgets.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import html
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Optional

from adaptmllm.config import CHOICES, Config

__all__ = ["UPLOAD_FIELDS", "LOG_SLIDER", "TAB_TITLES", "LOG_RANGE", "field_docs", "FieldSpec", "field_specs",
           "group_docs", "doc_html", "get_path", "set_path", "merge_dicts"]

UPLOAD_FIELDS = ("data.train", "data.dev", "data.test")
"""Fields that get a file-upload button beside their text box (corpora)."""


LOG_SLIDER = re.compile(r"(^|_)(learning_rate|lr)(_|$)")
"""Float fields whose name matches get a log-scale slider (learning rates span decades)."""


TAB_TITLES = {"": "Run", "hpo": "HPO", "eval": "Evaluate", "lora": "LoRA", "deepspeed": "DeepSpeed"}
"""Form tab titles of config sections whose capitalised name reads badly (others: ``data`` -> Data)."""


LOG_RANGE = (-7.0, -1.0)  # 1e-7 .. 1e-1, widened when a value lies outside


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


def group_docs(cls: type = Config, prefix: str = "") -> dict[str, str]:
    """``{group path: class docstring}`` for ``cls`` and its nested dataclasses."""
    hints = typing.get_type_hints(cls)
    out = {prefix.rstrip("."): " ".join(inspect.getdoc(cls).split()) if cls.__doc__ else ""}
    for f in fields(cls):
        base, _ = _unwrap_optional(hints.get(f.name, f.type))
        if is_dataclass(base):
            out.update(group_docs(base, f"{prefix}{f.name}."))
    return out


def doc_html(text: str) -> str:
    """Escape a docstring and turn ``code`` into <code>code</code>."""
    esc = html.escape(text)
    return re.sub(r"``(.+?)``", r"<code>\1</code>", esc)


def get_path(d: dict, path: str) -> Any:
    for key in path.split("."):
        d = d[key]
    return d


def set_path(d: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        d = d.setdefault(key, {})
    d[keys[-1]] = value


def merge_dicts(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
