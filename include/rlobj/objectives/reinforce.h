#pragma once

/// \file
/// `ReinforceLoss`: TorchRL 0.4's REINFORCE with a critic baseline (Williams, 1992).
///
/// As in TorchRL 0.4, and unlike A2C and PPO, the loss works on the caller's TensorDict:
///
/// * without an `"advantage"` entry, the value estimator (GAE) writes `advantage`,
///   `value_target` and the values into it;
/// * the actor then runs on it, under `ExplorationType::Mode` (every TorchRL loss's forward
///   does), writing its distribution parameters, `action` (the distribution's mode) and
///   `sample_log_prob` (the actor needs `return_log_prob`) into the batch;
/// * `loss_actor = -sample_log_prob * A` (the log-probability the actor just wrote, i.e. of its
///   mode, not of the collected action: TorchRL 0.4's rule), `loss_value = distance(V(s),
///   value_target)` (no coefficient), both reduced.

#include <algorithm>
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

#include "rlobj/detail/format.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/actor_critic.h"
#include "rlobj/objectives/common.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// Options of `ReinforceLoss`, with TorchRL 0.4's names and defaults.
struct ReinforceLossOptions {
  /// Keep a delayed copy of the critic to value next states (`SoftUpdate` / `HardUpdate`).
  TORCH_ARG(bool, delay_value) = false;
  /// Distance between the critic's value and the value target.
  TORCH_ARG(LossFunction, loss_critic_type) = LossFunction::SmoothL1;
  /// Parameters shared by actor and critic are trained by the actor's loss only.
  TORCH_ARG(bool, separate_losses) = false;
  /// Reduction of both losses.
  TORCH_ARG(Reduction, reduction) = Reduction::Mean;
  /// Clip the critic's value to within this of the batch's value in the value loss.
  TORCH_ARG(std::optional<double>, clip_value) = std::nullopt;
  /// When the inputs are checked for NaN and Inf (see `FiniteCheck`).
  TORCH_ARG(FiniteCheck, check_finite) = FiniteCheck::Auto;
};

/// REINFORCE's losses over a stochastic actor (a `ProbabilisticActor` with
/// `return_log_prob(true)`) and a state-value critic.
///
/// ```
/// auto loss = rlobj::objectives::ReinforceLoss(actor, critic);
/// rlobj::TensorDict out = loss(batch);  // loss_actor, loss_value
/// ```
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class ReinforceLossImpl : public ActorCriticLossBase<ReinforceLossOptions, ActorT, CriticT> {
  using Base = ActorCriticLossBase<ReinforceLossOptions, ActorT, CriticT>;

 public:
  using Base::options;

  /// Registers the actor and the critic (one dtype and device; a delayed critic with
  /// `delay_value`) and builds the default estimator, GAE. Throws `c10::ValueError` on an empty
  /// network, a `clip_value` not > 0, or an actor that does not write `sample_log_prob`.
  ReinforceLossImpl(ActorT actor_network, CriticT critic_network, ReinforceLossOptions options = {})
      : Base("ReinforceLoss", checked(options), std::move(actor_network), std::move(critic_network),
             options.delay_value(), options.separate_losses(), /*needs_sample_log_prob=*/false) {
    const auto& out = this->actor_->out_keys();
    TORCH_CHECK_VALUE(std::find(out.begin(), out.end(), this->keys_.sample_log_prob) != out.end(),
                      "ReinforceLoss: the actor does not write \"", this->keys_.sample_log_prob.str(),
                      "\"; build it with ProbabilisticActorOptions().return_log_prob(true)");
    this->make_value_estimator();
  }

  /// The entries of the output, in order.
  std::vector<std::string> out_keys() const override {
    std::vector<std::string> keys = {"loss_actor", "loss_value"};
    if (options.clip_value()) keys.push_back("value_clip_fraction");
    return keys;
  }

  /// Prints `rlobj::objectives::ReinforceLoss(delay_value=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::objectives::ReinforceLoss(delay_value=" << (options.delay_value() ? "true" : "false") << ")";
  }

 protected:
  /// The losses. Writes into `td` (see the file's notes).
  TensorDict compute(TensorDict& td) override {
    torch::Tensor advantage = this->advantage(td);
    td = this->actor_net_.online.front()->forward(td);
    const torch::Tensor* lp = td.find(this->keys_.sample_log_prob);
    TORCH_CHECK(lp != nullptr, "ReinforceLoss: the actor did not write \"", this->keys_.sample_log_prob.str(), "\"");
    torch::Tensor log_prob = *lp;
    if (log_prob.dim() + 1 == advantage.dim()) log_prob = log_prob.unsqueeze(-1);
    TORCH_CHECK(log_prob.sizes() == advantage.sizes(), "ReinforceLoss: \"", this->keys_.sample_log_prob.str(),
                "\" has shape ", rlobj::detail::shape_str(lp->sizes()), " but the advantage has shape ",
                rlobj::detail::shape_str(advantage.sizes()));
    TensorDict out(TensorDict::BatchSize{});
    out.set("loss_actor", Base::reduce_loss(-log_prob * advantage.detach(), options.reduction()));
    TensorDict critic_in = options.separate_losses() ? td.detach() : td;
    auto [loss, clip_fraction] = this->critic_loss(critic_in, options.loss_critic_type(), options.clip_value());
    out.set("loss_value", Base::reduce_loss(loss, options.reduction()));
    if (clip_fraction.defined()) out.set("value_clip_fraction", clip_fraction);
    return out;
  }

 private:
  static const ReinforceLossOptions& checked(const ReinforceLossOptions& o) {
    Base::check_clip_value("ReinforceLoss", o.clip_value());
    return o;
  }
};

/// Holder of `ReinforceLossImpl`: `auto loss = ReinforceLoss(actor, critic);`.
template <typename ActorT = modules::ProbabilisticActor, typename CriticT = modules::ValueOperator>
class ReinforceLoss : public LossHolder<ReinforceLossImpl<ActorT, CriticT>> {
 public:
  using LossHolder<ReinforceLossImpl<ActorT, CriticT>>::LossHolder;
};
/// Deduces the network types from the arguments: `ReinforceLoss(actor, critic)` holds a
/// `ReinforceLossImpl<decltype(actor), decltype(critic)>`.
template <typename ActorT, typename CriticT, typename... Rest>
ReinforceLoss(ActorT, CriticT, Rest&&...) -> ReinforceLoss<ActorT, CriticT>;

}  // namespace objectives
}  // namespace rlobj
