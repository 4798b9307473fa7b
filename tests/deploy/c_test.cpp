// rlobj::deploy: lowering policies to programs, the derived tolerance, and the plain-C export
// (compiled with gcc -std=c99 -Wall -Wextra -Werror -pedantic and run on observations the
// example never saw). ONNX: tests/deploy/onnx_test.cpp.

#include <rlobj/deploy/c.h>
#include <rlobj/deploy/program.h>
#include <rlobj/modules/exploration.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "deploy/policies.h"
#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_deploy_c_test {

using namespace rlobj_test_deploy;
namespace fs = std::filesystem;

bool have_gcc() { return std::system("gcc --version >/dev/null 2>&1") == 0; }

/// A folder in this process's scratch folder (removed when the process ends).
fs::path scratch(const std::string& name) {
  fs::path dir = rlobj_test::process_scratch("rlobj_deploy_c") / name;
  fs::create_directories(dir);
  return dir;
}

/// Compiles `<dir>/policy.c` with a driver that reads observations from a file and writes the
/// actions, runs it on `obs`, and returns the actions.
torch::Tensor run_c(const rl::deploy::PolicyProgram& p, const fs::path& dir, const torch::Tensor& obs,
                    const std::string& prefix = "policy") {
  const std::string act_type = p.action().integer ? "int64_t" : "float";
  std::ofstream driver(dir / "driver.c");
  driver << "#include <stdio.h>\n#include <stdlib.h>\n#include \"policy.h\"\n"
         << "int main(int argc, char** argv) {\n"
         << "  long n = atol(argv[3]);\n"
         << "  float* obs = malloc(sizeof(float) * n * " << p.in_size() << ");\n"
         << "  " << act_type << "* act = malloc(sizeof(" << act_type << ") * n * " << (p.action().scalar ? 1 : p.action().size) << ");\n"
         << "  FILE* in = fopen(argv[1], \"rb\");\n  FILE* out;\n"
         << "  if (argc != 4 || !in || fread(obs, sizeof(float) * " << p.in_size() << ", n, in) != (size_t)n) return 2;\n"
         << "  fclose(in);\n  " << prefix << "_forward_batch(obs, act, n);\n"
         << "  out = fopen(argv[2], \"wb\");\n"
         << "  if (!out || fwrite(act, sizeof(" << act_type << ") * " << (p.action().scalar ? 1 : p.action().size)
         << ", n, out) != (size_t)n) return 3;\n"
         << "  fclose(out);\n  free(obs);\n  free(act);\n  return 0;\n}\n";
  driver.close();
  const std::string exe = (dir / "policy_run").string();
  const std::string compile = "gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2 -o " + exe + " " + (dir / "policy.c").string() +
                              " " + (dir / "driver.c").string() + " -lm 2>" + (dir / "gcc.log").string();
  if (std::system(compile.c_str()) != 0) {
    std::ifstream log(dir / "gcc.log");
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    FAIL("gcc failed on the exported C:\n" << text);
  }
  write_bytes((dir / "obs.bin").string(), obs.to(torch::kFloat32));
  const std::string run = exe + " " + (dir / "obs.bin").string() + " " + (dir / "act.bin").string() + " " +
                          std::to_string(obs.size(0));
  REQUIRE(std::system(run.c_str()) == 0);
  return read_bytes((dir / "act.bin").string(), action_shape(p, obs.size(0)),
                    p.action().integer ? torch::kLong : torch::kFloat32);
}

TEST_CASE("deploy: every example policy lowers to a program that acts as the actor", "[deploy]") {
  for (const auto& c : policy_cases()) {
    INFO(c.name);
    const auto program = lower(c);
    const torch::Tensor obs = observations(c, 300, 11);  // another batch size than the example's
    const torch::Tensor expected = actor_action(c, obs);
    const torch::Tensor got = program.run(obs);
    REQUIRE(got.sizes() == expected.sizes());
    const auto r = program.check(obs, expected, got);
    CHECK(r.ok);
    if (!program.action().integer) {
      // The tolerance is tight: far below the actions' own size.
      const auto bound = program.error_bound(program.run_all(obs))[static_cast<size_t>(program.output)];
      CHECK(bound.max().item<double>() < 5e-3 * std::max(1.0, expected.abs().max().item<double>()));
    }
  }
}

TEST_CASE("deploy: the check fails for a perturbed weight (the tolerance bites)", "[deploy]") {
  for (const auto& c : policy_cases()) {
    if (c.name != "ddpg" && c.name != "sac" && c.name != "dqn") continue;
    INFO(c.name);
    auto program = lower(c);
    const torch::Tensor obs = observations(c, 300, 12);
    const torch::Tensor expected = actor_action(c, obs);
    // The last layer's first bias moved by 1e-3 (0.1 for a greedy action: a tie must move).
    mutate_last_bias(program, program.action().integer ? 0.1 : 1e-3);
    CHECK_FALSE(program.check(obs, expected, program.run(obs)).ok);
  }
}

TEST_CASE("deploy: an overflowed tolerance passes only an identical answer", "[deploy]") {
  namespace m = rl::modules;
  torch::nn::Linear linear(1, 1);
  {
    torch::NoGradGuard no_grad;
    linear->weight.fill_(1e30f);
    linear->bias.zero_();
  }
  auto actor = m::TensorDictSequential(m::TensorDictModule(linear, {"observation"}, {"param"}),
                                       m::TanhModule({"param"}, {"action"}, rl::Bounded(-2.0, 2.0, {1})));
  const auto program = rl::deploy::lower_policy(actor, torch::zeros({1, 1}));
  const torch::Tensor obs = torch::tensor({{1e10f}, {1e-31f}});  // 1e40 overflows float32; 1e-1 does not
  const torch::Tensor expected = program.run(obs);
  CHECK(expected[0].item<float>() == 2.0f);
  const auto bound = program.error_bound(program.run_all(obs))[static_cast<size_t>(program.output)];
  CHECK(std::isinf(bound[0][0].item<double>()));
  CHECK(std::isfinite(bound[1][0].item<double>()));
  CHECK(program.check(obs, expected, expected.clone()).ok);
  torch::Tensor wrong = expected.clone();
  wrong[0][0] = 1.0f;  // the overflowed row: anything but the identical answer fails
  CHECK_FALSE(program.check(obs, expected, wrong).ok);
}

TEST_CASE("deploy: lower_policy refuses what it cannot export, naming it", "[deploy]") {
  namespace m = rl::modules;
  const rl::Bounded box(-1.0, 1.0, {2});
  auto actor = m::Actor(mlp(3, 2, {8}, Activation::Tanh));
  auto noisy = m::TensorDictSequential(actor, m::AdditiveGaussianModule(box));
  CHECK_THROWS_WITH(rl::deploy::lower_policy(noisy, torch::zeros({1, 3})),
                    Catch::Contains("unsupported module") && Catch::Contains("AdditiveGaussianModule") &&
                        Catch::Contains("\"module.1\""));
  CHECK_THROWS_WITH(rl::deploy::lower_policy(actor, torch::zeros({1, 4})), Catch::Contains("takes 3 features, gets 4"));
  CHECK_THROWS_WITH(rl::deploy::lower_policy(actor, torch::zeros({3})), Catch::Contains("[batch, features]"));
  CHECK_THROWS_WITH(rl::deploy::lower_policy(actor, torch::zeros({1, 3}), rl::deploy::LowerOptions().out_key("act")),
                    Catch::Contains("\"act\""));
  auto two_inputs = m::TensorDictModule(mlp(3, 2, {8}, Activation::Tanh), {"observation", "goal"}, {"action"});
  CHECK_THROWS_WITH(rl::deploy::lower_policy(two_inputs, torch::zeros({1, 3})), Catch::Contains("reads 2 keys"));
  // A module whose forward does more than its type says: caught by the check against the actor.
  struct Doubled : m::ActorImpl {
    using m::ActorImpl::ActorImpl;
    rl::TensorDict forward(rl::TensorDict td) override {
      td = m::ActorImpl::forward(td);
      return td.set("action", td.get("action") * 2);
    }
  };
  auto doubled = std::make_shared<Doubled>(mlp(3, 2, {8}, Activation::Tanh));
  CHECK_THROWS_WITH(rl::deploy::lower_policy(*doubled, torch::randn({4, 3})), Catch::Contains("differs from the actor"));
}

TEST_CASE("deploy: export_c compiles as strict C99 and acts as the actor", "[deploy]") {
  if (!have_gcc()) {
    WARN("SKIPPED: no gcc on the PATH to compile the exported C");
    return;
  }
  for (const auto& c : policy_cases()) {
    if (!c.c) continue;
    INFO(c.name);
    const auto program = lower(c);
    const fs::path dir = scratch(c.name);
    const auto info = rl::deploy::export_c(program, (dir / "policy").string());
    CHECK(info.constant_bytes >= program.parameter_count() * 4 - 64);
    CHECK(info.stack_bytes > 0);
    const torch::Tensor obs = observations(c, 257, 13);
    const torch::Tensor got = run_c(program, dir, obs);
    const auto r = program.check(obs, actor_action(c, obs), got);
    CHECK(r.ok);
    INFO("max |C - actor| " << r.max_abs_diff << ", " << r.max_ratio << " of the tolerance");
  }
}

TEST_CASE("deploy: the C check fails for a perturbed export (mutation)", "[deploy]") {
  if (!have_gcc()) {
    WARN("SKIPPED: no gcc on the PATH to compile the exported C");
    return;
  }
  const auto cases = policy_cases();
  const auto& c = cases.front();  // ddpg
  auto program = lower(c);
  const torch::Tensor obs = observations(c, 257, 14);
  const torch::Tensor expected = actor_action(c, obs);
  auto mutated = program;
  mutate_last_bias(mutated, 1e-3);
  const fs::path dir = scratch("mutated");
  rl::deploy::export_c(mutated, (dir / "policy").string());
  CHECK_FALSE(program.check(obs, expected, run_c(mutated, dir, obs)).ok);
}

TEST_CASE("deploy: int8 C export stays within its stated bound", "[deploy]") {
  if (!have_gcc()) {
    WARN("SKIPPED: no gcc on the PATH to compile the exported C");
    return;
  }
  for (const auto& c : policy_cases()) {
    if (c.name != "ddpg" && c.name != "sac" && c.name != "ppo_pendulum") continue;
    INFO(c.name);
    const auto program = lower(c);
    const fs::path dir = scratch(c.name + "_int8");
    const auto info = rl::deploy::export_c(program, (dir / "policy").string(), rl::deploy::CExportOptions().int8(true));
    const auto full = rl::deploy::export_c(program, (scratch(c.name + "_f32") / "policy").string());
    CHECK(info.constant_bytes < full.constant_bytes / 3);
    const torch::Tensor obs = observations(c, 257, 15);
    const torch::Tensor expected = actor_action(c, obs);
    const torch::Tensor got = run_c(program, dir, obs);
    const auto int8 = program.check(obs, expected, got, rl::deploy::ErrorModel().int8(true));
    CHECK(int8.ok);
    // Quantisation moves the actions by more than float rounding could: the float tolerance fails.
    CHECK_FALSE(program.check(obs, expected, got).ok);
    // And the stated bound is useful: a few percent of the action range (4) at most.
    const auto bound = program.error_bound(program.run_all(obs), rl::deploy::ErrorModel().int8(true));
    CHECK(bound[static_cast<size_t>(program.output)].max().item<double>() < 0.2);
  }
}

TEST_CASE("deploy: export_c refuses what plain C99 cannot hold", "[deploy]") {
  const auto cases = policy_cases();
  for (const auto& c : cases) {
    if (c.name == "gelu") {
      CHECK_THROWS_WITH(rl::deploy::export_c(lower(c), (scratch("gelu") / "p").string()), Catch::Contains("GELU"));
    }
    if (c.name == "float64") {
      CHECK_THROWS_WITH(rl::deploy::export_c(lower(c), (scratch("f64") / "p").string()), Catch::Contains("float32"));
    }
  }
  CHECK_THROWS_WITH(rl::deploy::export_c(lower(cases.front()), (scratch("bad") / "p").string(),
                                         rl::deploy::CExportOptions().prefix("1policy")),
                    Catch::Contains("not a C identifier"));
}

}  // namespace rlobj_test_deploy_c_test
