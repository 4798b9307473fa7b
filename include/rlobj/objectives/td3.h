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
/// * target `y = r + gamma * (!terminated) * min_i Q'_i(s', a')` (TD(0) by default);
/// * critic loss: `sum_i distance(Q_i(s, a), y)`, reduced; actor loss: `-Q_0(s, mu(s))` with
///   the critics frozen (critic 0 only, as TorchRL);
/// * outputs `loss_actor`, `loss_qvalue`, `state_action_value_actor` (`[N, B]`),
///   `next_state_value` (`[B]`), `pred_value` (`[N, B]`), `target_value` (`[B]`), all but the
///   losses detached; `td_error` (`max_i (Q_i - y)^2`, `[B]`) is written into the input.
///
/// The delayed policy update (the actor stepped every 2nd update) belongs to the training loop,
/// as in TorchRL: see `examples/td3_pendulum`.

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

/// The keys `TD3Loss` reads and writes; `reward`, `done` and `terminated` are read under
/// `"next"`.
struct TD3LossKeys {
  NestedKey action = "action";
  NestedKey state_action_value = "state_action_value";
  NestedKey priority = "td_error";
  NestedKey reward = "reward";
  NestedKey done = "done";
  NestedKey terminated = "terminated";
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
class TD3LossImpl : public LossModuleImpl {
 public:
  using ActorImpl = typename ActorT::ContainedType;
  using QValueImpl = typename QValueT::ContainedType;

  TD3LossImpl(ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec,
              TD3LossOptions options = {})
      : options(checked(options)), actor_(std::move(actor_network)), qvalue_(std::move(qvalue_network)) {
    TORCH_CHECK_VALUE(!actor_.is_empty(), "TD3Loss: actor_network is empty");
    TORCH_CHECK_VALUE(!qvalue_.is_empty(), "TD3Loss: qvalue_network is empty");
    // The smoothed target action is clamped into these.
    const auto [low, high] = rlobj::detail::action_bounds(action_spec, "TD3Loss");
    detail::check_same_placement("TD3Loss", {{"actor_network", actor_.get()}, {"qvalue_network", qvalue_.get()}});
    std::vector<torch::Tensor> shared;
    if (this->options.separate_losses()) shared = actor_->parameters();
    actor_net_ = register_network("actor_network", actor_.ptr(), NetworkOptions().target(this->options.delay_actor()));
    qvalue_net_ = register_network("qvalue_network", qvalue_.ptr(),
                                   NetworkOptions()
                                       .ensemble(this->options.num_qvalue_nets())
                                       .target(this->options.delay_qvalue())
                                       .frozen(true)
                                       .compare_against(shared));
    const auto dtype = actor_net_.group->flat().scalar_type();
    const auto device = actor_net_.group->flat().device();
    min_action_ = register_buffer("min_action", low.to(device, dtype).clone());
    max_action_ = register_buffer("max_action", high.to(device, dtype).clone());
    make_value_estimator(ValueEstimators::TD0);
  }

  /// Both losses and their logging entries (`batch_size` `[]`). Writes `td_error` into `td`.
  /// The actor loss is computed first, then the critic loss (TorchRL's order: the smoothing
  /// noise is the forward's only draw).
  TensorDict forward(TensorDict td) {
    check_inputs(td);
    detail::check_finite_inputs("TD3Loss", td, input_keys_, options.check_finite());
    ensure_linked();
    TensorDict out = actor_loss_unchecked(td);
    out.update(value_loss_unchecked(td));
    return out;
  }

  /// The actor loss alone (TorchRL's `actor_loss`): `loss_actor` and
  /// `state_action_value_actor`. Lets a training loop step the critic first and compute the
  /// actor loss with the updated critic, as TorchRL's TD3 example does.
  TensorDict actor_loss(TensorDict td) {
    check_inputs(td);
    detail::check_finite_inputs("TD3Loss", td, input_keys_, options.check_finite());
    ensure_linked();
    return actor_loss_unchecked(td);
  }

  /// The critic loss alone (TorchRL's `value_loss`): `loss_qvalue`, `pred_value`,
  /// `next_state_value`, `target_value`; writes `td_error` into `td`. Draws the smoothing noise.
  TensorDict value_loss(TensorDict td) {
    check_inputs(td);
    detail::check_finite_inputs("TD3Loss", td, input_keys_, options.check_finite());
    ensure_linked();
    return value_loss_unchecked(td);
  }

  /// Builds the value estimator (TD0, TD1 or TDLambda) that turns `min_i Q'_i` into targets.
  void make_value_estimator(ValueEstimators type = ValueEstimators::TD0,
                            value::ValueEstimatorOptions hyperparams = {}) {
    // No value network: forward passes min_i Q'_i as the next value.
    estimator_ = detail::make_bootstrap_estimator("TD3Loss", type, nullptr, hyperparams);
    value_type_ = type;
    keys_changed();
  }
  value::ValueEstimatorBase& value_estimator() const { return *estimator_; }
  ValueEstimators value_type() const noexcept { return value_type_; }

  /// Renames input keys: action, state_action_value, priority, reward, done, terminated.
  /// Renaming `action` or `state_action_value` only changes where the loss reads them: the
  /// networks' keys must be changed to match.
  void set_keys(const std::map<std::string, NestedKey>& keys) {
    rlobj::detail::set_named_keys("TD3Loss", keys,
                                  {{"action", &keys_.action},
                                   {"state_action_value", &keys_.state_action_value},
                                   {"priority", &keys_.priority},
                                   {"reward", &keys_.reward},
                                   {"done", &keys_.done},
                                   {"terminated", &keys_.terminated}});
    keys_changed();
  }
  const TD3LossKeys& tensor_keys() const noexcept { return keys_; }
  /// Every key `forward` may read (sorted).
  const std::vector<NestedKey>& in_keys() const noexcept { return input_keys_; }
  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const {
    return {"loss_actor", "loss_qvalue", "pred_value", "state_action_value_actor", "next_state_value", "target_value"};
  }

  /// The online actor (the user's network).
  ActorT& actor_network() noexcept { return actor_; }
  /// The online critics: copy 0 is the user's network (its parameters redrawn, see
  /// `NetworkOptions::ensemble`).
  const std::vector<std::shared_ptr<QValueImpl>>& qvalue_networks() const noexcept { return qvalue_net_.online; }
  /// The target actor (the online one without `delay_actor`).
  std::shared_ptr<ActorImpl> target_actor_network() const { return actor_net_.targets().front(); }
  /// The target critics (the online ones without `delay_qvalue`).
  const std::vector<std::shared_ptr<QValueImpl>>& target_qvalue_networks() const noexcept {
    return qvalue_net_.targets();
  }
  /// The bounds the smoothed target action is clamped into.
  const torch::Tensor& min_action() const noexcept { return min_action_; }
  const torch::Tensor& max_action() const noexcept { return max_action_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::TD3Loss(num_qvalue_nets=" << options.num_qvalue_nets()
           << ", policy_noise=" << options.policy_noise() << ", noise_clip=" << options.noise_clip() << ")";
  }

  /// The options the loss was built with.
  TD3LossOptions options;

 protected:
  /// The standard normals of the target policy smoothing, shaped like `action`: TorchRL's
  /// `randn_like(action)` on LibTorch's default generator. Override to supply other draws.
  virtual torch::Tensor standard_normal_like(const torch::Tensor& action) { return torch::randn_like(action); }

 private:
  static TD3LossOptions checked(const TD3LossOptions& o) {
    TORCH_CHECK_VALUE(o.num_qvalue_nets() >= 1, "TD3LossOptions: num_qvalue_nets must be >= 1, got ",
                      o.num_qvalue_nets());
    TORCH_CHECK_VALUE(std::isfinite(o.policy_noise()) && o.policy_noise() >= 0,
                      "TD3LossOptions: policy_noise must be finite and >= 0, got ", o.policy_noise());
    TORCH_CHECK_VALUE(std::isfinite(o.noise_clip()) && o.noise_clip() >= 0,
                      "TD3LossOptions: noise_clip must be finite and >= 0, got ", o.noise_clip());
    return o;
  }

  TensorDict actor_loss_unchecked(const TensorDict& td) {
    // Critic 0 of the frozen critics on (s, mu(s)); all N evaluated for logging (TorchRL's
    // state_action_value_actor). Only critic 0 is differentiated: the others are evaluated
    // without a graph (same values; TorchRL's backward through them carries zeros).
    const TensorDict in = with_action_of(*actor_, td);
    const auto& critics = qvalue_net_.frozen;
    std::vector<torch::Tensor> q_actor;
    q_actor.reserve(critics.size());
    q_actor.push_back(evaluate_one(*critics.front(), in, /*squeeze=*/true));  // [B]
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 1; i < critics.size(); ++i) q_actor.push_back(evaluate_one(*critics[i], in, /*squeeze=*/true));
    }
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_actor", reduce(-q_actor.front(), options.reduction()));
    out.set("state_action_value_actor", torch::stack(q_actor, 0).detach());  // [N, B]
    return out;
  }

  TensorDict value_loss_unchecked(TensorDict& td) {
    // The smoothing noise: drawn before the target is computed (TorchRL).
    const torch::Tensor& action = td.get(keys_.action);
    torch::Tensor noise = (standard_normal_like(action) * options.policy_noise())
                              .clamp(-options.noise_clip(), options.noise_clip());
    torch::Tensor next_q, target;
    {
      torch::NoGradGuard no_grad;
      TensorDict next = rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().keep_other(false));
      TensorDict next_actor(next.batch_size(), next.device());
      for (const auto& k : actor_->in_keys()) next_actor.set(k, next.get(k));
      next_actor = actor_net_.targets().front()->forward(next_actor);
      const torch::Tensor* next_action = next_actor.find(keys_.action);
      TORCH_CHECK(next_action != nullptr, "TD3Loss: the actor did not write \"", keys_.action.str(), "\"");
      torch::Tensor smoothed = (*next_action + noise).clamp(min_action_, max_action_);
      TensorDict next_q_in(next.batch_size(), next.device());
      for (const auto& k : qvalue_->in_keys()) {
        if (k != keys_.action) next_q_in.set(k, next.get(k));
      }
      next_q_in.set(keys_.action, smoothed);
      next_q = evaluate(qvalue_net_.targets(), next_q_in, /*squeeze=*/false);  // [N, B, 1]
      if (next_q.size(-1) != 1) next_q = next_q.unsqueeze(-1);
      next_q = std::get<0>(next_q.min(0));  // [B, 1]
      target = estimator_->value_estimate(td, next_q).squeeze(-1);  // [B]
    }
    TensorDict q_in(td.batch_size(), td.device());
    for (const auto& k : qvalue_->in_keys()) q_in.set(k, td.get(k).detach());
    torch::Tensor pred = evaluate(qvalue_net_.trained(), q_in);  // [N, B]
    TORCH_CHECK(pred.sizes().slice(1) == target.sizes(), "TD3Loss: predicted values have shape ",
                rlobj::detail::shape_str(pred.sizes()), " but targets have shape ",
                rlobj::detail::shape_str(target.sizes()));
    torch::Tensor td_error = (pred - target).pow(2).detach();
    torch::Tensor loss_qvalue =
        reduce(distance_loss(pred, target.expand_as(pred), options.loss_function()).sum(0), options.reduction());
    td.set(keys_.priority, std::get<0>(td_error.max(0)));
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_qvalue", loss_qvalue);
    out.set("pred_value", pred.detach());
    out.set("next_state_value", next_q.squeeze(-1).detach());
    out.set("target_value", target.detach());
    return out;
  }

  // s with a = mu(s) (gradient to the actor), plus the critic's other inputs, detached.
  TensorDict with_action_of(ActorImpl& actor, const TensorDict& td) const {
    return actor.forward(detail::actor_loss_input(actor, qvalue_->in_keys(), td));
  }

  // Every critic of `critics` on `in`, stacked: [N, *batch] (squeezed) or [N, *batch, 1].
  torch::Tensor evaluate(const std::vector<std::shared_ptr<QValueImpl>>& critics, const TensorDict& in,
                         bool squeeze = true) const {
    std::vector<torch::Tensor> values;
    values.reserve(critics.size());
    for (const auto& critic : critics) values.push_back(evaluate_one(*critic, in, squeeze));
    return torch::stack(values, 0);
  }

  // One critic on `in`: [*batch] (squeezed) or [*batch, 1].
  torch::Tensor evaluate_one(QValueImpl& critic, const TensorDict& in, bool squeeze) const {
    TensorDict out = critic.forward(in.copy());
    const torch::Tensor* q = out.find(keys_.state_action_value);
    TORCH_CHECK(q != nullptr, "TD3Loss: the qvalue network did not write \"", keys_.state_action_value.str(),
                "\"; set its out_keys or call set_keys({{\"state_action_value\", ...}})");
    return squeeze ? q->squeeze(-1) : *q;
  }

  void keys_changed() {
    const NestedKey next("next");
    // Everything forward reads, checked before the smoothing noise is drawn: a rejected batch
    // leaves the generator untouched.
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
    for (const auto& k : actor_->in_keys()) computed_keys_.push_back(next / k);
    computed_keys_.push_back(next / keys_.reward);
    if (estimator_) {
      detail::set_estimator_keys(*estimator_, keys_.state_action_value, keys_.reward, keys_.done, keys_.terminated);
    }
  }

  void check_inputs(const TensorDict& td) const {
    detail::require_keys("TD3Loss", td, required_keys_);
    const torch::Tensor& action = td.get(keys_.action);
    TORCH_CHECK_VALUE(action.dim() >= 1 && action.size(-1) == min_action_.numel(), "TD3Loss: \"", keys_.action.str(),
                      "\" has shape ", rlobj::detail::shape_str(action.sizes()), " but the action spec has ",
                      min_action_.numel(), " feature(s)");
    TORCH_CHECK(td.batch_dims() >= 1, "TD3Loss: expected a batch of transitions (batch_dims >= 1), got "
                "batch_size ", rlobj::detail::shape_str(td.batch_size()));
    detail::check_network_inputs("TD3Loss", td, computed_keys_, actor_net_.group->flat().scalar_type());
  }

  TD3LossKeys keys_;
  std::vector<NestedKey> input_keys_;     // in_keys()
  std::vector<NestedKey> required_keys_;  // what forward cannot do without
  std::vector<NestedKey> computed_keys_;  // network inputs and the reward, dtype/shape-checked
  ActorT actor_;
  QValueT qvalue_;
  LossNetwork<ActorImpl> actor_net_;
  LossNetwork<QValueImpl> qvalue_net_;
  torch::Tensor min_action_, max_action_;
  std::shared_ptr<value::ValueEstimatorBase> estimator_;
  ValueEstimators value_type_ = ValueEstimators::TD0;
};

/// Holder of `TD3LossImpl`: `auto loss = TD3Loss(actor, qvalue, env.action_spec());`.
template <typename ActorT = modules::Actor, typename QValueT = modules::ValueOperator>
class TD3Loss : public torch::nn::ModuleHolder<TD3LossImpl<ActorT, QValueT>> {
 public:
  using Impl = TD3LossImpl<ActorT, QValueT>;
  using Base = torch::nn::ModuleHolder<Impl>;
  using Base::get;

  TD3Loss(std::nullptr_t) : Base(nullptr) {}                      // NOLINT
  TD3Loss(std::shared_ptr<Impl> impl) : Base(std::move(impl)) {}  // NOLINT
  TD3Loss(ActorT actor_network, QValueT qvalue_network, const TensorSpec& action_spec, TD3LossOptions options = {})
      : Base(std::make_shared<Impl>(std::move(actor_network), std::move(qvalue_network), action_spec, options)) {}
};

}  // namespace objectives
}  // namespace rlobj
