"""moshi_mlx.blas: the automatic OpenBLAS route is opt-out, harmless when absent, and exact."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

PROBE = (
    "import moshi_mlx, mlx.core as mx, numpy as np;"
    "rng = np.random.default_rng(0);"
    "a, b = rng.standard_normal((2, 64, 48)).astype(np.float32), rng.standard_normal((48, 32)).astype(np.float32);"
    "err = np.abs(np.array(mx.array(a) @ mx.array(b)) - a @ b).max();"
    "print(moshi_mlx.blas.loaded, err < 1e-4, moshi_mlx.blas.missing_hint() is None)"
)


def _run(code: str, unset: str = "", **env: str) -> list[str]:
    """What `code` prints in a fresh interpreter, with `unset` removed from the
    environment and `env` added."""
    environ = {k: v for k, v in os.environ.items() if k != unset}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
        text=True,
        env={**environ, **env},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def _probe(**env: str) -> list[str]:
    return _run(PROBE, **env)


def test_reference_setting_keeps_the_bundled_blas():
    assert _probe(MOSHI_MLX_BLAS="reference") == ["None", "True", "True"]


def test_missing_library_is_harmless_and_hinted():
    hinted = "False" if sys.platform == "linux" else "True"
    assert _probe(MOSHI_MLX_BLAS="/nonexistent/libopenblas.so.0") == [
        "None",
        "True",
        hinted,
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="the route only exists on Linux")
def test_default_route_computes_the_same_products():
    loaded, exact, no_hint = _probe(MOSHI_MLX_BLAS="")
    assert exact == "True" and no_hint == ("True" if loaded != "None" else "False")
    assert loaded in ("None", "libopenblas.so.0", "libopenblasp.so.0")


@pytest.mark.skipif(sys.platform != "linux", reason="the route only exists on Linux")
def test_openblas_runs_on_one_thread_unless_told():
    probe = "import moshi_mlx; print(moshi_mlx.blas.loaded, moshi_mlx.blas.threads())"

    def run(**env: str) -> list[str]:
        return _run(probe, unset="OPENBLAS_NUM_THREADS", **env)

    loaded, count = run()
    if loaded == "None":
        pytest.skip("no system OpenBLAS here")
    assert count == "1"
    assert run(OPENBLAS_NUM_THREADS="2")[1] == "2"


def fake_cpuinfo(vendor: str, flags: str) -> str:
    return (
        f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: some CPU\n"
        f"flags\t\t: fpu sse2 avx2 fma {flags}\n\nprocessor\t: 1\n"
    )


def test_avx512_kernels_are_asked_for_on_amd_cpus_only():
    from moshi_mlx.blas import core_type

    full = "avx512f avx512cd avx512bw avx512dq avx512vl avx512_bf16"
    assert core_type(fake_cpuinfo("AuthenticAMD", full)) == "SkylakeX"
    # a subset missing: the SkylakeX kernels would not run
    assert core_type(fake_cpuinfo("AuthenticAMD", "avx512f avx512cd avx512bw")) is None
    # OpenBLAS detects Intel's AVX-512 CPUs itself
    assert core_type(fake_cpuinfo("GenuineIntel", full)) is None
    assert core_type("") is None


@pytest.mark.skipif(sys.platform != "linux", reason="the route only exists on Linux")
def test_the_users_core_type_wins():
    probe = "import moshi_mlx; print(moshi_mlx.blas.loaded, moshi_mlx.blas.core_name())"

    def run(**env: str) -> list[str]:
        return _run(probe, unset="OPENBLAS_CORETYPE", **env)

    loaded, chosen = run()
    if loaded == "None":
        pytest.skip("no system OpenBLAS here")
    from moshi_mlx.blas import core_type, read_cpuinfo

    if core_type(read_cpuinfo()) is not None:
        assert chosen == "SkylakeX"
    assert run(OPENBLAS_CORETYPE="Haswell")[1] == "Haswell"
