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

from adaptmllm.hardware import host_memory_gib


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
    """The machine's total memory in GiB, to 0.1 (:func:`adaptmllm.hardware.host_memory_gib`, the figure the memory
    planner uses); None where it cannot be read."""
    gib = host_memory_gib()
    return None if gib is None else round(gib, 1)


if __name__ == "__main__":
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb()}))
