#pragma once

/// \file
/// The element-wise passes of rlobj's fused update engine, each one loop over raw float32
/// memory that the compiler vectorises: activations and their derivatives, bias broadcast and
/// column sums, the loss gradients, LibTorch's Adam step and the soft target update. Each
/// evaluates LibTorch's formula in LibTorch's order (`torch::optim::Adam::step`'s
/// `mul_`/`add_`/`addcmul_`/`sqrt`/`div`/`add_`/`addcdiv_`, ...); where ATen's vectorised kernels
/// fuse a multiply-add (`add_(other, alpha)`, on AVX2 and AVX-512), so do these, on CPUs that
/// have FMA.

#include <cmath>
#include <cstdint>
#include <vector>

namespace rlobj {
namespace engine {
namespace kernels {

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__ELF__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
/// Compiled three times (AVX-512, x86-64-v3 = AVX2 with FMA, baseline), the loader picking the
/// best the CPU supports by its features (an `arch=<cpu>` clone would be picked by CPU model
/// only), and vectorised whatever the including project's optimisation level (GCC vectorises
/// loops from -O3 only; these are a header-only library's hot loops). Not under the sanitizers,
/// whose runtimes are not ready when an ifunc resolver runs. An explicit `fmaf` is fused in
/// every clone (an instruction, or libm's exact `fmaf`); elsewhere the FMA clones may fuse a
/// multiply and an add that the baseline rounds twice, as ATen's own AVX2 / AVX-512 kernels do.
#define RLOBJ_ENGINE_CLONES \
  __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default"), optimize("O3", "no-math-errno")))
#elif defined(__GNUC__) && !defined(__clang__)
#define RLOBJ_ENGINE_CLONES __attribute__((optimize("O3", "no-math-errno")))
#else
#define RLOBJ_ENGINE_CLONES
#endif

/// `y = max(y, 0)` in place (ATen's relu: NaN stays NaN).
RLOBJ_ENGINE_CLONES
inline void relu_(float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] <= 0.0f ? 0.0f : y[i];
}

/// `g = y <= 0 ? 0 : g` (ATen's `threshold_backward(g, y, 0)`, from the activation's output).
RLOBJ_ENGINE_CLONES
inline void relu_backward_(float* __restrict g, const float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = y[i] <= 0.0f ? 0.0f : g[i];
}

/// `g = g * (1 - y * y)` (ATen's `tanh_backward(g, y)`).
RLOBJ_ENGINE_CLONES
inline void tanh_backward_(float* __restrict g, const float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float yy = y[i] * y[i];
    const float d = 1.0f - yy;
    g[i] = g[i] * d;
  }
}

/// Every row of the row-major `rows x cols` `out` set to `b` (the bias `addmm` starts from).
RLOBJ_ENGINE_CLONES
inline void broadcast_rows(float* __restrict out, const float* __restrict b, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) o[c] = b[c];
  }
}

/// `out[c] = sum_r g[r][c]` over a row-major `rows x cols` `g`, accumulated in double (more
/// accurate than ATen's float cascade, so within the rounding that reordering rows causes);
/// `acc` holds `cols` doubles of scratch.
RLOBJ_ENGINE_CLONES
inline void column_sums(float* __restrict out, const float* __restrict g, int64_t rows, int64_t cols,
                        double* __restrict acc) {
  for (int64_t c = 0; c < cols; ++c) acc[c] = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict row = g + r * cols;
    for (int64_t c = 0; c < cols; ++c) acc[c] += static_cast<double>(row[c]);
  }
  for (int64_t c = 0; c < cols; ++c) out[c] = static_cast<float>(acc[c]);
}

/// The moments of one step of `torch::optim::Adam` (amsgrad off) on `n` parameters:
/// `m = m * beta1 + (1 - beta1) g`; `v = v * beta2 + (1 - beta2) g g`, every scalar in float32
/// as ATen converts it; `weight_decay` adds `weight_decay * p` to the gradient first. Then
/// `sqrt(v)` (ATen's own kernel: GCC does not vectorise a `sqrtf` that may set `errno`) and
/// `adam_apply`.
RLOBJ_ENGINE_CLONES
inline void adam_moments(const float* __restrict p, const float* __restrict g, float* __restrict m,
                         float* __restrict v, int64_t n, float beta1, float one_minus_beta1, float beta2,
                         float one_minus_beta2, float weight_decay) {
  for (int64_t i = 0; i < n; ++i) {
    const float grad = weight_decay != 0.0f ? __builtin_fmaf(p[i], weight_decay, g[i]) : g[i];
    m[i] = __builtin_fmaf(grad, one_minus_beta1, m[i] * beta1);
    v[i] = v[i] * beta2 + (one_minus_beta2 * grad) * grad;
  }
}

/// The parameter move of Adam's step, from `sqrt_v`:
/// `p = p + (-step_size) m / (sqrt_v / sqrt(bias_correction2) + eps)` (LibTorch's
/// `addcdiv_(exp_avg, denom, -step_size)`).
RLOBJ_ENGINE_CLONES
inline void adam_apply(float* __restrict p, const float* __restrict m, const float* __restrict sqrt_v, int64_t n,
                       float sqrt_bias_correction2, float eps, float neg_step_size) {
  for (int64_t i = 0; i < n; ++i) {
    const float denom = sqrt_v[i] / sqrt_bias_correction2 + eps;
    p[i] = p[i] + neg_step_size * m[i] / denom;
  }
}

/// SoftUpdate: `target = target * eps + source * (1 - eps)` (`mul_(eps)` then `add_(source,
/// 1 - eps)`, whose vectorised kernel fuses the multiply-add).
RLOBJ_ENGINE_CLONES
inline void soft_update(float* __restrict target, const float* __restrict source, int64_t n, float eps, float weight) {
  for (int64_t i = 0; i < n; ++i) target[i] = __builtin_fmaf(source[i], weight, target[i] * eps);
}

}  // namespace kernels
}  // namespace engine
}  // namespace rlobj
