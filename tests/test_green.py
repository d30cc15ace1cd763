"""adaptmllm.training.green: a real (short) CodeCarbon run, offline, with honest labelling."""

import csv
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from adaptmllm.config import GreenConfig
from adaptmllm.training.green import GreenReport, GreenTracker


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def busy(seconds: float) -> None:
    a = np.random.default_rng(0).random((300, 300))
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = a @ a
        a /= np.abs(a).max()


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(name):
        def fn(*args, **kwargs):
            calls.append((name, args))
            raise OSError(f"network access attempted: {name}")
        return fn

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return calls


def _codecarbon_intensity(iso: str) -> float:
    """The grid carbon intensity (gCO2eq/kWh) CodeCarbon's offline table gives the country ``iso``."""
    import codecarbon

    table = Path(codecarbon.__file__).parent / "data" / "private_infra" / "global_energy_mix.json"
    return float(json.loads(table.read_text())[iso]["carbon_intensity"])


def test_tracks_real_work_offline_and_honestly(tmp_path, no_network):
    cfg = GreenConfig(country_iso_code="irl", measure_power_secs=1.0)
    with GreenTracker(cfg, tmp_path / "green", "test") as tracker:
        busy(3.0)
    r = tracker.report
    assert no_network == []
    assert r.duration_s > 2.5
    assert r.country_iso_code == "IRL"
    assert (tmp_path / "green" / "emissions.csv").is_file()
    rows = list(csv.DictReader((tmp_path / "green" / "emissions.csv").open()))
    assert rows and rows[-1]["country_iso_code"] == "IRL"
    assert r.energy_kwh == pytest.approx(r.cpu_energy_kwh + r.gpu_energy_kwh + r.ram_energy_kwh)
    # 3 s of a busy CPU used energy (measured, or CodeCarbon's power model where there is no counter),
    # and the emissions are that energy times Ireland's grid intensity in CodeCarbon's own table
    # (global_energy_mix.json, gCO2eq/kWh; 290.8 in CodeCarbon 3.3).
    assert r.cpu_energy_kwh > 0 and r.energy_kwh > 0
    intensity_g_per_kwh = _codecarbon_intensity("IRL")
    assert 100 < intensity_g_per_kwh < 1000
    assert r.emissions_kg > 0
    assert r.emissions_kg == pytest.approx(r.energy_kwh * intensity_g_per_kwh / 1000, rel=0.02)
    assert r.tracking.startswith("CPU: ") and "RAM: " in r.tracking and "GPU: " in r.tracking
    # Honesty: measured only if the CPU line names a hardware counter; otherwise a plain-words note.
    counter = any(k in r.tracking.split(";")[0] for k in ("RAPL", "Power Gadget", "PowerMetrics", "PMIC"))
    if not counter:
        assert not r.measured
        assert any("estimate, not a measurement" in n for n in r.notes)
    assert any("RAM energy is modelled" in n for n in r.notes)
    if r.gpu_model is None:
        assert r.gpu_energy_kwh == 0 and any("no GPU was found" in n for n in r.notes)


def test_disabled_times_only(tmp_path):
    with GreenTracker(GreenConfig(enabled=False), tmp_path, "off") as tracker:
        time.sleep(0.3)
    r = tracker.report
    assert r.duration_s >= 0.3 and r.energy_kwh == 0 and not r.measured
    assert any("tracking disabled" in n for n in r.notes)
    assert not (tmp_path / "emissions.csv").exists()


def test_codecarbon_failure_falls_back_to_timing(tmp_path, monkeypatch, caplog):
    import codecarbon

    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("no hardware")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Broken)
    with GreenTracker(GreenConfig(), tmp_path, "broken") as tracker:
        time.sleep(0.2)
    r = tracker.report
    assert r.duration_s >= 0.2 and r.energy_kwh == 0 and not r.measured
    assert "no hardware" in r.tracking and any("failed" in n for n in r.notes)
    assert "no hardware" in caplog.text


def test_exception_in_block_propagates_and_report_is_kept(tmp_path):
    tracker = GreenTracker(GreenConfig(enabled=False), tmp_path, "x")
    with pytest.raises(KeyError):
        with tracker:
            raise KeyError("boom")
    assert tracker.report is not None and tracker.report.duration_s >= 0


def test_report_round_trip():
    r = GreenReport(energy_kwh=1.5, emissions_kg=0.4, duration_s=60.0, cpu_energy_kwh=1.0,
                    ram_energy_kwh=0.5, cpu_model="X", country_iso_code="DEU", tracking="t",
                    notes=["n"])
    d = r.to_dict()
    assert d["energy_kwh"] == 1.5 and d["notes"] == ["n"] and d["measured"] is False
    assert GreenReport.from_dict({**d, "unknown": 1}) == r


class CPU:  # stand-ins named like CodeCarbon's hardware classes: detection reads the tracker's state
    def __init__(self, mode, tdp=100, generic=False):
        self._mode, self._tdp, self._is_generic_tdp, self._tracking_mode = mode, tdp, generic, "machine"


class RAM:
    _force_ram_power = None


class GPU:
    def __init__(self, *has_counter):
        self.devices = type("All", (), {"devices": [type("D", (), {"_has_counter": c})() for c in has_counter]})()


def fake_data(gpu_energy=0.5, cpu_energy=1.0):
    return type("Data", (), {"ram_power": 10.0, "gpu_energy": gpu_energy, "cpu_energy": cpu_energy})()


@pytest.mark.parametrize("hardware, measured, cpu_words, gpu_words", [
    ([RAM(), CPU("intel_rapl"), GPU(True)], True, "RAPL energy counter", "energy counter (measured)"),
    ([RAM(), CPU("intel_rapl")], True, "RAPL", "none found"),
    ([RAM(), CPU("cpu_load", 85, generic=True), GPU(True)], False, "generic default", "measured"),
    ([RAM(), CPU("intel_rapl"), GPU(True, False)], False, "RAPL", "no energy counter"),
    ([RAM(), CPU("constant", 120)], False, "constant 50% of an assumed 120 W", "none found"),
])
def test_detection_from_tracker_state(hardware, measured, cpu_words, gpu_words):
    from adaptmllm.training.green import inspect_machine

    tracker = type("T", (), {"_hardware": hardware, "_force_cpu_power": None})()
    tracking, is_measured, notes = inspect_machine(tracker, fake_data())
    cpu, ram, gpu = tracking.split("; ")
    assert is_measured is measured
    assert cpu_words in cpu and gpu_words in gpu and "model" in ram
    assert any("estimate, not a measurement" in n for n in notes) is (not measured)


def test_zero_gpu_energy_with_a_gpu_is_flagged():
    from adaptmllm.training.green import inspect_machine

    tracker = type("T", (), {"_hardware": [RAM(), CPU("intel_rapl"), GPU(False)], "_force_cpu_power": None})()
    _, _, notes = inspect_machine(tracker, fake_data(gpu_energy=0.0))
    assert any("under-reported" in n for n in notes)


KILLED_PROCESS = """
import os, signal, sys, time
import numpy as np
from adaptmllm.config import GreenConfig
from adaptmllm.training.green import GreenTracker
tracker = GreenTracker(GreenConfig(country_iso_code="IRL", measure_power_secs=0.5, flush_secs=0.5), sys.argv[1],
                       "killed")
tracker.__enter__()
a = np.random.default_rng(0).random((300, 300))
end = time.perf_counter() + 4.0
while time.perf_counter() < end:
    a = a @ a
    a /= np.abs(a).max()
os.kill(os.getpid(), signal.SIGKILL)  # as a kill mid-run: no __exit__, no tracker.stop()
"""


def test_a_killed_process_leaves_its_energy_and_the_resumed_one_counts_it(tmp_path):
    """A real CodeCarbon tracker in a process killed with SIGKILL (no stop()), then a second one in the
    same folder, as ``train.resume`` does: the second report holds both processes' energy and time."""
    import subprocess
    import sys

    out = tmp_path / "green"
    proc = subprocess.run([sys.executable, "-c", KILLED_PROCESS, str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr
    rows = list(csv.DictReader((out / "emissions.csv").open()))
    assert len(rows) == 1, "one row per process: flushes update it"
    first_s, first_kwh = float(rows[0]["duration"]), float(rows[0]["energy_consumed"])
    assert 2.5 < first_s < 6 and first_kwh > 0

    cfg = GreenConfig(country_iso_code="IRL", measure_power_secs=0.5, flush_secs=0.5)
    with GreenTracker(cfg, out, "resumed") as tracker:
        busy(1.5)
    r = tracker.report
    rows = list(csv.DictReader((out / "emissions.csv").open()))
    assert len(rows) == 2 and rows[0]["run_id"] != rows[1]["run_id"]
    second_s = float(rows[1]["duration"])
    assert second_s < first_s
    assert r.duration_s == pytest.approx(first_s + second_s, rel=0.01)
    assert r.energy_kwh == pytest.approx(first_kwh + float(rows[1]["energy_consumed"]), rel=0.01)
    assert r.energy_kwh == pytest.approx(r.cpu_energy_kwh + r.gpu_energy_kwh + r.ram_energy_kwh)
    assert any("Includes 1 earlier process" in n for n in r.notes)


def test_a_fresh_folder_reports_only_its_own_process(tmp_path):
    with GreenTracker(GreenConfig(measure_power_secs=0.5, flush_secs=0.5), tmp_path / "green", "one") as t:
        busy(1.2)
    assert not any("earlier process" in n for n in t.report.notes)
    rows = list(csv.DictReader((tmp_path / "green" / "emissions.csv").open()))
    assert len(rows) == 1 and float(rows[0]["duration"]) == pytest.approx(t.report.duration_s, rel=0.01)
