"""What a benchmark figure was measured on, and whether the machine was quiet enough to report it.

A ratio taken under load is not a result: `require_quiet` refuses to go on when the 1-minute load
average is above half the cores, unless the caller allows it (`--allow-load`), and then every row
says so (`"under_load": true`).
"""

from __future__ import annotations

import os
import platform
import sys


def processor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def facts() -> dict:
    """The processor, its cores and the 1-minute load average now, for every result row."""
    return {
        "processor": processor(),
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def require_quiet(allow_load: bool = False) -> dict:
    """`facts()` plus `under_load`; exits with status 3 and one line when the load average is above
    half the cores and `allow_load` is false."""
    now = facts()
    now["under_load"] = now["load_average_1m"] > (now["cores"] or 1) / 2
    if now["under_load"] and not allow_load:
        sys.exit(
            f"load average {now['load_average_1m']} is above half of {now['cores']} cores: a "
            "ratio measured now is not a result; wait for a quiet machine or pass --allow-load "
            "(the row then says under_load)"
        )
    return now
