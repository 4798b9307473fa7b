// TransformedEnv and the transforms (rlobj/envs/transforms.h): TorchRL 0.14.1's semantics, checked
// against the untransformed environment stepped with the same seed and actions.
#include <rlobj/rlobj.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "point_mass/point_mass.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_envs_transforms_test {

namespace rl = rlobj;
namespace e = rlobj::envs;
using Catch::Matchers::Contains;
using rl::TensorDict;

// A deterministic policy: the action depends on the observation's position in time only.
struct Ramp {
  int64_t t = 0;
  void operator()(TensorDict& td) {
    const auto& obs = td.get("observation");
    std::vector<int64_t> shape = obs.sizes().vec();
    shape.back() = 1;
    // Computed in float32, then given in the observation's dtype: a float64 environment gets the
    // value a float32 action cast back to float64 has.
    td.set("action", torch::full(shape, std::sin(0.3 * static_cast<double>(t++)) * 1.5,
                                 torch::TensorOptions().dtype(torch::kFloat32))
                         .to(obs.scalar_type()));
  }
};

std::shared_ptr<e::Pendulum> pendulum64(int64_t batch, uint64_t seed) {
  return std::make_shared<e::Pendulum>(e::PendulumOptions().batch_size({batch}).dtype(torch::kFloat64).seed(seed));
}

TEST_CASE("TransformedEnv: each transform's output from the base's, in order", "[envs][transforms]") {
  auto base = pendulum64(3, 5);
  auto norm = std::make_shared<e::ObservationNorm>(torch::tensor({0.1, -0.2, 0.3}), torch::tensor({2.0, 0.5, 0.25}));
  e::TransformedEnv env(base, {std::make_shared<e::DoubleToFloat>(), norm, std::make_shared<e::RewardScaling>(2.0, 0.125),
                              std::make_shared<e::RewardSum>(),
                              std::make_shared<e::StepCounter>(e::StepCounterOptions().step_count_key("steps"))});
  e::check_env_specs(env, 10);
  env.set_check_values(true);
  // The specs: observation float32, its bounds transformed; the action spec float32.
  const auto& obs_spec = dynamic_cast<const rl::Bounded&>(env.observation_spec().at("observation"));
  CHECK(obs_spec.dtype() == torch::kFloat32);
  CHECK(env.action_spec().dtype() == torch::kFloat32);
  CHECK(torch::allclose(obs_spec.high()[0], torch::tensor({1.0f * 2 + 0.1f, 1.0f * 0.5f - 0.2f, 8.0f * 0.25f + 0.3f})));
  CHECK(env.observation_spec().contains("episode_reward"));
  CHECK(env.observation_spec().at("steps").dtype() == torch::kInt64);

  env.set_seed(11);
  TensorDict out = env.rollout(60, Ramp{});
  auto reference = pendulum64(3, 5);
  reference->set_seed(11);
  TensorDict raw = reference->rollout(60, Ramp{});
  // DoubleToFloat then ObservationNorm (obs * scale + loc, in float32).
  for (const char* part : {"", "next"}) {
    auto key = [&](const char* k) { return std::string(part).empty() ? rl::NestedKey(k) : rl::NestedKey({part, k}); };
    torch::Tensor expected = raw.get(key("observation")).to(torch::kFloat32) * torch::tensor({2.0f, 0.5f, 0.25f}) +
                             torch::tensor({0.1f, -0.2f, 0.3f});
    CHECK(torch::equal(out.get(key("observation")), expected));
    CHECK(torch::equal(out.get(key("th")), raw.get(key("th"))));  // state: float64, untouched
  }
  // RewardScaling: reward * 0.125 + 2 (float64, the base's dtype).
  torch::Tensor reward = raw.get({"next", "reward"}) * 0.125 + 2.0;
  CHECK(torch::equal(out.get({"next", "reward"}), reward));
  // RewardSum: the running sum, 0 in the first root.
  CHECK(torch::equal(out.get("episode_reward").select(1, 0), torch::zeros({3, 1}, torch::kFloat64)));
  CHECK(torch::allclose(out.get({"next", "episode_reward"}), reward.cumsum(1), 1e-12, 1e-12));
  CHECK(torch::equal(out.get("episode_reward").narrow(1, 1, 59), out.get({"next", "episode_reward"}).narrow(1, 0, 59)));
  // StepCounter: 0 after the reset, +1 per step.
  CHECK(torch::equal(out.get({"next", "steps"}).squeeze(-1), torch::arange(1, 61).expand({3, 60})));
}

TEST_CASE("StepCounter truncates; RewardSum and the count restart with each sub-environment",
          "[envs][transforms]") {
  auto base = std::make_shared<point_mass::PointMass>(point_mass::PointMassOptions().batch_size({2}).seed(3));
  e::TransformedEnv env(base, {std::make_shared<e::RewardSum>(),
                               std::make_shared<e::StepCounter>(
                                   e::StepCounterOptions().max_steps(7).step_count_key("counted"))});
  env.set_check_values(true);
  TensorDict out = env.rollout(20, e::RolloutOptions().break_when_any_done(false));
  torch::Tensor counted = out.get({"next", "counted"}).squeeze(-1);
  // 1..7, then the sub-environment restarts: 1..7, 1..6.
  torch::Tensor expected = (torch::arange(20) % 7 + 1).expand({2, 20});
  CHECK(torch::equal(counted, expected));
  torch::Tensor truncated = out.get({"next", "truncated"}).squeeze(-1);
  CHECK(torch::equal(truncated, expected.eq(7)));
  CHECK(torch::equal(out.get({"next", "done"}).squeeze(-1), expected.eq(7)));
  CHECK_FALSE(out.get({"next", "terminated"}).any().item<bool>());
  // The episode sums restart after each truncation.
  torch::Tensor r = out.get({"next", "reward"}).squeeze(-1);
  torch::Tensor sums = out.get({"next", "episode_reward"}).squeeze(-1);
  torch::Tensor running = torch::zeros({2});
  for (int64_t t = 0; t < 20; ++t) {
    running = running + r.select(1, t);
    CHECK(torch::allclose(sums.select(1, t), running));
    if (t % 7 == 6) running = torch::zeros({2});
  }
}

TEST_CASE("TransformedEnv: partial resets keep the other sub-environments' transformed entries",
          "[envs][transforms]") {
  // CartPole's carts fall at different steps: partial resets in every rollout.
  auto base = std::make_shared<e::CartPole>(e::CartPoleOptions().batch_size({4}).seed(1));
  e::TransformedEnv env(base, {std::make_shared<e::ObservationNorm>(torch::zeros({4}), torch::full({4}, 3.0)),
                               std::make_shared<e::RewardSum>(),
                               std::make_shared<e::StepCounter>(e::StepCounterOptions().step_count_key("counted"))});
  env.set_check_values(true);  // and EnvBase refuses a partial reset that changes a kept row
  TensorDict out = env.rollout(80, e::RolloutOptions().break_when_any_done(false));
  torch::Tensor done = out.get({"next", "done"}).squeeze(-1);
  REQUIRE(done.sum().item<int64_t>() >= 4);
  REQUIRE_FALSE(torch::equal(done.select(0, 0), done.select(0, 1)));
  // Per row: the count and the episode sum restart exactly after that row's own done.
  torch::Tensor counted = out.get({"next", "counted"}).squeeze(-1);
  torch::Tensor sums = out.get({"next", "episode_reward"}).squeeze(-1);
  torch::Tensor r = out.get({"next", "reward"}).squeeze(-1);
  for (int64_t i = 0; i < 4; ++i) {
    int64_t n = 0;
    double sum = 0;
    for (int64_t t = 0; t < 80; ++t) {
      ++n;
      sum += r[i][t].item<double>();
      CHECK(counted[i][t].item<int64_t>() == n);
      CHECK(sums[i][t].item<double>() == Approx(sum));
      if (done[i][t].item<bool>()) n = 0, sum = 0;
    }
  }
  // The observation is the base's, normalised: 3 times the state (float32).
  CHECK(torch::equal(out.get({"next", "observation"}), out.get({"next", "state"}).to(torch::kFloat32) * 3.0f));
}

TEST_CASE("ObservationNorm.init_stats: TorchRL's statistics from random rollouts", "[envs][transforms]") {
  for (bool standard_normal : {false, true}) {
    auto base = pendulum64(1, 0);
    base->set_seed(4);
    auto norm = std::make_shared<e::ObservationNorm>(e::ObservationNormOptions().standard_normal(standard_normal));
    e::TransformedEnv env(base, {norm});
    REQUIRE_FALSE(norm->initialized());
    REQUIRE_THROWS_WITH(env.reset(), Contains("ObservationNorm.reset: loc and scale are not set"));
    norm->init_stats(*base, 500);
    // The same rollouts (200 steps each: Pendulum truncates) from the same seed.
    auto again = pendulum64(1, 0);
    again->set_seed(4);
    std::vector<torch::Tensor> parts;
    for (int i = 0; i < 3; ++i) parts.push_back(again->rollout(500).get("observation").reshape({-1, 3}));
    torch::Tensor data = torch::cat(parts, 0);
    REQUIRE(data.size(0) == 600);
    torch::Tensor mean = data.mean(0), std = data.std(0);
    if (standard_normal) {
      CHECK(torch::equal(norm->loc(), mean));
      CHECK(torch::equal(norm->scale(), std));
    } else {
      CHECK(torch::equal(norm->scale(), 1 / std));
      CHECK(torch::equal(norm->loc(), -mean * (1 / std)));
    }
    // Normalised over the same data, the observation has mean 0 and standard deviation 1.
    torch::Tensor normalised = standard_normal ? (data - norm->loc()) / norm->scale() : data * norm->scale() + norm->loc();
    CHECK(torch::allclose(normalised.mean(0), torch::zeros({3}, torch::kFloat64), 0, 1e-12));
    CHECK(torch::allclose(normalised.std(0), torch::ones({3}, torch::kFloat64), 0, 1e-12));
    REQUIRE_THROWS_WITH(norm->init_stats(*base, 10), Contains("already set"));
  }
}

TEST_CASE("TransformedEnv: the transforms' state round-trips through a trainer checkpoint",
          "[envs][transforms][checkpoint]") {
  const std::string path = (std::filesystem::temp_directory_path() / "rlobj_transforms_test.pt").string();
  auto make = [](std::shared_ptr<e::ObservationNorm> norm) {
    return e::TransformedEnv(pendulum64(2, 0), {std::make_shared<e::DoubleToFloat>(), norm,
                                                std::make_shared<e::RewardSum>()});
  };
  auto norm = std::make_shared<e::ObservationNorm>();
  e::TransformedEnv env = make(norm);
  norm->init_stats(env.base_env(), 300);
  rl::trainers::CheckpointRegistry records("rlobj.test.transforms");
  records.add(
      "env", [&](torch::serialize::OutputArchive& a) { env.save(a); },
      [&](torch::serialize::InputArchive& a) { env.load(a); });
  records.save(path);

  auto restored = std::make_shared<e::ObservationNorm>();
  e::TransformedEnv env2 = make(restored);
  rl::trainers::CheckpointRegistry records2("rlobj.test.transforms");
  records2.add(
      "env", [&](torch::serialize::OutputArchive& a) { env2.save(a); },
      [&](torch::serialize::InputArchive& a) { env2.load(a); });
  records2.load(path);
  CHECK(torch::equal(restored->loc(), norm->loc()));
  CHECK(torch::equal(restored->scale(), norm->scale()));
  env.set_seed(3);
  env2.set_seed(3);
  CHECK(torch::equal(env.reset().get("observation"), env2.reset().get("observation")));

  // Another standard_normal, or other transforms, are refused, naming what differs.
  auto other = std::make_shared<e::ObservationNorm>(e::ObservationNormOptions().standard_normal(true));
  e::TransformedEnv env3 = make(other);
  torch::serialize::OutputArchive archive;
  env.save(archive);
  std::string bytes;
  archive.save_to([&](const void* data, size_t n) {
    bytes.append(static_cast<const char*>(data), n);
    return n;
  });
  torch::serialize::InputArchive in;
  in.load_from(bytes.data(), bytes.size());
  REQUIRE_THROWS_WITH(env3.load(in), Contains("saved with standard_normal=false, this transform has true"));
  e::TransformedEnv fewer(pendulum64(2, 0), {std::make_shared<e::RewardSum>()});
  torch::serialize::InputArchive in2;
  in2.load_from(bytes.data(), bytes.size());
  REQUIRE_THROWS_WITH(fewer.load(in2), Contains("no record \"0_RewardSum\""));
  std::remove(path.c_str());
}

TEST_CASE("Transforms refuse what they cannot apply to, naming the key", "[envs][transforms][validation]") {
  auto base32 = std::make_shared<e::Pendulum>(e::PendulumOptions().batch_size({2}));
  REQUIRE_THROWS_WITH(e::TransformedEnv(base32, {std::make_shared<e::DoubleToFloat>()}),
                      Contains("DoubleToFloat: \"observation\" is float32, expected float64"));
  REQUIRE_THROWS_WITH(
      e::TransformedEnv(base32, {std::make_shared<e::ObservationNorm>(
                                    e::ObservationNormOptions().in_keys({"pixels"}))}),
      Contains("ObservationNorm: the environment has no observation \"pixels\""));
  REQUIRE_THROWS_WITH(e::TransformedEnv(base32, {std::make_shared<e::StepCounter>()}),
                      Contains("StepCounter: the environment already writes \"step_count\""));
  REQUIRE_THROWS_WITH(e::TransformedEnv(base32, {std::make_shared<e::RewardSum>(), std::make_shared<e::RewardSum>()}),
                      Contains("RewardSum: the environment already writes \"episode_reward\""));
  REQUIRE_THROWS_WITH(e::TransformedEnv(nullptr, {}), Contains("the base environment is null"));
  REQUIRE_THROWS_WITH(e::TransformedEnv(base32, {nullptr}), Contains("transform 0 is null"));
  REQUIRE_THROWS_WITH(e::StepCounter(e::StepCounterOptions().max_steps(0)), Contains("max_steps must be >= 1"));
  REQUIRE_THROWS_WITH(e::RewardScaling(0.0, std::nan("")), Contains("RewardScaling: loc and scale must be finite"));
  REQUIRE_THROWS_WITH(e::ObservationNorm(torch::zeros({3}), torch::Tensor()), Contains("must both be given"));
  // A root without the transform's entry: named.
  e::TransformedEnv env(base32, {std::make_shared<e::RewardSum>()});
  TensorDict root = env.rand_action(env.reset()).exclude({"episode_reward"});
  REQUIRE_THROWS_WITH(env.step(root), Contains("RewardSum.step: the TensorDict has no \"episode_reward\""));
}

}  // namespace rlobj_test_envs_transforms_test
