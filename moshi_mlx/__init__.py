"""moshi_mlx: Kyutai's Moshi (Mimi codec + RQ-Transformer LM) reimplemented in MLX."""

__version__ = "0.1.0"
