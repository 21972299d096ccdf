"""The memory check's sources, each faked: Linux's /proc/meminfo, macOS's vm_stat and
the GPU working-set limit through MLX's current device API."""

from __future__ import annotations

import stat
import sys

import mlx.core as mx
import pytest

from moshi_mlx import system_memory
from moshi_mlx.system_memory import available_memory, parse_vm_stat

# `vm_stat` on an Apple Silicon Mac (macOS 14), 16 KiB pages.
VM_STAT_REPORT = """\
Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               41000.
Pages active:                            402113.
Pages inactive:                          380000.
Pages speculative:                         9000.
Pages throttled:                              0.
Pages wired down:                        131530.
Pages purgeable:                          20000.
"Translation faults":                 734211096.
Pages copy-on-write:                   16424719.
Pages zero filled:                    309876352.
Pages reactivated:                      5712133.
Pages purged:                           2311086.
File-backed pages:                       298650.
Anonymous pages:                         492463.
Pages stored in compressor:             1035880.
Pages occupied by compressor:            324436.
Decompressions:                        12733208.
Compressions:                          18617153.
Pageins:                                9612395.
Pageouts:                                 68455.
Swapins:                                 214002.
Swapouts:                                298876.
"""
PAGE = 16384
# free + speculative + inactive + purgeable pages of the report
RECLAIMABLE = (41000 + 9000 + 380000 + 20000) * PAGE  # 7.37 GB


@pytest.fixture
def mac(monkeypatch, tmp_path):
    """Pretend to be macOS with a `vm_stat` that prints `report` (or fails)."""

    def install(report: str | None = VM_STAT_REPORT) -> None:
        monkeypatch.setattr(sys, "platform", "darwin")
        script = tmp_path / "vm_stat"
        if report is None:
            script.write_text("#!/bin/sh\necho 'vm_stat: failed' >&2\nexit 1\n")
        else:
            (tmp_path / "report.txt").write_text(report)
            script.write_text(f"#!/bin/sh\ncat '{tmp_path / 'report.txt'}'\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setattr(system_memory, "VM_STAT", str(script))

    return install


@pytest.fixture
def gpu(monkeypatch):
    """An Apple GPU as MLX's device API reports it; the deprecated call fails."""

    def install(working_set: int) -> None:
        def device_info(device=None):
            assert device == mx.gpu
            return {
                "max_recommended_working_set_size": working_set,
                "memory_size": 2**36,
            }

        def deprecated():
            raise AssertionError("mx.metal.device_info is deprecated")

        monkeypatch.setattr(mx, "is_available", lambda device: device == mx.gpu)
        monkeypatch.setattr(mx, "device_info", device_info)
        monkeypatch.setattr(mx.metal, "device_info", deprecated)

    return install


def test_linux_reads_memavailable(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24576000 kB\nMemFree:         1200000 kB\n"
        "MemAvailable:   16000000 kB\nBuffers:          300000 kB\n"
    )
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(system_memory, "MEMINFO", meminfo)
    assert available_memory() == 16_000_000 * 1024
    monkeypatch.setattr(system_memory, "MEMINFO", tmp_path / "missing")
    assert available_memory() is None


def test_macos_counts_free_inactive_speculative_purgeable_pages(mac, gpu, capfd):
    mac()
    gpu(working_set=48 * 2**30)  # a 64 GB Mac: the pages are the bound
    assert available_memory() == RECLAIMABLE
    assert capfd.readouterr().err == ""


def test_macos_is_bounded_by_the_gpu_working_set(mac, gpu, capfd):
    mac()
    gpu(working_set=5 * 2**30)
    assert available_memory() == 5 * 2**30
    assert capfd.readouterr().err == ""


def test_macos_without_vm_stat_uses_the_gpu_limit_alone(mac, gpu, monkeypatch):
    mac(report=None)
    gpu(working_set=5 * 2**30)
    assert available_memory() == 5 * 2**30
    monkeypatch.setattr(system_memory, "VM_STAT", "/nonexistent/vm_stat")
    assert available_memory() == 5 * 2**30


def test_macos_with_the_real_mlx_api_prints_no_deprecation(mac, monkeypatch, capfd):
    """MLX's real device_info, with only the GPU's presence faked: stderr stays empty.

    (`mx.metal.device_info`, the deprecated call, prints its warning on this machine
    too; the GPU answers no working-set limit here, so vm_stat's figure is used.)
    """
    mac()
    monkeypatch.setattr(mx, "is_available", lambda device: True)
    assert available_memory() == RECLAIMABLE
    assert capfd.readouterr().err == ""


def test_macos_with_nothing_known_says_unknown(mac, monkeypatch):
    mac(report=None)
    monkeypatch.setattr(mx, "is_available", lambda device: False)
    assert available_memory() is None


def test_vm_stat_report_missing_a_count_is_unknown():
    report = VM_STAT_REPORT.replace("Pages purgeable:", "Pages something:")
    assert parse_vm_stat(report) is None
    assert parse_vm_stat("no page size here\nPages free: 10.\n") is None


def test_vm_stat_page_size_is_read_from_the_report():
    report = VM_STAT_REPORT.replace("16384 bytes", "4096 bytes")
    assert parse_vm_stat(report) == RECLAIMABLE // 4


def test_other_platforms_are_unknown(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert available_memory() is None


def test_this_machine_answers(capfd):
    """No fakes: the real probe of this machine gives a plausible figure, silently."""
    free = available_memory()
    if sys.platform in ("linux", "darwin"):
        assert free is not None and 0 < free < 2**50
    assert capfd.readouterr().err == ""
