#pragma once

/// \file
/// `EnvBase`, `step_mdp` and `rollout`: TorchRL's environment conventions (>= 0.4 / main).
///
/// * `reset()` returns the root entries of a new episode (observations, state, done flags).
/// * `step(td)` reads the action from `td` and writes the environment's output under
///   `td["next"]` (observation, reward, done, terminated, truncated, state), returning `td`.
/// * `step_mdp(td)` builds the next root from `td["next"]` (reward excluded).
/// * `rollout(max_steps, policy)` stacks the steps on a new last batch dim.
/// * Every environment tracks episode starts as TorchRL's `InitTracker` transform does: the
///   bool entry `is_init` (`[*batch, 1]`) is true in a root produced by a reset (for the
///   sub-environments that were reset) and false after a step. Exploration modules use it to
///   reset their per-environment noise.
/// * What a subclass's `reset_impl`/`step_impl` return is checked against its specs on every
///   call (keys, shapes, dtypes, devices; values with `set_check_values(true)`), and a partial
///   reset that changes a sub-environment outside `"_reset"` is refused: a user's environment
///   that breaks its contract fails at the step that broke it, naming the key.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/detail/format.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace envs {

/// Options of `step_mdp`, with TorchRL's names and defaults.
struct StepMdpOptions {
  /// Keep the root keys other than `"next"` (they are overwritten by `next`'s entries).
  TORCH_ARG(bool, keep_other) = true;
  /// Leave the reward out of the new root.
  TORCH_ARG(bool, exclude_reward) = true;
  /// Leave `done`, `terminated` and `truncated` out of the new root.
  TORCH_ARG(bool, exclude_done) = false;
  /// Leave the action out of the new root.
  TORCH_ARG(bool, exclude_action) = true;
};

/// The root of the next step: the contents of `td["next"]` (minus the reward), plus, with
/// `keep_other`, the other root entries. A new TensorDict; `td` is left alone.
inline TensorDict step_mdp(const TensorDict& td, const StepMdpOptions& options = {}) {
  TORCH_CHECK(td.contains("next"), "step_mdp: the TensorDict has no \"next\" entry; call "
              "env.step(td) first");
  static const std::vector<std::string> kDoneKeys = {"done", "terminated", "truncated"};
  auto is_done_key = [](const std::string& k) {
    return std::find(kDoneKeys.begin(), kDoneKeys.end(), k) != kDoneKeys.end();
  };
  TensorDict out(td.batch_size(), td.device());
  for (const auto& item : td.items()) {
    const std::string& k = item.first.leaf();
    if (k == "next") continue;
    const bool is_action = k == "action";
    if (is_action ? options.exclude_action() : !options.keep_other()) continue;
    if (options.exclude_done() && is_done_key(k)) continue;
    if (item.second.is_tensor()) {
      out.set(k, item.second.tensor());
    } else {
      out.set(k, item.second.tensordict());
    }
  }
  TensorDict next = td.get_sub("next");
  for (const auto& item : next.items()) {
    const std::string& k = item.first.leaf();
    if (options.exclude_reward() && k == "reward") continue;
    if (options.exclude_done() && is_done_key(k)) continue;
    if (item.second.is_tensor()) {
      out.set(k, item.second.tensor());
    } else {
      out.set(k, item.second.tensordict());
    }
  }
  return out;
}

namespace detail {

/// Calls a policy on `td` as TorchRL does (`td.update(policy(td))`): a policy may write into
/// `td` and return it (a module holder), return another TensorDict (merged in), or return
/// nothing (a lambda).
template <typename Policy>
TensorDict apply_policy(Policy& policy, TensorDict td) {
  static_assert(std::is_invocable<Policy&, TensorDict&>::value, "a policy must be callable on a TensorDict&");
  using R = decltype(policy(td));
  if constexpr (std::is_convertible<R, TensorDict>::value) {
    TensorDict out = policy(td);
    if (!out.is_same(td)) td.update(out);
  } else {
    policy(td);
  }
  return td;
}

/// `mask` (`[*batch, 1]`) viewed so that it broadcasts over `value`'s trailing dims.
inline torch::Tensor rows_mask(const torch::Tensor& mask, const torch::Tensor& value) {
  std::vector<int64_t> shape = mask.sizes().vec();
  shape.pop_back();
  shape.resize(static_cast<size_t>(value.dim()), 1);
  return mask.view(shape);
}

}  // namespace detail

/// Options of `EnvBase::rollout`, with TorchRL's names and defaults.
struct RolloutOptions {
  /// Start with `reset()`; else start from `tensordict`.
  TORCH_ARG(bool, auto_reset) = true;
  /// Stop after the first step in which any sub-environment is done (that step included).
  TORCH_ARG(bool, break_when_any_done) = true;
  /// With `break_when_any_done=false`: stop once every sub-environment has been done once;
  /// the entries of a sub-environment after its done step repeat its last step (TorchRL
  /// main's behaviour). Without it, done sub-environments are reset and go on.
  TORCH_ARG(bool, break_when_all_done) = false;
  /// The starting root when `auto_reset` is false.
  TORCH_ARG(std::optional<TensorDict>, tensordict) = std::nullopt;
  /// Mark the last step as truncated (`next.truncated` and `next.done` set on the last step).
  TORCH_ARG(bool, set_truncated) = false;
};

/// Base class of environments, with TorchRL's `EnvBase` interface. Subclasses implement
/// `reset_impl` and `step_impl` and fill the specs.
class EnvBase {
 public:
  virtual ~EnvBase() = default;

  /// A new episode for every sub-environment: observations, state and false done flags.
  TensorDict reset() { return checked_reset(nullptr); }
  /// A reset guided by `td`: with a boolean `"_reset"` entry (`[*batch, 1]`), only those
  /// sub-environments restart and the others keep `td`'s entries; subclasses may also read a
  /// starting state from `td` (see each environment).
  TensorDict reset(const TensorDict& td) { return checked_reset(&td); }

  /// Reads `td["action"]`, writes the environment's output under `td["next"]`, returns `td`.
  /// Throws a `c10::Error` naming the key when what the subclass's `step_impl` returned does
  /// not keep to the specs (see `set_check_values`).
  TensorDict step(TensorDict td) {
    check_specs_set();
    TORCH_CHECK(td.batch_size() == batch_size_, name(), ".step: the TensorDict has batch_size ",
                rlobj::detail::shape_str(td.batch_size()), " but the environment has ",
                rlobj::detail::shape_str(batch_size_));
    TensorDict next = step_impl(td);
    check_output(next, /*next=*/true);
    next.set("is_init", torch::zeros(flag_shape_, torch::TensorOptions().dtype(torch::kBool).device(device_)));
    // A TensorDict with a device holds only sub-TensorDicts with that device.
    if (td.device() && next.device() != td.device()) next = next.to(*td.device());
    td.set("next", next);
    return td;
  }

  /// `step`, then the next root; sub-environments that are done are reset in that root
  /// (TorchRL's `step_and_maybe_reset`). Returns `(td with "next", next root)`.
  std::pair<TensorDict, TensorDict> step_and_maybe_reset(TensorDict td) {
    td = step(td);
    TensorDict root = step_mdp(td, StepMdpOptions().exclude_action(false));
    torch::Tensor done = root.get("done");
    if (done.any().item<bool>()) {
      root.set("_reset", done);
      root = reset(root);
    }
    return {td, root};
  }

  /// Writes a random action drawn from `action_spec()` with the environment's generator.
  TensorDict rand_action(TensorDict td) {
    td.set("action", action_spec().rand({}, generator()));
    return td;
  }

  /// Runs `policy` (anything callable on a TensorDict: a module holder, a lambda) for up to
  /// `max_steps` steps and stacks them on a new last batch dim (`[*batch_size, T]`), in
  /// TorchRL's layout: the root holds the entries at t, `"next"` those at t+1. The policy runs
  /// under `torch::NoGradGuard`.
  template <typename Policy,
            typename = std::enable_if_t<std::is_invocable<Policy&, TensorDict&>::value>>
  TensorDict rollout(int64_t max_steps, Policy&& policy, const RolloutOptions& options = {}) {
    return rollout_impl(max_steps, [&](TensorDict td) { return call_policy(policy, std::move(td)); },
                        options);
  }
  /// A rollout of random actions from `action_spec()`.
  TensorDict rollout(int64_t max_steps, const RolloutOptions& options = {}) {
    return rollout_impl(max_steps, [&](TensorDict td) { return rand_action(std::move(td)); },
                        options);
  }

  /// What `reset` and `step` check of what the subclass's `reset_impl`/`step_impl` return. Always:
  /// the keys are exactly the spec'd ones (a reset: `observation_spec()` but `is_init`, and
  /// `done_spec()`; a step: those and `"reward"`), and each entry has its spec's shape (batch
  /// dims included, no broadcasting), dtype and device; a partial reset left every
  /// sub-environment outside `"_reset"` as it was. With `on`, also the values: each lies in its
  /// spec's range and a step's `done` is `terminated | truncated` (a pass over the data: for
  /// developing an environment, or in its tests). Off by default.
  void set_check_values(bool on) noexcept { check_values_ = on; }
  /// True if `reset` and `step` check the values too (`set_check_values`).
  bool check_values() const noexcept { return check_values_; }

  /// Reseeds the environment's generator (resets and random actions).
  virtual void set_seed(uint64_t seed) { generator().set_current_seed(seed); }
  /// The generator used for resets and random actions (its state can be saved with
  /// `generator().get_state()`). A wrapper (`TransformedEnv`) returns its base's.
  virtual at::Generator& generator() noexcept { return generator_; }

  /// Specs of the root entries a reset or a step writes (observations, state, `step_count`,
  /// `is_init`), batch dims included.
  const Composite& observation_spec() const noexcept { return observation_spec_; }
  /// Spec of `"action"`, batch dims included; `rand_action` draws from it. Throws
  /// `c10::Error` when the subclass never set `action_spec_`.
  const TensorSpec& action_spec() const {
    TORCH_CHECK(action_spec_ != nullptr, name(),
                ": the action spec was never set (the environment's constructor must set action_spec_)");
    return *action_spec_;
  }
  /// Spec of `("next", "reward")`, batch dims included. Throws `c10::Error` when the subclass
  /// never set `reward_spec_`.
  const TensorSpec& reward_spec() const {
    TORCH_CHECK(reward_spec_ != nullptr, name(),
                ": the reward spec was never set (the environment's constructor must set reward_spec_)");
    return *reward_spec_;
  }
  /// Specs of `done`, `terminated` and `truncated` (bool `[*batch, 1]`).
  const Composite& done_spec() const noexcept { return done_spec_; }
  /// The environment's batch dims (`[]`: a single environment).
  const TensorDict::BatchSize& batch_size() const noexcept { return batch_size_; }
  /// The device of every tensor the environment reads and writes.
  torch::Device device() const noexcept { return device_; }
  /// The environment's name in error messages.
  virtual const char* name() const { return "EnvBase"; }

 protected:
  /// For subclasses: sets the batch dims, the device and the seed of the CPU generator, and
  /// adds `is_init` to `observation_spec_`; the subclass's constructor then fills the specs.
  EnvBase(TensorDict::BatchSize batch_size, torch::Device device, uint64_t seed)
      : batch_size_(std::move(batch_size)),
        flag_shape_(with_trailing_one(batch_size_)),
        device_(device),
        generator_(at::make_generator<at::CPUGeneratorImpl>(seed)),
        observation_spec_(batch_size_),
        done_spec_(batch_size_) {
    observation_spec_.set("is_init", Categorical(2, {1}, torch::kBool, device_).expand(batch_size_));
  }

  /// The root entries after a reset; `td` is the guiding TensorDict or nullptr.
  virtual TensorDict reset_impl(const TensorDict* td) = 0;
  /// The `"next"` entries of a step from `td`.
  virtual TensorDict step_impl(const TensorDict& td) = 0;

  /// Keys of a guiding TensorDict that `reset_impl` consumes (a start state a stateful
  /// environment loads): they are not carried into the new root, so that later resets do not
  /// see them again. Default: none.
  virtual bool consumed_by_reset(const std::string& key) const {
    (void)key;
    return false;
  }

  /// The `[*batch_size, 1]` `"_reset"` mask of `td`, validated, or an undefined tensor.
  torch::Tensor reset_mask(const TensorDict* td) const {
    if (td == nullptr) return {};
    const torch::Tensor* mask = td->find("_reset");
    if (mask == nullptr) return {};
    TORCH_CHECK(mask->scalar_type() == torch::kBool && mask->sizes() == c10::IntArrayRef(flag_shape_) &&
                    mask->device() == device_,
                name(), ".reset: \"_reset\" must be a bool tensor of shape ", rlobj::detail::shape_str(flag_shape_),
                " on ", device_.str(), ", got ", rlobj::detail::dtype_str(mask->scalar_type()), " ",
                rlobj::detail::shape_str(mask->sizes()), " on ", mask->device().str());
    return *mask;
  }

  /// The batch dims; every entry a subclass writes starts with them.
  TensorDict::BatchSize batch_size_;
  /// `[*batch_size, 1]`: the shape of done flags, rewards and per-environment scalars.
  std::vector<int64_t> flag_shape_;
  /// The device of every tensor the environment writes.
  torch::Device device_;
  /// CPU generator of resets and random actions (seeded by the constructor and `set_seed`).
  at::Generator generator_;
  /// Filled by the subclass: the root entries its resets and steps write (`is_init` is already set).
  Composite observation_spec_;
  /// Set by the subclass: the action's spec, batch dims included.
  std::shared_ptr<const TensorSpec> action_spec_;
  /// Set by the subclass: the reward's spec, batch dims included.
  std::shared_ptr<const TensorSpec> reward_spec_;
  /// Filled by the subclass: `done`, `terminated` and `truncated`, bool `[*batch, 1]`.
  Composite done_spec_;

 private:
  /// Refuses specs a subclass's constructor left unset or malformed, on the first `reset` or
  /// `step` (before anything runs: `EnvBase`'s constructor runs before the subclass fills them,
  /// so it cannot check them itself).
  void check_specs_set() {
    if (specs_checked_) return;
    const TensorSpec& action = action_spec();
    const TensorSpec& reward = reward_spec();
    TORCH_CHECK(rlobj::detail::starts_with(action.shape(), batch_size_), name(), ": the action spec has shape ",
                rlobj::detail::shape_str(action.shape()), ", which does not start with the batch dims ",
                rlobj::detail::shape_str(batch_size_), " (build it for one environment and .expand(batch_size_))");
    TORCH_CHECK(reward.shape() == flag_shape_, name(), ": the reward spec has shape ",
                rlobj::detail::shape_str(reward.shape()), ", expected ", rlobj::detail::shape_str(flag_shape_),
                " ([*batch, 1])");
    for (const char* k : {"done", "terminated", "truncated"}) {
      TORCH_CHECK(done_spec_.contains(k), name(), ": done_spec_ has no \"", k,
                  "\" (the constructor must set done, terminated and truncated, each Categorical(2, {1}, "
                  "torch::kBool) expanded to the batch dims)");
      const TensorSpec& spec = done_spec_.at(k);
      TORCH_CHECK(spec.dtype() == torch::kBool && spec.shape() == flag_shape_, name(), ": the spec of \"", k,
                  "\" is ", spec.repr(), " of shape ", rlobj::detail::shape_str(spec.shape()), ", expected bool ",
                  rlobj::detail::shape_str(flag_shape_));
    }
    if (done_spec_.keys().size() != 3) {
      const std::vector<std::string> keys = done_spec_.keys();
      TORCH_CHECK(false, name(), ": done_spec_ holds ", rlobj::detail::keys_str(std::vector<NestedKey>(keys.begin(), keys.end())),
                  "; expected exactly done, terminated, truncated");
    }
    TORCH_CHECK(observation_spec_.keys().size() > 1, name(),
                ": observation_spec_ holds only \"is_init\": the constructor must set the entries its resets "
                "and steps write (observations, state)");
    // What check_output holds reset_impl's and step_impl's results to, listed once.
    output_specs_.clear();
    for (const auto& k : observation_spec_.keys()) {
      if (k != "is_init") output_specs_.emplace_back(k, observation_spec_.ptr(k));
    }
    for (const auto& k : done_spec_.keys()) output_specs_.emplace_back(k, done_spec_.ptr(k));
    output_specs_.emplace_back("reward", reward_spec_);  // last: a step's only
    specs_checked_ = true;
  }

  /// What `reset_impl` (`next` false) or `step_impl` (`next` true) returned, against the specs.
  void check_output(const TensorDict& out, bool next) const {
    const char* where = next ? ".step" : ".reset";
    // A reset writes no reward (the last entry).
    const c10::ArrayRef<std::pair<std::string, std::shared_ptr<const TensorSpec>>> specs(
        output_specs_.data(), next ? output_specs_.size() : output_specs_.size() - 1);
    std::vector<NestedKey> missing, extra;
    for (const auto& kv : specs) {
      if (out.find(kv.first) == nullptr) missing.emplace_back(kv.first);
    }
    if (missing.empty() && out.size() == specs.size() && out.batch_size() == batch_size_) {
      // the common case: every key there, nothing else
    } else {
      for (const auto& k : out.keys()) {
        const bool known = std::any_of(specs.begin(), specs.end(), [&](const auto& kv) { return k == kv.first; });
        if (!known) extra.push_back(k);
      }
      TORCH_CHECK(missing.empty() && extra.empty(), name(), where, ": the ", next ? "step" : "reset",
                  " wrote other keys than its specs say: spec'd but not written: ", rlobj::detail::keys_str(missing),
                  "; written but not spec'd: ", rlobj::detail::keys_str(extra),
                  " (docs/environments.md, \"Writing your own environment\")");
      TORCH_CHECK(out.batch_size() == batch_size_, name(), where, ": returned a TensorDict of batch_size ",
                  rlobj::detail::shape_str(out.batch_size()), ", expected ", rlobj::detail::shape_str(batch_size_));
    }
    for (const auto& kv : specs) {
      const torch::Tensor& value = *out.find(kv.first);
      const TensorSpec& spec = *kv.second;
      TORCH_CHECK(value.sizes() == c10::IntArrayRef(spec.shape()) && value.scalar_type() == spec.dtype() &&
                      value.device() == spec.device(),
                  name(), where, ": \"", kv.first, "\" is ", rlobj::detail::dtype_str(value.scalar_type()), " ",
                  rlobj::detail::shape_str(value.sizes()), " on ", value.device().str(), "; its spec is ",
                  spec.repr(), " of shape ", rlobj::detail::shape_str(spec.shape()));
      if (check_values_) {
        TORCH_CHECK(spec.is_in(value), name(), where, ": \"", kv.first, "\" lies outside its spec ", spec.repr());
      }
    }
    if (check_values_ && next) {
      TORCH_CHECK(out.get("done").equal(out.get("terminated") | out.get("truncated")), name(), where,
                  ": \"done\" is not terminated | truncated");
    }
  }

  /// A partial reset restarts only the masked rows: every spec'd entry of the other rows keeps
  /// its value in `td` (where `td` has it, with the same shape and dtype).
  void check_partial_reset(const TensorDict& td, const torch::Tensor& mask, const TensorDict& out) const {
    const torch::Tensor keep = mask.logical_not();
    for (const auto& k : observation_spec_.keys()) {
      if (k == "is_init") continue;
      const torch::Tensor* before = td.find(k);
      if (before == nullptr) continue;
      const torch::Tensor& after = out.get(k);
      if (before->sizes() != after.sizes() || before->scalar_type() != after.scalar_type() ||
          before->device() != after.device()) {
        continue;
      }
      // NaN == NaN does not hold; a NaN kept as NaN is kept.
      const torch::Tensor changed =
          after.ne(*before).logical_and(before->eq(*before)).logical_and(detail::rows_mask(keep, after));
      TORCH_CHECK(!changed.any().item<bool>(), name(), ".reset: a partial reset changed \"", k,
                  "\" of sub-environments outside \"_reset\"; reset_impl must restart only the masked rows and keep "
                  "the others' values (torch::where(mask, fresh, kept); docs/environments.md, \"Partial resets\")");
    }
  }

  static std::vector<int64_t> with_trailing_one(std::vector<int64_t> shape) {
    shape.push_back(1);
    return shape;
  }

  TensorDict checked_reset(const TensorDict* td) {
    if (td != nullptr) {
      TORCH_CHECK(td->batch_size() == batch_size_, name(), ".reset: the TensorDict has batch_size ",
                  rlobj::detail::shape_str(td->batch_size()), " but the environment has ",
                  rlobj::detail::shape_str(batch_size_));
    }
    check_specs_set();
    TensorDict out = reset_impl(td);
    check_output(out, /*next=*/false);
    torch::Tensor mask = reset_mask(td);
    if (mask.defined()) check_partial_reset(*td, mask, out);
    out.set("is_init", mask.defined() ? mask.clone()
                                      : torch::ones(flag_shape_, torch::TensorOptions().dtype(torch::kBool).device(device_)));
    if (td != nullptr) {
      // Carry over what the environment does not own (e.g. exploration state), as TorchRL
      // does for partial resets, minus the mask itself and "next".
      for (const auto& item : td->items()) {
        const auto& k = item.first.leaf();
        if (k == "_reset" || k == "next" || out.contains(k) || consumed_by_reset(k)) continue;
        if (item.second.is_tensor()) out.set(k, item.second.tensor());
      }
    }
    return out;
  }

  template <typename Policy>
  static TensorDict call_policy(Policy& policy, TensorDict td) {
    torch::NoGradGuard no_grad;
    return detail::apply_policy(policy, std::move(td));
  }

  static torch::Tensor where_rows(const torch::Tensor& keep_new, const torch::Tensor& a,
                                  const torch::Tensor& b) {
    std::vector<int64_t> shape = keep_new.sizes().vec();
    shape.resize(a.dim(), 1);
    return torch::where(keep_new.view(shape), a, b);
  }

  bool specs_checked_ = false;
  /// Set by check_specs_set: the observation spec's entries but is_init, the done spec's, then the reward's.
  std::vector<std::pair<std::string, std::shared_ptr<const TensorSpec>>> output_specs_;
  bool check_values_ = false;

  template <typename StepFn>
  TensorDict rollout_impl(int64_t max_steps, const StepFn& act, const RolloutOptions& options) {
    TORCH_CHECK_VALUE(max_steps > 0, name(), ".rollout: max_steps must be positive, got ", max_steps);
    TORCH_CHECK_VALUE(!(options.break_when_any_done() && options.break_when_all_done()), name(),
                      ".rollout: break_when_all_done(true) needs break_when_any_done(false) (it is true by "
                      "default); they cannot both be set");
    TensorDict td;
    if (options.auto_reset()) {
      td = reset();
    } else {
      TORCH_CHECK_VALUE(options.tensordict().has_value(), name(),
                        ".rollout: auto_reset=false needs a starting tensordict");
      td = options.tensordict()->copy();
    }
    std::vector<TensorDict> steps;
    steps.reserve(static_cast<size_t>(max_steps));
    torch::Tensor active;  // break_when_all_done: sub-environments not yet done
    for (int64_t i = 0; i < max_steps; ++i) {
      td = act(td);
      const bool last = i == max_steps - 1;
      if (options.break_when_any_done()) {
        td = step(td);
        steps.push_back(td);
        if (last) break;
        td = step_mdp(td, StepMdpOptions().exclude_action(false));
        if (td.get("done").any().item<bool>()) break;
        continue;
      }
      auto stepped = step_and_maybe_reset(td);
      TensorDict record = stepped.first;
      if (options.break_when_all_done()) {
        if (active.defined() && !active.all().item<bool>()) {
          const TensorDict& prev = steps.back();
          TensorDict frozen(record.batch_size(), record.device());
          for (const auto& key : record.keys(true, true)) {
            frozen.set(key, where_rows(active, record.get(key), prev.get(key)));
          }
          record = frozen;
        }
        torch::Tensor done_now = record.get({"next", "done"}).squeeze(-1);
        active = active.defined() ? active & done_now.logical_not() : done_now.logical_not();
      }
      steps.push_back(record);
      if (last) break;
      td = stepped.second;
      if (options.break_when_all_done() && !active.any().item<bool>()) break;
    }
    if (options.set_truncated()) {
      TensorDict& tail = steps.back();
      TensorDict next = tail.get_sub("next").copy();
      next.set("truncated", torch::ones_like(next.get("truncated")));
      next.set("done", torch::ones_like(next.get("done")));
      tail = tail.copy();
      tail.set("next", next);
    }
    return TensorDict::stack(steps, -1);
  }
};

/// TorchRL's `check_env_specs`: steps `env` `steps` times with random actions from a reset (done
/// sub-environments reset and go on, as in `rollout(steps, break_when_any_done=false)`) and
/// checks, after every step, that what the environment wrote is what its specs say: the keys
/// are exactly the spec'd ones (the root: `observation_spec()`, `done_spec()` and `"action"`;
/// `"next"`: `observation_spec()`, `done_spec()` and `"reward"`), and each entry has its spec's
/// shape, dtype and device and lies in its range. Throws a `c10::Error` naming the key, the
/// step and what is wrong (the missing and the extra keys for a key mismatch). Environments'
/// constructors set their specs; this checks that their `reset_impl`/`step_impl` keep to them
/// (run it once in a test of a new environment).
inline void check_env_specs(EnvBase& env, int64_t steps = 3) {
  TORCH_CHECK_VALUE(steps > 0, "check_env_specs: steps must be positive, got ", steps);
  // The specs an entry must meet, by key.
  std::vector<std::pair<NestedKey, std::shared_ptr<const TensorSpec>>> specs;
  for (const std::string& prefix : {std::string(), std::string("next")}) {
    auto key = [&](const std::string& k) { return prefix.empty() ? NestedKey(k) : NestedKey({prefix, k}); };
    for (const auto& k : env.observation_spec().keys()) specs.emplace_back(key(k), env.observation_spec().ptr(k));
    for (const auto& k : env.done_spec().keys()) specs.emplace_back(key(k), env.done_spec().ptr(k));
  }
  specs.emplace_back(NestedKey("action"), env.action_spec().clone());
  specs.emplace_back(NestedKey({"next", "reward"}), env.reward_spec().clone());

  auto check = [&](const TensorDict& td, int64_t t) {
    std::vector<NestedKey> missing, extra;
    for (const auto& kv : specs) {
      if (!td.contains(kv.first)) missing.push_back(kv.first);
    }
    for (const auto& k : td.keys(true, true)) {
      const bool known = std::any_of(specs.begin(), specs.end(), [&](const auto& kv) { return kv.first == k; });
      if (!known) extra.push_back(k);
    }
    TORCH_CHECK(missing.empty() && extra.empty(), "check_env_specs(", env.name(), "): at step ", t,
                " the keys of the specs and of the data differ: spec'd but not written: ",
                rlobj::detail::keys_str(missing), "; written but not spec'd: ", rlobj::detail::keys_str(extra));
    for (const auto& kv : specs) {
      const torch::Tensor& value = td.get(kv.first);
      const std::vector<int64_t>& shape = kv.second->shape();
      TORCH_CHECK(value.sizes() == c10::IntArrayRef(shape) && value.scalar_type() == kv.second->dtype() &&
                      value.device() == kv.second->device(),
                  "check_env_specs(", env.name(), "): \"", kv.first.str(), "\" at step ", t, " is ",
                  rlobj::detail::dtype_str(value.scalar_type()), " ", rlobj::detail::shape_str(value.sizes()), " on ",
                  value.device().str(), "; its spec is ", kv.second->repr(), " of shape ",
                  rlobj::detail::shape_str(shape));
      TORCH_CHECK(kv.second->is_in(value), "check_env_specs(", env.name(), "): \"", kv.first.str(), "\" at step ",
                  t, " is outside its spec ", kv.second->repr());
    }
  };
  TensorDict td = env.reset();
  for (int64_t t = 0; t < steps; ++t) {
    td = env.rand_action(td);
    auto stepped = env.step_and_maybe_reset(td);
    check(stepped.first, t);
    td = stepped.second;
  }
}

}  // namespace envs
}  // namespace rlobj
