#pragma once

/// \file
/// gymnasium's MuJoCo locomotion tasks, v5: `HalfCheetah`, `Hopper`, `Walker2d`, `Ant`. Each
/// takes gymnasium's constructor arguments (its options struct, same names and defaults) and
/// the shared `MujocoOptions` (batching, dtypes, TimeLimit, threads). The model files are
/// gymnasium's own (`xml_file`, looked up in gymnasium's assets folder; any XML of the same robot
/// works). On the same libmujoco (3.17.0) every number is gymnasium 1.4.0's bit for bit
/// (tests/envs/mujoco_test.cpp replays its recorded trajectories).
///
/// ```
/// namespace mj = rlobj::envs::mujoco;
/// mj::HalfCheetah env(mj::HalfCheetahOptions(), mj::MujocoOptions().batch_size({16}).num_threads(2));
/// rlobj::TensorDict td = env.reset();
/// td = env.rand_action(td);
/// env.step(td);  // td["next"]: observation [16, 17], reward [16, 1], done, terminated, truncated
/// ```

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <mujoco/mujoco.h>
#include <torch/arg.h>

#include "rlobj/envs/mujoco/mujoco_env.h"

namespace rlobj {
namespace envs {
namespace mujoco {

/// A `(low, high)` range of a health check or a clip.
struct Range {
  /// Lower bound.
  double low;
  /// Upper bound.
  double high;
};

namespace detail {

inline void check_weight(const char* task, const char* option, double v) {
  TORCH_CHECK_VALUE(std::isfinite(v), task, "Options: ", option, " must be finite, got ", v);
}

inline void check_range(const char* task, const char* option, const Range& r) {
  TORCH_CHECK_VALUE(!std::isnan(r.low) && !std::isnan(r.high) && r.low <= r.high, task, "Options: ", option,
                    " must be a (low, high) range with low <= high, got (", r.low, ", ", r.high, ")");
}

inline double clip(double x, double lo, double hi) { return std::min(std::max(x, lo), hi); }

}  // namespace detail

/// gymnasium's `HalfCheetahEnv` (v5) constructor arguments, with its defaults.
struct HalfCheetahOptions {
  /// Model file (relative: in the assets folder).
  TORCH_ARG(std::string, xml_file) = "half_cheetah.xml";
  /// `mj_step`s per step (dt = 0.01 * 5 = 0.05 s).
  TORCH_ARG(int64_t, frame_skip) = 5;
  /// Weight of the forward velocity in the reward.
  TORCH_ARG(double, forward_reward_weight) = 1.0;
  /// Weight of the control cost `sum(action^2)`.
  TORCH_ARG(double, ctrl_cost_weight) = 0.1;
  /// Reset noise: `qpos += U(-s, s)`, `qvel = s * N(0, 1)`.
  TORCH_ARG(double, reset_noise_scale) = 0.1;
  /// Leave `qpos[0]` (the x position) out of the observation.
  TORCH_ARG(bool, exclude_current_positions_from_observation) = true;
};

/// HalfCheetah-v5: a planar cheetah rewarded for running forward. Observation `qpos[1:]`, `qvel`
/// (17; 18 with the x position); reward `forward_reward_weight * x_velocity - ctrl_cost`; never
/// terminates. Info terms: `x_position`, `x_velocity`, `reward_forward`, `reward_ctrl`.
class HalfCheetah : public MujocoEnv {
 public:
  /// Loads the model and checks the options (`c10::ValueError` naming the option).
  explicit HalfCheetah(HalfCheetahOptions options = {}, MujocoOptions common = {})
      : MujocoEnv(describe(options), std::move(common)), options_(std::move(options)) {
    detail::check_weight("HalfCheetah", "forward_reward_weight", options_.forward_reward_weight());
    detail::check_weight("HalfCheetah", "ctrl_cost_weight", options_.ctrl_cost_weight());
    set_observation_size(model().nq + model().nv - (options_.exclude_current_positions_from_observation() ? 1 : 0));
  }
  /// The task's options.
  const HalfCheetahOptions& options() const noexcept { return options_; }
  const char* name() const override { return "HalfCheetah"; }

 protected:
  void observe(const mjData& d, double* out) const override {
    const mjModel& m = model();
    const int skip = options_.exclude_current_positions_from_observation() ? 1 : 0;
    for (int j = skip; j < m.nq; ++j) *out++ = d.qpos[j];
    for (int j = 0; j < m.nv; ++j) *out++ = d.qvel[j];
  }
  double evaluate(const mjData& d, const StepTerms& terms, double* info, bool* terminate) const override {
    const double x_velocity = terms.velocity[0];
    const double forward = options_.forward_reward_weight() * x_velocity;
    info[0] = d.qpos[0];
    info[1] = x_velocity;
    info[2] = forward;
    info[3] = -terms.ctrl_cost;
    *terminate = false;
    return forward - terms.ctrl_cost;
  }
  double ctrl_cost_weight() const override { return options_.ctrl_cost_weight(); }
  void reset_info(const mjData& d, double* info) const override {
    info[0] = d.qpos[0];
    info[1] = info[2] = info[3] = 0;
  }

 private:
  static TaskDescription describe(const HalfCheetahOptions& o) {
    return {o.xml_file(), o.frame_skip(), o.reset_noise_scale(), true,
            {"x_position", "x_velocity", "reward_forward", "reward_ctrl"}};
  }
  HalfCheetahOptions options_;
};

/// gymnasium's `HopperEnv` (v5) constructor arguments, with its defaults.
struct HopperOptions {
  /// Model file (relative: in the assets folder).
  TORCH_ARG(std::string, xml_file) = "hopper.xml";
  /// `mj_step`s per step (dt = 0.002 * 4 = 0.008 s).
  TORCH_ARG(int64_t, frame_skip) = 4;
  /// Weight of the forward velocity in the reward.
  TORCH_ARG(double, forward_reward_weight) = 1.0;
  /// Weight of the control cost `sum(action^2)`.
  TORCH_ARG(double, ctrl_cost_weight) = 1e-3;
  /// Reward of every healthy step.
  TORCH_ARG(double, healthy_reward) = 1.0;
  /// An unhealthy step ends the episode (`terminated`).
  TORCH_ARG(bool, terminate_when_unhealthy) = true;
  /// Healthy: every value of `qpos[2:]` and `qvel` strictly inside this range.
  TORCH_ARG(Range, healthy_state_range) = Range{-100.0, 100.0};
  /// Healthy: the height `qpos[1]` strictly inside this range.
  TORCH_ARG(Range, healthy_z_range) = Range{0.7, std::numeric_limits<double>::infinity()};
  /// Healthy: the angle `qpos[2]` strictly inside this range.
  TORCH_ARG(Range, healthy_angle_range) = Range{-0.2, 0.2};
  /// Reset noise: `qpos += U(-s, s)`, `qvel = U(-s, s)`.
  TORCH_ARG(double, reset_noise_scale) = 5e-3;
  /// Leave `qpos[0]` (the x position) out of the observation.
  TORCH_ARG(bool, exclude_current_positions_from_observation) = true;
};

/// gymnasium's `Walker2dEnv` (v5) constructor arguments, with its defaults.
struct Walker2dOptions {
  /// Model file (relative: in the assets folder). v5's own file, not v2-v4's `walker2d.xml`.
  TORCH_ARG(std::string, xml_file) = "walker2d_v5.xml";
  /// `mj_step`s per step (dt = 0.002 * 4 = 0.008 s).
  TORCH_ARG(int64_t, frame_skip) = 4;
  /// Weight of the forward velocity in the reward.
  TORCH_ARG(double, forward_reward_weight) = 1.0;
  /// Weight of the control cost `sum(action^2)`.
  TORCH_ARG(double, ctrl_cost_weight) = 1e-3;
  /// Reward of every healthy step.
  TORCH_ARG(double, healthy_reward) = 1.0;
  /// An unhealthy step ends the episode (`terminated`).
  TORCH_ARG(bool, terminate_when_unhealthy) = true;
  /// Healthy: the height `qpos[1]` strictly inside this range.
  TORCH_ARG(Range, healthy_z_range) = Range{0.8, 2.0};
  /// Healthy: the angle `qpos[2]` strictly inside this range.
  TORCH_ARG(Range, healthy_angle_range) = Range{-1.0, 1.0};
  /// Reset noise: `qpos += U(-s, s)`, `qvel = U(-s, s)`.
  TORCH_ARG(double, reset_noise_scale) = 5e-3;
  /// Leave `qpos[0]` (the x position) out of the observation.
  TORCH_ARG(bool, exclude_current_positions_from_observation) = true;
};

namespace detail {

/// Hopper and Walker2d: the same observation, reward and info; health differs.
template <typename Options>
class PlanarWalker : public MujocoEnv {
 public:
  /// The task's options.
  const Options& options() const noexcept { return options_; }

 protected:
  PlanarWalker(Options options, MujocoOptions common, const char* task)
      : MujocoEnv(TaskDescription{options.xml_file(), options.frame_skip(), options.reset_noise_scale(), false,
                                  {"x_position", "z_distance_from_origin", "x_velocity", "reward_forward",
                                   "reward_ctrl", "reward_survive"}},
                  std::move(common)),
        options_(std::move(options)) {
    check_weight(task, "forward_reward_weight", options_.forward_reward_weight());
    check_weight(task, "ctrl_cost_weight", options_.ctrl_cost_weight());
    check_weight(task, "healthy_reward", options_.healthy_reward());
    check_range(task, "healthy_z_range", options_.healthy_z_range());
    check_range(task, "healthy_angle_range", options_.healthy_angle_range());
    TORCH_CHECK_VALUE(model().nq >= 3, task, ": the model has nq = ", model().nq, "; expected x, z and an angle");
    set_observation_size(model().nq + model().nv - (options_.exclude_current_positions_from_observation() ? 1 : 0));
  }

  /// gymnasium's `is_healthy` on the state after the step.
  virtual bool healthy(const mjData& d) const = 0;

  void observe(const mjData& d, double* out) const override {
    const mjModel& m = model();
    const int skip = options_.exclude_current_positions_from_observation() ? 1 : 0;
    for (int j = skip; j < m.nq; ++j) *out++ = d.qpos[j];
    for (int j = 0; j < m.nv; ++j) *out++ = clip(d.qvel[j], -10.0, 10.0);
  }
  double evaluate(const mjData& d, const StepTerms& terms, double* info, bool* terminate) const override {
    const bool is_healthy = healthy(d);
    const double x_velocity = terms.velocity[0];
    const double forward = options_.forward_reward_weight() * x_velocity;
    const double survive = is_healthy ? options_.healthy_reward() : 0.0;
    info[0] = d.qpos[0];
    info[1] = d.qpos[1] - model().qpos0[1];
    info[2] = x_velocity;
    info[3] = forward;
    info[4] = -terms.ctrl_cost;
    info[5] = survive;
    *terminate = !is_healthy && options_.terminate_when_unhealthy();
    return (forward + survive) - terms.ctrl_cost;
  }
  double ctrl_cost_weight() const override { return options_.ctrl_cost_weight(); }
  void reset_info(const mjData& d, double* info) const override {
    info[0] = d.qpos[0];
    info[1] = d.qpos[1] - model().qpos0[1];
    info[2] = info[3] = info[4] = info[5] = 0;
  }

  Options options_;
};

}  // namespace detail

/// Hopper-v5: a one-legged planar robot rewarded for hopping forward. Observation `qpos[1:]`,
/// `clip(qvel, -10, 10)` (11; 12 with the x position); reward
/// `(forward_reward_weight * x_velocity + survive) - ctrl_cost`, `survive = healthy_reward` on a
/// healthy step, else 0; terminated on the first unhealthy step (health after the step: `qpos[2:]`
/// and `qvel` inside `healthy_state_range`, the height and the angle inside theirs, all strict).
/// Info terms: `x_position`, `z_distance_from_origin`, `x_velocity`, `reward_forward`,
/// `reward_ctrl`, `reward_survive`.
class Hopper : public detail::PlanarWalker<HopperOptions> {
 public:
  /// Loads the model and checks the options (`c10::ValueError` naming the option).
  explicit Hopper(HopperOptions options = {}, MujocoOptions common = {})
      : PlanarWalker(std::move(options), std::move(common), "Hopper") {
    detail::check_range("Hopper", "healthy_state_range", options_.healthy_state_range());
  }
  const char* name() const override { return "Hopper"; }

 protected:
  /// gymnasium's `is_healthy` (Hopper's), on the state after the step.
  bool healthy(const mjData& d) const override {
    const mjModel& m = model();
    const Range& s = options_.healthy_state_range();
    const Range& z = options_.healthy_z_range();
    const Range& a = options_.healthy_angle_range();
    return detail::all_strictly_inside(d.qpos + 2, m.nq - 2, s.low, s.high) &&
           detail::all_strictly_inside(d.qvel, m.nv, s.low, s.high) && z.low < d.qpos[1] && d.qpos[1] < z.high &&
           a.low < d.qpos[2] && d.qpos[2] < a.high;
  }
};

/// Walker2d-v5: a two-legged planar robot rewarded for walking forward. Observation `qpos[1:]`,
/// `clip(qvel, -10, 10)` (17; 18 with the x position); reward as Hopper's; terminated on the
/// first step whose height or angle leaves its range (strict). Info terms as Hopper's.
class Walker2d : public detail::PlanarWalker<Walker2dOptions> {
 public:
  /// Loads the model and checks the options (`c10::ValueError` naming the option).
  explicit Walker2d(Walker2dOptions options = {}, MujocoOptions common = {})
      : PlanarWalker(std::move(options), std::move(common), "Walker2d") {}
  const char* name() const override { return "Walker2d"; }

 protected:
  /// gymnasium's `is_healthy` (Walker2d's), on the state after the step.
  bool healthy(const mjData& d) const override {
    const Range& z = options_.healthy_z_range();
    const Range& a = options_.healthy_angle_range();
    return z.low < d.qpos[1] && d.qpos[1] < z.high && a.low < d.qpos[2] && d.qpos[2] < a.high;
  }
};

/// gymnasium's `AntEnv` (v5) constructor arguments, with its defaults.
struct AntOptions {
  /// Model file (relative: in the assets folder).
  TORCH_ARG(std::string, xml_file) = "ant.xml";
  /// `mj_step`s per step (dt = 0.01 * 5 = 0.05 s).
  TORCH_ARG(int64_t, frame_skip) = 5;
  /// Weight of the forward (x) velocity in the reward.
  TORCH_ARG(double, forward_reward_weight) = 1.0;
  /// Weight of the control cost `sum(action^2)`.
  TORCH_ARG(double, ctrl_cost_weight) = 0.5;
  /// Weight of the contact cost `sum(clip(cfrc_ext, contact_force_range)^2)`.
  TORCH_ARG(double, contact_cost_weight) = 5e-4;
  /// Reward of every healthy step.
  TORCH_ARG(double, healthy_reward) = 1.0;
  /// The body whose `xpos` gives the velocity (the torso, body 1).
  TORCH_ARG(int64_t, main_body) = 1;
  /// An unhealthy step ends the episode (`terminated`).
  TORCH_ARG(bool, terminate_when_unhealthy) = true;
  /// Healthy: the state is finite and the height `qpos[2]` is inside this range (inclusive).
  TORCH_ARG(Range, healthy_z_range) = Range{0.2, 1.0};
  /// The external contact forces are clipped to this range (observation and cost).
  TORCH_ARG(Range, contact_force_range) = Range{-1.0, 1.0};
  /// Reset noise: `qpos += U(-s, s)` (the quaternion too, not renormalised), `qvel = s * N(0, 1)`.
  TORCH_ARG(double, reset_noise_scale) = 0.1;
  /// Leave `qpos[0:2]` (the x, y position) out of the observation.
  TORCH_ARG(bool, exclude_current_positions_from_observation) = true;
  /// Put the clipped contact forces of every body but the world (`cfrc_ext[1:]`) in the
  /// observation (the contact cost is charged either way).
  TORCH_ARG(bool, include_cfrc_ext_in_observation) = true;
};

/// Ant-v5: a four-legged robot rewarded for walking in +x. Observation `qpos[2:]`, `qvel`, and
/// the clipped contact forces `cfrc_ext[1:]` (105; 27 without them; +2 with the x, y position;
/// the forces are zero right after a reset, as `mj_forward` leaves them); reward
/// `(x_velocity * forward_reward_weight + survive) - (ctrl_cost + contact_cost)`, the velocity
/// from the torso's `xpos` as `mj_step` leaves it; terminated on the first unhealthy step. Info
/// terms: `x_position`, `y_position`, `distance_from_origin`, `x_velocity`, `y_velocity`,
/// `reward_forward`, `reward_ctrl`, `reward_contact`, `reward_survive`.
class Ant : public MujocoEnv {
 public:
  /// Loads the model and checks the options (`c10::ValueError` naming the option).
  explicit Ant(AntOptions options = {}, MujocoOptions common = {})
      : MujocoEnv(describe(options), std::move(common)), options_(std::move(options)) {
    for (auto [option, v] : {std::pair<const char*, double>{"forward_reward_weight", options_.forward_reward_weight()},
                             {"ctrl_cost_weight", options_.ctrl_cost_weight()},
                             {"contact_cost_weight", options_.contact_cost_weight()},
                             {"healthy_reward", options_.healthy_reward()}}) {
      detail::check_weight("Ant", option, v);
    }
    detail::check_range("Ant", "healthy_z_range", options_.healthy_z_range());
    detail::check_range("Ant", "contact_force_range", options_.contact_force_range());
    const mjModel& m = model();
    TORCH_CHECK_VALUE(options_.main_body() >= 0 && options_.main_body() < m.nbody,
                      "AntOptions: main_body must be a body index in [0, ", m.nbody, "), got ", options_.main_body());
    TORCH_CHECK_VALUE(m.nq >= 3 && m.nbody * 6 <= kMaxContactValues, "Ant: the model has nq = ", m.nq, " and ",
                      m.nbody, " bodies; expected nq >= 3 and at most ", kMaxContactValues / 6, " bodies");
    const int64_t positions = m.nq - (options_.exclude_current_positions_from_observation() ? 2 : 0);
    const int64_t forces = options_.include_cfrc_ext_in_observation() ? (m.nbody - 1) * 6 : 0;
    set_observation_size(positions + m.nv + forces);
  }
  /// The task's options.
  const AntOptions& options() const noexcept { return options_; }
  const char* name() const override { return "Ant"; }

  /// The most `cfrc_ext` values (bodies x 6) the contact cost sums.
  static constexpr int kMaxContactValues = 6 * 256;

 protected:
  void position(const mjData& d, double* xy) const override {
    const int64_t b = options_.main_body();
    xy[0] = d.xpos[3 * b];
    xy[1] = d.xpos[3 * b + 1];
  }
  void observe(const mjData& d, double* out) const override {
    const mjModel& m = model();
    const int skip = options_.exclude_current_positions_from_observation() ? 2 : 0;
    for (int j = skip; j < m.nq; ++j) *out++ = d.qpos[j];
    for (int j = 0; j < m.nv; ++j) *out++ = d.qvel[j];
    if (options_.include_cfrc_ext_in_observation()) {
      const Range& r = options_.contact_force_range();
      for (int k = 6; k < 6 * m.nbody; ++k) *out++ = detail::clip(d.cfrc_ext[k], r.low, r.high);
    }
  }
  double evaluate(const mjData& d, const StepTerms& terms, double* info, bool* terminate) const override {
    const mjModel& m = model();
    bool is_healthy = true;
    for (int j = 0; j < m.nq && is_healthy; ++j) is_healthy = std::isfinite(d.qpos[j]);
    for (int j = 0; j < m.nv && is_healthy; ++j) is_healthy = std::isfinite(d.qvel[j]);
    const Range& z = options_.healthy_z_range();
    is_healthy = is_healthy && z.low <= d.qpos[2] && d.qpos[2] <= z.high;
    const Range& r = options_.contact_force_range();
    double squares[kMaxContactValues];
    const int count = 6 * m.nbody;
    for (int k = 0; k < count; ++k) {
      const double f = detail::clip(d.cfrc_ext[k], r.low, r.high);
      squares[k] = f * f;
    }
    const double contact_cost = options_.contact_cost_weight() * detail::numpy_sum(squares, count);
    const double forward = terms.velocity[0] * options_.forward_reward_weight();
    const double survive = is_healthy ? options_.healthy_reward() : 0.0;
    info[0] = d.qpos[0];
    info[1] = d.qpos[1];
    info[2] = distance(d);
    info[3] = terms.velocity[0];
    info[4] = terms.velocity[1];
    info[5] = forward;
    info[6] = -terms.ctrl_cost;
    info[7] = -contact_cost;
    info[8] = survive;
    *terminate = !is_healthy && options_.terminate_when_unhealthy();
    return (forward + survive) - (terms.ctrl_cost + contact_cost);
  }
  double ctrl_cost_weight() const override { return options_.ctrl_cost_weight(); }
  void reset_info(const mjData& d, double* info) const override {
    info[0] = d.qpos[0];
    info[1] = d.qpos[1];
    info[2] = distance(d);
    for (int k = 3; k < 9; ++k) info[k] = 0;
  }

 private:
  // np.linalg.norm(qpos[0:2]) as numpy computes it (a dot product, fused on FMA machines).
  static double distance(const mjData& d) { return std::sqrt(std::fma(d.qpos[1], d.qpos[1], d.qpos[0] * d.qpos[0])); }

  static TaskDescription describe(const AntOptions& o) {
    return {o.xml_file(), o.frame_skip(), o.reset_noise_scale(), true,
            {"x_position", "y_position", "distance_from_origin", "x_velocity", "y_velocity", "reward_forward",
             "reward_ctrl", "reward_contact", "reward_survive"}};
  }
  AntOptions options_;
};

}  // namespace mujoco
}  // namespace envs
}  // namespace rlobj
