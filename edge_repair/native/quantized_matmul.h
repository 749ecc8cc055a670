// x · denseᵀ for a few rows of x, read from dense's MLX-affine quantized form (quantized_matmul.cpp).
#pragma once

#include "mlx/array.h"

namespace quantized {

// w, scales, biases: dense quantized (4 or 8 bits, groups of a multiple of 32); dense: the float32
// weight they dequantize to (scale·q + bias in f32), read only by gradients.
mlx::core::array matmul_rows(const mlx::core::array& x, const mlx::core::array& w, const mlx::core::array& scales,
                             const mlx::core::array& biases, const mlx::core::array& dense, int group_size, int bits);

}  // namespace quantized
