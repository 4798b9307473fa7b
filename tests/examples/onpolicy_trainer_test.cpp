// The on-policy examples' training loop (PPO on CartPole and Pendulum): checkpoints resume
// exactly, the schedule anneals, evaluations count each episode once.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <torch/torch.h>
// After LibTorch, whose glog include defines a CHECK of its own (the CMake build precompiles both
// in this order).
#include <catch2/catch.hpp>

#include "onpolicy/trainer.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_examples_onpolicy_trainer_test {

using Catch::Matchers::Contains;
using onpolicy::Config;

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

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("rlobj_onpolicy_test_" + name + ".pt")).string();
}

}  // namespace

TEMPLATE_TEST_CASE("on-policy trainer: a resumed run continues exactly as if never stopped", "[example][checkpoint]",
                   onpolicy::CartPolePPO, onpolicy::PendulumPPO) {
  using Trainer = onpolicy::Trainer<TestType>;
  const Config cfg = small_config<TestType>();
  const std::string path = temp_path(TestType::kProgram);
  Trainer straight(cfg);
  while (straight.step()) {
  }
  CHECK(straight.frames() == 256);
  CHECK(straight.iterations() == 4);
  CHECK(straight.updates() == 4 * 2 * (64 / 16));  // batches x epochs x minibatches

  Trainer first(cfg);
  first.step();
  first.step();
  first.save(path);
  CHECK(std::filesystem::exists(path));

  Trainer resumed(cfg);
  resumed.load(path);
  CHECK(resumed.frames() == 128);
  CHECK(resumed.updates() == 16);
  while (resumed.step()) {
  }
  CHECK(resumed.updates() == straight.updates());
  auto p1 = straight.loss()->parameters();
  auto p2 = resumed.loss()->parameters();
  REQUIRE(p1.size() == p2.size());
  for (size_t i = 0; i < p1.size(); ++i) CHECK(torch::equal(p1[i], p2[i]));
  CHECK(straight.episodes() == resumed.episodes());
  CHECK((straight.recent_return() == resumed.recent_return() ||
         (std::isnan(straight.recent_return()) && std::isnan(resumed.recent_return()))));
  CHECK(straight.last_loss_objective() == resumed.last_loss_objective());
  CHECK(straight.lr() == resumed.lr());
  CHECK(straight.evaluate() == resumed.evaluate());

  Config other = cfg;
  other.num_cells = {8};
  Trainer incompatible(other);
  REQUIRE_THROWS_WITH(incompatible.load(path), Contains("was made with"));
  std::remove(path.c_str());
}

TEST_CASE("on-policy trainer: a CartPole checkpoint does not resume a Pendulum run", "[example][checkpoint]") {
  const std::string path = temp_path("cross");
  onpolicy::Trainer<onpolicy::CartPolePPO> cartpole(small_config<onpolicy::CartPolePPO>());
  cartpole.step();
  cartpole.save(path);
  onpolicy::Trainer<onpolicy::PendulumPPO> pendulum(small_config<onpolicy::PendulumPPO>());
  REQUIRE_THROWS_WITH(pendulum.load(path), Contains("expected a rlobj.examples.ppo_pendulum"));
  std::remove(path.c_str());
}

TEST_CASE("on-policy trainer: learning rate and clip epsilon anneal linearly to 0", "[example]") {
  Config cfg = small_config<onpolicy::CartPolePPO>();
  cfg.anneal_lr = true;
  cfg.anneal_clip_epsilon = true;
  onpolicy::Trainer<onpolicy::CartPolePPO> t(cfg);
  const double total = 4.0 * 2 * 4;  // updates of the run
  CHECK(t.lr() == Approx(cfg.lr));
  t.step();
  // The lr of the last update of the first batch: alpha = 1 - 7 / 32.
  CHECK(t.lr() == Approx(cfg.lr * (1 - 7 / total)));
  double clip = 0;
  for (const auto& b : t.loss()->named_buffers()) {
    if (b.key() == "clip_epsilon") clip = b.value().item<double>();
  }
  CHECK(clip == Approx(cfg.clip_epsilon * (1 - 7 / total)).epsilon(1e-6));
  while (t.step()) {
  }
  CHECK(t.lr() == Approx(cfg.lr / total));

  cfg.anneal_lr = false;
  onpolicy::Trainer<onpolicy::CartPolePPO> constant(cfg);
  while (constant.step()) {
  }
  CHECK(constant.lr() == cfg.lr);
}

TEST_CASE("on-policy trainer: one-hot and index actions train identically on CartPole", "[example]") {
  Config one_hot = small_config<onpolicy::CartPolePPO>();
  Config index = one_hot;
  index.categorical_actions = true;
  // One after the other: the actors sample from LibTorch's default generator, which each trainer
  // seeds when it is built.
  onpolicy::Trainer<onpolicy::CartPolePPO> a(one_hot);
  while (a.step()) {
  }
  const double return_a = a.evaluate();
  onpolicy::Trainer<onpolicy::CartPolePPO> b(index);
  while (b.step()) {
  }
  auto pa = a.loss()->parameters();
  auto pb = b.loss()->parameters();
  for (size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));
  CHECK(return_a == b.evaluate());
}

TEST_CASE("on-policy trainer: an evaluation counts each episode up to its end only", "[example]") {
  Config cfg = small_config<onpolicy::CartPolePPO>();
  cfg.eval_episodes = 5;
  onpolicy::Trainer<onpolicy::CartPolePPO> t(cfg);
  // An untrained policy drops the pole within a few dozen steps: every episode ends, and the
  // steps the rollout repeats after an end are not counted.
  const double r = t.evaluate();
  CHECK(r >= 8);
  CHECK(r < 200);
  CHECK(r == std::round(r * 5) / 5);  // a mean of 5 integer returns (reward 1 per step)
  CHECK(t.evaluate() == r);           // the same start states every time

  onpolicy::Trainer<onpolicy::PendulumPPO> p(small_config<onpolicy::PendulumPPO>());
  const double rp = p.evaluate();
  CHECK(rp < 0);
  CHECK(rp > -16.3 * 200);
}

TEST_CASE("on-policy trainer: settings that cannot work are refused", "[example]") {
  using Trainer = onpolicy::Trainer<onpolicy::CartPolePPO>;
  Config cfg = small_config<onpolicy::CartPolePPO>();
  cfg.mini_batch_size = 24;
  REQUIRE_THROWS_WITH(Trainer(cfg), Contains("mini_batch_size (24) must divide frames_per_batch (64)"));
  cfg = small_config<onpolicy::CartPolePPO>();
  cfg.frames_per_batch = 66;
  REQUIRE_THROWS_WITH(Trainer(cfg), Contains("frames_per_batch (66) must be a multiple of num_envs (4)"));
  cfg = small_config<onpolicy::CartPolePPO>();
  cfg.num_epochs = 0;
  REQUIRE_THROWS_WITH(Trainer(cfg), Contains("must be positive"));
}

}  // namespace rlobj_test_examples_onpolicy_trainer_test
