"""Peak memory of `moshi-mlx file` against the recording's length (fixture Moshi).

Writes recordings of the given lengths (the Mimi fixture's speech clip, repeated, as
48 kHz stereo 16-bit WAV like a typical recording) and runs
`python -m moshi_mlx file IN OUT --stereo --transcript T` on each in a fresh process,
reading that process's peak RSS (ru_maxrss from wait4). Target: 5 minutes within
1.25 x the peak of 1 minute.

    uv run python benchmarks/file_memory.py --minutes 1 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import soundfile as sf

from moshi_mlx.audio.files import resample
from moshi_mlx.benchmark.report import print_table, write_json

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
INPUT_RATE = 48000
# the fixture Moshi, greedy (the same answer every run)
FIXTURE_FILES = {
    "--moshi-weight": "lm/model.safetensors",
    "--lm-config": "lm/config.json",
    "--tokenizer": "lm/tokenizer.model",
    "--mimi-weight": "mimi/mimi_small.safetensors",
    "--mimi-config": "mimi/mimi_small.json",
}
TINY_FLAGS = [
    *(arg for flag, name in FIXTURE_FILES.items() for arg in (flag, FIXTURES / name)),
    *("--text-temperature", "0", "--audio-temperature", "0"),
]


def write_speech(path: Path, minutes: float) -> None:
    """`minutes` of the fixture speech (with pauses) as 48 kHz stereo PCM_16."""
    clip = np.array(mx.load(str(FIXTURES / "mimi/mimi_small_ref.safetensors"))["pcm"])
    clip = np.concatenate([clip.reshape(-1), np.zeros(12000, np.float32)])
    clip = resample(clip, 24000, INPUT_RATE)
    samples = round(minutes * 60 * INPUT_RATE)
    with sf.SoundFile(str(path), "w", INPUT_RATE, 2, subtype="PCM_16") as f:
        for start in range(0, samples, clip.size):
            block = clip[: samples - start]
            f.write(np.stack([block, block], axis=1))


def peak_rss_mib(args: list[str], cwd: Path) -> tuple[float, float]:
    """Run `python args...` in `cwd`; its peak RSS in MiB and its wall time."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited with {process.returncode}")
    # ru_maxrss is in bytes on macOS, in KiB on Linux
    rss = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    return rss, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0])
    parser.add_argument(
        "--code",
        type=Path,
        default=REPO,
        help="run the moshi_mlx package of this checkout (e.g. an older one)",
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks/out/file_memory.json"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            source = Path(tmp) / f"speech_{minutes:g}min.wav"
            write_speech(source, minutes)
            out, transcript = Path(tmp) / "answer.wav", Path(tmp) / "answer.json"
            command = ["-m", "moshi_mlx", "file", str(source), str(out), "--stereo"]
            command += ["--transcript", str(transcript), *map(str, TINY_FLAGS)]
            rss, wall = peak_rss_mib(command, args.code)
            rows.append({"minutes": minutes, "peak_rss_mib": round(rss, 1),
                         "wall_s": round(wall, 1)})  # fmt: skip
            print(f"{minutes:g} min: peak RSS {rss:.0f} MiB ({wall:.0f} s)", flush=True)
    base = rows[0]["peak_rss_mib"]
    for row in rows:
        row["ratio"] = round(row["peak_rss_mib"] / base, 3)
    print_table(
        f"moshi-mlx file: peak RSS against length ({args.code})",
        ["minutes", "peak RSS MiB", f"x {rows[0]['minutes']:g} min", "wall s"],
        [[r["minutes"], r["peak_rss_mib"], r["ratio"], r["wall_s"]] for r in rows],
    )
    write_json(
        args.json,
        {
            "command": " ".join(
                ["uv run python benchmarks/file_memory.py", *sys.argv[1:]]
            ),
            "code": str(args.code),
            "load_average": os.getloadavg(),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
