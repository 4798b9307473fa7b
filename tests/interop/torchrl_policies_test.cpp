// TorchRL 0.14.1's policies in rlobj, and rlobj 0.1's files in today's rlobj.
//
// * The example trainers' policies as TorchRL 0.14.1 builds them (tools/reference/cases/policies.py,
//   files in tests/data/reference/torchrl-0.14.1/): rlobj's state dict has TorchRL's keys, shapes
//   and dtypes in TorchRL's order; TorchRL's `torch.save` file loads strictly, without renaming;
//   the loaded policy's deterministic actions are TorchRL's within the derived tolerance
//   (`PolicyProgram::check`: twice the forward-error bound; greedy actions within 4x the values'
//   bound of the best). A mutation (one bias moved) fails the same check.
// * rlobj 0.1.0's state dicts and archives (tests/data/reference/rlobj-0.1/) load into today's
//   modules through the migration rlobj-0.1 and the modules' own `load`, and act as they did.
// The other direction (TorchRL loads what rlobj saves, in Python) is the ctest entry
// interop.torchrl (tests/interop/check_torchrl.cmake), skipped where TorchRL 0.14.1 is missing.

#include <rlobj/deploy/program.h>
#include <rlobj/interop.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "deploy/policies.h"
#include "objectives/json_reference.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_torchrl_policies {

using namespace rlobj_test_deploy;
namespace fs = std::filesystem;

const std::string kTorchRLDir = std::string(RLOBJ_TEST_DATA_DIR) + "/reference/torchrl-0.14.1";
const std::string kLegacyDir = std::string(RLOBJ_TEST_DATA_DIR) + "/reference/rlobj-0.1";

PolicyCase find_case(const std::string& name) {
  for (auto& c : policy_cases()) {
    if (c.name == name) return c;
  }
  FAIL("no policy case " << name << " in tests/deploy/policies.h");
  throw std::logic_error("unreachable");
}

TEST_CASE("TorchRL 0.14.1's example policies: same state-dict keys, strict load, the same actions", "[interop][torchrl]") {
  const auto ref = rlobj_test::read_json_file(kTorchRLDir + "/policies_torchrl.json");
  REQUIRE(ref["policies"].size() == 7);
  for (const auto& item : ref["policies"].items()) {
    const std::string name = item.key();
    const auto& c = item.value();
    INFO("policy " << name);
    PolicyCase pc = find_case(name);
    // rlobj's names are TorchRL's, entry for entry and in order, with the same shapes and dtypes.
    const auto mine = rlobj::state_dict(*pc.actor);
    REQUIRE(mine.size() == c["keys"].size());
    for (size_t i = 0; i < mine.size(); ++i) {
      const auto& k = c["keys"][i];
      CHECK(mine.keys()[i] == k["name"].get<std::string>());
      CHECK(mine[k["name"].get<std::string>()].sizes().vec() == k["shape"].get<std::vector<int64_t>>());
      CHECK(rlobj::detail::dtype_str(mine.values()[i].scalar_type()) == k["dtype"].get<std::string>());
    }
    // TorchRL's torch.save file, strictly.
    const auto r = rlobj::load_state_dict(*pc.actor, kTorchRLDir + "/" + c["file"].get<std::string>());
    REQUIRE(r.ok());
    const torch::Tensor obs = rlobj_test::json_tensor_typed(c["observation"]);
    const torch::Tensor theirs = rlobj_test::json_tensor_typed(c["action"]);
    const torch::Tensor ours = actor_action(pc, obs);
    CHECK(ours.sizes() == theirs.sizes());
    const auto program = rlobj::deploy::lower_policy(*pc.actor, obs);
    const auto check = program.check(obs, ours, theirs);
    INFO("max |rlobj - TorchRL| " << check.max_abs_diff << ", " << check.max_ratio << " of the tolerance");
    CHECK(check.ok);
    // The check bites: the same comparison with one bias of the last layer moved fails.
    auto mutated = program;
    mutate_last_bias(mutated, program.action().integer ? 0.5 : 1e-3);
    CHECK_FALSE(mutated.check(obs, mutated.run(obs), theirs).ok);
  }
}

TEST_CASE("TanhModule computes TorchRL's low + (high - low) * (tanh(x) + 1) / 2, op for op", "[interop][torchrl]") {
  namespace m = rlobj::modules;
  const torch::Tensor x = torch::linspace(-4, 4, 97).reshape({97, 1});
  const torch::Tensor low = torch::tensor({-0.7f}), high = torch::tensor({1.9f});
  auto tanh = m::TanhModule({"x"}, {"y"}, rlobj::Bounded(low, high));
  rlobj::TensorDict td({97});
  td.set("x", x);
  const torch::Tensor y = tanh(td).get("y");
  CHECK(torch::equal(y, low + (high - low) * (x.tanh() + 1) / 2));  // bit for bit
  // Not the algebraically equal tanh(x) * (high - low) / 2 + (high + low) / 2 of rlobj 0.1 (which
  // differs at rounding level on some of these rows).
  CHECK_FALSE(torch::equal(y, x.tanh() * ((high - low) / 2) + (high + low) / 2));
  SECTION("without bounds: -1 and 1, the map applied all the same") {
    auto unit = m::TanhModule({"x"}, {"y"});
    CHECK(rlobj::state_dict(*unit).keys() == std::vector<std::string>{"y_low", "y_high"});
    CHECK(torch::equal(unit(td).get("y"), -1 + 2 * (x.tanh() + 1) / 2));
  }
  SECTION("clamp: tanh first clamped to [-1 + 1e-6, 1 - 1e-6] (float32's resolution)") {
    auto clamped = m::TanhModule({"x"}, {"y"}, -2.0, 2.0, /*clamp=*/true);
    CHECK(clamped->clamp());
    const torch::Tensor t = x.tanh().clamp(-1 + 1e-6, 1 - 1e-6);
    CHECK(torch::equal(clamped(td).get("y"), -2 + 4 * (t + 1) / 2));
    CHECK(clamped(td).get("y").abs().max().item<float>() < 2.0f);
  }
  SECTION("one pair of buffers per out key, TorchRL's names (nested keys joined by _)") {
    auto two = m::TanhModule({"a", "b"}, {rlobj::NestedKey({"agent", "action"}), "other"}, -1.0, 3.0);
    CHECK(rlobj::state_dict(*two).keys() ==
          std::vector<std::string>{"agent_action_low", "agent_action_high", "other_low", "other_high"});
    REQUIRE_THROWS_WITH(m::TanhModule({"a", "b"}, {rlobj::NestedKey({"x", "y"}), "x_y"}, -1.0, 1.0),
                        Catch::Contains("give the same buffer name \"x_y_low\""));
  }
  SECTION("bounds: finite, low < high") {
    REQUIRE_THROWS_WITH(m::TanhModule({"x"}, {"y"}, 1.0, 1.0), Catch::Contains("low must be < high"));
    REQUIRE_THROWS_WITH(m::TanhModule({"x"}, {"y"}, -INFINITY, 1.0), Catch::Contains("must be finite"));
  }
}

TEST_CASE("rlobj 0.1's state dicts and archives load into today's modules (migration rlobj-0.1)", "[interop][torchrl]") {
  namespace m = rlobj::modules;
  const auto ref = rlobj_test::read_json_file(kLegacyDir + "/actions.json");
  REQUIRE(ref["rlobj_version"] == "0.1.0");
  const torch::Tensor obs = torch::tensor(ref["observation"].get<std::vector<double>>()).reshape({8, 3}).to(torch::kFloat32);
  const rlobj::Bounded box(-2.0, 2.0, {1});
  auto make = [&](const std::string& name) -> std::shared_ptr<m::TensorDictModuleBase> {
    if (name == "ddpg") {
      return m::TensorDictSequential(
                 m::TensorDictModule(m::MLP(m::MLPOptions(3, 1).num_cells({16, 16}).activation(m::Activation::ReLU)),
                                     {"observation"}, {"param"}),
                 m::TanhModule({"param"}, {"action"}, box))
          .ptr();
    }
    return m::ProbabilisticActor(
               m::TensorDictSequential(
                   m::TensorDictModule(m::MLP(m::MLPOptions(3, 1).num_cells({16, 16})), {"observation"}, {"loc"}),
                   m::TensorDictModule(m::AddStateIndependentNormalScale(1, 1e-8), {"loc"}, {"loc", "scale"})),
               m::TanhNormal::factory(m::TanhNormalOptions::from_spec(box)))
        .ptr();
  };
  for (const std::string name : {"ddpg", "ppo_pendulum"}) {
    INFO("policy " << name);
    const torch::Tensor then = torch::tensor(ref[name].get<std::vector<double>>()).reshape({8, 1}).to(torch::kFloat32);
    // The state dict (save_state_dict) through load_state_dict, and the archive (torch::save)
    // through the modules' own load.
    PolicyCase from_sd{name, make(name), 3, {}}, from_archive{name, make(name), 3, {}};
    // What a freshly built module gives: each load below must change it.
    const torch::Tensor fresh = actor_action(from_sd, obs);
    const auto fresh_program = rlobj::deploy::lower_policy(*from_sd.actor, obs);
    CHECK_FALSE(fresh_program.check(obs, fresh, then).ok);

    const auto sd = rlobj::read_state_dict(kLegacyDir + "/" + name + "_state_dict.pt");
    const auto migrated = rlobj::migrate_state_dict_from_0_1(sd, *from_sd.actor);
    CHECK(migrated.keys() == rlobj::state_dict(*from_sd.actor).keys());
    if (name == "ddpg") {
      CHECK(migrated["module.1.action_low"].item<float>() == -2.0f);  // shift - scale, exact here
      CHECK(migrated["module.1.action_high"].item<float>() == 2.0f);
    }
    CHECK(rlobj::load_state_dict(*from_sd.actor, kLegacyDir + "/" + name + "_state_dict.pt").ok());

    torch::serialize::InputArchive archive;
    archive.load_from(kLegacyDir + "/" + name + "_archive.pt");
    from_archive.actor->load(archive);

    for (const PolicyCase* pc : {&from_sd, &from_archive}) {
      const torch::Tensor now = actor_action(*pc, obs);
      // rlobj 0.1's TanhModule rounded otherwise: the derived tolerance, not bit equality.
      const auto check = rlobj::deploy::lower_policy(*pc->actor, obs).check(obs, now, then);
      INFO("max |now - 0.1.0| " << check.max_abs_diff << ", " << check.max_ratio << " of the tolerance");
      CHECK(check.ok);
    }
    CHECK(torch::equal(actor_action(from_sd, obs), actor_action(from_archive, obs)));
  }
  {  // a state dict that matches neither layout is still an error naming the keys
    auto actor = make("ddpg");
    auto sd = rlobj::read_state_dict(kLegacyDir + "/ddpg_state_dict.pt");
    sd.erase("1.shift");
    REQUIRE_THROWS_WITH(rlobj::load_state_dict(*actor, sd),
                        Catch::Contains("missing keys") && Catch::Contains("\"module.1.action_low\"") &&
                            Catch::Contains("unexpected keys") && Catch::Contains("\"1.scale\""));
  }
}

// The C++ halves of the ctest entry interop.torchrl (tests/interop/check_torchrl.cmake); hidden
// ("[.]"): they need $RLOBJ_TORCHRL_DIR and the Python step between them.
std::string torchrl_dir() {
  const char* dir = std::getenv("RLOBJ_TORCHRL_DIR");
  REQUIRE(dir != nullptr);
  return dir;
}

TEST_CASE("interop.torchrl: rlobj's policies for TorchRL", "[.interop-torchrl-write]") {
  const auto ref = rlobj_test::read_json_file(kTorchRLDir + "/policies_torchrl.json");
  for (const auto& item : ref["policies"].items()) {
    PolicyCase pc = find_case(item.key());  // seeded: not TorchRL's weights
    const torch::Tensor obs = observations(pc, 64, 11);
    rlobj::save_state_dict(*pc.actor, torchrl_dir() + "/rlobj_" + pc.name + ".pt");
    rlobj::StateDict io("entry");
    io.insert("observation", obs);
    io.insert("action", actor_action(pc, obs));
    rlobj::write_state_dict(io, torchrl_dir() + "/rlobj_" + pc.name + "_io.pt");
  }
}

TEST_CASE("interop.torchrl: TorchRL's actions with rlobj's weights", "[.interop-torchrl-read]") {
  const auto ref = rlobj_test::read_json_file(kTorchRLDir + "/policies_torchrl.json");
  for (const auto& item : ref["policies"].items()) {
    INFO("policy " << item.key());
    PolicyCase pc = find_case(item.key());
    const auto io = rlobj::read_state_dict(torchrl_dir() + "/rlobj_" + pc.name + "_io.pt");
    const auto theirs = rlobj::read_state_dict(torchrl_dir() + "/torchrl_" + pc.name + ".pt");
    REQUIRE(torch::equal(theirs["observation"], io["observation"]));
    const auto check = rlobj::deploy::lower_policy(*pc.actor, io["observation"])
                           .check(io["observation"], io["action"], theirs["action"]);
    INFO("max |rlobj - TorchRL| " << check.max_abs_diff << ", " << check.max_ratio << " of the tolerance");
    CHECK(check.ok);
  }
}

}  // namespace rlobj_test_torchrl_policies
