#pragma once

/// \file
/// `PPOLoss`, `ClipPPOLoss` and `KLPENPPOLoss`: TorchRL 0.4's proximal policy optimisation
/// losses (Schulman et al., 2017).
///
/// * The advantage is the batch's `"advantage"` (with `"value_target"` for the critic), or,
///   when the batch has none, computed by the loss's value estimator (GAE, gamma 0.99, lmbda
///   0.95) on a shallow copy of the batch: the caller's TensorDict is not written.
/// * `log_weight = log pi(a|s) - sample_log_prob` (`[*B, 1]`), `pi` the actor's current
///   distribution (`ProbabilisticActor::get_dist`), `a` the batch's action.
/// * `PPOLoss`: `loss_objective = -exp(log_weight) * A`; `ClipPPOLoss`:
///   `-min(exp(lw) A, exp(clamp(lw, log(1 - eps), log(1 + eps))) A)`, plus `clip_fraction`
///   and `ESS` (the effective sample size over the first batch dim, divided by its length);
///   `KLPENPPOLoss`: `-(exp(lw) A - beta KL(pi_old || pi))`, `beta` adapted towards `dtarg`.
/// * `entropy` (logged, detached mean) and `loss_entropy = -entropy_coef * H` (closed form,
///   or `-log_prob` of `samples_mc_entropy` draws: `TanhNormal`); `loss_critic =
///   critic_coef * distance(V(s), value_target)` (optionally clipped around the batch's
///   values with `clip_value`).
/// * Every `loss_*` entry is reduced (`reduction`, mean by default).
///
/// As in TorchRL, `ClipPPOLoss` and `KLPENPPOLoss` derive from `PPOLoss`, which derives from
/// `ActorCriticLossBase`; each variant overrides the objective.

#include <cmath>
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
#include "rlobj/modules/distributions.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/actor_critic.h"
#include "rlobj/objectives/common.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// Options of the PPO losses, with TorchRL 0.4's names and defaults (`clip_epsilon` for
/// `ClipPPOLoss`, `dtarg` ... `samples_mc_kl` for `KLPENPPOLoss`).
struct PPOLossOptions {
  /// Add the entropy bonus `loss_entropy`.
  TORCH_ARG(bool, entropy_bonus) = true;
  /// Draws for the Monte-Carlo entropy of distributions without a closed form.
  TORCH_ARG(int64_t, samples_mc_entropy) = 1;
  /// Weight of the entropy bonus: `loss_entropy = -entropy_coef * H`.
  TORCH_ARG(double, entropy_coef) = 0.01;
  /// Weight of the critic's loss; 0 leaves `loss_critic` out.
  TORCH_ARG(double, critic_coef) = 1.0;
  /// Distance between the critic's value and the value target.
  TORCH_ARG(LossFunction, loss_critic_type) = LossFunction::SmoothL1;
  /// Standardise the advantage (over the whole batch; scale clamped at 1e-6).
  TORCH_ARG(bool, normalize_advantage) = false;
  /// Parameters shared by actor and critic are trained by the actor's loss only.
  TORCH_ARG(bool, separate_losses) = false;
  /// Reduction of the `loss_*` entries.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// Clip the critic's value to within this of the batch's value (its `value` key) in the
  /// critic loss, keeping the larger loss. For `ClipPPOLoss`, `clip_value_to_epsilon(true)`
  /// uses `clip_epsilon`.
  TORCH_ARG(std::optional<double>, clip_value) = std::nullopt;
  /// `ClipPPOLoss` without `clip_value`: clip the critic's value to within `clip_epsilon`.
  TORCH_ARG(bool, clip_value_to_epsilon) = false;
  /// `ClipPPOLoss`: the ratio is clipped to `[1 - clip_epsilon, 1 + clip_epsilon]`.
  TORCH_ARG(double, clip_epsilon) = 0.2;
  /// `KLPENPPOLoss`: the target KL (`beta` adapts when the mean KL leaves
  /// `[dtarg / 1.5, 1.5 * dtarg]`).
  TORCH_ARG(double, dtarg) = 0.01;
  /// `KLPENPPOLoss`: the initial KL penalty (then a buffer, adapted after each forward).
  TORCH_ARG(double, beta) = 1.0;
  /// `KLPENPPOLoss`: what `beta` is multiplied by when the mean KL exceeds `1.5 * dtarg` (>= 1).
  TORCH_ARG(double, increment) = 2.0;
  /// `KLPENPPOLoss`: what `beta` is multiplied by when the mean KL is below `dtarg / 1.5`
  /// (in (0, 1]).
  TORCH_ARG(double, decrement) = 0.5;
  /// `KLPENPPOLoss`: draws for the Monte-Carlo KL of distributions without a closed form.
  TORCH_ARG(int64_t, samples_mc_kl) = 1;
  /// When the inputs are checked for NaN and Inf (see `FiniteCheck`).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// `PPOLoss`: the importance-weighted advantage over a stochastic actor (`ActorT`: a
/// `ProbabilisticActor`) and a state-value critic (`CriticT`: a `ValueOperator` writing
/// `state_value`); the base of `ClipPPOLossImpl` and `KLPENPPOLossImpl`, which override
/// `objective`.
///
/// ```
/// auto loss = rlobj::objectives::ClipPPOLoss(actor, critic);
/// loss->make_value_estimator(rlobj::objectives::ValueEstimators::GAE,
///                            rlobj::objectives::value::ValueEstimatorOptions().gamma(0.99).lmbda(0.95));
/// rlobj::TensorDict out = loss(minibatch);  // loss_objective, clip_fraction, entropy, loss_entropy, loss_critic, ESS
/// ```
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class PPOLossImpl : public ActorCriticLossBase<PPOLossOptions, ActorT, CriticT> {
  using Base = ActorCriticLossBase<PPOLossOptions, ActorT, CriticT>;

 public:
  using Base::options;

  /// The plain objective (TorchRL's `PPOLoss`): registers the actor and the critic (one dtype
  /// and device) and the coefficient buffers, and builds the default estimator, GAE. Throws
  /// `c10::ValueError` on an empty network or a bad option.
  PPOLossImpl(ActorT actor_network, CriticT critic_network, PPOLossOptions options = {})
      : PPOLossImpl("PPOLoss", std::move(actor_network), std::move(critic_network), options) {}

  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const override {
    std::vector<std::string> keys = objective_keys();
    if (options.entropy_bonus()) {
      keys.push_back("entropy");
      keys.push_back("loss_entropy");
    }
    if (options.critic_coef() != 0) keys.push_back("loss_critic");
    if (clip_value_) keys.push_back("value_clip_fraction");
    for (const auto& k : trailing_keys()) keys.push_back(k);
    return keys;
  }

  /// Prints `rlobj::objectives::PPOLoss(entropy_coef=..., critic_coef=...)`, a variant's name
  /// in place of `PPOLoss`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::" << this->loss_name() << "(entropy_coef=" << options.entropy_coef()
           << ", critic_coef=" << options.critic_coef() << ")";
  }

 protected:
  /// For the variants: `name` is the variant's TorchRL class name.
  PPOLossImpl(const char* name, ActorT actor_network, CriticT critic_network, const PPOLossOptions& options)
      : Base(name, checked(name, options), std::move(actor_network), std::move(critic_network),
             /*delay_value=*/false, options.separate_losses(), /*needs_sample_log_prob=*/true) {
    this->register_coefficients(options.entropy_coef(), options.critic_coef());
    if (options.clip_value()) clip_value_ = options.clip_value();
    this->make_value_estimator();
  }

  /// The losses and their logging entries: the advantage (the batch's, or the estimator's on a
  /// shallow copy: the caller's batch is not written), the log-weight of the batch's action,
  /// then `objective`, the entropy and critic terms, and `finish`.
  TensorDict compute(TensorDict& tensordict) override {
    const char* name = this->loss_name().c_str();
    TensorDict td = tensordict.copy();  // TorchRL: tensordict.clone(False)
    torch::Tensor advantage = this->advantage(td);
    if (options.normalize_advantage() && advantage.numel() > 1) {
      advantage = (advantage - advantage.mean()) / advantage.std().clamp_min(1e-6);
    }
    const torch::Tensor action = this->batch_action(td);
    auto dist = this->actor_dist(td);
    const torch::Tensor prev_log_prob = td.get(this->keys_.sample_log_prob);
    TORCH_CHECK_VALUE(!prev_log_prob.requires_grad(), name, ": the batch's \"", this->keys_.sample_log_prob.str(),
                      "\" requires grad; detach it");
    torch::Tensor log_prob = dist->log_prob(action);
    TORCH_CHECK(log_prob.sizes() == prev_log_prob.sizes(), name, ": the actor's log-probability has shape ",
                rlobj::detail::shape_str(log_prob.sizes()), " but \"", this->keys_.sample_log_prob.str(),
                "\" has shape ", rlobj::detail::shape_str(prev_log_prob.sizes()));
    torch::Tensor log_weight = this->with_feature_dim(log_prob - prev_log_prob, advantage, "log-weight");

    TensorDict out(TensorDict::BatchSize{});
    objective(out, td, *dist, log_weight, advantage);
    this->add_entropy_and_critic(out, *dist, td, options.entropy_bonus(), options.samples_mc_entropy(),
                                 options.critic_coef() != 0, options.loss_critic_type(), clip_value_,
                                 options.separate_losses(), options.reduction());
    finish(out, log_weight);
    return out;
  }

  /// Writes `loss_objective` (and the variant's logging entries, `objective_keys()`):
  /// `-exp(log_weight) * A`.
  virtual void objective(TensorDict& out, const TensorDict& td, const modules::Distribution& dist,
                         const torch::Tensor& log_weight, const torch::Tensor& advantage) {
    (void)td;
    (void)dist;
    out.set("loss_objective", Base::reduce_loss(-(log_weight.exp() * advantage), options.reduction()));
  }
  /// Entries written after the entropy and critic terms (`trailing_keys()`).
  virtual void finish(TensorDict& out, const torch::Tensor& log_weight) {
    (void)out;
    (void)log_weight;
  }
  /// What `objective` writes, in order.
  virtual std::vector<std::string> objective_keys() const { return {"loss_objective"}; }
  /// What `finish` writes, in order.
  virtual std::vector<std::string> trailing_keys() const { return {}; }

  /// The critic loss's clipping range (`clip_value`, or `ClipPPOLoss`'s epsilon), if any.
  std::optional<double> clip_value_;

 private:
  static const PPOLossOptions& checked(const char* where, const PPOLossOptions& o) {
    Base::check_coef(where, "entropy_coef", o.entropy_coef());
    Base::check_coef(where, "critic_coef", o.critic_coef());
    TORCH_CHECK_VALUE(o.samples_mc_entropy() >= 1, where, ": samples_mc_entropy must be >= 1, got ",
                      o.samples_mc_entropy());
    TORCH_CHECK_VALUE(std::isfinite(o.clip_epsilon()) && o.clip_epsilon() > 0 && o.clip_epsilon() < 1, where,
                      ": clip_epsilon must be in (0, 1), got ", o.clip_epsilon());
    Base::check_clip_value(where, o.clip_value());
    TORCH_CHECK_VALUE(o.increment() >= 1.0, where, ": increment should be >= 1.0, got ", o.increment());
    TORCH_CHECK_VALUE(o.decrement() <= 1.0 && o.decrement() > 0, where, ": decrement should be in (0, 1], got ",
                      o.decrement());
    TORCH_CHECK_VALUE(std::isfinite(o.dtarg()) && o.dtarg() >= 0, where, ": dtarg must be finite and >= 0");
    TORCH_CHECK_VALUE(std::isfinite(o.beta()), where, ": beta must be finite");
    TORCH_CHECK_VALUE(o.samples_mc_kl() >= 1, where, ": samples_mc_kl must be >= 1, got ", o.samples_mc_kl());
    return o;
  }
};

/// TorchRL's `ClipPPOLoss`: `-min(exp(lw) A, exp(clamp(lw, log(1 - eps), log(1 + eps))) A)`,
/// with `clip_fraction` and `ESS` (the effective sample size over the first batch dim, divided
/// by its length). `clip_epsilon` is a buffer (trainers anneal it in place).
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class ClipPPOLossImpl : public PPOLossImpl<ActorT, CriticT> {
  using Base = PPOLossImpl<ActorT, CriticT>;

 public:
  /// As `PPOLossImpl`'s, plus the `clip_epsilon` buffer; with `clip_value_to_epsilon` and no
  /// `clip_value`, the critic's value is clipped to within `clip_epsilon`.
  ClipPPOLossImpl(ActorT actor_network, CriticT critic_network, PPOLossOptions options = {})
      : Base("ClipPPOLoss", std::move(actor_network), std::move(critic_network), options) {
    const auto tensor_options = this->actor_net_.group->flat().options().requires_grad(false);
    clip_epsilon_ = this->register_buffer("clip_epsilon", torch::full({}, options.clip_epsilon(), tensor_options));
    if (!options.clip_value() && options.clip_value_to_epsilon()) {
      this->clip_value_ = static_cast<double>(static_cast<float>(options.clip_epsilon()));
    }
  }

 protected:
  void objective(TensorDict& out, const TensorDict&, const modules::Distribution&, const torch::Tensor& log_weight,
                 const torch::Tensor& advantage) override {
    torch::Tensor gain1 = log_weight.exp() * advantage;
    // TorchRL: math.log1p of the float32 buffer, in double.
    const double eps = clip_epsilon_.item<double>();
    torch::Tensor log_weight_clip = log_weight.clamp(std::log1p(-eps), std::log1p(eps));
    torch::Tensor clip_fraction = (log_weight_clip != log_weight).to(log_weight.scalar_type()).mean();
    torch::Tensor gain2 = log_weight_clip.exp() * advantage;
    torch::Tensor gain = std::get<0>(torch::stack({gain1, gain2}, -1).min(-1));
    out.set("loss_objective", Base::reduce_loss(-gain, this->options.reduction()));
    out.set("clip_fraction", clip_fraction);
  }
  void finish(TensorDict& out, const torch::Tensor& log_weight) override {
    torch::NoGradGuard no_grad;
    // TorchRL: over the first batch dim only, then the mean divided by its length.
    torch::Tensor lw = log_weight.squeeze();
    torch::Tensor ess = (2 * lw.logsumexp(0) - (2 * lw).logsumexp(0)).exp();
    out.set("ESS", reduce(ess, this->options.reduction()) / log_weight.size(0));
  }
  std::vector<std::string> objective_keys() const override { return {"loss_objective", "clip_fraction"}; }
  std::vector<std::string> trailing_keys() const override { return {"ESS"}; }

 private:
  torch::Tensor clip_epsilon_;
};

/// TorchRL's `KLPENPPOLoss`: `-(exp(lw) A - beta KL(pi_old || pi))`, `pi_old` rebuilt from the
/// distribution parameters the batch was collected with, `beta` (a buffer) adapted towards
/// `dtarg` after each forward; `kl` per sample.
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class KLPENPPOLossImpl : public PPOLossImpl<ActorT, CriticT> {
  using Base = PPOLossImpl<ActorT, CriticT>;

 public:
  /// As `PPOLossImpl`'s, plus the `beta` buffer (initially the option's).
  KLPENPPOLossImpl(ActorT actor_network, CriticT critic_network, PPOLossOptions options = {})
      : Base("KLPENPPOLoss", std::move(actor_network), std::move(critic_network), options) {
    const auto tensor_options = this->actor_net_.group->flat().options().requires_grad(false);
    beta_ = this->register_buffer("beta", torch::full({}, options.beta(), tensor_options));
  }

  /// The current KL penalty (a buffer, saved with the loss).
  const torch::Tensor& beta() const noexcept { return beta_; }

 protected:
  void objective(TensorDict& out, const TensorDict& td, const modules::Distribution& dist,
                 const torch::Tensor& log_weight, const torch::Tensor& advantage) override {
    const auto& options = this->options;
    // The distribution the batch was collected with, from its stored parameters.
    std::shared_ptr<modules::Distribution> previous = previous_dist(td);
    torch::Tensor neg_loss = log_weight.exp() * advantage;
    torch::Tensor kl;
    try {
      kl = modules::kl_divergence(*previous, dist);
    } catch (const c10::NotImplementedError&) {
      torch::Tensor x = previous->sample({options.samples_mc_kl()});
      kl = (previous->log_prob(x) - dist.log_prob(x)).mean(0);
    }
    kl = kl.unsqueeze(-1);
    neg_loss = neg_loss - beta_ * kl;
    {
      torch::NoGradGuard no_grad;
      const double mean_kl = kl.mean().item<double>();
      if (mean_kl > options.dtarg() * 1.5) {
        beta_.mul_(options.increment());
      } else if (mean_kl < options.dtarg() / 1.5) {
        beta_.mul_(options.decrement());
      }
    }
    out.set("loss_objective", Base::reduce_loss(-neg_loss, options.reduction()));
    out.set("kl", kl.detach());  // per sample, as TorchRL (only loss_* entries are reduced)
  }
  std::vector<std::string> objective_keys() const override { return {"loss_objective", "kl"}; }

 private:
  std::shared_ptr<modules::Distribution> previous_dist(const TensorDict& td) {
    auto* actor = dynamic_cast<modules::ProbabilisticActorImpl*>(this->actor_net_.online.front().get());
    TORCH_CHECK(actor != nullptr, this->loss_name(), ": the KL penalty needs a ProbabilisticActor (its factory "
                "rebuilds the collecting policy's distribution from the batch)");
    std::vector<torch::Tensor> params;
    for (const auto& k : actor->options().in_keys()) {
      const torch::Tensor* t = td.find(k);
      TORCH_CHECK(t != nullptr, this->loss_name(), ": the parameters of the distribution were not found: \"",
                  k.str(), "\" is missing; keep the collecting policy's distribution parameters in the batch");
      params.push_back(t->detach());
    }
    return actor->factory()(params);
  }

  torch::Tensor beta_;
};

/// Holder of `PPOLossImpl` (the plain objective).
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class PPOLoss : public LossHolder<PPOLossImpl<ActorT, CriticT>> {
 public:
  using LossHolder<PPOLossImpl<ActorT, CriticT>>::LossHolder;
};
/// Deduces the network types from the arguments: `PPOLoss(actor, critic)` holds a
/// `PPOLossImpl<decltype(actor), decltype(critic)>`.
template <typename ActorT, typename CriticT, typename... Rest>
PPOLoss(ActorT, CriticT, Rest&&...) -> PPOLoss<ActorT, CriticT>;

/// Holder of `ClipPPOLossImpl` (TorchRL's `ClipPPOLoss`).
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class ClipPPOLoss : public LossHolder<ClipPPOLossImpl<ActorT, CriticT>> {
 public:
  using LossHolder<ClipPPOLossImpl<ActorT, CriticT>>::LossHolder;
};
/// Deduces the network types from the arguments: `ClipPPOLoss(actor, critic)` holds a
/// `ClipPPOLossImpl<decltype(actor), decltype(critic)>`.
template <typename ActorT, typename CriticT, typename... Rest>
ClipPPOLoss(ActorT, CriticT, Rest&&...) -> ClipPPOLoss<ActorT, CriticT>;

/// Holder of `KLPENPPOLossImpl` (TorchRL's `KLPENPPOLoss`).
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class KLPENPPOLoss : public LossHolder<KLPENPPOLossImpl<ActorT, CriticT>> {
 public:
  using LossHolder<KLPENPPOLossImpl<ActorT, CriticT>>::LossHolder;
};
/// Deduces the network types from the arguments: `KLPENPPOLoss(actor, critic)` holds a
/// `KLPENPPOLossImpl<decltype(actor), decltype(critic)>`.
template <typename ActorT, typename CriticT, typename... Rest>
KLPENPPOLoss(ActorT, CriticT, Rest&&...) -> KLPENPPOLoss<ActorT, CriticT>;

}  // namespace objectives
}  // namespace rlobj
