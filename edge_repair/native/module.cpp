// The Python module of edge-repair's native CPU kernels (built by __init__.py).

#include <nanobind/nanobind.h>

#include "fused.h"
#include "quantized_matmul.h"

namespace nb = nanobind;

NB_MODULE(_kernels, m) {
  m.doc() = "edge-repair's CPU kernels for MLX";
  m.def("quantized_matmul_rows", &quantized::matmul_rows, nb::arg("x"), nb::arg("w"), nb::arg("scales"),
        nb::arg("biases"), nb::arg("dense"), nb::arg("group_size"), nb::arg("bits"),
        "x @ dense.T read from dense's quantized form w, scales, biases; only gradients read dense");
  m.def("rope_rotate", &fused::rope_rotate, nb::arg("x"), nb::arg("table"), nb::arg("dims"), nb::arg("traditional"),
        nb::arg("forward") = true, "x (B, H, T, D) rotated by a (1 or B, T, dims) table of interleaved cos, sin");
  m.def("rms_norm", &fused::rms_norm, nb::arg("x"), nb::arg("weight"), nb::arg("eps"), "mx.fast.rms_norm, float32");
  m.def("swiglu", &fused::swiglu, nb::arg("gate"), nb::arg("up"), "silu(gate) * up with cpu_swiglu's exp, float32");
}
