#include <rlobj/collectors/sync.h>
#include <rlobj/envs/pendulum.h>

#include <sstream>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_collectors_sync_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using rlobj::collectors::SyncDataCollector;
using rlobj::envs::Pendulum;
using rlobj::envs::PendulumOptions;
namespace ti = torch::indexing;

namespace {
// A policy that always pushes with 0.5.
void constant_policy(TensorDict& td) {
  td.set("action", torch::full(td.get("observation").sizes().vec().size() == 2
                                   ? std::vector<int64_t>{td.batch_size()[0], 1}
                                   : std::vector<int64_t>{1},
                               0.5f));
}
}  // namespace

TEST_CASE("SyncDataCollector: batches in TorchRL's layout until total_frames", "[collectors]") {
  Pendulum env(PendulumOptions().batch_size({4}).seed(1));
  SyncDataCollector collector(env, constant_policy, /*frames_per_batch=*/40, /*total_frames=*/200);
  int batches = 0;
  std::optional<TensorDict> previous;
  for (const TensorDict& batch : collector) {
    ++batches;
    CHECK(batch.batch_size() == std::vector<int64_t>{4, 10});
    CHECK(batch.get({"next", "reward"}).sizes() == torch::IntArrayRef({4, 10, 1}));
    CHECK(batch.get("action").eq(0.5f).all().item<bool>());
    // Episodes continue across batches: this batch starts where the last one stopped.
    if (previous) {
      CHECK(torch::equal(batch.get("observation").index({ti::Slice(), 0}),
                         previous->get({"next", "observation"}).index({ti::Slice(), -1})));
    }
    previous = batch;
  }
  CHECK(batches == 5);
  CHECK(collector.frames() == 200);
  CHECK_FALSE(collector.next().has_value());
}

TEST_CASE("SyncDataCollector: random actions for init_random_frames, then the policy", "[collectors]") {
  Pendulum env(PendulumOptions().batch_size({2}).seed(2));
  SyncDataCollector collector(env, constant_policy, /*frames_per_batch=*/10, /*total_frames=*/40,
                              /*init_random_frames=*/20);
  std::vector<bool> random;
  for (const TensorDict& batch : collector) random.push_back(!batch.get("action").eq(0.5f).all().item<bool>());
  CHECK(random == std::vector<bool>{true, true, false, false});
}

TEST_CASE("SyncDataCollector: done environments are reset and counted", "[collectors]") {
  Pendulum env(PendulumOptions().batch_size({3}).max_episode_steps(7).seed(3));
  SyncDataCollector collector(env, constant_policy, /*frames_per_batch=*/30, /*total_frames=*/-1);
  auto batch = *collector.next();
  auto steps = batch.get("step_count").index({0}).squeeze(-1);
  CHECK(rlobj_test::ints(steps) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 0, 1, 2});
  CHECK(collector.episodes() == 3);  // the three pendulums finished one episode each
  CHECK(collector.next().has_value());  // -1: no limit
}

TEST_CASE("SyncDataCollector: lambdas, module holders and errors", "[collectors]") {
  Pendulum env(PendulumOptions().batch_size({2}));
  auto returns_new = [](const TensorDict& td) {
    return TensorDict({{"action", torch::full({td.batch_size()[0], 1}, -1.0f)}}, td.batch_size());
  };
  SyncDataCollector c(env, returns_new, 4, 4);
  CHECK(c.next()->get("action").eq(-1.0f).all().item<bool>());
  REQUIRE_THROWS_WITH(SyncDataCollector(env, constant_policy, 3, 30), Contains("multiple of the number of environments (2)"));
  REQUIRE_THROWS_AS(SyncDataCollector(env, constant_policy, 0, 30), c10::ValueError);
  REQUIRE_THROWS_AS(SyncDataCollector(env, constant_policy, 2, 0), c10::ValueError);
}

TEST_CASE("SyncDataCollector: save and load continue identically", "[collectors]") {
  Pendulum env_a(PendulumOptions().batch_size({2}).seed(4));
  SyncDataCollector a(env_a, constant_policy, 6, -1, /*init_random_frames=*/100);
  a.next();
  torch::serialize::OutputArchive out;
  a.save(out);
  std::stringstream stream;
  out.save_to(stream);
  auto expected = *a.next();

  Pendulum env_b(PendulumOptions().batch_size({2}).seed(99));
  SyncDataCollector b(env_b, constant_policy, 6, -1, 100);
  torch::serialize::InputArchive in;
  in.load_from(stream);
  b.load(in);
  CHECK(b.frames() == 6);
  auto got = *b.next();
  for (const auto& key : expected.keys(true, true)) {
    INFO(key.str());
    CHECK(torch::equal(got.get(key), expected.get(key)));
  }
}

}  // namespace rlobj_test_collectors_sync_test
