#pragma once

// A toy loss written only against rlobj's public loss contract (rlobj/objectives/loss_module.h):
// TD(0) regression of a state-value critic towards r + gamma * V'(s'), V' a delayed copy. Used by
// tests/objectives/loss_module_test.cpp (the contract) and tests/trainers/trainer_test.cpp (the
// library trainer); docs/contributing.md walks through it.

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <rlobj/modules/exploration_type.h>
#include <rlobj/modules/value_operator.h>
#include <rlobj/objectives/common.h>
#include <rlobj/tensordict.h>
#include <torch/arg.h>

namespace rlobj_test {

/// The toy loss's options: a TORCH_ARG struct with the `check_finite` the base reads.
struct ToyLossOptions {
  TORCH_ARG(double, gamma) = 0.9;
  TORCH_ARG(rlobj::objectives::FiniteCheck, check_finite) = rlobj::objectives::FiniteCheck::Auto;
};

/// The toy loss's keys, each listed once in `fields()` for `set_keys`.
struct ToyLossKeys {
  rlobj::NestedKey value = "state_value";
  rlobj::NestedKey reward = "reward";
  static std::vector<rlobj::objectives::KeyField<ToyLossKeys>> fields() {
    return {{"value", &ToyLossKeys::value}, {"reward", &ToyLossKeys::reward}};
  }
};

/// TD(0) value regression with a delayed target critic.
class ToyLossImpl : public rlobj::objectives::LossModuleBase<ToyLossOptions, ToyLossKeys> {
 public:
  explicit ToyLossImpl(rlobj::modules::ValueOperator critic, ToyLossOptions options = {})
      : LossModuleBase("ToyLoss", options), critic_(std::move(critic)) {
    net_ = register_network("value_network", critic_.ptr(), rlobj::objectives::NetworkOptions().target(true));
    keys_changed();
  }
  std::vector<std::string> out_keys() const override { return {"loss_value", "target_value"}; }

  /// The exploration type `compute` last ran under (what the contract set).
  std::optional<rlobj::modules::ExplorationType> seen_exploration;

 protected:
  rlobj::TensorDict compute(rlobj::TensorDict& td) override {
    seen_exploration = rlobj::modules::explicit_exploration_type();
    const rlobj::NestedKey next("next");
    torch::Tensor target;
    {
      torch::NoGradGuard no_grad;
      rlobj::TensorDict next_td = net_.targets().front()->forward(td.get_sub(next).copy());
      target = td.get(next / keys_.reward) + options.gamma() * next_td.get(keys_.value);
    }
    rlobj::TensorDict in = net_.online.front()->forward(td.select(critic_->in_keys()));
    torch::Tensor loss = (in.get(keys_.value) - target).pow(2).mean();
    rlobj::TensorDict out(rlobj::TensorDict::BatchSize{});
    out.set("loss_value", loss);
    out.set("target_value", target.detach());
    return out;
  }
  void keys_changed() override {
    const rlobj::NestedKey next("next");
    std::vector<rlobj::NestedKey> keys = {next / keys_.reward};
    for (const auto& k : critic_->in_keys()) {
      keys.push_back(k);
      keys.push_back(next / k);
    }
    set_input_keys(keys, keys);
  }

 private:
  rlobj::modules::ValueOperator critic_;
  rlobj::objectives::LossNetwork<rlobj::modules::ValueOperatorImpl> net_;
};

/// The holder: `ToyLoss loss(critic);`.
class ToyLoss : public rlobj::objectives::LossHolder<ToyLossImpl> {
 public:
  using LossHolder::LossHolder;
};

}  // namespace rlobj_test
