#pragma once

/// \file
/// The matrix products of rlobj's fused update engine, on the BLAS LibTorch itself uses: the
/// Fortran `sgemm_` already loaded into the process (Debian's LibTorch links the system BLAS,
/// OpenBLAS; pip's exports its bundled MKL's), found with `dlsym` so that nothing extra is linked
/// and the kernels are LibTorch's own. `gemm` issues exactly the call ATen's `addmm` /
/// `mm` make for the same operands (`addmm_impl_cpu_`'s choice of transposes and leading dims
/// for row-major contiguous matrices), so a product computed here equals LibTorch's bit for bit.

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>

namespace rlobj {
namespace engine {
namespace detail {

/// Fortran BLAS single-precision GEMM (LP64).
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc);

/// The process's `sgemm_`, or null when no BLAS exports one (then the engine is not used).
inline SgemmFn sgemm_fn() {
  static const SgemmFn fn = reinterpret_cast<SgemmFn>(::dlsym(RTLD_DEFAULT, "sgemm_"));
  return fn;
}

/// Why the engine cannot run matrix products here, or empty.
inline std::string blas_unavailable() {
  return sgemm_fn() == nullptr ? "no sgemm_ in the process (LibTorch without an external BLAS)" : std::string();
}

}  // namespace detail

/// The arguments of one `sgemm_` call `gemm` made (column-major, as BLAS takes them).
struct GemmCall {
  char transa = 'n';  ///< A transposed ('t') or not ('n')
  char transb = 'n';  ///< B transposed ('t') or not ('n')
  int m = 0;          ///< rows of C
  int n = 0;          ///< columns of C
  int k = 0;          ///< the inner dim
  int lda = 0;        ///< A's leading dim
  int ldb = 0;        ///< B's leading dim
  int ldc = 0;        ///< C's leading dim
  float alpha = 1;    ///< C = alpha A B + beta C
  float beta = 0;     ///< C = alpha A B + beta C
};

/// Where this thread's `gemm` calls are recorded (null: not recorded, the default). The
/// benchmarks record one update's products and replay them alone: the BLAS floor of an update.
inline std::vector<GemmCall>*& gemm_log() {
  static thread_local std::vector<GemmCall>* log = nullptr;
  return log;
}

/// Calls `sgemm_` with `call`'s arguments on `a`, `b`, `c` (the replay of a recorded call).
inline void sgemm(const GemmCall& call, const float* a, const float* b, float* c) {
  detail::sgemm_fn()(&call.transa, &call.transb, &call.m, &call.n, &call.k, &call.alpha, a, &call.lda, b, &call.ldb,
                     &call.beta, c, &call.ldc);
}

/// A row-major matrix view: `rows x cols` elements at `data`, row `r` at `data + r * ld`, or
/// the transpose of such a matrix (`transposed`: element (i, j) at `data[j * ld + i]`).
struct MatrixView {
  const float* data = nullptr;  ///< the first element
  int64_t rows = 0;             ///< rows of the (possibly transposed) matrix
  int64_t cols = 0;             ///< columns of the (possibly transposed) matrix
  int64_t ld = 0;               ///< elements between rows of the stored row-major matrix
  bool transposed = false;      ///< the view is the transpose of the stored matrix

  /// The stride of dim 0, in elements, as a tensor of this view would have it.
  int64_t stride0() const { return transposed ? 1 : ld; }
  /// The stride of dim 1.
  int64_t stride1() const { return transposed ? ld : 1; }

  /// A row-major `rows x cols` matrix at `data` (leading dim `cols`).
  static MatrixView rows_of(const float* data, int64_t rows, int64_t cols) { return {data, rows, cols, cols, false}; }
  /// The transpose of the row-major `rows x cols` matrix at `data`: a `cols x rows` view.
  static MatrixView transpose_of(const float* data, int64_t rows, int64_t cols) {
    return {data, cols, rows, cols, true};
  }
};

/// `C = alpha * A B + beta * C` for a row-major contiguous `C` (`m x n`, leading dim `n`), with
/// the transposes and leading dims ATen's `addmm_impl_cpu_` picks for these operands, then
/// `cpublas::gemm`'s normalisation of degenerate dims, then `sgemm_` (column-major).
inline void gemm(const MatrixView& a, const MatrixView& b, float* c, float alpha, float beta) {
  const int64_t m_rows = a.rows, n_cols = b.cols;
  TORCH_CHECK(a.cols == b.rows, "engine::gemm: inner dims differ (", a.cols, " vs ", b.rows, ")");
  // The result's strides: (n, 1); ATen's first branch takes it as column-major when it is a
  // column ([m, 1], strides (1, 1)).
  const bool column_result = n_cols == 1;
  MatrixView m1 = a, m2 = b;
  bool transpose_c = false;
  if (!column_result) {
    std::swap(m1, m2);
    transpose_c = true;
  }
  const int64_t m = transpose_c ? n_cols : m_rows;
  const int64_t n = transpose_c ? m_rows : n_cols;
  const int64_t k = transpose_c ? m1.rows : m1.cols;
  const auto s = [&](const MatrixView& v, int i) { return i == 0 ? v.stride0() : v.stride1(); };
  bool transpose_a = false;
  if (s(m1, transpose_c ? 1 : 0) == 1 && s(m1, transpose_c ? 0 : 1) >= std::max<int64_t>(1, m)) {
    transpose_a = false;
  } else if (s(m1, transpose_c ? 0 : 1) == 1 && s(m1, transpose_c ? 1 : 0) >= std::max<int64_t>(1, k)) {
    transpose_a = true;
  } else {
    TORCH_CHECK(false, "engine::gemm: an operand layout ATen would copy");
  }
  bool transpose_b = false;
  if (s(m2, transpose_c ? 1 : 0) == 1 && s(m2, transpose_c ? 0 : 1) >= std::max<int64_t>(1, k)) {
    transpose_b = false;
  } else if (s(m2, transpose_c ? 0 : 1) == 1 && s(m2, transpose_c ? 1 : 0) >= std::max<int64_t>(1, n)) {
    transpose_b = true;
  } else {
    TORCH_CHECK(false, "engine::gemm: an operand layout ATen would copy");
  }
  int64_t lda = s(m1, (transpose_a == transpose_c) ? 1 : 0);
  int64_t ldb = s(m2, (transpose_b == transpose_c) ? 1 : 0);
  int64_t ldc = transpose_c ? n_cols : 1;  // c's strides are (n_cols, 1)
  // cpublas's normalize_last_dims.
  if (n == 1) ldc = m;
  if (transpose_a) {
    if (m == 1) lda = k;
  } else if (k == 1) {
    lda = m;
  }
  if (transpose_b) {
    if (k == 1) ldb = n;
  } else if (n == 1) {
    ldb = k;
  }
  constexpr int64_t int_max = std::numeric_limits<int>::max();  // sgemm_ takes 32-bit ints
  TORCH_CHECK(m <= int_max && n <= int_max && k <= int_max && lda <= int_max && ldb <= int_max && ldc <= int_max,
              "engine::gemm: a dimension beyond the BLAS's 32-bit range (m ", m, ", n ", n, ", k ", k, ")");
  const GemmCall call{transpose_a ? 't' : 'n', transpose_b ? 't' : 'n', static_cast<int>(m), static_cast<int>(n),
                      static_cast<int>(k),  static_cast<int>(lda),       static_cast<int>(ldb), static_cast<int>(ldc),
                      alpha,               beta};
  if (std::vector<GemmCall>* log = gemm_log()) log->push_back(call);
  sgemm(call, m1.data, m2.data, c);
}

}  // namespace engine
}  // namespace rlobj
