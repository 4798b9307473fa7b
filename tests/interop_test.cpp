// Interop with Python: TorchRL's state dicts in, state dicts and TorchScript policies out.
// Checked against the real TorchRL 0.4.0 files of tests/data/reference/interop/; the Python side
// of the round trip (torch.load / torch.jit.load of what rlobj writes) is the ctest entry
// `interop.python` (tests/interop/check_python.cmake), which runs the "[interop-files]" case.

#include <rlobj/interop.h>
#include <rlobj/modules/actor.h>
#include <rlobj/modules/distributions.h>
#include <rlobj/modules/mlp.h>
#include <rlobj/modules/probabilistic.h>
#include <rlobj/objectives/ddpg.h>
#include <rlobj/specs.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <catch2/catch.hpp>
#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>
#include <torch/script.h>
#include <torch/torch.h>

#include "objectives/parity.h"
#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_interop_test {

using Catch::Matchers::Contains;
using rlobj::StateDict;
using rlobj::modules::Actor;
using rlobj::modules::MLP;
using rlobj::modules::MLPOptions;
namespace fs = std::filesystem;
namespace parity = rlobj_test::parity;

namespace {

using rlobj_test::slurp;
using rlobj_test::spit;

const std::vector<std::string> kMlpKeys = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"};

std::string interop_file(const std::string& name) {
  return std::string(RLOBJ_TEST_DATA_DIR) + "/reference/interop/" + name;
}

const nlohmann::json& expected() { return rlobj_test::reference_file("interop/expected_actor_outputs.json"); }

torch::Tensor json_tensor(const nlohmann::json& rec, torch::Dtype dtype = torch::kFloat32) {
  std::vector<double> v = rec["values"].get<std::vector<double>>();
  return torch::tensor(v, torch::kFloat64).reshape(rec["shape"].get<std::vector<int64_t>>()).to(dtype);
}

/// A file in this process's scratch folder (removed when the process ends).
fs::path scratch(const std::string& name) { return rlobj_test::process_scratch("rlobj_interop_test") / name; }

/// Bytes given by value (pickles hold NULs and opcodes that C++ string literals mangle).
std::string raw(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out += static_cast<char>(b);
  return out;
}
/// BINUNICODE `s`.
std::string unicode(const std::string& s) { return "X" + raw({static_cast<int>(s.size()), 0, 0, 0}) + s; }
/// A tensor's bytes (a storage record).
std::string bytes_of(const torch::Tensor& t) {
  return std::string(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel() * t.element_size()));
}

/// A zip archive as torch.save writes it, around a hand-made `data.pkl` and storages.
std::string archive_with(const std::string& pkl, const std::vector<std::pair<std::string, std::string>>& records = {}) {
  std::string bytes;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t n) -> size_t {
    bytes.append(static_cast<const char*>(data), n);
    return n;
  });
  writer.writeRecord("data.pkl", pkl.data(), pkl.size());
  for (const auto& [name, data] : records) writer.writeRecord(name, data.data(), data.size());
  writer.writeEndOfFile();
  return bytes;
}

Actor make_actor() { return Actor(MLP(MLPOptions(3, 1).num_cells({32, 32}))); }
MLP make_mlp(torch::Dtype dtype = torch::kFloat32) {
  MLP mlp(MLPOptions(3, 1).num_cells({32, 32}));
  mlp->to(dtype);
  return mlp;
}

/// Every parameter and buffer of `m`, detached copies (to see that a failed load changed nothing).
std::vector<torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& item : rlobj::state_dict(m)) out.push_back(item.value().detach().clone());
  return out;
}
bool unchanged(const torch::nn::Module& m, const std::vector<torch::Tensor>& before) {
  const auto now = snapshot(m);
  if (now.size() != before.size()) return false;
  for (size_t i = 0; i < now.size(); ++i) {
    if (!torch::equal(now[i], before[i])) return false;
  }
  return true;
}

/// The reference observations and, for parity, one run of the reference MLP loaded from `sd`
/// (MLP naming) under a perturbation of its summation order.
parity::Quantities run_loaded_mlp(const StateDict& sd, const parity::Perturbation& p) {
  parity::MlpLayout layout("actor", {32, 32}, p);
  StateDict permuted("state dict entry");
  for (const auto& item : sd) permuted.insert(item.key(), layout.apply(item.key(), item.value()).to(p.dtype));
  auto mlp = make_mlp(p.dtype);
  rlobj::load_state_dict(mlp, permuted);
  parity::Quantities q;
  torch::NoGradGuard no_grad;
  parity::record(q, "expected_action", mlp(json_tensor(expected()["observations"]).to(p.dtype)));
  return q;
}

/// Checks `action` against the reference actions, each within a tolerance derived from how far
/// re-ordering the network's sums moves it (tests/objectives/parity.h).
void require_reference_actions(const torch::Tensor& action, const StateDict& mlp_sd) {
  parity::Quantities run;
  parity::record(run, "expected_action", action);
  std::vector<parity::Quantities> perturbed;
  for (const auto& p : parity::tolerance_runs()) perturbed.push_back(run_loaded_mlp(mlp_sd, p));
  const auto base = run_loaded_mlp(mlp_sd, parity::Perturbation::none());
  parity::require_match(parity::compare({{"expected_action", &expected()["expected_action"]}}, run, base, perturbed),
                        "interop actions");
}

}  // namespace

TEST_CASE("read_state_dict reads TorchRL's torch.save files, OrderedDict and plain dict", "[interop]") {
  const auto& tensors = expected()["state_dict"]["tensors"];
  for (const std::string file : {"mlp_state_dict.pt", "mlp_state_dict_plain.pt", "actor_state_dict.pt",
                                 "actor_state_dict_plain.pt"}) {
    INFO(file);
    const StateDict sd = rlobj::read_state_dict(interop_file(file));
    const std::string prefix = file.rfind("actor", 0) == 0 ? "module." : "";
    std::vector<std::string> want;
    for (const auto& k : kMlpKeys) want.push_back(prefix + k);
    CHECK(sd.keys() == want);  // in the file's order
    for (const auto& k : kMlpKeys) {
      const torch::Tensor& t = sd[prefix + k];
      CHECK(t.scalar_type() == torch::kFloat32);
      CHECK(t.device().is_cpu());
      // Data, not arithmetic: bit for bit the formula's float32 values TorchRL saved.
      CHECK(torch::equal(t, json_tensor(tensors[k])));
    }
  }
}

TEST_CASE("TorchRL's state dicts load into rlobj's Actor and MLP and act as TorchRL's actor", "[interop]") {
  const auto obs = json_tensor(expected()["observations"]);
  const StateDict mlp_sd = rlobj::read_state_dict(interop_file("mlp_state_dict.pt"));
  for (const std::string file : {"actor_state_dict.pt", "actor_state_dict_plain.pt"}) {
    INFO(file);
    auto actor = make_actor();
    const auto r = rlobj::load_state_dict(actor, interop_file(file));
    CHECK(r.ok());
    torch::NoGradGuard no_grad;
    rlobj::TensorDict td({5});
    td.set("observation", obs);
    require_reference_actions(actor(td).get("action"), mlp_sd);
  }
  for (const std::string file : {"mlp_state_dict.pt", "mlp_state_dict_plain.pt"}) {
    INFO(file);
    auto mlp = make_mlp();
    CHECK(rlobj::load_state_dict(mlp, interop_file(file)).ok());
    torch::NoGradGuard no_grad;
    require_reference_actions(mlp(obs), mlp_sd);
  }
  SECTION("an Actor's file into its MLP: consume_prefix") {
    auto mlp = make_mlp();
    auto sd = rlobj::consume_prefix(rlobj::read_state_dict(interop_file("actor_state_dict.pt")), "module.");
    CHECK(sd.keys() == kMlpKeys);
    CHECK(rlobj::load_state_dict(mlp, sd).ok());
    torch::NoGradGuard no_grad;
    CHECK(torch::equal(mlp(obs), [&] {
      auto other = make_mlp();
      rlobj::load_state_dict(other, interop_file("mlp_state_dict.pt"));
      return other(obs);
    }()));
  }
}

TEST_CASE("state_dict lists parameters and buffers as PyTorch does", "[interop]") {
  auto actor = rlobj::modules::TensorDictSequential(
      rlobj::modules::TensorDictModule(MLP(MLPOptions(3, 1).num_cells({4})), {"observation"}, {"param"}),
      rlobj::modules::TanhModule({"param"}, {"action"}, -2.0, 2.0));
  const auto sd = rlobj::state_dict(*actor);
  // TorchRL's names (a TensorDictSequential's modules in a list "module"; TanhModule's bounds).
  CHECK(sd.keys() == std::vector<std::string>{"module.0.module.0.weight", "module.0.module.0.bias",
                                              "module.0.module.2.weight", "module.0.module.2.bias",
                                              "module.1.action_low", "module.1.action_high"});
  CHECK(sd["module.1.action_low"].item<float>() == -2.0f);
  CHECK(sd["module.1.action_high"].item<float>() == 2.0f);
  // The module's own tensors, not copies.
  CHECK(sd["module.0.module.0.weight"].data_ptr() == actor->parameters()[0].data_ptr());
}

TEST_CASE("save_state_dict round trip, and loads into a loss's flat parameter views", "[interop]") {
  auto actor = make_actor();
  rlobj::load_state_dict(actor, interop_file("actor_state_dict.pt"));
  const auto path = scratch("roundtrip.pt");
  rlobj::save_state_dict(actor, path.string());
  CHECK_FALSE(fs::exists(rlobj::temp_path_of(path.string())));
  const auto back = rlobj::read_state_dict(path.string());
  const auto mine = rlobj::state_dict(*actor);
  REQUIRE(back.keys() == mine.keys());
  for (const auto& item : mine) CHECK(torch::equal(back[item.key()], item.value().detach()));

  SECTION("into the actor of a DDPG loss: the loss's flat group sees the values") {
    auto fresh = make_actor();
    auto critic = rlobj::modules::ValueOperator(MLP(MLPOptions(4, 1).num_cells({8})), {"observation", "action"});
    auto loss = rlobj::objectives::DDPGLoss(fresh, critic);
    const auto flat = loss->named_parameters()["actor_network_params"];
    REQUIRE(fresh->parameters()[0].data_ptr() == flat.data_ptr());  // views into the flat group
    CHECK(rlobj::load_state_dict(fresh, path.string()).ok());
    CHECK(fresh->parameters()[0].data_ptr() == flat.data_ptr());  // still views
    CHECK(torch::equal(flat.narrow(0, 0, 96).view({32, 3}), back["module.0.weight"]));
    // And saved from there: each tensor on its own, the same values.
    const auto from_loss = scratch("from_loss.pt");
    rlobj::save_state_dict(fresh, from_loss.string());
    const auto again = rlobj::read_state_dict(from_loss.string());
    for (const auto& item : back) CHECK(torch::equal(again[item.key()], item.value()));
    CHECK(again["module.4.bias"].storage().nbytes() == sizeof(float));
  }
  SECTION("dtypes and empty tensors survive") {
    StateDict sd("state dict entry");
    sd.insert("f64", torch::arange(6, torch::kFloat64).reshape({2, 3}));
    sd.insert("i64", torch::tensor(std::vector<int64_t>{-5, int64_t{1} << 40}, torch::kLong));
    sd.insert("u8", torch::tensor({0, 255}, torch::kByte));
    sd.insert("bool", torch::tensor({true, false}));
    sd.insert("half", torch::tensor({1.5, -2.0}).to(torch::kHalf));
    sd.insert("empty", torch::zeros({0, 4}));
    sd.insert("scalar", torch::tensor(3.25));
    sd.insert("strided", torch::arange(12, torch::kFloat32).reshape({3, 4}).t());  // written contiguous
    const auto p = scratch("dtypes.pt");
    rlobj::write_state_dict(sd, p.string());
    const auto got = rlobj::read_state_dict(p.string());
    REQUIRE(got.keys() == sd.keys());
    for (const auto& item : sd) {
      INFO(item.key());
      CHECK(got[item.key()].scalar_type() == item.value().scalar_type());
      CHECK(got[item.key()].sizes() == item.value().sizes());
      CHECK(torch::equal(got[item.key()], item.value()));
    }
  }
}

TEST_CASE("load_state_dict: strict lists every mismatch and changes nothing; non-strict loads what matches",
          "[interop]") {
  const std::string file = interop_file("mlp_state_dict.pt");
  SECTION("missing and unexpected keys, shape and dtype mismatches, in one error") {
    // A wider first hidden layer (shape mismatch on 0.* and 2.weight), one layer more (missing 6.*).
    MLP mlp(MLPOptions(3, 1).num_cells({64, 32, 32}));
    const auto before = snapshot(*mlp);
    try {
      rlobj::load_state_dict(mlp, file);
      FAIL("no error");
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      CHECK_THAT(msg, Contains("nothing was loaded"));
      CHECK_THAT(msg, Contains("missing keys"));
      CHECK_THAT(msg, Contains("\"6.weight\", \"6.bias\""));
      CHECK_THAT(msg, Contains("\"0.weight\": float32 [32, 3] in \"" + file + "\", float32 [64, 3] in the module"));
      CHECK_THAT(msg, Contains("\"2.weight\": float32 [32, 32] in"));
      CHECK_THAT(msg, Contains("strict=false"));
    }
    CHECK(unchanged(*mlp, before));
    SECTION("non-strict: the matching entries load, the others are returned") {
      const auto r = rlobj::load_state_dict(mlp, file, /*strict=*/false);
      CHECK(r.missing_keys == std::vector<std::string>{"6.weight", "6.bias"});
      CHECK(r.unexpected_keys.empty());
      // [64, 3], [64], [32, 64], [32], [32, 32], [32] in the module; [32, 3] ... [1] in the file.
      CHECK(r.mismatched_keys == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "4.weight", "4.bias"});
      const auto sd = rlobj::read_state_dict(file);
      CHECK(torch::equal(mlp->named_parameters()["2.bias"], sd["2.bias"]));  // the one entry that matches
      CHECK(torch::equal(mlp->named_parameters()["0.weight"], before[0]));
    }
  }
  SECTION("unexpected keys, with the prefix hint") {
    auto mlp = make_mlp();
    const auto before = snapshot(*mlp);
    CHECK_THROWS_WITH(rlobj::load_state_dict(mlp, interop_file("actor_state_dict.pt")),
                      Contains("unexpected keys") && Contains("\"module.0.weight\"") &&
                          Contains("consume_prefix(sd, \"module.\")"));
    CHECK(unchanged(*mlp, before));
    const auto r = rlobj::load_state_dict(mlp, interop_file("actor_state_dict.pt"), /*strict=*/false);
    CHECK(r.missing_keys == kMlpKeys);
    CHECK(r.unexpected_keys.size() == 6);
    CHECK(unchanged(*mlp, before));
  }
  SECTION("a dtype mismatch is not converted") {
    auto mlp = make_mlp(torch::kFloat64);
    const auto before = snapshot(*mlp);
    CHECK_THROWS_WITH(rlobj::load_state_dict(mlp, file),
                      Contains("\"4.bias\": float32 [1] in \"" + file + "\", float64 [1] in the module"));
    CHECK(unchanged(*mlp, before));
  }
}

TEST_CASE("read_state_dict: damaged, truncated, empty and foreign files are clear errors; the module is unchanged",
          "[interop]") {
  const std::string good = slurp(interop_file("actor_state_dict.pt"));
  auto actor = make_actor();
  const auto before = snapshot(*actor);
  const auto fails_with = [&](const std::string& bytes, const std::string& what) {
    const auto p = scratch("bad.pt");
    spit(p, bytes);
    CHECK_THROWS_WITH(rlobj::load_state_dict(actor, p.string()), Contains(p.string()) && Contains(what));
    CHECK(unchanged(*actor, before));
  };
  SECTION("missing") {
    CHECK_THROWS_WITH(rlobj::load_state_dict(actor, scratch("nope.pt").string()), Contains("cannot open"));
  }
  SECTION("empty") { fails_with("", "the file is empty"); }
  SECTION("not a zip archive") { fails_with("just some text, not an archive\n", "not a LibTorch archive"); }
  SECTION("truncated anywhere") {
    for (size_t n : {good.size() - 1, good.size() - 30, good.size() / 2, size_t{30}}) {
      INFO(n);
      const auto p = scratch("truncated.pt");
      spit(p, good.substr(0, n));
      CHECK_THROWS_AS(rlobj::load_state_dict(actor, p.string()), c10::Error);
      CHECK(unchanged(*actor, before));
    }
  }
  SECTION("a flipped byte in a tensor's data: the record's CRC-32") {
    const std::string weights(reinterpret_cast<const char*>(json_tensor(expected()["state_dict"]["tensors"]["0.weight"]).data_ptr()), 12);
    std::string bad = good;
    const auto at = bad.find(weights);
    REQUIRE(at != std::string::npos);
    bad[at + 5] = static_cast<char>(bad[at + 5] ^ 0x10);
    fails_with(bad, "record \"data/0\" is corrupt");
  }
  SECTION("the legacy (pre-1.6) torch.save format") {
    fails_with(raw({0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}) + "rest",
               "legacy format");
  }
  SECTION("a TorchScript file") {
    const auto ts = scratch("policy.ts");
    rlobj::export_policy(actor, torch::zeros({2, 3}), ts.string());
    CHECK_THROWS_WITH(rlobj::load_state_dict(actor, ts.string()), Contains("__torch__.rlobj.Actor"));
    CHECK(unchanged(*actor, before));
  }
  SECTION("a file that would run code in Python: refused before anything runs") {
    // pickle.dumps of os.system("touch ...") at protocol 2, in a torch.save-style archive.
    const std::string pkl = raw({0x80, 2}) + "cos\nsystem\n" + unicode("touch /tmp/x") + raw({0x85}) + "R.";
    fails_with(archive_with(pkl), "refers to os.system");
  }
  SECTION("not a dict, or values that are not tensors") {
    fails_with(archive_with(raw({0x80, 2}) + "]."), "holds a list, not a state dict");
    fails_with(archive_with(raw({0x80, 2}) + "}" + unicode("a") + "K" + raw({7}) + "s."), "\"a\" is a int, not a tensor");
  }
  SECTION("a dict reached twice (shared or cyclic), which could multiply the keys") {
    const std::string shared = raw({0x80, 2}) + "}(" + unicode("a") + "}q" + raw({1}) + unicode("b") + "h" + raw({1}) +
                               "u.";
    fails_with(archive_with(shared), "the dict under \"b.\" appears twice");
  }
  SECTION("a tensor subclass rebuilt by anything but a tensor rebuild (a chain of them would recurse)") {
    const std::string chain = raw({0x80, 2}) + "}(" + unicode("w") + "ctorch._tensor\n_rebuild_from_type_v2\n(" +
                              "ctorch._tensor\n_rebuild_from_type_v2\nctorch\nTensor\n)NtRu.";
    fails_with(archive_with(chain), "_rebuild_from_type_v2 with unexpected arguments");
  }
  SECTION("a tensor reaching past its storage") {
    // A [4, 4] float tensor over a storage of 15 elements.
    std::string pkl = rlobj::detail::pickle::dump_tensor_dict({{"w", torch::zeros({4, 4})}});
    const std::string numel16 = "K" + raw({16}) + "tQ";
    const auto at = pkl.find(numel16);
    REQUIRE(at != std::string::npos);
    pkl[at + 1] = 15;
    fails_with(archive_with(pkl, {{"data/0", std::string(15 * 4, '\0')}}), "reaches past the end of its storage");
  }
  SECTION("a storage record shorter than it says") {
    const std::string pkl = rlobj::detail::pickle::dump_tensor_dict({{"w", torch::zeros({4})}});
    fails_with(archive_with(pkl, {{"data/0", std::string(8, '\0')}}), "too few for 4 float32 elements");
    fails_with(archive_with(pkl), "no record \"data/0\"");
  }
}

TEST_CASE("read_state_dict: every truncated or mutated pickle is an error or a state dict, never a crash",
          "[interop]") {
  StateDict sd("state dict entry");
  sd.insert("a.weight", torch::arange(6, torch::kFloat32).reshape({2, 3}));
  sd.insert("a.bias", torch::ones({2}, torch::kFloat64));
  const auto entries = sd.pairs();  // (a copy: pairs() returns by value)
  const std::string pkl = rlobj::detail::pickle::dump_tensor_dict(entries);
  const std::vector<std::pair<std::string, std::string>> storages = {{"data/0", bytes_of(entries[0].second)},
                                                                     {"data/1", bytes_of(entries[1].second)}};
  const auto p = scratch("mutated.pt");
  int64_t errors = 0, loaded = 0;
  const auto attempt = [&](const std::string& bytes) {
    spit(p, archive_with(bytes, storages));
    try {
      rlobj::read_state_dict(p.string());
      ++loaded;
    } catch (const c10::Error&) {
      ++errors;
    }
  };
  for (size_t n = 0; n < pkl.size(); ++n) attempt(pkl.substr(0, n));
  CHECK(errors == static_cast<int64_t>(pkl.size()));  // every proper prefix is incomplete
  std::mt19937 gen(12345);
  for (int k = 0; k < 300; ++k) {
    std::string bad = pkl;
    bad[gen() % bad.size()] = static_cast<char>(gen() & 0xFFu);
    attempt(bad);
  }
  CHECK(errors + loaded == static_cast<int64_t>(pkl.size()) + 300);
  attempt(pkl);
  CHECK(loaded >= 1);
}

TEST_CASE("read_state_dict: nested dicts flatten to dotted keys, Parameters are tensors", "[interop]") {
  // torch.save({"actor": actor.state_dict(), "step": {...}}) style: a dict of dicts.
  std::string inner = rlobj::detail::pickle::dump_tensor_dict({{"module.0.bias", torch::ones({2})}});
  inner = inner.substr(2, inner.size() - 3);  // without PROTO and STOP: "}(...u"
  const std::string pkl = raw({0x80, 2}) + "}(" + unicode("actor") + inner + "u.";
  const auto p = scratch("nested.pt");
  spit(p, archive_with(pkl, {{"data/0", bytes_of(torch::ones({2}))}}));
  const auto sd = rlobj::read_state_dict(p.string());
  CHECK(sd.keys() == std::vector<std::string>{"actor.module.0.bias"});
  CHECK(torch::equal(sd["actor.module.0.bias"], torch::ones({2})));

  // torch._utils._rebuild_parameter(tensor, requires_grad, hooks), as torch.save of an nn.Parameter.
  std::string t = rlobj::detail::pickle::dump_tensor_dict({{"w", torch::ones({2})}});
  const std::string key = unicode("w");
  const auto at = t.find(key) + key.size();
  t.insert(at, "ctorch._utils\n_rebuild_parameter\n(");
  t.insert(t.size() - 2, raw({0x88}) + "ccollections\nOrderedDict\n)RtR");  // before SETITEMS, STOP
  spit(p, archive_with(t, {{"data/0", bytes_of(torch::ones({2}))}}));
  const auto param = rlobj::read_state_dict(p.string());
  CHECK(torch::equal(param["w"], torch::ones({2})));
}

TEST_CASE("export_policy: a TorchScript policy that acts as the actor, with the state dict's names", "[interop]") {
  auto actor = make_actor();
  rlobj::load_state_dict(actor, interop_file("actor_state_dict.pt"));
  const auto obs = json_tensor(expected()["observations"]);
  const auto path = scratch("policy.ts");
  rlobj::export_policy(actor, obs.narrow(0, 0, 1), path.string());
  auto policy = torch::jit::load(path.string());
  torch::NoGradGuard no_grad;
  rlobj::TensorDict td({5});
  td.set("observation", obs);
  const auto want = actor(td).get("action");
  CHECK(torch::equal(policy.forward({obs}).toTensor(), want));  // another batch size than the example's
  // One row: BLAS sums a 1-row product in another order than a 5-row one, so compare with the
  // actor on that row.
  rlobj::TensorDict row({1});
  row.set("observation", obs.narrow(0, 2, 1));
  CHECK(torch::equal(policy.forward({obs.narrow(0, 2, 1)}).toTensor(), actor(row).get("action")));
  std::vector<std::string> names;
  for (const auto& p : policy.named_parameters()) names.push_back(p.name);
  CHECK(names == rlobj::state_dict(*actor).keys());
  CHECK_FALSE(policy.is_training());  // exported in eval mode, with the attribute train()/eval() use
  // The actor itself is untouched: still trainable.
  for (const auto& p : actor->parameters()) CHECK(p.requires_grad());

  SECTION("a DDPG-style actor: MLP, then TanhModule's bounds (buffers)") {
    auto seq = rlobj::modules::TensorDictSequential(
        rlobj::modules::TensorDictModule(make_mlp(), {"observation"}, {"param"}),
        rlobj::modules::TanhModule({"param"}, {"action"}, -2.0, 2.0));
    rlobj::export_policy(seq, obs, path.string());
    auto p2 = torch::jit::load(path.string());
    rlobj::TensorDict td2({5});
    td2.set("observation", obs);
    CHECK(torch::equal(p2.forward({obs}).toTensor(), seq(td2).get("action")));
    std::vector<std::string> buffers;
    for (const auto& b : p2.named_buffers()) buffers.push_back(b.name);
    CHECK(buffers == std::vector<std::string>{"module.1.action_low", "module.1.action_high"});
  }
  SECTION("a ProbabilisticActor (TanhNormal): its deterministic action") {
    using namespace rlobj::modules;
    auto params = TensorDictSequential(TensorDictModule(MLP(MLPOptions(3, 2).num_cells({16})), {"observation"}, {"param"}),
                                       TensorDictModule(NormalParamExtractor(), {"param"}, {"loc", "scale"}));
    auto pactor = ProbabilisticActor(params, TanhNormal::factory(TanhNormalOptions::from_spec(rlobj::Bounded(-2.0, 2.0, {1}))));
    rlobj::export_policy(pactor, obs, path.string());
    auto p3 = torch::jit::load(path.string());
    SetExplorationType deterministic(ExplorationType::Deterministic);
    rlobj::TensorDict td3({5});
    td3.set("observation", obs);
    CHECK(torch::equal(p3.forward({obs}).toTensor(), pactor(td3).get("action")));
  }
  SECTION("bad calls are clear errors, and nothing is written") {
    const auto none = scratch("none.ts");
    CHECK_THROWS_WITH(rlobj::export_policy(actor, std::vector<torch::Tensor>{obs, obs}, none.string()),
                      Contains("2 example input(s) for 1 input key(s) (observation)"));
    CHECK_THROWS_WITH(rlobj::export_policy(actor, obs, none.string(), rlobj::ExportPolicyOptions().out_key("value")),
                      Contains("wrote no \"value\""));
    CHECK_FALSE(fs::exists(none));
    CHECK_THROWS_WITH(rlobj::export_policy(actor, obs, (scratch("no_such_dir") / "x" / "p.ts").string()),
                      Contains("cannot write"));
  }
}

TEST_CASE("interop: files for the Python checks", "[interop][interop-files]") {
  // tests/interop/check_python.cmake sets RLOBJ_INTEROP_DIR and then runs the Python side on
  // what this writes; without it, the files go to a scratch directory.
  const char* env = std::getenv("RLOBJ_INTEROP_DIR");
  const fs::path dir = env ? fs::path(env) : scratch("python");
  fs::create_directories(dir);
  auto actor = make_actor();
  rlobj::load_state_dict(actor, interop_file("actor_state_dict.pt"));
  rlobj::save_state_dict(actor, (dir / "actor_export.pt").string());
  rlobj::save_state_dict(*actor->module(), (dir / "mlp_export.pt").string());
  const auto obs = json_tensor(expected()["observations"]);
  rlobj::export_policy(actor, obs, (dir / "policy.ts").string());
  torch::NoGradGuard no_grad;
  rlobj::TensorDict td({5});
  td.set("observation", obs);
  const auto action = actor(td).get("action");
  nlohmann::json io;
  io["observations"] = {{"shape", obs.sizes().vec()}, {"values", rlobj_test::values(obs)}};
  io["actions"] = {{"shape", action.sizes().vec()}, {"values", rlobj_test::values(action)}};
  io["parameter_names"] = rlobj::state_dict(*actor).keys();
  std::ofstream(dir / "policy_io.json") << io.dump(1);
  // The tolerance the Python side compares actions with, derived as the parity tests derive
  // theirs: how far re-ordering the network's sums (and float64) moves each action.
  const StateDict mlp_sd = rlobj::read_state_dict(interop_file("mlp_state_dict.pt"));
  const torch::Tensor base = run_loaded_mlp(mlp_sd, parity::Perturbation::none()).at("expected_action");
  torch::Tensor spread = torch::zeros_like(base);
  for (const auto& p : parity::tolerance_runs()) {
    spread = torch::max(spread, (run_loaded_mlp(mlp_sd, p).at("expected_action") - base).abs());
  }
  double atol = 0;
  for (int64_t i = 0; i < base.numel(); ++i) {
    const double b = base[i].item<double>();
    atol = std::max(atol, parity::kSafety * spread[i].item<double>() + parity::kUlpFloor * parity::ulp32(b));
  }
  CHECK(atol > 0);
  CHECK(atol < 1e-5);
  std::ofstream(dir / "action_atol.txt") << fmt::format("{:.3g}", atol);
  CHECK(rlobj::read_state_dict((dir / "actor_export.pt").string()).keys() == rlobj::state_dict(*actor).keys());
  CHECK(fs::file_size(dir / "policy.ts") > 0);
}

}  // namespace rlobj_test_interop_test
