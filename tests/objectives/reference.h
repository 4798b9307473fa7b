#pragma once

// Reads shared/reference/ddpg_torchrl.json (vendored under tests/data/reference/) and rebuilds
// its deterministic networks and batch, as its `meta` describes.

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <rlobj/rlobj.h>
#include <torch/torch.h>

namespace rlobj_test {

inline const nlohmann::json& reference() {
  static const nlohmann::json j = [] {
    std::ifstream in(std::string(RLOBJ_TEST_DATA_DIR) + "/reference/ddpg_torchrl.json");
    REQUIRE(in.good());
    return nlohmann::json::parse(in);
  }();
  return j;
}

/// meta.weight_formula: w[p][k] = float32(0.1 * sin(0.37 k + 1.3 p)).
inline void fill_canonical(std::vector<torch::Tensor> params, int first_index) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const int p = first_index + static_cast<int>(i);
    std::vector<float> flat(static_cast<size_t>(params[i].numel()));
    for (size_t k = 0; k < flat.size(); ++k) {
      flat[k] = static_cast<float>(0.1 * std::sin(0.37 * static_cast<double>(k) + 1.3 * p));
    }
    params[i].copy_(torch::tensor(flat).view(params[i].sizes()));
  }
}

/// The MLP parameters in meta.canonical_param_order: 0.weight, 0.bias, 2.weight, ...
inline std::vector<torch::Tensor> mlp_params(rlobj::modules::MLP& mlp) {
  std::vector<torch::Tensor> out;
  for (const char* name : {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}) {
    out.push_back(mlp->named_parameters()[name]);
  }
  return out;
}

struct ReferenceNets {
  rlobj::modules::MLP actor_mlp{rlobj::modules::MLPOptions(3, 1).num_cells({32, 32})};
  rlobj::modules::MLP value_mlp{rlobj::modules::MLPOptions(4, 1).num_cells({32, 32})};
  rlobj::modules::Actor actor{nullptr};
  rlobj::modules::ValueOperator value{nullptr};
  ReferenceNets() {
    fill_canonical(mlp_params(actor_mlp), 0);
    fill_canonical(mlp_params(value_mlp), 6);
    actor = rlobj::modules::Actor(actor_mlp);
    value = rlobj::modules::ValueOperator(value_mlp, {"observation", "action"});
  }
  /// canonical name ("actor.0.weight") -> parameter tensor
  torch::Tensor param(const std::string& canonical) {
    const bool is_actor = canonical.rfind("actor.", 0) == 0;
    const std::string local = canonical.substr(6);  // after "actor." / "value." 
    return (is_actor ? actor_mlp : value_mlp)->named_parameters()[local];
  }
};

/// meta.batch_formula, evaluated in double and rounded to float32.
inline rlobj::TensorDict reference_batch() {
  const int64_t B = 8;
  std::vector<float> obs_v, next_v, act_v, rew_v;
  std::vector<int64_t> done_v;
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      obs_v.push_back(static_cast<float>(std::sin(0.5 * i + 0.9 * j + 0.1)));
      next_v.push_back(static_cast<float>(std::sin(0.5 * i + 0.9 * j + 0.6)));
    }
    act_v.push_back(static_cast<float>(0.8 * std::cos(0.7 * i + 0.3)));
    rew_v.push_back(static_cast<float>(-0.5 + 0.25 * std::cos(1.7 * i + 0.2)));
    done_v.push_back(i % 3 == 2);
  }
  auto obs = torch::tensor(obs_v).view({B, 3}), next_obs = torch::tensor(next_v).view({B, 3});
  auto act = torch::tensor(act_v).view({B, 1}), rew = torch::tensor(rew_v).view({B, 1});
  auto done = torch::tensor(done_v).view({B, 1}).to(torch::kBool);
  return rlobj::TensorDict({{"observation", obs},
                            {"action", act},
                            {{"next", "observation"}, next_obs},
                            {{"next", "reward"}, rew},
                            {{"next", "done"}, done},
                            {{"next", "terminated"}, done.clone()}},
                           {B});
}

/// Tolerance of the parity tests: 1e-6 relative or 1e-7 absolute.
inline bool close(double got, double want, double rel = 1e-6, double abs = 1e-7) {
  return std::abs(got - want) <= std::max(abs, rel * std::abs(want));
}

/// Compares a tensor with a reference record: "values" (full, if present), "first", "norm" and
/// "sum" (whose tolerance scales with sqrt(n) * norm, a bound on sum |x_i|).
inline void check_record(const torch::Tensor& t, const nlohmann::json& rec, const std::string& what) {
  auto c = t.detach().to(torch::kFloat64).contiguous().flatten();
  std::vector<double> got(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  INFO(what);
  if (rec.contains("shape")) {
    std::vector<int64_t> shape = rec["shape"];
    CHECK(t.sizes().vec() == shape);
  }
  auto compare_list = [&](const nlohmann::json& list, const char* label) {
    REQUIRE(list.size() <= got.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const double want = list[i].get<double>();
      INFO(label << "[" << i << "]: got " << got[i] << " want " << want);
      CHECK(close(got[i], want));
    }
  };
  if (rec.contains("values")) {
    REQUIRE(rec["values"].size() == got.size());
    compare_list(rec["values"], "values");
  }
  if (rec.contains("first")) compare_list(rec["first"], "first");
  if (rec.contains("norm")) {
    const double norm = c.norm().item<double>();
    const double want = rec["norm"];
    INFO("norm: got " << norm << " want " << want);
    CHECK(close(norm, want));
    const double sum = c.sum().item<double>();
    const double want_sum = rec["sum"];
    INFO("sum: got " << sum << " want " << want_sum);
    CHECK(std::abs(sum - want_sum) <= 1e-6 * std::sqrt(static_cast<double>(got.size())) * want + 1e-7);
  }
}

}  // namespace rlobj_test
