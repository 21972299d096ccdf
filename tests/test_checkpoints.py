"""Weight resolution: official repo/file names, HF cache lookups, overrides, memory."""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from helpers import RATE, fixture_request, run_cli, tiny_request

from moshi_mlx.checkpoints import (
    MIMI_FILENAME,
    TOKENIZER_FILENAME,
    WeightRequest,
    official_repo,
    quantization_for,
    resolve_checkpoint,
)
from moshi_mlx.errors import ConfigError, WeightsError
from moshi_mlx.memory import (
    GB,
    CompanionModel,
    MemoryEstimate,
    check_memory,
    float32_plan,
)
from moshi_mlx.weights import QUANTIZATIONS, hub_connection_error, hub_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "voice, quantized, repo, filename",
    [
        pytest.param(
            "moshiko", "4", "kyutai/moshiko-mlx-q4", "model.q4.safetensors", id="ko-q4"
        ),
        pytest.param(
            "moshiko", "8", "kyutai/moshiko-mlx-q8", "model.q8.safetensors", id="ko-q8"
        ),
        pytest.param(
            "moshika",
            "bf16",
            "kyutai/moshika-mlx-bf16",
            "model.safetensors",
            id="ka-bf16",
        ),
        pytest.param(
            "moshika", "4", "kyutai/moshika-mlx-q4", "model.q4.safetensors", id="ka-q4"
        ),
    ],
)
def test_official_repo_and_file(voice, quantized, repo, filename):
    assert official_repo(voice, quantized) == repo
    assert quantization_for(quantized).filename == filename


def test_quantization_layouts():
    assert QUANTIZATIONS["4"].quantize == (4, 32)
    assert QUANTIZATIONS["8"].quantize == (8, 64)
    assert QUANTIZATIONS["bf16"].quantize is None


def test_unknown_quantization_names_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"--quantized 3 is not supported; use one of 4, 8, bf16"
    ):
        quantization_for("3")


def populate(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """Lay out `files` as huggingface_hub stores a downloaded snapshot; its folder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        (snapshot / name).symlink_to(source)
    return snapshot


def test_official_files_come_from_the_hf_cache(hf_cache, lm_fixtures, mimi_fixtures):
    snapshot = populate(
        hf_cache,
        "kyutai/moshika-mlx-q8",
        {
            "model.q8.safetensors": lm_fixtures / "model.q8.safetensors",
            TOKENIZER_FILENAME: lm_fixtures / "tokenizer.model",
            MIMI_FILENAME: mimi_fixtures / "mimi_small.safetensors",
        },
    )
    request = WeightRequest(
        voice="moshika", quantized="8", offline=True, memory_check=False
    )
    ckpt = resolve_checkpoint(request)
    assert ckpt.lm_weight == snapshot / "model.q8.safetensors"
    assert ckpt.tokenizer == snapshot / TOKENIZER_FILENAME
    assert ckpt.mimi_weight == snapshot / MIMI_FILENAME
    assert ckpt.lm_config is None  # the official repos have no config.json
    assert ckpt.quantization == QUANTIZATIONS["8"]


def test_repo_config_names_the_files(hf_cache, lm_fixtures, mimi_fixtures, monkeypatch):
    snapshot = populate(
        hf_cache,
        "me/tiny-moshi",
        {
            "config.json": lm_fixtures
            / "config.json",  # moshi_name / tokenizer_name inside
            "model.safetensors": lm_fixtures / "model.safetensors",
            "tokenizer.model": lm_fixtures / "tokenizer.model",
            MIMI_FILENAME: mimi_fixtures / "mimi_small.safetensors",
        },
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = resolve_checkpoint(
        WeightRequest(hf_repo="me/tiny-moshi", memory_check=False)
    )
    assert ckpt.lm_config == snapshot / "config.json"
    assert ckpt.lm_weight == snapshot / "model.safetensors"
    assert ckpt.tokenizer == snapshot / "tokenizer.model"
    assert ckpt.quantization is None  # a custom repo: the file says how it is stored


def test_offline_missing_file_is_named(hf_cache):
    with pytest.raises(WeightsError) as err:
        resolve_checkpoint(WeightRequest(offline=True, memory_check=False))
    message = str(err.value)
    assert "kyutai/moshiko-mlx-q4/" in message and "offline" in message
    assert "\n" not in message


def test_local_overrides_skip_the_hub(hf_cache, lm_fixtures, mimi_fixtures):
    request = tiny_request(
        moshi_weight=lm_fixtures / "model.q4.safetensors", memory_check=False
    )
    ckpt = resolve_checkpoint(request)
    assert ckpt.lm_weight == lm_fixtures / "model.q4.safetensors"
    assert ckpt.mimi_config == mimi_fixtures / "mimi_small.json"
    assert ckpt.quantization is None
    with_flag = resolve_checkpoint(
        WeightRequest(**{**request.__dict__, "quantized": "4"})
    )
    assert with_flag.quantization == QUANTIZATIONS["4"]


def test_missing_local_file_names_the_flag(hf_cache, tmp_path):
    with pytest.raises(
        WeightsError, match=r"--tokenizer .*nope\.model: file not found"
    ):
        resolve_checkpoint(
            WeightRequest(tokenizer=tmp_path / "nope.model", offline=True)
        )


@pytest.mark.parametrize(
    "field, value, message",
    [
        pytest.param("voice", "moshiro", "--voice moshiro is unknown", id="voice"),
        pytest.param("dtype", "int8", "--dtype int8 is not supported", id="dtype"),
        pytest.param(
            "quantized", "2", "--quantized 2 is not supported", id="quantized"
        ),
    ],
)
def test_bad_flags(field, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_checkpoint(WeightRequest(**{field: value}))


def q8_session() -> MemoryEstimate:
    """Moshi 7B in q8 with Mimi and a 3000-step bf16 KV cache."""
    params = 7.69e9
    return MemoryEstimate(
        lm_weights=params * QUANTIZATIONS["8"].bits_per_weight / 8,
        mimi_weights=0.385 * GB,
        kv_cache=2 * 32 * 3000 * 4096 * 2,
        lm_params=params,
    )


def test_memory_estimate_matches_the_published_sizes():
    estimate = q8_session()
    assert estimate.lm_weights / GB == pytest.approx(8.17, abs=0.05)
    assert estimate.as_quantization(
        QUANTIZATIONS["4"]
    ).lm_weights / GB == pytest.approx(4.81, abs=0.05)
    assert estimate.as_quantization(
        QUANTIZATIONS["bf16"]
    ).lm_weights / GB == pytest.approx(15.38, abs=0.05)


def test_memory_check_suggests_a_smaller_quantization():
    estimate = q8_session()
    check_memory(estimate, QUANTIZATIONS["8"], available=int(16 * GB))
    with pytest.raises(WeightsError, match=r"--quantized 4 would fit"):
        check_memory(estimate, QUANTIZATIONS["8"], available=int(8 * GB))
    with pytest.raises(WeightsError, match=r"no smaller quantization would fit"):
        check_memory(estimate, QUANTIZATIONS["8"], available=int(3 * GB))
    bf16 = estimate.as_quantization(QUANTIZATIONS["bf16"])
    with pytest.raises(
        WeightsError, match=r"needs about 19\.\d GB .*--quantized 8 would fit"
    ):
        check_memory(bf16, QUANTIZATIONS["bf16"], available=int(12 * GB))


def test_resolution_checks_memory_before_loading(lm_fixtures, mimi_fixtures):
    request = WeightRequest(
        moshi_weight=lm_fixtures / "model.safetensors",
        lm_config=lm_fixtures / "config.json",
        tokenizer=lm_fixtures / "tokenizer.model",
        mimi_weight=mimi_fixtures / "mimi_small.safetensors",
        offline=True,
    )
    resolve_checkpoint(request, available=int(1 * GB))
    # 1.1 x (bf16 weights 5.2 MB + Mimi 1.9 MB + KV cache 6.1 MB),
    # KV cache = 2 x 2 layers x 3000 steps x 256 x 2 B
    with pytest.raises(
        WeightsError,
        match=r"needs about 15 MB but only 12 MB .*--quantized 8 would fit",
    ):
        resolve_checkpoint(request, available=12_000_000)
    skipped = WeightRequest(**{**request.__dict__, "memory_check": False})
    assert resolve_checkpoint(skipped, available=1).lm_weight == request.moshi_weight


def test_float32_plan_takes_the_parts_that_fit(monkeypatch):
    """Depformer, temporal layers, text head in order, while the estimate fits."""
    from moshi_mlx.lm import float32 as lm_float32

    monkeypatch.setattr(lm_float32, "applies", lambda: True)
    bf16 = q8_session().as_quantization(QUANTIZATIONS["bf16"])
    plan = float32_plan(bf16, None, QUANTIZATIONS["bf16"], "bfloat16", int(23 * GB))
    # 23 GB / 1.1 = 20.9 GB: the published bf16 7B + KV + Mimi 17.3 GB, the
    # depformer +1.33 GB, then 4096 x (4 x 4096 + 3 x 11264) parameters a layer
    # (+0.41 GB each): 5 layers, and no room left for the text head (+0.26 GB)
    assert plan == ("depformer", *(f"transformer.layers.{i}" for i in range(5)))
    grown = float32_plan(bf16, None, QUANTIZATIONS["bf16"], "bfloat16", int(40 * GB))
    assert len(grown) == 1 + 32 + 1 and grown[-1] == "text_linear"

    def plan(dtype: str, gb: float) -> tuple[str, ...]:
        return float32_plan(bf16, None, QUANTIZATIONS["bf16"], dtype, int(gb * GB))

    assert plan("bfloat16", 17) == ()  # only the model itself fits
    assert plan("float32", 40) == ()
    monkeypatch.setattr(lm_float32, "applies", lambda: False)
    assert plan("bfloat16", 40) == ()


def stt_companion_of(stt_fixtures: Path) -> CompanionModel:
    return CompanionModel(
        "speech-to-text",
        "--user-transcript",
        stt_fixtures / "model.safetensors",
        stt_fixtures / "config.json",
        "bfloat16",
    )


def test_memory_check_counts_the_user_transcript_model(
    lm_fixtures, mimi_fixtures, stt_fixtures
):
    request = WeightRequest(
        moshi_weight=lm_fixtures / "model.safetensors",
        lm_config=lm_fixtures / "config.json",
        tokenizer=lm_fixtures / "tokenizer.model",
        mimi_weight=mimi_fixtures / "mimi_small.safetensors",
        offline=True,
    )
    stt = (stt_companion_of(stt_fixtures),)
    # Moshi alone: 1.1 x 13.2 MB (see above) = 14.5 MB, fits in 15 MB; the STT adds
    # 1.1 x (bf16 weights 3.85 MB + KV cache 1.5 MB = 2 x 2 layers x 750 steps x 256
    # x 2 B); with Moshi in q4 (1.6 MB) both would take 16.5 MB
    resolve_checkpoint(request, available=15_000_000)
    with pytest.raises(WeightsError) as err:
        resolve_checkpoint(request, available=15_000_000, companions=stt)
    assert str(err.value) == (
        "the models need about 20 MB (Moshi 15 MB, speech-to-text 6 MB) but only "
        "15 MB of memory is available; without --user-transcript Moshi alone would "
        "fit (or pass --no-memory-check to try anyway)"
    )
    with pytest.raises(
        WeightsError, match=r"need about 20 MB .*--quantized 4 would fit"
    ):
        resolve_checkpoint(request, available=17_000_000, companions=stt)
    resolve_checkpoint(request, available=21_000_000, companions=stt)


def test_memory_check_with_a_companion_suggests_a_smaller_moshi():
    estimate = q8_session()
    stt = (("speech-to-text", "--user-transcript", 2.4 * GB),)
    both = MemoryEstimate(**{**estimate.__dict__, "companions": stt})
    check_memory(estimate, QUANTIZATIONS["8"], available=int(12 * GB))  # 11.1 GB
    with pytest.raises(
        WeightsError,
        match=r"Moshi 11\.1 GB, speech-to-text 2\.6 GB\).*--quantized 4 would fit",
    ):
        check_memory(both, QUANTIZATIONS["8"], available=int(12 * GB))
    with pytest.raises(WeightsError, match=r"no smaller quantization would fit either"):
        check_memory(both, QUANTIZATIONS["8"], available=int(8 * GB))


def test_chat_counts_the_user_transcript_before_loading(monkeypatch):
    """`chat --user-transcript`: the STT model's weights are in the memory check."""
    from moshi_mlx import checkpoints
    from moshi_mlx.app.chat import ChatOptions, run_chat
    from moshi_mlx.audio import duplex
    from moshi_mlx.lm import SamplingSettings

    monkeypatch.setattr(duplex, "DuplexAudio", lambda *args, **kwargs: None)
    monkeypatch.setattr(checkpoints, "available_memory", lambda: 15_000_000)
    with pytest.raises(WeightsError, match=r"\(Moshi 15 MB, speech-to-text \d+ MB\)"):
        run_chat(
            tiny_request(),
            SamplingSettings(),
            ChatOptions(ui=False),
            stt=fixture_request(dtype="bfloat16"),
        )


def test_custom_repo_name_gives_the_file_format(hf_cache, lm_fixtures, mimi_fixtures):
    snapshot = populate(
        hf_cache,
        "someone/moshika-mlx-q8",
        {
            "model.q8.safetensors": lm_fixtures / "model.q8.safetensors",
            TOKENIZER_FILENAME: lm_fixtures / "tokenizer.model",
            MIMI_FILENAME: mimi_fixtures / "mimi_small.safetensors",
        },
    )
    request = WeightRequest(
        hf_repo="someone/moshika-mlx-q8", offline=True, memory_check=False
    )
    assert resolve_checkpoint(request).lm_weight == snapshot / "model.q8.safetensors"


def test_interrupted_download_says_run_again(hf_cache, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    with pytest.raises(
        WeightsError,
        match=r"download of kyutai/moshiko-mlx-q4/.* interrupted; run again",
    ):
        resolve_checkpoint(WeightRequest(memory_check=False))


# ---------------------------------------------------------------- no network


class FakeSession:
    """huggingface_hub's HTTP session: HEAD answers, or fails like a dead network."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.heads: list[str] = []

    def head(self, url: str, timeout: float):
        self.heads.append(url)
        if self.error is not None:
            raise self.error
        return object()


@pytest.fixture
def hub_session(monkeypatch):
    """Install a FakeSession (`hub_session(error)`); the probe's memory is cleared."""

    def install(error: Exception | None) -> FakeSession:
        session = FakeSession(error)
        monkeypatch.setattr(huggingface_hub, "get_session", lambda: session)
        hub_connection_error.cache_clear()
        return session

    yield install
    hub_connection_error.cache_clear()


def test_unreachable_hub_uses_the_cache_quietly(
    hf_cache, hub_session, lm_fixtures, caplog
):
    snapshot = populate(
        hf_cache,
        "kyutai/moshiko-mlx-q4",
        {"tokenizer.model": lm_fixtures / "tokenizer.model"},
    )
    session = hub_session(OSError("[Errno -2] Name or service not known"))
    assert hub_file("kyutai/moshiko-mlx-q4", "tokenizer.model") == (
        snapshot / "tokenizer.model"
    )
    with pytest.raises(WeightsError) as err:
        hub_file("kyutai/moshiko-mlx-q4", "missing.safetensors")
    assert str(err.value) == (
        "could not download kyutai/moshiko-mlx-q4/missing.safetensors: no network and "
        "not cached (https://huggingface.co: [Errno -2] Name or service not known); "
        "connect to the internet or pass a local file"
    )
    assert len(session.heads) == 1  # probed once per process
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_reachable_hub_downloads_as_usual(hf_cache, hub_session, monkeypatch, tmp_path):
    calls = []

    def download(repo, filename, local_files_only):
        calls.append((repo, filename, local_files_only))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    hub_session(None)
    assert hub_file("me/repo", "model.safetensors") == tmp_path / "model.safetensors"
    assert hub_file("me/repo", "model.safetensors", offline=True)
    assert calls == [
        ("me/repo", "model.safetensors", False),  # online: progress bar and resume
        ("me/repo", "model.safetensors", True),
    ]


def test_chat_resolution_without_network_stops_before_any_retry(hf_cache, hub_session):
    hub_session(OSError("Network is unreachable"))
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"no network and not cached \(https://"):
        resolve_checkpoint(WeightRequest())  # config.json, memory check, tokenizer
    assert time.monotonic() - start < 1.0


def test_codec_without_network_fails_fast_in_one_line(tmp_path):
    """No network, nothing cached, no --offline: one line in seconds, no retries."""
    hub_connection_error.cache_clear()
    if hub_connection_error() is None:
        pytest.skip("this machine reaches the Hugging Face hub")
    with wave.open(str(tmp_path / "in.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.zeros(2400, np.int16).tobytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf")
    start = time.monotonic()
    result = run_cli(
        "codec", tmp_path / "in.wav", tmp_path / "out.wav", env=env, timeout=60
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    assert result.stdout.strip() == ""  # (the transient progress bar leaves a newline)
    assert result.stderr.startswith("error: could not download kyutai/")
    assert "no network and not cached" in result.stderr
    assert result.stderr.count("\n") == 1  # no warnings, no retry lines, no traceback
    assert elapsed < 10, elapsed  # huggingface_hub alone retries for about 25 s
