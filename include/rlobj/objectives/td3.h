#pragma once

/// \file
/// `rlobj::objectives::TD3Loss`, TorchRL 0.4's `TD3Loss` (Fujimoto et al., 2018):
///
/// * `num_qvalue_nets` critics (twins by default) trained side by side, registered as one
///   ensemble (`NetworkOptions::ensemble`: TorchRL redraws every copy, see there);
/// * target policy smoothing: the target actor's next action plus
///   `clamp(policy_noise * N(0, 1), -noise_clip, noise_clip)`, clamped into the action spec's
///   bounds; the noise is drawn first in `forward` (`randn_like(action)` on LibTorch's default
///   generator, exactly TorchRL's call), so a seeded run reproduces TorchRL's draws;
/// * target ``y = r + gamma * (!terminated) * min_i Q'_i(s', a')`` (TD(0) by default);
/// * critic loss: `sum_i distance(Q_i(s, a), y)`, reduced; actor loss: `-Q_0(s, mu(s))` with
///   the critics frozen (critic 0 only, as TorchRL);
/// * outputs `loss_actor`, `loss_qvalue`, `state_action_value_actor` (`[N, B]`),
///   `next_state_value` (`[B]`), `pred_value` (`[N, B]`), `target_value` (`[B]`), all but the
///   losses detached; `td_error` (`max_i (Q_i - y)^2`, `[B]`) is written into the input.
///
/// The delayed policy update (the actor stepped every 2nd update) belongs to the training loop,
/// as in TorchRL: see `examples/td3_pendulum`.
///
/// `rlobj::objectives::TD3BCLoss`, TorchRL's `TD3BCLoss` (Fujimoto and Gu, 2021, offline RL):
/// TD3's critic loss; the actor loss `mean(-lambda * Q_0(s, mu(s))) + mean((mu(s) - a)^2)`, the
/// behaviour-cloning term on the batch's actions, `lambda = alpha / mean|Q_0(s, mu(s))|`
/// (detached); outputs as TD3's, with `state_action_value_actor` critic 0's (`[B]`), and `bc_loss`
/// and `lmbd`.

#include <algorithm>
#include <cmath>
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
#include "rlobj/envs/common.h"
#include "rlobj/modules/actor.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/actor_qvalue.h"
#include "rlobj/objectives/common.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// Options of `TD3Loss`, with TorchRL 0.4's names and defaults.
struct TD3LossOptions {
  /// Number of critics (TD3's twins: 2).
  TORCH_ARG(int64_t, num_qvalue_nets) = 2;
  /// Standard deviation of the target policy smoothing noise.
  TORCH_ARG(double, policy_noise) = 0.2;
  /// The smoothing noise is clamped to `[-noise_clip, noise_clip]`.
  TORCH_ARG(double, noise_clip) = 0.5;
  /// Distance between predicted and target values.
  TORCH_ARG(LossFunction, loss_function) = LossFunction::SmoothL1;
  /// Keep a separate, slowly-updated copy of the actor for targets.
  TORCH_ARG(bool, delay_actor) = true;
  /// Keep separate, slowly-updated copies of the critics for targets.
  TORCH_ARG(bool, delay_qvalue) = true;
  /// Parameters shared by actor and critics are trained by the actor loss only.
  TORCH_ARG(bool, separate_losses) = false;
  /// Reduction of both losses.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// When the inputs are checked for NaN and Inf (see `FiniteCheck`).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// Options of `TD3BCLoss`, with TorchRL 0.14's names and defaults: TD3's and `alpha`.
struct TD3BCLossOptions {
  /// Number of critics (TD3's twins: 2).
  TORCH_ARG(int64_t, num_qvalue_nets) = 2;
  /// Standard deviation of the target policy smoothing noise.
  TORCH_ARG(double, policy_noise) = 0.2;
  /// The smoothing noise is clamped to `[-noise_clip, noise_clip]`.
  TORCH_ARG(double, noise_clip) = 0.5;
  /// The weight of the Q term against the behaviour-cloning term: `lambda = alpha / mean|Q|`.
  TORCH_ARG(double, alpha) = 2.5;
  /// Distance between predicted and target values.
  TORCH_ARG(LossFunction, loss_function) = LossFunction::SmoothL1;
  /// Keep a separate, slowly-updated copy of the actor for targets.
  TORCH_ARG(bool, delay_actor) = true;
  /// Keep separate, slowly-updated copies of the critics for targets.
  TORCH_ARG(bool, delay_qvalue) = true;
  /// Parameters shared by actor and critics are trained by the actor loss only.
  TORCH_ARG(bool, separate_losses) = false;
  /// Reduction of both losses.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// When the inputs are checked for NaN and Inf (see `FiniteCheck`).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// The keys `TD3Loss` and `TD3BCLoss` read and write.
using TD3LossKeys = ActorQValueLossKeys;

/// What `TD3Loss` and `TD3BCLoss` share: an actor (`ActorT`, writing the action) and
/// `num_qvalue_nets` copies of a critic (`QValueT`, reading state and action, writing
/// `state_action_value`), the smoothed target and the critic loss. The action spec gives the
/// bounds the smoothed target action is clamped into (a `Bounded` spec; its last dim holds the
/// action features). `Options` has TD3's fields (`TD3LossOptions`, `TD3BCLossOptions`); a loss
/// defines its actor loss (`actor_loss_of`).
template <typename Options, typename ActorT, typename QValueT>
class TD3LossBase : public ActorQValueLossBase<Options, ActorT, QValueT> {
  using Base = ActorQValueLossBase<Options, ActorT, QValueT>;

 public:
  /// Registers the actor and `num_qvalue_nets` critics (one dtype and device) and the
  /// `min_action` / `max_action` buffers (`action_spec`'s bounds), and builds the default
  /// estimator, TD0. Throws `c10::ValueError` on an empty network, a bad option or a spec that
  /// is not `Bounded`; `name` names the loss in messages.
  TD3LossBase(const char* name, ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec,
              Options options)
      : Base(name, checked(name, options), std::move(actor_network), std::move(qvalue_network),
             rlobj::detail::action_bounds(action_spec, name).first.numel(),
             {options.num_qvalue_nets(), options.delay_actor(), options.delay_qvalue(), options.separate_losses()}) {
    // The smoothed target action is clamped into these.
    const auto [low, high] = rlobj::detail::action_bounds(action_spec, name);
    const auto dtype = this->actor_net_.group->flat().scalar_type();
    const auto device = this->actor_net_.group->flat().device();
    min_action_ = this->register_buffer("min_action", low.to(device, dtype).clone());
    max_action_ = this->register_buffer("max_action", high.to(device, dtype).clone());
    this->make_value_estimator();
  }

  /// The actor loss alone (TorchRL's `actor_loss`): `loss_actor` and
  /// `state_action_value_actor`. Lets a training loop step the critic first and compute the
  /// actor loss with the updated critic, as TorchRL's TD3 example does.
  TensorDict actor_loss(TensorDict td) {
    return this->run(td, [this](TensorDict& batch) { return actor_loss_of(batch); });
  }

  /// The critic loss alone (TorchRL's `value_loss`): `loss_qvalue`, `pred_value`,
  /// `next_state_value`, `target_value`; writes `td_error` into `td`. Draws the smoothing noise.
  TensorDict value_loss(TensorDict td) {
    return this->run(td, [this](TensorDict& batch) { return value_loss_of(batch); });
  }

  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const override {
    return {"loss_actor", "loss_qvalue", "pred_value", "state_action_value_actor", "next_state_value", "target_value"};
  }

  /// The target policy smoothing noise for `action`: `clamp(policy_noise * N(0, 1), -noise_clip,
  /// noise_clip)`, the normals from `standard_normal_like` (one draw on LibTorch's default
  /// generator, as TorchRL's `randn_like`).
  torch::Tensor smoothing_noise(const torch::Tensor& action) {
    return (standard_normal_like(action) * this->options.policy_noise())
        .clamp(-this->options.noise_clip(), this->options.noise_clip());
  }

  /// The lower bound the smoothed target action is clamped into (a buffer).
  const torch::Tensor& min_action() const noexcept { return min_action_; }
  /// The upper bound the smoothed target action is clamped into (a buffer).
  const torch::Tensor& max_action() const noexcept { return max_action_; }

  /// Prints `rlobj::objectives::TD3Loss(num_qvalue_nets=..., policy_noise=..., noise_clip=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::" << this->loss_name() << "(num_qvalue_nets=" << this->options.num_qvalue_nets()
           << ", policy_noise=" << this->options.policy_noise() << ", noise_clip=" << this->options.noise_clip()
           << ")";
  }

 protected:
  /// Both losses and their logging entries. Writes `td_error` into `td`. The actor loss is
  /// computed first, then the critic loss (TorchRL's order: the smoothing noise is the
  /// forward's only draw).
  TensorDict compute(TensorDict& td) override {
    TensorDict out = actor_loss_of(td);
    out.update(value_loss_of(td));
    return out;
  }

  /// TD0, TD1 or TDLambda over the next values `forward` passes (``min_i Q'_i``).
  std::shared_ptr<value::ValueEstimatorBase> build_value_estimator(
      ValueEstimators type, const value::ValueEstimatorOptions& hyperparams) override {
    return detail::make_bootstrap_estimator(this->loss_name().c_str(), type, nullptr, hyperparams);
  }

  /// The standard normals of the target policy smoothing, shaped like `action`: TorchRL's
  /// `randn_like(action)` on LibTorch's default generator. Override to supply other draws.
  virtual torch::Tensor standard_normal_like(const torch::Tensor& action) { return torch::randn_like(action); }

  /// The actor loss and its logging entries.
  virtual TensorDict actor_loss_of(const TensorDict& td) = 0;

  /// The actor on `td`'s state (with gradients) and critic 0 of the frozen critics on
  /// (s, mu(s)), `[B]`; with `all_critics`, the other critics too, evaluated without a graph
  /// (same values; TorchRL's backward through them carries zeros), into `others`.
  std::pair<TensorDict, torch::Tensor> actor_and_critic0(const TensorDict& td, std::vector<torch::Tensor>* others) {
    TensorDict in = this->actor_->forward(detail::actor_loss_input(*this->actor_, this->qvalue_->in_keys(), td));
    const auto& critics = this->qvalue_net_.frozen;
    torch::Tensor q0 = this->evaluate_one(*critics.front(), in, /*squeeze=*/true);  // [B]
    if (others != nullptr) {
      torch::NoGradGuard no_grad;
      for (size_t i = 1; i < critics.size(); ++i) others->push_back(this->evaluate_one(*critics[i], in, /*squeeze=*/true));
    }
    return {std::move(in), std::move(q0)};
  }

 private:
  static Options checked(const char* name, const Options& o) {
    TORCH_CHECK_VALUE(o.num_qvalue_nets() >= 1, name, "Options: num_qvalue_nets must be >= 1, got ",
                      o.num_qvalue_nets());
    TORCH_CHECK_VALUE(std::isfinite(o.policy_noise()) && o.policy_noise() >= 0, name,
                      "Options: policy_noise must be finite and >= 0, got ", o.policy_noise());
    TORCH_CHECK_VALUE(std::isfinite(o.noise_clip()) && o.noise_clip() >= 0, name,
                      "Options: noise_clip must be finite and >= 0, got ", o.noise_clip());
    return o;
  }

  TensorDict value_loss_of(TensorDict& td) {
    const auto& keys = this->keys_;
    const auto& options = this->options;
    // The smoothing noise: drawn before the target is computed (TorchRL).
    torch::Tensor noise = smoothing_noise(td.get(keys.action));
    torch::Tensor next_q, target;
    {
      torch::NoGradGuard no_grad;
      TensorDict next = rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().keep_other(false));
      TensorDict next_actor(next.batch_size(), next.device());
      for (const auto& k : this->actor_->in_keys()) next_actor.set(k, next.get(k));
      next_actor = this->actor_net_.targets().front()->forward(next_actor);
      const torch::Tensor* next_action = next_actor.find(keys.action);
      TORCH_CHECK(next_action != nullptr, this->loss_name(), ": the actor did not write \"", keys.action.str(), "\"");
      torch::Tensor smoothed = (*next_action + noise).clamp(min_action_, max_action_);
      next_q = this->evaluate(this->qvalue_net_.targets(), this->critic_input(next, smoothed),
                              /*squeeze=*/false);  // [N, B, 1]
      if (next_q.size(-1) != 1) next_q = next_q.unsqueeze(-1);
      next_q = std::get<0>(next_q.min(0));                               // [B, 1]
      target = this->estimator_->value_estimate(td, next_q).squeeze(-1);  // [B]
    }
    torch::Tensor pred = this->evaluate(this->qvalue_net_.trained(), this->detached_critic_input(td));  // [N, B]
    TORCH_CHECK(pred.sizes().slice(1) == target.sizes(), this->loss_name(), ": predicted values have shape ",
                rlobj::detail::shape_str(pred.sizes()), " but targets have shape ",
                rlobj::detail::shape_str(target.sizes()));
    torch::Tensor td_error = (pred - target).pow(2).detach();
    torch::Tensor loss_qvalue =
        reduce(distance_loss(pred, target.expand_as(pred), options.loss_function()).sum(0), options.reduction());
    td.set(keys.priority, std::get<0>(td_error.max(0)));
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_qvalue", loss_qvalue);
    out.set("pred_value", pred.detach());
    out.set("next_state_value", next_q.squeeze(-1).detach());
    out.set("target_value", target.detach());
    return out;
  }

  torch::Tensor min_action_, max_action_;
};

/// TD3's actor and critic losses over an actor (`ActorT`, writing the action) and a critic
/// (`QValueT`, reading state and action, writing `state_action_value`); the critic is copied
/// `num_qvalue_nets` times. The action spec gives the bounds the smoothed target action is
/// clamped into (a `Bounded` spec; its last dim holds the action features).
///
/// ```
/// auto loss = rlobj::objectives::TD3Loss(actor, qvalue, env.action_spec());
/// rlobj::TensorDict out = loss(batch);       // loss_actor, loss_qvalue, ...
/// ```
template <typename ActorT = modules::Actor, typename QValueT = modules::ValueOperator>
class TD3LossImpl : public TD3LossBase<TD3LossOptions, ActorT, QValueT> {
 public:
  /// See `TD3LossBase`.
  TD3LossImpl(ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec,
              TD3LossOptions options = {})
      : TD3LossBase<TD3LossOptions, ActorT, QValueT>("TD3Loss", std::move(actor_network), std::move(qvalue_network),
                                                     action_spec, options) {}

 protected:
  /// `loss_actor = reduce(-Q_0(s, mu(s)))`; `state_action_value_actor`: every critic's, `[N, B]`.
  TensorDict actor_loss_of(const TensorDict& td) override {
    std::vector<torch::Tensor> others;
    std::vector<torch::Tensor> q_actor{this->actor_and_critic0(td, &others).second};
    q_actor.insert(q_actor.end(), others.begin(), others.end());
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_actor", reduce(-q_actor.front(), this->options.reduction()));
    out.set("state_action_value_actor", torch::stack(q_actor, 0).detach());  // [N, B]
    return out;
  }
};

/// TD3+BC (TorchRL's `TD3BCLoss`): TD3's critic loss, and the actor loss
/// `reduce(-lambda * Q_0(s, mu(s)) + mean((mu(s) - a)^2))` with `lambda = alpha / mean|Q_0|`
/// (detached), which keeps the policy near the batch's actions: offline RL from logged data.
/// Outputs `loss_actor`, `loss_qvalue`, `bc_loss`, `lmbd`, `pred_value` (`[N, B]`),
/// `state_action_value_actor` (critic 0's, `[B]`), `next_state_value`, `target_value`.
///
/// ```
/// auto loss = rlobj::objectives::TD3BCLoss(actor, qvalue, spec, TD3BCLossOptions().alpha(2.5));
/// ```
template <typename ActorT = modules::Actor, typename QValueT = modules::ValueOperator>
class TD3BCLossImpl : public TD3LossBase<TD3BCLossOptions, ActorT, QValueT> {
 public:
  /// See `TD3LossBase`; also `c10::ValueError` for an `alpha` that is not finite and >= 0.
  TD3BCLossImpl(ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec,
                TD3BCLossOptions options = {})
      : TD3LossBase<TD3BCLossOptions, ActorT, QValueT>("TD3BCLoss", std::move(actor_network),
                                                       std::move(qvalue_network), action_spec, checked(options)) {}

  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const override {
    return {"loss_actor", "loss_qvalue", "bc_loss", "lmbd", "pred_value", "state_action_value_actor",
            "next_state_value", "target_value"};
  }

  /// Prints `rlobj::objectives::TD3BCLoss(num_qvalue_nets=..., policy_noise=..., noise_clip=..., alpha=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::TD3BCLoss(num_qvalue_nets=" << this->options.num_qvalue_nets()
           << ", policy_noise=" << this->options.policy_noise() << ", noise_clip=" << this->options.noise_clip()
           << ", alpha=" << this->options.alpha() << ")";
  }

 protected:
  TensorDict actor_loss_of(const TensorDict& td) override {
    auto [in, q] = this->actor_and_critic0(td, nullptr);  // [B]
    const torch::Tensor bc_loss = torch::mse_loss(in.get(this->keys_.action), td.get(this->keys_.action));
    // alpha / mean|Q| as Python's float / Tensor computes it: reciprocal, then the product.
    const torch::Tensor lmbd = q.abs().mean().detach().reciprocal() * this->options.alpha();
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_actor", reduce(-lmbd * q + bc_loss, this->options.reduction()));
    out.set("state_action_value_actor", q.detach());
    out.set("bc_loss", bc_loss.detach());
    out.set("lmbd", lmbd);
    return out;
  }

 private:
  static TD3BCLossOptions checked(const TD3BCLossOptions& o) {
    TORCH_CHECK_VALUE(std::isfinite(o.alpha()) && o.alpha() >= 0, "TD3BCLossOptions: alpha must be finite and >= 0, got ",
                      o.alpha());
    return o;
  }
};

/// Holder of `TD3BCLossImpl`: `auto loss = TD3BCLoss(actor, qvalue, spec);`.
template <typename ActorT = modules::Actor, typename QValueT = modules::ValueOperator>
class TD3BCLoss : public LossHolder<TD3BCLossImpl<ActorT, QValueT>> {
 public:
  using LossHolder<TD3BCLossImpl<ActorT, QValueT>>::LossHolder;
};
/// Deduces the network types from the arguments.
template <typename ActorT, typename QValueT, typename... Rest>
TD3BCLoss(ActorT, QValueT, Rest&&...) -> TD3BCLoss<ActorT, QValueT>;

/// Holder of `TD3LossImpl`: `auto loss = TD3Loss(actor, qvalue, env.action_spec());`.
template <typename ActorT = modules::Actor, typename QValueT = modules::ValueOperator>
class TD3Loss : public LossHolder<TD3LossImpl<ActorT, QValueT>> {
 public:
  using LossHolder<TD3LossImpl<ActorT, QValueT>>::LossHolder;
};
/// Deduces the network types from the arguments: `TD3Loss(actor, qvalue, spec)` holds a
/// `TD3LossImpl<decltype(actor), decltype(qvalue)>`.
template <typename ActorT, typename QValueT, typename... Rest>
TD3Loss(ActorT, QValueT, Rest&&...) -> TD3Loss<ActorT, QValueT>;

}  // namespace objectives
}  // namespace rlobj
