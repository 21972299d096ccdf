"""The quantization benchmark: speed, memory and quality of each level vs float.

Flow: read the speech clip; run it through Mimi (timing the streaming codec and
measuring reconstruction at each number of codebooks); let the float LM
answer it with the sampling settings, recording its logits (the reference);
then for each level build the LM, time free-running steps and the temporal
layers, replay the reference tokens (teacher forcing) to compare logits, and
free it before the next level.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import mlx.core as mx
import numpy as np

from .. import accelerator
from ..checkpoints import WeightRequest
from ..errors import ConfigError
from ..lm import DEFAULT_ALIGNMENT, Lm, LmConfig, LmGen, SamplingSettings
from ..lm.loading import float_shapes
from ..mimi import Mimi, open_mimi
from ..mimi.transcode import transcode
from ..weights import check_dtype
from . import measure, metrics
from .levels import Level, level_spec, parse_level
from .models import (
    BuiltLm,
    LmSource,
    build_lm,
    layer_bytes,
    parameter_bytes,
    record_run,
    replay,
)
from .sources import BenchOptions, Sources, fit_frames, read_clip, resolve_sources

REFERENCE_LEVEL = Level("reference", None, None)


class Progress(Protocol):
    """Receives progress: which level is being measured, and frames within a phase."""

    def level(self, name: str, index: int, count: int) -> None: ...

    def frames(self, phase: str, done: int, total: int) -> None: ...


class _Silent:
    def level(self, name: str, index: int, count: int) -> None:
        pass

    def frames(self, phase: str, done: int, total: int) -> None:
        pass


def _free() -> None:
    gc.collect()
    mx.clear_cache()


def measure_mimi(
    mimi: Mimi, pcm: np.ndarray, warmup: int, progress: Progress
) -> tuple[dict, np.ndarray]:
    """Streaming encode/decode ms, reconstruction quality and the user codes (F, K)."""
    if warmup:
        transcode(mimi, pcm[: warmup * mimi.frame_size])
    streamed = transcode(
        mimi, pcm, lambda done, total: progress.frames("Mimi streaming", done, total)
    )
    rate = mimi.config.sample_rate
    codes = mimi.encode(mx.array(pcm)[None], mimi.max_codebooks)  # (1, max, F)
    reconstruction = []
    for k in range(1, mimi.max_codebooks + 1):
        out = np.array(mimi.decode(codes[:, :k]))[0, : len(pcm)]
        reconstruction.append(
            {
                "codebooks": k,
                "snr_db": metrics.snr_db(pcm, out),
                "mel_distance": metrics.mel_distance(pcm, out, rate),
            }
        )
        progress.frames("Mimi codebooks", k, mimi.max_codebooks)
    result = {
        "parameter_bytes": parameter_bytes(mimi),
        "encode": measure.timing(streamed.encode_ms),
        "decode": measure.timing(streamed.decode_ms),
        "reconstruction": reconstruction,
    }
    return result, streamed.codes.T


@dataclass
class Reference:
    """The float model's run on the clip: tokens (replayed) and logits (compared)."""

    text_tokens: list[mx.array]
    audio_tokens: list[mx.array]
    text_logits: np.ndarray  # (F, text_card)
    audio_logits: np.ndarray  # (F, dep_q, card)


def reference_run(
    source: LmSource,
    dtype: mx.Dtype,
    user_codes: np.ndarray,
    sampling: SamplingSettings,
    alignment: str,
    progress: Progress,
) -> Reference:
    """Let the float model answer the clip with the sampling settings; record logits."""
    model = build_lm(source, REFERENCE_LEVEL, dtype).model
    text, audio = record_run(
        model,
        user_codes,
        *sampling.samplers(),
        seed=sampling.seed,
        alignment=alignment,
        on_frame=lambda done, total: progress.frames("reference (float)", done, total),
    )
    dep_q = source.config.dep_q
    return Reference(
        text.tokens,
        audio.tokens,
        text.stacked(),
        audio.stacked().reshape(len(user_codes), dep_q, -1),
    )


def time_lm_steps(
    model: Lm,
    user_codes: np.ndarray,
    sampling: SamplingSettings,
    alignment: str,
    warmup: int,
    progress: Progress,
) -> np.ndarray:
    """ms of each free-running LmGen step (temporal, text head, depformer)."""
    gen = LmGen(model, *sampling.samplers(), seed=sampling.seed, alignment=alignment)
    for codes in user_codes[:warmup]:
        gen.step(mx.array(codes))
        mx.synchronize()
    gen.reset()
    ms = np.empty(len(user_codes))
    for i, codes in enumerate(user_codes):
        start = time.perf_counter()
        gen.step(mx.array(codes))
        mx.synchronize()
        ms[i] = (time.perf_counter() - start) * 1000
        progress.frames("LM steps", i + 1, len(user_codes))
    return ms


def time_temporal_layers(model: Lm, steps: int, warmup: int) -> np.ndarray:
    """ms of one frame through the temporal layers alone (as the cache fills)."""
    cache = model.make_cache(1)
    x = mx.random.normal((1, 1, model.cfg.dim), key=mx.random.key(0)).astype(
        model.dtype
    )
    return measure.time_steps(lambda: model.transformer(x, cache), steps, warmup)


def compare(
    reference: Reference, text_logits: np.ndarray, audio_logits: np.ndarray
) -> dict:
    """Top-1 agreement and mean KL of text and each audio codebook vs the reference."""
    audio_logits = audio_logits.reshape(reference.audio_logits.shape)
    books = range(audio_logits.shape[1])
    audio_top1 = [
        metrics.top1_agreement(reference.audio_logits[:, k], audio_logits[:, k])
        for k in books
    ]
    audio_kl = [
        metrics.mean_kl(reference.audio_logits[:, k], audio_logits[:, k]) for k in books
    ]
    return {
        "text_top1": metrics.top1_agreement(reference.text_logits, text_logits),
        "text_kl": metrics.mean_kl(reference.text_logits, text_logits),
        "audio_top1": audio_top1,
        "audio_kl": audio_kl,
        "audio_top1_mean": float(np.mean(audio_top1)),
        "audio_kl_mean": float(np.mean(audio_kl)),
    }


def measure_level(
    source: LmSource,
    level: Level,
    dtype: mx.Dtype,
    user_codes: np.ndarray,
    reference: Reference,
    sampling: SamplingSettings,
    alignment: str,
    warmup: int,
    progress: Progress,
) -> dict:
    """Build one level, time it, compare its logits with the reference, then free it."""
    _free()
    mx.reset_peak_memory()
    built, load_s = _timed_build(source, level, dtype)
    model = built.model
    steps = time_lm_steps(model, user_codes, sampling, alignment, warmup, progress)
    per_layer = (
        time_temporal_layers(model, len(user_codes), warmup) / model.cfg.num_layers
    )
    quality = replay_quality(model, user_codes, reference, alignment, progress)
    result = {
        "level": level.name,
        "quantization": level.describe(),
        "origin": built.origin,
        "disk_bytes": built.disk_bytes,
        "memory_bytes": parameter_bytes(model),
        "peak_memory_bytes": mx.get_peak_memory(),
        "load_s": load_s,
        "lm_step": measure.frame_timing(steps),
        # one temporal transformer layer
        "temporal_layer": {
            **measure.timing(per_layer),
            "disk_bytes": built.layer_disk_bytes,
            "memory_bytes": layer_bytes(model),
        },
        "quality": quality,
    }
    del model, built
    _free()
    return result


def _timed_build(
    source: LmSource, level: Level, dtype: mx.Dtype
) -> tuple[BuiltLm, float]:
    """`build_lm` and the seconds it took."""
    start = time.perf_counter()
    built = build_lm(source, level, dtype)
    return built, time.perf_counter() - start


def replay_quality(
    model: Lm,
    user_codes: np.ndarray,
    reference: Reference,
    alignment: str,
    progress: Progress,
) -> dict:
    """Replay the reference tokens through `model`; `compare` its logits."""
    text, audio = record_run(
        model,
        user_codes,
        replay(reference.text_tokens),
        replay(reference.audio_tokens),
        alignment=alignment,
        on_frame=lambda done, total: progress.frames(
            "teacher-forced replay", done, total
        ),
    )
    return compare(reference, text.stacked(), audio.stacked())


def add_frame_figures(
    result: dict, mimi_ms: float, layers: int, full_layers: int
) -> None:
    """Frame cost (LM step + Mimi encode + decode) and, if truncated, at full depth."""
    layer = result["temporal_layer"]
    lm_ms = result["lm_step"]["median_ms"]
    result["frame"] = _frame(lm_ms + mimi_ms)
    if layers < full_layers:
        extra = full_layers - layers
        full_lm_ms = lm_ms + extra * layer["median_ms"]
        result["extrapolated"] = {
            "num_layers": full_layers,
            "lm_step_median_ms": full_lm_ms,
            **_frame(full_lm_ms + mimi_ms),
            "disk_bytes": result["disk_bytes"] + extra * layer["disk_bytes"],
            "memory_bytes": result["memory_bytes"] + extra * layer["memory_bytes"],
        }


def _frame(ms: float) -> dict[str, float]:
    return {"median_ms": ms, "rtf": ms / measure.FRAME_MS, "frames_per_s": 1000 / ms}


def run_benchmark(
    request: WeightRequest,
    sampling: SamplingSettings,
    options: BenchOptions,
    progress: Progress | None = None,
    alignment: str = DEFAULT_ALIGNMENT,
) -> dict:
    """Measure every level of `options`; returns the JSON-ready results.

    `alignment`: when the LM reads the user's frames (see `LmGen`).
    """
    progress = progress or _Silent()
    levels, sources = _plan(request, options)
    source = sources.lm
    dtype = getattr(mx, request.dtype)
    clip = measure_clip(sources, options, progress)
    codes = clip.user_codes
    reference = reference_run(source, dtype, codes, sampling, alignment, progress)
    _free()
    results = [
        measure_level(
            source,
            level,
            dtype,
            codes,
            reference,
            sampling,
            alignment,
            options.warmup,
            progress,
        )
        for level in _announced(levels, progress)
    ]
    mimi_ms = clip.mimi["encode"]["median_ms"] + clip.mimi["decode"]["median_ms"]
    for result in results:
        add_frame_figures(result, mimi_ms, source.config.num_layers, source.full_layers)
    return _results(sources, request.dtype, sampling, alignment, clip, results)


def _plan(request: WeightRequest, options: BenchOptions) -> tuple[list[Level], Sources]:
    """The distinct levels and their sources; refuses what cannot be built."""
    levels = list(dict.fromkeys(parse_level(name) for name in options.levels))
    check_dtype(request.dtype)
    sources = resolve_sources(request, options, levels)
    shapes = float_shapes(sources.lm.config)
    for level in levels:
        # refuse a level that cannot be built before any work
        level_spec(level, shapes)
    return levels, sources


def _announced(levels: list[Level], progress: Progress) -> Iterator[Level]:
    """Yield each level after telling `progress`; then report all of them done."""
    for i, level in enumerate(levels):
        progress.level(level.name, i, len(levels))
        yield level
    progress.level("", len(levels), len(levels))


@dataclass
class Clip:
    """The speech clip as the LM hears it, and Mimi's figures on it."""

    # where the clip came from
    name: str
    looped: bool
    # (F, K) user codes
    user_codes: np.ndarray
    # `measure_mimi`'s result with "weights" (where Mimi's weights came from)
    mimi: dict


def measure_clip(sources: Sources, options: BenchOptions, progress: Progress) -> Clip:
    """Open Mimi, read and fit the clip, measure Mimi on it, then free Mimi."""
    cfg = sources.lm.config
    mimi = open_mimi(
        sources.mimi_weight,
        sources.mimi_config,
        cfg.user_codebooks,
        seed=options.weight_seed,
    )
    if sources.mimi_weight is None:
        mimi_origin = f"random weights (seed {options.weight_seed})"
    else:
        mimi_origin = str(sources.mimi_weight)
    if mimi.config.quantizer.bins != cfg.card:
        raise ConfigError(
            f"Mimi has {mimi.config.quantizer.bins} codes per codebook but the LM "
            f"expects {cfg.card}; pass the matching --mimi-weight / --mimi-config"
        )
    pcm, name = read_clip(options.wav, mimi.config.sample_rate)
    pcm, looped = fit_frames(pcm, mimi.frame_size, options.frames)
    mimi_result, user_codes = measure_mimi(mimi, pcm, options.warmup, progress)
    mimi_result["weights"] = mimi_origin
    del mimi
    _free()
    return Clip(name, looped, user_codes, mimi_result)


def _results(
    sources: Sources,
    dtype: str,
    sampling: SamplingSettings,
    alignment: str,
    clip: Clip,
    levels: list[dict],
) -> dict:
    """The JSON-ready results of `run_benchmark`."""
    source, cfg = sources.lm, sources.lm.config
    return {
        "benchmark": "quantization",
        "weights": {
            "lm": source.description,
            "random": sources.random,
            "mimi": clip.mimi["weights"],
        },
        "config": {
            "num_layers": cfg.num_layers,
            "full_num_layers": source.full_layers,
            "dim": cfg.dim,
            "text_card": cfg.text_card,
            "card": cfg.card,
            "dep_q": cfg.dep_q,
        },
        "dtype": dtype,
        "device": str(mx.default_device()),
        "clip": clip.name,
        "frames": len(clip.user_codes),
        "looped": clip.looped,
        "sampling": {**dataclasses.asdict(sampling), "alignment": alignment},
        "mimi": clip.mimi,
        "levels": levels,
        "notes": notes(sources, cfg, clip.looped),
    }


def notes(sources: Sources, cfg: LmConfig, looped: bool) -> list[str]:
    """What a reader must know to interpret the figures."""
    out = []
    if sources.random:
        out.append(
            "LM weights are seeded random values (no checkpoint given): speed and "
            "memory are representative, quality only shows how far each level moves "
            "an untrained model's logits; load s includes drawing the random values"
        )
    if sources.mimi_weight is None:
        out.append(
            "Mimi has random weights (no --mimi-weight): its timing is representative, "
            "its reconstruction figures are not"
        )
    if sources.lm.truncated:
        out.append(
            f"{cfg.num_layers} of {sources.lm.full_layers} temporal layers kept; "
            f"'{sources.lm.full_layers}L' figures are extrapolated: measured step + "
            "missing layers x measured per-layer time, weights + missing layers x one "
            "layer's bytes"
        )
    if not accelerator.on_gpu():
        out.append(
            "on a CPU, MLX's quantized matmul is slower than its bf16 matmul (a "
            "platform fact: somewhat slower with the float32 scales used here, many "
            "times slower with bf16 ones), so quantization saves memory, not time; on "
            "Apple GPUs it is faster; the float32 scales and biases make quantized "
            "weights take more memory than on disk"
        )
    out.append(
        "Mimi runs in float32 at every level; its streaming encode + decode time, "
        "measured once, is added to each level's LM step to give the frame time, RTF "
        "(vs 80 ms) and frames/s"
    )
    out.append(
        "quality: the float model answers the clip with the sampling settings; every "
        "level then replays those tokens (teacher forcing) and its logits are compared "
        "with the float model's (top-1 agreement, KL(float || level) in nats at "
        "temperature 1)"
    )
    if looped:
        out.append("the clip was shorter than --frames and was looped")
    return out
