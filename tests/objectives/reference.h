#pragma once

// Rebuilds the deterministic networks and batch of tests/data/reference/ddpg_torchrl.json, as its
// `meta` describes, optionally perturbed (see parity.h).

#include <cmath>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <rlobj/rlobj.h>
#include <torch/torch.h>

#include "objectives/parity.h"

namespace rlobj_test {

inline const nlohmann::json& reference() { return reference_file("ddpg_torchrl.json"); }

/// meta.weight_formula: w[p][k] = float32(0.1 * sin(0.37 k + 1.3 p)).
inline torch::Tensor canonical_weight(int p, c10::IntArrayRef sizes) {
  int64_t n = 1;
  for (auto d : sizes) n *= d;
  std::vector<float> flat(static_cast<size_t>(n));
  for (size_t k = 0; k < flat.size(); ++k) {
    flat[k] = static_cast<float>(0.1 * std::sin(0.37 * static_cast<double>(k) + 1.3 * p));
  }
  return torch::tensor(flat).view(sizes);
}

/// The MLP parameter names in meta.canonical_param_order.
inline const std::vector<std::string>& mlp_param_names() {
  static const std::vector<std::string> names = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"};
  return names;
}

/// Fills `mlp` with the canonical weights from index `first_index` on, in the perturbed layout,
/// and converts it to the perturbation's dtype.
inline void fill_canonical(rlobj::modules::MLP& mlp, int first_index, const parity::MlpLayout& layout,
                           torch::Dtype dtype) {
  mlp->to(dtype);
  torch::NoGradGuard no_grad;
  auto named = mlp->named_parameters();
  for (size_t i = 0; i < mlp_param_names().size(); ++i) {
    const auto& name = mlp_param_names()[i];
    auto& p = named[name];
    p.copy_(layout.apply(name, canonical_weight(first_index + static_cast<int>(i), p.sizes())));
  }
}

struct ReferenceNets {
  explicit ReferenceNets(const parity::Perturbation& p = parity::Perturbation::none())
      : actor_layout("actor", {32, 32}, p), value_layout("value", {32, 32}, p) {
    fill_canonical(actor_mlp, 0, actor_layout, p.dtype);
    fill_canonical(value_mlp, 6, value_layout, p.dtype);
    actor = rlobj::modules::Actor(actor_mlp);
    value = rlobj::modules::ValueOperator(value_mlp, {"observation", "action"});
  }
  rlobj::modules::MLP actor_mlp{rlobj::modules::MLPOptions(3, 1).num_cells({32, 32})};
  rlobj::modules::MLP value_mlp{rlobj::modules::MLPOptions(4, 1).num_cells({32, 32})};
  parity::MlpLayout actor_layout, value_layout;
  rlobj::modules::Actor actor{nullptr};
  rlobj::modules::ValueOperator value{nullptr};

  /// canonical name ("actor.0.weight") -> the live parameter tensor (perturbed layout).
  torch::Tensor param(const std::string& canonical) {
    const bool is_actor = canonical.rfind("actor.", 0) == 0;
    return (is_actor ? actor_mlp : value_mlp)->named_parameters()[canonical.substr(6)];
  }
  /// `t`, a tensor shaped like parameter `canonical` in the perturbed layout, in the
  /// canonical layout.
  torch::Tensor canonical(const std::string& canonical, const torch::Tensor& t) const {
    const bool is_actor = canonical.rfind("actor.", 0) == 0;
    return (is_actor ? actor_layout : value_layout).apply(canonical.substr(6), t, /*inverse=*/true);
  }
};

/// meta.batch_formula, evaluated in double and rounded to float32, then (perturbed) its rows
/// permuted and converted to the perturbation's dtype. `extra_truncations`: rows 0 and 4 are
/// also done, though not terminated (a truncation must not change any result).
inline rlobj::TensorDict reference_batch(const parity::Perturbation& p = parity::Perturbation::none(),
                                         bool extra_truncations = false) {
  const int64_t B = 8;
  std::vector<float> obs_v, next_v, act_v, rew_v;
  std::vector<int64_t> done_v, term_v;
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      obs_v.push_back(static_cast<float>(std::sin(0.5 * i + 0.9 * j + 0.1)));
      next_v.push_back(static_cast<float>(std::sin(0.5 * i + 0.9 * j + 0.6)));
    }
    act_v.push_back(static_cast<float>(0.8 * std::cos(0.7 * i + 0.3)));
    rew_v.push_back(static_cast<float>(-0.5 + 0.25 * std::cos(1.7 * i + 0.2)));
    term_v.push_back(i % 3 == 2);
    done_v.push_back(i % 3 == 2 || (extra_truncations && i % 4 == 0));
  }
  auto f = [&](std::vector<float>& v, int64_t cols) { return torch::tensor(v).view({B, cols}).to(p.dtype); };
  auto b = [&](std::vector<int64_t>& v) { return torch::tensor(v).view({B, 1}).to(torch::kBool); };
  rlobj::TensorDict td({{"observation", f(obs_v, 3)},
                        {"action", f(act_v, 1)},
                        {{"next", "observation"}, f(next_v, 3)},
                        {{"next", "reward"}, f(rew_v, 1)},
                        {{"next", "done"}, b(done_v)},
                        {{"next", "terminated"}, b(term_v)}},
                       {B});
  return td.index({p.perm("batch", B)});
}

}  // namespace rlobj_test
