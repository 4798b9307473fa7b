#pragma once

/// \file
/// `rlobj::objectives::SACLoss`, TorchRL 0.4's `SACLoss` (version 2: no state-value network;
/// Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications"):
///
/// * a stochastic actor (`ProbabilisticActor`, usually over a `TanhNormal`), and
///   `num_qvalue_nets` critics (twins by default) registered as one ensemble
///   (`NetworkOptions::ensemble`: TorchRL redraws every copy, see there);
/// * target `y = r + gamma * (!terminated) * min_i (Q'_i(s', a') - alpha log pi(a'|s'))` with
///   `a' ~ pi(.|s')` drawn from the online actor (TD(0) by default);
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
  /// Bounds of alpha: with a non-zero `min_alpha`, `log_alpha` is clamped into
  /// `[log min_alpha, log max_alpha]` (max 1e9 when unset) whenever alpha is read. As in
  /// TorchRL 0.4, a `max_alpha` without `min_alpha` clamps nothing.
  TORCH_ARG(std::optional<double>, min_alpha) = std::nullopt;
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

/// The keys `SACLoss` reads and writes; `reward`, `done` and `terminated` are read under
/// `"next"`.
struct SACLossKeys {
  NestedKey action = "action";
  NestedKey state_action_value = "state_action_value";
  NestedKey priority = "td_error";
  NestedKey reward = "reward";
  NestedKey done = "done";
  NestedKey terminated = "terminated";
};

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
class SACLossImpl : public LossModuleImpl {
 public:
  using ActorImpl = typename ActorT::ContainedType;
  using QValueImpl = typename QValueT::ContainedType;

  SACLossImpl(ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec, SACLossOptions options = {})
      : options(checked(options)), actor_(std::move(actor_network)), qvalue_(std::move(qvalue_network)) {
    TORCH_CHECK_VALUE(!actor_.is_empty(), "SACLoss: actor_network is empty");
    TORCH_CHECK_VALUE(!qvalue_.is_empty(), "SACLoss: qvalue_network is empty");
    TORCH_CHECK_VALUE(action_spec.shape().size() >= 1 && action_spec.shape().back() >= 1,
                      "SACLoss: the action spec must have a last dim holding the action features, got shape ",
                      rlobj::detail::shape_str(action_spec.shape()));
    action_features_ = action_spec.shape().back();
    detail::check_same_placement("SACLoss", {{"actor_network", actor_.get()}, {"qvalue_network", qvalue_.get()}});
    std::vector<torch::Tensor> shared;
    if (this->options.separate_losses()) shared = actor_->parameters();
    actor_net_ = register_network("actor_network", actor_.ptr(), NetworkOptions().target(this->options.delay_actor()));
    qvalue_net_ = register_network("qvalue_network", qvalue_.ptr(),
                                   NetworkOptions()
                                       .ensemble(this->options.num_qvalue_nets())
                                       .target(this->options.delay_qvalue())
                                       .frozen(true)
                                       .compare_against(shared));
    const auto tensor_options = actor_net_.group->flat().options().requires_grad(false);
    // TorchRL: torch.tensor(math.log(alpha_init)), the log taken in double.
    log_alpha_ = register_learnable("log_alpha", torch::full({}, std::log(this->options.alpha_init()), tensor_options),
                                    !this->options.fixed_alpha());
    // TorchRL 0.4: one bound alone gets the other's default (min 0, max 1e9), and alpha is
    // clamped only when min_alpha is non-zero (a max_alpha alone clamps nothing).
    if (this->options.min_alpha().value_or(0) != 0) {
      const double max_alpha = this->options.max_alpha().value_or(0) != 0 ? *this->options.max_alpha() : 1e9;
      min_log_alpha_ = register_buffer("min_log_alpha", torch::full({}, *this->options.min_alpha(), tensor_options).log());
      max_log_alpha_ = register_buffer("max_log_alpha", torch::full({}, max_alpha, tensor_options).log());
    }
    const double target_entropy =
        this->options.target_entropy().value_or(-static_cast<double>(action_features_));  // "auto"
    target_entropy_ = register_buffer("target_entropy", torch::full({}, target_entropy, tensor_options));
    make_value_estimator(ValueEstimators::TD0);
  }

  /// The three losses and their logging entries (`batch_size` `[]`). Writes `td_error` into `td`.
  TensorDict forward(TensorDict td) {
    check_inputs(td);
    detail::check_finite_inputs("SACLoss", td, input_keys_, options.check_finite());
    ensure_linked();
    const torch::Tensor a = alpha();

    // Critic loss (first, as in TorchRL: its draw comes first).
    torch::Tensor target;
    {
      torch::NoGradGuard no_grad;
      TensorDict next = rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().keep_other(false));
      TensorDict next_actor(next.batch_size(), next.device());
      for (const auto& k : actor_->in_keys()) next_actor.set(k, next.get(k));
      // The online actor, even with delay_actor (SAC v2 does not use a target actor).
      auto dist = actor_net_.online.front()->get_dist(next_actor);
      torch::Tensor next_action = draw_action(*dist);
      torch::Tensor next_log_prob = dist->log_prob(next_action);
      torch::Tensor next_q = evaluate(qvalue_net_.targets(), critic_input(next, next_action), /*squeeze=*/false);
      if (next_q.size(-1) != 1) next_q = next_q.unsqueeze(-1);  // [N, B, 1]
      TORCH_CHECK(next_log_prob.sizes() == next_q.sizes().slice(1, static_cast<size_t>(next_q.dim() - 2)),
                  "SACLoss: the log-probability has shape ", rlobj::detail::shape_str(next_log_prob.sizes()),
                  " but the critics' values have shape ", rlobj::detail::shape_str(next_q.sizes()));
      next_log_prob = next_log_prob.unsqueeze(-1);
      torch::Tensor next_value = std::get<0>((next_q - a * next_log_prob).min(0));  // [B, 1]
      target = estimator_->value_estimate(td, next_value).squeeze(-1);             // [B]
    }
    TensorDict q_in(td.batch_size(), td.device());
    for (const auto& k : qvalue_->in_keys()) q_in.set(k, td.get(k).detach());
    torch::Tensor pred = evaluate(qvalue_net_.trained(), q_in);  // [N, B]
    TORCH_CHECK(pred.sizes().slice(1) == target.sizes(), "SACLoss: predicted values have shape ",
                rlobj::detail::shape_str(pred.sizes()), " but targets have shape ",
                rlobj::detail::shape_str(target.sizes()));
    torch::Tensor td_error = (pred - target).abs().detach();
    torch::Tensor loss_qvalue =
        reduce(distance_loss(pred, target.expand_as(pred), options.loss_function()).sum(0), options.reduction());

    // Actor loss.
    TensorDict actor_in(td.batch_size(), td.device());
    for (const auto& k : actor_->in_keys()) actor_in.set(k, td.get(k).detach());
    auto dist = actor_->get_dist(actor_in);
    torch::Tensor action = draw_action(*dist);
    torch::Tensor log_prob = dist->log_prob(action);
    torch::Tensor q = evaluate(qvalue_net_.frozen, critic_input(td, action, /*detach=*/true));  // [N, B]
    torch::Tensor min_q = std::get<0>(q.min(0));
    TORCH_CHECK(log_prob.sizes() == min_q.sizes(), "SACLoss: the log-probability has shape ",
                rlobj::detail::shape_str(log_prob.sizes()), " but the critics' values have shape ",
                rlobj::detail::shape_str(min_q.sizes()));
    torch::Tensor loss_actor = reduce(a * log_prob - min_q, options.reduction());
    const torch::Tensor lp = log_prob.detach();
    torch::Tensor loss_alpha = reduce(-log_alpha_ * (lp + target_entropy_), options.reduction());

    td.set(keys_.priority, std::get<0>(td_error.max(0)));
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_actor", loss_actor);
    out.set("loss_qvalue", loss_qvalue);
    out.set("loss_alpha", loss_alpha);
    out.set("alpha", a);
    out.set("entropy", (-lp).mean());
    return out;
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

  /// Builds the value estimator (TD0, TD1 or TDLambda) that turns the soft values into targets.
  void make_value_estimator(ValueEstimators type = ValueEstimators::TD0,
                            value::ValueEstimatorOptions hyperparams = {}) {
    estimator_ = detail::make_bootstrap_estimator("SACLoss", type, nullptr, hyperparams);
    value_type_ = type;
    keys_changed();
  }
  value::ValueEstimatorBase& value_estimator() const { return *estimator_; }
  ValueEstimators value_type() const noexcept { return value_type_; }

  /// Renames input keys: action, state_action_value, priority, reward, done,
  /// terminated. Renaming `action` or `state_action_value` only changes where the loss reads
  /// them: the networks' keys must be changed to match.
  void set_keys(const std::map<std::string, NestedKey>& keys) {
    rlobj::detail::set_named_keys("SACLoss", keys,
                                  {{"action", &keys_.action},
                                   {"state_action_value", &keys_.state_action_value},
                                   {"priority", &keys_.priority},
                                   {"reward", &keys_.reward},
                                   {"done", &keys_.done},
                                   {"terminated", &keys_.terminated}});
    keys_changed();
  }
  const SACLossKeys& tensor_keys() const noexcept { return keys_; }
  /// Every key `forward` may read (sorted).
  const std::vector<NestedKey>& in_keys() const noexcept { return input_keys_; }
  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const { return {"loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"}; }

  /// The actor (the user's network).
  ActorT& actor_network() noexcept { return actor_; }
  /// The online critics: copy 0 is the user's network (its parameters redrawn, see
  /// `NetworkOptions::ensemble`).
  const std::vector<std::shared_ptr<QValueImpl>>& qvalue_networks() const noexcept { return qvalue_net_.online; }
  /// The target critics (the online ones without `delay_qvalue`).
  const std::vector<std::shared_ptr<QValueImpl>>& target_qvalue_networks() const noexcept {
    return qvalue_net_.targets();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::SACLoss(num_qvalue_nets=" << options.num_qvalue_nets()
           << ", fixed_alpha=" << (options.fixed_alpha() ? "true" : "false") << ")";
  }

  /// The options the loss was built with.
  SACLossOptions options;

 protected:
  /// A reparameterised sample of `dist` (`dist.rsample()`, LibTorch's default generator, as
  /// TorchRL). Called twice per forward: for the next action, then for the actor loss's.
  /// Override to supply other draws.
  virtual torch::Tensor draw_action(const modules::Distribution& dist) {
    TORCH_CHECK(dist.has_rsample(), "SACLoss: the actor's distribution (", dist.name(),
                ") has no reparameterised sample (rsample)");
    return dist.rsample();
  }

 private:
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

  // The critic's inputs from `td` (its state keys) with `action` as the action.
  TensorDict critic_input(const TensorDict& td, const torch::Tensor& action, bool detach = false) const {
    TensorDict in(td.batch_size(), td.device());
    for (const auto& k : qvalue_->in_keys()) {
      if (k != keys_.action) in.set(k, detach ? td.get(k).detach() : td.get(k));
    }
    in.set(keys_.action, action);
    return in;
  }

  // Every critic of `critics` on `in`, stacked: [N, *batch] (squeezed) or [N, *batch, 1].
  torch::Tensor evaluate(const std::vector<std::shared_ptr<QValueImpl>>& critics, const TensorDict& in,
                         bool squeeze = true) const {
    std::vector<torch::Tensor> values;
    values.reserve(critics.size());
    for (const auto& critic : critics) {
      TensorDict out = critic->forward(in.copy());
      const torch::Tensor* q = out.find(keys_.state_action_value);
      TORCH_CHECK(q != nullptr, "SACLoss: the qvalue network did not write \"", keys_.state_action_value.str(),
                  "\"; set its out_keys or call set_keys({{\"state_action_value\", ...}})");
      values.push_back(squeeze ? q->squeeze(-1) : *q);
    }
    return torch::stack(values, 0);
  }

  void keys_changed() {
    const NestedKey next("next");
    // Everything forward reads, checked before anything is drawn: a rejected batch leaves the
    // generator untouched.
    std::vector<NestedKey> required = {keys_.action};
    for (const auto& k : qvalue_->in_keys()) {
      required.push_back(k);
      if (k != keys_.action) required.push_back(next / k);
    }
    for (const auto& k : actor_->in_keys()) {
      required.push_back(k);
      required.push_back(next / k);
    }
    for (const auto& k : {keys_.reward, keys_.done, keys_.terminated}) required.push_back(next / k);
    input_keys_ = detail::sorted_unique(required);
    required_keys_ = std::move(required);
    computed_keys_ = qvalue_->in_keys();
    computed_keys_.push_back(keys_.action);
    for (const auto& k : actor_->in_keys()) {
      computed_keys_.push_back(k);
      computed_keys_.push_back(next / k);
    }
    computed_keys_.push_back(next / keys_.reward);
    if (estimator_) {
      detail::set_estimator_keys(*estimator_, keys_.state_action_value, keys_.reward, keys_.done, keys_.terminated);
    }
  }

  void check_inputs(const TensorDict& td) const {
    detail::require_keys("SACLoss", td, required_keys_);
    const torch::Tensor& action = td.get(keys_.action);
    TORCH_CHECK_VALUE(action.dim() >= 1 && action.size(-1) == action_features_, "SACLoss: \"", keys_.action.str(),
                      "\" has shape ", rlobj::detail::shape_str(action.sizes()), " but the action spec has ",
                      action_features_, " feature(s)");
    TORCH_CHECK(td.batch_dims() >= 1, "SACLoss: expected a batch of transitions (batch_dims >= 1), got "
                "batch_size ", rlobj::detail::shape_str(td.batch_size()));
    detail::check_network_inputs("SACLoss", td, computed_keys_, actor_net_.group->flat().scalar_type());
  }

  SACLossKeys keys_;
  std::vector<NestedKey> input_keys_;     // in_keys()
  std::vector<NestedKey> required_keys_;  // what forward cannot do without
  std::vector<NestedKey> computed_keys_;  // network inputs and the reward, dtype/shape-checked
  ActorT actor_;
  QValueT qvalue_;
  LossNetwork<ActorImpl> actor_net_;
  LossNetwork<QValueImpl> qvalue_net_;
  int64_t action_features_ = 0;
  torch::Tensor log_alpha_, min_log_alpha_, max_log_alpha_, target_entropy_;
  std::shared_ptr<value::ValueEstimatorBase> estimator_;
  ValueEstimators value_type_ = ValueEstimators::TD0;
};

/// Holder of `SACLossImpl`: `auto loss = SACLoss(actor, qvalue, env.action_spec());`.
template <typename ActorT = modules::ProbabilisticActor, typename QValueT = modules::ValueOperator>
class SACLoss : public torch::nn::ModuleHolder<SACLossImpl<ActorT, QValueT>> {
 public:
  using Impl = SACLossImpl<ActorT, QValueT>;
  using Base = torch::nn::ModuleHolder<Impl>;
  using Base::get;

  SACLoss(std::nullptr_t) : Base(nullptr) {}                      // NOLINT
  SACLoss(std::shared_ptr<Impl> impl) : Base(std::move(impl)) {}  // NOLINT
  SACLoss(ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec, SACLossOptions options = {})
      : Base(std::make_shared<Impl>(std::move(actor_network), std::move(qvalue_network), action_spec, options)) {}
};

}  // namespace objectives
}  // namespace rlobj
