"""CTranslate2 export and loading: a fine-tuned (or merged LoRA) NLLB model converted with CTranslate2's
own ``TransformersConverter``, translated through the same :func:`adaptmllm.inference.translate.translate_texts`.

    adaptmllm export --model runs/demo/model --format ctranslate2 --quantization int8
    adaptmllm translate --engine ctranslate2 --model runs/demo/model-ct2-int8 --src eng_Latn --tgt qaa_Latn

The exported folder is self-contained: CTranslate2's ``model.bin``, ``config.json`` and
``shared_vocabulary.json``, the Hugging Face tokenizer files (tokenization stays ours: same pieces,
same language codes) and ``adaptmllm_export.json`` (source, quantization, versions).
Needs ``pip install 'adaptmllm[fast]'`` (``ctranslate2``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from adaptmllm.config import CT2_QUANTIZATIONS, Config, load_config
from adaptmllm.modeling.model import ModelError, set_languages

__all__ = ["CT2Error", "CT2Model", "QUANTIZATIONS", "EXPORT_INFO", "export_ctranslate2", "is_ct2_model",
           "load_ct2", "to_ctranslate2"]

log = logging.getLogger(__name__)

QUANTIZATIONS = CT2_QUANTIZATIONS
"""Weight types of an export: float32 (identical outputs to transformers' greedy decoding), float16,
bfloat16 (GPU), int8 (CPU and GPU), int8_float16, int8_bfloat16 (GPU)."""
EXPORT_INFO = "adaptmllm_export.json"
"""File in an exported folder recording what it was made from."""


class CT2Error(ModelError):
    """CTranslate2 is missing, a folder is not an export, or a conversion failed; the message says the fix."""


def _ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError as e:
        raise CT2Error("the ctranslate2 engine needs the ctranslate2 package: pip install 'adaptmllm[fast]' "
                       "(or pip install ctranslate2==4.8.5)") from e
    return ctranslate2


def is_ct2_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CTranslate2 model folder (``model.bin`` and a vocabulary file)."""
    p = Path(path)
    return (p / "model.bin").is_file() and any(p.glob("*vocabulary*"))


@dataclass
class CT2Model:
    """A loaded CTranslate2 translator: pass it as ``model`` to :func:`adaptmllm.inference.translate.translate_texts`.

    Attributes:
        translator: the ``ctranslate2.Translator``.
        path: the exported folder.
        device: ``cpu`` or ``cuda``.
        compute_type: the weight/compute type in use (``float32``, ``int8``...).
    """

    translator: Any
    path: Path
    device: str
    compute_type: str
    is_ctranslate2: bool = True


def load_ct2(path: str | os.PathLike, src_lang: str, tgt_lang: str, device: str = "auto",
             compute_type: str = "default", threads: int = 0) -> tuple[CT2Model, Any]:
    """Load an exported folder and its tokenizer (languages set).

    Args:
        path: a folder written by :func:`export_ctranslate2`.
        src_lang, tgt_lang: FLORES-200 codes the tokenizer is set to.
        device: ``cpu``, ``cuda`` or ``auto`` (a GPU when CTranslate2 sees one).
        compute_type: ``default`` (the export's quantization, or the nearest type the device supports),
            or one of CTranslate2's types (``int8``, ``float32``, ``float16``...).
        threads: CPU threads per translation (0: CTranslate2's default).

    Returns:
        ``(CT2Model, tokenizer)``.

    Raises:
        CT2Error: ctranslate2 is not installed, or ``path`` is not an export (with the fix).
        ModelError: the tokenizer lacks a language code.
    """
    ct2_model = _load_translator(path, device, compute_type, threads)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ct2_model.path), local_files_only=True)
    set_languages(tokenizer, src_lang, tgt_lang)
    return ct2_model, tokenizer


def _load_translator(path: str | os.PathLike, device: str, compute_type: str, threads: int) -> CT2Model:
    ct2 = _ctranslate2()
    p = Path(path)
    if not is_ct2_model(p):
        raise CT2Error(f"{p}: not a CTranslate2 model folder (no model.bin); export one first: adaptmllm export "
                       f"--model {p} --format ctranslate2 --quantization int8, or use --engine transformers")
    if device == "auto":
        device = "cuda" if ct2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "default":
        info = p / EXPORT_INFO
        q = json.loads(info.read_text(encoding="utf-8")).get("quantization") if info.is_file() else None
        supported = ct2.get_supported_compute_types(device)
        if q and q not in supported:  # e.g. a float16 export on a CPU
            compute_type = "int8" if q.startswith("int8") and "int8" in supported else "float32"
            log.info("%s: %s is not supported on %s; computing in %s", p, q, device, compute_type)
        elif q:
            compute_type = q
    translator = ct2.Translator(str(p), device=device, compute_type=compute_type, intra_threads=threads)
    return CT2Model(translator, p, device, compute_type)


def _source_folder(model: Path, config: Optional[Config], tmp: Path, merge: Optional[Callable] = None) -> tuple[Path, Any]:
    """A plain transformers folder to convert, and its tokenizer: ``model`` itself, or its LoRA adapters
    merged into the run's base model (saved under ``tmp``)."""
    from transformers import AutoTokenizer

    if not (model / "adapter_config.json").is_file():
        if not (model / "config.json").is_file():
            raise CT2Error(f"{model}: not a model folder (no config.json); give a run's model/ folder or a folder "
                           "written by save_pretrained")
        return model, AutoTokenizer.from_pretrained(str(model), local_files_only=True)

    if merge is None:
        raise CT2Error(f"{model} holds LoRA adapters: export it with `adaptmllm export`, "
                       "which merges them into the base model of its run first")
    run_dir = model.parent
    if config is None:
        if not (run_dir / "config.yaml").is_file():
            raise CT2Error(f"{model} holds LoRA adapters but {run_dir / 'config.yaml'} is missing: export from "
                           "inside its run folder (runs/NAME/model) so that the base model can be found")
        config = load_config(run_dir / "config.yaml")
    tok_dir = run_dir / "tokenizer" if (run_dir / "tokenizer").is_dir() else model
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    merged = merge(model, config, run_dir).to("cpu")
    merged.save_pretrained(str(tmp / "merged"))
    del merged
    return tmp / "merged", tokenizer


def export_ctranslate2(model: str | os.PathLike, output: str | os.PathLike, quantization: str = "int8",
                       force: bool = False, config: Optional[Config] = None,
                       merge: Optional[Callable] = None) -> Path:
    """Convert a transformers NLLB/M2M100/Marian folder to CTranslate2 with its own ``TransformersConverter``.

    Args:
        model: a model folder (``runs/NAME/model``, or any ``save_pretrained`` output). A LoRA folder
            (``adapter_config.json``) is merged into the run's base model first.
        output: the folder to write (self-contained: weights, vocabulary, tokenizer, ``adaptmllm_export.json``).
        quantization: one of :data:`QUANTIZATIONS`.
        force: replace an existing ``output``.
        config: the run's config for a LoRA folder (default: ``<run>/config.yaml``).
        merge: ``merge(folder, config, run_dir)`` -> the LoRA checkpoint merged into the run's base model
            (the CLI passes :func:`adaptmllm.training.setup.load_checkpoint_model`); needed for a LoRA folder.

    Returns:
        ``output`` as a Path.

    Raises:
        CT2Error: ctranslate2 missing, bad quantization, ``output`` exists without ``force``, ``model``
            is not a model folder, or the converter failed (its message included).
    """
    ct2 = _ctranslate2()
    if quantization not in QUANTIZATIONS:
        raise CT2Error(f"--quantization: {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    src, out = Path(model), Path(output)
    if not src.is_dir():
        raise CT2Error(f"--model: {src} is not a folder; give a run's model/ folder (e.g. runs/demo/model)")
    if out.exists() and not force:
        raise CT2Error(f"--output: {out} already exists; remove it or pass --force true")
    if out.resolve() == src.resolve():
        raise CT2Error("--output: must differ from --model (the export would overwrite the model)")
    from ctranslate2.converters import TransformersConverter

    with tempfile.TemporaryDirectory(prefix="adaptmllm-ct2-") as tmp:
        folder, tokenizer = _source_folder(src, config, Path(tmp), merge)
        staging = Path(tmp) / "out"
        try:
            TransformersConverter(str(folder), low_cpu_mem_usage=True).convert(
                str(staging), quantization=None if quantization == "float32" else quantization, force=True)
        except Exception as e:  # the converter raises ValueError/NotImplementedError/KeyError...
            raise CT2Error(f"{src}: CTranslate2 {ct2.__version__} could not convert this model "
                           f"({type(e).__name__}: {e})") from e
        tokenizer.save_pretrained(str(staging))
        import transformers

        (staging / EXPORT_INFO).write_text(json.dumps({
            "format": "ctranslate2", "quantization": quantization, "source": str(src),
            "ctranslate2": ct2.__version__, "transformers": transformers.__version__}, indent=2) + "\n",
            encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(out))
    log.info("exported %s to %s (CTranslate2, %s)", src, out, quantization)
    return out


def to_ctranslate2(model: Any, tokenizer: Any, quantization: str = "int8", device: str = "auto") -> CT2Model:
    """Convert an in-memory transformers model (e.g. the model being scored) and load it with CTranslate2.

    The model and tokenizer are saved to a temporary folder, converted with :func:`export_ctranslate2`
    and loaded; the folder is removed once CTranslate2 holds the weights in memory (so the returned
    ``path`` no longer exists). Takes about the time of one save and one load of the model.

    Raises:
        CT2Error: as :func:`export_ctranslate2` and :func:`load_ct2` do.
    """
    with tempfile.TemporaryDirectory(prefix="adaptmllm-ct2-") as tmp:
        src = Path(tmp) / "hf"
        model.save_pretrained(str(src))
        tokenizer.save_pretrained(str(src))
        out = export_ctranslate2(src, Path(tmp) / f"ct2-{quantization}", quantization, force=True)
        return _load_translator(out, device, "default", 0)
