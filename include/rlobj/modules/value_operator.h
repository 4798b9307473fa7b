#pragma once

/// \file
/// `rlobj::modules::ValueOperator`, TorchRL's `ValueOperator`: a TensorDictModule that writes
/// a state value or a state-action value.

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "rlobj/modules/tensordict_module.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace modules {

namespace detail {
inline std::vector<NestedKey> default_value_out_keys(const std::vector<NestedKey>& in_keys) {
  const bool has_action = std::find(in_keys.begin(), in_keys.end(), NestedKey("action")) != in_keys.end();
  return {has_action ? "state_action_value" : "state_value"};
}
}  // namespace detail

/// A value network: `in_keys` `{"observation"}` by default; the out key is
/// `"state_action_value"` when `"action"` is an in_key, else `"state_value"`. Several in_keys
/// are concatenated on the last dim, in order, for single-input modules such as `MLP`.
///
/// ```
/// auto q = rlobj::modules::ValueOperator(
///     rlobj::modules::MLP(rlobj::modules::MLPOptions(4, 1).num_cells({32, 32})),
///     /*in_keys=*/{"observation", "action"});  // writes "state_action_value", [B, 1]
/// ```
class ValueOperatorImpl : public TensorDictModuleImpl {
 public:
  /// Wraps `module`; empty `out_keys` means `{"state_action_value"}` when `"action"` is an
  /// in_key, else `{"state_value"}`.
  template <typename M>
  explicit ValueOperatorImpl(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                             std::vector<NestedKey> out_keys = {})
      : TensorDictModuleImpl(detail::impl_ptr(module), in_keys,
                             out_keys.empty() ? detail::default_value_out_keys(in_keys)
                                              : std::move(out_keys),
                             0) {
    set_name("ValueOperator");
  }

  /// A deep copy (the wrapped module is cloned too).
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    return clone_as<ValueOperatorImpl>(device);
  }
};

/// Holder of `ValueOperatorImpl`.
class ValueOperator : public detail::TDModuleHolder<ValueOperatorImpl> {
 public:
  using detail::TDModuleHolder<ValueOperatorImpl>::TDModuleHolder;
  /// A `ValueOperatorImpl` around `module` (see its constructor).
  template <typename M, typename = detail::enable_if_module_t<M>>
  explicit ValueOperator(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                         std::vector<NestedKey> out_keys = {})
      : TDModuleHolder(std::make_shared<ValueOperatorImpl>(module, std::move(in_keys),
                                                           std::move(out_keys))) {}
};

}  // namespace modules
}  // namespace rlobj
