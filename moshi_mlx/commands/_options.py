"""Shared flags: Moshi's weights, dtype, sampling and alignment; Mimi; --offline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoints import DEFAULT_QUANTIZED, DEFAULT_VOICE, VOICES, WeightRequest
from ..lm.generate import ALIGNMENTS, DEFAULT_ALIGNMENT
from ..lm.sampling import SamplingSettings
from ..weights import DTYPE_BYTES, QUANTIZATIONS

if TYPE_CHECKING:
    from ..audio.devices import DeviceChoice

FlagGroup = argparse.ArgumentParser | argparse._ArgumentGroup  # where flags are added


def add_moshi_options(parser: argparse.ArgumentParser) -> None:
    """Add the weight and sampling flag groups of the commands that run Moshi."""
    _add_weight_options(parser)
    _add_sampling_options(parser)
    _add_alignment_option(parser)


def add_device_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the "audio" flag group with --input-device and --output-device; returns it."""
    group = parser.add_argument_group("audio")
    group.add_argument(
        "--input-device",
        metavar="DEVICE",
        help="microphone: index or part of the name (see `cli.py devices`)",
    )
    group.add_argument(
        "--output-device",
        metavar="DEVICE",
        help="speaker: index or part of the name (see `cli.py devices`)",
    )
    return group


def device_choice(args: argparse.Namespace) -> DeviceChoice:
    """The DeviceChoice described by --input-device and --output-device."""
    from ..audio.devices import DeviceChoice

    return DeviceChoice(args.input_device, args.output_device)


def add_mimi_options(group: FlagGroup, weight_help: str) -> None:
    """Add --mimi-weight (described by `weight_help`) and --mimi-config."""
    group.add_argument("--mimi-weight", type=Path, metavar="FILE", help=weight_help)
    group.add_argument(
        "--mimi-config",
        type=Path,
        metavar="JSON",
        help="Mimi config JSON (default: the official Mimi)",
    )


def add_offline_option(group: FlagGroup) -> None:
    """Add --offline."""
    group.add_argument(
        "--offline",
        action="store_true",
        help="use only the Hugging Face cache, never the network (or HF_HUB_OFFLINE=1)",
    )


def add_dtype_option(group: FlagGroup, model: str) -> None:
    """Add --dtype, the compute dtype of `model` (Mimi always runs in float32)."""
    group.add_argument(
        "--dtype",
        default="bfloat16",
        metavar="|".join(DTYPE_BYTES),
        help=f"{model} compute dtype (default bfloat16; Mimi always runs in float32)",
    )


def _add_weight_options(parser: argparse.ArgumentParser) -> None:
    """Add --voice/--quantized/--hf-repo, local file overrides, --offline, --dtype."""
    group = parser.add_argument_group("weights")
    group.add_argument(
        "--voice",
        default=DEFAULT_VOICE,
        metavar="|".join(VOICES),
        help=f"which official voice to download (default {DEFAULT_VOICE})",
    )
    group.add_argument(
        "--quantized",
        metavar="|".join(QUANTIZATIONS),
        help=f"weight format: 4-bit, 8-bit or bf16 (default {DEFAULT_QUANTIZED}); "
        "picks kyutai/<voice>-mlx-q4|q8|bf16",
    )
    group.add_argument(
        "--hf-repo", metavar="REPO", help="Hugging Face repo to use instead"
    )
    group.add_argument(
        "--moshi-weight", type=Path, metavar="FILE", help="local LM .safetensors file"
    )
    add_mimi_options(group, "local Mimi .safetensors file")
    group.add_argument(
        "--tokenizer", type=Path, metavar="FILE", help="local SentencePiece .model file"
    )
    group.add_argument(
        "--lm-config",
        type=Path,
        metavar="JSON",
        help="LM config JSON (default: the repo's config.json, else the official 7B)",
    )
    add_offline_option(group)
    add_dtype_option(group, "LM")
    group.add_argument(
        "--no-memory-check",
        action="store_true",
        help="load even if the model looks too big for the free memory",
    )


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """Add temperature / top-k for text and audio, and --seed."""
    default = SamplingSettings()
    group = parser.add_argument_group("sampling (temperature 0 = greedy, reproducible)")
    for stream in ("text", "audio"):
        temperature = getattr(default, f"{stream}_temperature")
        top_k = getattr(default, f"{stream}_top_k")
        group.add_argument(
            f"--{stream}-temperature",
            type=float,
            default=temperature,
            metavar="T",
            help=f"{stream} sampling temperature (default {temperature})",
        )
        group.add_argument(
            f"--{stream}-top-k",
            type=int,
            default=top_k,
            metavar="K",
            help=f"sample {stream} among the K likeliest (default {top_k})",
        )
    group.add_argument(
        "--seed",
        type=int,
        default=default.seed,
        help=f"random seed: same seed + input = same answer (default {default.seed})",
    )


def _add_alignment_option(parser: argparse.ArgumentParser) -> None:
    """Add --alignment: in which step Moshi reads each frame of the user's audio."""
    parser.add_argument(
        "--alignment",
        choices=ALIGNMENTS,
        default=DEFAULT_ALIGNMENT,
        help="when Moshi hears your audio: pytorch reads each 80 ms frame in the step "
        "that receives it (Kyutai's PyTorch server; the paper's 160 ms); mlx one frame "
        f"later (Kyutai's MLX code, 80 ms more) (default {DEFAULT_ALIGNMENT})",
    )


def weight_request(args: argparse.Namespace) -> WeightRequest:
    """The WeightRequest described by the weight flags."""
    return WeightRequest(
        voice=args.voice,
        quantized=args.quantized,
        hf_repo=args.hf_repo,
        moshi_weight=args.moshi_weight,
        mimi_weight=args.mimi_weight,
        mimi_config=args.mimi_config,
        tokenizer=args.tokenizer,
        lm_config=args.lm_config,
        offline=args.offline,
        dtype=args.dtype,
        memory_check=not args.no_memory_check,
    )


def sampling_settings(args: argparse.Namespace) -> SamplingSettings:
    """The SamplingSettings described by the sampling flags."""
    return SamplingSettings(
        text_temperature=args.text_temperature,
        text_top_k=args.text_top_k,
        audio_temperature=args.audio_temperature,
        audio_top_k=args.audio_top_k,
        seed=args.seed,
    )
