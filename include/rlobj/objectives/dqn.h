#pragma once

/// \file
/// `rlobj::objectives::DQNLoss`, TorchRL 0.4's `DQNLoss` (Mnih et al., 2015; with
/// `double_dqn`, van Hasselt et al., 2016):
///
/// * the Q-value network (a `QValueActor`) writes `action_value` `[*B, n]`; the prediction is
///   the value of the batch's action: `(action_value * action).sum(-1)` for one-hot actions,
///   `action_value.gather(-1, action)` for categorical ones;
/// * the target is the value estimator's (TD(0) by default):
///   ``r + gamma * (!terminated) * V(s')`` where ``V(s')`` is the target network's
///   `chosen_action_value` (its max over actions), or with `double_dqn` the target network's
///   value of the action the online network picks in ``s'``;
/// * `loss = reduce(distance(pred, target))` (`"l2"` by default), the only output entry,
///   named `"loss"`; `td_error = (pred - target)^2` `[*B, 1]` is written into the input.

#include <map>
#include <optional>
#include <type_traits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/detail/format.h"
#include "rlobj/detail/keys.h"
#include "rlobj/envs/common.h"
#include "rlobj/modules/qvalue.h"
#include "rlobj/objectives/common.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// Options of `DQNLoss`, with TorchRL 0.4's names and defaults.
struct DQNLossOptions {
  /// Distance between predicted and target values (`"l2"`: `(x - y)^2`, no 1/2).
  TORCH_ARG(LossFunction, loss_function) = LossFunction::L2;
  /// Keep a delayed copy of the Q network for targets (`HardUpdate` / `SoftUpdate` move it).
  TORCH_ARG(bool, delay_value) = true;
  /// Double DQN: the online network picks the next action, the target network values it.
  /// Needs `delay_value`.
  TORCH_ARG(bool, double_dqn) = false;
  /// How actions are encoded; unset: the `QValueActor`'s own action space.
  TORCH_ARG(std::optional<modules::ActionSpace>, action_space) = std::nullopt;
  /// Reduction of the loss.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// When the inputs are checked for NaN and Inf (see `FiniteCheck`).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// The keys `DQNLoss` reads and writes (TorchRL's `_AcceptedKeys`); `reward`, `done` and
/// `terminated` are read under `"next"`.
struct DQNLossKeys {
  /// The value estimator's advantage key (TorchRL's); the loss itself reads none.
  NestedKey advantage = "advantage";
  /// The value estimator's value-target key (TorchRL's); the loss itself reads none.
  NestedKey value_target = "value_target";
  /// The value of the greedy action, as the target network writes it.
  NestedKey value = "chosen_action_value";
  /// The Q network's value of every action, `[*B, n]`.
  NestedKey action_value = "action_value";
  /// The batch's action: one-hot `[*B, n]`, or an index `[*B]` / `[*B, 1]` (`action_space()`).
  NestedKey action = "action";
  /// Where the per-sample TD error is written into the batch (for prioritized replay).
  NestedKey priority = "td_error";
  /// The reward, under `"next"`.
  NestedKey reward = "reward";
  /// The done flag (terminated or truncated), under `"next"`.
  NestedKey done = "done";
  /// The terminated flag, under `"next"`: no bootstrapping past it (`done` when absent).
  NestedKey terminated = "terminated";
  /// Every key by its TorchRL name (`set_keys`).
  static std::vector<KeyField<DQNLossKeys>> fields() {
    return {{"advantage", &DQNLossKeys::advantage}, {"value_target", &DQNLossKeys::value_target},
            {"value", &DQNLossKeys::value},         {"action_value", &DQNLossKeys::action_value},
            {"action", &DQNLossKeys::action},       {"priority", &DQNLossKeys::priority},
            {"reward", &DQNLossKeys::reward},       {"done", &DQNLossKeys::done},
            {"terminated", &DQNLossKeys::terminated}};
  }
};

/// DQN's loss over a Q-value network `ValueT` (a `QValueActor`, or any TensorDict module
/// holder writing `action_value`, `action` and `chosen_action_value`).
///
/// ```
/// auto qnet = rlobj::modules::QValueActor(mlp, {"observation"}, rlobj::modules::ActionSpace::OneHot);
/// auto loss = rlobj::objectives::DQNLoss(qnet, rlobj::objectives::DQNLossOptions().double_dqn(true));
/// rlobj::objectives::HardUpdate updater(loss, /*value_network_update_interval=*/50);
/// rlobj::TensorDict out = loss(batch);  // out["loss"]
/// ```
template <typename ValueT = modules::QValueActor>
class DQNLossImpl : public LossModuleBase<DQNLossOptions, DQNLossKeys> {
 public:
  /// The Q network's module type (`ValueT::ContainedType`).
  using ValueImpl = typename ValueT::ContainedType;

  /// Registers the Q network (a delayed copy with `delay_value`) and builds the default
  /// estimator, TD0; the action space is the option's, else the `QValueActor`'s. Throws
  /// `c10::ValueError` on an empty network, `double_dqn` without `delay_value`, or an action space
  /// that cannot be inferred.
  explicit DQNLossImpl(ValueT value_network, DQNLossOptions options = {})
      : LossModuleBase("DQNLoss", options), value_(std::move(value_network)) {
    TORCH_CHECK_VALUE(!value_.is_empty(), "DQNLoss: value_network is empty");
    TORCH_CHECK_VALUE(!options.double_dqn() || options.delay_value(), "DQNLoss: double_dqn=true requires "
                      "delay_value=true");
    if (options.action_space()) {
      action_space_ = *options.action_space();
    } else {
      action_space_ = infer_action_space(*value_);
    }
    detail::check_same_placement("DQNLoss", {{"value_network", value_.get()}});
    value_net_ = register_network("value_network", value_.ptr(), NetworkOptions().target(options.delay_value()));
    make_value_estimator();
  }

  /// The entries of the output.
  std::vector<std::string> out_keys() const override { return {"loss"}; }
  /// How the loss reads actions.
  modules::ActionSpace action_space() const noexcept { return action_space_; }

  /// The online Q network (the user's network).
  ValueT& value_network() noexcept { return value_; }
  /// The Q network targets are computed with: the delayed copy, else the online network.
  std::shared_ptr<ValueImpl> target_value_network() const { return value_net_.targets().front(); }

  /// Prints `rlobj::objectives::DQNLoss(delay_value=..., double_dqn=..., action_space=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::DQNLoss(delay_value=" << (options.delay_value() ? "true" : "false")
           << ", double_dqn=" << (options.double_dqn() ? "true" : "false")
           << ", action_space=" << modules::action_space_name(action_space_) << ")";
  }

 protected:
  /// The loss (one entry `"loss"`). Writes `td_error` into `td`.
  TensorDict compute(TensorDict& td) override {
    TensorDict td_copy = td.copy();
    td_copy = value_net_.online.front()->forward(td_copy);
    const torch::Tensor* found = td_copy.find(keys_.action_value);
    TORCH_CHECK(found != nullptr, "DQNLoss: the value network did not write \"", keys_.action_value.str(),
                "\"; set its out_keys or call set_keys({{\"action_value\", ...}})");
    const torch::Tensor pred_val = *found;
    const torch::Tensor action = td.get(keys_.action);
    check_action(action, pred_val);
    torch::Tensor pred = value_of(pred_val, action, /*keepdim=*/false);

    torch::Tensor next_value;
    if (options.double_dqn()) {
      torch::NoGradGuard no_grad;
      TensorDict step_td = rlobj::envs::step_mdp(td_copy, rlobj::envs::StepMdpOptions().keep_other(false));
      TensorDict step_td_copy = step_td.copy();
      step_td = value_net_.online.front()->forward(step_td);
      const torch::Tensor next_action = step_td.get(keys_.action);
      step_td_copy = value_net_.targets().front()->forward(step_td_copy);
      next_value = value_of(step_td_copy.get(keys_.action_value), next_action, /*keepdim=*/true);
    }
    torch::Tensor target = estimator_->value_estimate(td_copy, next_value).squeeze(-1);
    TORCH_CHECK(pred.sizes() == target.sizes(), "DQNLoss: predicted values have shape ",
                rlobj::detail::shape_str(pred.sizes()), " but targets have shape ",
                rlobj::detail::shape_str(target.sizes()));
    torch::Tensor priority;
    {
      torch::NoGradGuard no_grad;
      priority = (pred - target).pow(2).unsqueeze(-1);
    }
    td.set(keys_.priority, priority);
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss", reduce(distance_loss(pred, target, options.loss_function()), options.reduction()));
    return out;
  }

  /// TD0, TD1 or TDLambda (GAE is not supported, as in TorchRL); its value network is the
  /// target Q network (`chosen_action_value`: its max).
  std::shared_ptr<value::ValueEstimatorBase> build_value_estimator(
      ValueEstimators type, const value::ValueEstimatorOptions& hyperparams) override {
    return detail::make_bootstrap_estimator(
        "DQNLoss", type,
        [this](TensorDict next) {
          torch::NoGradGuard no_grad;
          return value_net_.targets().front()->forward(next);
        },
        hyperparams);
  }

  void keys_changed() override {
    const NestedKey next("next");
    std::vector<NestedKey> required = {keys_.action};
    std::vector<NestedKey> computed;
    for (const auto& k : value_->in_keys()) {
      required.push_back(k);
      required.push_back(next / k);
      computed.push_back(k);
      computed.push_back(next / k);
    }
    for (const auto& k : {keys_.reward, keys_.done}) required.push_back(next / k);
    computed.push_back(next / keys_.reward);
    set_input_keys(std::move(required), std::move(computed), {next / keys_.terminated});
    if (estimator_) {
      estimator_->set_keys({{"advantage", keys_.advantage},
                            {"value_target", keys_.value_target},
                            {"value", keys_.value},
                            {"reward", keys_.reward},
                            {"done", keys_.done},
                            {"terminated", keys_.terminated}});
    }
  }

 private:
  template <typename M>
  static modules::ActionSpace infer_action_space(const M& network) {
    if constexpr (std::is_base_of<modules::QValueActorImpl, M>::value) {
      return network.action_space();
    } else {
      TORCH_CHECK_VALUE(false, "DQNLoss: the action space could not be retrieved from the value network; pass "
                        "DQNLossOptions().action_space(...)");
    }
  }

  // The value of `action` under `values` ([*B, n]): [*B] (or [*B, 1] with keepdim).
  torch::Tensor value_of(const torch::Tensor& values, const torch::Tensor& action, bool keepdim) const {
    if (action_space_ == modules::ActionSpace::Categorical) {
      torch::Tensor index = action.dim() == values.dim() ? action : action.unsqueeze(-1);
      torch::Tensor v = values.gather(-1, index.to(torch::kLong));
      return keepdim ? v : v.squeeze(-1);
    }
    return (values * action.to(values.scalar_type())).sum(-1, keepdim);
  }

  void check_action(const torch::Tensor& action, const torch::Tensor& values) const {
    const auto& key = keys_.action;
    const int64_t n = values.size(-1);
    const auto batch = values.sizes().slice(0, static_cast<size_t>(values.dim() - 1));
    if (action_space_ == modules::ActionSpace::OneHot) {
      TORCH_CHECK_TYPE(!action.is_complex(), "DQNLoss: \"", key.str(), "\" must be a one-hot tensor, got ",
                       rlobj::detail::dtype_str(action.scalar_type()));
      TORCH_CHECK_VALUE(action.sizes() == values.sizes(), "DQNLoss: \"", key.str(), "\" has shape ",
                        rlobj::detail::shape_str(action.sizes()), " but one-hot actions over the ", n,
                        " action values must have shape ", rlobj::detail::shape_str(values.sizes()));
    } else {
      TORCH_CHECK_TYPE(at::isIntegralType(action.scalar_type(), /*includeBool=*/false), "DQNLoss: \"", key.str(),
                       "\" must hold integer action indices (categorical), got ",
                       rlobj::detail::dtype_str(action.scalar_type()));
      const bool plain = action.sizes() == batch;
      const bool trailing = action.dim() == values.dim() && action.sizes().slice(0, batch.size()) == batch &&
                            action.size(-1) == 1;
      TORCH_CHECK_VALUE(plain || trailing, "DQNLoss: \"", key.str(), "\" has shape ",
                        rlobj::detail::shape_str(action.sizes()), "; categorical actions must have shape ",
                        rlobj::detail::shape_str(batch), " (or with a trailing 1)");
      if (action.numel() > 0 && action.device().is_cpu()) {
        TORCH_CHECK_VALUE(((action >= 0) & (action < n)).all().item<bool>(), "DQNLoss: \"", key.str(),
                          "\" holds indices outside [0, ", n, ")");
      }
    }
  }

  ValueT value_;
  LossNetwork<ValueImpl> value_net_;
  modules::ActionSpace action_space_ = modules::ActionSpace::OneHot;
};

/// Holder of `DQNLossImpl`: `auto loss = DQNLoss(qnet);`.
template <typename ValueT = modules::QValueActor>
class DQNLoss : public LossHolder<DQNLossImpl<ValueT>> {
 public:
  using LossHolder<DQNLossImpl<ValueT>>::LossHolder;
};
/// Deduces the network type from the arguments: `DQNLoss(qnet)` holds a
/// `DQNLossImpl<decltype(qnet)>`.
template <typename ValueT, typename... Rest>
DQNLoss(ValueT, Rest&&...) -> DQNLoss<ValueT>;

}  // namespace objectives
}  // namespace rlobj
