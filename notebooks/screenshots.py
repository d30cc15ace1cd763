"""Screenshots of the notebook for the README: the form, and the results cells, rendered from an
executed notebook (widget state embedded) by nbconvert and photographed by headless Chromium.

    .venv/bin/python notebooks/screenshots.py            # -> assets/notebook-{form,training,results}.png

Needs (not for the tests): ``pip install '.[screenshots]'`` (nbconvert), Debian's ``chromium``, and npm (the widget
renderer ``@jupyter-widgets/html-manager`` and ``requirejs`` are fetched once with ``npm pack`` into
``.cache/notebook-js/``, so the page loads nothing from the network). Takes a few minutes: it
runs the notebook's tiny demo with its default parameters (no playground).

The pictures show exactly what a user sees, stderr included (the notebook itself hides the known
harmless warnings: adaptmllm.apps.notebook.setup.quiet_notebook); only the icon glyphs (a CDN font) are hidden,
and the form is shown with one deliberately invalid value, to show the message beside its field.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "adaptmllm.ipynb"
JS_PACKAGES = {"html-manager": "@jupyter-widgets/html-manager@1.0.15", "requirejs": "requirejs@2.3.8"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def fetch_js(cache: Path) -> tuple[Path, Path]:
    """The widget renderer (embed-amd.js) and require.js, fetched once with ``npm pack``."""
    cache.mkdir(parents=True, exist_ok=True)
    embed, require = cache / "html-manager" / "dist" / "embed-amd.js", cache / "requirejs" / "require.js"
    if not (embed.is_file() and require.is_file()):
        for name, spec in JS_PACKAGES.items():
            out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=cache, check=True,
                                 capture_output=True, text=True)
            tgz = cache / out.stdout.strip().splitlines()[-1]
            subprocess.run(["tar", "xzf", tgz.name], cwd=cache, check=True)
            shutil.rmtree(cache / name, ignore_errors=True)
            (cache / "package").rename(cache / name)
            tgz.unlink()
    return embed, require


def to_html(nb, path: Path, embed: Path, require: Path) -> Path:
    """Render ``nb`` (with its widget state) to a self-contained HTML page that loads the local renderer."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.require_js_url = require.as_uri()
    exporter.widget_renderer_url = embed.as_uri()
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace("<body", "<body style='max-width:1180px'", 1)
    # Font Awesome's font would come from a CDN: hide the (empty) icon boxes instead of showing tofu.
    body = body.replace("</head>", "<style>.jupyter-widgets i.fa {display: none}</style></head>", 1)
    path.write_text(body, encoding="utf-8")
    return path


def shoot(html: Path, png: Path, width: int = 1240, height: int = 3000) -> Path:
    """Screenshot ``html`` in headless Chromium, then crop the blank space below the content."""
    from PIL import Image, ImageChops

    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        "--virtual-time-budget=20000", f"--screenshot={png}", html.as_uri()],
                       check=True, capture_output=True, timeout=180)
    img = Image.open(png).convert("RGB")
    bbox = ImageChops.difference(img, Image.new("RGB", img.size, (255, 255, 255))).getbbox()
    if bbox:
        img = img.crop((0, 0, width, min(img.height, bbox[3] + 16)))
    img.quantize(colors=256).save(png, optimize=True)  # a palette PNG: a third of the size, same look
    return png


def _section(nb, first: str, last: str):
    """A copy of ``nb`` with the cells from the heading ``first`` up to (not including) ``last``."""
    cells = nb.cells
    start = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith(first))
    stop = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith(last))
    out = copy.deepcopy(nb)
    out.cells = copy.deepcopy(cells[start:stop])  # outputs as they are, stderr included
    return out


def main(argv=None) -> int:
    """Execute the notebook, render the form and the results to HTML, and screenshot them into ``--out``."""
    import nbformat

    from adaptmllm.apps.notebook.results import run_notebook

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "assets"), help="folder for the PNGs")
    ap.add_argument("--work", default=None, help="folder to run in (default: a temporary one)")
    ap.add_argument("--executed", default=None,
                    help="an already executed notebooks/adaptmllm.ipynb (saved by an earlier run): render it, "
                         "with the committed notebook's markdown, instead of running the demo again")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    embed, require = fetch_js(REPO / ".cache" / "notebook-js")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="adaptmllm-shots-"))
    work.mkdir(parents=True, exist_ok=True)

    # The form: the cells up to the form, then one invalid value to show the message beside its field.
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    form_end = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "ConfigForm(" in c.source)
    short = copy.deepcopy(nb)
    short.cells = short.cells[: form_end + 1] + [nbformat.v4.new_code_cell(
        'form.fields["data.max_length_ratio"].widget.value = 0.5  # invalid on purpose: see the message')]
    partial = work / "form.ipynb"
    nbformat.write(short, str(partial))
    t0 = time.perf_counter()
    done = run_notebook(partial, {"RUN_NAME": "screenshot"}, cwd=work)
    form_nb = copy.deepcopy(done)  # the heading of step 3 and the form cell (the widget state is the final one)
    start = next(i for i, c in enumerate(done.cells) if c.cell_type == "markdown" and c.source.startswith("## 3."))
    form_nb.cells = form_nb.cells[start:start + 2]
    shoot(to_html(form_nb, work / "form.html", embed, require), out / "notebook-form.png", height=2200)
    print(f"form: {out / 'notebook-form.png'} ({time.perf_counter() - t0:.0f} s)")

    # The results: the whole notebook with its default (tiny demo) parameters, without the playground.
    t0 = time.perf_counter()
    if args.executed:
        full = nbformat.read(args.executed, as_version=4)
        text = [c.source for c in nb.cells if c.cell_type == "markdown"]
        for cell, source in zip([c for c in full.cells if c.cell_type == "markdown"], text):
            cell.source = source  # the committed wording (code cells and outputs are as executed)
    else:
        full = run_notebook(NOTEBOOK, {"RUN_NAME": "screenshot", "PLAYGROUND": False}, cwd=work, timeout=1800)
        nbformat.write(full, str(work / "executed.ipynb"))
    for name, first, last in (("notebook-training.png", "## 5.", "## 6."), ("notebook-results.png", "## 6.", "## 8.")):
        page = to_html(_section(full, first, last), work / name.replace(".png", ".html"), embed, require)
        shoot(page, out / name, height=3200)
        print(f"{name}: {out / name}")
    print(f"notebook run: {time.perf_counter() - t0:.0f} s; executed notebook in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
