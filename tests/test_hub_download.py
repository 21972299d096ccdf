"""Downloads through the real huggingface_hub client from a fake hub on 127.0.0.1
(tests/fake_hub.py): cache layout, progress bar, a dropped connection resumed with a
Range request, an interrupted download, the cache reused with the server gone, and
one-line errors for a missing repo or file, a hub outage and a connection lost for good.

The repo holds the tiny fixture Moshi, so the `file` command runs on what it downloaded.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants as hf_constants
import huggingface_hub.file_download as hf_file_download
import huggingface_hub.utils._http as hf_http
import numpy as np
import pytest
import soundfile as sf
from fake_hub import COMMIT, FakeHub
from helpers import FIXTURES, RATE, espeak_clip

from moshi_mlx.checkpoints import MIMI_FILENAME, WeightRequest, resolve_checkpoint
from moshi_mlx.errors import WeightsError
from moshi_mlx.weights import hub_connection_error, hub_file, optional_hub_file

REPO = "moshi-tests/tiny-moshi"
REPO_FILES = {
    "config.json": FIXTURES / "lm" / "config.json",  # names model.safetensors
    "model.safetensors": FIXTURES / "lm" / "model.safetensors",  # 5.2 MB: LFS
    "tokenizer.model": FIXTURES / "lm" / "tokenizer.model",
    MIMI_FILENAME: FIXTURES / "mimi" / "mimi_small.safetensors",  # 1.9 MB: LFS
}
MIMI_CONFIG = FIXTURES / "mimi" / "mimi_small.json"
# huggingface_hub writes what it receives in chunks of 10 MiB and resumes after the
# last whole chunk; the fixture files are smaller, so the tests use 64 KiB chunks
CHUNK = 64 * 1024


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """huggingface_hub's pauses before retrying, recorded instead of slept (1 s before
    resuming a download, 1 to 8 s between retried requests)."""
    slept: list[float] = []
    clock = SimpleNamespace(sleep=slept.append)
    monkeypatch.setattr(hf_file_download, "time", clock)
    monkeypatch.setattr(hf_http, "time", clock)
    return slept


@pytest.fixture
def hub(hf_cache, pauses, monkeypatch):
    """The fake hub serving REPO, as this process's Hugging Face endpoint."""
    with FakeHub({REPO: REPO_FILES}) as server:
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(hf_constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
        hub_connection_error.cache_clear()
        yield server
    hub_connection_error.cache_clear()


def snapshot(cache: Path) -> Path:
    return cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT


def leftovers(cache: Path) -> list[Path]:
    """Partial downloads left in the cache."""
    return sorted(cache.rglob("*.incomplete"))


def test_first_download_lands_in_the_hub_cache_layout(hub, hf_cache):
    weights = hub_file(REPO, "model.safetensors")
    config = hub_file(REPO, "config.json")
    assert weights == snapshot(hf_cache) / "model.safetensors"
    assert config == snapshot(hf_cache) / "config.json"
    assert weights.read_bytes() == REPO_FILES["model.safetensors"].read_bytes()
    assert config.read_bytes() == REPO_FILES["config.json"].read_bytes()
    # snapshot entries link to content-addressed blobs; the branch names the commit
    assert weights.is_symlink() and weights.resolve().parent.name == "blobs"
    assert len(weights.resolve().name) == 64  # the LFS sha256 (X-Linked-Etag)
    repo_dir = hf_cache / f"models--{REPO.replace('/', '--')}"
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    # the weights came from the CDN the hub redirected to, in one piece
    fetched = [(s.server, s.method) for s in hub.seen if "model.safetensors" in s.path]
    assert fetched == [("hub", "HEAD"), ("cdn", "GET")]
    assert hub.gets("model.safetensors")[0].range is None


def test_dropped_connection_resumes_with_a_range_request(hub, hf_cache, pauses, caplog):
    hub.cut["model.safetensors"] = 1_000_000
    path = hub_file(REPO, "model.safetensors")
    assert path.read_bytes() == REPO_FILES["model.safetensors"].read_bytes()
    first, second = hub.gets("model.safetensors")
    assert first.range is None
    # resumed after the last whole chunk received before the cut
    resumed_at = 1_000_000 // CHUNK * CHUNK
    assert second.range == f"bytes={resumed_at}-"
    assert pauses == [1]
    assert "Trying to resume download" in caplog.text
    assert leftovers(hf_cache) == []


def test_interrupted_download_leaves_a_clean_cache_and_downloads_on_the_next_run(
    hub, hf_cache
):
    hub.interrupt["model.safetensors"] = 1_000_000  # Ctrl-C after 1 MB
    with pytest.raises(WeightsError) as err:
        hub_file(REPO, "model.safetensors")
    assert str(err.value) == (
        f"download of {REPO}/model.safetensors interrupted; run again to download it"
    )
    assert not (snapshot(hf_cache) / "model.safetensors").exists()
    assert leftovers(hf_cache) == []
    path = hub_file(REPO, "model.safetensors")
    assert path.read_bytes() == REPO_FILES["model.safetensors"].read_bytes()


def test_the_cache_is_used_with_the_server_gone(hub, hf_cache):
    request = WeightRequest(hf_repo=REPO, mimi_config=MIMI_CONFIG)
    online = resolve_checkpoint(request)  # config.json names the other files
    assert online.lm_config == snapshot(hf_cache) / "config.json"
    assert online.lm_weight == snapshot(hf_cache) / "model.safetensors"
    assert online.tokenizer == snapshot(hf_cache) / "tokenizer.model"
    assert online.mimi_weight == snapshot(hf_cache) / MIMI_FILENAME
    hub.stop()
    hub_connection_error.cache_clear()
    assert hub_connection_error() is not None  # the port now refuses connections
    assert resolve_checkpoint(request) == online
    assert resolve_checkpoint(WeightRequest(**{**vars(request), "offline": True})) == (
        online
    )


def test_memory_check_reads_the_size_before_downloading(hub):
    request = WeightRequest(hf_repo=REPO, mimi_config=MIMI_CONFIG)
    with pytest.raises(WeightsError, match=r"the model needs about \d+ MB but only"):
        resolve_checkpoint(request, available=1_000_000)
    assert hub.gets("model.safetensors") == []  # only its HEAD: X-Linked-Size


def test_missing_file_is_one_line(hub):
    with pytest.raises(WeightsError) as err:
        hub_file(REPO, "model.q8.safetensors")
    assert str(err.value) == f"{REPO} has no file model.q8.safetensors"


def test_missing_repo_is_one_line(hub):
    message = (
        "Hugging Face repo moshi-tests/nope not found (if it is private, log in with "
        "`hf auth login`)"
    )
    with pytest.raises(WeightsError) as err:
        hub_file("moshi-tests/nope", "model.safetensors")
    assert str(err.value) == message
    # through the command's path: its config.json is looked up first
    with pytest.raises(WeightsError) as err:
        resolve_checkpoint(WeightRequest(hf_repo="moshi-tests/nope"))
    assert str(err.value) == message


def test_absent_optional_file_is_none_online_and_then_offline(hub):
    assert optional_hub_file(REPO, "absent.json") is None
    assert optional_hub_file(REPO, "absent.json", offline=True) is None
    assert optional_hub_file(REPO, "config.json") is not None


def test_hub_outage_is_one_line(hub, pauses):
    hub.status["tokenizer.model"] = 503
    with pytest.raises(WeightsError) as err:
        hub_file(REPO, "tokenizer.model")
    assert str(err.value) == (
        f"could not download {REPO}/tokenizer.model and it is not cached: "
        f"{hub.endpoint} answered HTTP 503 Service Unavailable; try again later or "
        "pass a local file"
    )
    assert len(pauses) == 5  # huggingface_hub retried before giving up


def test_connection_lost_for_good_is_one_line(hub, hf_cache, pauses):
    hub.drop.add("model.safetensors")
    with pytest.raises(WeightsError) as err:
        hub_file(REPO, "model.safetensors")
    assert str(err.value) == (
        f"download of {REPO}/model.safetensors failed (Server disconnected without "
        "sending a response); run again to download it"
    )
    assert pauses == [1] * 5  # five attempts to resume
    assert not (snapshot(hf_cache) / "model.safetensors").exists()
    assert leftovers(hf_cache) == []


# ---------------------------------------------------------------- the command


def run_in_terminal(args: list[str], env: dict, cwd: Path) -> tuple[int, str, str]:
    """Run `python -m moshi_mlx ARGS` with stderr on a 120-column pseudo-terminal, as
    in a user's shell (huggingface_hub draws its bars only on a terminal)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "moshi_mlx", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(leader)
    return process.returncode, stdout, b"".join(chunks).decode(errors="replace")


def test_file_command_downloads_with_progress_then_runs_from_the_cache(tmp_path):
    """`file --hf-repo` against the fake hub, then the same with the hub gone."""
    sf.write(str(tmp_path / "in.wav"), espeak_clip(), RATE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf")

    def answer(name: str) -> tuple[int, str, str]:
        args = [
            "file", str(tmp_path / "in.wav"), str(tmp_path / name),
            "--hf-repo", REPO, "--mimi-config", str(MIMI_CONFIG),
            "--text-temperature", "0", "--audio-temperature", "0",
        ]  # fmt: skip
        return run_in_terminal(args, env, tmp_path)

    with FakeHub({REPO: REPO_FILES}) as hub:
        env["HF_ENDPOINT"] = hub.endpoint
        code, stdout, bars = answer("online.wav")
    assert code == 0, bars
    assert "19 frames" in stdout, stdout
    assert re.search(r"model\.safetensors: 100%\|.*\| 5\.19M/5\.19M", bars), bars
    assert re.search(r"checkpoint125\.safetensors: 100%\|.*\| 1\.86M/1\.86M", bars)
    assert {Path(s.path).name for s in hub.seen if s.method == "HEAD"} >= {*REPO_FILES}
    cached = Path(env["HF_HOME"]) / "hub"
    assert (snapshot(cached) / "model.safetensors").read_bytes() == (
        REPO_FILES["model.safetensors"].read_bytes()
    )

    code, stdout, stderr = answer("offline.wav")  # the hub's ports refuse now
    assert code == 0, stderr
    assert "100%" not in stderr and "Traceback" not in stderr
    online = sf.read(str(tmp_path / "online.wav"))[0]
    np.testing.assert_array_equal(online, sf.read(str(tmp_path / "offline.wav"))[0])
