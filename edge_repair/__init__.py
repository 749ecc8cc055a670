"""edge-repair: on-device interactive machine unlearning (RePAIR / STAMP) on MLX."""

from edge_repair._blas import preload_blas

# Must run before anything imports mlx.core (see _blas.py).
preload_blas()

__version__ = "0.1.0"
