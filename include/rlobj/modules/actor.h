#pragma once

/// \file
/// `rlobj::modules::Actor`, TorchRL's `Actor`: a TensorDictModule reading `"observation"` and
/// writing `"action"`.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
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

/// Squashes its inputs into a box with `tanh` (TorchRL's `TanhModule`), computed as TorchRL
/// computes it: `out = low + (high - low) * (tanh(x) + 1) / 2` (with `clamp`, `tanh(x)` is first
/// clamped to `[-1 + r, 1 - r]`, `r` the dtype's resolution: 1e-6 for float32). Without bounds,
/// `low = -1` and `high = 1`, and the map is applied all the same (as TorchRL does), so the
/// output is `tanh(x)` up to rounding. Put it after a network that writes unbounded "param" to get
/// actions inside the action spec.
///
/// State dict: TorchRL's names, one pair of buffers per out key, `<key>_low` and `<key>_high`
/// (a nested key's parts joined by `_`: `("agent", "action")` gives `agent_action_low`). A
/// module saved by rlobj before 0.3 (buffers `scale = (high - low) / 2` and
/// `shift = (high + low) / 2`) still loads, through `torch::load` or `rlobj::load_state_dict`:
/// the bounds come back as `shift -/+ scale` (exact for bounds such as ±1 or ±2).
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
  TanhModuleImpl(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, const TensorSpec& spec,
                 bool clamp = false)
      : TanhModuleImpl(std::move(in_keys), std::move(out_keys), clamp, nullptr) {
    const auto [low, high] = rlobj::detail::action_bounds(spec, "TanhModule");
    set_bounds(low, high);
  }
  /// Scalar bounds (tensors of shape `[]`, the default dtype).
  TanhModuleImpl(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, double low, double high,
                 bool clamp = false)
      : TanhModuleImpl(std::move(in_keys), std::move(out_keys), clamp, nullptr) {
    const auto dtype = c10::get_default_dtype_as_scalartype();
    set_bounds(torch::tensor(low, torch::dtype(dtype)), torch::tensor(high, torch::dtype(dtype)));
  }
  /// No bounds: `low = -1`, `high = 1` (TorchRL's defaults).
  TanhModuleImpl(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, bool clamp = false)
      : TanhModuleImpl(std::move(in_keys), std::move(out_keys), clamp, nullptr) {
    const auto dtype = c10::get_default_dtype_as_scalartype();
    set_bounds(torch::tensor(-1.0, torch::dtype(dtype)), torch::tensor(1.0, torch::dtype(dtype)));
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
      if (clamp_) {
        const double r = resolution(y.scalar_type());
        y = y.clamp(-1 + r, 1 - r);
      }
      return lows_[i] + (highs_[i] - lows_[i]) * (y + 1) / 2;
    };
    if (in_keys_.size() == 1) return td.set(out_keys_[0], output(0));  // one set: all or nothing
    staged.emplace(td.batch_size(), td.device());
    for (size_t i = 0; i < in_keys_.size(); ++i) staged->set(out_keys_[i], output(i));
    return td.update(*staged);
  }
  const std::vector<NestedKey>& in_keys() const override { return in_keys_; }
  const std::vector<NestedKey>& out_keys() const override { return out_keys_; }
  /// The lower bounds applied to `out_keys()[i]` (the buffer `<key>_low`).
  const torch::Tensor& low(size_t i = 0) const { return lows_.at(i); }
  /// The upper bounds applied to `out_keys()[i]` (the buffer `<key>_high`).
  const torch::Tensor& high(size_t i = 0) const { return highs_.at(i); }
  /// Whether `tanh(x)` is clamped to `[-1 + r, 1 - r]` before the map.
  bool clamp() const noexcept { return clamp_; }
  /// TorchRL's name of the buffer holding out key `key`'s bounds: `<key>_low` / `<key>_high`.
  static std::string bound_name(const NestedKey& key, bool high) { return key.str("_") + (high ? "_high" : "_low"); }
  /// `torch.finfo(dtype).resolution` (the clamp's margin).
  static double resolution(torch::Dtype dtype) {
    switch (dtype) {
      case torch::kDouble: return 1e-15;
      case torch::kHalf: return 1e-3;
      case torch::kBFloat16: return 1e-2;
      default: return 1e-6;
    }
  }

  /// A deep copy, bounds included.
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    std::shared_ptr<TanhModuleImpl> copy(new TanhModuleImpl(in_keys_, out_keys_, clamp_, nullptr));
    for (size_t i = 0; i < out_keys_.size(); ++i) {
      copy->register_bounds(i, device ? lows_[i].to(*device) : lows_[i].clone(),
                            device ? highs_[i].to(*device) : highs_[i].clone());
    }
    return copy;
  }

  /// `torch::load`: TorchRL's buffer names, or the `scale`/`shift` of rlobj before 0.3.
  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor scale, shift, current;
    if (!archive.try_read(bound_name(out_keys_[0], false), current, /*is_buffer=*/true) &&
        archive.try_read("scale", scale, /*is_buffer=*/true) && archive.try_read("shift", shift, /*is_buffer=*/true)) {
      torch::NoGradGuard no_grad;
      const auto low = shift - scale, high = shift + scale;
      for (size_t i = 0; i < out_keys_.size(); ++i) {
        TORCH_CHECK_VALUE(low.sizes() == lows_[i].sizes(), "TanhModule.load: the archive's legacy bounds have shape ",
                          rlobj::detail::shape_str(low.sizes()), " where the module's \"",
                          bound_name(out_keys_[i], false), "\" has ", rlobj::detail::shape_str(lows_[i].sizes()));
        lows_[i].copy_(low);
        highs_[i].copy_(high);
      }
      return;
    }
    torch::nn::Module::load(archive);
  }

 private:
  // The keys' checks; no bounds yet (every public constructor sets them).
  TanhModuleImpl(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, bool clamp, std::nullptr_t)
      : in_keys_(std::move(in_keys)), out_keys_(std::move(out_keys)), clamp_(clamp) {
    TORCH_CHECK_VALUE(!in_keys_.empty() && in_keys_.size() == out_keys_.size(),
                      "TanhModule: needs as many out_keys as in_keys (and at least one)");
    for (size_t i = 0; i < out_keys_.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        TORCH_CHECK_VALUE(bound_name(out_keys_[i], false) != bound_name(out_keys_[j], false), "TanhModule: out keys \"",
                          out_keys_[j].str(), "\" and \"", out_keys_[i].str(), "\" give the same buffer name \"",
                          bound_name(out_keys_[i], false), "\"");
      }
    }
    lows_.resize(out_keys_.size());
    highs_.resize(out_keys_.size());
  }

  void set_bounds(const torch::Tensor& low, const torch::Tensor& high) {
    TORCH_CHECK_VALUE(low.sizes() == high.sizes(), "TanhModule: low has shape ", rlobj::detail::shape_str(low.sizes()),
                      " and high ", rlobj::detail::shape_str(high.sizes()));
    TORCH_CHECK_VALUE((low < high).all().item<bool>(), "TanhModule: low must be < high");
    TORCH_CHECK_VALUE(torch::isfinite(low).all().item<bool>() && torch::isfinite(high).all().item<bool>(),
                      "TanhModule: the bounds must be finite (got low ", low, ", high ", high, ")");
    // The bounds' own floating dtype (a float64 spec gives float64 bounds); integer bounds
    // take the default dtype. `loss->to(...)` / `module->to(...)` move and convert them.
    const auto dtype = low.is_floating_point() ? low.scalar_type() : c10::get_default_dtype_as_scalartype();
    for (size_t i = 0; i < out_keys_.size(); ++i) register_bounds(i, low.to(dtype).clone(), high.to(dtype).clone());
  }

  void register_bounds(size_t i, torch::Tensor low, torch::Tensor high) {
    lows_[i] = register_buffer(bound_name(out_keys_[i], false), std::move(low));
    highs_[i] = register_buffer(bound_name(out_keys_[i], true), std::move(high));
  }

  std::vector<NestedKey> in_keys_;
  std::vector<NestedKey> out_keys_;
  bool clamp_ = false;
  std::vector<torch::Tensor> lows_, highs_;
};

/// Holder of `TanhModuleImpl`.
class TanhModule : public detail::TDModuleHolder<TanhModuleImpl> {
 public:
  using detail::TDModuleHolder<TanhModuleImpl>::TDModuleHolder;
  /// Bounds from a `Bounded` spec (see `TanhModuleImpl`).
  TanhModule(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, const TensorSpec& spec,
             bool clamp = false)
      : TDModuleHolder(std::make_shared<TanhModuleImpl>(std::move(in_keys), std::move(out_keys), spec, clamp)) {}
  /// Scalar bounds.
  TanhModule(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, double low, double high,
             bool clamp = false)
      : TDModuleHolder(std::make_shared<TanhModuleImpl>(std::move(in_keys), std::move(out_keys), low, high, clamp)) {}
  /// No bounds: `low = -1`, `high = 1`.
  TanhModule(std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys, bool clamp = false)
      : TDModuleHolder(std::make_shared<TanhModuleImpl>(std::move(in_keys), std::move(out_keys), clamp)) {}
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
