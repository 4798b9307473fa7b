// rlobj::deploy::export_onnx: every example policy as an ONNX model the ONNX library's checker
// accepts, with a dynamic batch dimension, the chosen opset and rlobj's metadata. Running the
// models in ONNX Runtime is the ctest entry deploy.onnxruntime (tests/deploy/check_onnxruntime.cmake),
// which runs the two hidden cases below around scripts/run_onnxruntime.py.

#include <rlobj/deploy/onnx.h>
#include <rlobj/deploy/program.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <catch2/catch.hpp>
#include <onnx/checker.h>
#include <torch/torch.h>

#include "deploy/policies.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_deploy_onnx_test {

using namespace rlobj_test_deploy;
namespace fs = std::filesystem;

std::map<std::string, std::string> metadata(const onnx::ModelProto& m) {
  std::map<std::string, std::string> out;
  for (const auto& p : m.metadata_props()) out[p.key()] = p.value();
  return out;
}

TEST_CASE("deploy: export_onnx writes models the ONNX checker accepts", "[deploy][onnx]") {
  const fs::path dir = fs::temp_directory_path() / ("rlobj_deploy_onnx_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // Removed even when a check below throws.
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};
  for (int64_t opset : {13, 17}) {
    for (const auto& c : policy_cases()) {
      INFO(c.name << " opset " << opset);
      const auto program = lower(c);
      const bool layer_norm = std::any_of(program.ops.begin(), program.ops.end(),
                                          [](const rl::deploy::Op& op) { return op.kind == rl::deploy::OpKind::LayerNorm; });
      const auto options = rl::deploy::OnnxExportOptions().opset(opset).metadata({{"env", "Pendulum-v1"}});
      if (layer_norm && opset < 17) {
        CHECK_THROWS_WITH(rl::deploy::onnx_model(program, options), Catch::Contains("opset >= 17"));
        continue;
      }
      const onnx::ModelProto model = rl::deploy::onnx_model(program, options);
      CHECK_NOTHROW(onnx::checker::check_model(model));
      CHECK(model.opset_import(0).version() == opset);
      const auto& input = model.graph().input(0).type().tensor_type().shape();
      CHECK(input.dim(0).dim_param() == "batch");
      CHECK(input.dim(1).dim_value() == c.n_obs);
      CHECK(model.graph().output(0).name() == "action");
      auto meta = metadata(model);
      CHECK(meta["rlobj.version"] == RLOBJ_VERSION_STRING);
      CHECK(meta["rlobj.observation_size"] == std::to_string(c.n_obs));
      CHECK(meta["env"] == "Pendulum-v1");
      const std::string path = (dir / (c.name + ".onnx")).string();
      rl::deploy::export_onnx(program, path, options);
      CHECK_NOTHROW(rl::deploy::check_onnx(path));
    }
  }
}

TEST_CASE("deploy: export_onnx refuses bad options, naming them", "[deploy][onnx]") {
  const auto program = lower(policy_cases().front());
  CHECK_THROWS_WITH(rl::deploy::onnx_model(program, rl::deploy::OnnxExportOptions().opset(12)),
                    Catch::Contains("opset must be 13 to 21"));
  CHECK_THROWS_WITH(rl::deploy::onnx_model(program, rl::deploy::OnnxExportOptions().metadata({{"rlobj.version", "x"}})),
                    Catch::Contains("reserved"));
  const fs::path bad = fs::temp_directory_path() / ("rlobj_not_onnx_" + std::to_string(::getpid()));
  std::ofstream(bad) << "not a model";
  CHECK_THROWS_WITH(rl::deploy::check_onnx(bad.string()), Catch::Contains("is not a valid ONNX model"));
  fs::remove(bad);
}

// The two halves of deploy.onnxruntime (RLOBJ_DEPLOY_DIR: its scratch folder). The first writes
// every case's model (opset 17) and observations; run_onnxruntime.py runs them; the second checks
// ONNX Runtime's actions against the actors', and that a model with one perturbed weight fails.
fs::path deploy_dir() {
  const char* dir = std::getenv("RLOBJ_DEPLOY_DIR");
  REQUIRE(dir != nullptr);
  return dir;
}

TEST_CASE("deploy: ONNX files for onnxruntime", "[.deploy-onnxruntime-write]") {
  const fs::path dir = deploy_dir();
  fs::create_directories(dir);
  for (const auto& c : policy_cases()) {
    auto program = lower(c);
    const torch::Tensor obs = observations(c, 257, 21);
    rl::deploy::export_onnx(program, (dir / (c.name + ".onnx")).string());
    write_bytes((dir / (c.name + ".obs.bin")).string(), obs);
    std::ofstream(dir / (c.name + ".shape")) << obs.size(0) << " " << obs.size(1) << " "
                                              << (c.dtype == torch::kFloat64 ? "float64" : "float32") << "\n";
    if (c.name == "ddpg" || c.name == "dqn") {  // the mutants
      mutate_last_bias(program, program.action().integer ? 0.1 : 1e-3);
      const std::string name = c.name + "_mutated";
      rl::deploy::export_onnx(program, (dir / (name + ".onnx")).string());
      write_bytes((dir / (name + ".obs.bin")).string(), obs);
      std::ofstream(dir / (name + ".shape")) << obs.size(0) << " " << obs.size(1) << " float32\n";
    }
  }
}

TEST_CASE("deploy: check onnxruntime's actions", "[.deploy-onnxruntime-check]") {
  const fs::path dir = deploy_dir();
  for (const auto& c : policy_cases()) {
    INFO(c.name);
    const auto program = lower(c);
    const torch::Tensor obs = observations(c, 257, 21);
    const torch::Tensor expected = actor_action(c, obs);
    const auto dtype = program.action().integer ? torch::kLong : c.dtype;
    const torch::Tensor ort = read_bytes((dir / (c.name + ".ort.bin")).string(), action_shape(program, 257), dtype);
    const auto r = program.check(obs, expected, ort);
    CHECK(r.ok);
    std::printf("deploy.onnxruntime: %-30s max |ONNX Runtime - actor| = %.3g (%.3f of the derived tolerance)\n",
                c.name.c_str(), r.max_abs_diff, r.max_ratio);
    if (c.name == "ddpg" || c.name == "dqn") {
      const torch::Tensor mutated =
          read_bytes((dir / (c.name + "_mutated.ort.bin")).string(), action_shape(program, 257), dtype);
      const auto m = program.check(obs, expected, mutated);
      CHECK_FALSE(m.ok);
    }
  }
}

}  // namespace rlobj_test_deploy_onnx_test
