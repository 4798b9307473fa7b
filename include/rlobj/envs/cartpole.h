#pragma once

/// \file
/// `rlobj::envs::CartPole`: Gymnasium's `CartPole-v1` (with its 500-step `TimeLimit`),
/// batched. One object steps `N` carts as tensors; the dynamics, rewards, termination and
/// truncation are Gymnasium's, bit for bit on the CPU.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/arg.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/envs/common.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace envs {

/// Options of `CartPole`. The physics is Gymnasium's and fixed (see `CartPole`'s constants).
struct CartPoleOptions {
  /// Number of carts, as batch dims (`{}`: one, unbatched, like gym; `{64}`: 64).
  TORCH_ARG(std::vector<int64_t>, batch_size) = {};
  /// Episode length (gym's `TimeLimit`, 500 for `CartPole-v1`): every step from the one that
  /// reaches it on is `truncated` and `done`. 0 means no limit.
  TORCH_ARG(int64_t, max_episode_steps) = 500;
  /// Seed of the generator used for resets and random actions.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Device of every tensor the env reads and writes (resets are drawn on the CPU generator, then moved).
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Floating dtype of observations and rewards (`kFloat32`, gym's, or `kFloat64`). The state
  /// is float64 whatever this is.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
  /// TorchRL's `GymEnv` option of the same name. false (TorchRL's default): the action is
  /// int64 one-hot `[*batch, 2]` (`OneHot` spec; `[1, 0]` pushes left, `[0, 1]` right). true:
  /// an int64 index `[*batch]` (`Categorical` spec, shape `[*batch]` as TorchRL's; 0 pushes
  /// left, 1 right).
  TORCH_ARG(bool, categorical_action_encoding) = false;
  /// Reset bounds: each state component is drawn from `U(reset_low, reset_high)` (gym's reset
  /// `options={"low": ..., "high": ...}`; default gym's -0.05, 0.05).
  TORCH_ARG(double, reset_low) = -0.05;
  /// Upper reset bound (see `reset_low`).
  TORCH_ARG(double, reset_high) = 0.05;
  /// Gym's `CartPoleEnv(sutton_barto_reward=True)`: reward 0 per step and -1 on the
  /// terminating step and after it, instead of 1 per step (0 after termination).
  TORCH_ARG(bool, sutton_barto_reward) = false;
  /// On the CPU, step with one loop over the carts (glibc `std::sin`/`std::cos`, bit-exact to
  /// gym on glibc) instead of a chain of tensor ops (ATen's `sin`/`cos`, which may differ by
  /// an ulp). Other devices always use the tensor ops.
  TORCH_ARG(bool, fused_cpu_step) = true;
};

namespace detail {

/// `v`, through an optimisation barrier: a product passed through it cannot be fused with
/// the addition it feeds into an FMA, whatever `-ffp-contract` the including program uses
/// (GCC contracts across statements by default in GNU mode when the target has FMA, e.g.
/// `-march=native` on x86-64 or any aarch64). Gym computes every product and sum with its own
/// rounding; an FMA would change the last bit and, through a bang-bang policy, the trajectory.
/// With compilers other than GCC and Clang it does nothing: build without contraction there.
inline double no_contract(double v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
#if defined(__x86_64__)
  __asm__("" : "+x"(v));
#elif defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  __asm__("" : "+m"(v));
#endif
#endif
  return v;
}

}  // namespace detail

/// Gymnasium's `CartPole-v1`, batched, stateless in TorchRL's way: the state lives in the
/// TensorDict.
///
/// Entries of a root (after `reset()` or `step_mdp`) and of `"next"` after a step:
///
/// * `"state"`: float64 `[*batch, 4]`, gym's `(x, x_dot, theta, theta_dot)`, never rounded;
/// * `"observation"`: `[*batch, 4]` in the env's dtype, the cast of `"state"` (float32 by
///   default, as gym's `np.array(state, dtype=np.float32)`); the dynamics never read it;
/// * `"step_count"`: int64 `[*batch, 1]`, the steps since the reset (gym's `TimeLimit`);
/// * `"steps_beyond_terminated"`: int64 `[*batch, 1]`, gym's counter of the same name, with
///   -1 for its `None` (not yet terminated since the reset);
/// * `"done"`, `"terminated"`, `"truncated"`: bool `[*batch, 1]`; `"reward"` (in `"next"`):
///   `[*batch, 1]` in the env's dtype.
///
/// A step is gym's, in gym's order of operations, in double: `force = +-10`,
/// `temp = (force + 0.05 * theta_dot^2 * sin) / 1.1`, `thetaacc`, `xacc`, then explicit Euler
/// with `tau = 0.02` (positions with the old velocities). Then, on the new state:
///
/// * `terminated = x < -2.4 || x > 2.4 || theta < -0.2094... || theta > 0.2094...` (strict:
///   a state on a threshold goes on);
/// * reward 1.0 on every step, including the terminating one; a cart stepped again after it
///   terminated (undefined behaviour in gym, which keeps integrating) gets 0.0 while it stays
///   out of bounds. The flag comes from the state, as in gym: a cart that drifts back in
///   reads `terminated = false` and reward 1.0, and its next fall is rewarded 0.0 (gym's
///   `steps_beyond_terminated` is no longer `None`);
/// * `truncated = step_count >= max_episode_steps`, independent of `terminated`, so both can
///   be true, and it stays true on later steps; `done = terminated | truncated`.
///
/// `reset()` draws every state component from `U(reset_low, reset_high)` with the env's
/// generator (gym draws numpy's PCG64 stream, which a port cannot reproduce; the distribution
/// is the same). `reset(td)` with a `"state"` entry and no `"_reset"` mask starts from that
/// state instead (as gym's `env.unwrapped.state = ...` after a reset); with a mask only the
/// masked carts restart. On the CPU a step is one loop over the carts (glibc's `sin`/`cos`:
/// bit-exact to gym on glibc, whatever `-ffp-contract`; `-ffast-math` is not supported); on
/// other devices a chain of tensor ops in the same order, whose `sin`/`cos` may differ by an
/// ulp.
///
/// ```
/// auto env = rlobj::envs::CartPole(rlobj::envs::CartPoleOptions().batch_size({8}).seed(1));
/// rlobj::TensorDict td = env.reset();
/// td.set("action", torch::tensor({0, 1}).repeat({8, 1}));  // one-hot: push right
/// env.step(td);  // td["next"] holds observation, reward, done, terminated, truncated, ...
/// ```
class CartPole : public EnvBase {
 public:
  // Gym's constants: Python floats, evaluated as gym writes them.
  static constexpr double kGravity = 9.8;                          ///< `gravity`
  static constexpr double kMassCart = 1.0;                         ///< `masscart`
  static constexpr double kMassPole = 0.1;                         ///< `masspole`
  static constexpr double kTotalMass = kMassPole + kMassCart;      ///< `masspole + masscart` = 1.1
  static constexpr double kLength = 0.5;                           ///< `length`: half the pole's length
  static constexpr double kPoleMassLength = kMassPole * kLength;   ///< `masspole * length` = 0.05
  static constexpr double kForceMag = 10.0;                        ///< `force_mag`: the push, either way
  static constexpr double kTau = 0.02;                             ///< `tau`: seconds per step
  static constexpr double kThetaThresholdRadians = 12 * 2 * M_PI / 360;  ///< `12 * 2 * math.pi / 360`
  static constexpr double kXThreshold = 2.4;                       ///< `x_threshold`

  /// Checks the options (`c10::ValueError` naming the option) and builds the specs.
  explicit CartPole(CartPoleOptions options = {})
      : EnvBase(options.batch_size(), options.device(), options.seed()), options_(std::move(options)) {
    TORCH_CHECK_VALUE(options_.dtype() == torch::kFloat32 || options_.dtype() == torch::kFloat64,
                      "CartPoleOptions: dtype must be float32 or float64, got ",
                      rlobj::detail::dtype_str(options_.dtype()));
    TORCH_CHECK_VALUE(options_.max_episode_steps() >= 0, "CartPoleOptions: max_episode_steps must be >= 0, got ",
                      options_.max_episode_steps());
    TORCH_CHECK_VALUE(std::isfinite(options_.reset_low()) && std::isfinite(options_.reset_high()) &&
                          options_.reset_low() <= options_.reset_high(),
                      "CartPoleOptions: reset_low and reset_high must be finite with reset_low <= reset_high, got ",
                      options_.reset_low(), " and ", options_.reset_high());
    for (auto s : batch_size_) {
      TORCH_CHECK_VALUE(s > 0, "CartPoleOptions: batch_size dims must be positive, got ",
                        rlobj::detail::shape_str(batch_size_));
    }
    const auto dev = options_.device();
    state_shape_ = batch_size_;
    state_shape_.push_back(4);
    action_shape_ = batch_size_;
    if (!options_.categorical_action_encoding()) action_shape_.push_back(2);
    // Gym's Box bounds ([4.8, inf, 0.419, inf]) are informational: nothing clips the state,
    // and a cart stepped past termination leaves them. Unbounded keeps `is_in` true for every
    // reachable observation (and `rand` finite).
    const double count_high = static_cast<double>(std::numeric_limits<int32_t>::max());
    observation_spec_.set("observation", Unbounded({4}, options_.dtype(), dev).expand(batch_size_))
        .set("state", Unbounded({4}, torch::kFloat64, dev).expand(batch_size_))
        .set("step_count", Bounded(0, count_high, {1}, torch::kInt64, dev).expand(batch_size_))
        .set("steps_beyond_terminated", Bounded(-1, count_high, {1}, torch::kInt64, dev).expand(batch_size_));
    if (options_.categorical_action_encoding()) {
      action_spec_ = Categorical(2, {}, torch::kInt64, dev).expand(batch_size_);
    } else {
      action_spec_ = OneHot(2, {2}, torch::kInt64, dev).expand(batch_size_);
    }
    reward_spec_ = Unbounded({1}, options_.dtype(), dev).expand(batch_size_);
    for (const char* k : {"done", "terminated", "truncated"}) {
      done_spec_.set(k, Categorical(2, {1}, torch::kBool, dev).expand(batch_size_));
    }
  }

  /// The options the env was built with.
  const CartPoleOptions& options() const noexcept { return options_; }
  /// `"CartPole"`, in error messages.
  const char* name() const override { return "CartPole"; }

 protected:
  TensorDict reset_impl(const TensorDict* td) override {
    torch::Tensor mask = reset_mask(td);
    const bool given_state = td != nullptr && !mask.defined() && td->contains("state");
    torch::Tensor state;
    if (given_state) {
      state = checked_state(*td, "reset");
      TORCH_CHECK_VALUE(state.isfinite().all().item<bool>(), "CartPole.reset: \"state\" must be finite, got ",
                        state.min().item<double>(), " .. ", state.max().item<double>());
    }
    // A partial reset keeps the unmasked carts' entries: all of them are checked here, before
    // the generator draws, so that a rejected reset changes nothing.
    torch::Tensor kept_state;
    constexpr int kFlags = 5;
    const char* const flag_names[kFlags] = {"step_count", "steps_beyond_terminated", "done", "terminated",
                                            "truncated"};
    const torch::Tensor* kept[kFlags] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    if (mask.defined()) {
      kept_state = checked_state(*td, "reset");
      for (int i = 0; i < kFlags; ++i) {
        kept[i] = td->find(flag_names[i]);
        if (kept[i] != nullptr) check_flag(*kept[i], flag_names[i], i < 2 ? torch::kInt64 : torch::kBool, "reset");
      }
    }
    if (!given_state) {
      // gym: np_random.uniform(low, high, size=(4,)) = low + (high - low) * U[0, 1), in double.
      // Drawn on the CPU generator whatever the device, so a seed gives the same states
      // everywhere.
      auto u = torch::rand(state_shape_, generator_, torch::TensorOptions().dtype(torch::kFloat64));
      const double low = options_.reset_low(), span = options_.reset_high() - options_.reset_low();
      state = (u * span + low).to(device_);
    }
    const auto long_opts = torch::TensorOptions().dtype(torch::kInt64).device(device_);
    auto step_count = torch::zeros(flag_shape_, long_opts);
    auto beyond = torch::full(flag_shape_, -1, long_opts);
    auto falses = torch::zeros(flag_shape_, torch::TensorOptions().dtype(torch::kBool).device(device_));
    torch::Tensor done = falses, terminated = falses, truncated = falses;
    if (mask.defined()) {
      state = torch::where(mask, state, kept_state);
      if (kept[0] != nullptr) step_count = torch::where(mask, step_count, *kept[0]);
      if (kept[1] != nullptr) beyond = torch::where(mask, beyond, *kept[1]);
      torch::Tensor* flags[] = {&done, &terminated, &truncated};
      for (int i = 0; i < 3; ++i) {
        if (kept[i + 2] != nullptr) *flags[i] = torch::where(mask, falses, *kept[i + 2]);
      }
    }
    TensorDict out(batch_size_);
    out.set("observation", state.to(options_.dtype()));
    out.set("state", state);
    out.set("step_count", step_count);
    out.set("steps_beyond_terminated", beyond);
    out.set("done", done);
    out.set("terminated", terminated);
    out.set("truncated", truncated);
    return out;
  }

  TensorDict step_impl(const TensorDict& td) override {
    // Every check runs before anything is computed: a rejected step leaves `td` as it was.
    const torch::Tensor* action_ptr = td.find("action");
    TORCH_CHECK(action_ptr != nullptr, "CartPole.step: the TensorDict has no \"action\"; keys present: ",
                rlobj::detail::keys_str(td.keys(true)));
    const torch::Tensor& action = *action_ptr;
    const bool one_hot = !options_.categorical_action_encoding();
    TORCH_CHECK_VALUE(action.sizes() == c10::IntArrayRef(action_shape_), "CartPole.step: \"action\" has shape ",
                      rlobj::detail::shape_str(action.sizes()), ", expected ", rlobj::detail::shape_str(action_shape_),
                      one_hot ? " (int64 one-hot; categorical_action_encoding is false)"
                              : " (int64 index; categorical_action_encoding is true)");
    TORCH_CHECK_TYPE(action.scalar_type() == torch::kInt64, "CartPole.step: \"action\" has dtype ",
                     rlobj::detail::dtype_str(action.scalar_type()), ", expected int64 (",
                     one_hot ? "one-hot [1, 0] or [0, 1]" : "0 or 1", ")");
    TORCH_CHECK_VALUE(action.device() == device_, "CartPole.step: \"action\" is on ", action.device().str(),
                      ", expected ", device_.str());
    const torch::Tensor state = checked_state(td, "step");
    const torch::Tensor step_count = required_flag(td, "step_count", torch::kInt64);
    const torch::Tensor beyond = required_flag(td, "steps_beyond_terminated", torch::kInt64);

    StepOut out;
    if (options_.fused_cpu_step() && device_.is_cpu()) {
      check_action_values_cpu(action, one_hot);
      fused_step(action, one_hot, state, step_count, beyond, &out);
    } else {
      check_action_values(action, one_hot);
      tensor_step(action, one_hot, state, step_count, beyond, &out);
    }
    TensorDict next(batch_size_);
    next.set("observation", out.obs);
    next.set("state", out.state);
    next.set("step_count", out.step_count);
    next.set("steps_beyond_terminated", out.beyond);
    next.set("reward", out.reward);
    next.set("done", out.terminated | out.truncated);
    next.set("terminated", out.terminated);
    next.set("truncated", out.truncated);
    return next;
  }

 private:
  struct StepOut {
    torch::Tensor state, obs, reward, terminated, truncated, step_count, beyond;
  };

  torch::Tensor checked_state(const TensorDict& td, const char* where) const {
    const torch::Tensor* t = td.find("state");
    TORCH_CHECK(t != nullptr, "CartPole.", where, ": the TensorDict has no \"state\"; use a TensorDict made by "
                "reset() or step_mdp()");
    TORCH_CHECK(t->sizes() == c10::IntArrayRef(state_shape_) && t->scalar_type() == torch::kFloat64 &&
                    t->device() == device_,
                "CartPole.", where, ": \"state\" must be float64 of shape ", rlobj::detail::shape_str(state_shape_),
                " on ", device_.str(), " (x, x_dot, theta, theta_dot), got ",
                rlobj::detail::dtype_str(t->scalar_type()), " ", rlobj::detail::shape_str(t->sizes()), " on ",
                t->device().str());
    return *t;
  }

  void check_flag(const torch::Tensor& t, const char* key, torch::Dtype want, const char* where) const {
    TORCH_CHECK(t.scalar_type() == want && t.sizes() == c10::IntArrayRef(flag_shape_) && t.device() == device_,
                "CartPole.", where, ": \"", key, "\" must be ", rlobj::detail::dtype_str(want), " of shape ",
                rlobj::detail::shape_str(flag_shape_), " on ", device_.str(), ", got ",
                rlobj::detail::dtype_str(t.scalar_type()), " ", rlobj::detail::shape_str(t.sizes()), " on ",
                t.device().str());
  }

  torch::Tensor required_flag(const TensorDict& td, const char* key, torch::Dtype want) const {
    const torch::Tensor* t = td.find(key);
    TORCH_CHECK(t != nullptr, "CartPole.step: the TensorDict has no \"", key, "\"; use a TensorDict made by "
                "reset() or step_mdp()");
    check_flag(*t, key, want, "step");
    return *t;
  }

  // "row 3 ([1, 2] in batch [4, 2])", or "element 3" for categorical actions.
  std::string where_in_batch(int64_t flat, bool one_hot) const {
    std::vector<int64_t> index(batch_size_.size());
    int64_t rest = flat;
    for (size_t d = batch_size_.size(); d-- > 0;) {
      index[d] = rest % batch_size_[d];
      rest /= batch_size_[d];
    }
    return fmt::format("{} {} (index {} in batch_size {})", one_hot ? "row" : "element", flat,
                       rlobj::detail::shape_str(index), rlobj::detail::shape_str(batch_size_));
  }

  [[noreturn]] void bad_action(int64_t flat, bool one_hot, int64_t a0, int64_t a1) const {
    if (one_hot) {
      TORCH_CHECK_VALUE(false, "CartPole.step: \"action\" must be one-hot along its last dim ([1, 0] pushes left, "
                        "[0, 1] right), but ", where_in_batch(flat, true), " is [", a0, ", ", a1, "]");
    }
    TORCH_CHECK_VALUE(false, "CartPole.step: \"action\" must be 0 (push left) or 1 (push right), but ",
                      where_in_batch(flat, false), " is ", a0);
    std::abort();  // unreachable; for compilers that do not see TORCH_CHECK_VALUE(false) as noreturn
  }

  void check_action_values_cpu(const torch::Tensor& action, bool one_hot) const {
    const auto a = action.contiguous();
    const int64_t* pa = a.data_ptr<int64_t>();
    const int64_t n = one_hot ? a.numel() / 2 : a.numel();
    for (int64_t i = 0; i < n; ++i) {
      if (one_hot) {
        const int64_t a0 = pa[2 * i], a1 = pa[2 * i + 1];
        if (!((a0 == 0 && a1 == 1) || (a0 == 1 && a1 == 0))) bad_action(i, true, a0, a1);
      } else if (pa[i] != 0 && pa[i] != 1) {
        bad_action(i, false, pa[i], 0);
      }
    }
  }

  void check_action_values(const torch::Tensor& action, bool one_hot) const {
    if (action.numel() == 0) return;
    torch::Tensor ok = (action == 0) | (action == 1);
    if (one_hot) ok = ok.all(-1) & (action.sum(-1) == 1);
    if (ok.all().item<bool>()) return;
    const int64_t flat = ok.flatten().logical_not().nonzero()[0][0].item<int64_t>();
    const auto rows = action.reshape({-1, one_hot ? 2 : 1}).cpu();
    bad_action(flat, one_hot, rows[flat][0].item<int64_t>(), one_hot ? rows[flat][1].item<int64_t>() : 0);
  }

  // Reward and the new steps_beyond_terminated from the new flag (gym's if/elif/else).
  static std::pair<double, int64_t> reward_of(bool terminated, int64_t beyond, bool sutton_barto) {
    if (!terminated) return {sutton_barto ? 0.0 : 1.0, beyond};
    if (beyond < 0) return {sutton_barto ? -1.0 : 1.0, 0};  // the pole just fell
    return {sutton_barto ? -1.0 : 0.0, beyond + 1};         // stepped after termination
  }

  // Gym's step, one pass over the carts (CPU). The arithmetic is gym's, operation by
  // operation, in double; products that feed a sum go through `no_contract`.
  void fused_step(const torch::Tensor& action, bool one_hot, const torch::Tensor& state_in,
                  const torch::Tensor& step_count_in, const torch::Tensor& beyond_in, StepOut* out) const {
    const auto a = action.contiguous();
    const auto s = state_in.contiguous();
    const auto sc = step_count_in.contiguous();
    const auto bt = beyond_in.contiguous();
    out->state = torch::empty(state_shape_, s.options());
    out->obs = torch::empty(state_shape_, s.options().dtype(options_.dtype()));
    out->reward = torch::empty(flag_shape_, s.options().dtype(options_.dtype()));
    out->terminated = torch::empty(flag_shape_, s.options().dtype(torch::kBool));
    out->truncated = torch::empty(flag_shape_, s.options().dtype(torch::kBool));
    out->step_count = torch::empty(flag_shape_, sc.options());
    out->beyond = torch::empty(flag_shape_, bt.options());
    const int64_t* pa = a.data_ptr<int64_t>();
    const double* ps = s.data_ptr<double>();
    const int64_t* psc = sc.data_ptr<int64_t>();
    const int64_t* pbt = bt.data_ptr<int64_t>();
    double* ns = out->state.data_ptr<double>();
    bool* nterm = out->terminated.data_ptr<bool>();
    bool* ntrunc = out->truncated.data_ptr<bool>();
    int64_t* nsc = out->step_count.data_ptr<int64_t>();
    int64_t* nbt = out->beyond.data_ptr<int64_t>();
    const int64_t max_steps = options_.max_episode_steps();
    const bool sutton_barto = options_.sutton_barto_reward();
    const int64_t n = s.numel() / 4;
    AT_DISPATCH_FLOATING_TYPES(options_.dtype(), "CartPole.step", [&] {
      using T = scalar_t;
      T* obs = out->obs.data_ptr<T>();
      T* rew = out->reward.data_ptr<T>();
      // Each cart is independent: splitting the batch over threads changes no bit.
      at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
        using detail::no_contract;
        for (int64_t i = begin; i < end; ++i) {
          const bool push_right = one_hot ? pa[2 * i + 1] == 1 : pa[i] == 1;
          const double x = ps[4 * i], x_dot = ps[4 * i + 1], theta = ps[4 * i + 2], theta_dot = ps[4 * i + 3];
          const double force = push_right ? kForceMag : -kForceMag;
          const double costheta = std::cos(theta);
          const double sintheta = std::sin(theta);
          const double temp =
              (force + no_contract(kPoleMassLength * (theta_dot * theta_dot) * sintheta)) / kTotalMass;
          const double thetaacc = (no_contract(kGravity * sintheta) - no_contract(costheta * temp)) /
                                  (kLength * (4.0 / 3.0 - kMassPole * (costheta * costheta) / kTotalMass));
          const double xacc = temp - kPoleMassLength * thetaacc * costheta / kTotalMass;
          const double x1 = x + no_contract(kTau * x_dot);
          const double x_dot1 = x_dot + no_contract(kTau * xacc);
          const double theta1 = theta + no_contract(kTau * theta_dot);
          const double theta_dot1 = theta_dot + no_contract(kTau * thetaacc);
          ns[4 * i] = x1;
          ns[4 * i + 1] = x_dot1;
          ns[4 * i + 2] = theta1;
          ns[4 * i + 3] = theta_dot1;
          obs[4 * i] = static_cast<T>(x1);
          obs[4 * i + 1] = static_cast<T>(x_dot1);
          obs[4 * i + 2] = static_cast<T>(theta1);
          obs[4 * i + 3] = static_cast<T>(theta_dot1);
          const bool terminated = x1 < -kXThreshold || x1 > kXThreshold || theta1 < -kThetaThresholdRadians ||
                                  theta1 > kThetaThresholdRadians;
          const auto r = reward_of(terminated, pbt[i], sutton_barto);
          rew[i] = static_cast<T>(r.first);
          nbt[i] = r.second;
          nterm[i] = terminated;
          nsc[i] = psc[i] == std::numeric_limits<int64_t>::max() ? psc[i] : psc[i] + 1;  // saturates, never wraps
          ntrunc[i] = max_steps > 0 && nsc[i] >= max_steps;
        }
      });
    });
  }

  // Gym's step as a chain of tensor ops (any device), in the same order. Divisions are by
  // full tensors: CUDA turns a division by a scalar into a multiplication by its reciprocal,
  // which rounds differently.
  void tensor_step(const torch::Tensor& action, bool one_hot, const torch::Tensor& state,
                   const torch::Tensor& step_count_in, const torch::Tensor& beyond_in, StepOut* out) const {
    const torch::Tensor push_right = one_hot ? action.select(-1, 1) == 1 : action == 1;
    const torch::Tensor x = state.select(-1, 0), x_dot = state.select(-1, 1);
    const torch::Tensor theta = state.select(-1, 2), theta_dot = state.select(-1, 3);
    const torch::Tensor total_mass = torch::full_like(x, kTotalMass);
    const torch::Tensor force = torch::where(push_right, torch::full_like(x, kForceMag), torch::full_like(x, -kForceMag));
    const torch::Tensor costheta = theta.cos();
    const torch::Tensor sintheta = theta.sin();
    const torch::Tensor temp = (force + (theta_dot * theta_dot * kPoleMassLength) * sintheta) / total_mass;
    const torch::Tensor denom = (torch::full_like(x, 4.0 / 3.0) - (costheta * costheta * kMassPole) / total_mass) * kLength;
    const torch::Tensor thetaacc = (sintheta * kGravity - costheta * temp) / denom;
    const torch::Tensor xacc = temp - ((thetaacc * kPoleMassLength) * costheta) / total_mass;
    const torch::Tensor x1 = x + x_dot * kTau;
    const torch::Tensor x_dot1 = x_dot + xacc * kTau;
    const torch::Tensor theta1 = theta + theta_dot * kTau;
    const torch::Tensor theta_dot1 = theta_dot + thetaacc * kTau;
    out->state = torch::stack({x1, x_dot1, theta1, theta_dot1}, -1);
    out->obs = out->state.to(options_.dtype());
    const torch::Tensor terminated = ((x1 < -kXThreshold) | (x1 > kXThreshold) | (theta1 < -kThetaThresholdRadians) |
                                      (theta1 > kThetaThresholdRadians))
                                         .unsqueeze(-1);
    const bool sb = options_.sutton_barto_reward();
    const torch::Tensor first = terminated & (beyond_in < 0);
    const torch::Tensor after = terminated & (beyond_in >= 0);
    const auto reward_opts = state.options().dtype(options_.dtype());
    torch::Tensor reward = torch::full(flag_shape_, sb ? 0.0 : 1.0, reward_opts);
    reward = torch::where(after, torch::full(flag_shape_, sb ? -1.0 : 0.0, reward_opts), reward);
    reward = torch::where(first, torch::full(flag_shape_, sb ? -1.0 : 1.0, reward_opts), reward);
    out->reward = reward;
    out->beyond = torch::where(first, torch::zeros_like(beyond_in), torch::where(after, beyond_in + 1, beyond_in));
    out->terminated = terminated;
    // Saturating: a count at INT64_MAX stays there (and truncates) instead of wrapping negative.
    out->step_count = step_count_in.clamp_max(std::numeric_limits<int64_t>::max() - 1) + 1;
    out->truncated = options_.max_episode_steps() > 0 ? out->step_count >= options_.max_episode_steps()
                                                      : torch::zeros_like(terminated);
  }

  CartPoleOptions options_;
  std::vector<int64_t> state_shape_;   // [*batch, 4]
  std::vector<int64_t> action_shape_;  // [*batch, 2] one-hot, [*batch] categorical
};

}  // namespace envs
}  // namespace rlobj
