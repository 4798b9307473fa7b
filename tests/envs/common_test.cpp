#include <rlobj/envs/cartpole.h>
#include <rlobj/envs/common.h>
#include <rlobj/envs/pendulum.h>
#include <rlobj/modules/actor.h>
#include <rlobj/modules/mlp.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "point_mass/point_mass.h"
#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_envs_common_test {

using Catch::Matchers::Contains;
using rlobj::NestedKey;
using rlobj::TensorDict;
using rlobj::envs::Pendulum;
using rlobj::envs::PendulumOptions;
using rlobj::envs::RolloutOptions;
namespace ti = torch::indexing;

TEST_CASE("step_mdp: next becomes the root", "[envs]") {
  TensorDict td({{"observation", torch::zeros({2, 3})},
                 {"action", torch::ones({2, 1})},
                 {"other", torch::ones({2})},
                 {{"next", "observation"}, torch::ones({2, 3})},
                 {{"next", "reward"}, torch::ones({2, 1})},
                 {{"next", "done"}, torch::ones({2, 1}, torch::kBool)}},
                {2});
  auto root = rlobj::envs::step_mdp(td);
  CHECK(root.keys() == std::vector<NestedKey>{"observation", "other", "done"});
  CHECK(root.get("observation").sum().item<float>() == 6.0f);
  auto keep_action = rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().exclude_action(false).keep_other(false));
  CHECK(keep_action.keys() == std::vector<NestedKey>{"action", "observation", "done"});
  auto with_reward = rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().exclude_reward(false).exclude_done(true));
  CHECK(with_reward.keys() == std::vector<NestedKey>{"observation", "other", "reward"});
  CHECK_FALSE(td.get_sub("next").is_same(root));
  REQUIRE_THROWS_WITH(rlobj::envs::step_mdp(TensorDict({2})), Contains("no \"next\""));
}

// A subclass that forgets its specs: what a user's first environment often looks like.
class SpeclessEnv : public rlobj::envs::EnvBase {
 public:
  SpeclessEnv() : EnvBase({}, torch::kCPU, 0) {}
  const char* name() const override { return "SpeclessEnv"; }

 protected:
  TensorDict reset_impl(const TensorDict*) override { return TensorDict({{"observation", torch::zeros({1})}}, {}); }
  TensorDict step_impl(const TensorDict&) override {
    return TensorDict({{"observation", torch::zeros({1})},
                       {"reward", torch::zeros({1})},
                       {"done", torch::zeros({1}, torch::kBool)},
                       {"terminated", torch::zeros({1}, torch::kBool)},
                       {"truncated", torch::zeros({1}, torch::kBool)}},
                      {});
  }
};

TEST_CASE("an environment whose specs were never set: clear errors, no crash", "[envs][validation]") {
  SpeclessEnv env;
  REQUIRE_THROWS_WITH(env.rollout(3), Contains("SpeclessEnv: the action spec was never set"));
  REQUIRE_THROWS_WITH(env.rand_action(TensorDict(TensorDict::BatchSize{})), Contains("action spec was never set"));
  REQUIRE_THROWS_WITH(env.action_spec(), Contains("action_spec_"));
  REQUIRE_THROWS_WITH(env.reward_spec(), Contains("SpeclessEnv: the reward spec was never set"));
}

// Specs set, but the data written does not keep to them, in one of three ways.
class SloppyEnv : public rlobj::envs::EnvBase {
 public:
  enum class Fault { kNone, kFloat64Observation, kNoDone, kOutOfRange };
  explicit SloppyEnv(Fault fault) : EnvBase({2}, torch::kCPU, 0), fault_(fault) {
    observation_spec_.set("observation", rlobj::Bounded(-1.0, 1.0, {3}, torch::kFloat32).expand({2}));
    action_spec_ = rlobj::Bounded(-1.0, 1.0, {1}, torch::kFloat32).expand({2});
    reward_spec_ = rlobj::Unbounded({1}, torch::kFloat32).expand({2});
    for (const char* k : {"done", "terminated", "truncated"}) {
      done_spec_.set(k, rlobj::Categorical(2, {1}, torch::kBool).expand({2}));
    }
  }
  const char* name() const override { return "SloppyEnv"; }

 protected:
  TensorDict reset_impl(const TensorDict*) override { return outputs(false); }
  TensorDict step_impl(const TensorDict&) override { return outputs(true); }

 private:
  TensorDict outputs(bool with_reward) const {
    TensorDict td({2});
    torch::Tensor obs = torch::zeros({2, 3});
    if (fault_ == Fault::kFloat64Observation && with_reward) obs = obs.to(torch::kFloat64);
    if (fault_ == Fault::kOutOfRange && with_reward) obs = obs + 2;
    td.set("observation", obs);
    if (fault_ != Fault::kNoDone || !with_reward) {
      for (const char* k : {"done", "terminated", "truncated"}) td.set(k, torch::zeros({2, 1}, torch::kBool));
    }
    if (with_reward) td.set("reward", torch::zeros({2, 1}));
    return td;
  }
  Fault fault_;
};

TEST_CASE("check_env_specs: rlobj's environments keep to their specs", "[envs][specs]") {
  Pendulum single;
  rlobj::envs::check_env_specs(single);
  Pendulum batched(PendulumOptions().batch_size({4}).dtype(torch::kFloat64));
  rlobj::envs::check_env_specs(batched, 5);
  rlobj::envs::CartPole cartpole(rlobj::envs::CartPoleOptions().batch_size({3}));
  rlobj::envs::check_env_specs(cartpole, 30);  // long enough for carts to end and restart
  point_mass::PointMass point_mass(point_mass::PointMassOptions().batch_size({2}));
  rlobj::envs::check_env_specs(point_mass);
  SloppyEnv fine(SloppyEnv::Fault::kNone);
  rlobj::envs::check_env_specs(fine);
}

TEST_CASE("check_env_specs: data that does not keep to the specs is named", "[envs][specs][validation]") {
  SloppyEnv float64(SloppyEnv::Fault::kFloat64Observation);
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(float64),
                      Contains("check_env_specs(SloppyEnv): \"next.observation\" at step 0 is float64 [2, 3]"));
  SloppyEnv no_done(SloppyEnv::Fault::kNoDone);
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(no_done),
                      Contains("at step 0 the keys of the specs and of the data differ: spec'd but not written: [next.done, next.terminated, next.truncated]; written but not spec'd: []"));
  SloppyEnv outside(SloppyEnv::Fault::kOutOfRange);
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(outside),
                      Contains("\"next.observation\" at step 0 is outside its spec"));
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(outside, 0), Contains("steps must be positive"));
}

TEST_CASE("rollout: TorchRL's layout, unbatched and batched", "[envs][rollout]") {
  for (auto batch : {std::vector<int64_t>{}, std::vector<int64_t>{5}}) {
    INFO("batch dims " << batch.size());
    Pendulum env(PendulumOptions().batch_size(batch).seed(1));
    torch::manual_seed(7);  // the network's initial weights
    auto actor = rlobj::modules::Actor(rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({16})));
    auto r = env.rollout(/*max_steps=*/30, actor);
    std::vector<int64_t> bt = batch;
    bt.push_back(30);
    CHECK(r.batch_size() == bt);
    CHECK(r.keys(true, true) ==
          std::vector<NestedKey>{"observation", "th", "thdot", "step_count", "done", "terminated", "truncated",
                                 "is_init", "action", {"next", "observation"}, {"next", "th"}, {"next", "thdot"},
                                 {"next", "step_count"}, {"next", "reward"}, {"next", "done"},
                                 {"next", "terminated"}, {"next", "truncated"}, {"next", "is_init"}});
    // InitTracker: only the first root of an episode is marked.
    auto is_init = r.get("is_init");
    CHECK(is_init.index({"...", 0, 0}).all().item<bool>());
    CHECK_FALSE(is_init.index({"...", ti::Slice(1), ti::Slice()}).any().item<bool>());
    CHECK_FALSE(r.get({"next", "is_init"}).any().item<bool>());
    auto shape = [&](std::vector<int64_t> feat) {
      auto s = bt;
      s.insert(s.end(), feat.begin(), feat.end());
      return s;
    };
    CHECK(r.get("observation").sizes().vec() == shape({3}));
    CHECK(r.get("action").sizes().vec() == shape({1}));
    CHECK(r.get({"next", "reward"}).sizes().vec() == shape({1}));
    CHECK(r.get({"next", "done"}).scalar_type() == torch::kBool);
    // "next" at t is the root at t+1.
    auto obs = r.get("observation");
    auto next_obs = r.get({"next", "observation"});
    const int64_t T = 30;
    CHECK(torch::equal(obs.narrow(-2, 1, T - 1), next_obs.narrow(-2, 0, T - 1)));
    CHECK(torch::equal(r.get("step_count").narrow(-2, 1, T - 1), r.get({"next", "step_count"}).narrow(-2, 0, T - 1)));
    // The actions are the actor's on the root observation, and carry no gradient.
    CHECK_FALSE(r.get("action").requires_grad());
    auto again = actor(TensorDict({{"observation", obs}}, bt)).get("action");
    // One forward over all steps sums in another order than the per-step forwards: the
    // actions agree to float32 rounding of terms of magnitude <= 1 through two layers (a few
    // 1e-7), not to the 1e-8 absolute tolerance allclose defaults to near zero.
    CHECK(torch::allclose(r.get("action"), again, /*rtol=*/1e-5, /*atol=*/1e-6));
  }
}

TEST_CASE("rollout: stops at the first done step (truncation at 200)", "[envs][rollout]") {
  Pendulum env(PendulumOptions().batch_size({2}));
  auto r = env.rollout(250);  // random policy
  CHECK(r.batch_size() == std::vector<int64_t>{2, 200});
  CHECK(r.get({"next", "truncated"}).index({ti::Slice(), -1}).all().item<bool>());
  CHECK(r.get({"next", "done"}).index({ti::Slice(), ti::Slice(0, -1)}).sum().item<int64_t>() == 0);
  CHECK(env.rollout(10).batch_size() == std::vector<int64_t>{2, 10});
  REQUIRE_THROWS_AS(env.rollout(0), c10::ValueError);
}

TEST_CASE("rollout: break_when_any_done=false resets done pendulums and goes on", "[envs][rollout]") {
  Pendulum env(PendulumOptions().batch_size({3}).max_episode_steps(20).seed(4));
  auto r = env.rollout(50, RolloutOptions().break_when_any_done(false));
  CHECK(r.batch_size() == std::vector<int64_t>{3, 50});
  auto sc = r.get("step_count").index({0}).squeeze(-1);
  CHECK(rlobj_test::ints(sc.narrow(0, 18, 4)) == std::vector<int64_t>{18, 19, 0, 1});
  // The done step's next.observation is the true last observation; the next root restarts.
  auto obs = r.get("observation").index({0});
  auto next_obs = r.get({"next", "observation"}).index({0});
  CHECK(r.get({"next", "done"}).index({0, 19}).item<bool>());
  CHECK_FALSE(torch::equal(obs[20], next_obs[19]));
  CHECK(torch::equal(obs[21], next_obs[20]));
  CHECK(r.get("is_init").index({0, 20}).item<bool>());
  CHECK_FALSE(r.get("is_init").index({0, 19}).item<bool>());
}

TEST_CASE("rollout: break_when_all_done freezes done pendulums and stops when all are done", "[envs][rollout]") {
  Pendulum env(PendulumOptions().batch_size({2}).max_episode_steps(10));
  auto start = env.reset();
  start.set("step_count", torch::tensor({7, 5}).view({2, 1}));  // done after 3 and 5 steps
  auto r = env.rollout(50, RolloutOptions()
                               .auto_reset(false)
                               .tensordict(start)
                               .break_when_any_done(false)
                               .break_when_all_done(true));
  CHECK(r.batch_size() == std::vector<int64_t>{2, 5});
  auto done = r.get({"next", "done"}).squeeze(-1);
  CHECK(rlobj_test::ints(done[0]) == std::vector<int64_t>{0, 0, 1, 1, 1});  // frozen after its done step
  CHECK(rlobj_test::ints(done[1]) == std::vector<int64_t>{0, 0, 0, 0, 1});
  auto obs0 = r.get({"next", "observation"}).index({0});
  CHECK(torch::equal(obs0[2], obs0[4]));
}

TEST_CASE("rollout: lambdas as policies, set_truncated, auto_reset=false", "[envs][rollout]") {
  Pendulum env(PendulumOptions().batch_size({2}));
  int calls = 0;
  auto r = env.rollout(
      5, [&](TensorDict& td) { ++calls; td.set("action", torch::full({2, 1}, 0.5f)); },
      RolloutOptions().set_truncated(true));
  CHECK(calls == 5);
  CHECK(r.get("action").eq(0.5f).all().item<bool>());
  CHECK(rlobj_test::ints(r.get({"next", "truncated"}).index({0}).squeeze(-1)) == std::vector<int64_t>{0, 0, 0, 0, 1});
  CHECK(r.get({"next", "done"}).index({1, 4}).item<bool>());
  // A lambda returning a new TensorDict: its entries are merged in.
  auto r2 = env.rollout(3, [](const TensorDict&) {
    return TensorDict({{"action", torch::zeros({2, 1})}}, {2});
  });
  CHECK(r2.get("action").abs().sum().item<float>() == 0.0f);
  REQUIRE_THROWS_WITH(env.rollout(3, RolloutOptions().auto_reset(false)), Contains("needs a starting tensordict"));
  auto given = env.reset();
  auto r3 = env.rollout(2, RolloutOptions().auto_reset(false).tensordict(given));
  CHECK(torch::equal(r3.get("observation").index({ti::Slice(), 0}), given.get("observation")));
}

}  // namespace rlobj_test_envs_common_test
