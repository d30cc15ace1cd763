# adaptmllm set-up (Colab, Jupyter, or `python notebooks/colab_setup.py`): the notebook's first cell runs
# this same code (tests/test_notebook.py keeps them identical). Standard library only: it runs before
# adaptmllm is installed. It keeps the installed torch (Colab's CUDA build), installs adaptmllm itself
# without dependencies, then only the requirements that are missing or too old (pyproject's ranges), plus
# the GPU extra (DeepSpeed, PEFT, bitsandbytes) on a GPU. ADAPTMLLM_SOURCE: "" (installed, else the
# repository), a wheel (`make dist`) or a repository folder, e.g. on Google Drive.
import importlib, importlib.metadata as md, importlib.util, os, re, shutil, subprocess, sys, tempfile

REPO = "https://github.com/adaptmllm/adaptmllm"  # = pyproject.toml [project.urls] Repository
REQUIREMENTS = ["transformers>=5.0,<6", "tokenizers>=0.22,<1", "sentencepiece>=0.2", "protobuf>=5",
                "datasets>=4.0,<6", "accelerate>=1.0,<2", "sacrebleu>=2.4,<3", "codecarbon>=3.0,<4",
                "jsonargparse[signatures]>=4.30,<5", "docstring-parser>=0.16", "pyyaml>=6", "matplotlib>=3.7",
                "tqdm>=4.66", "numpy>=1.26", "psutil>=5.9", "optuna>=4.0,<6", "plotly>=5.20", "sqlalchemy>=2.0",
                "gradio>=6.0,<7", "gradio_client>=2.0,<3", "ipywidgets>=7.7", "huggingface_hub>=1.0",
                "peft>=0.13", "pysbd>=0.3.4"]  # = pyproject.toml dependencies, torch left out
GPU_EXTRA = ["deepspeed>=0.16", "peft>=0.13", "bitsandbytes>=0.45"]  # = pyproject.toml [gpu]


def unmet(requirements, version=None):
    """[(requirement, installed version or None)] of the requirements the environment does not satisfy."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.requirements import Requirement
    out = []
    for line in requirements:
        req = Requirement(line)
        try:
            have = version(req.name) if version else md.version(req.name)
        except md.PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            out.append((line, have))
    return out


def setup(source="", mount_drive=False):
    """Install what is missing; returns {"colab", "gpu", "work_dir", "installed", "restart", "line"}."""
    colab = "google.colab" in sys.modules or importlib.util.find_spec("google") is not None and \
        importlib.util.find_spec("google.colab") is not None
    work_dir = "."
    if colab and mount_drive:  # before installing: the source may be on Drive
        from google.colab import drive
        mount = os.environ.get("ADAPTMLLM_DRIVE", "/content/drive")
        drive.mount(mount)
        work_dir = os.path.join(mount, "MyDrive", "adaptmllm")
        os.makedirs(work_dir, exist_ok=True)
    gpu = os.environ.get("ADAPTMLLM_GPU", "1" if shutil.which("nvidia-smi") and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0 else "0") == "1"

    def fail(sentence):
        print(sentence)
        raise SystemExit(sentence)

    try:
        torch = md.version("torch")
    except md.PackageNotFoundError:
        fail("PyTorch is not installed: install it first (https://pytorch.org/get-started/locally/), then run "
             "this cell again.")
    if source and not (source.endswith(".whl") and os.path.isfile(source)
                       or os.path.isfile(os.path.join(source, "pyproject.toml"))):
        fail(f"{source} is neither a wheel (.whl, from `make dist`) nor an adaptmllm repository folder: give the "
             "path of one (on Drive: /content/drive/MyDrive/...), or leave ADAPTMLLM_SOURCE empty.")
    package = source or (None if importlib.util.find_spec("adaptmllm") else f"adaptmllm @ git+{REPO}")
    wanted = unmet(REQUIREMENTS + (GPU_EXTRA if gpu else []))
    wanted = list({re.split(r"[<>=\[ ]", r, 1)[0]: (r, h) for r, h in wanted}.values())
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input"]
    with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as keep:
        keep.write(f"torch=={torch}\n")  # never replace the installed torch
    steps = [("the missing packages", pip + ["-c", keep.name] + [r for r, _ in wanted])] * bool(wanted)
    steps += [("adaptmllm", pip + ["--no-deps"] + ["--force-reinstall"] * bool(source) + [package])] * bool(package)
    for what, cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            said = ([x for x in done.stderr.splitlines() if "ERROR" in x] or done.stderr.splitlines() or ["?"])[-1]
            fail(f"Could not install {what} ({said.strip()}); check that the runtime is online, or run "
                 "`make dist`, copy the wheel to Google Drive and set ADAPTMLLM_SOURCE to its path.")
    os.unlink(keep.name)
    importlib.invalidate_caches()
    names = [(re.split(r"[<>=\[ ]", r, 1)[0], h) for r, h in wanted]
    loaded = [n for n, h in names if h and {"pyyaml": "yaml", "protobuf": "google.protobuf"}.get(
        n.lower(), n.replace("-", "_").lower()) in sys.modules]
    added = [n + ("" if h is None else f" (was {h})") for n, h in names]
    line = (f"adaptmllm set-up: {'installed adaptmllm from ' + str(package) if package else 'adaptmllm already installed'}"
            f"; {'added/upgraded ' + ', '.join(added) if added else 'all requirements already met'}"
            f"; kept torch {torch}{' (GPU: with DeepSpeed, PEFT, bitsandbytes)' if gpu else ' (no GPU)'}.")
    print(line)
    if loaded:
        print(f"Restart needed: pip upgraded {', '.join(loaded)}, which Python had already loaded; use Runtime > "
              "Restart session, then run this cell again (it will then be instant).")
        raise SystemExit("restart the runtime (Runtime > Restart session), then run this cell again")
    return {"colab": colab, "gpu": gpu, "work_dir": work_dir, "installed": [package] * bool(package) + added,
            "restart": bool(loaded), "line": line}


if __name__ == "__main__":
    SETUP = setup(globals().get("ADAPTMLLM_SOURCE") or os.environ.get("ADAPTMLLM_SOURCE", ""),
                  globals().get("MOUNT_DRIVE", False))
