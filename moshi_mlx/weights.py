"""Weight files: safe safetensors reads, strict loading into a module, Hugging Face downloads."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .errors import WeightsError

MAX_KEYS_SHOWN = 5
# How long the one request checking that the Hugging Face hub answers may take: without
# it, a download with no network retries for about 25 s before giving up.
HUB_PROBE_TIMEOUT_S = 3.0


def load_safetensors(path: str | Path) -> dict[str, mx.array]:
    """Read every tensor of a safetensors file, with a clear error for a bad path or format."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: expected a .safetensors file")
    try:
        return mx.load(str(path), format="safetensors")
    except Exception as exc:  # mlx raises plain RuntimeError/ValueError for corrupt files
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def _first(keys: set[str]) -> str:
    shown = sorted(keys)[:MAX_KEYS_SHOWN]
    more = f" (+{len(keys) - len(shown)} more)" if len(keys) > len(shown) else ""
    return ", ".join(shown) + more


def check_weights(
    expected: dict[str, tuple[int, ...]], weights: dict[str, mx.array], source: str | Path
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
        raise WeightsError(f"{source}: does not match the model; " + "; ".join(problems))
    bad = [
        f"{k} has shape {tuple(weights[k].shape)}, expected {expected[k]}"
        for k in sorted(expected)
        if tuple(weights[k].shape) != tuple(expected[k])
    ]
    if bad:
        more = f" (+{len(bad) - MAX_KEYS_SHOWN} more)" if len(bad) > MAX_KEYS_SHOWN else ""
        raise WeightsError(
            f"{source}: shape mismatch: " + "; ".join(bad[:MAX_KEYS_SHOWN]) + more
        )


def load_strict(model: nn.Module, weights: dict[str, mx.array], source: str | Path) -> None:
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
