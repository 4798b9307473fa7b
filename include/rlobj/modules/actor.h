#pragma once

/// \file
/// `rlobj::modules::Actor`, TorchRL's `Actor`: a TensorDictModule reading `"observation"` and
/// writing `"action"`.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "rlobj/modules/tensordict_module.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

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
  /// Wraps `module` (a module holder or a `shared_ptr` to a LibTorch module); `spec` and `safe`
  /// as in `TensorDictModuleImpl::set_spec`.
  template <typename M>
  explicit ActorImpl(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                     std::vector<NestedKey> out_keys = {"action"},
                     std::shared_ptr<const TensorSpec> spec = nullptr, bool safe = false)
      : TensorDictModuleImpl(detail::impl_ptr(module), std::move(in_keys), std::move(out_keys), 0) {
    set_name("Actor");
    set_spec(std::move(spec), safe);
  }

  /// A deep copy (the wrapped module is cloned too).
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    return clone_as<ActorImpl>(device);
  }
};

/// Squashes its inputs into a box with `tanh` (TorchRL's `TanhModule`):
/// `out = tanh(x) * (high - low) / 2 + (high + low) / 2`, or plain `tanh` without bounds. Put it
/// after a network that writes unbounded "param" to get actions inside the action spec.
///
/// ```
/// auto actor = rlobj::modules::TensorDictSequential(
///     rlobj::modules::TensorDictModule(mlp, {"observation"}, {"param"}),
///     rlobj::modules::TanhModule({"param"}, {"action"}, env.action_spec()));
/// ```
class TanhModuleImpl : public TensorDictModuleBase {
 public:
  /// Bounds from a `Bounded` spec; its last dim holds the action features (leading dims,
  /// such as an environment's batch dims, are assumed to repeat the same bounds).
  TanhModuleImpl(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, const TensorSpec& spec)
      : TanhModuleImpl(std::move(in_keys), std::move(out_keys)) {
    const auto [low, high] = rlobj::detail::action_bounds(spec, "TanhModule");
    set_bounds(low, high);
  }
  /// Scalar bounds.
  TanhModuleImpl(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, double low, double high)
      : TanhModuleImpl(std::move(in_keys), std::move(out_keys)) {
    const auto dtype = c10::get_default_dtype_as_scalartype();
    set_bounds(torch::tensor(low, torch::dtype(dtype)), torch::tensor(high, torch::dtype(dtype)));
  }
  /// No bounds: `out = tanh(x)`.
  TanhModuleImpl(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys)
      : in_keys_(std::move(in_keys)), out_keys_(std::move(out_keys)) {
    TORCH_CHECK_VALUE(!in_keys_.empty() && in_keys_.size() == out_keys_.size(),
                      "TanhModule: needs as many out_keys as in_keys (and at least one)");
  }

  TensorDict forward(TensorDict td) override {
    // Every output is staged, then all are written together (update is all or nothing); an
    // in_key reads an earlier output first, as TorchRL's sequential writes would let it.
    std::optional<TensorDict> staged;
    auto output = [&](size_t i) {
      const torch::Tensor* x = staged ? staged->find(in_keys_[i]) : nullptr;
      if (x == nullptr) x = td.find(in_keys_[i]);
      TORCH_CHECK(x != nullptr, "TanhModule: input key \"", in_keys_[i].str(),
                  "\" not found in the TensorDict; keys present: ", rlobj::detail::keys_str(td.keys(true)));
      torch::Tensor y = x->tanh();
      return scale_.defined() ? y * scale_ + shift_ : y;
    };
    if (in_keys_.size() == 1) return td.set(out_keys_[0], output(0));  // one set: all or nothing
    staged.emplace(td.batch_size(), td.device());
    for (size_t i = 0; i < in_keys_.size(); ++i) staged->set(out_keys_[i], output(i));
    return td.update(*staged);
  }
  const std::vector<NestedKey>& in_keys() const override { return in_keys_; }
  const std::vector<NestedKey>& out_keys() const override { return out_keys_; }

  /// A deep copy, bounds included.
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto copy = std::make_shared<TanhModuleImpl>(in_keys_, out_keys_);
    if (scale_.defined()) {
      copy->scale_ = copy->register_buffer("scale", device ? scale_.to(*device) : scale_.clone());
      copy->shift_ = copy->register_buffer("shift", device ? shift_.to(*device) : shift_.clone());
    }
    return copy;
  }

 private:
  void set_bounds(const torch::Tensor& low, const torch::Tensor& high) {
    TORCH_CHECK_VALUE((low < high).all().item<bool>(), "TanhModule: low must be < high");
    // The bounds' own floating dtype (a float64 spec gives float64 bounds); integer bounds
    // take the default dtype. `loss->to(...)` / `module->to(...)` move and convert them.
    const auto dtype = low.is_floating_point() ? low.scalar_type() : c10::get_default_dtype_as_scalartype();
    scale_ = register_buffer("scale", ((high - low) / 2).to(dtype));
    shift_ = register_buffer("shift", ((high + low) / 2).to(dtype));
  }

  std::vector<NestedKey> in_keys_;
  std::vector<NestedKey> out_keys_;
  torch::Tensor scale_, shift_;
};

/// Holder of `TanhModuleImpl`.
class TanhModule : public detail::TDModuleHolder<TanhModuleImpl> {
 public:
  using detail::TDModuleHolder<TanhModuleImpl>::TDModuleHolder;
  /// Bounds from a `Bounded` spec (see `TanhModuleImpl`).
  TanhModule(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, const TensorSpec& spec)
      : TDModuleHolder(std::make_shared<TanhModuleImpl>(std::move(in_keys), std::move(out_keys), spec)) {}
  /// Scalar bounds.
  TanhModule(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, double low, double high)
      : TDModuleHolder(std::make_shared<TanhModuleImpl>(std::move(in_keys), std::move(out_keys), low, high)) {}
  /// No bounds: `out = tanh(x)`.
  TanhModule(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys)
      : TDModuleHolder(std::make_shared<TanhModuleImpl>(std::move(in_keys), std::move(out_keys))) {}
};

/// Holder of `ActorImpl`.
class Actor : public detail::TDModuleHolder<ActorImpl> {
 public:
  using detail::TDModuleHolder<ActorImpl>::TDModuleHolder;
  /// An `ActorImpl` around `module` (see its constructor).
  template <typename M, typename = detail::enable_if_module_t<M>>
  explicit Actor(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                 std::vector<NestedKey> out_keys = {"action"},
                 std::shared_ptr<const TensorSpec> spec = nullptr, bool safe = false)
      : TDModuleHolder(std::make_shared<ActorImpl>(module, std::move(in_keys), std::move(out_keys),
                                                   std::move(spec), safe)) {}
};

}  // namespace modules
}  // namespace rlobj
