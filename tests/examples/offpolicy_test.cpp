// The off-policy examples' configuration of the library trainer (DDPG, TD3, SAC;
// examples/common/offpolicy.h): checkpoints resume exactly, parallel runs do not interfere.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "common/offpolicy.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_examples_offpolicy_test {

using Catch::Matchers::Contains;
using offpolicy::Config;

namespace {
Config small_config() {
  Config cfg;
  cfg.total_frames = 600;
  cfg.num_envs = 2;
  cfg.init_random_frames = 100;
  cfg.batch_size = 32;
  cfg.num_cells = {16, 16};
  cfg.eval_episodes = 2;
  return cfg;
}
}  // namespace

TEST_CASE("examples' integer flags: decimal as written", "[example][cli]") {
  const auto parse = [](const std::string& text) {
    CLI::App app;
    int64_t value = -7;
    app.add_option("--n", value)->transform(rlobj_examples::int_at_least(1));
    app.parse(text, /*program_name_included=*/false);
    return value;
  };
  CHECK(parse("--n 0400") == 400);  // not octal 256
  CHECK(parse("--n 12") == 12);
  CHECK(parse("--n +007") == 7);
  CHECK(parse("--n 9223372036854775807") == std::numeric_limits<int64_t>::max());
  for (const char* bad : {"0x10", "0b11", "0o17", "1e9", "12.0", "1_000", "+", "-"}) {
    INFO(bad);
    REQUIRE_THROWS_WITH(parse(std::string("--n ") + bad), Contains("--n: " + std::string(bad) + " is not a decimal integer"));
  }
  REQUIRE_THROWS_WITH(parse("--n 99999999999999999999"), Contains("does not fit in a 64-bit integer"));
  REQUIRE_THROWS_AS(parse("--n 0000"), CLI::ValidationError);  // 0 < 1
  REQUIRE_THROWS_AS(parse("--n -5"), CLI::ValidationError);
}

TEST_CASE("examples' file flags: two naming one file are refused", "[example][cli]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("rlobj_same_file_" + std::to_string(::getpid()));
  fs::create_directories(dir / "sub");
  const std::string a = (dir / "a.pt").string();
  { std::ofstream(a) << "x"; }
  using rlobj_examples::refuse_same_file;
  CHECK_NOTHROW(refuse_same_file({{"--log-csv", (dir / "log.csv").string()}, {"--checkpoint", a}}));
  CHECK_NOTHROW(refuse_same_file({{"--log-csv", a}, {"--checkpoint", ""}}));  // a flag not given
  REQUIRE_THROWS_WITH(refuse_same_file({{"--log-csv", a}, {"--checkpoint", (dir / "sub" / ".." / "a.pt").string()}}),
                      Contains("--log-csv: " + a + " and --checkpoint name the same file"));
  // A file that does not exist yet, named two ways.
  REQUIRE_THROWS_AS(refuse_same_file({{"--output", (dir / "new.ts").string()}, {"--state-dict", (dir / "./new.ts").string()}}),
                    CLI::ValidationError);
  // Links: a symbolic one, and a hard one.
  fs::create_symlink(a, dir / "sym.pt");
  fs::create_hard_link(a, dir / "hard.pt");
  REQUIRE_THROWS_AS(refuse_same_file({{"--checkpoint", a}, {"--log-csv", (dir / "sym.pt").string()}}), CLI::ValidationError);
  REQUIRE_THROWS_AS(refuse_same_file({{"--checkpoint", a}, {"--log-csv", (dir / "hard.pt").string()}}), CLI::ValidationError);
  // A pair declared allowed (a run continued in place).
  CHECK_NOTHROW(refuse_same_file({{"--checkpoint", a}, {"--resume", a}}, {{"--resume", "--checkpoint"}}));
  fs::remove_all(dir);
}

TEMPLATE_TEST_CASE("off-policy trainer: a resumed run continues exactly as if never stopped", "[example][checkpoint]",
                   offpolicy::DDPG, offpolicy::TD3, offpolicy::SAC) {
  using Run = offpolicy::Run<TestType>;
  const std::string path =
      (std::filesystem::temp_directory_path() / (std::string("rlobj_trainer_test_") + TestType::kProgram + ".pt"))
          .string();
  Run straight(small_config());
  straight.trainer->train();
  CHECK(straight.trainer->frames() == 600);
  CHECK(straight.trainer->updates() == 2 * (600 - 100) / 2 + 2);  // num_envs updates per batch once learning starts

  Run first(small_config());
  while (first.trainer->frames() < 300) first.trainer->step();
  first.trainer->save(path);
  CHECK(std::filesystem::exists(path));

  Run resumed(small_config());
  resumed.trainer->load(path);
  CHECK(resumed.trainer->frames() == 300);
  resumed.trainer->train();
  CHECK(resumed.trainer->updates() == straight.trainer->updates());
  auto p1 = straight.loss->parameters();
  auto p2 = resumed.loss->parameters();
  for (size_t i = 0; i < p1.size(); ++i) CHECK(torch::equal(p1[i], p2[i]));
  const std::string target = std::string("target_") + TestType::kCritic + "_params";
  auto t1 = straight.loss->named_buffers()[target];
  auto t2 = resumed.loss->named_buffers()[target];
  CHECK(torch::equal(t1, t2));
  CHECK(straight.returns.recent_return() == resumed.returns.recent_return());
  CHECK(straight.losses.last(TestType::kCriticLoss) == resumed.losses.last(TestType::kCriticLoss));
  const auto evaluate = [](Run& r) {
    return rlobj::trainers::Evaluator(*r.eval_env, r.actor, rlobj::trainers::EvaluatorOptions().max_steps(200))();
  };
  CHECK(evaluate(straight) == evaluate(resumed));

  Config other = small_config();
  other.num_cells = {8};
  Run incompatible(other);
  REQUIRE_THROWS_WITH(incompatible.trainer->load(path), Contains("was made with"));
  std::remove(path.c_str());
}

TEST_CASE("ddpg_pendulum: trainers in parallel threads train as they do one after the other", "[example]") {
  auto run = [](uint64_t seed) {
    Config cfg = small_config();
    cfg.seed = seed;
    cfg.total_frames = 300;
    offpolicy::Run<offpolicy::DDPG> r(cfg);
    r.trainer->train();
    std::vector<torch::Tensor> params;
    for (const auto& p : r.loss->parameters()) params.push_back(p.detach().clone());
    return params;
  };
  const auto a = run(4), b = run(5);
  std::vector<torch::Tensor> pa, pb;
  std::thread ta([&] { pa = run(4); }), tb([&] { pb = run(5); });
  ta.join();
  tb.join();
  REQUIRE(pa.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(torch::equal(pa[i], a[i]));
    CHECK(torch::equal(pb[i], b[i]));
  }
}

}  // namespace rlobj_test_examples_offpolicy_test
