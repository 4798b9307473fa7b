#include <rlobj/modules/qvalue.h>
#include <rlobj/objectives/dqn.h>
#include <rlobj/objectives/utils.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "objectives/json_reference.h"
#include "objectives/parity.h"
#include "objectives/reference.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_objectives_dqn_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using namespace rlobj::objectives;  // NOLINT(build/namespaces)
using rlobj::modules::ActionSpace;
using rlobj::modules::MLP;
using rlobj::modules::MLPOptions;
using rlobj::modules::QValueActor;
namespace parity = rlobj_test::parity;

namespace {

/// A deliberate semantic change, to prove the parity tests catch it.
struct Mutation {
  std::optional<double> gamma;   ///< another discount
  bool done_as_mask = false;     ///< bootstrap on `done` instead of `terminated`
  std::optional<bool> double_dqn;  ///< the other DQN flavour
};

const std::vector<std::string>& names() { return rlobj_test::mlp_param_names(); }

parity::Quantities run_dqn(const std::string& file, const std::string& scenario, const parity::Perturbation& pert,
                           const Mutation& mut = {}) {
  const auto& ref = rlobj_test::reference_file(file);
  const auto& sc = ref["scenarios"][scenario];
  const auto& kw = sc["loss_kwargs"];
  parity::MlpLayout layout("value", {32, 32}, pert);
  MLP mlp(MLPOptions(4, 2).num_cells({32, 32}));
  rlobj_test::fill_canonical(mlp, 0, layout, pert.dtype);
  QValueActor qnet(mlp, {"observation"}, rlobj::modules::action_space_from_string(kw["action_space"]));
  auto options = DQNLossOptions()
                     .delay_value(kw["delay_value"].get<bool>())
                     .double_dqn(mut.double_dqn.value_or(kw["double_dqn"].get<bool>()));
  DQNLoss<> loss(qnet, options);
  if (mut.gamma) loss->make_value_estimator(ValueEstimators::TD0, value::ValueEstimatorOptions().gamma(*mut.gamma));
  if (mut.done_as_mask) loss->set_keys({{"terminated", "done"}});
  HardUpdate updater(loss, sc["updater"]["value_network_update_interval"].get<int64_t>());
  if (scenario.find("swapped_target_output") != std::string::npos) {
    // The reference flips the target's output rows right after the updater's initial copy.
    torch::NoGradGuard no_grad;
    auto target = loss->target_value_network()->named_parameters();
    for (int l : {4, 5}) {
      const std::string name = names()[static_cast<size_t>(l)];
      auto& p = target["module.0.module." + name];
      torch::Tensor canonical = rlobj_test::canonical_weight(l, p.sizes()).flip({0});
      p.copy_(layout.apply(name, canonical).to(p.scalar_type()));
    }
  }
  torch::optim::Adam optim(loss->parameters(), torch::optim::AdamOptions(ref["meta"]["adam"]["lr"].get<double>()));
  const auto perm = pert.perm("batch", 8);
  const auto unpermute = torch::argsort(perm);
  parity::Quantities q;
  auto record_params = [&](const std::string& prefix, bool grads, bool target) {
    auto named = target ? loss->target_value_network()->named_parameters() : mlp->named_parameters();
    for (const auto& name : names()) {
      const torch::Tensor& p = named[target ? "module.0.module." + name : name];
      parity::record(q, prefix + (target ? "/target.value." : "/value.") + name,
                     layout.apply(name, grads ? p.grad() : p, /*inverse=*/true));
    }
  };
  for (size_t i = 0; i < sc["iterations"].size(); ++i) {
    const std::string it = "iterations/" + std::to_string(i);
    TensorDict batch({8});
    rlobj_test::set_json_entries(batch, ref["batch"], pert.dtype, perm);
    TensorDict out = loss(batch);
    REQUIRE(out.keys() == std::vector<rlobj::NestedKey>{"loss"});
    parity::record(q, it + "/loss_out/loss", out.get("loss"));
    parity::record(q, it + "/batch_td_error", batch.get("td_error").index_select(0, unpermute));
    torch::Tensor total = sum_losses(out);
    parity::record(q, it + "/total_loss", total);
    total.backward();
    record_params(it + "/grads", true, false);
    optim.step();
    optim.zero_grad();
    record_params(it + "/params_after_adam", false, false);
    updater.step();
    record_params(it + "/params_after_update", false, false);
    record_params(it + "/targets_after_update", false, true);
  }
  return q;
}


parity::Report compare_dqn(const std::string& file, const std::string& scenario, const Mutation& mut = {}) {
  const auto checked = rlobj_test::scenario_records(rlobj_test::reference_file(file)["scenarios"][scenario]);
  const auto base = run_dqn(file, scenario, parity::Perturbation::none());
  std::vector<parity::Quantities> perturbed;
  for (const auto& p : parity::tolerance_runs()) perturbed.push_back(run_dqn(file, scenario, p));
  const bool mutated = mut.gamma || mut.done_as_mask || mut.double_dqn;
  const auto run = mutated ? run_dqn(file, scenario, parity::Perturbation::none(), mut) : base;
  return parity::compare(checked.records, run, base, perturbed);
}

}  // namespace

TEST_CASE("DQNLoss matches TorchRL 0.4 (DQN and double DQN, HardUpdate)", "[dqn][parity]") {
  for (const auto& [file, scenario] : std::vector<std::pair<std::string, std::string>>{
           {"dqn_torchrl.json", "dqn"},
           {"dqn_torchrl.json", "dqn_swapped_target_output"},
           {"dqn_double_torchrl.json", "double_dqn"},
           {"dqn_double_torchrl.json", "double_dqn_swapped_target_output"}}) {
    SECTION(scenario) { parity::require_match(compare_dqn(file, scenario), "dqn/" + scenario); }
  }
}

TEST_CASE("DQN parity: semantic changes are caught", "[dqn][parity][mutation]") {
  auto fails = [](const parity::Report& r) { return !r.mismatches.empty() && r.worst_ratio > 10; };
  CHECK(fails(compare_dqn("dqn_torchrl.json", "dqn", Mutation{0.9, false, std::nullopt})));
  CHECK(fails(compare_dqn("dqn_torchrl.json", "dqn", Mutation{std::nullopt, true, std::nullopt})));
  // Double DQN evaluates the target's value of the online argmax: with swapped target rows it
  // differs from the plain max.
  CHECK(fails(compare_dqn("dqn_double_torchrl.json", "double_dqn_swapped_target_output",
                          Mutation{std::nullopt, false, false})));
  CHECK(fails(compare_dqn("dqn_torchrl.json", "dqn_swapped_target_output", Mutation{std::nullopt, false, true})));
}

TEST_CASE("QValueModule: greedy actions, ties, masks and categorical actions", "[dqn][qvalue]") {
  using rlobj::modules::QValueModule;
  using rlobj::modules::QValueModuleOptions;
  TensorDict td({3});
  td.set("action_value", torch::tensor({{1.0f, 2.0f, 0.5f}, {3.0f, 3.0f, -1.0f}, {0.0f, -1.0f, -2.0f}}));
  QValueModule one_hot;
  one_hot(td);
  // Ties give several ones, as TorchRL's (q == q.max) rule.
  CHECK(torch::equal(td.get("action"), torch::tensor({{0, 1, 0}, {1, 1, 0}, {1, 0, 0}}, torch::kLong)));
  CHECK(torch::allclose(td.get("chosen_action_value"), torch::tensor({{2.0f}, {6.0f}, {0.0f}})));
  QValueModule categorical(QValueModuleOptions().action_space(ActionSpace::Categorical));
  categorical(td);
  CHECK(torch::equal(td.get("action"), torch::tensor({1, 0, 0}, torch::kLong)));
  CHECK(torch::allclose(td.get("chosen_action_value"), torch::tensor({{2.0f}, {3.0f}, {0.0f}})));
  QValueModule masked(QValueModuleOptions().action_mask_key(rlobj::NestedKey("mask")));
  td.set("mask", torch::tensor({{true, false, true}, {false, true, true}, {false, false, true}}));
  masked(td);
  CHECK(torch::equal(td.get("action"), torch::tensor({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}, torch::kLong)));
  // A row that allows no action: an error naming the mask, nothing written.
  TensorDict all_masked = td.clone();
  all_masked.set("mask", torch::tensor({{true, false, true}, {false, false, false}, {false, false, true}}));
  const torch::Tensor action_before = all_masked.get("action").clone();
  CHECK_THROWS_WITH(masked(all_masked), Contains("action mask \"mask\" allows no action in some row"));
  CHECK(torch::equal(all_masked.get("action"), action_before));
  TensorDict bad({3});
  bad.set("action_value", torch::ones({3, 2}, torch::kLong));
  CHECK_THROWS_WITH(one_hot(bad), Contains("must be floating point"));
  TensorDict none({3});
  CHECK_THROWS_WITH(one_hot(none), Contains("\"action_value\" not found"));
  CHECK_THROWS_WITH(rlobj::modules::action_space_from_string("binary"), Contains("unknown action_space"));
}

TEST_CASE("EGreedyModule: seeded, annealed, off under deterministic exploration", "[dqn][egreedy]") {
  using rlobj::modules::EGreedyModule;
  using rlobj::modules::EGreedyModuleOptions;
  rlobj::Categorical spec(4);
  EGreedyModule greedy(spec, EGreedyModuleOptions().eps_init(1.0).eps_end(0.1).annealing_num_steps(9).seed(3));
  TensorDict td({1000});
  td.set("action", torch::zeros({1000}, torch::kLong));
  {
    rlobj::modules::SetExplorationType guard(rlobj::modules::ExplorationType::Deterministic);
    greedy(td);
    CHECK(td.get("action").sum().item<int64_t>() == 0);
  }
  greedy(td);
  // eps 1: every action redrawn uniformly from 4.
  const double changed = (td.get("action") != 0).to(torch::kFloat).mean().item<double>();
  CHECK(changed > 0.65);
  CHECK(changed < 0.85);
  greedy->step(3);
  CHECK(greedy->eps() == Approx(0.7).epsilon(1e-6));
  greedy->step(100);
  CHECK(greedy->eps() == Approx(0.1).epsilon(1e-6));
  // Same seed, same draws.
  EGreedyModule a(spec, EGreedyModuleOptions().seed(5)), b(spec, EGreedyModuleOptions().seed(5));
  TensorDict ta({64}), tb({64});
  ta.set("action", torch::zeros({64}, torch::kLong));
  tb.set("action", torch::zeros({64}, torch::kLong));
  a(ta);
  b(tb);
  CHECK(torch::equal(ta.get("action"), tb.get("action")));
  // A mask: random actions only among the allowed ones.
  rlobj::Categorical three(3);
  EGreedyModule masked(three, EGreedyModuleOptions().action_mask_key(rlobj::NestedKey("mask")).seed(1));
  TensorDict tm({200});
  tm.set("action", torch::zeros({200}, torch::kLong));
  tm.set("mask", torch::tensor({false, true, true}).expand({200, 3}).clone());
  masked(tm);
  CHECK((tm.get("action") == 0).sum().item<int64_t>() == 0);
  CHECK((tm.get("action") == 2).sum().item<int64_t>() > 50);
  // The spec of the whole batch, as an env's action_spec() gives it, is accepted too.
  rlobj::OneHot batched(2, {6, 2}, torch::kLong);
  EGreedyModule whole(batched, EGreedyModuleOptions().seed(2));
  TensorDict tw({6});
  tw.set("action", torch::one_hot(torch::zeros({6}, torch::kLong), 2));
  whole(tw);
  CHECK(tw.get("action").sizes() == c10::IntArrayRef({6, 2}));
  CHECK(torch::equal(tw.get("action").sum(-1), torch::ones({6}, torch::kLong)));
  CHECK_THROWS_WITH(EGreedyModule(spec, EGreedyModuleOptions().eps_init(0.1).eps_end(0.5)), Contains("decrease"));
  TensorDict wrong({4});
  wrong.set("action", torch::zeros({4, 2}, torch::kLong));
  wrong.set("mask", torch::ones({4, 3}, torch::kBool));
  CHECK_THROWS_WITH(masked(wrong), Contains("action mask has shape"));
}

TEST_CASE("DQNLoss: options, categorical actions and clear errors", "[dqn]") {
  MLP mlp(MLPOptions(4, 3).num_cells({8}));
  QValueActor qnet(mlp, {"observation"}, ActionSpace::Categorical);
  CHECK_THROWS_WITH(DQNLoss<>(qnet, DQNLossOptions().delay_value(false).double_dqn(true)),
                    Contains("double_dqn=true requires delay_value=true"));
  DQNLoss<> loss(qnet);
  CHECK(loss->action_space() == ActionSpace::Categorical);
  TensorDict td({5});
  td.set("observation", torch::randn({5, 4}));
  td.set("action", torch::tensor({0, 2, 1, 1, 0}, torch::kLong));
  td.set({"next", "observation"}, torch::randn({5, 4}));
  td.set({"next", "reward"}, torch::randn({5, 1}));
  td.set({"next", "done"}, torch::zeros({5, 1}, torch::kBool));
  td.set({"next", "terminated"}, torch::zeros({5, 1}, torch::kBool));
  TensorDict out = loss(td);
  // The categorical prediction is the gathered value; with no termination and the target
  // equal to the online network at start, the target is r + gamma max Q(s').
  torch::Tensor q = qnet(td.copy()).get("action_value");
  torch::Tensor next_q = std::get<0>(qnet(rlobj::envs::step_mdp(td, rlobj::envs::StepMdpOptions().keep_other(false)))
                                         .get("action_value")
                                         .max(-1));
  torch::Tensor pred = q.gather(-1, td.get("action").unsqueeze(-1)).squeeze(-1);
  torch::Tensor target = td.get({"next", "reward"}).squeeze(-1) + 0.99f * next_q;
  CHECK(torch::allclose(out.get("loss"), (pred - target).pow(2).mean(), 1e-5, 1e-6));
  CHECK(td.get("td_error").sizes() == c10::IntArrayRef({5, 1}));
  td.set("action", torch::tensor({0, 3, 1, 1, 0}, torch::kLong));
  CHECK_THROWS_WITH(loss(td), Contains("outside [0, 3)"));
  td.set("action", torch::zeros({5}, torch::kFloat));
  CHECK_THROWS_WITH(loss(td), Contains("integer action indices"));
  td.erase("action");
  CHECK_THROWS_WITH(loss(td), Contains("\"action\" not found"));
  CHECK_THROWS_WITH(loss->make_value_estimator(ValueEstimators::GAE), Contains("GAE is not implemented"));
}

}  // namespace rlobj_test_objectives_dqn_test
