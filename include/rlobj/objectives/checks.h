#pragma once

/// \file
/// The input checks every loss runs before it computes anything (`LossModuleImpl::forward`):
/// the keys it needs are present, the entries its networks read are floating point in the
/// networks' dtype with a feature dim, and (by `FiniteCheck`) nothing it reads holds NaN or Inf.
/// Errors name the loss, the key, what it got and what was expected.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// input (an `Inf` observation gives a finite loss but NaN gradients) would otherwise poison
/// the networks for good; the check names the entry instead.
enum class FiniteCheck {
  Auto,    ///< on the CPU (one fused reduction, a few us); skipped on accelerators, where
           ///< reading the result back would stall every update on a host sync
  Always,  ///< on every device (one host sync per forward on CUDA)
  Never,   ///< no check
};

namespace detail {

/// Whether every element of a contiguous float32/float64 CPU tensor is finite, by one pass over
/// its memory (`|x| <= max` is false for NaN and +-Inf); nullopt for any other tensor.
template <typename T>
bool all_finite(const T* p, int64_t n) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::abs(p[i]) <= std::numeric_limits<T>::max();
  return ok;
}
inline std::optional<bool> all_finite_cpu(const torch::Tensor& t) {
  if (!t.is_cpu() || !t.is_contiguous()) return std::nullopt;
  if (t.scalar_type() == torch::kFloat) return all_finite(t.data_ptr<float>(), t.numel());
  if (t.scalar_type() == torch::kDouble) return all_finite(t.data_ptr<double>(), t.numel());
  return std::nullopt;
}

/// Throws a `c10::ValueError` naming the first floating entry of `td` among `keys` that holds
/// NaN or Inf (keys absent from `td` are skipped). On the common, finite path this costs one
/// pass over each entry's memory (contiguous float CPU entries), else one sum per entry and
/// one read of a scalar.
inline void check_finite_inputs(const char* loss, const TensorDict& td, const std::vector<NestedKey>& keys,
                                FiniteCheck mode) {
  if (mode == FiniteCheck::Never) return;
  std::vector<std::pair<const NestedKey*, const torch::Tensor*>> inputs;
  for (const auto& key : keys) {
    const torch::Tensor* t = td.find(key);
    if (t != nullptr && t->is_floating_point() && t->numel() > 0) inputs.emplace_back(&key, t);
  }
  if (inputs.empty()) return;
  if (mode == FiniteCheck::Auto && !inputs.front().second->device().is_cpu()) return;
  {
    bool fast = true;
    for (const auto& [key, t] : inputs) {
      const std::optional<bool> finite = all_finite_cpu(*t);
      if (!finite) {
        fast = false;
        break;
      }
      TORCH_CHECK_VALUE(*finite, loss, ": input \"", key->str(), "\" contains NaN or Inf");
    }
    if (fast) return;
  }
  torch::NoGradGuard no_grad;
  // A sum is finite when every term is (an overflow to Inf only sends us to the exact check).
  torch::Tensor total = inputs.front().second->sum();
  for (size_t i = 1; i < inputs.size(); ++i) total = total + inputs[i].second->sum();
  if (std::isfinite(total.item<double>())) return;
  for (const auto& [key, t] : inputs) {
    TORCH_CHECK_VALUE(t->isfinite().all().item<bool>(), loss, ": input \"", key->str(),
                      "\" contains NaN or Inf");
  }
}

/// Checks the entries a loss computes with (its networks' inputs, rewards) before anything is
/// computed: floating point in the networks' dtype (no silent promotion, no LibTorch-internal "expected scalar type"),
/// at least one feature dim after the batch dims (an action of shape `[B]` where `[B, 1]` is
/// meant), and a non-empty batch. Errors name the key, what it got and what was expected.
inline void check_network_inputs(const char* loss, const TensorDict& td, const std::vector<NestedKey>& keys,
                                 torch::Dtype dtype) {
  const int64_t batch_dims = static_cast<int64_t>(td.batch_size().size());
  TORCH_CHECK_VALUE(td.numel() > 0, loss, ": the batch is empty (batch_size ",
                    rlobj::detail::shape_str(td.batch_size()), ")");
  for (const auto& key : keys) {
    const torch::Tensor* t = td.find(key);
    if (t == nullptr) continue;  // reported by the loss's own key check
    TORCH_CHECK_TYPE(t->is_floating_point(), loss, ": input \"", key.str(), "\" is ",
                     rlobj::detail::dtype_str(t->scalar_type()), " but the networks are ",
                     rlobj::detail::dtype_str(dtype), "; convert it (e.g. td.set(key, t.to(",
                     rlobj::detail::dtype_str(dtype), ")))");
    TORCH_CHECK_TYPE(t->scalar_type() == dtype, loss, ": input \"", key.str(), "\" is ",
                     rlobj::detail::dtype_str(t->scalar_type()), " but the networks are ",
                     rlobj::detail::dtype_str(dtype), "; convert the batch (td.to(...)) or the loss (loss->to(...))");
    TORCH_CHECK_VALUE(t->dim() > batch_dims, loss, ": input \"", key.str(), "\" has shape ",
                      rlobj::detail::shape_str(t->sizes()), ", no feature dim after the batch dims ",
                      rlobj::detail::shape_str(td.batch_size()), "; expected [", 
                      fmt::format("{}", fmt::join(td.batch_size(), ", ")), ", F]");
  }
}

/// Throws a clear error naming the first of `keys` missing from `td`.
inline void require_keys(const char* loss, const TensorDict& td, const std::vector<NestedKey>& keys) {
  for (const auto& key : keys) {
    TORCH_CHECK(td.contains(key), loss, ": input key \"", key.str(), "\" not found; keys present: ",
                rlobj::detail::keys_str(td.keys(true)));
  }
}

/// `keys` sorted by their dotted names, each once (a loss's `in_keys()`).
inline std::vector<NestedKey> sorted_unique(std::vector<NestedKey> keys) {
  std::sort(keys.begin(), keys.end(), [](const NestedKey& a, const NestedKey& b) { return a.str() < b.str(); });
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

/// Checks that every parameter of `networks` (name, module) shares one dtype and device (a
/// loss checks its inputs against one dtype, and its flat groups hold one).
inline void check_same_placement(const char* loss,
                                 const std::vector<std::pair<const char*, const torch::nn::Module*>>& networks) {
  std::optional<torch::Tensor> first;
  for (const auto& [name, net] : networks) {
    for (const auto& item : net->named_parameters()) {
      if (!first) first = item.value();
      TORCH_CHECK_VALUE(item.value().scalar_type() == first->scalar_type() && item.value().device() == first->device(),
                        loss, ": ", name, " parameter \"", item.key(), "\" is ",
                        rlobj::detail::dtype_str(item.value().scalar_type()), " on ", item.value().device().str(),
                        " but the networks' first parameter is ", rlobj::detail::dtype_str(first->scalar_type()), " on ",
                        first->device().str(), "; put the networks on one dtype and device");
    }
  }
}

}  // namespace detail

}  // namespace objectives
}  // namespace rlobj
