#pragma once

/// \file
/// `rlobj::objectives::DDPGLoss`, TorchRL's `DDPGLoss` (>= 0.4 / main semantics):
///
/// * value loss: `distance(Q(s, a), y)` with `y = r + gamma * (!terminated) * Q'(s', mu'(s'))`
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
  NestedKey state_action_value = "state_action_value";
  NestedKey priority = "td_error";
  NestedKey reward = "reward";
  NestedKey done = "done";
  NestedKey terminated = "terminated";
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
class DDPGLossImpl : public LossModuleImpl {
 public:
  using ActorImpl = typename ActorT::ContainedType;
  using ValueImpl = typename ValueT::ContainedType;

  DDPGLossImpl(ActorT actor_network, ValueT value_network, DDPGLossOptions options = {})
      : options(options), actor_(std::move(actor_network)), value_(std::move(value_network)) {
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
    make_value_estimator(ValueEstimators::TD0);
  }

  /// Both losses and their logging entries (`batch_size` `[]`). Writes `td_error` into `td`.
  TensorDict forward(TensorDict td) {
    // Every check before anything changes (ensure_linked may re-attach buffers).
    check_inputs(td);
    detail::check_finite_inputs("DDPGLoss", td, input_keys_, options.check_finite());
    ensure_linked();
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

  /// Builds the value estimator (TD0, TD1 or TDLambda; GAE is not supported by DDPG, as in
  /// TorchRL). Its value network is the target actor followed by the target critic.
  void make_value_estimator(ValueEstimators type = ValueEstimators::TD0,
                            value::ValueEstimatorOptions hyperparams = {}) {
    estimator_ = detail::make_bootstrap_estimator(
        "DDPGLoss", type, [this](TensorDict next) { return target_actor_critic(next); }, hyperparams);
    value_type_ = type;
    keys_changed();
  }

  /// The value estimator (TD0 with gamma 0.99 unless `make_value_estimator` was called).
  value::ValueEstimatorBase& value_estimator() const { return *estimator_; }
  ValueEstimators value_type() const noexcept { return value_type_; }

  /// Renames input keys (TorchRL's `set_keys`): `{{"reward", "r"}, {"priority", "prio"}}`.
  /// Accepted names: state_action_value, priority, reward, done, terminated. Renaming
  /// `state_action_value` only changes where the loss reads Q: the value network's out_keys
  /// must be changed to match.
  void set_keys(const std::map<std::string, NestedKey>& keys) {
    rlobj::detail::set_named_keys("DDPGLoss", keys,
                                  {{"state_action_value", &keys_.state_action_value},
                                   {"priority", &keys_.priority},
                                   {"reward", &keys_.reward},
                                   {"done", &keys_.done},
                                   {"terminated", &keys_.terminated}});
    keys_changed();
  }
  const DDPGLossKeys& tensor_keys() const noexcept { return keys_; }

  /// Every key `forward` may read (TorchRL's `in_keys`, sorted).
  const std::vector<NestedKey>& in_keys() const noexcept { return input_keys_; }

  /// The entries of the output, in TorchRL's `out_keys` order.
  std::vector<std::string> out_keys() const {
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

  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::DDPGLoss(delay_actor=" << (options.delay_actor() ? "true" : "false")
           << ", delay_value=" << (options.delay_value() ? "true" : "false") << ", actor_network=";
    actor_->pretty_print(stream);
    stream << ", value_network=";
    value_->pretty_print(stream);
    stream << ")";
  }

  /// The options the loss was built with.
  DDPGLossOptions options;

 private:
  // The key lists forward() checks, derived once per set_keys() rather than per update:
  // everything it may read (in_keys) and what it computes with (network inputs and reward).
  void keys_changed() {
    const NestedKey next("next");
    std::vector<NestedKey> required = value_->in_keys();
    for (const auto& k : actor_->in_keys()) {
      required.push_back(k);
      required.push_back(next / k);
    }
    required_keys_ = std::move(required);
    std::vector<NestedKey> keys = {next / keys_.reward, next / keys_.done, next / keys_.terminated};
    auto add = [&](const std::vector<NestedKey>& ks) {
      for (const auto& k : ks) {
        keys.push_back(k);
        keys.push_back(next / k);
      }
    };
    add(actor_->in_keys());
    add(value_->in_keys());
    input_keys_ = detail::sorted_unique(std::move(keys));
    computed_keys_ = value_->in_keys();
    for (const auto& k : actor_->in_keys()) computed_keys_.push_back(next / k);
    computed_keys_.push_back(next / keys_.reward);
    if (estimator_) {
      detail::set_estimator_keys(*estimator_, keys_.state_action_value, keys_.reward, keys_.done, keys_.terminated);
    }
  }

  // The estimator's value network: target actor, then target critic, never with gradient.
  TensorDict target_actor_critic(TensorDict next) {
    torch::NoGradGuard no_grad;
    next = actor_net_.targets().front()->forward(next);
    return value_net_.targets().front()->forward(next);
  }

  void check_inputs(const TensorDict& td) const {
    detail::require_keys("DDPGLoss", td, required_keys_);
    TORCH_CHECK(td.batch_dims() >= 1, "DDPGLoss: expected a batch of transitions (batch_dims >= 1), got "
                "batch_size ", rlobj::detail::shape_str(td.batch_size()));
    // The reward is among them: a float64 reward would silently promote the targets.
    detail::check_network_inputs("DDPGLoss", td, computed_keys_, actor_net_.group->flat().scalar_type());
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

  DDPGLossKeys keys_;
  std::vector<NestedKey> input_keys_;     // in_keys()
  std::vector<NestedKey> required_keys_;  // what forward cannot do without
  std::vector<NestedKey> computed_keys_;  // network inputs and the reward, dtype/shape-checked
  ActorT actor_;
  ValueT value_;
  LossNetwork<ActorImpl> actor_net_;
  LossNetwork<ValueImpl> value_net_;
  std::shared_ptr<value::ValueEstimatorBase> estimator_;
  ValueEstimators value_type_ = ValueEstimators::TD0;
};

/// Holder of `DDPGLossImpl`: `auto loss = DDPGLoss(actor, value_net);` deduces the network
/// types; `loss->parameters()`, `loss(batch)`.
template <typename ActorT = modules::Actor, typename ValueT = modules::ValueOperator>
class DDPGLoss : public torch::nn::ModuleHolder<DDPGLossImpl<ActorT, ValueT>> {
 public:
  using Impl = DDPGLossImpl<ActorT, ValueT>;
  using Base = torch::nn::ModuleHolder<Impl>;
  using Base::get;

  DDPGLoss(std::nullptr_t) : Base(nullptr) {}                       // NOLINT
  DDPGLoss(std::shared_ptr<Impl> impl) : Base(std::move(impl)) {}   // NOLINT
  DDPGLoss(ActorT actor_network, ValueT value_network, DDPGLossOptions options = {})
      : Base(std::make_shared<Impl>(std::move(actor_network), std::move(value_network), options)) {}
};

}  // namespace objectives
}  // namespace rlobj
