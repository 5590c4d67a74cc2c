"""One line about the machine a benchmark's figures come from, for every script here.

Speeds depend on the CPU (AVX2 only, AVX512-BF16/VNNI, AMX have all been seen
on this project's machines) and on what else runs: every script prints this
line beside its figures, and compares figures as ratios within one run.
"""

import os

#: Flags that decide the speed of the model and of the linear algebra.
SPEED_FLAGS = ("sse4", "avx", "fma", "amx", "vnni", "bf16")


def describe(load=True):
    """``CPU: <model>, <n> CPUs (<m> usable); flags: <vector flags>[; load average <x>]``."""
    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    wanted = [f for f in flags if any(key in f for key in SPEED_FLAGS)]
    text = (
        f"CPU: {model}, {os.cpu_count()} CPUs ({usable} usable); "
        f"flags: {' '.join(wanted) or 'none of ' + '/'.join(SPEED_FLAGS)}"
    )
    if load and hasattr(os, "getloadavg"):
        text += f"; load average {os.getloadavg()[0]:.1f}"
    return text
