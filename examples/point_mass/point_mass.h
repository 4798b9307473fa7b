#pragma once

// PointMass: a batched 1-D point mass pushed by a bounded force, written against rlobj's
// `EnvBase` (docs/environments.md, "Writing your own environment").
//
//   observation  float32 [*batch, 2]: position x and velocity v
//   action       float32 [*batch, 1]: a force u in [-1, 1] (clipped to it for the dynamics)
//   dynamics     unit mass, semi-implicit Euler: v' = v + u dt, x' = x + v' dt (dt = 0.05)
//   reward       -(x^2 + 0.1 v^2 + 0.001 u^2), on the state before the step and the clipped force
//   episode      never terminates; truncated (and done) on step 200
//   reset        x and v drawn from U(-1, 1) with the environment's seeded generator
//
//   auto env = point_mass::PointMass(point_mass::PointMassOptions().batch_size({16}).seed(0));
//   rlobj::TensorDict rollout = env.rollout(/*max_steps=*/200);   // batch_size [16, 200]

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <rlobj/envs/common.h>
#include <rlobj/specs.h>
#include <rlobj/tensordict.h>

namespace point_mass {

/// Options of `PointMass`.
struct PointMassOptions {
  /// Number of point masses, as batch dims (`{}`: one, unbatched; `{16}`: 16).
  TORCH_ARG(std::vector<int64_t>, batch_size) = {};
  /// The step that reaches it is `truncated` and `done`; 0 means no limit.
  TORCH_ARG(int64_t, max_episode_steps) = 200;
  /// Seed of the generator used for resets and random actions.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Device of every tensor the environment reads and writes.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Seconds per step.
  TORCH_ARG(double, dt) = 0.05;
};

/// A batched 1-D point mass (see the comment at the top of this file).
class PointMass : public rlobj::envs::EnvBase {
 public:
  /// Checks the options (`c10::ValueError` naming the option) and fills the specs.
  explicit PointMass(PointMassOptions options = {})
      : rlobj::envs::EnvBase(options.batch_size(), options.device(), options.seed()),
        options_(std::move(options)) {
    TORCH_CHECK_VALUE(options_.max_episode_steps() >= 0, "PointMassOptions: max_episode_steps must be >= 0, got ",
                      options_.max_episode_steps());
    TORCH_CHECK_VALUE(std::isfinite(options_.dt()) && options_.dt() > 0,
                      "PointMassOptions: dt must be finite and positive, got ", options_.dt());
    for (int64_t s : batch_size_) {
      TORCH_CHECK_VALUE(s > 0, "PointMassOptions: batch_size dims must be positive, got ",
                        c10::IntArrayRef(batch_size_));
    }
    obs_shape_ = batch_size_;
    obs_shape_.push_back(2);

    // Specs include the batch dims, as in TorchRL: build each for one environment, then
    // expand it. EnvBase's constructor has already put "is_init" into observation_spec_.
    const torch::Device dev = device_;
    const double max_count = static_cast<double>(std::numeric_limits<int32_t>::max());
    observation_spec_.set("observation", rlobj::Unbounded({2}, torch::kFloat32, dev).expand(batch_size_))
        .set("step_count", rlobj::Bounded(0, max_count, {1}, torch::kInt64, dev).expand(batch_size_));
    action_spec_ = rlobj::Bounded(-1.0, 1.0, {1}, torch::kFloat32, dev).expand(batch_size_);
    reward_spec_ = rlobj::Unbounded({1}, torch::kFloat32, dev).expand(batch_size_);
    for (const char* k : {"done", "terminated", "truncated"}) {
      done_spec_.set(k, rlobj::Categorical(2, {1}, torch::kBool, dev).expand(batch_size_));
    }
  }

  /// The options the environment was built with.
  const PointMassOptions& options() const noexcept { return options_; }
  /// `"PointMass"`, in error messages.
  const char* name() const override { return "PointMass"; }

 protected:
  /// The root of a new episode: `observation`, `step_count` and the three done flags, all
  /// `[*batch, ...]`. With a `"_reset"` mask only the masked rows restart; the other rows keep
  /// `td`'s entries. EnvBase adds `is_init` and carries over the other entries of `td`.
  rlobj::TensorDict reset_impl(const rlobj::TensorDict* td) override {
    static const char* const kFlags[3] = {"done", "terminated", "truncated"};
    const torch::Tensor mask = reset_mask(td);  // bool [*batch, 1], checked by EnvBase; or undefined
    // A partial reset keeps the unmasked rows: check everything it keeps before drawing, so
    // that a rejected reset leaves the generator (and everything else) as it was.
    torch::Tensor kept_obs, kept_count, kept_flags[3];
    if (mask.defined()) {
      kept_obs = checked(*td, "observation", torch::kFloat32, obs_shape_, "reset");
      kept_count = checked(*td, "step_count", torch::kInt64, flag_shape_, "reset");
      for (int i = 0; i < 3; ++i) {
        if (td->contains(kFlags[i])) kept_flags[i] = checked(*td, kFlags[i], torch::kBool, flag_shape_, "reset");
      }
    }
    // Drawn on the environment's CPU generator whatever the device, then moved: a seed gives
    // the same start states on every device.
    torch::Tensor obs =
        (torch::rand(obs_shape_, generator_, torch::TensorOptions().dtype(torch::kFloat32)) * 2 - 1).to(device_);
    torch::Tensor step_count = torch::zeros(flag_shape_, torch::TensorOptions().dtype(torch::kInt64).device(device_));
    const torch::Tensor falses = torch::zeros(flag_shape_, torch::TensorOptions().dtype(torch::kBool).device(device_));
    torch::Tensor flags[3] = {falses, falses, falses};
    if (mask.defined()) {
      obs = torch::where(mask, obs, kept_obs);  // the [*batch, 1] mask broadcasts over [*batch, 2]
      step_count = torch::where(mask, step_count, kept_count);
      for (int i = 0; i < 3; ++i) {
        if (kept_flags[i].defined()) flags[i] = torch::where(mask, falses, kept_flags[i]);
      }
    }
    rlobj::TensorDict out(batch_size_);
    out.set("observation", obs);
    out.set("step_count", step_count);
    for (int i = 0; i < 3; ++i) out.set(kFlags[i], flags[i]);
    return out;
  }

  /// The `"next"` entries of one step from the root `td`: `observation`, `step_count`,
  /// `reward`, `done`, `terminated`, `truncated`. New tensors only; `td` is not modified.
  /// EnvBase adds `is_init` (false) and writes the result under `td["next"]`.
  rlobj::TensorDict step_impl(const rlobj::TensorDict& td) override {
    // Every check runs before anything is computed.
    const torch::Tensor action = checked(td, "action", torch::kFloat32, flag_shape_, "step");
    const torch::Tensor obs = checked(td, "observation", torch::kFloat32, obs_shape_, "step");
    const torch::Tensor count = checked(td, "step_count", torch::kInt64, flag_shape_, "step");
    TORCH_CHECK_VALUE(!action.isnan().any().item<bool>(), "PointMass.step: \"action\" contains NaN");

    const double dt = options_.dt();
    const torch::Tensor u = action.clamp(-1.0, 1.0);
    const torch::Tensor x = obs.narrow(-1, 0, 1);  // [*batch, 1]
    const torch::Tensor v = obs.narrow(-1, 1, 1);  // [*batch, 1]
    const torch::Tensor reward = -(x * x + 0.1 * (v * v) + 0.001 * (u * u));
    const torch::Tensor v_next = v + u * dt;  // unit mass: the force is the acceleration
    const torch::Tensor x_next = x + v_next * dt;

    const torch::Tensor step_count = count + 1;
    const torch::Tensor truncated = options_.max_episode_steps() > 0
                                        ? step_count >= options_.max_episode_steps()
                                        : torch::zeros_like(step_count, torch::kBool);
    const torch::Tensor terminated = torch::zeros_like(truncated);

    rlobj::TensorDict next(batch_size_);
    next.set("observation", torch::cat({x_next, v_next}, -1));
    next.set("step_count", step_count);
    next.set("reward", reward);
    next.set("done", terminated | truncated);
    next.set("terminated", terminated);
    next.set("truncated", truncated);
    return next;
  }

 private:
  /// `td[key]`, checked: present, of `dtype`, of exactly `shape`, on the environment's device.
  torch::Tensor checked(const rlobj::TensorDict& td, const char* key, torch::Dtype dtype,
                        const std::vector<int64_t>& shape, const char* where) const {
    const torch::Tensor* t = td.find(key);
    TORCH_CHECK_VALUE(t != nullptr, "PointMass.", where, ": the TensorDict has no \"", key,
                      "\"; use a TensorDict made by reset() or step_mdp()");
    TORCH_CHECK_TYPE(t->scalar_type() == dtype, "PointMass.", where, ": \"", key, "\" has dtype ",
                     t->scalar_type(), ", expected ", dtype);
    TORCH_CHECK_VALUE(t->sizes() == c10::IntArrayRef(shape) && t->device() == device_, "PointMass.", where,
                      ": \"", key, "\" must have shape ", c10::IntArrayRef(shape), " on ", device_, ", got ",
                      t->sizes(), " on ", t->device());
    return *t;
  }

  PointMassOptions options_;
  std::vector<int64_t> obs_shape_;  // [*batch, 2]
};

}  // namespace point_mass
