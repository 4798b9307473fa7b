#!/usr/bin/env bash
# Runs the TorchRL parity tests under every BLAS kernel and ATen CPU capability this CPU can
# run: the last bits of float32 results depend on both, and the tolerances must hold for all.
#   scripts/parity_matrix.sh BUILD_DIR
# OpenBLAS (Debian's LibTorch) picks its kernel from OPENBLAS_CORETYPE; MKL (pip's LibTorch)
# from MKL_ENABLE_INSTRUCTIONS; ATen its vector width from ATEN_CPU_CAPABILITY. Each runs with
# one thread, as the reference files were made.
set -euo pipefail
build="${1:?usage: scripts/parity_matrix.sh BUILD_DIR}"
tests="$build/tests/rlobj_tests"
flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
has() { [[ " $flags " == *" $1 "* ]]; }

capabilities=(default)
has avx2 && capabilities+=(avx2)
has avx512f && has avx512bw && has avx512vl && has avx512dq && capabilities+=(avx512)
blas_kernels=(Prescott)
has avx2 && blas_kernels+=(Haswell)
has avx512f && blas_kernels+=(SkylakeX)
mkl_kernels=(SSE4_2)
has avx2 && mkl_kernels+=(AVX2)
has avx512f && mkl_kernels+=(AVX512)

failed=0
runs=0
for cap in "${capabilities[@]}"; do
  for i in "${!blas_kernels[@]}"; do
    blas="${blas_kernels[$i]}"
    mkl="${mkl_kernels[$i]}"
    echo "== ATEN_CPU_CAPABILITY=$cap OPENBLAS_CORETYPE=$blas MKL_ENABLE_INSTRUCTIONS=$mkl"
    runs=$((runs + 1))
    if ! ATEN_CPU_CAPABILITY="$cap" OPENBLAS_CORETYPE="$blas" MKL_ENABLE_INSTRUCTIONS="$mkl" \
         OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RLOBJ_PARITY_REPORT=1 \
         "$tests" "[parity]~[mutation]" --reporter compact; then
      failed=$((failed + 1))
    fi
  done
done
echo "parity: $((runs - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
