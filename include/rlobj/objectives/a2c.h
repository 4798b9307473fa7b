#pragma once

/// \file
/// `A2CLoss`: TorchRL 0.4's advantage actor-critic loss (Mnih et al., 2016).
///
/// * The advantage is the batch's, or computed by the loss's value estimator (GAE, gamma
///   0.99, lmbda 0.95) on a shallow copy of the batch (the caller's TensorDict is not written).
/// * `loss_objective = -log pi(a|s) * A` with `a` the batch's action; `entropy` (logged) and
///   `loss_entropy = -entropy_coef * H` (closed form, or `-log_prob` of `samples_mc_entropy`
///   reparameterised draws where the distribution has none, e.g. `TanhNormal`);
///   `loss_critic = critic_coef * distance(V(s), value_target)`, optionally value-clipped.
/// * `loss_*` entries are reduced (`reduction`). The forward runs under
///   the loss's `deterministic_sampling_mode()` (`Mode`), as every TorchRL loss.

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

#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/actor_critic.h"
#include "rlobj/objectives/common.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// Options of `A2CLoss`, with TorchRL 0.4's names and defaults.
struct A2CLossOptions {
  /// Add the entropy bonus (only when `entropy_coef` is non-zero, as TorchRL).
  TORCH_ARG(bool, entropy_bonus) = true;
  /// Draws for the Monte-Carlo entropy of distributions without a closed form.
  TORCH_ARG(int64_t, samples_mc_entropy) = 1;
  /// Weight of the entropy bonus: `loss_entropy = -entropy_coef * H`.
  TORCH_ARG(double, entropy_coef) = 0.01;
  /// Weight of the critic's loss; 0 leaves `loss_critic` out.
  TORCH_ARG(double, critic_coef) = 1.0;
  /// Distance between the critic's value and the value target.
  TORCH_ARG(LossFunction, loss_critic_type) = LossFunction::SmoothL1;
  /// Parameters shared by actor and critic are trained by the actor's loss only.
  TORCH_ARG(bool, separate_losses) = false;
  /// Reduction of the `loss_*` entries.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// Clip the critic's value to within this of the batch's value in the critic loss.
  TORCH_ARG(std::optional<double>, clip_value) = std::nullopt;
  /// When the inputs are checked for NaN and Inf (see `FiniteCheck`).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// A2C's losses over a stochastic actor (`ProbabilisticActor`) and a state-value critic.
///
/// ```
/// auto loss = rlobj::objectives::A2CLoss(actor, critic);
/// rlobj::TensorDict out = loss(batch);  // loss_objective, entropy, loss_entropy, loss_critic
/// ```
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class A2CLossImpl : public ActorCriticLossBase<A2CLossOptions, ActorT, CriticT> {
  using Base = ActorCriticLossBase<A2CLossOptions, ActorT, CriticT>;

 public:
  using Base::options;

  /// Registers the actor and the critic (one dtype and device) and the coefficient buffers, and
  /// builds the default estimator, GAE. Throws `c10::ValueError` on an empty network or a bad
  /// option (a coefficient not finite, `samples_mc_entropy` < 1, `clip_value` not > 0).
  A2CLossImpl(ActorT actor_network, CriticT critic_network, A2CLossOptions options = {})
      : Base("A2CLoss", checked(options), std::move(actor_network), std::move(critic_network), /*delay_value=*/false,
             options.separate_losses(), /*needs_sample_log_prob=*/false) {
    this->register_coefficients(options.entropy_coef(), options.critic_coef());
    this->make_value_estimator();
  }

  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const override {
    std::vector<std::string> keys = {"loss_objective"};
    if (use_entropy_bonus()) {
      keys.push_back("entropy");
      keys.push_back("loss_entropy");
    }
    if (options.critic_coef() != 0) keys.push_back("loss_critic");
    if (options.clip_value()) keys.push_back("value_clip_fraction");
    return keys;
  }

  /// Prints `rlobj::objectives::A2CLoss(entropy_coef=..., critic_coef=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::A2CLoss(entropy_coef=" << options.entropy_coef()
           << ", critic_coef=" << options.critic_coef() << ")";
  }

 protected:
  /// The losses and their logging entries; the caller's batch is not written.
  TensorDict compute(TensorDict& tensordict) override {
    TensorDict td = tensordict.copy();  // TorchRL: tensordict.clone(False)
    torch::Tensor advantage = this->advantage(td);
    const torch::Tensor action = this->batch_action(td);
    auto dist = this->actor_dist(td);
    torch::Tensor log_prob = this->with_feature_dim(dist->log_prob(action), advantage, "actor's log-probability");
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_objective", Base::reduce_loss(-(log_prob * advantage), options.reduction()));
    this->add_entropy_and_critic(out, *dist, td, use_entropy_bonus(), options.samples_mc_entropy(),
                                 options.critic_coef() != 0, options.loss_critic_type(), options.clip_value(),
                                 options.separate_losses(), options.reduction());
    return out;
  }

 private:
  // TorchRL: entropy_bonus and entropy_coef.
  bool use_entropy_bonus() const noexcept { return options.entropy_bonus() && options.entropy_coef() != 0; }

  static const A2CLossOptions& checked(const A2CLossOptions& o) {
    Base::check_coef("A2CLoss", "entropy_coef", o.entropy_coef());
    Base::check_coef("A2CLoss", "critic_coef", o.critic_coef());
    TORCH_CHECK_VALUE(o.samples_mc_entropy() >= 1, "A2CLoss: samples_mc_entropy must be >= 1, got ",
                      o.samples_mc_entropy());
    Base::check_clip_value("A2CLoss", o.clip_value());
    return o;
  }
};

/// Holder of `A2CLossImpl`: `auto loss = A2CLoss(actor, critic);`.
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class A2CLoss : public LossHolder<A2CLossImpl<ActorT, CriticT>> {
 public:
  using LossHolder<A2CLossImpl<ActorT, CriticT>>::LossHolder;
};
/// Deduces the network types from the arguments: `A2CLoss(actor, critic)` holds a
/// `A2CLossImpl<decltype(actor), decltype(critic)>`.
template <typename ActorT, typename CriticT, typename... Rest>
A2CLoss(ActorT, CriticT, Rest&&...) -> A2CLoss<ActorT, CriticT>;

}  // namespace objectives
}  // namespace rlobj
