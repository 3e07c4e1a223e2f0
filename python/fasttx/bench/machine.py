"""What a report says about the machine: CPU model, cores, cache sizes, memory read bandwidth.

Every report prints the CPU model and all cache sizes, because the "% of bandwidth" column only
means something next to them: when the weights a decoding step reads fit in the last-level
cache (LLC), they need not come from memory at all and the DRAM bandwidth is no ceiling.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional

# Size of the buffer the bandwidth probe reads: larger than any cache, so the figure is the
# memory's (``--bandwidth-mb``; 0 skips the probe).
BANDWIDTH_MB = 1536

CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def parse_cache_size(text: str) -> Optional[int]:
    """``"32K"``, ``"1024K"``, ``"32M"`` or plain bytes (sysfs' spelling) -> bytes; None if unreadable."""
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    try:
        return int(digits) * scale
    except ValueError:
        return None


def read_caches(cache_dir: Path = CACHE_DIR) -> list[dict]:
    """The caches of CPU 0 from sysfs (``index*/level``, ``type``, ``size``), smallest level first:
    ``[{"level": 1, "type": "Data", "size_bytes": 32768}, ...]``; empty where sysfs has none."""
    caches = []
    for index in sorted(cache_dir.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = parse_cache_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if size is not None:
            caches.append({"level": level, "type": kind, "size_bytes": size})
    return sorted(caches, key=lambda c: (c["level"], c["type"]))


def last_level_cache(caches: list[dict]) -> Optional[dict]:
    """The highest-level data (or unified) cache of ``caches``; None when there is none."""
    data = [c for c in caches if c["type"] in ("Data", "Unified")]
    return max(data, key=lambda c: c["level"]) if data else None


def cache_name(cache: dict) -> str:
    """``L1d``, ``L1i``, ``L2``, ``L3``: the usual names."""
    suffix = {"Data": "d", "Instruction": "i"}.get(cache["type"], "") if cache["level"] == 1 else ""
    return f"L{cache['level']}{suffix}"


def format_bytes(n: int) -> str:
    """Binary units, as the caches are sized: ``32 KiB``, ``1 MiB``, ``32 MiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def cpu_model_and_cores() -> tuple[Optional[str], int]:
    """The CPU model name and the number of physical cores, from /proc/cpuinfo (0 if unknown)."""
    model, cores, physical_id = None, set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            elif key == "physical id":
                physical_id = value
            elif key == "core id":
                cores.add((physical_id, value))
    except OSError:
        pass
    return model, len(cores)


def machine_info() -> dict:
    """CPU, cores, caches and platform for a report (no paths: nothing that names this machine's
    directories)."""
    model, cores = cpu_model_and_cores()
    caches = read_caches()
    llc = last_level_cache(caches)
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "physical_cores": cores or None,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "caches": [{**c, "name": cache_name(c)} for c in caches],
        "last_level_cache": None if llc is None else {"name": cache_name(llc), "size_bytes": llc["size_bytes"]},
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def describe(machine: dict) -> str:
    """One line: ``CPU, 2 physical cores / 2 logical CPUs; caches L1d 32 KiB, ..., L3 32 MiB (last level)``."""
    caches = ", ".join(f"{c['name']} {format_bytes(c['size_bytes'])}" for c in machine.get("caches") or [])
    llc = machine.get("last_level_cache")
    cache_text = (f"caches {caches} (last level: {llc['name']})" if caches and llc
                  else "cache sizes unknown (no /sys/devices/system/cpu/cpu0/cache)")
    return (f"{machine.get('cpu', '?')}, {machine.get('physical_cores')} physical cores / "
            f"{machine.get('logical_cpus')} logical CPUs; {cache_text}")


def default_threads() -> int:
    """The physical cores (the logical CPUs where /proc/cpuinfo does not say)."""
    return cpu_model_and_cores()[1] or os.cpu_count() or 1


def measure_memory_bandwidth(threads: int, megabytes: int = BANDWIDTH_MB) -> tuple[Optional[float], str]:
    """``(GB/s, "")`` from ``fasttx._native.memory_bandwidth(threads, megabytes)``, or
    ``(None, why not)`` when skipped (``megabytes`` 0) or not available in this build."""
    if megabytes <= 0:
        return None, "skipped (--bandwidth-mb 0)"
    try:
        from fasttx import _native
    except Exception as exc:  # ImportError, or a stub package without the native module
        return None, f"fasttx._native not available ({exc.__class__.__name__}: {exc})"
    fn = getattr(_native, "memory_bandwidth", None)
    if fn is None:
        return None, "this fasttx build has no memory_bandwidth (rebuild fasttx)"
    try:
        return float(fn(threads, megabytes)), ""
    except Exception as exc:
        return None, f"memory_bandwidth failed: {exc!r}"
