"""Weight files: their formats and compute dtypes, local files, safe safetensors
reads, strict loading into a module, Hugging Face downloads."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .errors import ConfigError, WeightsError

MAX_KEYS_SHOWN = 5
# the compute dtypes a model may run in, and their bytes per value
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# How long the one request checking that the Hugging Face hub answers may take: without
# it, a download with no network retries for about 25 s before giving up.
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Quantization:
    """A published weight format: flag value, repo suffix, file name and bit layout."""

    flag: str
    repo_suffix: str
    filename: str
    # None: plain bf16 weights
    bits: int | None
    group_size: int | None
    # storage cost, including the per-group scales and biases
    bits_per_weight: float

    @property
    def quantize(self) -> tuple[int, int] | None:
        """(bits, group_size) for the loader, or None for plain weights."""
        return None if self.bits is None else (self.bits, self.group_size)


QUANTIZATIONS = {
    "4": Quantization("4", "q4", "model.q4.safetensors", 4, 32, 4 + 2 * 16 / 32),
    "8": Quantization("8", "q8", "model.q8.safetensors", 8, 64, 8 + 2 * 16 / 64),
    "bf16": Quantization("bf16", "bf16", "model.safetensors", None, None, 16),
}


def check_dtype(dtype: str) -> None:
    """ConfigError unless `dtype` (a --dtype value) is one of DTYPE_BYTES."""
    if dtype not in DTYPE_BYTES:
        valid = ", ".join(DTYPE_BYTES)
        raise ConfigError(f"--dtype {dtype} is not supported; use one of {valid}")


def local_file(path: str | Path, flag: str) -> Path:
    """`path` (with ~ expanded) if it is a file, else a WeightsError naming `flag`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{flag} {path}: file not found")
    return path


def optional_local_file(path: str | Path | None, flag: str) -> Path | None:
    """`local_file(path, flag)`, or None when the flag was not given."""
    return None if path is None else local_file(path, flag)


def load_safetensors(path: str | Path) -> dict[str, mx.array]:
    """Read every tensor of a safetensors file, with a clear error for a bad path or format."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: expected a .safetensors file")
    try:
        return mx.load(str(path), format="safetensors")
    # mlx raises plain RuntimeError/ValueError for corrupt files
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def _first(keys: set[str]) -> str:
    shown = sorted(keys)[:MAX_KEYS_SHOWN]
    more = f" (+{len(keys) - len(shown)} more)" if len(keys) > len(shown) else ""
    return ", ".join(shown) + more


def check_weights(
    expected: dict[str, tuple[int, ...]],
    weights: dict[str, mx.array],
    source: str | Path,
) -> None:
    """Raise one WeightsError naming `source` and the first missing/unexpected/misshapen keys."""
    missing = expected.keys() - weights.keys()
    unexpected = weights.keys() - expected.keys()
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if problems:
        raise WeightsError(
            f"{source}: does not match the model; " + "; ".join(problems)
        )
    bad = [
        f"{k} has shape {tuple(weights[k].shape)}, expected {expected[k]}"
        for k in sorted(expected)
        if tuple(weights[k].shape) != tuple(expected[k])
    ]
    if bad:
        more = (
            f" (+{len(bad) - MAX_KEYS_SHOWN} more)" if len(bad) > MAX_KEYS_SHOWN else ""
        )
        raise WeightsError(
            f"{source}: shape mismatch: " + "; ".join(bad[:MAX_KEYS_SHOWN]) + more
        )


def load_strict(
    model: nn.Module, weights: dict[str, mx.array], source: str | Path
) -> None:
    """Load `weights` into `model` after checking that keys and shapes match exactly."""
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    check_weights(expected, weights, source)
    model.load_weights(list(weights.items()), strict=True)


@functools.cache
def hub_connection_error() -> str | None:
    """Why the Hugging Face hub cannot be reached (None: it answers); asked once."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # no DNS, no route, timeout, proxy or TLS failure
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"{constants.ENDPOINT}: {reason}"
    return None  # any HTTP answer, even an error status: the network works


def hub_offline(offline: bool = False) -> bool:
    """Whether only the local cache may be used: `offline`, or HF_HUB_OFFLINE set."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def hub_file(repo: str, filename: str, offline: bool = False) -> Path:
    """Return the local path of `filename` from Hugging Face repo `repo`, downloading if needed.

    Downloads show a progress bar, and one whose connection drops resumes where it
    stopped; with `offline` (or HF_HUB_OFFLINE=1) only the local cache is used, and so
    it is, quietly, when the hub cannot be reached.
    """
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline = hub_offline(offline)
    try:
        return _download(repo, filename, offline)
    except LocalEntryNotFoundError as exc:
        raise WeightsError(_not_cached(repo, filename, offline, exc)) from None
    except EntryNotFoundError:
        raise WeightsError(f"{repo} has no file {filename}") from None


def optional_hub_file(repo: str, filename: str, offline: bool = False) -> Path | None:
    """`hub_file` for a file a repo may lack: None when the repo has none, or when it
    is not cached and the hub cannot be asked."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return _download(repo, filename, hub_offline(offline))
    except EntryNotFoundError:  # LocalEntryNotFoundError too: not cached, not asked
        return None


def cached_hub_file(repo: str, filename: str) -> Path | None:
    """The cached copy of a hub file (None if it is not downloaded); never asks the hub."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename)
    return Path(cached) if isinstance(cached, str) else None


def hub_file_size(repo: str, filename: str, offline: bool = False) -> int | None:
    """Bytes of a hub file as the hub reports them, without downloading it.

    None offline, when the hub cannot be reached or does not say: the download
    reports the problem.
    """
    if hub_offline(offline) or hub_connection_error() is not None:
        return None
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        return get_hf_file_metadata(hf_hub_url(repo, filename)).size
    except Exception:  # no network: the download step says so
        return None


def _download(repo: str, filename: str, offline: bool) -> Path:
    """`hf_hub_download`; every failure but a missing file as a one-line WeightsError."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    local_only = offline or hub_connection_error() is not None
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=local_only))
    except EntryNotFoundError:
        # the callers say what a missing file means
        raise
    except GatedRepoError:
        raise WeightsError(
            f"{repo} is gated: accept its conditions on its Hugging Face page, then "
            "log in with `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        # the Hub answers the same for a private repo and a missing one
        raise WeightsError(
            f"Hugging Face repo {repo} not found (if it is private, log in with "
            "`hf auth login`)"
        ) from None
    except HfHubHTTPError as exc:
        raise WeightsError(
            f"could not fetch {repo}/{filename}: {_http_status(exc)}"
        ) from None
    except KeyboardInterrupt:
        raise WeightsError(
            f"download of {repo}/{filename} interrupted; run again to download it"
        ) from None
    except Exception as exc:  # the connection lost for good, a full disk, ...
        raise WeightsError(
            f"download of {repo}/{filename} failed ({_one_line(exc)}); "
            "run again to download it"
        ) from None


def _not_cached(repo: str, filename: str, offline: bool, exc: Exception) -> str:
    """Why a file that is not cached could not be downloaded either."""
    from huggingface_hub.errors import HfHubHTTPError

    if offline:
        return (
            f"{repo}/{filename} is not in the Hugging Face cache and offline mode is "
            "on; run once online or pass a local file"
        )
    reason = hub_connection_error()
    if reason is not None:
        return (
            f"could not download {repo}/{filename}: no network and not cached "
            f"({reason}); connect to the internet or pass a local file"
        )
    cause = exc.__cause__
    if isinstance(cause, HfHubHTTPError):
        reason = _http_status(cause)
    else:
        reason = _one_line(cause or exc)
    return (
        f"could not download {repo}/{filename} and it is not cached: {reason}; "
        "try again later or pass a local file"
    )


def _http_status(exc: Exception) -> str:
    """What the hub answered, e.g. "https://huggingface.co answered HTTP 503 …"."""
    from huggingface_hub import constants

    response = getattr(exc, "response", None)
    if response is None:
        return _one_line(exc)
    return (
        f"{constants.ENDPOINT} answered HTTP {response.status_code} "
        f"{response.reason_phrase}".rstrip()
    )


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name if it has none)."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
