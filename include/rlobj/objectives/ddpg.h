#pragma once

/// \file
/// `rlobj::objectives::DDPGLoss`, TorchRL's `DDPGLoss` (>= 0.4 / main semantics):
///
/// * value loss: `distance(Q(s, a), y)` with ``y = r + gamma * (!terminated) * Q'(s', mu'(s'))``
///   from the value estimator (TD(0) by default); trains the critic only;
/// * actor loss: `-Q(s, mu(s))` with the critic's weights frozen (the gradient flows through the
///   action into the actor only);
/// * output keys `loss_actor`, `loss_value` (reduced), `pred_value`, `target_value`,
///   `td_error` (per sample), `pred_value_max`, `target_value_max`; everything but the two
///   losses is detached. `td_error` is also written into the input TensorDict.

#include <algorithm>
#include <cstddef>
#include <map>
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
#include <torch/utils.h>

#include "rlobj/detail/format.h"
#include "rlobj/detail/keys.h"
#include "rlobj/modules/actor.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/common.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// Options of `DDPGLoss`, with TorchRL's names and defaults.
struct DDPGLossOptions {
  /// Distance between predicted and target values (`"l2"`: `(x - y)^2`, no 1/2).
  TORCH_ARG(LossFunction, loss_function) = LossFunction::L2;
  /// Keep a separate, slowly-updated copy of the actor for targets.
  TORCH_ARG(bool, delay_actor) = false;
  /// Keep a separate, slowly-updated copy of the critic for targets.
  TORCH_ARG(bool, delay_value) = true;
  /// Parameters shared by actor and critic are trained by the actor loss only.
  TORCH_ARG(bool, separate_losses) = false;
  /// Reduction of both losses.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// When the inputs are checked for NaN and Inf (on the CPU by default: on CUDA the check
  /// would cost a host sync per update).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// The keys `DDPGLoss` reads and writes (TorchRL's `_AcceptedKeys`); `reward`, `done` and
/// `terminated` are read under `"next"`.
struct DDPGLossKeys {
  /// The critic's output.
  NestedKey state_action_value = "state_action_value";
  /// Where the per-sample TD error is written into the batch (for prioritized replay).
  NestedKey priority = "td_error";
  /// The reward, under `"next"` (read by the value estimator).
  NestedKey reward = "reward";
  /// The done flag (terminated or truncated), under `"next"` (read by the value estimator).
  NestedKey done = "done";
  /// The terminated flag, under `"next"`: no bootstrapping past it.
  NestedKey terminated = "terminated";
  /// Every key by its TorchRL name (`set_keys`).
  static std::vector<KeyField<DDPGLossKeys>> fields() {
    return {{"state_action_value", &DDPGLossKeys::state_action_value},
            {"priority", &DDPGLossKeys::priority},
            {"reward", &DDPGLossKeys::reward},
            {"done", &DDPGLossKeys::done},
            {"terminated", &DDPGLossKeys::terminated}};
  }
};

/// DDPG's actor and critic losses. `ActorT` / `ValueT` are module holders whose modules map
/// TensorDicts to TensorDicts and expose `in_keys()` / `out_keys()` (`Actor`,
/// `ValueOperator`, `TensorDictModule`, `TensorDictSequential`...) and whose `clone()`
/// returns the same module type.
///
/// ```
/// auto loss = rlobj::objectives::DDPGLoss(actor, value_net);   // TorchRL's defaults
/// rlobj::TensorDict out = loss(batch);
/// torch::Tensor total = rlobj::objectives::sum_losses(out);
/// torch::optim::Adam optim(loss->parameters());
/// ```
template <typename ActorT = modules::Actor, typename ValueT = modules::ValueOperator>
class DDPGLossImpl : public LossModuleBase<DDPGLossOptions, DDPGLossKeys> {
 public:
  /// The actor's module type (`ActorT::ContainedType`).
  using ActorImpl = typename ActorT::ContainedType;
  /// The critic's module type (`ValueT::ContainedType`).
  using ValueImpl = typename ValueT::ContainedType;

  /// Registers the actor and the critic (one dtype and device; delayed copies as the options
  /// say; the critic also frozen, for the actor's loss) and builds the default estimator, TD0.
  /// Throws `c10::ValueError` on an empty network.
  DDPGLossImpl(ActorT actor_network, ValueT value_network, DDPGLossOptions options = {})
      : LossModuleBase("DDPGLoss", options), actor_(std::move(actor_network)), value_(std::move(value_network)) {
    TORCH_CHECK_VALUE(!actor_.is_empty(), "DDPGLoss: actor_network is empty");
    TORCH_CHECK_VALUE(!value_.is_empty(), "DDPGLoss: value_network is empty");
    // One dtype and device for both networks (the inputs are checked against the actor's).
    detail::check_same_placement("DDPGLoss", {{"actor_network", actor_.get()}, {"value_network", value_.get()}});
    // Parameters the critic shares with the actor: with separate_losses, the value loss sees
    // them frozen (TorchRL's `compare_against`).
    std::vector<torch::Tensor> shared;
    for (const auto& p : value_->parameters()) {
      for (const auto& q : actor_->parameters()) {
        if (p.unsafeGetTensorImpl() == q.unsafeGetTensorImpl()) shared.push_back(p);
      }
    }
    actor_net_ = register_network("actor_network", actor_.ptr(), NetworkOptions().target(options.delay_actor()));
    // The actor term evaluates the critic with its weights frozen (TorchRL's
    // `_cached_detached_value_params`).
    value_net_ = register_network(
        "value_network", value_.ptr(),
        NetworkOptions().target(options.delay_value()).frozen(true).compare_against(
            options.separate_losses() ? shared : std::vector<torch::Tensor>{}));
    make_value_estimator();
  }

  /// The entries of the output, in TorchRL's `out_keys` order.
  std::vector<std::string> out_keys() const override {
    return {"loss_actor", "loss_value", "pred_value", "target_value", "pred_value_max", "target_value_max"};
  }

  /// The online actor (the user's network).
  ActorT& actor_network() noexcept { return actor_; }
  /// The online critic (the user's network).
  ValueT& value_network() noexcept { return value_; }
  /// The actor used for targets: a separate copy with `delay_actor`, else the online actor.
  std::shared_ptr<ActorImpl> target_actor_network() const { return actor_net_.targets().front(); }
  /// The critic used for targets: a separate copy with `delay_value`, else the online critic.
  std::shared_ptr<ValueImpl> target_value_network() const { return value_net_.targets().front(); }

  /// Prints `rlobj::objectives::DDPGLoss(delay_actor=..., delay_value=..., actor_network=...,
  /// value_network=...)`, each network as it prints itself.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::DDPGLoss(delay_actor=" << (options.delay_actor() ? "true" : "false")
           << ", delay_value=" << (options.delay_value() ? "true" : "false") << ", actor_network=";
    actor_->pretty_print(stream);
    stream << ", value_network=";
    value_->pretty_print(stream);
    stream << ")";
  }

 protected:
  /// Both losses and their logging entries. Writes `td_error` into `td`.
  TensorDict compute(TensorDict& td) override {
    torch::Tensor pred, target;
    torch::Tensor loss_value = value_loss(td, &pred, &target);
    torch::Tensor loss_actor = actor_loss(td);

    torch::Tensor td_error = (pred - target).pow(2).detach();
    td.set(keys_.priority, td_error);
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_actor", loss_actor);
    out.set("loss_value", loss_value);
    {
      torch::NoGradGuard no_grad;
      out.set("td_error", td_error);
      out.set("pred_value", pred.detach());
      out.set("target_value", target.detach());
      out.set("target_value_max", target.max().detach());
      out.set("pred_value_max", pred.max().detach());
    }
    return out;
  }

  /// TD0, TD1 or TDLambda (GAE is not supported by DDPG, as in TorchRL); its value network is
  /// the target actor followed by the target critic.
  std::shared_ptr<value::ValueEstimatorBase> build_value_estimator(
      ValueEstimators type, const value::ValueEstimatorOptions& hyperparams) override {
    return detail::make_bootstrap_estimator(
        "DDPGLoss", type, [this](TensorDict next) { return target_actor_critic(next); }, hyperparams);
  }

  // The key lists forward() checks, derived once per set_keys() rather than per update:
  // what it cannot do without, and what it computes with (network inputs and reward).
  void keys_changed() override {
    const NestedKey next("next");
    std::vector<NestedKey> required = value_->in_keys();
    for (const auto& k : actor_->in_keys()) {
      required.push_back(k);
      required.push_back(next / k);
    }
    std::vector<NestedKey> computed = value_->in_keys();
    for (const auto& k : actor_->in_keys()) computed.push_back(next / k);
    computed.push_back(next / keys_.reward);
    std::vector<NestedKey> optional = {next / keys_.reward, next / keys_.done, next / keys_.terminated};
    for (const auto& k : value_->in_keys()) optional.push_back(next / k);
    set_input_keys(std::move(required), std::move(computed), optional);
    if (estimator_) {
      detail::set_estimator_keys(*estimator_, keys_.state_action_value, keys_.reward, keys_.done, keys_.terminated);
    }
  }

 private:
  // The estimator's value network: target actor, then target critic, never with gradient.
  TensorDict target_actor_critic(TensorDict next) {
    torch::NoGradGuard no_grad;
    next = actor_net_.targets().front()->forward(next);
    return value_net_.targets().front()->forward(next);
  }

  torch::Tensor value_loss(const TensorDict& td, torch::Tensor* pred, torch::Tensor* target) {
    TensorDict td_v(td.batch_size());
    for (const auto& k : value_->in_keys()) td_v.set(k, td.get(k).detach());
    td_v = value_net_.trained().front()->forward(td_v);
    *pred = read_value(td_v, "value network").squeeze(-1);
    *target = estimator_->value_estimate(td).squeeze(-1);
    TORCH_CHECK(pred->sizes() == target->sizes(), "DDPGLoss: predicted values have shape ",
                rlobj::detail::shape_str(pred->sizes()), " but targets have shape ",
                rlobj::detail::shape_str(target->sizes()));
    return reduce(distance_loss(*pred, *target, options.loss_function()), options.reduction());
  }

  torch::Tensor actor_loss(const TensorDict& td) {
    TensorDict td_a = detail::actor_loss_input(*actor_, value_->in_keys(), td);
    td_a = actor_->forward(td_a);
    td_a = value_net_.frozen.front()->forward(td_a);
    return reduce(-read_value(td_a, "value network").squeeze(-1), options.reduction());
  }

  torch::Tensor read_value(const TensorDict& td, const char* who) const {
    const torch::Tensor* q = td.find(keys_.state_action_value);
    TORCH_CHECK(q != nullptr, "DDPGLoss: the ", who, " did not write \"", keys_.state_action_value.str(),
                "\"; set its out_keys or call set_keys({{\"state_action_value\", ...}})");
    return *q;
  }

  ActorT actor_;
  ValueT value_;
  LossNetwork<ActorImpl> actor_net_;
  LossNetwork<ValueImpl> value_net_;
};

/// Holder of `DDPGLossImpl`: `auto loss = DDPGLoss(actor, value_net);` deduces the network
/// types; `loss->parameters()`, `loss(batch)`.
template <typename ActorT = modules::Actor, typename ValueT = modules::ValueOperator>
class DDPGLoss : public LossHolder<DDPGLossImpl<ActorT, ValueT>> {
 public:
  using LossHolder<DDPGLossImpl<ActorT, ValueT>>::LossHolder;
};
/// Deduces the network types from the arguments: `DDPGLoss(actor, value_net)` holds a
/// `DDPGLossImpl<decltype(actor), decltype(value_net)>`.
template <typename ActorT, typename ValueT, typename... Options>
DDPGLoss(ActorT, ValueT, Options&&...) -> DDPGLoss<ActorT, ValueT>;

}  // namespace objectives
}  // namespace rlobj
