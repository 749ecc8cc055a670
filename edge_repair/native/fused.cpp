// RoPE, RMSNorm and SwiGLU for MLX on a CPU, each one pass over its rows.
//
// MLX's CPU backend has no kernels for mx.fast.rope or mx.fast.rms_norm: it runs them as chains of
// small ops (measured on a 2-core x86: ~48 µs a RoPE and ~18 µs an RMSNorm on one decoding
// token, 60 and 61 of them a token), and its fused elementwise loops are compiled for plain SSE2
// (a SwiGLU over 416×1536 floats: ~1.8 ms, as long as the matmul before it). These compute the
// same float operations in the same order, each result rounded as MLX rounds it, so outputs are
// bit-identical to MLX's (checked on load, see __init__.py): no product is fused into an add
// (built with -ffp-contract=off), and a row's sum of squares is added up in order, as MLX's CPU
// reduction does.

#include "fused.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "mlx/backend/cpu/encoder.h"
#include "mlx/fast.h"
#include "mlx/primitives.h"
#include "mlx/transforms.h"

using namespace mlx::core;

namespace {

void check_cpu_f32(const array& a, const char* what) {
  if (a.dtype() != float32) throw std::invalid_argument(std::string(what) + ": inputs must be float32");
}

Stream cpu_stream(const char* what) {
  const Stream stream = to_stream(StreamOrDevice{});
  if (stream.device != Device::cpu) throw std::invalid_argument(std::string(what) + " runs on the CPU only");
  return stream;
}

// a's elements in row-major order: a's own buffer when it is row-contiguous, else a copy into
// `scratch` (the graph is built before strides are known: a transposed input shows up here).
struct Elements {
  const float* data;
  Shape shape;
  Strides strides;
  bool row_contiguous;

  explicit Elements(const array& a)
      : data(a.data<float>()), shape(a.shape()), strides(a.strides()), row_contiguous(a.flags().row_contiguous) {}

  const float* row_major(std::vector<float>& scratch) const {
    if (row_contiguous) return data;
    size_t size = 1;
    for (int n : shape) size *= n;
    scratch.resize(size);
    std::vector<int> index(shape.size(), 0);
    for (size_t i = 0; i < size; ++i) {
      int64_t at = 0;
      for (size_t d = 0; d < shape.size(); ++d) at += index[d] * strides[d];
      scratch[i] = data[at];
      for (int d = int(shape.size()) - 1; d >= 0 && ++index[d] == shape[d]; --d) index[d] = 0;
    }
    return scratch.data();
  }
};

// Allocates `out` and registers the arrays with the stream's encoder; returns it for dispatch.
cpu::CommandEncoder& encoder_for(const Stream& stream, const std::vector<array>& inputs, array& out) {
  out.set_data(allocator::malloc(out.nbytes()));
  auto& encoder = cpu::get_command_encoder(stream);
  for (const auto& a : inputs) encoder.set_input_array(a);
  encoder.set_output_array(out);
  return encoder;
}

// Rotates x (B, H, T, D; any strides) by a table of (cos, sin) pairs
// (Bt, T, dims): [c0, s0, c1, s1, …], Bt = 1 or B. `forward` as mx.fast.rope's; its inverse is
// the gradient. The first `dims` features rotate, pairwise (traditional) or half against half.
class RopeRotate : public UnaryPrimitive {
 public:
  RopeRotate(Stream stream, int dims, bool traditional, bool forward)
      : UnaryPrimitive(stream), dims_(dims), traditional_(traditional), forward_(forward) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    const array &x = inputs[0], &table = inputs[1];
    auto& encoder = encoder_for(stream(), inputs, out);
    const int B = x.shape(0), H = x.shape(1), T = x.shape(2), D = x.shape(3);
    const int64_t sb = x.strides(0), sh = x.strides(1), st = x.strides(2), sd = x.strides(3);
    const int64_t table_batch = table.shape(0) == 1 ? 0 : int64_t(T) * dims_;
    encoder.dispatch([x = x.data<float>(), table = Elements(table), y = out.data<float>(), B, H, T, D, sb, sh, st, sd,
                      table_batch, dims = dims_, traditional = traditional_, forward = forward_]() {
      std::vector<float> scratch;
      const float* c = table.row_major(scratch);
      const int half = dims / 2;
      // traditional: pairs (2i, 2i+1); otherwise (i, i + half)
      const int step = traditional ? 2 : 1, other = traditional ? 1 : half;
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
          for (int t = 0; t < T; ++t) {
            const float* row = x + b * sb + h * sh + t * st;
            const float* cs = c + b * table_batch + int64_t(t) * dims;
            float* o = y + ((int64_t(b) * H + h) * T + t) * D;
            for (int i = 0; i < half; ++i) {
              const float x1 = row[i * step * sd], x2 = row[(i * step + other) * sd];
              const float cos = cs[2 * i], sin = cs[2 * i + 1];
              if (forward) {
                o[i * step] = x1 * cos - x2 * sin;
                o[i * step + other] = x1 * sin + x2 * cos;
              } else {
                o[i * step] = x2 * sin + x1 * cos;
                o[i * step + other] = x2 * cos - x1 * sin;
              }
            }
            for (int i = dims; i < D; ++i) o[i] = row[i * sd];
          }
    });
  }

  void eval_gpu(const std::vector<array>&, array&) override { throw std::runtime_error("rope_rotate runs on the CPU only"); }
  const char* name() const override { return "RopeRotate"; }

  bool is_equivalent(const Primitive& other) const override {
    auto& o = static_cast<const RopeRotate&>(other);
    return dims_ == o.dims_ && traditional_ == o.traditional_ && forward_ == o.forward_;
  }

  // The rotation is orthogonal: its gradient is the inverse rotation (mx.fast.rope's too).
  std::vector<array> vjp(const std::vector<array>& primals, const std::vector<array>& cotangents,
                         const std::vector<int>& argnums, const std::vector<array>&) override {
    for (int arg : argnums)
      if (arg != 0) throw std::invalid_argument("rope_rotate: the cos/sin table has no gradient");
    return {array(cotangents[0].shape(), float32,
                  std::make_shared<RopeRotate>(stream(), dims_, traditional_, !forward_),
                  {cotangents[0], primals[1]})};
  }

 private:
  int dims_;
  bool traditional_, forward_;
};

// out = x · (1/√(mean(x²) + eps)) · weight per row of x (…, D).
class RmsNorm : public UnaryPrimitive {
 public:
  RmsNorm(Stream stream, float eps) : UnaryPrimitive(stream), eps_(eps) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    const array &x = inputs[0], &weight = inputs[1];
    auto& encoder = encoder_for(stream(), inputs, out);
    const int D = x.shape(-1);
    const int64_t rows = x.size() / D;
    encoder.dispatch([input = Elements(x), weight = Elements(weight), y = out.data<float>(), rows, D, eps = eps_]() {
      std::vector<float> x_scratch, w_scratch;
      const float *x = input.row_major(x_scratch), *w = weight.row_major(w_scratch);
      const float inverse_count = static_cast<float>(1.0 / D);  // mean = sum · (1/D), as MLX computes it
      constexpr int BLOCK = 8;  // rows summed side by side: each sum stays in order, the adds overlap
      for (int64_t r0 = 0; r0 < rows; r0 += BLOCK) {
        const int n = int(rows - r0 < BLOCK ? rows - r0 : BLOCK);
        float sums[BLOCK] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < D; ++j)
          for (int r = 0; r < n; ++r) {
            const float v = x[(r0 + r) * D + j];
            sums[r] += v * v;
          }
        for (int r = 0; r < n; ++r) {
          const float scale = 1.0f / std::sqrt(sums[r] * inverse_count + eps);
          const float* row = x + (r0 + r) * D;
          float* o = y + (r0 + r) * D;
          for (int j = 0; j < D; ++j) o[j] = row[j] * scale * w[j];
        }
      }
    });
  }

  void eval_gpu(const std::vector<array>&, array&) override { throw std::runtime_error("rms_norm runs on the CPU only"); }
  const char* name() const override { return "RmsNorm"; }
  bool is_equivalent(const Primitive& other) const override { return eps_ == static_cast<const RmsNorm&>(other).eps_; }

  // MLX's own gradient of mx.fast.rms_norm (the fine-tunes of the baselines train through it).
  std::vector<array> vjp(const std::vector<array>& primals, const std::vector<array>& cotangents,
                         const std::vector<int>& argnums, const std::vector<array>&) override {
    const float eps = eps_;
    auto norm = [eps](const std::vector<array>& in) { return std::vector<array>{fast::rms_norm(in[0], in[1], eps)}; };
    auto grads = mlx::core::vjp(norm, primals, cotangents).second;
    std::vector<array> picked;
    for (int arg : argnums) picked.push_back(grads[arg]);
    return picked;
  }

 private:
  float eps_;
};

// silu(gate)·up with edge_repair/cpu_swiglu.py's exp, operation for operation (its constants,
// rounded to float32 as MLX rounds Python floats).
constexpr float LOG2E = 1.4426950408889634f, ROUNDING = 12582912.0f;
constexpr float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
constexpr float EXP_POLY[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline float polynomial_exp(float z) {
  z = z < -87.0f ? -87.0f : (z > 88.0f ? 88.0f : z);
  const float k = (z * LOG2E + ROUNDING) - ROUNDING;
  const float r = z - k * LN2_HI - k * LN2_LO;
  float p = EXP_POLY[0];
  for (int i = 1; i < 6; ++i) p = p * r + EXP_POLY[i];
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, 4);
  return p * two_k;
}

class SwiGlu : public UnaryPrimitive {
 public:
  explicit SwiGlu(Stream stream) : UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    const array &gate = inputs[0], &up = inputs[1];
    auto& encoder = encoder_for(stream(), inputs, out);
    encoder.dispatch([gate = Elements(gate), up = Elements(up), y = out.data<float>(), n = int64_t(out.size())]() {
      std::vector<float> g_scratch, u_scratch;
      const float *g = gate.row_major(g_scratch), *u = up.row_major(u_scratch);
      for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + polynomial_exp(-g[i])) * u[i];
    });
  }

  void eval_gpu(const std::vector<array>&, array&) override { throw std::runtime_error("swiglu runs on the CPU only"); }
  const char* name() const override { return "SwiGlu"; }
  bool is_equivalent(const Primitive&) const override { return true; }
  // No vjp: cpu_swiglu wraps it in an mx.custom_function that has its own.
};

}  // namespace

namespace fused {

array rope_rotate(const array& x, const array& table, int dims, bool traditional, bool forward) {
  const Stream stream = cpu_stream("rope_rotate");
  check_cpu_f32(x, "rope_rotate");
  check_cpu_f32(table, "rope_rotate");
  if (x.ndim() != 4 || dims <= 0 || dims % 2 || dims > x.shape(3))
    throw std::invalid_argument("rope_rotate: x must be (B, H, T, D) and dims even, at most D");
  if (table.ndim() != 3 || (table.shape(0) != 1 && table.shape(0) != x.shape(0)) || table.shape(1) != x.shape(2) ||
      table.shape(2) != dims)
    throw std::invalid_argument("rope_rotate: the table must be (1 or B, T, dims)");
  return array(x.shape(), float32, std::make_shared<RopeRotate>(stream, dims, traditional, forward), {x, table});
}

array rms_norm(const array& x, const array& weight, float eps) {
  const Stream stream = cpu_stream("rms_norm");
  check_cpu_f32(x, "rms_norm");
  check_cpu_f32(weight, "rms_norm");
  if (x.ndim() < 1 || weight.ndim() != 1 || weight.shape(0) != x.shape(-1))
    throw std::invalid_argument("rms_norm: weight must be (D,) for x (…, D)");
  return array(x.shape(), float32, std::make_shared<RmsNorm>(stream, eps), {x, weight});
}

array swiglu(const array& gate, const array& up) {
  const Stream stream = cpu_stream("swiglu");
  check_cpu_f32(gate, "swiglu");
  check_cpu_f32(up, "swiglu");
  if (gate.shape() != up.shape()) throw std::invalid_argument("swiglu: gate and up must have one shape");
  return array(gate.shape(), float32, std::make_shared<SwiGlu>(stream), {gate, up});
}

}  // namespace fused
