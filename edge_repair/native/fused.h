// RoPE, RMSNorm and SwiGLU on float32 rows, bit-identical to MLX's CPU results (fused.cpp).
#pragma once

#include "mlx/array.h"

namespace fused {

// x (B, H, T, D) rotated by `table` (1 or B, T, dims): each position's (cos, sin) pairs, interleaved.
mlx::core::array rope_rotate(const mlx::core::array& x, const mlx::core::array& table, int dims, bool traditional,
                             bool forward);
// mx.fast.rms_norm(x, weight, eps).
mlx::core::array rms_norm(const mlx::core::array& x, const mlx::core::array& weight, float eps);
// silu(gate)·up with cpu_swiglu.py's exp; no gradient of its own (its caller defines one).
mlx::core::array swiglu(const mlx::core::array& gate, const mlx::core::array& up);

}  // namespace fused
