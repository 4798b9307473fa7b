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
  REQUIRE_THROWS_WITH(env.reset(), Contains("SpeclessEnv: the action spec was never set"));
  REQUIRE_THROWS_WITH(env.step(TensorDict({{"action", torch::zeros({1})}}, {})), Contains("action spec was never set"));
}

// Specs set, but the data written does not keep to them, in one of several ways.
class SloppyEnv : public rlobj::envs::EnvBase {
 public:
  enum class Fault {
    kNone, kFloat64Observation, kNoDone, kOutOfRange, kExtraKey, kIgnoresReset, kDoneNotTerminatedOrTruncated,
    kRewardSpecShape, kNoDoneSpec, kNoObservationSpec, kActionSpecShape
  };
  explicit SloppyEnv(Fault fault) : EnvBase({2}, torch::kCPU, 0), fault_(fault) {
    if (fault != Fault::kNoObservationSpec) {
      observation_spec_.set("observation", rlobj::Bounded(-1.0, 1.0, {3}, torch::kFloat32).expand({2}));
    }
    action_spec_ = fault == Fault::kActionSpecShape ? rlobj::Bounded(-1.0, 1.0, {1}, torch::kFloat32).clone()
                                                    : rlobj::Bounded(-1.0, 1.0, {1}, torch::kFloat32).expand({2});
    reward_spec_ = rlobj::Unbounded({fault == Fault::kRewardSpecShape ? int64_t{2} : int64_t{1}}, torch::kFloat32).expand({2});
    for (const char* k : {"done", "terminated", "truncated"}) {
      if (fault == Fault::kNoDoneSpec && std::string(k) == "truncated") continue;
      done_spec_.set(k, rlobj::Categorical(2, {1}, torch::kBool).expand({2}));
    }
  }
  const char* name() const override { return "SloppyEnv"; }

 protected:
  TensorDict reset_impl(const TensorDict*) override { return outputs(false); }
  TensorDict step_impl(const TensorDict&) override { return outputs(true); }

 private:
  TensorDict outputs(bool step) const {
    TensorDict td({2});
    // A reset writes 0, a step 0.25: a reset that ignores "_reset" changes the other rows.
    torch::Tensor obs = torch::full({2, 3}, step ? 0.25 : 0.0);
    if (fault_ == Fault::kFloat64Observation && step) obs = obs.to(torch::kFloat64);
    if (fault_ == Fault::kOutOfRange && step) obs = obs + 2;
    td.set("observation", obs);
    torch::Tensor flag = torch::zeros({2, 1}, torch::kBool);
    // The first copy's episodes end after every step.
    if (fault_ == Fault::kIgnoresReset && step) flag = torch::tensor({true, false}).view({2, 1});
    if (fault_ != Fault::kNoDone || !step) {
      for (const char* k : {"done", "terminated", "truncated"}) td.set(k, flag);
    }
    if (fault_ == Fault::kDoneNotTerminatedOrTruncated && step) td.set("terminated", torch::ones({2, 1}, torch::kBool));
    if (fault_ == Fault::kExtraKey) td.set("info", torch::zeros({2, 1}));
    if (step) td.set("reward", torch::zeros({2, 1}));
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
  // The same with every value checked by the environment itself, over episode ends (partial resets).
  cartpole.set_check_values(true);
  CHECK(cartpole.check_values());
  CHECK(cartpole.rollout(300, RolloutOptions().break_when_any_done(false)).get({"next", "done"}).any().item<bool>());
  point_mass.set_check_values(true);
  CHECK(point_mass.rollout(450, RolloutOptions().break_when_any_done(false)).get({"next", "truncated"}).any().item<bool>());
}

TEST_CASE("check_env_specs: data that does not keep to the specs is named", "[envs][specs][validation]") {
  using Fault = SloppyEnv::Fault;
  SloppyEnv float64(Fault::kFloat64Observation);
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(float64),
                      Contains("SloppyEnv.step: \"observation\" is float64 [2, 3] on cpu; its spec is Bounded"));
  SloppyEnv no_done(Fault::kNoDone);
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(no_done),
                      Contains("SloppyEnv.step: the step wrote other keys than its specs say: spec'd but not written: "
                               "[done, terminated, truncated]; written but not spec'd: []"));
  SloppyEnv outside(Fault::kOutOfRange);
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(outside),
                      Contains("\"next.observation\" at step 0 is outside its spec"));
  REQUIRE_THROWS_WITH(rlobj::envs::check_env_specs(outside, 0), Contains("steps must be positive"));
}

TEST_CASE("EnvBase checks what a subclass returns against its specs, at the step that breaks them",
          "[envs][specs][validation]") {
  using Fault = SloppyEnv::Fault;
  // Keys, shapes, dtypes and devices: always, on reset and step.
  SloppyEnv float64(Fault::kFloat64Observation);
  REQUIRE_THROWS_WITH(float64.rollout(2), Contains("SloppyEnv.step: \"observation\" is float64 [2, 3]"));
  SloppyEnv no_done(Fault::kNoDone);
  TensorDict root = no_done.rand_action(no_done.reset());
  REQUIRE_THROWS_WITH(no_done.step(root), Contains("spec'd but not written: [done, terminated, truncated]"));
  CHECK_FALSE(root.contains("next"));  // the step was refused: td is as it was
  SloppyEnv extra(Fault::kExtraKey);
  REQUIRE_THROWS_WITH(extra.reset(), Contains("SloppyEnv.reset: the reset wrote other keys than its specs say: "
                                              "spec'd but not written: []; written but not spec'd: [info]"));
  // A partial reset that restarts every copy is refused: the other copies' entries must stay.
  SloppyEnv ignores_reset(Fault::kIgnoresReset);
  REQUIRE_THROWS_WITH(ignores_reset.rollout(3, RolloutOptions().break_when_any_done(false)),
                      Contains("SloppyEnv.reset: a partial reset changed \"observation\" of sub-environments outside "
                               "\"_reset\""));
  // Values: only when asked (a pass over the data).
  SloppyEnv outside(Fault::kOutOfRange);
  CHECK_FALSE(outside.check_values());
  CHECK(outside.rollout(2).get({"next", "observation"}).max().item<float>() == 2.25f);
  outside.set_check_values(true);
  REQUIRE_THROWS_WITH(outside.rollout(2), Contains("SloppyEnv.step: \"observation\" lies outside its spec Bounded"));
  SloppyEnv done_mismatch(Fault::kDoneNotTerminatedOrTruncated);
  CHECK_NOTHROW(done_mismatch.rollout(2));
  done_mismatch.set_check_values(true);
  REQUIRE_THROWS_WITH(done_mismatch.rollout(2), Contains("SloppyEnv.step: \"done\" is not terminated | truncated"));
}

TEST_CASE("EnvBase refuses specs left unset or malformed before anything runs", "[envs][specs][validation]") {
  using Fault = SloppyEnv::Fault;
  SloppyEnv reward(Fault::kRewardSpecShape);
  REQUIRE_THROWS_WITH(reward.reset(), Contains("SloppyEnv: the reward spec has shape [2, 2], expected [2, 1]"));
  SloppyEnv no_truncated(Fault::kNoDoneSpec);
  REQUIRE_THROWS_WITH(no_truncated.rollout(1), Contains("SloppyEnv: done_spec_ has no \"truncated\""));
  SloppyEnv no_observation(Fault::kNoObservationSpec);
  REQUIRE_THROWS_WITH(no_observation.reset(), Contains("SloppyEnv: observation_spec_ holds only \"is_init\""));
  SloppyEnv action(Fault::kActionSpecShape);
  REQUIRE_THROWS_WITH(action.reset(), Contains("SloppyEnv: the action spec has shape [1], which does not start with "
                                               "the batch dims [2]"));
  TensorDict root({{"observation", torch::zeros({2, 3})}, {"action", torch::zeros({2, 1})}}, {2});
  REQUIRE_THROWS_WITH(action.step(root), Contains("the action spec has shape [1]"));
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
