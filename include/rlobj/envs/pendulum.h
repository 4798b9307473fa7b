#pragma once

/// \file
/// `rlobj::envs::Pendulum`: gym's `Pendulum-v1`, batched. One object steps `N` pendulums as
/// tensors; the dynamics, reward and reset distribution are gym's, exactly.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/envs/common.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace envs {

/// Options of `Pendulum`. The physical constants default to gym's `Pendulum-v1`.
struct PendulumOptions {
  /// Number of pendulums, as batch dims (`{}`: one, unbatched, like gym; `{64}`: 64).
  TORCH_ARG(std::vector<int64_t>, batch_size) = {};
  /// Episode length: the step that reaches it is `truncated` and `done` (gym's TimeLimit).
  /// 0 means no limit.
  TORCH_ARG(int64_t, max_episode_steps) = 200;
  /// Seed of the generator used for resets and random actions.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Device of every tensor the env reads and writes (resets are drawn on the CPU generator, then moved).
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Floating dtype of observations, actions and rewards (`kFloat32` or `kFloat64`). The
  /// state (`th`, `thdot`) is float64 whatever this is, as in gym, which keeps its state in
  /// float64 and casts the observation to float32.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
  /// `thdot` is clipped to `[-max_speed, max_speed]` (gym's 8).
  TORCH_ARG(double, max_speed) = 8.0;
  /// The action spec is `[-max_torque, max_torque]`; actions are clipped to it (gym's 2).
  TORCH_ARG(double, max_torque) = 2.0;
  /// Seconds per step (gym's 0.05).
  TORCH_ARG(double, dt) = 0.05;
  /// Gravity (gym's 10).
  TORCH_ARG(double, g) = 10.0;
  /// Mass of the pendulum (gym's 1).
  TORCH_ARG(double, m) = 1.0;
  /// Length of the pendulum (gym's 1).
  TORCH_ARG(double, l) = 1.0;
  /// On the CPU, step batches of up to `fused_cpu_max_batch` pendulums with one fused loop
  /// instead of a chain of tensor ops. Both compute gym's formula in float64; the loop has no
  /// per-op overhead (10.8 us a step at N = 1 against 37 us), the ops are vectorized (108 us
  /// at N = 4096 against 235 us), hence the threshold.
  TORCH_ARG(bool, fused_cpu_step) = true;
  /// The largest number of pendulums the fused loop steps; larger batches use the tensor ops.
  TORCH_ARG(int64_t, fused_cpu_max_batch) = 512;
};

/// gym's `Pendulum-v1`, batched, stateless in TorchRL's way: the state lives in the
/// TensorDict as `th` and `thdot` (float64 `[*batch, 1]`, like `reward`), along with
/// `step_count` (int64 `[*batch, 1]`). The dynamics run in float64 as in gym; observations
/// and rewards are cast to the env's dtype.
///
/// * observation `[cos th, sin th, thdot]`; action `[*batch, 1]` in `[-2, 2]` (clipped for the
///   dynamics, as gym does);
/// * reward `-(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)` on the old state and the
///   clipped action; `thdot` clipped to `[-8, 8]`; `th` is not wrapped;
/// * reset draws `th ~ U(-pi, pi)`, `thdot ~ U(-1, 1)`; `reset(td)` with `th` and `thdot` (and
///   no `"_reset"` mask) starts from that state instead;
/// * `terminated` is always false; `truncated` and `done` are true on step
///   `max_episode_steps`.
///
/// ```
/// auto env = rlobj::envs::Pendulum(rlobj::envs::PendulumOptions().batch_size({64}).seed(1));
/// rlobj::TensorDict td = env.reset();
/// td.set("action", torch::zeros({64, 1}));
/// env.step(td);  // td["next"] holds observation, reward, done, ...
/// ```
class Pendulum : public EnvBase {
 public:
  /// Checks the options (`c10::ValueError` naming the option) and builds the specs.
  explicit Pendulum(PendulumOptions options = {})
      : EnvBase(options.batch_size(), options.device(), options.seed()), options_(std::move(options)) {
    TORCH_CHECK_VALUE(options_.dtype() == torch::kFloat32 || options_.dtype() == torch::kFloat64,
                      "PendulumOptions: dtype must be float32 or float64, got ",
                      rlobj::detail::dtype_str(options_.dtype()));
    TORCH_CHECK_VALUE(options_.max_episode_steps() >= 0,
                      "PendulumOptions: max_episode_steps must be >= 0, got ",
                      options_.max_episode_steps());
    const std::pair<const char*, double> positive[] = {{"dt", options_.dt()},
                                                        {"m", options_.m()},
                                                        {"l", options_.l()},
                                                        {"max_speed", options_.max_speed()},
                                                        {"max_torque", options_.max_torque()}};
    for (const auto& [name, v] : positive) {
      TORCH_CHECK_VALUE(std::isfinite(v) && v > 0, "PendulumOptions: ", name, " must be finite and positive, got ", v);
    }
    TORCH_CHECK_VALUE(std::isfinite(options_.g()), "PendulumOptions: g must be finite, got ", options_.g());
    TORCH_CHECK_VALUE(options_.fused_cpu_max_batch() >= 0, "PendulumOptions: fused_cpu_max_batch must be >= 0, got ",
                      options_.fused_cpu_max_batch());
    for (auto s : batch_size_) {
      TORCH_CHECK_VALUE(s > 0, "PendulumOptions: batch_size dims must be positive, got ",
                        rlobj::detail::shape_str(batch_size_));
    }
    const auto dt = options_.dtype();
    const auto dev = options_.device();
    const auto opts = torch::TensorOptions().dtype(dt).device(dev);
    auto obs_high = torch::tensor({1.0, 1.0, options_.max_speed()}, opts);
    observation_spec_.set("observation", Bounded(-obs_high, obs_high).expand(batch_size_))
        .set("th", Unbounded({1}, torch::kFloat64, dev).expand(batch_size_))
        .set("thdot", Bounded(-options_.max_speed(), options_.max_speed(), {1}, torch::kFloat64, dev)
                          .expand(batch_size_))
        .set("step_count", Bounded(0, static_cast<double>(std::max<int64_t>(options_.max_episode_steps(), 1)),
                                   {1}, torch::kInt64, dev)
                               .expand(batch_size_));
    action_spec_ = Bounded(-options_.max_torque(), options_.max_torque(), {1}, dt, dev).expand(batch_size_);
    reward_spec_ = Unbounded({1}, dt, dev).expand(batch_size_);
    for (const char* k : {"done", "terminated", "truncated"}) {
      done_spec_.set(k, Categorical(2, {1}, torch::kBool, dev).expand(batch_size_));
    }
  }

  /// The options the env was built with.
  const PendulumOptions& options() const noexcept { return options_; }
  const char* name() const override { return "Pendulum"; }

 protected:
  TensorDict reset_impl(const TensorDict* td) override {
    const auto state_opts = torch::TensorOptions().dtype(torch::kFloat64).device(device_);
    torch::Tensor mask = reset_mask(td);
    torch::Tensor th, thdot;
    const bool given_state = td != nullptr && !mask.defined() && (td->contains("th") || td->contains("thdot"));
    if (given_state) {
      // A start state: both entries, finite, thdot within gym's [-max_speed, max_speed].
      TORCH_CHECK_VALUE(td->contains("th") && td->contains("thdot"), "Pendulum.reset: got \"",
                        td->contains("th") ? "th" : "thdot", "\" without \"", td->contains("th") ? "thdot" : "th",
                        "\"; a start state needs both");
      th = checked_state(*td, "th", "reset");
      thdot = checked_state(*td, "thdot", "reset");
      TORCH_CHECK_VALUE(th.isfinite().all().item<bool>(), "Pendulum.reset: \"th\" must be finite, got ",
                        th.min().item<double>(), " .. ", th.max().item<double>());
      TORCH_CHECK_VALUE((thdot.abs() <= options_.max_speed()).all().item<bool>(), "Pendulum.reset: \"thdot\" must be "
                        "in [-max_speed, max_speed] = [", -options_.max_speed(), ", ", options_.max_speed(), "], got ",
                        thdot.min().item<double>(), " .. ", thdot.max().item<double>());
    }
    // A partial reset keeps the unmasked pendulums' entries: all of them are checked here,
    // before the generator draws, so that a rejected reset changes nothing.
    torch::Tensor kept_th, kept_thdot;
    const torch::Tensor* kept_flags[4] = {nullptr, nullptr, nullptr, nullptr};
    const char* const flag_names[4] = {"step_count", "done", "terminated", "truncated"};
    if (mask.defined()) {
      kept_th = checked_state(*td, "th", "reset");
      kept_thdot = checked_state(*td, "thdot", "reset");
      for (int i = 0; i < 4; ++i) {
        kept_flags[i] = td->find(flag_names[i]);
        if (kept_flags[i] == nullptr) continue;
        const auto want = i == 0 ? torch::kInt64 : torch::kBool;
        TORCH_CHECK(kept_flags[i]->scalar_type() == want && kept_flags[i]->sizes() == c10::IntArrayRef(flag_shape_) &&
                        kept_flags[i]->device() == device_,
                    "Pendulum.reset: \"", flag_names[i], "\" must be ", rlobj::detail::dtype_str(want), " of shape ",
                    rlobj::detail::shape_str(flag_shape_), " on ", device_.str(), ", got ",
                    rlobj::detail::dtype_str(kept_flags[i]->scalar_type()), " ",
                    rlobj::detail::shape_str(kept_flags[i]->sizes()), " on ", kept_flags[i]->device().str());
      }
    }
    if (!given_state) {
      // gym: uniform(low=-[pi, 1], high=[pi, 1]); drawn on the CPU generator whatever the
      // device, so a seed gives the same states everywhere.
      std::vector<int64_t> shape = batch_size_;
      shape.push_back(2);
      auto u = torch::rand(shape, generator_, torch::TensorOptions().dtype(torch::kFloat64));
      auto split = u.split(1, -1);
      th = (split[0] * (2 * M_PI) - M_PI).to(state_opts);
      thdot = (split[1] * 2.0 - 1.0).to(state_opts);
    }
    auto step_count = torch::zeros(flag_shape_, torch::TensorOptions().dtype(torch::kInt64).device(device_));
    auto falses = torch::zeros(flag_shape_, torch::TensorOptions().dtype(torch::kBool).device(device_));
    torch::Tensor done = falses, terminated = falses, truncated = falses;
    if (mask.defined()) {
      // Partial reset: only the masked pendulums restart.
      th = torch::where(mask, th, kept_th);
      thdot = torch::where(mask, thdot, kept_thdot);
      if (kept_flags[0] != nullptr) step_count = torch::where(mask, step_count, *kept_flags[0]);
      torch::Tensor* flags[] = {&done, &terminated, &truncated};
      for (int i = 0; i < 3; ++i) {
        if (kept_flags[i + 1] != nullptr) *flags[i] = torch::where(mask, falses, *kept_flags[i + 1]);
      }
    }
    TensorDict out(batch_size_);
    out.set("observation", torch::cat({th.cos(), th.sin(), thdot}, -1).to(options_.dtype()));
    out.set("th", th);
    out.set("thdot", thdot);
    out.set("step_count", step_count);
    out.set("done", done);
    out.set("terminated", terminated);
    out.set("truncated", truncated);
    return out;
  }

  TensorDict step_impl(const TensorDict& td) override {
    const torch::Tensor* action_ptr = td.find("action");
    TORCH_CHECK(action_ptr != nullptr, "Pendulum.step: the TensorDict has no \"action\"; keys present: ",
                rlobj::detail::keys_str(td.keys(true)));
    const torch::Tensor& action = *action_ptr;
    TORCH_CHECK(action.sizes() == c10::IntArrayRef(flag_shape_), "Pendulum.step: \"action\" has shape ",
                rlobj::detail::shape_str(action.sizes()), ", expected ", rlobj::detail::shape_str(flag_shape_));
    TORCH_CHECK_TYPE(action.scalar_type() == options_.dtype(), "Pendulum.step: \"action\" has dtype ",
                     rlobj::detail::dtype_str(action.scalar_type()), ", expected ",
                     rlobj::detail::dtype_str(options_.dtype()));
    TORCH_CHECK(action.device() == device_, "Pendulum.step: \"action\" is on ", action.device().str(),
                ", expected ", device_.str());
    const torch::Tensor th = checked_state(td, "th", "step");
    const torch::Tensor thdot = checked_state(td, "thdot", "step");
    const torch::Tensor* sc = td.find("step_count");
    TORCH_CHECK(sc != nullptr && sc->scalar_type() == torch::kInt64 &&
                    sc->sizes() == c10::IntArrayRef(flag_shape_),
                "Pendulum.step: expected an int64 \"step_count\" of shape ",
                rlobj::detail::shape_str(flag_shape_), "; step a TensorDict made by reset() or step_mdp()");

    torch::Tensor new_th, new_thdot, reward, obs;
    if (options_.fused_cpu_step() && device_.is_cpu() && th.numel() <= options_.fused_cpu_max_batch()) {
      fused_step(action, th, thdot, &new_th, &new_thdot, &reward, &obs);
    } else {
      TORCH_CHECK(!action.isnan().any().item<bool>(), "Pendulum.step: \"action\" contains NaN");
      tensor_step(action, th, thdot, &new_th, &new_thdot, &reward, &obs);
    }
    // Saturating: a count at INT64_MAX stays there (and truncates) instead of wrapping negative.
    torch::Tensor step_count = sc->clamp_max(std::numeric_limits<int64_t>::max() - 1) + 1;
    torch::Tensor truncated = options_.max_episode_steps() > 0
                                  ? step_count >= options_.max_episode_steps()
                                  : torch::zeros_like(step_count, torch::kBool);
    torch::Tensor terminated = torch::zeros_like(truncated);

    TensorDict next(batch_size_);
    next.set("observation", obs);
    next.set("th", new_th);
    next.set("thdot", new_thdot);
    next.set("step_count", step_count);
    next.set("reward", reward);
    next.set("done", truncated.clone());  // done = terminated | truncated
    next.set("terminated", terminated);
    next.set("truncated", truncated);
    return next;
  }

 private:
  torch::Tensor checked_state(const TensorDict& td, const char* key, const char* where) const {
    const torch::Tensor* t = td.find(key);
    TORCH_CHECK(t != nullptr, "Pendulum.", where, ": the TensorDict has no \"", key,
                "\"; use a TensorDict made by reset() or step_mdp()");
    TORCH_CHECK(t->sizes() == c10::IntArrayRef(flag_shape_) && t->scalar_type() == torch::kFloat64 &&
                    t->device() == device_,
                "Pendulum.", where, ": \"", key, "\" must be float64",
                " of shape ", rlobj::detail::shape_str(flag_shape_), " on ", device_.str(), ", got ",
                rlobj::detail::dtype_str(t->scalar_type()), " ", rlobj::detail::shape_str(t->sizes()),
                " on ", t->device().str());
    return *t;
  }

  // gym's step, as a chain of tensor ops (any device).
  void tensor_step(const torch::Tensor& action, const torch::Tensor& th, const torch::Tensor& thdot,
                   torch::Tensor* new_th, torch::Tensor* new_thdot, torch::Tensor* reward,
                   torch::Tensor* obs) const {
    const double g = options_.g(), m = options_.m(), l = options_.l(), dt = options_.dt();
    auto u = action.to(torch::kFloat64).clamp(-options_.max_torque(), options_.max_torque());
    auto normalized = torch::remainder(th + M_PI, 2 * M_PI) - M_PI;
    auto costs = normalized.pow(2) + 0.1 * thdot.pow(2) + 0.001 * u.pow(2);
    auto nd = thdot + (3 * g / (2 * l) * th.sin() + 3.0 / (m * l * l) * u) * dt;
    nd = nd.clamp(-options_.max_speed(), options_.max_speed());
    *new_th = th + nd * dt;
    *new_thdot = nd;
    *reward = (-costs).to(options_.dtype());
    *obs = torch::cat({new_th->cos(), new_th->sin(), nd}, -1).to(options_.dtype());
  }

  // gym's step, one pass over the pendulums (CPU).
  void fused_step(const torch::Tensor& action, const torch::Tensor& th, const torch::Tensor& thdot,
                  torch::Tensor* new_th, torch::Tensor* new_thdot, torch::Tensor* reward,
                  torch::Tensor* obs) const {
    *new_th = torch::empty_like(th);
    *new_thdot = torch::empty_like(thdot);
    const auto out_opts = th.options().dtype(options_.dtype());
    *reward = torch::empty(flag_shape_, out_opts);
    std::vector<int64_t> obs_shape = batch_size_;
    obs_shape.push_back(3);
    *obs = torch::empty(obs_shape, out_opts);
    const auto t = th.contiguous(), w = thdot.contiguous();
    const double* pt = t.data_ptr<double>();
    const double* pw = w.data_ptr<double>();
    double* nt = new_th->data_ptr<double>();
    double* nw = new_thdot->data_ptr<double>();
    const int64_t n = th.numel();
    const double max_torque = options_.max_torque(), max_speed = options_.max_speed();
    const double dt = options_.dt();
    const double k_sin = 3 * options_.g() / (2 * options_.l());
    const double k_u = 3.0 / (options_.m() * options_.l() * options_.l());
    AT_DISPATCH_FLOATING_TYPES(options_.dtype(), "Pendulum.step", [&] {
      using T = scalar_t;
      const auto a = action.contiguous();
      const T* pa = a.data_ptr<T>();
      T* r = reward->data_ptr<T>();
      T* o = obs->data_ptr<T>();
      for (int64_t i = 0; i < n; ++i) {
        TORCH_CHECK(!std::isnan(pa[i]), "Pendulum.step: \"action\" contains NaN (element ", i, ")");
      }
      for (int64_t i = 0; i < n; ++i) {
        const double u = std::min(std::max(static_cast<double>(pa[i]), -max_torque), max_torque);
        // angle_normalize(x) = ((x + pi) mod 2pi) - pi, with Python's (floor) modulo.
        double mod = std::fmod(pt[i] + M_PI, 2 * M_PI);
        if (mod < 0) mod += 2 * M_PI;
        const double normalized = mod - M_PI;
        const double cost = normalized * normalized + 0.1 * (pw[i] * pw[i]) + 0.001 * (u * u);
        double nd = pw[i] + (k_sin * std::sin(pt[i]) + k_u * u) * dt;
        nd = std::min(std::max(nd, -max_speed), max_speed);
        const double th_new = pt[i] + nd * dt;
        nt[i] = th_new;
        nw[i] = nd;
        r[i] = static_cast<T>(-cost);
        o[3 * i] = static_cast<T>(std::cos(th_new));
        o[3 * i + 1] = static_cast<T>(std::sin(th_new));
        o[3 * i + 2] = static_cast<T>(nd);
      }
    });
  }

  PendulumOptions options_;
};

}  // namespace envs
}  // namespace rlobj
