#pragma once

/// \file
/// `rlobj::objectives::SACLoss`, TorchRL 0.4's `SACLoss` (version 2: no state-value network;
/// Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications"):
///
/// * a stochastic actor (`ProbabilisticActor`, usually over a `TanhNormal`), and
///   `num_qvalue_nets` critics (twins by default) registered as one ensemble
///   (`NetworkOptions::ensemble`: TorchRL redraws every copy, see there);
/// * target ``y = r + gamma * (!terminated) * min_i (Q'_i(s', a') - alpha log pi(a'|s'))`` with
///   ``a' ~ pi(.|s')`` drawn from the online actor (TD(0) by default);
/// * critic loss `sum_i distance(Q_i(s, a), y)`, reduced; actor loss
///   `alpha log pi(a~|s) - min_i Q_i(s, a~)` with `a~ ~ pi(.|s)` reparameterised and the critics
///   frozen; temperature loss `-log_alpha * (log pi(a~|s) + target_entropy)`, computed (with no
///   gradient) even when alpha is fixed, as TorchRL;
/// * outputs `loss_actor`, `loss_qvalue`, `loss_alpha`, `alpha` (`exp(log_alpha)`, detached) and
///   `entropy` (`-mean log pi(a~|s)`); `td_error` (`max_i |Q_i - y|`, `[B]`) is written into the
///   input.
///
/// Random draws, in TorchRL's order: the next action first (`rsample()` of the actor's
/// distribution on `next`), then the actor loss's action (`rsample()` on the batch), each one
/// `normal_()` call on LibTorch's default generator, so a seeded run reproduces TorchRL's.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
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
#include "rlobj/modules/distributions.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/actor_qvalue.h"
#include "rlobj/objectives/common.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// Options of `SACLoss`, with TorchRL 0.4's names and defaults.
struct SACLossOptions {
  /// Number of critics (twins: 2).
  TORCH_ARG(int64_t, num_qvalue_nets) = 2;
  /// Distance between predicted and target values.
  TORCH_ARG(LossFunction, loss_function) = LossFunction::SmoothL1;
  /// Initial temperature (`log_alpha = log(alpha_init)`).
  TORCH_ARG(double, alpha_init) = 1.0;
  /// Lower bound of alpha: when non-zero, `log_alpha` is clamped into
  /// `[log min_alpha, log max_alpha]` (max 1e9 when unset) whenever alpha is read.
  TORCH_ARG(std::optional<double>, min_alpha) = std::nullopt;
  /// Upper bound of alpha, applied with a non-zero `min_alpha` only: as in TorchRL 0.4, a
  /// `max_alpha` without `min_alpha` clamps nothing.
  TORCH_ARG(std::optional<double>, max_alpha) = std::nullopt;
  /// Keep alpha at `alpha_init` (`log_alpha` is then a buffer, not trained).
  TORCH_ARG(bool, fixed_alpha) = false;
  /// The entropy alpha is tuned towards; unset: TorchRL's "auto", `-(number of action features)`
  /// (the action spec's last dim: TorchRL's `-prod(shape)` for a one-dim action).
  TORCH_ARG(std::optional<double>, target_entropy) = std::nullopt;
  /// Keep a delayed copy of the actor (TorchRL's default: no; SAC v2 does not use it).
  TORCH_ARG(bool, delay_actor) = false;
  /// Keep delayed copies of the critics for targets.
  TORCH_ARG(bool, delay_qvalue) = true;
  /// Parameters shared by actor and critics are trained by the actor loss only.
  TORCH_ARG(bool, separate_losses) = false;
  /// Reduction of the three losses.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// When the inputs are checked for NaN and Inf (see `FiniteCheck`).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// The keys `SACLoss` reads and writes.
using SACLossKeys = ActorQValueLossKeys;

/// SAC's actor, critic and temperature losses over a stochastic actor (`ActorT`, with
/// `get_dist(TensorDict&)`: a `ProbabilisticActor`) and a critic (`QValueT`, reading state and
/// action, writing `state_action_value`), copied `num_qvalue_nets` times. The action spec gives
/// the action's feature count (its last dim), for "auto" target entropy and input checks.
///
/// ```
/// auto loss = rlobj::objectives::SACLoss(actor, qvalue, env.action_spec());
/// rlobj::TensorDict out = loss(batch);  // loss_actor, loss_qvalue, loss_alpha, alpha, entropy
/// ```
template <typename ActorT = modules::ProbabilisticActor, typename QValueT = modules::ValueOperator>
class SACLossImpl : public ActorQValueLossBase<SACLossOptions, ActorT, QValueT> {
  using Base = ActorQValueLossBase<SACLossOptions, ActorT, QValueT>;

 public:
  /// Registers the actor and `num_qvalue_nets` critics (one dtype and device), `log_alpha`
  /// (trained unless `fixed_alpha`), the alpha bounds and `target_entropy` buffers, and builds the
  /// default estimator, TD0; `action_spec`'s last dim is the action's feature count. Throws
  /// `c10::ValueError` on an empty network, a bad option or a spec with no feature dim.
  SACLossImpl(ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec, SACLossOptions options = {})
      : Base("SACLoss", checked(options), std::move(actor_network), std::move(qvalue_network),
             action_features(action_spec),
             {options.num_qvalue_nets(), options.delay_actor(), options.delay_qvalue(), options.separate_losses()}) {
    const auto& o = this->options;
    const auto tensor_options = this->actor_net_.group->flat().options().requires_grad(false);
    // TorchRL: torch.tensor(math.log(alpha_init)), the log taken in double.
    log_alpha_ = this->register_learnable("log_alpha", torch::full({}, std::log(o.alpha_init()), tensor_options),
                                          !o.fixed_alpha());
    // TorchRL 0.4: one bound alone gets the other's default (min 0, max 1e9), and alpha is
    // clamped only when min_alpha is non-zero (a max_alpha alone clamps nothing).
    if (o.min_alpha().value_or(0) != 0) {
      const double max_alpha = o.max_alpha().value_or(0) != 0 ? *o.max_alpha() : 1e9;
      min_log_alpha_ = this->register_buffer("min_log_alpha", torch::full({}, *o.min_alpha(), tensor_options).log());
      max_log_alpha_ = this->register_buffer("max_log_alpha", torch::full({}, max_alpha, tensor_options).log());
    }
    const double target_entropy = o.target_entropy().value_or(-static_cast<double>(this->action_features_));  // "auto"
    target_entropy_ = this->register_buffer("target_entropy", torch::full({}, target_entropy, tensor_options));
    this->make_value_estimator();
  }

  /// `exp(log_alpha)`, without gradient; `log_alpha` is first clamped into its bounds, if any
  /// (its `.data`, as TorchRL).
  torch::Tensor alpha() {
    torch::NoGradGuard no_grad;
    if (min_log_alpha_.defined()) log_alpha_.data().clamp_(min_log_alpha_, max_log_alpha_);
    return log_alpha_.exp();
  }
  /// The temperature's log (a parameter unless `fixed_alpha`).
  const torch::Tensor& log_alpha() const noexcept { return log_alpha_; }
  /// The entropy alpha is tuned towards.
  const torch::Tensor& target_entropy() const noexcept { return target_entropy_; }

  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const override {
    return {"loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"};
  }

  /// Prints `rlobj::objectives::SACLoss(num_qvalue_nets=..., fixed_alpha=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::SACLoss(num_qvalue_nets=" << this->options.num_qvalue_nets()
           << ", fixed_alpha=" << (this->options.fixed_alpha() ? "true" : "false") << ")";
  }

 protected:
  /// The three losses and their logging entries. Writes `td_error` into `td`.
  TensorDict compute(TensorDict& td) override {
    const auto& keys = this->keys_;
    const auto& options = this->options;
    const torch::Tensor a = alpha();

    // Critic loss (first, as in TorchRL: its draw comes first).
    torch::Tensor target;
    {
      torch::NoGradGuard no_grad;
      TensorDict next = rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().keep_other(false));
      TensorDict next_actor(next.batch_size(), next.device());
      for (const auto& k : this->actor_->in_keys()) next_actor.set(k, next.get(k));
      // The online actor, even with delay_actor (SAC v2 does not use a target actor).
      auto dist = this->actor_net_.online.front()->get_dist(next_actor);
      torch::Tensor next_action = draw_action(*dist);
      torch::Tensor next_log_prob = dist->log_prob(next_action);
      torch::Tensor next_q =
          this->evaluate(this->qvalue_net_.targets(), this->critic_input(next, next_action), /*squeeze=*/false);
      if (next_q.size(-1) != 1) next_q = next_q.unsqueeze(-1);  // [N, B, 1]
      TORCH_CHECK(next_log_prob.sizes() == next_q.sizes().slice(1, static_cast<size_t>(next_q.dim() - 2)),
                  "SACLoss: the log-probability has shape ", rlobj::detail::shape_str(next_log_prob.sizes()),
                  " but the critics' values have shape ", rlobj::detail::shape_str(next_q.sizes()));
      next_log_prob = next_log_prob.unsqueeze(-1);
      torch::Tensor next_value = std::get<0>((next_q - a * next_log_prob).min(0));  // [B, 1]
      target = this->estimator_->value_estimate(td, next_value).squeeze(-1);       // [B]
    }
    torch::Tensor pred = this->evaluate(this->qvalue_net_.trained(), this->detached_critic_input(td));  // [N, B]
    TORCH_CHECK(pred.sizes().slice(1) == target.sizes(), "SACLoss: predicted values have shape ",
                rlobj::detail::shape_str(pred.sizes()), " but targets have shape ",
                rlobj::detail::shape_str(target.sizes()));
    torch::Tensor td_error = (pred - target).abs().detach();
    torch::Tensor loss_qvalue =
        reduce(distance_loss(pred, target.expand_as(pred), options.loss_function()).sum(0), options.reduction());

    // Actor loss.
    TensorDict actor_in(td.batch_size(), td.device());
    for (const auto& k : this->actor_->in_keys()) actor_in.set(k, td.get(k).detach());
    auto dist = this->actor_->get_dist(actor_in);
    torch::Tensor action = draw_action(*dist);
    torch::Tensor log_prob = dist->log_prob(action);
    torch::Tensor q = this->evaluate(this->qvalue_net_.frozen, this->critic_input(td, action, /*detach=*/true));
    torch::Tensor min_q = std::get<0>(q.min(0));  // [B]
    TORCH_CHECK(log_prob.sizes() == min_q.sizes(), "SACLoss: the log-probability has shape ",
                rlobj::detail::shape_str(log_prob.sizes()), " but the critics' values have shape ",
                rlobj::detail::shape_str(min_q.sizes()));
    torch::Tensor loss_actor = reduce(a * log_prob - min_q, options.reduction());
    const torch::Tensor lp = log_prob.detach();
    torch::Tensor loss_alpha = reduce(-log_alpha_ * (lp + target_entropy_), options.reduction());

    td.set(keys.priority, std::get<0>(td_error.max(0)));
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_actor", loss_actor);
    out.set("loss_qvalue", loss_qvalue);
    out.set("loss_alpha", loss_alpha);
    out.set("alpha", a);
    out.set("entropy", (-lp).mean());
    return out;
  }

  /// TD0, TD1 or TDLambda over the soft next values `forward` passes.
  std::shared_ptr<value::ValueEstimatorBase> build_value_estimator(
      ValueEstimators type, const value::ValueEstimatorOptions& hyperparams) override {
    return detail::make_bootstrap_estimator("SACLoss", type, nullptr, hyperparams);
  }

  /// A reparameterised sample of `dist` (`dist.rsample()`, LibTorch's default generator, as
  /// TorchRL). Called twice per forward: for the next action, then for the actor loss's.
  /// Override to supply other draws.
  virtual torch::Tensor draw_action(const modules::Distribution& dist) {
    TORCH_CHECK(dist.has_rsample(), "SACLoss: the actor's distribution (", dist.name(),
                ") has no reparameterised sample (rsample)");
    return dist.rsample();
  }

 private:
  static int64_t action_features(const TensorSpec& action_spec) {
    TORCH_CHECK_VALUE(action_spec.shape().size() >= 1 && action_spec.shape().back() >= 1,
                      "SACLoss: the action spec must have a last dim holding the action features, got shape ",
                      rlobj::detail::shape_str(action_spec.shape()));
    return action_spec.shape().back();
  }

  static SACLossOptions checked(const SACLossOptions& o) {
    TORCH_CHECK_VALUE(o.num_qvalue_nets() >= 1, "SACLossOptions: num_qvalue_nets must be >= 1, got ",
                      o.num_qvalue_nets());
    TORCH_CHECK_VALUE(std::isfinite(o.alpha_init()) && o.alpha_init() > 0,
                      "SACLossOptions: alpha_init must be finite and > 0, got ", o.alpha_init());
    TORCH_CHECK_VALUE(!o.min_alpha() || (std::isfinite(*o.min_alpha()) && *o.min_alpha() >= 0),
                      "SACLossOptions: min_alpha must be finite and >= 0, got ", o.min_alpha().value_or(0));
    TORCH_CHECK_VALUE(!o.max_alpha() || (std::isfinite(*o.max_alpha()) && *o.max_alpha() > 0),
                      "SACLossOptions: max_alpha must be finite and > 0, got ", o.max_alpha().value_or(0));
    TORCH_CHECK_VALUE(!o.min_alpha() || !o.max_alpha() || *o.min_alpha() < *o.max_alpha(),
                      "SACLossOptions: min_alpha (", o.min_alpha().value_or(0), ") must be < max_alpha (",
                      o.max_alpha().value_or(0), ")");
    TORCH_CHECK_VALUE(!o.target_entropy() || std::isfinite(*o.target_entropy()),
                      "SACLossOptions: target_entropy must be finite");
    return o;
  }

  torch::Tensor log_alpha_, min_log_alpha_, max_log_alpha_, target_entropy_;
};

/// Holder of `SACLossImpl`: `auto loss = SACLoss(actor, qvalue, env.action_spec());`.
template <typename ActorT = modules::ProbabilisticActor, typename QValueT = modules::ValueOperator>
class SACLoss : public LossHolder<SACLossImpl<ActorT, QValueT>> {
 public:
  using LossHolder<SACLossImpl<ActorT, QValueT>>::LossHolder;
};
/// Deduces the network types from the arguments: `SACLoss(actor, qvalue, spec)` holds a
/// `SACLossImpl<decltype(actor), decltype(qvalue)>`.
template <typename ActorT, typename QValueT, typename... Rest>
SACLoss(ActorT, QValueT, Rest&&...) -> SACLoss<ActorT, QValueT>;

}  // namespace objectives
}  // namespace rlobj
