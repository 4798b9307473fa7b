#pragma once

/// \file
/// `ActorCriticLossBase`: what TorchRL's on-policy losses (`PPOLoss` and its variants,
/// `A2CLoss`, `ReinforceLoss`) share — a stochastic actor and a state-value critic registered
/// with the loss, the advantage taken from the batch or computed by the loss's value estimator
/// (GAE by default), the critic's loss (optionally clipped), the entropy bonus and the keys. A
/// new on-policy loss derives from it and writes its objective in `compute`.

#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/detail/format.h"
#include "rlobj/detail/keys.h"
#include "rlobj/modules/distributions.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/common.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// The keys the on-policy losses read (TorchRL's `_AcceptedKeys`); `reward`, `done` and
/// `terminated` are read under `"next"`.
struct ActorCriticLossKeys {
  /// The advantage `[*B, 1]`; computed by the value estimator when the batch has none.
  NestedKey advantage = "advantage";
  /// The critic's regression target: the batch's (with its advantage) or the estimator's.
  NestedKey value_target = "value_target";
  /// The critic's output.
  NestedKey value = "state_value";
  /// The log-probability of `action` under the policy that collected it.
  NestedKey sample_log_prob = "sample_log_prob";
  /// The action the batch was collected with.
  NestedKey action = "action";
  /// The reward, under `"next"` (read by the value estimator).
  NestedKey reward = "reward";
  /// The done flag (terminated or truncated), under `"next"` (read by the value estimator).
  NestedKey done = "done";
  /// The terminated flag, under `"next"`: no bootstrapping past it (`done` when absent).
  NestedKey terminated = "terminated";
  /// Every key by its TorchRL name (`set_keys`).
  static std::vector<KeyField<ActorCriticLossKeys>> fields() {
    return {{"advantage", &ActorCriticLossKeys::advantage},
            {"value_target", &ActorCriticLossKeys::value_target},
            {"value", &ActorCriticLossKeys::value},
            {"sample_log_prob", &ActorCriticLossKeys::sample_log_prob},
            {"action", &ActorCriticLossKeys::action},
            {"reward", &ActorCriticLossKeys::reward},
            {"done", &ActorCriticLossKeys::done},
            {"terminated", &ActorCriticLossKeys::terminated}};
  }
};

/// The base of the on-policy losses (`PPOLossImpl` and its variants, `A2CLossImpl`,
/// `ReinforceLossImpl`): registers the actor (`"actor_network"`) and the critic
/// (`"critic_network"`), builds the value estimator (GAE by default: it computes the advantage
/// when the batch has none), declares the keys, and computes the pieces every on-policy loss
/// uses (`advantage`, `actor_dist`, `critic_loss`, `entropy_bonus`). A derived loss writes its
/// objective in `compute`.
template <typename Options, typename ActorT, typename CriticT>
class ActorCriticLossBase : public LossModuleBase<Options, ActorCriticLossKeys> {
  using Base = LossModuleBase<Options, ActorCriticLossKeys>;

 public:
  using Base::options;
  /// The actor's module type (`ActorT::ContainedType`).
  using ActorImpl = typename ActorT::ContainedType;
  /// The critic's module type (`CriticT::ContainedType`).
  using CriticImpl = typename CriticT::ContainedType;

  /// The actor (the user's network).
  ActorT& actor_network() noexcept { return actor_; }
  /// The critic (the user's network).
  CriticT& critic_network() noexcept { return critic_; }
  /// The critic that values next states in the loss's estimator: a delayed copy with
  /// `delay_value`, else the critic itself.
  std::shared_ptr<CriticImpl> target_critic_network() const { return critic_net_.targets().front(); }

 protected:
  using Base::keys_;

  /// `needs_sample_log_prob`: the batch must hold the collecting policy's log-probability
  /// (PPO's importance weights).
  ActorCriticLossBase(const char* name, Options options, ActorT actor, CriticT critic, bool delay_value,
                      bool separate_losses, bool needs_sample_log_prob)
      : Base(name, std::move(options), ValueEstimators::GAE),
        name_(name),
        actor_(std::move(actor)),
        critic_(std::move(critic)),
        needs_sample_log_prob_(needs_sample_log_prob) {
    TORCH_CHECK_VALUE(!actor_.is_empty(), name_, ": actor_network is empty");
    TORCH_CHECK_VALUE(!critic_.is_empty(), name_, ": critic_network is empty");
    detail::check_same_placement(name_, {{"actor_network", actor_.get()}, {"critic_network", critic_.get()}});
    std::vector<torch::Tensor> shared;
    for (const auto& p : critic_->parameters()) {
      for (const auto& q : actor_->parameters()) {
        if (p.unsafeGetTensorImpl() == q.unsafeGetTensorImpl()) shared.push_back(p);
      }
    }
    actor_net_ = this->register_network("actor_network", actor_.ptr());
    critic_net_ = this->register_network("critic_network", critic_.ptr(),
                                   NetworkOptions().target(delay_value).compare_against(
                                       separate_losses ? shared : std::vector<torch::Tensor>{}));
  }

  /// The estimator that computes the advantage when the batch has none. Its value network is
  /// the critic, run without gradient (with `delay_value`, the target critic values the next
  /// states).
  std::shared_ptr<value::ValueEstimatorBase> build_value_estimator(
      ValueEstimators type, const value::ValueEstimatorOptions& hyperparams) override {
    auto online = [this](TensorDict td) {
      torch::NoGradGuard no_grad;
      return critic_net_.online.front()->forward(td);
    };
    const auto& in = critic_->in_keys();
    std::shared_ptr<value::ValueEstimatorBase> estimator;
    switch (type) {
      case ValueEstimators::TD0: estimator = std::make_shared<value::TD0Estimator>(online, hyperparams, in); break;
      case ValueEstimators::TD1: estimator = std::make_shared<value::TD1Estimator>(online, hyperparams, in); break;
      case ValueEstimators::TDLambda:
        estimator = std::make_shared<value::TDLambdaEstimator>(online, hyperparams, in);
        break;
      case ValueEstimators::GAE: estimator = std::make_shared<value::GAE>(online, hyperparams, in); break;
    }
    if (!critic_net_.target.empty()) {
      estimator->set_next_value_network([this](TensorDict td) {
        torch::NoGradGuard no_grad;
        return critic_net_.target.front()->forward(td);
      });
    }
    return estimator;
  }

  /// Throws `c10::ValueError` unless the coefficient `name` (`v`) is finite; `where`: the
  /// loss's name.
  static void check_coef(const char* where, const char* name, double v) {
    TORCH_CHECK_VALUE(std::isfinite(v), where, ": ", name, " must be finite, got ", v);
  }

  /// Reduces a `loss_*` entry and drops its trailing 1 (TorchRL: `_reduce(...).squeeze(-1)`).
  static torch::Tensor reduce_loss(const torch::Tensor& loss, Reduction reduction) {
    torch::Tensor r = reduce(loss, reduction);
    return r.dim() > 0 ? r.squeeze(-1) : r;
  }

  /// Throws `c10::ValueError` unless `clip_value` is unset or finite and > 0; `where`: the
  /// loss's name.
  static void check_clip_value(const char* where, const std::optional<double>& clip_value) {
    TORCH_CHECK_VALUE(!clip_value || (std::isfinite(*clip_value) && *clip_value > 0), where,
                      ": clip_value must be finite and > 0, got ", clip_value.value_or(0));
  }

  /// Registers the `entropy_coef` and `critic_coef` buffers (float32 tensors, as TorchRL's).
  void register_coefficients(double entropy_coef, double critic_coef) {
    const auto tensor_options = actor_net_.group->flat().options().requires_grad(false);
    entropy_coef_ = this->register_buffer("entropy_coef", torch::full({}, entropy_coef, tensor_options));
    critic_coef_ = this->register_buffer("critic_coef", torch::full({}, critic_coef, tensor_options));
  }

  /// What PPO and A2C add after their objective: with `entropy`, `entropy` (detached mean) and
  /// `loss_entropy = -entropy_coef * H`; with `critic`, `loss_critic = critic_coef * distance`
  /// (on `td` detached with `separate_losses`) and, when clipped, `value_clip_fraction`.
  void add_entropy_and_critic(TensorDict& out, const modules::Distribution& dist, const TensorDict& td,
                              bool entropy, int64_t samples_mc_entropy, bool critic, LossFunction loss_critic_type,
                              const std::optional<double>& clip_value, bool separate_losses, Reduction reduction) {
    if (entropy) {
      torch::Tensor h = entropy_bonus(dist, samples_mc_entropy);
      out.set("entropy", h.detach().mean());
      out.set("loss_entropy", reduce_loss(-entropy_coef_ * h, reduction));
    }
    if (critic) {
      TensorDict critic_in = separate_losses ? td.detach() : td;
      auto [loss, clip_fraction] = critic_loss(critic_in, loss_critic_type, clip_value);
      out.set("loss_critic", reduce_loss(critic_coef_ * loss, reduction));
      if (clip_fraction.defined()) out.set("value_clip_fraction", clip_fraction);
    }
  }

  /// The advantage: the batch's, or the estimator's (written into `td`, with the value
  /// target and the values it came from).
  torch::Tensor advantage(TensorDict& td) {
    if (const torch::Tensor* a = td.find(keys_.advantage)) return *a;
    this->estimator_->forward(td);
    return td.get(keys_.advantage);
  }

  /// The critic's loss, unreduced, and with `clip_value` the fraction of clipped values
  /// (TorchRL's `loss_critic` and `_clip_value_loss`). `td` must hold the value target (and,
  /// to clip, the values the batch was collected with under the value key).
  std::pair<torch::Tensor, torch::Tensor> critic_loss(const TensorDict& td, LossFunction loss_function,
                                                      std::optional<double> clip_value) {
    const torch::Tensor* target = td.find(keys_.value_target);
    TORCH_CHECK(target != nullptr, name_, ": the value target \"", keys_.value_target.str(), "\" was not found; ",
                "pass both \"", keys_.advantage.str(), "\" and \"", keys_.value_target.str(),
                "\" or neither (the loss's estimator then computes them)");
    torch::Tensor old_value;
    if (clip_value) {
      const torch::Tensor* v = td.find(keys_.value);
      TORCH_CHECK(v != nullptr, name_, ": clip_value is set but the value key \"", keys_.value.str(),
                  "\" was not found in the batch");
      old_value = v->detach();
    }
    TensorDict in(td.batch_size(), td.device());
    for (const auto& k : critic_->in_keys()) in.set(k, td.get(k));
    in = critic_net_.trained().front()->forward(in);
    const torch::Tensor* value = in.find(keys_.value);
    TORCH_CHECK(value != nullptr, name_, ": the critic did not write \"", keys_.value.str(),
                "\"; set its out_keys or call set_keys({{\"value\", ...}})");
    TORCH_CHECK(value->sizes() == target->sizes(), name_, ": the critic's \"", keys_.value.str(), "\" has shape ",
                rlobj::detail::shape_str(value->sizes()), " but the value target \"", keys_.value_target.str(),
                "\" has shape ", rlobj::detail::shape_str(target->sizes()));
    torch::Tensor loss = distance_loss(*target, *value, loss_function);
    torch::Tensor clip_fraction;
    if (clip_value) {
      TORCH_CHECK(old_value.sizes() == value->sizes(), name_, ": \"", keys_.value.str(), "\" in the batch has shape ",
                  rlobj::detail::shape_str(old_value.sizes()), " but the critic writes ",
                  rlobj::detail::shape_str(value->sizes()));
      torch::Tensor pre_clipped = *value - old_value;
      torch::Tensor clipped = pre_clipped.clamp(-*clip_value, *clip_value);
      {
        torch::NoGradGuard no_grad;
        clip_fraction = (pre_clipped != clipped).to(value->scalar_type()).mean();
      }
      torch::Tensor loss_clipped = distance_loss(*target, old_value + clipped, loss_function);
      loss = torch::max(loss, loss_clipped);
    }
    return {loss, clip_fraction};
  }

  /// The entropy of `dist` with a trailing 1 (`[*B, 1]`): closed form where the distribution
  /// has one, else `-log_prob(x).mean(0)` over `samples` draws `x` (`entropy_sample`).
  torch::Tensor entropy_bonus(const modules::Distribution& dist, int64_t samples) {
    torch::Tensor entropy;
    try {
      entropy = dist.entropy();
    } catch (const c10::NotImplementedError&) {
      torch::Tensor x = entropy_sample(dist, samples);
      entropy = -dist.log_prob(x).mean(0);
    }
    return entropy.unsqueeze(-1);
  }

  /// The draws of the Monte-Carlo entropy: `dist.rsample({samples})` (one `normal_()` call on
  /// LibTorch's default generator, as TorchRL), or `sample` without a reparameterisation.
  /// Override to supply other draws.
  virtual torch::Tensor entropy_sample(const modules::Distribution& dist, int64_t samples) {
    const std::vector<int64_t> shape = {samples};
    return dist.has_rsample() ? dist.rsample(shape) : dist.sample(shape);
  }

  /// The actor's distribution on `td`'s actor inputs (a fresh TensorDict, so the batch is
  /// not written).
  std::shared_ptr<modules::Distribution> actor_dist(const TensorDict& td) {
    TensorDict in(td.batch_size(), td.device());
    for (const auto& k : actor_->in_keys()) in.set(k, td.get(k));
    return actor_net_.online.front()->get_dist(in);
  }

  /// The action of the batch, checked: no gradient (TorchRL refuses one).
  torch::Tensor batch_action(const TensorDict& td) const {
    torch::Tensor action = td.get(keys_.action);
    TORCH_CHECK_VALUE(!action.requires_grad(), name_, ": the batch's \"", keys_.action.str(),
                      "\" requires grad; detach it (actions are data, not outputs of the networks being trained)");
    return action;
  }

  /// `log_prob` (`[*B]`) with a trailing 1, checked against the advantage's shape.
  torch::Tensor with_feature_dim(const torch::Tensor& log_prob, const torch::Tensor& advantage,
                                 const char* what) const {
    torch::Tensor lp = log_prob.unsqueeze(-1);
    TORCH_CHECK(lp.sizes() == advantage.sizes(), name_, ": the ", what, " has shape ",
                rlobj::detail::shape_str(log_prob.sizes()), " but the advantage \"", keys_.advantage.str(),
                "\" has shape ", rlobj::detail::shape_str(advantage.sizes()), "; expected the advantage's shape "
                "without its trailing 1");
    return lp;
  }

  /// Without an advantage in the batch, the estimator's inputs must be there too; with one,
  /// it must be data shaped like the batch with a trailing 1.
  void check_batch(const TensorDict& td) const override {
    if (!td.contains(keys_.advantage)) {
      detail::require_keys(name_, td, estimator_required_);
      detail::check_network_inputs(name_, td, estimator_computed_, this->dtype());
      return;
    }
    const torch::Tensor& a = td.get(keys_.advantage);
    TORCH_CHECK_VALUE(!a.requires_grad(), name_, ": the batch's \"", keys_.advantage.str(), "\" requires grad; detach it");
    TORCH_CHECK_VALUE(a.dim() == td.batch_dims() + 1 && a.size(-1) == 1, name_, ": the advantage \"",
                      keys_.advantage.str(), "\" has shape ", rlobj::detail::shape_str(a.sizes()),
                      "; expected the batch_size ", rlobj::detail::shape_str(td.batch_size()), " with a trailing 1");
  }

  /// Declares the keys `forward` reads: the action, both networks' inputs and, when needed,
  /// `sample_log_prob`; the estimator's inputs (under `"next"`) are optional here, required by
  /// `check_batch` when the batch has no advantage. Points the estimator at the loss's keys.
  void keys_changed() override {
    const NestedKey next("next");
    std::vector<NestedKey> required = {keys_.action};
    for (const auto& k : actor_->in_keys()) required.push_back(k);
    for (const auto& k : critic_->in_keys()) required.push_back(k);
    required = detail::sorted_unique(required);
    if (needs_sample_log_prob_) required.push_back(keys_.sample_log_prob);
    std::vector<NestedKey> computed;
    for (const auto& k : actor_->in_keys()) computed.push_back(k);
    for (const auto& k : critic_->in_keys()) computed.push_back(k);
    estimator_required_ = {next / keys_.reward, next / keys_.done};
    estimator_computed_.clear();
    for (const auto& k : critic_->in_keys()) {
      estimator_required_.push_back(next / k);
      estimator_computed_.push_back(next / k);
    }
    estimator_computed_.push_back(next / keys_.reward);
    std::vector<NestedKey> optional = estimator_required_;
    for (const auto& k : {next / keys_.terminated, keys_.sample_log_prob, keys_.advantage, keys_.value_target}) {
      optional.push_back(k);
    }
    this->set_input_keys(std::move(required), std::move(computed), optional);
    if (this->estimator_) {
      this->estimator_->set_keys({{"advantage", keys_.advantage},
                            {"value_target", keys_.value_target},
                            {"value", keys_.value},
                            {"reward", keys_.reward},
                            {"done", keys_.done},
                            {"terminated", keys_.terminated}});
    }
  }

  /// The loss's TorchRL class name, for errors.
  const char* name_;
  std::vector<NestedKey> estimator_required_;  ///< what the estimator reads when the batch has no advantage
  std::vector<NestedKey> estimator_computed_;  ///< of those, the network inputs and the reward
  /// The actor (`actor_network()`).
  ActorT actor_;
  /// The critic (`critic_network()`).
  CriticT critic_;
  /// The actor as registered (`"actor_network"`).
  LossNetwork<ActorImpl> actor_net_;
  /// The critic as registered (`"critic_network"`): a delayed target with `delay_value`; with
  /// `separate_losses`, `for_loss` copies that see the parameters shared with the actor frozen.
  LossNetwork<CriticImpl> critic_net_;
  /// Whether the batch must hold `sample_log_prob` (PPO).
  bool needs_sample_log_prob_;
  /// The `entropy_coef` buffer (`register_coefficients`).
  torch::Tensor entropy_coef_, critic_coef_;  ///< the `critic_coef` buffer (the same)
};

}  // namespace objectives
}  // namespace rlobj
