#pragma once

/// \file
/// `rlobj::modules::Actor`, TorchRL's `Actor`: a TensorDictModule reading `"observation"` and
/// writing `"action"`.

#include <memory>
#include <utility>
#include <vector>

#include "rlobj/modules/tensordict_module.h"
#include "rlobj/specs.h"

namespace rlobj {
namespace modules {

/// A deterministic policy: `in_keys` `{"observation"}`, `out_keys` `{"action"}` by default.
/// The optional `spec` documents the action space; as in TorchRL (`safe=False`) it does not
/// clamp the output unless `safe` is set.
///
/// ```
/// auto actor = rlobj::modules::Actor(
///     rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({32, 32})));
/// actor(td);  // writes td["action"]
/// ```
class ActorImpl : public TensorDictModuleImpl {
 public:
  template <typename M>
  explicit ActorImpl(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                     std::vector<NestedKey> out_keys = {"action"},
                     std::shared_ptr<const TensorSpec> spec = nullptr, bool safe = false)
      : TensorDictModuleImpl(detail::impl_ptr(module), std::move(in_keys), std::move(out_keys), 0) {
    set_name("Actor");
    set_spec(std::move(spec), safe);
  }

  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    return clone_as<ActorImpl>(device);
  }
};

/// Holder of `ActorImpl`.
class Actor : public detail::TDModuleHolder<ActorImpl> {
 public:
  using detail::TDModuleHolder<ActorImpl>::TDModuleHolder;
  template <typename M, typename = detail::enable_if_module_t<M>>
  explicit Actor(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                 std::vector<NestedKey> out_keys = {"action"},
                 std::shared_ptr<const TensorSpec> spec = nullptr, bool safe = false)
      : TDModuleHolder(std::make_shared<ActorImpl>(module, std::move(in_keys), std::move(out_keys),
                                                   std::move(spec), safe)) {}
};

}  // namespace modules
}  // namespace rlobj
