#pragma once

/// \file
/// Discrete-action policies from action values, as TorchRL's `QValueModule` and
/// `QValueActor`: a network writes one value per action (`"action_value"`), the greedy action
/// is its argmax (one-hot or an index), and `"chosen_action_value"` is the value of that
/// action. `DQNLoss` trains them; `EGreedyModule` (exploration.h) explores with them.

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/modules/tensordict_module.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace modules {

/// How a discrete action is encoded (TorchRL's `action_space`).
enum class ActionSpace {
  OneHot,       ///< int64 one-hot `[*batch, n]` (TorchRL's `OneHot` spec, gym's default wrapping)
  Categorical,  ///< int64 index `[*batch]` (TorchRL's `Categorical` spec)
};

/// `"one_hot"` (or `"one-hot"`), `"categorical"`: TorchRL's strings.
inline ActionSpace action_space_from_string(const std::string& name) {
  if (name == "one_hot" || name == "one-hot") return ActionSpace::OneHot;
  if (name == "categorical") return ActionSpace::Categorical;
  TORCH_CHECK_VALUE(false, "unknown action_space \"", name, "\"; expected one_hot or categorical (mult_one_hot and "
                    "binary are not supported)");
}

/// `"one_hot"` or `"categorical"`.
inline const char* action_space_name(ActionSpace space) {
  return space == ActionSpace::OneHot ? "one_hot" : "categorical";
}

/// Options of `QValueModule` (TorchRL's names and defaults).
struct QValueModuleOptions {
  /// How the greedy action is written.
  TORCH_ARG(ActionSpace, action_space) = ActionSpace::OneHot;
  /// Where the action values are read (`[*batch, n]`, floating point).
  TORCH_ARG(NestedKey, action_value_key) = NestedKey("action_value");
  /// Optional bool mask `[*batch, n]`: actions where it is false are never chosen.
  TORCH_ARG(std::optional<NestedKey>, action_mask_key) = std::nullopt;
  /// Where the greedy action is written.
  TORCH_ARG(NestedKey, action_key) = NestedKey("action");
  /// Where the greedy action's value is written (`[*batch, 1]`).
  TORCH_ARG(NestedKey, chosen_action_value_key) = NestedKey("chosen_action_value");
};

/// Turns action values into the greedy action (TorchRL's `QValueModule`):
///
/// * one-hot: `action = (q == q.max(-1, keepdim)).long()` — ties give several ones, as in
///   TorchRL; `chosen_action_value = (action * q).sum(-1, keepdim)`;
/// * categorical: `action = q.argmax(-1)`; `chosen_action_value = q.gather(-1, action[..., None])`.
///
/// With a mask, masked actions get the dtype's lowest value before the argmax (and their
/// masked values are what `action_value` then holds, as in TorchRL).
class QValueModuleImpl : public TensorDictModuleBase {
 public:
  /// Reads the action values (and the mask, if any) and writes the action, the action values and
  /// the chosen action value, under the keys of `options`.
  explicit QValueModuleImpl(QValueModuleOptions options = {}) : options_(std::move(options)) {
    in_keys_ = {options_.action_value_key()};
    if (options_.action_mask_key()) in_keys_.push_back(*options_.action_mask_key());
    out_keys_ = {options_.action_key(), options_.action_value_key(), options_.chosen_action_value_key()};
  }

  TensorDict forward(TensorDict td) override {
    const torch::Tensor* found = td.find(options_.action_value_key());
    TORCH_CHECK(found != nullptr, "QValueModule: action value key \"", options_.action_value_key().str(),
                "\" not found; keys present: ", rlobj::detail::keys_str(td.keys(true)));
    torch::Tensor values = *found;
    TORCH_CHECK_TYPE(values.is_floating_point(), "QValueModule: \"", options_.action_value_key().str(),
                     "\" must be floating point, got ", rlobj::detail::dtype_str(values.scalar_type()));
    TORCH_CHECK_VALUE(values.dim() >= 1 && values.size(-1) >= 1, "QValueModule: \"",
                      options_.action_value_key().str(), "\" must have a last dim holding one value per action, got "
                      "shape ", rlobj::detail::shape_str(values.sizes()));
    if (options_.action_mask_key()) {
      const torch::Tensor* mask = td.find(*options_.action_mask_key());
      TORCH_CHECK(mask != nullptr, "QValueModule: action mask key \"", options_.action_mask_key()->str(),
                  "\" not found");
      TORCH_CHECK_TYPE(mask->scalar_type() == torch::kBool, "QValueModule: the action mask \"",
                       options_.action_mask_key()->str(), "\" must be bool, got ",
                       rlobj::detail::dtype_str(mask->scalar_type()));
      TORCH_CHECK_VALUE(mask->sizes() == values.sizes(), "QValueModule: the action mask \"",
                        options_.action_mask_key()->str(), "\" has shape ", rlobj::detail::shape_str(mask->sizes()),
                        " but the action values have shape ", rlobj::detail::shape_str(values.sizes()));
      // A row with no allowed action has nothing to choose: an error, not a masked action.
      TORCH_CHECK_VALUE(mask->any(-1).all().item<bool>(), "QValueModule: the action mask \"",
                        options_.action_mask_key()->str(), "\" allows no action in some row");
      values = torch::where(*mask, values, torch::full({}, lowest(values.scalar_type()), values.options()));
    }
    auto [action, chosen] = greedy(values, options_.action_space());
    TensorDict staged(td.batch_size(), td.device());
    staged.set(options_.action_key(), action);
    staged.set(options_.action_value_key(), values);
    staged.set(options_.chosen_action_value_key(), chosen);
    return td.update(staged);
  }

  /// The greedy action and its value for `values` (`[*batch, n]`).
  static std::pair<torch::Tensor, torch::Tensor> greedy(const torch::Tensor& values, ActionSpace space) {
    if (space == ActionSpace::OneHot) {
      torch::Tensor action = (values == std::get<0>(values.max(-1, /*keepdim=*/true))).to(torch::kLong);
      return {action, (action * values).sum(-1, /*keepdim=*/true)};
    }
    torch::Tensor action = values.argmax(-1).to(torch::kLong);
    return {action, values.gather(-1, action.unsqueeze(-1))};
  }

  const std::vector<NestedKey>& in_keys() const override { return in_keys_; }
  const std::vector<NestedKey>& out_keys() const override { return out_keys_; }
  /// The options the module was built with.
  const QValueModuleOptions& options() const noexcept { return options_; }

  /// A copy with the same options (the module has no parameters).
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& = c10::nullopt) const override {
    auto copy = std::make_shared<QValueModuleImpl>(options_);
    copy->train(is_training());
    return copy;
  }
  /// Prints `QValueModule(action_space=..., in_keys=[...])`.
  void pretty_print(std::ostream& stream) const override {
    stream << "QValueModule(action_space=" << action_space_name(options_.action_space())
           << ", in_keys=" << rlobj::detail::keys_str(in_keys_) << ")";
  }

 private:
  static double lowest(torch::Dtype dtype) {
    switch (dtype) {
      case torch::kFloat64: return std::numeric_limits<double>::lowest();
      case torch::kFloat16: return -65504.0;
      case torch::kBFloat16: return -3.3895313892515355e38;
      default: return static_cast<double>(std::numeric_limits<float>::lowest());
    }
  }

  QValueModuleOptions options_;
  std::vector<NestedKey> in_keys_, out_keys_;
};

/// Holder of `QValueModuleImpl`.
TORCH_MODULE(QValueModule);

/// A Q-value policy (TorchRL's `QValueActor`): `module` maps `in_keys` to the action values,
/// then a `QValueModule` writes `action`, `action_value` and `chosen_action_value`. It is a
/// `TensorDictSequential` of the two (`module.0` and `module.1`; the network's parameters are
/// named `module.0.module.*`, as TorchRL's).
///
/// ```
/// auto qnet = rlobj::modules::QValueActor(
///     rlobj::modules::MLP(rlobj::modules::MLPOptions(4, 2).num_cells({64, 64})),
///     /*in_keys=*/{"observation"}, rlobj::modules::ActionSpace::OneHot);
/// qnet(td);  // td["action"]: one-hot argmax of td["action_value"]
/// ```
class QValueActorImpl : public TensorDictSequentialImpl {
 public:
  /// Wraps `module` (a LibTorch module reading `in_keys`) as the network writing the action
  /// values, followed by a `QValueModule` for `action_space`.
  template <typename M>
  QValueActorImpl(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                  ActionSpace action_space = ActionSpace::OneHot, QValueModuleOptions options = {})
      : QValueActorImpl(std::make_shared<TensorDictModuleImpl>(module, std::move(in_keys),
                                                               std::vector<NestedKey>{options.action_value_key()}),
                        options.action_space(action_space)) {}

  /// From an already wrapped network that writes `options.action_value_key()`.
  QValueActorImpl(std::shared_ptr<TensorDictModuleBase> network, QValueModuleOptions options)
      : TensorDictSequentialImpl(std::vector<std::shared_ptr<TensorDictModuleBase>>{
            checked(network, options), std::make_shared<QValueModuleImpl>(options)}),
        options_(std::move(options)) {}

  /// How the action is encoded.
  ActionSpace action_space() const noexcept { return options_.action_space(); }
  /// The options of its `QValueModule`.
  const QValueModuleOptions& options() const noexcept { return options_; }

  /// A deep copy (the network is cloned).
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto network = std::dynamic_pointer_cast<TensorDictModuleBase>((*this)[0]->clone(device));
    TORCH_CHECK(network != nullptr, "QValueActor: the network's clone() changed its type");
    auto copy = std::make_shared<QValueActorImpl>(std::move(network), options_);
    copy->train(is_training());
    return copy;
  }
  /// Prints `QValueActor(action_space=..., in_keys=[...])`.
  void pretty_print(std::ostream& stream) const override {
    stream << "QValueActor(action_space=" << action_space_name(options_.action_space())
           << ", in_keys=" << rlobj::detail::keys_str(in_keys()) << ")";
  }

 private:
  static std::shared_ptr<TensorDictModuleBase> checked(std::shared_ptr<TensorDictModuleBase> network,
                                                       const QValueModuleOptions& options) {
    TORCH_CHECK_VALUE(network != nullptr, "QValueActor: the network is null");
    const auto& out = network->out_keys();
    TORCH_CHECK_VALUE(std::find(out.begin(), out.end(), options.action_value_key()) != out.end(),
                      "QValueActor: the network writes ", rlobj::detail::keys_str(out), " but not the action value key \"",
                      options.action_value_key().str(), "\"");
    return network;
  }

  QValueModuleOptions options_;
};

/// Holder of `QValueActorImpl`.
class QValueActor : public detail::TDModuleHolder<QValueActorImpl> {
 public:
  using detail::TDModuleHolder<QValueActorImpl>::TDModuleHolder;
  /// A `QValueActorImpl` around `module` (see its constructor).
  template <typename M, typename = detail::enable_if_module_t<M>>
  explicit QValueActor(const M& module, std::vector<NestedKey> in_keys = {"observation"},
                       ActionSpace action_space = ActionSpace::OneHot, QValueModuleOptions options = {})
      : TDModuleHolder(std::make_shared<QValueActorImpl>(module, std::move(in_keys), action_space, std::move(options))) {}
};

}  // namespace modules
}  // namespace rlobj
