"""Mimi against Kyutai's PyTorch reference (tests/fixtures/mimi), streaming vs batch, loading."""

from __future__ import annotations

import dataclasses
import json

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.errors import ConfigError, WeightsError
from moshi_mlx.mimi import Mimi, MimiConfig, MimiStream, open_mimi, sanitize
from moshi_mlx.modules import linear

ATOL = 1e-4  # fixture README: pcm and intermediates, float32


@pytest.fixture(scope="module")
def small_config(mimi_fixtures) -> MimiConfig:
    return MimiConfig.from_json(mimi_fixtures / "mimi_small.json")


@pytest.fixture(scope="module")
def mimi(mimi_fixtures, small_config) -> Mimi:
    return open_mimi(mimi_fixtures / "mimi_small.safetensors", small_config)


@pytest.fixture(scope="module")
def ref(mimi_fixtures) -> dict[str, np.ndarray]:
    return {
        k: np.array(v)
        for k, v in mx.load(str(mimi_fixtures / "mimi_small_ref.safetensors")).items()
    }


def _stream_encode(
    mimi: Mimi, pcm: np.ndarray, stream: MimiStream | None = None
) -> np.ndarray:
    """(1, T) -> (1, K, F) codes, one 1920-sample frame per call."""
    stream = stream or MimiStream(mimi)
    n = pcm.shape[-1] // mimi.frame_size
    frames = [
        stream.encode(mx.array(pcm[:, i * 1920 : (i + 1) * 1920])) for i in range(n)
    ]
    return np.array(mx.stack(frames, axis=-1))


def _stream_decode(
    mimi: Mimi, codes: np.ndarray, stream: MimiStream | None = None
) -> np.ndarray:
    """(1, K, F) -> (1, F * 1920), one code frame per call."""
    stream = stream or MimiStream(mimi)
    frames = [stream.decode(mx.array(codes[:, :, i])) for i in range(codes.shape[-1])]
    return np.array(mx.concatenate(frames, axis=-1))


def _assert_pcm_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    snr = 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2))
    assert snr >= 60


# --- config ---------------------------------------------------------------------------


def test_official_config_file_equals_default(mimi_fixtures):
    cfg = MimiConfig.from_json(mimi_fixtures / "mimi_official.json")
    assert cfg == MimiConfig.official()
    assert (cfg.sample_rate, cfg.frame_rate, cfg.frame_size) == (24000, 12.5, 1920)
    assert cfg.seanet.hop_length == 960 and cfg.resample_stride == 2
    assert cfg.max_codebooks == 32 and cfg.num_codebooks == 8


def test_small_config(small_config):
    assert small_config.seanet.n_filters == 8 and small_config.seanet.dimension == 32
    assert (
        small_config.transformer.num_layers == 2
        and small_config.transformer.context == 250
    )
    assert small_config.quantizer.bins == 64 and small_config.max_codebooks == 16
    assert small_config.frame_size == 1920


@pytest.mark.parametrize(
    "edit,message",
    [
        pytest.param(
            {"transformer": {"gating": "silu"}}, "transformer.gating", id="gating"
        ),
        pytest.param({"seanet": {"causal": False}}, "seanet.causal", id="non-causal"),
        pytest.param({"num_codebooks": 40}, "num_codebooks", id="codebooks"),
        pytest.param({"seanet": {"ratios": "abc"}}, "malformed", id="malformed"),
    ],
)
def test_bad_config_raises_config_error(tmp_path, mimi_fixtures, edit, message):
    data = json.loads((mimi_fixtures / "mimi_small.json").read_text())
    for key, value in edit.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        MimiConfig.from_json(path)


def test_unreadable_config_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        MimiConfig.from_json(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        MimiConfig.from_json(tmp_path / "x.json")


# --- weights --------------------------------------------------------------------------


def test_sanitize_fixes_names_and_layouts():
    torch_style = {
        "encoder.model.0.conv.conv.weight": mx.zeros((64, 1, 7)),
        "decoder.model.2.convtr.convtr.weight": mx.zeros((1024, 512, 16)),
        "upsample.convtr.convtr.convtr.weight": mx.zeros((512, 1, 4)),
        "encoder_transformer.transformer.layers.0.self_attn.in_proj_weight": mx.zeros(
            (96, 32)
        ),
        "decoder_transformer.transformer.layers.1.self_attn.in_projs.0.weight": mx.zeros(
            (96, 32)
        ),
        "decoder_transformer.transformer.layers.1.self_attn.out_projs.0.weight": mx.zeros(
            (32, 32)
        ),
        "quantizer.rvq_first.input_proj.weight": mx.zeros((256, 512, 1)),
        "encoder_transformer.transformer.layers.0.linear1.weight": mx.zeros((128, 32)),
        "encoder_transformer.transformer.layers.0.linear2.weight": mx.zeros((32, 128)),
        "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum": mx.array(
            [[2.0, 4.0], [3.0, 3.0]]
        ),
        "quantizer.rvq_first.vq.layers.0._codebook.cluster_usage": mx.array([2.0, 0.0]),
        "quantizer.rvq_first.vq.layers.0._codebook._initialized": mx.array([1.0]),
    }
    out = sanitize(torch_style)
    assert {k: tuple(v.shape) for k, v in out.items() if "codebook" not in k} == {
        "encoder.model.0.conv.conv.weight": (64, 7, 1),
        "decoder.model.2.convtr.convtr.weight": (16, 512, 1024),
        "upsample.convtr.convtr.convtr.weight": (4, 1, 512),
        "encoder_transformer.transformer.layers.0.self_attn.in_proj.weight": (96, 32),
        "decoder_transformer.transformer.layers.1.self_attn.in_proj.weight": (96, 32),
        "decoder_transformer.transformer.layers.1.self_attn.out_proj.weight": (32, 32),
        "quantizer.rvq_first.input_proj.weight": (256, 512),
        "encoder_transformer.transformer.layers.0.linear1.weight": (128, 32),
        "encoder_transformer.transformer.layers.0.linear2.weight": (32, 128),
    }
    embedding = out["quantizer.rvq_first.vq.layers.0.codebook.embedding"]
    np.testing.assert_allclose(np.array(embedding), [[1.0, 2.0], [3e5, 3e5]], rtol=1e-6)
    half_sq_norm = out["quantizer.rvq_first.vq.layers.0.codebook.half_sq_norm"]
    np.testing.assert_allclose(np.array(half_sq_norm), [2.5, 9e10], rtol=1e-6)
    assert not any("_codebook" in k for k in out)


def test_sanitize_moves_conv_values_to_matmul_layouts():
    w = mx.arange(2 * 3 * 4).reshape(2, 3, 4)  # PyTorch conv [out, in, k]
    out = sanitize({"encoder.model.0.conv.conv.weight": w})[
        "encoder.model.0.conv.conv.weight"
    ]
    assert out[1, 3, 2].item() == w[1, 2, 3].item()  # [out, k, in]
    w = mx.arange(2 * 3 * 4).reshape(2, 3, 4)  # PyTorch transposed conv [in, out, k]
    key = "decoder.model.2.convtr.convtr.weight"
    assert sanitize({key: w})[key][3, 2, 1].item() == w[1, 2, 3].item()  # [k, out, in]


def test_loaded_weights_are_stored_in_their_new_layout(mimi):
    """Sanitized weights must be real row-major copies, not strided views of the file's layout."""
    from mlx.utils import tree_flatten

    for key, value in tree_flatten(mimi.parameters()):
        assert memoryview(value).c_contiguous, key


def test_official_size_key_set_matches_checkpoint_count():
    """A full-size file has 318 tensors; each codebook's 3 buffers become 2 derived arrays."""
    from mlx.utils import tree_flatten

    keys = [k for k, _ in tree_flatten(Mimi().parameters())]
    assert len(keys) == 318 - 32
    assert "downsample.conv.conv.conv.weight" in keys
    assert "upsample.convtr.convtr.convtr.weight" in keys
    assert "decoder.model.11.convtr.convtr.weight" in keys
    assert "encoder.model.10.block.3.conv.conv.bias" in keys


def test_missing_and_unexpected_keys_name_the_file(
    tmp_path, mimi_fixtures, small_config
):
    weights = mx.load(str(mimi_fixtures / "mimi_small.safetensors"))
    weights.pop("decoder.model.14.conv.conv.bias")
    weights["extra.weight"] = mx.zeros((1,))
    path = tmp_path / "broken.safetensors"
    mx.save_safetensors(str(path), weights)
    with pytest.raises(WeightsError) as err:
        open_mimi(path, small_config)
    message = str(err.value)
    assert str(path) in message
    assert "missing keys: decoder.model.14.conv.conv.bias" in message
    assert "unexpected keys: extra.weight" in message


def test_shape_mismatch_names_the_key(tmp_path, mimi_fixtures, small_config):
    weights = mx.load(str(mimi_fixtures / "mimi_small.safetensors"))
    weights["decoder.model.0.conv.conv.weight"] = mx.zeros((64, 32, 5))
    path = tmp_path / "misshapen.safetensors"
    mx.save_safetensors(str(path), weights)
    with pytest.raises(
        WeightsError, match=r"shape mismatch: decoder\.model\.0\.conv\.conv\.weight"
    ):
        open_mimi(path, small_config)


def test_non_safetensors_file_is_refused(tmp_path, small_config):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        open_mimi(path, small_config)


# --- parity with the PyTorch reference ------------------------------------------------


def test_encoder_intermediates(mimi, ref):
    x = mx.array(ref["pcm"][:, 0])[:, :, None]  # (B, T, 1)
    seanet = mimi.encoder(x)
    transformer = mimi.encoder_transformer.transformer(seanet)
    latent = mimi.downsample.conv(transformer)
    for got, name in (
        (seanet, "enc_seanet"),
        (transformer, "enc_transformer"),
        (latent, "enc_latent"),
    ):
        np.testing.assert_allclose(
            np.array(got).transpose(0, 2, 1), ref[name], atol=ATOL, err_msg=name
        )


def test_decoder_intermediates(mimi, ref):
    latent = mimi.quantizer.decode(mx.array(ref["codes_batch"]).transpose(0, 2, 1))
    upsampled = mimi.upsample.convtr(latent)
    transformer = mimi.decoder_transformer.transformer(upsampled)
    pairs = (
        (latent, "dec_latent"),
        (upsampled, "dec_upsampled"),
        (transformer, "dec_transformer"),
    )
    for got, name in pairs:
        np.testing.assert_allclose(
            np.array(got).transpose(0, 2, 1), ref[name], atol=ATOL, err_msg=name
        )


def test_batch_encode_decode_match_reference(mimi, ref):
    codes = np.array(mimi.encode(mx.array(ref["pcm"][:, 0])))
    assert codes.dtype == np.int32
    np.testing.assert_array_equal(codes, ref["codes_batch"])
    _assert_pcm_close(
        np.array(mimi.decode(mx.array(ref["codes_batch"]))), ref["pcm_out_batch"][:, 0]
    )


def test_streaming_encode_decode_match_reference(mimi, ref):
    np.testing.assert_array_equal(_stream_encode(mimi, ref["pcm"][:, 0]), ref["codes"])
    _assert_pcm_close(_stream_decode(mimi, ref["codes"]), ref["pcm_out"][:, 0])


def test_streaming_with_short_context_matches_reference(
    mimi_fixtures, small_config, ref
):
    """Context 16: the ring cache's streaming rule (query p sees context - 1 keys) matters here."""
    cfg = dataclasses.replace(
        small_config,
        transformer=dataclasses.replace(small_config.transformer, context=16),
    )
    mimi16 = open_mimi(mimi_fixtures / "mimi_small.safetensors", cfg)
    np.testing.assert_array_equal(
        _stream_encode(mimi16, ref["pcm"][:, 0]), ref["codes_ctx16"]
    )
    _assert_pcm_close(
        _stream_decode(mimi16, ref["codes_ctx16"]), ref["pcm_out_ctx16"][:, 0]
    )


def test_compiled_steps_equal_op_by_op_steps(mimi_fixtures, small_config, ref):
    """From its second step a stream replays one mx.compile graph: same codes and samples.

    Context 16 makes the ring caches wrap within the clip.
    """
    cfg = dataclasses.replace(
        small_config,
        transformer=dataclasses.replace(small_config.transformer, context=16),
    )
    mimi16 = open_mimi(mimi_fixtures / "mimi_small.safetensors", cfg)
    pcm = ref["pcm"][:, 0]
    codes = _stream_encode(mimi16, pcm)
    audio = _stream_decode(mimi16, codes)
    assert {key[0] for key in mimi16._compiled} == {"_encode", "_decode"}
    mx.disable_compile()
    try:
        np.testing.assert_array_equal(_stream_encode(mimi16, pcm), codes)
        np.testing.assert_array_equal(_stream_decode(mimi16, codes), audio)
    finally:
        mx.enable_compile()


def test_batch_equals_streaming(mimi, ref):
    pcm = ref["pcm"][:, 0]
    codes = _stream_encode(mimi, pcm)
    np.testing.assert_array_equal(codes, np.array(mimi.encode(mx.array(pcm))))
    np.testing.assert_allclose(
        _stream_decode(mimi, codes), np.array(mimi.decode(mx.array(codes))), atol=1e-5
    )


def test_multi_frame_steps_and_batch_of_two(mimi, ref):
    """A stream may take several frames per call, and a batch holds independent streams."""
    pcm = ref["pcm"][:, 0, : 6 * 1920]
    two = mx.array(np.concatenate([pcm, pcm[:, ::-1]], axis=0))  # (2, T)
    state = mimi.make_encoder_state(batch=2)
    codes = mx.concatenate(
        [
            mimi.encode_step(two[:, :3840], state),
            mimi.encode_step(two[:, 3840:], state),
        ],
        axis=-1,
    )
    np.testing.assert_array_equal(np.array(codes), np.array(mimi.encode(two)))
    assert codes.shape == (2, 8, 6)
    np.testing.assert_array_equal(np.array(codes[:1]), ref["codes"][:, :, :6])


def test_reset_restarts_both_streams(mimi, ref):
    pcm = ref["pcm"][:, 0]
    stream = MimiStream(mimi)
    first = _stream_encode(mimi, pcm[:, : 5 * 1920], stream)
    _stream_decode(mimi, ref["codes"][:, :, :5], stream)
    stream.reset()
    np.testing.assert_array_equal(
        _stream_encode(mimi, pcm[:, : 5 * 1920], stream), first
    )
    _assert_pcm_close(_stream_decode(mimi, ref["codes"], stream), ref["pcm_out"][:, 0])


def test_stream_accepts_flat_frames(mimi, ref):
    stream = MimiStream(mimi)
    codes = stream.encode(mx.array(ref["pcm"][0, 0, :1920]))
    assert codes.shape == (1, 8) and codes.dtype == mx.int32
    np.testing.assert_array_equal(np.array(codes), ref["codes"][:, :, 0])
    pcm = stream.decode(mx.array(ref["codes"][0, :, 0]))
    assert pcm.shape == (1, 1920)


def test_encode_pads_to_whole_frames(mimi, ref):
    pcm = ref["pcm"][:, 0]
    codes = mimi.encode(mx.array(pcm[:, : 2 * 1920 + 5]))
    assert codes.shape == (1, 8, 3)
    np.testing.assert_array_equal(np.array(codes[:, :, :2]), ref["codes"][:, :, :2])


def test_codebook_count(mimi_fixtures, small_config, mimi, ref):
    pcm = mx.array(ref["pcm"][:, 0])
    all16 = np.array(mimi.encode(pcm, num_codebooks=16))
    assert all16.shape == (1, 16, 19)
    np.testing.assert_array_equal(all16[:, :8], ref["codes"])  # RVQ levels are nested
    four = open_mimi(
        mimi_fixtures / "mimi_small.safetensors", small_config, num_codebooks=4
    )
    assert four.num_codebooks == 4 and four.max_codebooks == 16
    np.testing.assert_array_equal(np.array(four.encode(pcm)), ref["codes"][:, :4])
    assert np.array(MimiStream(four).encode(pcm[:, :1920])).shape == (1, 4)
    with pytest.raises(ConfigError, match="1..16"):
        open_mimi(
            mimi_fixtures / "mimi_small.safetensors", small_config, num_codebooks=17
        )
    with pytest.raises(ConfigError, match="1..16"):
        mimi.encode(pcm, num_codebooks=0)


@pytest.mark.parametrize(
    "dtype,level0,snr_db",
    [
        pytest.param(mx.bfloat16, 0.8, 30, id="bfloat16"),
        pytest.param(mx.float16, 0.85, 45, id="float16"),
    ],
)
def test_reduced_precision(mimi_fixtures, small_config, ref, dtype, level0, snr_db):
    """Half precision: codes compared by match rate, audio by SNR (README: float32 bounds don't apply)."""
    half = open_mimi(
        mimi_fixtures / "mimi_small.safetensors", small_config, dtype=dtype
    )
    assert half.encoder.model[0].conv.conv.weight.dtype == dtype
    codes = np.array(half.encode(mx.array(ref["pcm"][:, 0])))
    assert (codes[:, 0] == ref["codes"][:, 0]).mean() >= level0
    pcm = np.array(half.decode(mx.array(ref["codes"])).astype(mx.float32))
    want = ref["pcm_out"][:, 0]
    assert 10 * np.log10(np.sum(want**2) / np.sum((pcm - want) ** 2)) >= snr_db


# --- official size ----------------------------------------------------------------------


@pytest.mark.full_size
def test_official_size_streaming_shapes_and_batch_equality(monkeypatch):
    """Streaming takes the blocked matmuls (as with the system OpenBLAS), batch does not."""
    monkeypatch.setattr(linear, "blocked", True)
    mx.random.seed(0)
    mimi = Mimi()  # official config, random weights
    pcm = mx.random.normal((1, 3 * 1920)) * 0.1
    stream = MimiStream(mimi)
    codes = [stream.encode(pcm[:, i * 1920 : (i + 1) * 1920]) for i in range(3)]
    assert codes[0].shape == (1, 8) and codes[0].dtype == mx.int32
    codes = mx.stack(codes, axis=-1)
    out = [stream.decode(codes[:, :, i]) for i in range(3)]
    assert out[0].shape == (1, 1920)
    out = np.array(mx.concatenate(out, axis=-1))
    monkeypatch.setattr(linear, "blocked", False)
    np.testing.assert_array_equal(np.array(codes), np.array(mimi.encode(pcm)))
    np.testing.assert_allclose(out, np.array(mimi.decode(codes)), atol=1e-4)
