"""Load test of the playground on loopback: many gradio_client clients translate while some annotate.

    .venv/bin/python bench/playground_load.py --model runs/demo/model

Starts ``adaptmllm serve`` in a subprocess (with passwords, as a shared server would have: one login
per annotator, ``--auth_file``) on 127.0.0.1 with a fresh annotation database, then ``--clients``
clients (default 50) each make ``--requests`` translation requests (default 20) at once;
``--annotators`` of them (default 10), each signed in as their own login, also submit one annotation
(an MQM error span and an SQM score) after each translation. Afterwards
the annotations in the database are counted: every acknowledged one must be there.

Writes ``bench/results/playground-load-<date>.json`` with ``errors``, ``lost_annotations``,
``p50_s``, ``p95_s`` (translation request latency), ``requests_per_s`` (translation requests per
second of wall time), annotation latencies, the server settings and the machine. The bar: zero
errors and zero lost annotations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_model, memory_gb  # noqa: E402  (one way to name the machine, bench/machine.py)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    """A description of this machine (CPU model, cores, memory, load, library versions)."""
    cpu, mem_gb = cpu_model(), memory_gb()
    import gradio
    import gradio_client
    import torch

    return {
        "hostname": platform.node(), "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
        "memory_gb": mem_gb, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__, "gradio": gradio.__version__,
        "gradio_client": gradio_client.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until the server answers (401 counts: it is up); raise if it exits or times out."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url + "config", timeout=2)
            return
        except urllib.error.HTTPError:  # 401 before login: it is up
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("server did not come up")


def main() -> int:
    """Run the load test; exit status 0 when there were no errors and no lost annotations."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "model"))
    ap.add_argument("--run", default=None, help="run folder with the test set (default: the model's parent)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--annotators", type=int, default=10)
    ap.add_argument("--num_beams", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--serve_args", nargs="*", default=[], help="extra flags for adaptmllm serve (--serve.x y)")
    args = ap.parse_args()

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from gradio_client import Client

    run = Path(args.run) if args.run else Path(args.model).parent
    src_lang = json.loads((run / "data" / "data_report.json").read_text())["src_lang"]
    tgt_lang = json.loads((run / "data" / "data_report.json").read_text())["tgt_lang"]
    sentences = [s for s in (run / "data" / f"test.{src_lang}").read_text(encoding="utf-8").splitlines() if s]
    work = Path(tempfile.mkdtemp(prefix="playground-load-"))
    db = work / "human_eval.sqlite"
    port = free_port()
    password = secrets.token_urlsafe(16)
    # the annotator is the signed-in user: one login per annotator, as for a team of translators
    logins = {"bench": password} | {f"bench-annotator-{i}": secrets.token_urlsafe(16) for i in range(args.annotators)}
    auth_file = work / "logins.txt"
    auth_file.write_text("".join(f"{u}:{p}\n" for u, p in logins.items()), encoding="utf-8")
    auth_file.chmod(0o600)
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("ADAPTMLLM_AUTH", None)
    cmd = [sys.executable, "-m", "adaptmllm.cli", "serve", "--model", args.model, "--run", str(run), "--db", str(db),
           "--serve.port", str(port), "--auth_file", str(auth_file), *args.serve_args]
    log = (work / "server.log").open("w")
    info = machine()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        t_up = time.time()
        wait_up(url, proc)
        startup_s = time.time() - t_up
        clients = [None] * args.clients

        def connect(i: int) -> None:
            user = f"bench-annotator-{i}" if i < args.annotators else "bench"
            clients[i] = Client(url, auth=(user, logins[user]), verbose=False)

        ts = [threading.Thread(target=connect, args=(i,)) for i in range(args.clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        lat: list[float] = []
        ann_lat: list[float] = []
        errors: list[str] = []
        acked = {"ratings": 0, "errors": 0}
        lock = threading.Lock()
        barrier = threading.Barrier(args.clients)

        def worker(i: int) -> None:
            c = clients[i]
            annotator = f"bench-annotator-{i}" if i < args.annotators else None
            item = None
            if annotator:
                try:
                    item = c.predict(annotator, api_name="/annotator_start")[0]
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(f"start: {type(e).__name__}: {e}")
            barrier.wait()
            for r in range(args.requests):
                text = sentences[(i * args.requests + r) % len(sentences)]
                t0 = time.perf_counter()
                try:
                    out = c.predict(text, src_lang, tgt_lang, args.num_beams, 128, api_name="/translate")
                    if not out[0]:
                        raise RuntimeError("empty translation")
                    with lock:
                        lat.append(time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(f"translate: {type(e).__name__}: {e}")
                if annotator and item is not None:
                    t1 = time.perf_counter()
                    try:
                        c.predict(annotator, item, "fluency", "minor", None, None, "", "", api_name="/add_error")
                        with lock:
                            acked["errors"] += 1
                        nxt = c.predict(annotator, item, (r % 7), api_name="/rate")
                        with lock:
                            acked["ratings"] += 1
                            ann_lat.append(time.perf_counter() - t1)
                        item = nxt[0]
                    except Exception as e:  # noqa: BLE001
                        with lock:
                            errors.append(f"annotate: {type(e).__name__}: {e}")

        t0 = time.perf_counter()
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        for c in clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT COUNT(*) FROM ratings WHERE annotator LIKE 'bench-annotator-%'").fetchone()[0]
        err_rows = con.execute("SELECT COUNT(*) FROM errors WHERE annotator LIKE 'bench-annotator-%'").fetchone()[0]
    lost = (acked["ratings"] - rows) + (acked["errors"] - err_rows)
    server_log = (work / "server.log").read_text(errors="replace")
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "model": str(Path(args.model)),
        "clients": args.clients, "requests_per_client": args.requests, "annotators": args.annotators,
        "num_beams": args.num_beams, "serve_args": args.serve_args,
        "server_startup_s": round(startup_s, 2),
        "translation_requests": len(lat) + sum(e.startswith("translate") for e in errors),
        "errors": len(errors), "error_samples": errors[:10],
        "annotations_acknowledged": acked, "annotations_in_db": {"ratings": rows, "errors": err_rows},
        "lost_annotations": lost,
        "p50_s": round(pct(lat, 50), 4), "p95_s": round(pct(lat, 95), 4), "max_s": round(max(lat), 4) if lat else None,
        "mean_s": round(statistics.fmean(lat), 4) if lat else None,
        "requests_per_s": round(len(lat) / wall, 2),
        "annotation_p50_s": round(pct(ann_lat, 50), 4), "annotation_p95_s": round(pct(ann_lat, 95), 4),
        "wall_s": round(wall, 2),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "password_in_server_log": any(p in server_log for p in logins.values()),
        "traceback_in_server_log": "Traceback" in server_log,
    }
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"playground-load-{dt.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("errors", "lost_annotations", "p50_s", "p95_s", "requests_per_s",
                                             "wall_s")}))
    print(f"wrote {out}")
    ok = result["errors"] == 0 and result["lost_annotations"] == 0 and not result["password_in_server_log"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
