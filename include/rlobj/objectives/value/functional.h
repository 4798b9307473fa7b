#pragma once

/// \file
/// Return and advantage estimates on plain tensors (TorchRL's
/// `torchrl.objectives.value.functional`). Every input has shape `[*B, T, F]` with time at
/// dim -2 (TorchRL's default `time_dim`); `done` and `terminated` are bool.
///
/// Truncation versus termination follows TorchRL: a step that is `done` but not
/// `terminated` (a time limit) bootstraps from the next state's value; a `terminated` step
/// does not.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"

namespace rlobj {
namespace objectives {
namespace value {

namespace detail {

using NamedTensors = std::vector<std::pair<const char*, const torch::Tensor*>>;

inline void check_same_shapes(const char* where, const NamedTensors& ts) {
  const auto& first = ts.front();
  for (const auto& t : ts) {
    TORCH_CHECK(t.second->defined(), where, ": ", t.first, " is undefined");
    TORCH_CHECK(t.second->sizes() == first.second->sizes(), where, ": ", t.first, " has shape ",
                rlobj::detail::shape_str(t.second->sizes()), " but ", first.first, " has shape ",
                rlobj::detail::shape_str(first.second->sizes()), "; all must match exactly");
  }
}

/// Values, rewards and advantages: floating point, one dtype (no silent promotion of a float64
/// reward against float32 values).
inline void check_floating(const char* where, const NamedTensors& ts) {
  const auto& first = ts.front();
  for (const auto& t : ts) {
    TORCH_CHECK_TYPE(t.second->is_floating_point(), where, ": ", t.first, " must be a floating-point tensor, got ",
                     rlobj::detail::dtype_str(t.second->scalar_type()));
    TORCH_CHECK_TYPE(t.second->scalar_type() == first.second->scalar_type(), where, ": ", t.first, " is ",
                     rlobj::detail::dtype_str(t.second->scalar_type()), " but ", first.first, " is ",
                     rlobj::detail::dtype_str(first.second->scalar_type()), "; convert them to one dtype");
  }
}

/// A discount or a lambda: a number in [0, 1] (NaN fails too).
inline void check_unit(const char* where, const char* name, double v) {
  TORCH_CHECK_VALUE(v >= 0.0 && v <= 1.0, where, ": ", name, " must be in [0, 1], got ", v);
}

inline void check_bool(const char* where, const char* name, const torch::Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == torch::kBool, where, ": ", name, " must be bool, got ",
                   rlobj::detail::dtype_str(t.scalar_type()));
}

inline void check_time(const char* where, const torch::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() >= 2, where, ": expected tensors of shape [*B, T, F] (time at dim -2), got ",
                    rlobj::detail::shape_str(t.sizes()));
  TORCH_CHECK_VALUE(t.size(-2) > 0, where, ": the time dim (dim -2) is empty: shape ",
                    rlobj::detail::shape_str(t.sizes()));
}

/// The checks shared by the trajectory estimators: equal shapes, bool flags, a time dim.
inline void check_trajectory(const char* where, NamedTensors values, const torch::Tensor& done,
                             const torch::Tensor& terminated) {
  check_floating(where, values);
  values.emplace_back("done", &done);
  values.emplace_back("terminated", &terminated);
  check_same_shapes(where, values);
  check_bool(where, "done", done);
  check_bool(where, "terminated", terminated);
  check_time(where, done);
}

/// `1` where `flag` is false, `0` where true, in `like`'s dtype. (An int mask would make
/// `double * mask` a float32 tensor, silently rounding float64 computations.)
inline torch::Tensor not_mask(const torch::Tensor& flag, const torch::Tensor& like) {
  return flag.logical_not().to(like.scalar_type());
}

/// A tensor gamma: floating, 0-dim or of `reward`'s shape with a dtype that does not widen the
/// reward's (a float64 gamma of full shape would silently make a float32 target float64; a
/// float32 one under float64 rewards is TorchRL's own case), on `reward`'s device, in [0, 1] (that
/// check only on the CPU: on another device it would cost a host sync per call).
inline void check_gamma_tensor(const char* where, const torch::Tensor& gamma, const torch::Tensor& reward) {
  TORCH_CHECK_VALUE(gamma.defined(), where, ": gamma is an undefined tensor");
  TORCH_CHECK_TYPE(at::isFloatingType(gamma.scalar_type()), where, ": gamma must be floating point, got ",
                   rlobj::detail::dtype_str(gamma.scalar_type()));
  TORCH_CHECK_VALUE(gamma.dim() == 0 || (gamma.sizes() == reward.sizes() &&
                                         at::promote_types(gamma.scalar_type(), reward.scalar_type()) ==
                                             reward.scalar_type()),
                    where, ": gamma must be 0-dim or a tensor of the reward's shape ",
                    rlobj::detail::shape_str(reward.sizes()), " whose dtype does not widen the reward's (",
                    rlobj::detail::dtype_str(reward.scalar_type()), "), got ",
                    rlobj::detail::dtype_str(gamma.scalar_type()), " ", rlobj::detail::shape_str(gamma.sizes()));
  TORCH_CHECK_VALUE(gamma.device() == reward.device() || (gamma.dim() == 0 && gamma.is_cpu()), where,
                    ": gamma is on ", gamma.device().str(), " but the reward on ", reward.device().str());
  if (gamma.is_cpu() && gamma.dim() == 0) {
    // The usual case (an estimator's scalar gamma), checked with one read instead of four ops.
    const double g = gamma.item<double>();
    TORCH_CHECK_VALUE(g >= 0 && g <= 1, where, ": gamma must be in [0, 1], got ", g);
  } else if (gamma.is_cpu()) {
    TORCH_CHECK_VALUE(((gamma >= 0) & (gamma <= 1)).all().item<bool>(), where, ": gamma must be in [0, 1], got ",
                      gamma.min().item<double>(), " .. ", gamma.max().item<double>());
  }
}

}  // namespace detail

namespace detail {
template <typename Gamma>
torch::Tensor td0(const Gamma& gamma, const torch::Tensor& next_state_value, const torch::Tensor& reward,
                  const torch::Tensor& terminated) {
  constexpr const char* where = "td0_return_estimate";
  check_floating(where, {{"next_state_value", &next_state_value}, {"reward", &reward}});
  check_same_shapes(where, {{"next_state_value", &next_state_value}, {"reward", &reward}, {"terminated", &terminated}});
  check_bool(where, "terminated", terminated);
  if constexpr (std::is_arithmetic<Gamma>::value) {
    check_unit(where, "gamma", gamma);
  } else {
    check_gamma_tensor(where, gamma, reward);
  }
  auto not_terminated = not_mask(terminated, next_state_value);
  return reward + gamma * not_terminated * next_state_value;
}
}  // namespace detail

/// TD(0) return: `reward + gamma * (!terminated) * next_state_value`. `gamma` may be a 0-dim
/// tensor (the estimators pass a float32 one, as TorchRL does) or a tensor of the inputs'
/// shape.
inline torch::Tensor td0_return_estimate(const torch::Tensor& gamma, const torch::Tensor& next_state_value,
                                         const torch::Tensor& reward, const torch::Tensor& terminated) {
  return detail::td0(gamma, next_state_value, reward, terminated);
}

/// TD(0) return with a scalar `gamma`.
inline torch::Tensor td0_return_estimate(double gamma, const torch::Tensor& next_state_value,
                                         const torch::Tensor& reward, const torch::Tensor& terminated) {
  return detail::td0(gamma, next_state_value, reward, terminated);
}

/// TD(0) advantage: `td0_return_estimate(...) - state_value`.
inline torch::Tensor td0_advantage_estimate(double gamma, const torch::Tensor& state_value,
                                            const torch::Tensor& next_state_value,
                                            const torch::Tensor& reward, const torch::Tensor& terminated) {
  detail::check_floating("td0_advantage_estimate", {{"state_value", &state_value}, {"next_state_value", &next_state_value}});
  detail::check_same_shapes("td0_advantage_estimate", {{"state_value", &state_value},
                                                       {"next_state_value", &next_state_value}});
  return td0_return_estimate(gamma, next_state_value, reward, terminated) - state_value;
}

/// TD(1) (Monte-Carlo) return, bootstrapped with `next_state_value` where a trajectory is
/// truncated (`done && !terminated`) and at the end of the data; zero past termination.
inline torch::Tensor td1_return_estimate(double gamma, const torch::Tensor& next_state_value,
                                         const torch::Tensor& reward, const torch::Tensor& done,
                                         const torch::Tensor& terminated) {
  detail::check_unit("td1_return_estimate", "gamma", gamma);
  detail::check_trajectory("td1_return_estimate", {{"next_state_value", &next_state_value}, {"reward", &reward}},
                           done, terminated);
  auto gammas = torch::full_like(next_state_value, gamma) * detail::not_mask(terminated, next_state_value);
  auto dnt = (done & terminated.logical_not()).to(next_state_value.scalar_type());
  auto returns = torch::empty_like(next_state_value);
  const int64_t T = returns.size(-2);
  torch::Tensor g = next_state_value.select(-2, T - 1);
  for (int64_t i = T - 1; i >= 0; --i) {
    auto d = dnt.select(-2, i);
    g = reward.select(-2, i) + gammas.select(-2, i) * ((1 - d) * g + d * next_state_value.select(-2, i));
    returns.select(-2, i).copy_(g);
  }
  return returns;
}

/// TD(lambda) return (TorchRL's recursive form).
inline torch::Tensor td_lambda_return_estimate(double gamma, double lmbda, const torch::Tensor& next_state_value,
                                               const torch::Tensor& reward, const torch::Tensor& done,
                                               const torch::Tensor& terminated) {
  detail::check_unit("td_lambda_return_estimate", "gamma", gamma);
  detail::check_unit("td_lambda_return_estimate", "lmbda", lmbda);
  detail::check_trajectory("td_lambda_return_estimate",
                           {{"next_state_value", &next_state_value}, {"reward", &reward}}, done, terminated);
  auto returns = torch::empty_like(next_state_value);
  auto nsv = next_state_value * detail::not_mask(terminated, next_state_value);
  const int64_t T = returns.size(-2);
  torch::Tensor g = nsv.select(-2, T - 1);
  for (int64_t i = T - 1; i >= 0; --i) {
    auto dn = done.select(-2, i).to(nsv.scalar_type());
    auto nv = nsv.select(-2, i);
    // Where done, the bootstrapped gain is the next value; else the one from the step after.
    g = g * (1 - dn) + nv * dn;
    g = reward.select(-2, i) + gamma * ((1 - lmbda) * nv + lmbda * g);
    returns.select(-2, i).copy_(g);
  }
  return returns;
}

/// Generalized advantage estimate; returns `(advantage, value_target)` with
/// `value_target = advantage + state_value`.
inline std::tuple<torch::Tensor, torch::Tensor> generalized_advantage_estimate(
    double gamma, double lmbda, const torch::Tensor& state_value, const torch::Tensor& next_state_value,
    const torch::Tensor& reward, const torch::Tensor& done, const torch::Tensor& terminated) {
  detail::check_unit("generalized_advantage_estimate", "gamma", gamma);
  detail::check_unit("generalized_advantage_estimate", "lmbda", lmbda);
  detail::check_trajectory("generalized_advantage_estimate",
                           {{"state_value", &state_value}, {"next_state_value", &next_state_value}, {"reward", &reward}},
                           done, terminated);
  auto not_done = detail::not_mask(done, next_state_value);
  auto not_terminated = detail::not_mask(terminated, next_state_value);
  auto advantage = torch::empty_like(next_state_value);
  auto delta = reward + (gamma * not_terminated * next_state_value) - state_value;
  auto discount = lmbda * gamma * not_done;
  const int64_t T = advantage.size(-2);
  torch::Tensor prev = torch::zeros_like(delta.select(-2, 0));
  for (int64_t t = T - 1; t >= 0; --t) {
    prev = delta.select(-2, t) + prev * discount.select(-2, t);
    advantage.select(-2, t).copy_(prev);
  }
  return {advantage, advantage + state_value};
}

}  // namespace value
}  // namespace objectives
}  // namespace rlobj
