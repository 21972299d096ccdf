"""Mimi: SEANet + transformer + learnt resampling + split RVQ; batch encode/decode and loading."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from ..errors import ConfigError
from ..modules.attention import KVCache
from ..modules.conv import (
    ConvState,
    ConvTrState,
    Nest,
    StreamingConv1d,
    StreamingConvTranspose1d,
)
from ..weights import load_safetensors, load_strict
from .config import MimiConfig
from .quantizer import SplitResidualVectorQuantizer, codebook_arrays
from .seanet import SeanetDecoder, SeanetEncoder
from .seanet import State as SeanetState
from .transformer import MimiTransformer

CODEBOOK_EPS = 1e-5


@dataclass
class EncoderState:
    """Streaming memory of the encoder path (audio -> codes)."""

    seanet: SeanetState
    transformer: list[KVCache]
    downsample: ConvState


@dataclass
class DecoderState:
    """Streaming memory of the decoder path (codes -> audio)."""

    upsample: ConvTrState
    transformer: list[KVCache]
    seanet: SeanetState


class Mimi(nn.Module):
    """The Mimi codec. Audio is (B, T) float32 at 24 kHz, codes are (B, K, F) int32.

    The module tree follows the checkpoint's names (see `sanitize`). Streaming
    runs through `encode_step` / `decode_step` with a state from
    `make_encoder_state` / `make_decoder_state` (see `MimiStream`).
    """

    def __init__(
        self, config: MimiConfig | None = None, num_codebooks: int | None = None
    ):
        super().__init__()
        cfg = config or MimiConfig.official()
        self.config = cfg
        self.num_codebooks = (
            cfg.num_codebooks if num_codebooks is None else num_codebooks
        )
        self._check_codebooks(self.num_codebooks)
        dim, stride = cfg.seanet.dimension, cfg.resample_stride
        self.encoder = SeanetEncoder(cfg.seanet)
        self.decoder = SeanetDecoder(cfg.seanet)
        self.encoder_transformer = Nest(transformer=MimiTransformer(cfg.transformer))
        self.decoder_transformer = Nest(transformer=MimiTransformer(cfg.transformer))
        downsample = StreamingConv1d(
            dim, dim, 2 * stride, stride=stride, bias=False, pad_mode="replicate"
        )
        upsample = StreamingConvTranspose1d(
            dim, dim, 2 * stride, stride, groups=dim, bias=False
        )
        self.downsample = Nest(conv=downsample)
        self.upsample = Nest(convtr=upsample)
        self.quantizer = SplitResidualVectorQuantizer(cfg.quantizer)
        # compiled streaming steps by (step, codebooks); see `_step`
        self._compiled: dict[tuple, Callable] = {}

    @property
    def max_codebooks(self) -> int:
        """Codebooks the checkpoint holds (32 for the official model)."""
        return self.config.max_codebooks

    @property
    def frame_size(self) -> int:
        """Audio samples per code frame (1920)."""
        return self.config.frame_size

    def _check_codebooks(self, n: int) -> None:
        if not 1 <= n <= self.config.max_codebooks:
            raise ConfigError(
                f"number of codebooks must be in 1..{self.config.max_codebooks}, got {n}"
            )

    def encode(self, pcm: mx.array, num_codebooks: int | None = None) -> mx.array:
        """Audio (B, T) -> codes (B, K, ceil(T / frame_size)); T is right-padded with zeros."""
        frame = self.frame_size
        pad = -pcm.shape[-1] % frame
        if pad:
            pcm = mx.pad(pcm, [(0, 0), (0, pad)])
        return self._encode(pcm, None, num_codebooks)

    def decode(self, codes: mx.array) -> mx.array:
        """Codes (B, K, F) -> audio (B, F * frame_size)."""
        return self._decode(codes, None)

    def encode_step(
        self, pcm: mx.array, state: EncoderState, num_codebooks: int | None = None
    ) -> mx.array:
        """Continue a stream: audio (B, n * frame_size) -> codes (B, K, n)."""
        if pcm.shape[-1] % self.frame_size:
            raise ValueError(
                f"streaming input must be a multiple of {self.frame_size} samples"
            )
        n = self.num_codebooks if num_codebooks is None else num_codebooks
        self._check_codebooks(n)
        tokens = pcm.shape[-1] // self.config.seanet.hop_length
        return self._step(self._encode, pcm, state, tokens, n)

    def decode_step(self, codes: mx.array, state: DecoderState) -> mx.array:
        """Continue a stream: codes (B, K, n) -> audio (B, n * frame_size)."""
        tokens = codes.shape[-1] * self.config.resample_stride
        return self._step(self._decode, codes, state, tokens)

    def make_encoder_state(self, batch: int = 1) -> EncoderState:
        """State at the start of an encoding stream."""
        return EncoderState(
            self.encoder.make_state(),
            self.encoder_transformer.transformer.make_state(batch),
            ConvState(),
        )

    def make_decoder_state(self, batch: int = 1) -> DecoderState:
        """State at the start of a decoding stream."""
        return DecoderState(
            ConvTrState(),
            self.decoder_transformer.transformer.make_state(batch),
            self.decoder.make_state(),
        )

    def _step(
        self,
        run: Callable[..., mx.array],
        x: mx.array,
        state: EncoderState | DecoderState,
        tokens: int,
        *args: int,
    ) -> mx.array:
        """One streaming step of `run` (`_encode` / `_decode`), compiled once it can be.

        The first step of a stream runs op by op: it creates the conv memories.
        From then on every array of the state keeps its shape, so the step is
        replayed as one `mx.compile` graph (per input shape), its elementwise ops
        fused, with the state's arrays as inputs and outputs. The transformer
        writes at `position`, the caches' host offset, advanced here by `tokens`.
        """
        caches = state.transformer
        position = mx.array(caches[0].offset, mx.int32)
        slots = _slots(state)
        if any(getattr(holder, name) is None for holder, name in slots):
            out = run(x, state, *args, position)
        else:
            key = (run.__name__, *args)
            if key not in self._compiled:
                self._compiled[key] = mx.compile(_replay(run, state, args), inputs=self)
            arrays = [getattr(holder, name) for holder, name in slots]
            out, arrays = self._compiled[key](x, position, arrays)
            for (holder, name), array in zip(slots, arrays):
                setattr(holder, name, array)
        for cache in caches:
            cache.offset += tokens
        return out

    def _encode(
        self,
        pcm: mx.array,
        state: EncoderState | None,
        n: int | None,
        position: mx.array | None = None,
    ) -> mx.array:
        n = self.num_codebooks if n is None else n
        self._check_codebooks(n)
        stream = state is not None  # else a whole sequence from its start
        x = pcm[:, :, None].astype(self._dtype)  # (B, T, 1)
        x = self.encoder(x, state.seanet if stream else None)  # (B, T / 960, D)
        x = self.encoder_transformer.transformer(
            x, state.transformer if stream else None, position
        )
        x = self.downsample.conv(x, state.downsample if stream else None)  # (B, F, D)
        codes = self.quantizer.encode(x.astype(mx.float32), n)  # (B, F, K)
        return codes.transpose(0, 2, 1)

    def _decode(
        self,
        codes: mx.array,
        state: DecoderState | None,
        position: mx.array | None = None,
    ) -> mx.array:
        stream = state is not None  # else a whole sequence from its start
        # (B, F, D)
        x = self.quantizer.decode(codes.transpose(0, 2, 1)).astype(self._dtype)
        x = self.upsample.convtr(x, state.upsample if stream else None)  # (B, 2F, D)
        x = self.decoder_transformer.transformer(
            x, state.transformer if stream else None, position
        )
        x = self.decoder(x, state.seanet if stream else None)  # (B, F * 1920, 1)
        return x[:, :, 0]

    @property
    def _dtype(self) -> mx.Dtype:
        return self.encoder.model[0].conv.conv.weight.dtype


def _slots(state: object) -> list[tuple[object, str]]:
    """(holder, attribute) of every array of a streaming state, in a fixed order.

    States are dataclasses and lists of them (None: a layer without state);
    a dataclass field holding an array or None (not created yet) is a slot,
    ints (cache offsets) are not.
    """
    if isinstance(state, list):
        return [slot for item in state if item is not None for slot in _slots(item)]
    slots: list[tuple[object, str]] = []
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if value is None or isinstance(value, mx.array):
            slots.append((state, f.name))
        elif isinstance(value, list) or dataclasses.is_dataclass(value):
            slots += _slots(value)
    return slots


def _clone(state: object) -> object:
    """A copy of a state's structure (its arrays shared until replaced)."""
    if isinstance(state, list):
        return [None if item is None else _clone(item) for item in state]
    if not dataclasses.is_dataclass(state):
        return state
    return dataclasses.replace(
        state,
        **{f.name: _clone(getattr(state, f.name)) for f in dataclasses.fields(state)},
    )


def _replay(
    run: Callable[..., mx.array], template: object, args: tuple[int, ...]
) -> Callable[..., tuple[mx.array, list[mx.array]]]:
    """`run` as a pure function of (input, position, state arrays), for mx.compile."""

    def step(
        x: mx.array, position: mx.array, arrays: list[mx.array]
    ) -> tuple[mx.array, list[mx.array]]:
        state = _clone(template)
        slots = _slots(state)
        for (holder, name), array in zip(slots, arrays):
            setattr(holder, name, array)
        out = run(x, state, *args, position)
        return out, [getattr(holder, name) for holder, name in slots]

    return step


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Kyutai's PyTorch-named Mimi tensors -> this module tree's names and layouts.

    - Conv1d [out, in, k] -> [out, k, in]; ConvTranspose1d [in, out/groups, k] ->
      [k, out/groups, in] (the matmul layouts of modules/conv.py); the 1x1
      quantizer projections become Linear [out, in].
    - `self_attn.in_proj_weight` (or `in_projs.0.weight`) -> `self_attn.in_proj.weight`,
      `out_projs.0.weight` -> `out_proj.weight`.
    - Codebooks: `_codebook.{embedding_sum, cluster_usage}` ->
      `codebook.embedding = embedding_sum / max(cluster_usage, 1e-5)` in float32,
      plus its derived `codebook.half_sq_norm`; `_initialized` is dropped.
      Incomplete codebooks are left as they are so the strict load names them.
    """
    out: dict[str, mx.array] = {}
    codebooks: dict[str, dict[str, mx.array]] = {}
    for key, value in weights.items():
        if "._codebook." in key:
            prefix, name = key.rsplit("._codebook.", 1)
            codebooks.setdefault(prefix, {})[name] = value
            continue
        key = key.replace(".self_attn.in_proj_weight", ".self_attn.in_proj.weight")
        key = key.replace(".self_attn.in_projs.0.", ".self_attn.in_proj.")
        key = key.replace(".self_attn.out_projs.0.", ".self_attn.out_proj.")
        if key.endswith(".conv.weight") and value.ndim == 3:
            value = value.transpose(0, 2, 1)
        elif key.endswith(".convtr.weight") and value.ndim == 3:
            value = value.transpose(2, 1, 0)
        elif (
            key.endswith(("input_proj.weight", "output_proj.weight"))
            and value.ndim == 3
        ):
            value = value[:, :, 0]
        # A transpose is only a strided view: copy it into its new layout now, or
        # every matmul would gather the weight again (~20 ms a frame for one conv).
        out[key] = mx.contiguous(value)
    for prefix, parts in codebooks.items():
        if "embedding_sum" in parts and "cluster_usage" in parts:
            usage = mx.maximum(parts["cluster_usage"].astype(mx.float32), CODEBOOK_EPS)
            embedding = parts["embedding_sum"].astype(mx.float32) / usage[:, None]
            embedding, half_sq_norm = codebook_arrays(embedding)
            out[f"{prefix}.codebook.embedding"] = embedding
            out[f"{prefix}.codebook.half_sq_norm"] = half_sq_norm
        else:
            out.update({f"{prefix}._codebook.{k}": v for k, v in parts.items()})
    return out


def open_mimi(
    weight: str | Path | None,
    config: MimiConfig | str | Path | None = None,
    num_codebooks: int | None = None,
    dtype: mx.Dtype = mx.float32,
    seed: int | None = None,
) -> Mimi:
    """Build Mimi and strictly load Kyutai's safetensors file `weight` into it.

    `config`: a MimiConfig, its JSON file, or None for the official one.
    `num_codebooks` (default: the config's, 8 for Moshi) may be 1..max_codebooks.
    Mimi is meant to run in float32; bfloat16/float16 trade accuracy for memory.
    With no `weight`, the weights are random, drawn from `seed` (benchmarks).
    """
    if not isinstance(config, MimiConfig):
        config = MimiConfig.from_json_or_official(config)
    if weight is None:
        if seed is None:
            raise ValueError("open_mimi needs a weight file or a seed")
        # before the modules draw their initial weights
        mx.random.seed(seed)
    model = Mimi(config, num_codebooks)
    if weight is not None:
        load_strict(model, sanitize(load_safetensors(weight)), weight)
    if dtype != mx.float32:
        model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model
