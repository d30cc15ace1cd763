"""Energy and emissions of a run with CodeCarbon's offline tracker, reported honestly.

Units everywhere: seconds (s), kilowatt-hours (kWh), kilograms of CO2-equivalent (kgCO2eq).

CodeCarbon reads a hardware energy counter where one is readable (Intel/AMD RAPL on Linux, NVIDIA
NVML or AMD SMI for GPUs) and otherwise *estimates*: the CPU from an assumed power (its TDP table,
4 W per thread for an unknown model, or 85 W) scaled by the CPU load, the RAM from the installed
memory size. :class:`GreenReport` says which of the two each figure is (``measured``, ``tracking``,
``notes``), read from the tracker's hardware objects after the run, so an estimate is never
presented as a measurement. Only ``OfflineEmissionsTracker`` is used, with every network output
(CodeCarbon API, HTTP endpoint, Electricity Maps, Prometheus, Logfire) turned off.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import GreenConfig

__all__ = ["GreenReport", "GreenTracker", "add_earlier_processes"]

log = logging.getLogger(__name__)

ESTIMATE_NOTE = ("The energy figure is an estimate, not a measurement: no hardware energy counter "
                 "(such as Intel RAPL or NVIDIA NVML) could be read for the {parts}.")


@dataclass
class GreenReport:
    """Energy use and emissions of one tracked block of work.

    ``energy_kwh`` (kWh) is the total of ``cpu_energy_kwh``, ``gpu_energy_kwh`` and
    ``ram_energy_kwh``; ``emissions_kg`` (kgCO2eq) is that energy times the carbon intensity of
    ``country_iso_code``'s grid; ``duration_s`` is wall time in seconds. ``measured`` is True only
    when the CPU and GPU energy came from hardware energy counters (RAPL, NVML...); RAM energy is
    always modelled by CodeCarbon, which ``notes`` says. ``tracking`` tells how each part was
    obtained; ``notes`` are plain-language caveats for the report.
    """

    energy_kwh: float = 0.0
    emissions_kg: float = 0.0
    duration_s: float = 0.0
    cpu_energy_kwh: float = 0.0
    gpu_energy_kwh: float = 0.0
    ram_energy_kwh: float = 0.0
    cpu_model: Optional[str] = None
    gpu_model: Optional[str] = None
    country_iso_code: str = ""
    tracking: str = ""
    measured: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The report as a plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GreenReport":
        """Rebuild a report from :meth:`to_dict` output; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in (data or {}).items() if k in known}
        kwargs["notes"] = list(kwargs.get("notes") or [])
        return cls(**kwargs)


def _describe_cpu(tracker: Any, cpu: Any) -> tuple[str, bool]:
    """How CodeCarbon got the CPU power, and whether that is a hardware counter."""
    mode = getattr(cpu, "_mode", None)
    if mode in ("intel_rapl", "windows_emi"):
        name = "RAPL" if mode == "intel_rapl" else "Windows Energy Meter (RAPL)"
        return f"{name} energy counter (measured)", True
    if mode == "intel_power_gadget":
        return "Intel Power Gadget (RAPL, measured)", True
    tdp = getattr(cpu, "_tdp", None)
    if getattr(tracker, "_force_cpu_power", None) is not None:
        source = "set by the user"
    elif getattr(cpu, "_is_generic_tdp", False):
        source = "CodeCarbon's generic default, CPU model unknown"
    else:
        try:
            from codecarbon.core.cpu import DEFAULT_POWER_PER_CORE as per_thread
            from codecarbon.core.util import count_cpus

            guessed = tdp == per_thread * count_cpus()
        except Exception:  # pragma: no cover - codecarbon internals moved
            guessed = False
        source = (f"{per_thread} W per thread: CPU model not in CodeCarbon's TDP table" if guessed
                  else "TDP from CodeCarbon's CPU table")
    if mode == "cpu_load":
        scope = "this process's" if getattr(cpu, "_tracking_mode", "") == "process" else "machine-wide"
        formula = ("x load" if scope.startswith("this") else "x (0.1 + 0.9 x load^3)")
        return (f"estimate from {scope} CPU load: assumed {tdp} W ({source}) {formula}, "
                "no RAPL counter"), False
    if mode == "constant":
        return f"constant 50% of an assumed {tdp} W TDP ({source}), no RAPL counter", False
    return f"estimate ({mode or type(cpu).__name__})", False


def inspect_machine(tracker: Any, data: Any) -> tuple[str, bool, list[str]]:
    """Describe, from the tracker's hardware objects, how each part's energy was obtained."""
    parts: dict[str, str] = {}
    measured = {"CPU": False, "GPU": True}
    notes: list[str] = []
    for hw in getattr(tracker, "_hardware", []) or []:
        kind = type(hw).__name__
        if kind == "CPU":
            parts["CPU"], measured["CPU"] = _describe_cpu(tracker, hw)
        elif kind == "RAM":
            forced = getattr(hw, "_force_ram_power", None)
            parts["RAM"] = (f"constant {forced} W set by the user" if forced is not None else
                            f"model from installed memory size (~{data.ram_power:.0f} W), not measured")
        elif kind == "GPU":
            devices = getattr(getattr(hw, "devices", None), "devices", []) or []
            counters = [bool(getattr(d, "_has_counter", False)) for d in devices]
            names = {"NvidiaGPUDevice": "NVML", "AMDGPUDevice": "AMD SMI"}
            backend = "/".join(dict.fromkeys(names.get(type(d).__name__, "GPU driver") for d in devices)) or "GPU driver"
            if counters and all(counters):
                parts["GPU"] = f"{backend} energy counter (measured)"
            else:
                parts["GPU"] = f"{backend} power readings averaged over time (no energy counter)"
                measured["GPU"] = False
        elif kind in ("AppleSiliconChip", "Raspberry"):
            part = getattr(hw, "chip_part", "CPU")
            parts[part] = f"{'PowerMetrics' if kind == 'AppleSiliconChip' else 'Raspberry Pi PMIC'} (measured)"
            if part in measured:
                measured[part] = True
    parts.setdefault("RAM", "not tracked")
    parts.setdefault("GPU", "none found")
    if "CPU" not in parts:
        parts["CPU"] = "not tracked"
    tracking = "; ".join(f"{k}: {parts[k]}" for k in ("CPU", "RAM", "GPU"))
    is_measured = measured["CPU"] and measured["GPU"]
    estimated = [k for k in ("CPU", "GPU") if k in parts and not measured[k] and parts[k] != "none found"]
    if not is_measured:
        notes.append(ESTIMATE_NOTE.format(parts=" and ".join(estimated) or "CPU"))
    if parts["CPU"].startswith("estimate from"):
        notes.append("CPU energy is an assumed CPU power scaled by CPU load; it can be far from the "
                     "real draw of this processor.")
    notes.append("RAM energy is modelled from the installed memory size, not measured.")
    if parts["GPU"] == "none found":
        notes.append("GPU energy reads 0 kWh because no GPU was found to track, not because a GPU "
                     "used no energy.")
    elif data.gpu_energy <= 0:
        notes.append("GPU energy reads 0 kWh: the GPU's energy could not be read, so it is missing "
                     "from the total (under-reported).")
    if data.cpu_energy <= 0 and measured["CPU"]:
        notes.append("CPU energy reads 0 kWh: the counter gave no usable reading, so it is missing "
                     "from the total (under-reported).")
    return tracking, is_measured, notes


class GreenTracker:
    """Context manager that tracks energy (kWh) and emissions (kgCO2eq) of the block it wraps.

    Wraps CodeCarbon's ``OfflineEmissionsTracker`` with ``country_iso_code`` and
    ``measure_power_secs`` from ``cfg``, writing ``emissions.csv`` into ``output_dir`` (created if
    missing), and never touching the network. On exit :attr:`report` holds a :class:`GreenReport`
    (duration in seconds). Tracking never breaks the wrapped work: with ``cfg.enabled`` False, or
    when CodeCarbon fails, only the duration is recorded, energy and emissions are 0, and the
    report's notes say why. Exceptions of the wrapped block propagate unchanged.

    Killed and resumed runs: every ``cfg.flush_secs`` seconds the
    process's figures so far are written to ``emissions.csv`` (one row per process, keyed by
    CodeCarbon's ``run_id``), so a process killed mid-run leaves its energy there, missing at most
    the last ``cfg.flush_secs`` seconds. The report then adds every other process's row found in
    that file (earlier processes of the same run folder, e.g. before ``train.resume``) to its
    energy, emissions and duration, and a note says how many and how much. Callers give each run
    its own ``output_dir`` (a run folder is deleted, never mixed, when it is overwritten).
    """

    def __init__(self, cfg: GreenConfig, output_dir: str | Path, project_name: str) -> None:
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.project_name = project_name
        self.report: Optional[GreenReport] = None
        self._tracker: Any = None
        self._failure: Optional[str] = None
        self._t0 = 0.0
        self._stop_flushing = threading.Event()
        self._flusher: Optional[threading.Thread] = None

    def _start(self) -> None:
        from codecarbon import OfflineEmissionsTracker, OutputMethod

        self.output_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # log_level below, set before __init__ logs
        tracker = OfflineEmissionsTracker(
            country_iso_code=self.cfg.country_iso_code,
            measure_power_secs=self.cfg.measure_power_secs,
            output_dir=str(self.output_dir),
            output_methods=[OutputMethod.CSV],  # = save_to_file=True; no API/HTTP/Prometheus/Logfire
            emissions_endpoint=None,  # explicit, so a ~/.codecarbon.config cannot enable HTTP output
            electricitymaps_api_token=None,
            project_name=self.project_name,
            log_level="error",
            tracking_mode="machine",
            allow_multiple_runs=True,  # no lock file
            on_csv_write="update",  # flush() rewrites this process's row instead of adding one per flush
        )
        # OfflineEmissionsTracker.__init__/start/stop swallow their own exceptions; check the state.
        if not hasattr(tracker, "_output_handlers"):
            raise RuntimeError("CodeCarbon could not build its tracker")
        tracker._electricitymaps_api_token = None  # a deprecated co2_signal token in a config file
        tracker.start()
        if getattr(tracker, "_start_time", None) is None:
            raise RuntimeError("CodeCarbon could not start its tracker")
        self._tracker = tracker
        self._flusher = threading.Thread(target=self._flush_loop, name="adaptmllm-green-flush", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop_flushing.wait(self.cfg.flush_secs):
            try:
                self._tracker.flush()  # CodeCarbon's own "write so far, keep running"
            except Exception as e:  # pragma: no cover - never let tracking break training
                log.debug("CodeCarbon flush failed: %s", e)

    def _earlier_processes(self) -> list[dict]:
        """Rows of ``emissions.csv`` written by other processes than this one (earlier runs of this folder)."""
        path = self.output_dir / "emissions.csv"
        run_id = str(getattr(self._tracker, "run_id", ""))
        try:
            with path.open(newline="") as f:
                return [r for r in csv.DictReader(f) if r.get("run_id") and r["run_id"] != run_id]
        except (OSError, csv.Error):
            return []

    def __enter__(self) -> "GreenTracker":
        if self.cfg.enabled:
            try:
                self._start()
            except Exception as e:  # never let tracking break training
                self._failure = f"{type(e).__name__}: {e}"
                log.warning("Energy tracking is off for this run: %s", self._failure)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        duration = time.perf_counter() - self._t0
        self.report = self._finish(duration)
        return False

    def _timing_only(self, duration: float, tracking: str, note: str) -> GreenReport:
        return GreenReport(duration_s=duration, country_iso_code=self.cfg.country_iso_code,
                           tracking=tracking, measured=False, notes=[note])

    def _finish(self, duration: float) -> GreenReport:
        if not self.cfg.enabled:
            return self._timing_only(duration, "disabled", "Energy tracking disabled "
                                     "(green.enabled is false): only the duration was recorded.")
        tracker, data = self._tracker, None
        if self._flusher is not None:
            self._stop_flushing.set()
            self._flusher.join()
        if tracker is not None:
            try:
                tracker.stop()
                data = getattr(tracker, "final_emissions_data", None)
            except Exception as e:  # pragma: no cover - stop() already swallows its errors
                self._failure = f"{type(e).__name__}: {e}"
            if data is None and self._failure is None:
                self._failure = "CodeCarbon returned no emissions data"
        if data is None:
            if tracker is not None:  # a failure to start was logged by __enter__
                log.warning("Energy tracking failed: %s", self._failure)
            return self._timing_only(duration, f"failed ({self._failure})",
                                     f"Energy tracking failed ({self._failure}); only the duration "
                                     "was recorded, energy and emissions are unknown (shown as 0).")
        try:
            tracking, measured, notes = inspect_machine(tracker, data)
        except Exception as e:  # pragma: no cover - codecarbon internals moved
            tracking, measured = f"unknown ({type(e).__name__}: {e})", False
            notes = ["How CodeCarbon obtained these figures could not be determined; treat them as "
                     "estimates."]
        report = GreenReport(
            energy_kwh=float(data.energy_consumed), emissions_kg=float(data.emissions),
            duration_s=float(data.duration), cpu_energy_kwh=float(data.cpu_energy),
            gpu_energy_kwh=float(data.gpu_energy), ram_energy_kwh=float(data.ram_energy),
            cpu_model=data.cpu_model or None, gpu_model=data.gpu_model or None,
            country_iso_code=data.country_iso_code or self.cfg.country_iso_code,
            tracking=tracking, measured=measured, notes=notes)
        return add_earlier_processes(report, self._earlier_processes(), self.cfg.flush_secs)


def add_earlier_processes(report: GreenReport, rows: list[dict], flush_every_s: float) -> GreenReport:
    """Add the figures of earlier processes of the same run (``emissions.csv`` rows) to ``report``.

    ``rows`` are CodeCarbon CSV rows (``duration`` s, ``emissions`` kgCO2eq, ``energy_consumed``,
    ``cpu_energy``, ``gpu_energy``, ``ram_energy`` kWh); a row with an unreadable number is skipped
    and counted in the note. Returns ``report`` with the sums added and a note; unchanged when
    ``rows`` is empty.
    """
    keys = {"duration_s": "duration", "emissions_kg": "emissions", "energy_kwh": "energy_consumed",
            "cpu_energy_kwh": "cpu_energy", "gpu_energy_kwh": "gpu_energy", "ram_energy_kwh": "ram_energy"}
    used, skipped = [], 0
    for row in rows:
        try:
            used.append({k: float(row[c]) for k, c in keys.items()})
        except (KeyError, TypeError, ValueError):
            skipped += 1
    if not used and not skipped:
        return report
    earlier = {k: sum(u[k] for u in used) for k in keys}
    for k, v in earlier.items():
        setattr(report, k, getattr(report, k) + v)
    note = (f"Includes {len(used)} earlier process(es) of this run (stopped, then resumed with train.resume): "
            f"{earlier['energy_kwh']:.3g} kWh over {earlier['duration_s']:.0f} s, as each last wrote it; "
            f"each may miss up to its last {flush_every_s:.0f} s before it stopped.")
    if skipped:
        note += f" {skipped} unreadable row(s) of emissions.csv were left out (under-reported)."
    report.notes.append(note)
    return report
