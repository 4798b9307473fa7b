// The PPO examples' configuration of the library trainer (examples/common/ppo.h, on CartPole and
// Pendulum): checkpoints resume exactly, the schedule anneals, evaluations count each episode once.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <torch/torch.h>
// After LibTorch, whose glog include defines a CHECK of its own (the CMake build precompiles both
// in this order).
#include <catch2/catch.hpp>

#include "ppo_cartpole/task.h"
#include "ppo_pendulum/task.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_examples_ppo_test {

using Catch::Matchers::Contains;
using ppo::Config;
using CartPole = ppo_cartpole::Task;
using Pendulum = ppo_pendulum::Task;

namespace {

template <typename Algo>
Config small_config() {
  Config cfg = Algo::defaults();
  cfg.total_frames = 256;
  cfg.num_envs = 4;
  cfg.frames_per_batch = 64;
  cfg.mini_batch_size = 16;
  cfg.num_epochs = 2;
  cfg.num_cells = {16, 16};
  cfg.eval_episodes = 2;
  return cfg;
}

/// The run's evaluation (as the examples report it).
template <typename Task>
double evaluate(ppo::Run<Task>& r, const Config& c) {
  return rlobj::trainers::Evaluator(
      r.eval_env, r.actor, rlobj::trainers::EvaluatorOptions().max_steps(Task::kMaxEpisodeSteps).seed(c.eval_seed()))();
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("rlobj_onpolicy_test_" + name + ".pt")).string();
}

}  // namespace

TEMPLATE_TEST_CASE("ppo examples: a resumed run continues exactly as if never stopped", "[example][checkpoint]",
                   CartPole, Pendulum) {
  using Run = ppo::Run<TestType>;
  const Config cfg = small_config<TestType>();
  const std::string path = temp_path(TestType::kProgram);
  Run straight(cfg);
  straight.trainer->train();
  CHECK(straight.trainer->frames() == 256);
  CHECK(straight.trainer->batches() == 4);
  CHECK(straight.trainer->updates() == 4 * 2 * (64 / 16));  // batches x epochs x minibatches

  Run first(cfg);
  first.trainer->step();
  first.trainer->step();
  first.trainer->save(path);
  CHECK(std::filesystem::exists(path));

  Run resumed(cfg);
  resumed.trainer->load(path);
  CHECK(resumed.trainer->frames() == 128);
  CHECK(resumed.trainer->updates() == 16);
  resumed.trainer->train();
  CHECK(resumed.trainer->updates() == straight.trainer->updates());
  auto p1 = straight.loss->parameters();
  auto p2 = resumed.loss->parameters();
  REQUIRE(p1.size() == p2.size());
  for (size_t i = 0; i < p1.size(); ++i) CHECK(torch::equal(p1[i], p2[i]));
  CHECK(straight.trainer->episodes() == resumed.trainer->episodes());
  const double r1 = straight.returns.recent_return(), r2 = resumed.returns.recent_return();
  CHECK((r1 == r2 || (std::isnan(r1) && std::isnan(r2))));
  CHECK(straight.losses.last("loss_objective") == resumed.losses.last("loss_objective"));
  CHECK(straight.lr() == resumed.lr());
  CHECK(evaluate(straight, cfg) == evaluate(resumed, cfg));

  Config other = cfg;
  other.num_cells = {8};
  Run incompatible(other);
  REQUIRE_THROWS_WITH(incompatible.trainer->load(path), Contains("was made with"));
  std::remove(path.c_str());
}

TEST_CASE("ppo examples: a CartPole checkpoint does not resume a Pendulum run", "[example][checkpoint]") {
  const std::string path = temp_path("cross");
  ppo::Run<CartPole> cartpole(small_config<CartPole>());
  cartpole.trainer->step();
  cartpole.trainer->save(path);
  ppo::Run<Pendulum> pendulum(small_config<Pendulum>());
  REQUIRE_THROWS_WITH(pendulum.trainer->load(path), Contains("expected a rlobj.examples.ppo_pendulum"));
  std::remove(path.c_str());
}

TEST_CASE("ppo examples: learning rate and clip epsilon anneal linearly to 0", "[example]") {
  Config cfg = small_config<CartPole>();
  cfg.anneal_lr = true;
  cfg.anneal_clip_epsilon = true;
  ppo::Run<CartPole> t(cfg);
  const double total = 4.0 * 2 * 4;  // updates of the run
  CHECK(t.lr() == Approx(cfg.lr));
  t.trainer->step();
  // The lr of the last update of the first batch: alpha = 1 - 7 / 32.
  CHECK(t.lr() == Approx(cfg.lr * (1 - 7 / total)));
  double clip = 0;
  for (const auto& b : t.loss->named_buffers()) {
    if (b.key() == "clip_epsilon") clip = b.value().item<double>();
  }
  CHECK(clip == Approx(cfg.clip_epsilon * (1 - 7 / total)).epsilon(1e-6));
  t.trainer->train();
  CHECK(t.lr() == Approx(cfg.lr / total));

  cfg.anneal_lr = false;
  ppo::Run<CartPole> constant(cfg);
  constant.trainer->train();
  CHECK(constant.lr() == cfg.lr);
}

TEST_CASE("ppo examples: one-hot and index actions train identically on CartPole", "[example]") {
  Config one_hot = small_config<CartPole>();
  Config index = one_hot;
  index.categorical_actions = true;
  // One after the other: the actors sample from LibTorch's default generator, which each trainer
  // seeds when it is built.
  ppo::Run<CartPole> a(one_hot);
  a.trainer->train();
  const double return_a = evaluate(a, one_hot);
  ppo::Run<CartPole> b(index);
  b.trainer->train();
  auto pa = a.loss->parameters();
  auto pb = b.loss->parameters();
  for (size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));
  CHECK(return_a == evaluate(b, index));
}

TEST_CASE("ppo examples: an evaluation counts each episode up to its end only", "[example]") {
  Config cfg = small_config<CartPole>();
  cfg.eval_episodes = 5;
  ppo::Run<CartPole> t(cfg);
  // An untrained policy drops the pole within a few dozen steps: every episode ends, and the
  // steps the rollout repeats after an end are not counted.
  const double r = evaluate(t, cfg);
  CHECK(r >= 8);
  CHECK(r < 200);
  CHECK(r == std::round(r * 5) / 5);  // a mean of 5 integer returns (reward 1 per step)
  CHECK(evaluate(t, cfg) == r);       // the same start states every time

  ppo::Run<Pendulum> p(small_config<Pendulum>());
  const double rp = evaluate(p, small_config<Pendulum>());
  CHECK(rp < 0);
  CHECK(rp > -16.3 * 200);
}

TEST_CASE("ppo examples: settings that cannot work are refused", "[example]") {
  using Run = ppo::Run<CartPole>;
  Config cfg = small_config<CartPole>();
  cfg.mini_batch_size = 24;
  REQUIRE_THROWS_WITH(Run(cfg), Contains("24"));
  cfg = small_config<CartPole>();
  cfg.frames_per_batch = 66;
  REQUIRE_THROWS_WITH(Run(cfg), Contains("frames_per_batch (66) must be a multiple of the number of environments (4)"));
  cfg = small_config<CartPole>();
  cfg.num_epochs = 0;
  REQUIRE_THROWS_WITH(Run(cfg), Contains("num_epochs must be positive"));
}

}  // namespace rlobj_test_examples_ppo_test
