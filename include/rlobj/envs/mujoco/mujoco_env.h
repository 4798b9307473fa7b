#pragma once

/// \file
/// `rlobj::envs::mujoco::MujocoEnv`: the base of gymnasium's MuJoCo tasks on MuJoCo's C API,
/// batched. One object holds one `mjModel` and N `mjData` (one per copy), steps the copies on
/// a small thread pool and writes TorchRL's keys. Needs the `rlobj::mujoco` CMake target
/// (MuJoCo's headers and library; see docs/mujoco.md).
///
/// A step is gymnasium's `MujocoEnv.do_simulation` plus its v5 task's bookkeeping, in the same
/// order and arithmetic, so that on the same libmujoco the numbers are gymnasium's bit for bit:
///   1. the task's position before (`qpos[0]`, or Ant's torso `xpos`);
///   2. `ctrl = action` (raw: MuJoCo itself clamps to `actuator_ctrlrange` inside `mj_step`);
///   3. `frame_skip` times `mj_step`, then `mj_rnePostConstraint` (fills `cfrc_ext`);
///   4. velocity = (after - before) / dt, `dt = timestep * frame_skip`;
///   5. the control cost from the raw action, summed the way numpy sums (float32 arithmetic for
///      float32 actions, as numpy 2 does for a float32 array), then the task's reward, health
///      and observation.
/// A reset is `mj_resetData`, the task's noise on `init_qpos`/`init_qvel` (drawn from the
/// environment's generator: the law is gymnasium's, the draws are not numpy's), `mj_forward`.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <mujoco/mujoco.h>
#include <torch/arg.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/detail/thread_pool.h"
#include "rlobj/envs/common.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace envs {
/// gymnasium's MuJoCo locomotion tasks (`HalfCheetah`, `Hopper`, `Walker2d`, `Ant`) on
/// MuJoCo's C API.
namespace mujoco {

/// The version of the MuJoCo library the program runs on (`mj_versionString()`, e.g. "3.17.0").
inline std::string version() { return mj_versionString(); }

/// Where a relative `xml_file` is looked up when `MujocoOptions::assets_dir` is empty: the
/// environment variable `RLOBJ_GYMNASIUM_ASSETS`, else the folder the `rlobj::mujoco` CMake
/// target found (gymnasium's `envs/mujoco/assets` in the project's virtual environment), else "".
inline std::string default_assets_dir() {
  if (const char* env = std::getenv("RLOBJ_GYMNASIUM_ASSETS")) {
    if (*env != '\0') return env;
  }
#ifdef RLOBJ_GYMNASIUM_ASSETS_DIR
  return RLOBJ_GYMNASIUM_ASSETS_DIR;
#else
  return "";
#endif
}

/// Options every MuJoCo task shares: batching, TorchRL's dtypes and TimeLimit, threads. The
/// task's own options (gymnasium's constructor arguments) are in its options struct.
struct MujocoOptions {
  /// Number of copies, as batch dims (`{}`: one, unbatched, like gymnasium; `{16}`: 16).
  TORCH_ARG(std::vector<int64_t>, batch_size) = {};
  /// gymnasium's `TimeLimit`: the step that reaches it is `truncated` (1,000 for the v5 tasks).
  /// 0 means no limit.
  TORCH_ARG(int64_t, max_episode_steps) = 1000;
  /// Seed of the generator of resets and random actions.
  TORCH_ARG(uint64_t, seed) = 0;
  /// dtype of observations and rewards: float64 (gymnasium's) or float32. The physics and the
  /// reward arithmetic are float64 whatever this is; float32 rounds the results.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat64;
  /// dtype of actions: float32 (the action space's, which TorchRL passes on) or float64. With
  /// float32 the control cost is computed in float32, as numpy computes it for a float32 array.
  TORCH_ARG(torch::Dtype, action_dtype) = torch::kFloat32;
  /// Threads stepping the copies (the calling thread included). Results do not depend on it.
  TORCH_ARG(int64_t, num_threads) = 1;
  /// Also write gymnasium's info terms (`x_position`, `x_velocity`, `reward_forward`,
  /// `reward_ctrl`, ...; float64 `[*batch, 1]`) under `"next"`, and after a reset.
  TORCH_ARG(bool, write_info) = false;
  /// Folder of relative `xml_file` names; empty: `default_assets_dir()`.
  TORCH_ARG(std::string, assets_dir) = "";
};

namespace detail {

/// numpy's sum of `n` values (its pairwise summation, `@TYPE@_pairwise_sum`): left to right
/// below 8 values; 8 accumulators up to 128, combined as `((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))`,
/// then the rest left to right; halves (cut at a multiple of 8) above 128. In `T`'s arithmetic.
template <typename T>
T numpy_sum(const T* a, int64_t n) {
  if (n < 8) {
    T res = 0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    T r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_sum(a, n2) + numpy_sum(a + n2, n - n2);
}

/// `a < x < b` for every value (gymnasium's strict range checks).
inline bool all_strictly_inside(const double* x, int64_t n, double lo, double hi) {
  for (int64_t i = 0; i < n; ++i) {
    if (!(lo < x[i] && x[i] < hi)) return false;
  }
  return true;
}

struct ModelDeleter {
  void operator()(mjModel* m) const noexcept { mj_deleteModel(m); }
};
struct DataDeleter {
  void operator()(mjData* d) const noexcept { mj_deleteData(d); }
};

/// Collects what MuJoCo prints through `mju_user_warning` while a model loads (MuJoCo's default
/// handler would append it to `./MUJOCO_LOG.TXT`).
inline std::string& load_messages_sink() {
  static thread_local std::string sink;
  return sink;
}
inline void collect_warning(const char* msg) {
  std::string& sink = load_messages_sink();
  if (!sink.empty()) sink += '\n';
  sink += msg;
}

/// Loads an XML model; `c10::Error` naming the file and MuJoCo's message on failure. What MuJoCo
/// warns while loading goes to `*messages`.
inline std::shared_ptr<const mjModel> load_model(const std::string& path, std::string* messages) {
  std::string& sink = load_messages_sink();
  sink.clear();
  auto* previous = mju_user_warning;
  mju_user_warning = collect_warning;
  char error[1024] = {0};
  mjModel* m = mj_loadXML(path.c_str(), nullptr, error, sizeof(error));
  mju_user_warning = previous;
  *messages = sink;
  TORCH_CHECK_VALUE(m != nullptr, "MuJoCo could not load the model \"", path, "\": ", error);
  return std::shared_ptr<const mjModel>(m, ModelDeleter());
}

}  // namespace detail

/// What a task tells `MujocoEnv`'s constructor (gymnasium's `MujocoEnv.__init__` arguments and
/// its class's constants).
struct TaskDescription {
  /// The model file (absolute, or relative to the assets folder).
  std::string xml_file;
  /// `mj_step`s per environment step.
  int64_t frame_skip = 1;
  /// Half-width of the uniform reset noise on `qpos`; scale of the `qvel` noise.
  double reset_noise_scale = 0;
  /// `qvel` noise: `reset_noise_scale * N(0, 1)` (HalfCheetah, Ant) or `U(-s, s)` (Hopper, Walker2d).
  bool normal_qvel_noise = false;
  /// The task's info terms, in gymnasium's order (`evaluate` writes them in that order).
  std::vector<std::string> info_names;
};

/// What `evaluate` receives about one step of one copy.
struct StepTerms {
  /// `(after - before) / dt` of the task's position, x and y.
  double velocity[2];
  /// `ctrl_cost_weight * sum(action^2)` of the raw action: the exact float32 result for a
  /// float32 action, widened.
  double ctrl_cost;
};

/// gymnasium's `MujocoEnv` for TorchRL: N copies of one model stepped together. A task derives
/// from it and implements `observe`, `evaluate` and (optionally) `position`. The environment is
/// stateful like TorchRL's `GymEnv` (the physics lives in the `mjData`s; steps read only
/// `"action"`); the root holds `observation` (`[*batch, obs_dim]`), `step_count`, the done flags
/// and `is_init`; a step writes them under `"next"` with the `reward`.
///
/// `reset(td)` accepts a `"_reset"` mask (only those copies restart) or a start state: float64
/// `"qpos"` `[*batch, nq]` and `"qvel"` `[*batch, nv]` (gymnasium's `reset` + `set_state`: no
/// noise drawn; every copy, or the masked ones).
class MujocoEnv : public EnvBase {
 public:
  /// The most actuators a model may have (the control cost's scratch is on the stack).
  static constexpr int kMaxActuators = 256;

  MujocoEnv(const MujocoEnv&) = delete;
  MujocoEnv& operator=(const MujocoEnv&) = delete;

  /// The model (shared by every copy).
  const mjModel& model() const noexcept { return *model_; }
  /// Copy `i`'s data (flat index over the batch dims).
  const mjData& data(int64_t i) const {
    TORCH_CHECK_INDEX(i >= 0 && i < num_envs(), name(), ".data: index ", i, " out of range for ", num_envs(),
                      " copies");
    return *data_[static_cast<size_t>(i)];
  }
  /// Number of copies (the product of the batch dims).
  int64_t num_envs() const noexcept { return static_cast<int64_t>(data_.size()); }
  /// Seconds per environment step: `timestep * frame_skip`.
  double dt() const noexcept { return dt_; }
  /// `mj_step`s per environment step.
  int64_t frame_skip() const noexcept { return task_.frame_skip; }
  /// Length of the observation.
  int64_t observation_size() const noexcept { return obs_dim_; }
  /// The resolved path of the model file.
  const std::string& xml_path() const noexcept { return xml_path_; }
  /// What MuJoCo warned while loading the model (empty for most models).
  const std::string& load_messages() const noexcept { return load_messages_; }
  /// The info terms `write_info` writes, in gymnasium's order.
  const std::vector<std::string>& info_names() const noexcept { return task_.info_names; }
  /// The shared options.
  const MujocoOptions& mujoco_options() const noexcept { return options_; }

 protected:
  /// Loads the model, checks the options (`c10::ValueError` naming the option) and builds the
  /// copies and the action, reward and done specs. The task then calls `set_observation_size`.
  MujocoEnv(TaskDescription task, MujocoOptions options)
      : EnvBase(options.batch_size(), torch::kCPU, options.seed()),
        options_(std::move(options)),
        task_(std::move(task)) {
    const char* who = "MujocoOptions";
    for (auto s : batch_size_) {
      TORCH_CHECK_VALUE(s > 0, who, ": batch_size dims must be positive, got ", rlobj::detail::shape_str(batch_size_));
    }
    TORCH_CHECK_VALUE(options_.dtype() == torch::kFloat32 || options_.dtype() == torch::kFloat64, who,
                      ": dtype must be float32 or float64, got ", rlobj::detail::dtype_str(options_.dtype()));
    TORCH_CHECK_VALUE(options_.action_dtype() == torch::kFloat32 || options_.action_dtype() == torch::kFloat64, who,
                      ": action_dtype must be float32 or float64, got ",
                      rlobj::detail::dtype_str(options_.action_dtype()));
    TORCH_CHECK_VALUE(options_.max_episode_steps() >= 0, who, ": max_episode_steps must be >= 0, got ",
                      options_.max_episode_steps());
    const auto hw = static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
    TORCH_CHECK_VALUE(options_.num_threads() >= 1 && options_.num_threads() <= 4 * hw, who,
                      ": num_threads must be in [1, ", 4 * hw, "] (4x this machine's ", hw, " hardware threads), got ",
                      options_.num_threads());
    TORCH_CHECK_VALUE(task_.frame_skip >= 1, name(), ": frame_skip must be >= 1, got ", task_.frame_skip);
    TORCH_CHECK_VALUE(std::isfinite(task_.reset_noise_scale) && task_.reset_noise_scale >= 0, name(),
                      ": reset_noise_scale must be finite and >= 0, got ", task_.reset_noise_scale);
    TORCH_CHECK_VALUE(!task_.xml_file.empty(), name(), ": xml_file is empty");
    xml_path_ = task_.xml_file;
    if (xml_path_.front() != '/') {
      const std::string dir = options_.assets_dir().empty() ? default_assets_dir() : options_.assets_dir();
      TORCH_CHECK_VALUE(!dir.empty(), name(), ": xml_file \"", task_.xml_file, "\" is relative and no assets folder "
                        "is known: pass an absolute path, MujocoOptions::assets_dir, or set RLOBJ_GYMNASIUM_ASSETS to "
                        "gymnasium's envs/mujoco/assets folder");
      xml_path_ = dir + "/" + xml_path_;
    }
    model_ = detail::load_model(xml_path_, &load_messages_);
    const mjModel& m = *model_;
    TORCH_CHECK_VALUE(m.nu > 0 && m.nu <= kMaxActuators, name(), ": the model \"", xml_path_, "\" has ", m.nu,
                      " actuators; expected 1 to ", kMaxActuators);
    dt_ = m.opt.timestep * static_cast<double>(task_.frame_skip);
    int64_t n = 1;
    for (auto s : batch_size_) {
      TORCH_CHECK_VALUE(s <= (int64_t{1} << 24) / n, who, ": batch_size ", rlobj::detail::shape_str(batch_size_),
                        " is more than 2^24 copies");
      n *= s;
    }
    data_.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      mjData* d = mj_makeData(&m);
      TORCH_CHECK(d != nullptr, name(), ": MuJoCo could not allocate the data of copy ", i, " of ", n);
      data_.emplace_back(d);
    }
    steps_.assign(static_cast<size_t>(n), 0);
    if (options_.num_threads() > 1) pool_ = std::make_unique<rlobj::detail::ThreadPool>(options_.num_threads());

    // Actions: gymnasium's Box from actuator_ctrlrange (float32 bounds), in action_dtype.
    std::vector<float> low(static_cast<size_t>(m.nu)), high(static_cast<size_t>(m.nu));
    for (int j = 0; j < m.nu; ++j) {
      const bool limited = m.actuator_ctrllimited[j] != 0;
      low[j] = limited ? static_cast<float>(m.actuator_ctrlrange[2 * j]) : -std::numeric_limits<float>::infinity();
      high[j] = limited ? static_cast<float>(m.actuator_ctrlrange[2 * j + 1]) : std::numeric_limits<float>::infinity();
    }
    const auto aopts = torch::TensorOptions().dtype(torch::kFloat32);
    // Copies: from_blob aliases the vectors, and to() of the same dtype is the same tensor.
    auto lo = torch::from_blob(low.data(), {m.nu}, aopts).to(options_.action_dtype(), /*non_blocking=*/false, /*copy=*/true);
    auto hi = torch::from_blob(high.data(), {m.nu}, aopts).to(options_.action_dtype(), /*non_blocking=*/false, /*copy=*/true);
    action_spec_ = Bounded(lo, hi).expand(batch_size_);
    reward_spec_ = Unbounded({1}, options_.dtype()).expand(batch_size_);
    for (const char* k : {"done", "terminated", "truncated"}) {
      done_spec_.set(k, Categorical(2, {1}, torch::kBool).expand(batch_size_));
    }
    observation_spec_.set("step_count", Bounded(0, static_cast<double>(std::max<int64_t>(options_.max_episode_steps(), 1)),
                                                {1}, torch::kInt64)
                                            .expand(batch_size_));
    if (options_.write_info()) {
      for (const auto& info : task_.info_names) observation_spec_.set(info, Unbounded({1}, torch::kFloat64).expand(batch_size_));
    }
  }

  /// Sets the observation's length and spec (`[*batch, size]`, unbounded, `dtype`).
  void set_observation_size(int64_t size) {
    obs_dim_ = size;
    observation_spec_.set("observation", Unbounded({size}, options_.dtype()).expand(batch_size_));
  }

  /// The task's observation of `d`: `observation_size()` values into `out`.
  virtual void observe(const mjData& d, double* out) const = 0;
  /// The task's reward after a step; writes its info terms into `info` (`info_names()` order)
  /// and sets `*terminate` when the step ends the episode (gymnasium's `terminated`).
  virtual double evaluate(const mjData& d, const StepTerms& terms, double* info, bool* terminate) const = 0;
  /// The position whose change is the task's velocity: x into `xy[0]`, y into `xy[1]`.
  /// gymnasium's default: `qpos[0]` (y unused).
  virtual void position(const mjData& d, double* xy) const {
    xy[0] = d.qpos[0];
    xy[1] = 0;
  }
  /// The weight of the control cost (gymnasium's `ctrl_cost_weight`).
  virtual double ctrl_cost_weight() const = 0;
  /// The info terms right after a reset (gymnasium's `_get_reset_info`); default: none written.
  virtual void reset_info(const mjData& d, double* info) const {
    (void)d;
    std::fill(info, info + static_cast<int64_t>(task_.info_names.size()), 0.0);
  }

  /// A start state (`"qpos"`, `"qvel"`) is loaded by the reset that gets it, not carried on.
  bool consumed_by_reset(const std::string& key) const override { return key == "qpos" || key == "qvel"; }

  TensorDict reset_impl(const TensorDict* td) override {
    TORCH_CHECK(obs_dim_ > 0, name(), ": the task never called set_observation_size");
    const mjModel& m = *model_;
    const int64_t n = num_envs();
    torch::Tensor mask = reset_mask(td);
    const torch::Tensor* qpos = td != nullptr ? td->find("qpos") : nullptr;
    const torch::Tensor* qvel = td != nullptr ? td->find("qvel") : nullptr;
    TORCH_CHECK_VALUE((qpos == nullptr) == (qvel == nullptr), name(), ".reset: got \"", qpos ? "qpos" : "qvel",
                      "\" without \"", qpos ? "qvel" : "qpos", "\"; a start state needs both");
    torch::Tensor qpos_c, qvel_c;
    if (qpos != nullptr) {
      qpos_c = checked_state(*qpos, "qpos", m.nq);
      qvel_c = checked_state(*qvel, "qvel", m.nv);
    }
    // The flags kept for copies outside the mask are checked before anything changes.
    const char* const flag_names[3] = {"done", "terminated", "truncated"};
    const torch::Tensor* kept[3] = {nullptr, nullptr, nullptr};
    torch::Tensor mask_c;
    if (mask.defined()) {
      mask_c = mask.reshape({n}).contiguous();
      for (int k = 0; k < 3; ++k) {
        kept[k] = td->find(flag_names[k]);
        if (kept[k] == nullptr) continue;
        TORCH_CHECK(kept[k]->scalar_type() == torch::kBool && kept[k]->sizes() == c10::IntArrayRef(flag_shape_),
                    name(), ".reset: \"", flag_names[k], "\" must be bool of shape ",
                    rlobj::detail::shape_str(flag_shape_), ", got ", rlobj::detail::dtype_str(kept[k]->scalar_type()),
                    " ", rlobj::detail::shape_str(kept[k]->sizes()));
      }
    }
    std::vector<int64_t> which;
    for (int64_t i = 0; i < n; ++i) {
      if (!mask_c.defined() || mask_c.data_ptr<bool>()[i]) which.push_back(i);
    }
    // Noise for the copies that restart, drawn in copy order on the environment's generator:
    // qpos first, then qvel (gymnasium's order), unless a start state is given.
    const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
    const auto k = static_cast<int64_t>(which.size());
    torch::Tensor start_qpos, start_qvel;
    if (qpos != nullptr) {
      start_qpos = qpos_c;
      start_qvel = qvel_c;
    } else if (k > 0) {
      const double s = task_.reset_noise_scale;
      torch::Tensor init_qpos = torch::from_blob(const_cast<double*>(m.qpos0), {m.nq}, f64);
      start_qpos = init_qpos + (torch::rand({k, m.nq}, generator_, f64) * (2 * s) - s);
      torch::Tensor noise = task_.normal_qvel_noise ? torch::randn({k, m.nv}, generator_, f64) * s
                                                    : torch::rand({k, m.nv}, generator_, f64) * (2 * s) - s;
      start_qvel = noise;  // init_qvel is zero
    }
    const double* sp = start_qpos.defined() ? start_qpos.data_ptr<double>() : nullptr;
    const double* sv = start_qvel.defined() ? start_qvel.data_ptr<double>() : nullptr;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = which[static_cast<size_t>(j)];
      // A given state is indexed by copy; drawn noise by restart order.
      const int64_t row = qpos != nullptr ? i : j;
      mjData* d = data_[static_cast<size_t>(i)].get();
      mj_resetData(&m, d);
      std::copy(sp + row * m.nq, sp + (row + 1) * m.nq, d->qpos);
      std::copy(sv + row * m.nv, sv + (row + 1) * m.nv, d->qvel);
      mj_forward(&m, d);
      steps_[static_cast<size_t>(i)] = 0;
    }

    const int64_t n_info = static_cast<int64_t>(task_.info_names.size());
    torch::Tensor obs = torch::empty({n, obs_dim_}, f64);
    torch::Tensor info = options_.write_info() ? torch::zeros({n, std::max<int64_t>(n_info, 1)}, f64) : torch::Tensor();
    for (int64_t i = 0; i < n; ++i) {
      observe(*data_[static_cast<size_t>(i)], obs.data_ptr<double>() + i * obs_dim_);
      if (info.defined()) reset_info(*data_[static_cast<size_t>(i)], info.data_ptr<double>() + i * info.size(1));
    }
    TensorDict out(batch_size_);
    out.set("observation", obs.to(options_.dtype()).view(with_last(obs_dim_)));
    out.set("step_count", step_counts());
    auto falses = torch::zeros(flag_shape_, torch::TensorOptions().dtype(torch::kBool));
    for (int f = 0; f < 3; ++f) {
      torch::Tensor flag = falses;
      if (kept[f] != nullptr) flag = torch::where(mask, falses, *kept[f]);
      out.set(flag_names[f], flag);
    }
    if (info.defined()) {
      write_info_entries(&out, info);
      // Copies outside the mask keep their info terms (their last step's), as every other entry.
      for (size_t j = 0; mask.defined() && j < task_.info_names.size(); ++j) {
        const torch::Tensor* before = td->find(task_.info_names[j]);
        if (before != nullptr && before->sizes() == c10::IntArrayRef(flag_shape_) &&
            before->scalar_type() == torch::kFloat64) {
          out.set(task_.info_names[j], torch::where(mask, out.get(task_.info_names[j]), *before));
        }
      }
    }
    return out;
  }

  TensorDict step_impl(const TensorDict& td) override {
    const mjModel& m = *model_;
    const int64_t n = num_envs();
    const torch::Tensor* action_ptr = td.find("action");
    TORCH_CHECK(action_ptr != nullptr, name(), ".step: the TensorDict has no \"action\"; keys present: ",
                rlobj::detail::keys_str(td.keys(true)));
    const std::vector<int64_t> ashape = with_last(m.nu);
    TORCH_CHECK(action_ptr->sizes() == c10::IntArrayRef(ashape), name(), ".step: \"action\" has shape ",
                rlobj::detail::shape_str(action_ptr->sizes()), ", expected ", rlobj::detail::shape_str(ashape));
    TORCH_CHECK_TYPE(action_ptr->scalar_type() == options_.action_dtype(), name(), ".step: \"action\" has dtype ",
                     rlobj::detail::dtype_str(action_ptr->scalar_type()), ", expected ",
                     rlobj::detail::dtype_str(options_.action_dtype()), " (MujocoOptions::action_dtype)");
    TORCH_CHECK(action_ptr->device().is_cpu(), name(), ".step: \"action\" is on ", action_ptr->device().str(),
                ", expected cpu");
    const torch::Tensor action = action_ptr->contiguous();

    const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
    const int64_t n_info = static_cast<int64_t>(task_.info_names.size());
    const int64_t info_stride = std::max<int64_t>(n_info, 1);
    torch::Tensor obs = torch::empty({n, obs_dim_}, f64);
    torch::Tensor reward = torch::empty({n}, f64);
    torch::Tensor info = torch::empty({n, info_stride}, f64);
    std::vector<char> terminate(static_cast<size_t>(n), 0);
    double* po = obs.data_ptr<double>();
    double* pr = reward.data_ptr<double>();
    double* pi = info.data_ptr<double>();
    const double w = ctrl_cost_weight();
    AT_DISPATCH_FLOATING_TYPES(options_.action_dtype(), "MujocoEnv.step", [&] {
      using A = scalar_t;
      const A* pa = action.data_ptr<A>();
      // Refused before any copy moves: MuJoCo would zero a non-finite control with a warning
      // while the control cost became non-finite.
      for (int64_t e = 0; e < n * m.nu; ++e) {
        TORCH_CHECK_VALUE(std::isfinite(static_cast<double>(pa[e])), name(), ".step: \"action\" is not finite (copy ",
                          e / m.nu, ", actuator ", e % m.nu, ": ", static_cast<double>(pa[e]), ")");
      }
      auto step_one = [&](int64_t i) {
        mjData* d = data_[static_cast<size_t>(i)].get();
        const A* a = pa + i * m.nu;
        double before[2], after[2];
        position(*d, before);
        for (int j = 0; j < m.nu; ++j) d->ctrl[j] = static_cast<double>(a[j]);
        for (int64_t s = 0; s < task_.frame_skip; ++s) mj_step(&m, d);
        mj_rnePostConstraint(&m, d);
        position(*d, after);
        StepTerms terms;
        terms.velocity[0] = (after[0] - before[0]) / dt_;
        terms.velocity[1] = (after[1] - before[1]) / dt_;
        // numpy: weight * np.sum(np.square(action)), in the action's arithmetic (NEP 50: the
        // Python float weight becomes the array's type).
        A squares[kMaxActuators];
        for (int j = 0; j < m.nu; ++j) squares[j] = a[j] * a[j];
        const A sum = detail::numpy_sum<A>(squares, m.nu);
        terms.ctrl_cost = static_cast<double>(static_cast<A>(static_cast<A>(w) * sum));
        bool term = false;
        pr[i] = evaluate(*d, terms, pi + i * info_stride, &term);
        terminate[static_cast<size_t>(i)] = term ? 1 : 0;
        observe(*d, po + i * obs_dim_);
      };
      if (pool_ != nullptr && n > 1) {
        pool_->run(n, step_one);
      } else {
        for (int64_t i = 0; i < n; ++i) step_one(i);
      }
    });
    for (auto& s : steps_) s = s == std::numeric_limits<int64_t>::max() ? s : s + 1;
    torch::Tensor step_count = step_counts();
    torch::Tensor truncated = options_.max_episode_steps() > 0 ? step_count >= options_.max_episode_steps()
                                                               : torch::zeros(flag_shape_, torch::kBool);
    torch::Tensor terminated = torch::empty(flag_shape_, torch::kBool);
    bool* pt = terminated.data_ptr<bool>();
    for (int64_t i = 0; i < n; ++i) pt[i] = terminate[static_cast<size_t>(i)] != 0;

    TensorDict next(batch_size_);
    next.set("observation", obs.to(options_.dtype()).view(with_last(obs_dim_)));
    next.set("reward", reward.to(options_.dtype()).view(flag_shape_));
    next.set("step_count", step_count);
    next.set("done", terminated | truncated);
    next.set("terminated", terminated);
    next.set("truncated", truncated);
    if (options_.write_info()) write_info_entries(&next, info);
    return next;
  }

  /// The shared options the environment was built with.
  MujocoOptions options_;
  /// What the task gave the constructor.
  TaskDescription task_;

 private:
  std::vector<int64_t> with_last(int64_t d) const {
    std::vector<int64_t> s = batch_size_;
    s.push_back(d);
    return s;
  }

  torch::Tensor step_counts() const {
    return torch::from_blob(const_cast<int64_t*>(steps_.data()), {num_envs()}, torch::kInt64).clone().view(flag_shape_);
  }

  torch::Tensor checked_state(const torch::Tensor& t, const char* key, int64_t size) const {
    const std::vector<int64_t> want = with_last(size);
    TORCH_CHECK_VALUE(t.scalar_type() == torch::kFloat64 && t.sizes() == c10::IntArrayRef(want) && t.device().is_cpu(),
                      name(), ".reset: \"", key, "\" must be float64 of shape ", rlobj::detail::shape_str(want),
                      " on cpu, got ", rlobj::detail::dtype_str(t.scalar_type()), " ",
                      rlobj::detail::shape_str(t.sizes()), " on ", t.device().str());
    TORCH_CHECK_VALUE(t.isfinite().all().item<bool>(), name(), ".reset: \"", key, "\" must be finite");
    return t.reshape({num_envs(), size}).contiguous();
  }

  void write_info_entries(TensorDict* out, const torch::Tensor& info) const {
    for (size_t j = 0; j < task_.info_names.size(); ++j) {
      out->set(task_.info_names[j], info.select(1, static_cast<int64_t>(j)).clone().view(flag_shape_));
    }
  }

  std::shared_ptr<const mjModel> model_;
  std::vector<std::unique_ptr<mjData, detail::DataDeleter>> data_;
  std::vector<int64_t> steps_;
  std::unique_ptr<rlobj::detail::ThreadPool> pool_;
  std::string xml_path_;
  std::string load_messages_;
  double dt_ = 0;
  int64_t obs_dim_ = 0;
};

}  // namespace mujoco
}  // namespace envs
}  // namespace rlobj
