"""moshi_mlx: Kyutai's Moshi (Mimi codec + RQ-Transformer LM) reimplemented in MLX."""

from .blas import use_system_openblas

use_system_openblas()  # before anything imports mlx.core; see blas.py

__version__ = "0.1.0"
