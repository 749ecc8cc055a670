// A quantized matmul for MLX on a CPU, for a few rows at a time (a decoding step).
//
// On CPU-only MLX edge-repair computes with f32 copies of the weights (BLAS), and a decoding
// step then reads ~0.55 GB of weights for a 135M model: ~23 tokens/s on a 2-core x86 (MLX's
// own CPU kernel for quantized weights: ~1.5 GMAC/s, ~10 tokens/s). This kernel reads the 4- or
// 8-bit weights themselves (~6x fewer bytes) and rebuilds each weight exactly as the f32 copy
// holds it (scale·q + bias in f32: loading.to_float32), so the two paths differ only in the
// order of their float additions.
//
// Layout (MLX's affine quantization): w (N, K·bits/32) uint32, each word holding 32/bits values,
// the lowest bits first; scales, biases (N, K/G) per group of G along K (f32, f16 or bf16, all
// exact in f32). y (M, N) = x (M, K) · Wᵀ.

#include "quantized_matmul.h"
#include "workers.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define ER_SIMD 1
#endif

#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

using namespace mlx::core;

namespace {

enum ScaleType { F32 = 0, F16 = 1, BF16 = 2 };

inline float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float f16_to_f32(uint16_t h) {
#ifdef ER_SIMD
  return _cvtsh_ss(h);
#else
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
  if (exp == 0)  // zero or subnormal: man·2⁻²⁴ is exact in f32
    return (sign ? -1.f : 1.f) * float(man) * 5.9604644775390625e-08f;
  if (exp == 31) return from_bits(sign | 0x7f800000u | (man << 13));
  return from_bits(sign | ((exp + 112) << 23) | (man << 13));
#endif
}

inline float bf16_to_f32(uint16_t h) { return from_bits(uint32_t(h) << 16); }

// One row's scales and biases as float32 (a row has K/G of each: a few dozen).
void row_params(const void* scales, const void* biases, int type, size_t offset, int groups, float* s, float* b) {
  if (type == F32) {
    std::memcpy(s, static_cast<const float*>(scales) + offset, sizeof(float) * groups);
    std::memcpy(b, static_cast<const float*>(biases) + offset, sizeof(float) * groups);
    return;
  }
  const uint16_t* hs = static_cast<const uint16_t*>(scales) + offset;
  const uint16_t* hb = static_cast<const uint16_t*>(biases) + offset;
  int g = 0;
#ifdef ER_SIMD
  if (type == F16)
    for (; g + 8 <= groups; g += 8) {
      _mm256_storeu_ps(s + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(hs + g))));
      _mm256_storeu_ps(b + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(hb + g))));
    }
#endif
  for (; g < groups; ++g) {
    s[g] = type == F16 ? f16_to_f32(hs[g]) : bf16_to_f32(hs[g]);
    b[g] = type == F16 ? f16_to_f32(hb[g]) : bf16_to_f32(hb[g]);
  }
}

// x in the order a row's packed bytes unpack: at 4 bits, per 32 values, the 16 low nibbles
// (values 0, 2, …, 30) then the 16 high ones; at 8 bits, as is.
void prepare_rows(const float* x, float* xr, int M, int K, int bits) {
  if (bits == 8) {
    std::memcpy(xr, x, sizeof(float) * size_t(M) * K);
    return;
  }
  for (size_t c = 0; c < size_t(M) * K; c += 32)
    for (int i = 0; i < 16; ++i) {
      xr[c + i] = x[c + 2 * i];
      xr[c + 16 + i] = x[c + 2 * i + 1];
    }
}

#ifdef ER_SIMD
#if defined(__AVX512F__) && defined(__AVX512BW__)
using Vec = __m512;
using Ints = __m512i;
constexpr int LANES = 16;
inline Vec load(const float* x) { return _mm512_loadu_ps(x); }
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec splat(float v) { return _mm512_set1_ps(v); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float total(Vec a) { return _mm512_reduce_add_ps(a); }
inline Vec iota() { return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
inline Ints widen(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline Vec to_float(Ints i) { return _mm512_cvtepi32_ps(i); }
// The 16-entry table of a group's weights, looked up by each lane's 4-bit value.
struct Table {
  Vec entries;
  Vec operator()(Ints index) const { return _mm512_permutexvar_ps(index, entries); }
};
inline Ints high_nibbles(Ints bytes) { return _mm512_srli_epi32(bytes, 4); }  // lookups read 4 index bits
#else
using Vec = __m256;
using Ints = __m256i;
constexpr int LANES = 8;
inline Vec load(const float* x) { return _mm256_loadu_ps(x); }
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec splat(float v) { return _mm256_set1_ps(v); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float total(Vec a) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(half, _mm_shuffle_ps(half, half, 1)));
}
inline Vec iota() { return _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7); }
inline Ints widen(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
inline Vec to_float(Ints i) { return _mm256_cvtepi32_ps(i); }
struct Table {  // 16 entries in two halves; bit 3 of the index picks the half
  Vec low, high;
  Vec operator()(Ints index) const {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, index), _mm256_permutevar8x32_ps(high, index),
                            _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
  }
};
inline Ints high_nibbles(Ints bytes) { return _mm256_srli_epi32(bytes, 4); }  // lookups read 4 index bits
#endif

// scale·q + bias as MLX dequantizes with f32 scales: a product, then a sum (two roundings, no fma).
inline Vec weights(Vec q, Vec scale, Vec bias) { return add(mul(q, scale), bias); }

inline Table table(Vec scale, Vec bias) {  // a group's weights for q = 0..15
#if defined(__AVX512F__) && defined(__AVX512BW__)
  return {weights(iota(), scale, bias)};
#else
  return {weights(iota(), scale, bias), weights(add(iota(), splat(8.f)), scale, bias)};
#endif
}

// Rows r < R of y (G a multiple of 32). At 4 bits each group's 16
// possible weights are computed once and each value is a table lookup; at 8 bits each weight is
// computed. Two sums per row: one chain of adds would wait on its own latency.
template <int BITS, int R>
void rows_simd(const float* xr, const uint8_t* w, const void* scales, const void* biases, int type, float* y, int n0,
               int n1, int N, int K, int G) {
  const int groups = K / G, row_bytes = K * BITS / 8;
  constexpr int PIECES = 32 / LANES;  // vectors per 32 values
  thread_local std::vector<float> s, b;
  s.resize(groups);
  b.resize(groups);
  for (int n = n0; n < n1; ++n) {
    row_params(scales, biases, type, size_t(n) * groups, groups, s.data(), b.data());
    const uint8_t* row = w + size_t(n) * row_bytes;
    Vec acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = zero();
    for (int g = 0; g < groups; ++g) {
      const Vec scale = splat(s[g]), bias = splat(b[g]);
      const Table lookup = BITS == 4 ? table(scale, bias) : Table{};
      for (int c = 0; c < G; c += 32) {
        const uint8_t* p = row + (size_t(g) * G + c) * BITS / 8;
        Vec q[PIECES];
        if (BITS == 4) {
          for (int i = 0; i < PIECES / 2; ++i) {  // the low nibbles, then the high ones, of 16 bytes
            const Ints bytes = widen(p + i * LANES);
            q[i] = lookup(bytes);
            q[PIECES / 2 + i] = lookup(high_nibbles(bytes));
          }
        } else {
          for (int i = 0; i < PIECES; ++i) q[i] = weights(to_float(widen(p + i * LANES)), scale, bias);
        }
        for (int r = 0; r < R; ++r) {
          const float* x = xr + size_t(r) * K + size_t(g) * G + c;
          for (int i = 0; i < PIECES; ++i) acc[r][i & 1] = fma(q[i], load(x + i * LANES), acc[r][i & 1]);
        }
      }
    }
    for (int r = 0; r < R; ++r) y[size_t(r) * N + n] = total(add(acc[r][0], acc[r][1]));
  }
}

template <int BITS>
void rows_dispatch(int R, const float* xr, const uint8_t* w, const void* scales, const void* biases, int type, float* y,
                   int n0, int n1, int N, int K, int G) {
  switch (R) {
    case 1: rows_simd<BITS, 1>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
    case 2: rows_simd<BITS, 2>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
    case 3: rows_simd<BITS, 3>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
    case 4: rows_simd<BITS, 4>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
    case 5: rows_simd<BITS, 5>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
    case 6: rows_simd<BITS, 6>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
    case 7: rows_simd<BITS, 7>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
    default: rows_simd<BITS, 8>(xr, w, scales, biases, type, y, n0, n1, N, K, G); break;
  }
}
#endif

// Portable: the same weights, one value at a time.
void rows_portable(const float* xr, const uint8_t* w, const void* scales, const void* biases, int type, float* y,
                   int R, int n0, int n1, int N, int K, int G, int bits) {
  const int groups = K / G, row_bytes = K * bits / 8;
  std::vector<float> s(groups), b(groups), q(32), acc(R);
  for (int n = n0; n < n1; ++n) {
    row_params(scales, biases, type, size_t(n) * groups, groups, s.data(), b.data());
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int g = 0; g < groups; ++g)
      for (int c = 0; c < G; c += 32) {
        const uint8_t* p = w + size_t(n) * row_bytes + (size_t(g) * G + c) * bits / 8;
        for (int i = 0; i < 32; ++i) {  // in prepare_rows' order
          const int value = bits == 8 ? p[i] : i < 16 ? (p[i] & 15) : (p[i - 16] >> 4);
          q[i] = s[g] * float(value) + b[g];
        }
        for (int r = 0; r < R; ++r) {
          const float* x = xr + size_t(r) * K + size_t(g) * G + c;
          for (int i = 0; i < 32; ++i) acc[r] += q[i] * x[i];
        }
      }
    for (int r = 0; r < R; ++r) y[size_t(r) * N + n] = acc[r];
  }
}

// Rows of x that share each unpacked chunk of weights.
constexpr int ROWS_PER_PASS = 8;

// Output columns [n0, n1) of y for all M rows of x (already in prepare_rows' order).
void rows_range(const float* xr, const uint8_t* w, const void* scales, const void* biases, int type, float* y, int M,
                int n0, int n1, int N, int K, int G, int bits) {
  for (int m0 = 0; m0 < M; m0 += ROWS_PER_PASS) {
    const int R = std::min(ROWS_PER_PASS, M - m0);
    const float* xp = xr + size_t(m0) * K;
    float* yp = y + size_t(m0) * N;
#ifdef ER_SIMD
    if (bits == 4) rows_dispatch<4>(R, xp, w, scales, biases, type, yp, n0, n1, N, K, G);
    else rows_dispatch<8>(R, xp, w, scales, biases, type, yp, n0, n1, N, K, G);
#else
    rows_portable(xp, w, scales, biases, type, yp, R, n0, n1, N, K, G, bits);
#endif
  }
}

// One row (a chat token) stays on one thread: measured on the default model (2-core x86), it was
// slower split, as the other core builds MLX's next graph meanwhile (README, Speed on Linux).
// Calls under SPLIT_WORK multiply-adds stay too (a guard for small layers, not tuned).
constexpr long SPLIT_WORK = 2L * 576 * 576;

// A call's output columns split among the CPU's cores: several rows (a batched decoding step)
// are compute-bound, and MLX runs a CPU stream's ops on one thread.
void quantized_rows(const float* x, const uint8_t* w, const void* scales, const void* biases, int type, float* y,
                    int M, int N, int K, int G, int bits) {
  std::vector<float> xr(size_t(M) * K);
  prepare_rows(x, xr.data(), M, K, bits);
  const float* xp = xr.data();
  const long work = long(M) * N * K;
  const int parts = (M < 2 || work < SPLIT_WORK) ? 1 : std::min(workers::size(), std::max(1, N / 64));
  workers::run(parts, [&](int part) {
    const int n0 = int(long(N) * part / parts), n1 = int(long(N) * (part + 1) / parts);
    rows_range(xp, w, scales, biases, type, y, M, n0, n1, N, K, G, bits);
  });
}

class QuantizedRows : public UnaryPrimitive {
 public:
  QuantizedRows(Stream stream, int group_size, int bits) : UnaryPrimitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    const array &x = inputs[0], &w = inputs[1], &scales = inputs[2], &biases = inputs[3];
    out.set_data(allocator::malloc(out.nbytes()));
    auto& encoder = cpu::get_command_encoder(stream());
    for (const auto& a : inputs) encoder.set_input_array(a);
    encoder.set_output_array(out);
    const int K = x.shape(-1), M = int(x.size() / K), N = w.shape(0);
    const int type = scales.dtype() == float32 ? F32 : scales.dtype() == float16 ? F16 : BF16;
    encoder.dispatch([x = x.data<float>(), w = w.data<uint8_t>(), s = scales.data<void>(), b = biases.data<void>(),
                      y = out.data<float>(), type, M, N, K, G = group_size_, bits = bits_]() {
      quantized_rows(x, w, s, b, type, y, M, N, K, G, bits);
    });
  }

  void eval_gpu(const std::vector<array>&, array&) override {
    throw std::runtime_error("quantized_rows runs on the CPU only");
  }

  const char* name() const override { return "QuantizedRows"; }

  bool is_equivalent(const Primitive& other) const override {
    auto& o = static_cast<const QuantizedRows&>(other);
    return group_size_ == o.group_size_ && bits_ == o.bits_;
  }

  // Gradients come from the dense f32 weight (input 4, which the forward pass never reads): the
  // same as the f32 layer's, so a fine-tune through a few rows trains it correctly.
  std::vector<array> vjp(const std::vector<array>& primals, const std::vector<array>& cotangents,
                         const std::vector<int>& argnums, const std::vector<array>&) override {
    const array &x = primals[0], &dense = primals[4], &cotangent = cotangents[0];
    const Stream s = stream();
    std::vector<array> grads;
    for (int arg : argnums) {
      if (arg == 0) {
        grads.push_back(matmul(cotangent, dense, s));
      } else if (arg == 4) {
        const int K = x.shape(-1), N = dense.shape(0), M = int(x.size() / K);
        grads.push_back(matmul(transpose(reshape(cotangent, {M, N}, s), s), reshape(x, {M, K}, s), s));
      } else {
        throw std::invalid_argument("quantized_rows: the packed weights, scales and biases have no gradient");
      }
    }
    return grads;
  }

 private:
  int group_size_, bits_;
};

}  // namespace

namespace quantized {

array matmul_rows(const array& x, const array& w, const array& scales, const array& biases, const array& dense,
                  int group_size, int bits) {
  if (bits != 4 && bits != 8) throw std::invalid_argument("quantized_rows: bits must be 4 or 8");
  if (group_size % 32 != 0) throw std::invalid_argument("quantized_rows: group size must be a multiple of 32");
  if (w.dtype() != uint32 || w.ndim() != 2) throw std::invalid_argument("quantized_rows: w must be 2-D uint32");
  const int K = w.shape(1) * 32 / bits;
  if (x.shape(-1) != K || scales.shape() != biases.shape() || scales.shape(0) != w.shape(0) ||
      scales.shape(1) * group_size != K)
    throw std::invalid_argument("quantized_rows: shapes of x, w, scales and biases do not match");
  if (dense.ndim() != 2 || dense.shape(0) != w.shape(0) || dense.shape(1) != K || dense.dtype() != float32)
    throw std::invalid_argument("quantized_rows: dense must be the (N, K) float32 weight");
  if (scales.dtype() != float32 && scales.dtype() != float16 && scales.dtype() != bfloat16)
    throw std::invalid_argument("quantized_rows: scales must be float32, float16 or bfloat16");
  const Stream stream = to_stream(StreamOrDevice{});
  if (stream.device != Device::cpu) throw std::invalid_argument("quantized_rows runs on the CPU only");
  auto shape = x.shape();
  shape.back() = w.shape(0);
  std::vector<array> inputs = {contiguous(astype(x, float32, stream), false, stream), contiguous(w, false, stream),
                               contiguous(scales, false, stream), contiguous(biases, false, stream), dense};
  return array(shape, float32, std::make_shared<QuantizedRows>(stream, group_size, bits), std::move(inputs));
}

}  // namespace quantized
