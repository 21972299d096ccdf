"""How much memory a model can use now: Linux's MemAvailable; on macOS the pages the
system can hand out without swapping, bounded by the GPU's working-set limit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
VM_STAT = "/usr/bin/vm_stat"
VM_STAT_TIMEOUT_S = 5.0
# vm_stat's counts of pages a new allocation can take without swapping: free ones
# (vm_stat counts speculative pages apart from them), inactive ones and purgeable ones
# (caches their owners marked disposable).
RECLAIMABLE_PAGES = (
    "Pages free",
    "Pages speculative",
    "Pages inactive",
    "Pages purgeable",
)


def available_memory() -> int | None:
    """Bytes the model can use now (None if unknown)."""
    if sys.platform == "linux":
        return linux_available()
    if sys.platform == "darwin":
        known = [n for n in (macos_available(), gpu_working_set()) if n is not None]
        return min(known) if known else None
    return None


def linux_available() -> int | None:
    """The kernel's estimate of memory available without swapping (MemAvailable)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def macos_available() -> int | None:
    """Free, speculative, inactive and purgeable memory as `vm_stat` reports it now."""
    try:
        report = subprocess.run(
            [VM_STAT],
            capture_output=True,
            text=True,
            timeout=VM_STAT_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_vm_stat(report)


def parse_vm_stat(report: str) -> int | None:
    """Bytes of RECLAIMABLE_PAGES in a `vm_stat` report (None if any is missing)."""
    page_size = re.search(r"page size of (\d+) bytes", report)
    counts = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)\.?\s*$", report, re.MULTILINE))
    if page_size is None or any(name not in counts for name in RECLAIMABLE_PAGES):
        return None
    pages = sum(int(counts[name]) for name in RECLAIMABLE_PAGES)
    return pages * int(page_size.group(1))


def gpu_working_set() -> int | None:
    """The GPU's recommended working-set limit (None without a GPU).

    Past it Metal still allocates, but the GPU slows down. `mx.device_info` is the
    current API (MLX 0.30.4 deprecated `mx.metal.device_info`, which warns on stderr).
    """
    import mlx.core as mx

    if not mx.is_available(mx.gpu):
        return None
    limit = mx.device_info(mx.gpu).get("max_recommended_working_set_size")
    return int(limit) if limit else None
