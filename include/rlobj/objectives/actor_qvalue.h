#pragma once

/// \file
/// `ActorQValueLossBase`: what `TD3Loss` and `SACLoss` share — an actor (`"actor_network"`)
/// and an ensemble of `num_qvalue_nets` critics (`"qvalue_network"`, TorchRL's
/// `convert_to_functional(expand_dim=N)`) reading the state and the action and writing
/// `state_action_value`; their keys; the batch checks; the critics evaluated copy by copy and
/// stacked.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/objectives/common.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// The keys `TD3Loss` and `SACLoss` read and write (TorchRL's `_AcceptedKeys`); `reward`,
/// `done` and `terminated` are read under `"next"`.
struct ActorQValueLossKeys {
  /// The batch's action; its last dim must be the action spec's feature count.
  NestedKey action = "action";
  /// The critics' output.
  NestedKey state_action_value = "state_action_value";
  /// Where the per-sample TD error is written into the batch (for prioritized replay).
  NestedKey priority = "td_error";
  /// The reward, under `"next"`.
  NestedKey reward = "reward";
  /// The done flag (terminated or truncated), under `"next"`.
  NestedKey done = "done";
  /// The terminated flag, under `"next"`: no bootstrapping past it.
  NestedKey terminated = "terminated";
  /// Every key by its TorchRL name (`set_keys`).
  static std::vector<KeyField<ActorQValueLossKeys>> fields() {
    return {{"action", &ActorQValueLossKeys::action},
            {"state_action_value", &ActorQValueLossKeys::state_action_value},
            {"priority", &ActorQValueLossKeys::priority},
            {"reward", &ActorQValueLossKeys::reward},
            {"done", &ActorQValueLossKeys::done},
            {"terminated", &ActorQValueLossKeys::terminated}};
  }
};

/// What the settings of an actor / Q-ensemble loss say about its networks.
struct ActorQValueNetworks {
  /// Critic copies (`num_qvalue_nets`).
  int64_t num_qvalue_nets = 2;
  /// A delayed copy of the actor for targets.
  bool delay_actor = false;
  /// Delayed copies of the critics for targets.
  bool delay_qvalue = true;
  /// The actor's parameters shared with the critics are trained by the actor's loss only.
  bool separate_losses = false;
};

/// The base of the losses over an actor (`ActorT`, writing the action) and an ensemble of
/// critics (`QValueT`, reading state and action, writing `state_action_value`): `TD3Loss` and
/// `SACLoss`. It registers both networks (the critics with frozen copies for the actor's loss),
/// declares the keys `forward` reads, checks the action's feature count against the action
/// spec, and evaluates the critics.
template <typename Options, typename ActorT, typename QValueT>
class ActorQValueLossBase : public LossModuleBase<Options, ActorQValueLossKeys> {
  using Base = LossModuleBase<Options, ActorQValueLossKeys>;

 public:
  /// The actor's module type (`ActorT::ContainedType`).
  using ActorImpl = typename ActorT::ContainedType;
  /// The critics' module type (`QValueT::ContainedType`).
  using QValueImpl = typename QValueT::ContainedType;

  /// The actor (the user's network).
  ActorT& actor_network() noexcept { return actor_; }
  /// The online critics: copy 0 is the user's network (its parameters redrawn, see
  /// `NetworkOptions::ensemble`).
  const std::vector<std::shared_ptr<QValueImpl>>& qvalue_networks() const noexcept { return qvalue_net_.online; }
  /// The target critics (the online ones without `delay_qvalue`).
  const std::vector<std::shared_ptr<QValueImpl>>& target_qvalue_networks() const noexcept {
    return qvalue_net_.targets();
  }
  /// The actor used for targets (the online one without `delay_actor`).
  std::shared_ptr<ActorImpl> target_actor_network() const { return actor_net_.targets().front(); }

 protected:
  /// `action_features`: the action spec's last dim (the batch's actions must have it).
  ActorQValueLossBase(const char* name, Options options, ActorT actor, QValueT qvalue, int64_t action_features,
                      const ActorQValueNetworks& networks)
      : Base(name, std::move(options)),
        actor_(std::move(actor)),
        qvalue_(std::move(qvalue)),
        action_features_(action_features) {
    TORCH_CHECK_VALUE(!actor_.is_empty(), name, ": actor_network is empty");
    TORCH_CHECK_VALUE(!qvalue_.is_empty(), name, ": qvalue_network is empty");
    detail::check_same_placement(name, {{"actor_network", actor_.get()}, {"qvalue_network", qvalue_.get()}});
    std::vector<torch::Tensor> shared;
    if (networks.separate_losses) shared = actor_->parameters();
    actor_net_ = this->register_network("actor_network", actor_.ptr(), NetworkOptions().target(networks.delay_actor));
    qvalue_net_ = this->register_network("qvalue_network", qvalue_.ptr(),
                                         NetworkOptions()
                                             .ensemble(networks.num_qvalue_nets)
                                             .target(networks.delay_qvalue)
                                             .frozen(true)
                                             .compare_against(shared));
  }

  /// Every key the losses read, checked before anything is drawn: a rejected batch leaves the
  /// generator untouched.
  void keys_changed() override {
    const NestedKey next("next");
    const auto& keys = this->keys_;
    std::vector<NestedKey> required = {keys.action};
    for (const auto& k : qvalue_->in_keys()) {
      required.push_back(k);
      if (k != keys.action) required.push_back(next / k);
    }
    for (const auto& k : actor_->in_keys()) {
      required.push_back(k);
      required.push_back(next / k);
    }
    for (const auto& k : {keys.reward, keys.done, keys.terminated}) required.push_back(next / k);
    std::vector<NestedKey> computed = qvalue_->in_keys();
    computed.push_back(keys.action);
    for (const auto& k : actor_->in_keys()) {
      computed.push_back(k);
      computed.push_back(next / k);
    }
    computed.push_back(next / keys.reward);
    this->set_input_keys(std::move(required), std::move(computed));
    if (this->estimator_) {
      detail::set_estimator_keys(*this->estimator_, keys.state_action_value, keys.reward, keys.done, keys.terminated);
    }
  }

  /// The action's last dim must be the action spec's feature count (else `c10::ValueError`).
  void check_batch(const TensorDict& td) const override {
    const torch::Tensor& action = td.get(this->keys_.action);
    TORCH_CHECK_VALUE(action.dim() >= 1 && action.size(-1) == action_features_, this->loss_name(), ": \"",
                      this->keys_.action.str(), "\" has shape ", rlobj::detail::shape_str(action.sizes()),
                      " but the action spec has ", action_features_, " feature(s)");
  }

  /// The critic's inputs from `td` (its state keys) with `action` as the action.
  TensorDict critic_input(const TensorDict& td, const torch::Tensor& action, bool detach = false) const {
    TensorDict in(td.batch_size(), td.device());
    for (const auto& k : qvalue_->in_keys()) {
      if (k != this->keys_.action) in.set(k, detach ? td.get(k).detach() : td.get(k));
    }
    in.set(this->keys_.action, action);
    return in;
  }

  /// The critic's inputs read from `td` as they are, detached.
  TensorDict detached_critic_input(const TensorDict& td) const {
    TensorDict in(td.batch_size(), td.device());
    for (const auto& k : qvalue_->in_keys()) in.set(k, td.get(k).detach());
    return in;
  }

  /// Every critic of `critics` on `in`, stacked: `[N, *batch]` (squeezed) or `[N, *batch, 1]`.
  torch::Tensor evaluate(const std::vector<std::shared_ptr<QValueImpl>>& critics, const TensorDict& in,
                         bool squeeze = true) const {
    std::vector<torch::Tensor> values;
    values.reserve(critics.size());
    for (const auto& critic : critics) values.push_back(evaluate_one(*critic, in, squeeze));
    return torch::stack(values, 0);
  }

  /// One critic on `in`: `[*batch]` (squeezed) or `[*batch, 1]`.
  torch::Tensor evaluate_one(QValueImpl& critic, const TensorDict& in, bool squeeze) const {
    TensorDict out = critic.forward(in.copy());
    const torch::Tensor* q = out.find(this->keys_.state_action_value);
    TORCH_CHECK(q != nullptr, this->loss_name(), ": the qvalue network did not write \"",
                this->keys_.state_action_value.str(),
                "\"; set its out_keys or call set_keys({{\"state_action_value\", ...}})");
    return squeeze ? q->squeeze(-1) : *q;
  }

  /// The actor (`actor_network()`).
  ActorT actor_;
  /// The user's critic (copy 0 of `qvalue_networks()`).
  QValueT qvalue_;
  /// The actor as registered (`"actor_network"`; a delayed target with `delay_actor`).
  LossNetwork<ActorImpl> actor_net_;
  /// The critics as registered (`"qvalue_network"`): `num_qvalue_nets` online copies, their frozen
  /// copies (what the actor's loss evaluates), delayed targets with `delay_qvalue`, and with
  /// `separate_losses` `for_loss` copies that see the parameters shared with the actor frozen.
  LossNetwork<QValueImpl> qvalue_net_;
  /// The action spec's last dim (the batch's actions must have it).
  int64_t action_features_;
};

}  // namespace objectives
}  // namespace rlobj
