#pragma once

// Helpers shared by rlobj's tests.

#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace rlobj_test {

/// The elements of `t`, flattened, as doubles (for readable CHECKs).
inline std::vector<double> values(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous().flatten();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

/// The elements of an integer/bool tensor, flattened.
inline std::vector<int64_t> ints(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kInt64).contiguous().flatten();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

}  // namespace rlobj_test
