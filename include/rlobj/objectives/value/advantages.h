#pragma once

/// \file
/// Value estimators (TorchRL's `torchrl.objectives.value`): `TD0Estimator` (DDPG's default),
/// `TD1Estimator`, `TDLambdaEstimator` and `GAE`. An estimator reads rewards and done flags
/// under `"next"`, evaluates its value network on the next states, and returns targets.

#include <functional>
#include <map>
#include <memory>
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
#include "rlobj/envs/common.h"
#include "rlobj/objectives/value/functional.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {
namespace value {

/// The keys an estimator reads and writes (TorchRL's `_AcceptedKeys`). `reward`, `done`,
/// `terminated` are read under `"next"`.
struct ValueEstimatorKeys {
  /// Where `forward` writes the advantage.
  NestedKey advantage = "advantage";
  /// Where `forward` writes the value target.
  NestedKey value_target = "value_target";
  /// The value network's output; `forward` also writes the values it used there and under
  /// `"next"`.
  NestedKey value = "state_value";
  /// The reward, under `"next"` (standardised and written back with `average_rewards`).
  NestedKey reward = "reward";
  /// The done flag (terminated or truncated), under `"next"`: bool, shaped like the reward.
  NestedKey done = "done";
  /// The terminated flag, under `"next"`: no bootstrapping past it (`done` when absent).
  NestedKey terminated = "terminated";
  /// `TD0Estimator`, when present: the steps each transition spans (n-step returns; gamma is
  /// raised to it), integer, one per reward.
  NestedKey steps_to_next_obs = "steps_to_next_obs";
};

/// Hyper-parameters of every estimator (fields an estimator does not use are ignored).
struct ValueEstimatorOptions {
  /// Discount. Stored as a float32 tensor, as TorchRL does (0.99 -> 0.9900000095367432).
  TORCH_ARG(double, gamma) = 0.99;
  /// TD(lambda) / GAE trace decay.
  TORCH_ARG(double, lmbda) = 0.95;
  /// Standardise rewards before computing targets (and write them back).
  TORCH_ARG(bool, average_rewards) = false;
  /// Let gradients flow through the value network's evaluations (else they run under
  /// `torch::NoGradGuard`).
  TORCH_ARG(bool, differentiable) = false;
  /// GAE: standardise the advantage (scale clamped at 1e-4, as TorchRL 0.4).
  TORCH_ARG(bool, average_gae) = false;
  /// TorchRL's switch between its vectorised and recursive forms of the same recursion;
  /// accepted for compatibility. rlobj runs the reverse recursion in both cases (they agree
  /// to float32 rounding: 6e-8 on TorchRL's own reference batch).
  TORCH_ARG(bool, vectorized) = true;
};

/// Base of the estimators. The value network is any callable TensorDict -> TensorDict that
/// writes `tensor_keys().value` (a `ValueOperator` holder, a `TensorDictSequential`, a lambda).
class ValueEstimatorBase {
 public:
  /// A value network: a TensorDict in, a TensorDict holding `tensor_keys().value` out.
  using ValueNetwork = std::function<TensorDict(TensorDict)>;

  virtual ~ValueEstimatorBase() = default;

  /// The value target of every transition in `td` (shape of `("next", reward)`). When
  /// `next_value` is undefined, the value network is run on the next states
  /// (`step_mdp(td, keep_other=false)`).
  virtual torch::Tensor value_estimate(TensorDict td, torch::Tensor next_value = {}) = 0;

  /// Writes `advantage` and `value_target` into `td` (TorchRL's `forward`), evaluating the
  /// value network on `td` and on its next states. Returns `td`.
  virtual TensorDict forward(TensorDict td) {
    return restoring_reward(td, [&] {
      auto [value, next_value] = values(td);
      torch::Tensor target = value_estimate(td, next_value);
      write_targets(td, target - value, target, value, next_value);
    });
  }

  /// Renames keys: `{{"reward", "r"}, {"value", "state_action_value"}}`. Unknown names throw.
  void set_keys(const std::map<std::string, NestedKey>& keys) {
    rlobj::detail::set_named_keys(name_, keys,
                                  {{"advantage", &keys_.advantage},
                                   {"value_target", &keys_.value_target},
                                   {"value", &keys_.value},
                                   {"reward", &keys_.reward},
                                   {"done", &keys_.done},
                                   {"terminated", &keys_.terminated},
                                   {"steps_to_next_obs", &keys_.steps_to_next_obs}});
  }
  /// The keys (renamed by `set_keys`).
  const ValueEstimatorKeys& tensor_keys() const noexcept { return keys_; }
  /// The hyper-parameters the estimator was built with.
  const ValueEstimatorOptions& options() const noexcept { return options_; }
  /// The discount as TorchRL stores it: a 0-dim float32 tensor.
  const torch::Tensor& gamma() const noexcept { return gamma_; }
  /// Replaces the value network (DDPG points it at its target actor-critic). `in_keys`: the
  /// entries it reads, which `forward` stacks from the current and the next states to
  /// evaluate both in one call (empty: every entry present in both with the same shape).
  void set_value_network(ValueNetwork network, std::vector<NestedKey> in_keys = {}) {
    value_network_ = std::move(network);
    value_in_keys_ = std::move(in_keys);
  }
  /// A second network for the next states (a loss's delayed target critic; TorchRL's
  /// `target_params`): `forward` then evaluates the current and next states in two calls.
  void set_next_value_network(ValueNetwork network) { next_value_network_ = std::move(network); }
  /// The entries `forward` feeds the value network (empty: see `set_value_network`).
  const std::vector<NestedKey>& value_network_in_keys() const noexcept { return value_in_keys_; }
  /// The estimator's TorchRL class name (`"GAE"`), which starts its error messages.
  const char* name() const noexcept { return name_; }

 protected:
  /// `name`: the estimator's TorchRL class name; `network`: its value network (null when the
  /// loss passes the next values); `in_keys`: see `set_value_network`. Throws `c10::ValueError`
  /// unless gamma and lmbda are in [0, 1].
  ValueEstimatorBase(const char* name, ValueNetwork network, ValueEstimatorOptions options,
                     std::vector<NestedKey> in_keys = {})
      : name_(name), value_network_(std::move(network)), value_in_keys_(std::move(in_keys)), options_(options) {
    TORCH_CHECK_VALUE(options_.gamma() >= 0 && options_.gamma() <= 1, name_,
                      ": gamma must be in [0, 1], got ", options_.gamma());
    TORCH_CHECK_VALUE(options_.lmbda() >= 0 && options_.lmbda() <= 1, name_,
                      ": lmbda must be in [0, 1], got ", options_.lmbda());
    gamma_ = torch::tensor(options_.gamma(), torch::kFloat32);
    lmbda_ = static_cast<double>(static_cast<float>(options_.lmbda()));  // a float32 buffer in TorchRL
  }

  /// The reward, done and terminated flags under "next", validated; rewards standardised
  /// (and written back) with `average_rewards`.
  struct Transition {
    /// The reward (standardised with `average_rewards`).
    torch::Tensor reward, done, terminated;  ///< the terminated flag (`done` when absent)
    /// \var done
    /// The done flag (terminated or truncated), bool, shaped like the reward.
    bool standardized = false;  ///< reward was standardised (average_rewards), not yet in td
  };
  /// Writes the standardised reward into `td` (average_rewards), returns `estimate`.
  torch::Tensor commit(TensorDict& td, const Transition& t, torch::Tensor estimate) const {
    if (t.standardized) td.set(NestedKey("next") / keys_.reward, t.reward);
    return estimate;
  }
  /// Writes `advantage`, `value_target` and the values they came from (`value` and
  /// `("next", value)`, as TorchRL) together (all or nothing).
  void write_targets(TensorDict& td, torch::Tensor advantage, torch::Tensor target, torch::Tensor value,
                     torch::Tensor next_value) const {
    TensorDict staged(td.batch_size(), td.device());
    staged.set(keys_.advantage, std::move(advantage)).set(keys_.value_target, std::move(target));
    staged.set(keys_.value, std::move(value)).set(NestedKey("next") / keys_.value, std::move(next_value));
    td.update(staged);
  }
  /// Runs `body` on `td`; if it throws, the reward it may have standardised is put back.
  template <typename Body>
  TensorDict restoring_reward(TensorDict& td, const Body& body) {
    const NestedKey reward_key = NestedKey("next") / keys_.reward;
    const torch::Tensor* found = td.find(reward_key);
    const torch::Tensor original = found ? *found : torch::Tensor();
    try {
      body();
    } catch (...) {
      if (original.defined()) td.set(reward_key, original);
      throw;
    }
    return td;
  }
  /// Reads the reward, done and terminated flags under `"next"` (bool flags shaped like the
  /// reward; terminated defaults to done), with the reward standardised under `average_rewards`
  /// (not yet written back: see `commit`). Throws naming what is missing or mismatched.
  Transition read_transition(TensorDict& td) const {
    const NestedKey reward_key = NestedKey("next") / keys_.reward;
    const NestedKey done_key = NestedKey("next") / keys_.done;
    const NestedKey terminated_key = NestedKey("next") / keys_.terminated;
    const torch::Tensor* reward = td.find(reward_key);
    TORCH_CHECK(reward != nullptr, name_, ": the TensorDict has no reward \"", reward_key.str(),
                "\"; keys present: ", rlobj::detail::keys_str(td.keys(true)));
    const torch::Tensor* done = td.find(done_key);
    TORCH_CHECK(done != nullptr, name_, ": the TensorDict has no done flag \"", done_key.str(), "\"");
    const torch::Tensor* terminated = td.find(terminated_key);
    if (terminated == nullptr) terminated = done;  // TorchRL: terminated defaults to done
    TORCH_CHECK_TYPE(done->scalar_type() == torch::kBool, name_, ": \"", done_key.str(),
                     "\" must be bool, got ", rlobj::detail::dtype_str(done->scalar_type()));
    TORCH_CHECK_TYPE(terminated->scalar_type() == torch::kBool, name_, ": \"", terminated_key.str(),
                     "\" must be bool, got ", rlobj::detail::dtype_str(terminated->scalar_type()));
    TORCH_CHECK(done->sizes() == reward->sizes() && terminated->sizes() == reward->sizes(), name_,
                ": \"", reward_key.str(), "\" has shape ", rlobj::detail::shape_str(reward->sizes()),
                " but \"", done_key.str(), "\" has shape ", rlobj::detail::shape_str(done->sizes()),
                " and \"", terminated_key.str(), "\" ", rlobj::detail::shape_str(terminated->sizes()),
                "; they must match");
    Transition t{*reward, *done, *terminated};
    if (options_.average_rewards()) {
      // One reward has no standard deviation (TorchRL divides by NaN and returns NaN values).
      TORCH_CHECK_VALUE(t.reward.numel() >= 2, name_, ": average_rewards standardises the rewards by their standard "
                        "deviation, which needs at least 2 of them; \"", reward_key.str(), "\" has shape ",
                        rlobj::detail::shape_str(t.reward.sizes()));
      // Written back by commit() once the estimate is made (later readers see the standardised
      // rewards, as in TorchRL); a failed estimate leaves td as it was.
      t.reward = t.reward - t.reward.mean();
      t.reward = t.reward / t.reward.std().clamp_min(1e-5);
      t.standardized = true;
    }
    return t;
  }

  /// Runs the value network on the next states and returns the value it wrote.
  torch::Tensor next_value(const TensorDict& td) const {
    TORCH_CHECK(value_network_ != nullptr, name_, ": no value network; pass next_value explicitly");
    TensorDict next = rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().keep_other(false));
    return run_value_network(next, next_value_network_);
  }

  /// Runs `network` (null: the value network) on `td`, under `torch::NoGradGuard` unless
  /// `differentiable`, and returns the value it wrote.
  torch::Tensor run_value_network(TensorDict td, const ValueNetwork& network = nullptr) const {
    const ValueNetwork& net = network ? network : value_network_;
    TORCH_CHECK(net != nullptr, name_, ": no value network; pass the values explicitly");
    c10::optional<torch::NoGradGuard> no_grad;
    if (!options_.differentiable()) no_grad.emplace();
    TensorDict out = net(td);
    const torch::Tensor* v = out.find(keys_.value);
    TORCH_CHECK(v != nullptr, name_, ": the value network did not write \"", keys_.value.str(),
                "\"; keys present: ", rlobj::detail::keys_str(out.keys(true)));
    return *v;
  }

  /// (value, next value) for `forward`, from one call of the value network on the current
  /// and next states stacked on a new leading dim (TorchRL's `_call_value_nets`, which vmaps
  /// one call over the pair). The next value is detached.
  std::pair<torch::Tensor, torch::Tensor> values(const TensorDict& td) const {
    TORCH_CHECK(td.batch_dims() >= 1, name_, ": forward needs a TensorDict with at least one batch dim");
    TORCH_CHECK(td.contains("next") && td.find("next") == nullptr, name_, ": the TensorDict has no \"next\" "
                "sub-TensorDict; keys present: ", rlobj::detail::keys_str(td.keys(true)));
    const TensorDict next = td.get_sub("next");
    std::vector<NestedKey> keys = value_in_keys_;
    if (keys.empty()) {
      for (const auto& item : next.items(/*include_nested=*/true, /*leaves_only=*/true)) {
        const torch::Tensor* now = td.find(item.first);
        const torch::Tensor& later = item.second.tensor();
        if (now != nullptr && now->sizes() == later.sizes() && now->scalar_type() == later.scalar_type()) {
          keys.push_back(item.first);
        }
      }
    }
    std::vector<int64_t> batch = {2};
    for (auto d : td.batch_size()) batch.push_back(d);
    TensorDict both(batch, td.device());
    for (const auto& k : keys) {
      const torch::Tensor* now = td.find(k);
      const torch::Tensor* later = next.find(k);
      TORCH_CHECK(now != nullptr && later != nullptr, name_, ": the value network reads \"", k.str(),
                  "\", which must be present at the root and under \"next\"");
      TORCH_CHECK(now->sizes() == later->sizes() && now->scalar_type() == later->scalar_type(), name_, ": \"",
                  k.str(), "\" has shape ", rlobj::detail::shape_str(now->sizes()), " (",
                  rlobj::detail::dtype_str(now->scalar_type()), ") but \"next.", k.str(), "\" has shape ",
                  rlobj::detail::shape_str(later->sizes()), " (", rlobj::detail::dtype_str(later->scalar_type()),
                  "); they must match");
      both.set(k, torch::stack({*now, *later}, 0));
    }
    if (next_value_network_) {
      TensorDict now = both.index({0});
      TensorDict later = both.index({1});
      torch::Tensor value = run_value_network(now);
      torch::Tensor next_value = run_value_network(later, next_value_network_);
      return {value, next_value.detach()};
    }
    torch::Tensor v = run_value_network(both);
    TORCH_CHECK(v.dim() >= 1 && v.size(0) == 2, name_, ": the value network's output has shape ",
                rlobj::detail::shape_str(v.sizes()), "; expected the stacked pair's leading dim 2");
    return {v[0], v[1].detach()};
  }

  /// The validated transition and the next value (computed by the network when not given).
  Transition transition_and_next_value(TensorDict& td, torch::Tensor* next_value) const {
    Transition t = read_transition(td);
    if (!next_value->defined()) *next_value = this->next_value(td);
    check_value_shape(*next_value, t.reward);
    return t;
  }

  /// Throws unless the next value has exactly the reward's shape.
  void check_value_shape(const torch::Tensor& next_value, const torch::Tensor& reward) const {
    TORCH_CHECK(next_value.sizes() == reward.sizes(), name_, ": the value \"", keys_.value.str(),
                "\" has shape ", rlobj::detail::shape_str(next_value.sizes()), " but the reward \"next.",
                keys_.reward.str(), "\" has shape ", rlobj::detail::shape_str(reward.sizes()),
                "; they must match exactly");
  }

  /// The estimator's TorchRL class name (`name()`).
  const char* name_;
  /// The value network (`set_value_network`); null when the loss passes the values.
  ValueNetwork value_network_;
  /// The next states' network (`set_next_value_network`); null: `value_network_`.
  ValueNetwork next_value_network_;
  /// The entries `forward` stacks for the value network (`value_network_in_keys()`).
  std::vector<NestedKey> value_in_keys_;
  /// The hyper-parameters (`options()`).
  ValueEstimatorOptions options_;
  /// `lmbda`, rounded to float32 as TorchRL's buffer is.
  double lmbda_ = 0.95;
  /// The keys (`tensor_keys()`, renamed by `set_keys`).
  ValueEstimatorKeys keys_;
  /// The discount, a 0-dim float32 tensor (`gamma()`).
  torch::Tensor gamma_;
};

/// One-step bootstrapped TD target: ``r + gamma * (!terminated) * V(s')``.
class TD0Estimator : public ValueEstimatorBase {
 public:
  /// `value_network`: see `ValueEstimatorBase` (null when the loss passes the values);
  /// `in_keys`: see `set_value_network`. Throws `c10::ValueError` unless gamma and lmbda are in
  /// [0, 1].
  explicit TD0Estimator(ValueNetwork value_network, ValueEstimatorOptions options = {},
                std::vector<NestedKey> in_keys = {})
      : ValueEstimatorBase("TD0Estimator", std::move(value_network), options, std::move(in_keys)) {}

  torch::Tensor value_estimate(TensorDict td, torch::Tensor next_value = {}) override {
    Transition t = transition_and_next_value(td, &next_value);
    torch::Tensor gamma = gamma_.device() == t.reward.device() ? gamma_ : gamma_.to(t.reward.device());
    if (const torch::Tensor* steps = td.find(keys_.steps_to_next_obs)) {
      TORCH_CHECK_VALUE(steps->numel() == t.reward.numel() && steps->device() == t.reward.device(), name_, ": \"",
                        keys_.steps_to_next_obs.str(), "\" has shape ", rlobj::detail::shape_str(steps->sizes()),
                        " on ", steps->device().str(), ", expected one count per reward (",
                        rlobj::detail::shape_str(t.reward.sizes()), ") on ", t.reward.device().str());
      TORCH_CHECK_TYPE(at::isIntegralType(steps->scalar_type(), /*includeBool=*/false), name_, ": \"",
                       keys_.steps_to_next_obs.str(), "\" must hold integer step counts, got ",
                       rlobj::detail::dtype_str(steps->scalar_type()));
      gamma = gamma.pow(steps->view_as(t.reward));
    }
    return commit(td, t, td0_return_estimate(gamma, next_value, t.reward, t.terminated));
  }
};

/// TD(1): discounted Monte-Carlo return over the time dim, bootstrapped at truncation.
class TD1Estimator : public ValueEstimatorBase {
 public:
  /// `value_network`: see `ValueEstimatorBase` (null when the loss passes the values);
  /// `in_keys`: see `set_value_network`. Throws `c10::ValueError` unless gamma and lmbda are in
  /// [0, 1].
  explicit TD1Estimator(ValueNetwork value_network, ValueEstimatorOptions options = {},
                std::vector<NestedKey> in_keys = {})
      : ValueEstimatorBase("TD1Estimator", std::move(value_network), options, std::move(in_keys)) {}

  torch::Tensor value_estimate(TensorDict td, torch::Tensor next_value = {}) override {
    Transition t = transition_and_next_value(td, &next_value);
    return commit(td, t, td1_return_estimate(gamma_.item<double>(), next_value, t.reward, t.done, t.terminated));
  }
};

/// TD(lambda) return over the time dim.
class TDLambdaEstimator : public ValueEstimatorBase {
 public:
  /// `value_network`: see `ValueEstimatorBase` (null when the loss passes the values);
  /// `in_keys`: see `set_value_network`. Throws `c10::ValueError` unless gamma and lmbda are in
  /// [0, 1].
  explicit TDLambdaEstimator(ValueNetwork value_network, ValueEstimatorOptions options = {},
                std::vector<NestedKey> in_keys = {})
      : ValueEstimatorBase("TDLambdaEstimator", std::move(value_network), options, std::move(in_keys)) {}

  torch::Tensor value_estimate(TensorDict td, torch::Tensor next_value = {}) override {
    Transition t = transition_and_next_value(td, &next_value);
    return commit(td, t, td_lambda_return_estimate(gamma_.item<double>(), lmbda_, next_value, t.reward,
                                                   t.done, t.terminated));
  }
};

/// Generalized advantage estimation; `forward` writes `advantage` (standardised with
/// `average_gae`) and `value_target`.
class GAE : public ValueEstimatorBase {
 public:
  /// `value_network`: see `ValueEstimatorBase` (`value_estimate` runs it on `td` too);
  /// `in_keys`: see `set_value_network`. Throws `c10::ValueError` unless gamma and lmbda are in
  /// [0, 1].
  explicit GAE(ValueNetwork value_network, ValueEstimatorOptions options = {},
                std::vector<NestedKey> in_keys = {})
      : ValueEstimatorBase("GAE", std::move(value_network), options, std::move(in_keys)) {}

  TensorDict forward(TensorDict td) override {
    return restoring_reward(td, [&] {
      auto [value, next_value] = values(td);
      Transition t = read_transition(td);
      check_value_shape(next_value, t.reward);
      auto [advantage, target] = generalized_advantage_estimate(
          gamma_.item<double>(), lmbda_, value, next_value, t.reward, t.done, t.terminated);
      if (options_.average_gae()) {
        // TorchRL 0.4: scale clamped at 1e-4.
        advantage = (advantage - advantage.mean()) / advantage.std().clamp_min(1e-4);
      }
      commit(td, t, {});
      write_targets(td, advantage, target, value, next_value);
    });
  }

  /// GAE's value target needs the state values too: the value network is run on `td`.
  torch::Tensor value_estimate(TensorDict td, torch::Tensor next_value = {}) override {
    torch::Tensor value;
    if (next_value.defined()) {
      value = run_value_network(td.copy());
    } else {
      std::tie(value, next_value) = values(td);
    }
    Transition t = transition_and_next_value(td, &next_value);
    return commit(td, t, std::get<1>(generalized_advantage_estimate(gamma_.item<double>(), lmbda_, value,
                                                                    next_value, t.reward, t.done, t.terminated)));
  }
};

}  // namespace value
}  // namespace objectives
}  // namespace rlobj
