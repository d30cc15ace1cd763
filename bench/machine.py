"""What the benchmarks record of the machine they ran on (the ``machine`` of bench/results/*.json): the CPU
model and the memory, read one way for every benchmark.

    python bench/machine.py          # prints {"cpu": ..., "cores": ..., "memory_gb": ...}
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Optional


def cpu_model() -> str:
    """The CPU model name, e.g. ``AMD EPYC``: the first ``model name`` of /proc/cpuinfo (Linux on x86), else
    lscpu's ``Model name`` (Linux on ARM, whose /proc/cpuinfo has none), else ``platform.processor()``, else
    ``unknown CPU``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def memory_gb() -> Optional[float]:
    """The machine's total memory in GiB (``MemTotal`` of /proc/meminfo, kB / 1024**2), to 0.1; None where
    there is no /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


if __name__ == "__main__":
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb()}))
