#include <rlobj/objectives/sac.h>
#include <rlobj/objectives/utils.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "objectives/json_reference.h"
#include "objectives/parity.h"
#include "objectives/reference.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_objectives_sac_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using namespace rlobj::objectives;  // NOLINT(build/namespaces)
using rlobj::modules::MLP;
using rlobj::modules::MLPOptions;
using rlobj::modules::NormalParamExtractor;
using rlobj::modules::ProbabilisticActor;
using rlobj::modules::TanhNormal;
using rlobj::modules::TanhNormalOptions;
using rlobj::modules::TensorDictModule;
using rlobj::modules::TensorDictSequential;
using rlobj::modules::ValueOperator;
namespace parity = rlobj_test::parity;

namespace {

const nlohmann::json& sac_reference() { return rlobj_test::reference_file("sac_torchrl.json"); }

/// Perturbed runs behind SAC's tolerances: more than DDPG's and TD3's 6. The actor's gradients
/// pass through atanh of re-inverted samples, so their rounding spread has a heavier tail; with
/// 6 permutations one gradient element under OpenBLAS's Prescott kernels and ATen's AVX2 ones
/// landed 1.34 tolerances away (the parity matrix caught it). 16 sample that tail better.
constexpr int kToleranceRuns = 16;

/// A SACLoss whose standard normals are given (the reference's recorded draws, in the run's row
/// order and dtype) instead of drawn, for the perturbed runs; it also keeps what each draw gave.
class InjectedSAC : public SACLossImpl<> {
 public:
  using SACLossImpl<>::SACLossImpl;
  std::deque<torch::Tensor> normals;
  bool use_generator = false;  ///< draw as TorchRL does instead
  std::vector<std::pair<torch::Tensor, torch::Tensor>> drawn;  ///< (action, log_prob) per draw

 protected:
  torch::Tensor draw_action(const rlobj::modules::Distribution& dist) override {
    torch::Tensor a;
    if (use_generator) {
      a = SACLossImpl<>::draw_action(dist);
    } else {
      REQUIRE_FALSE(normals.empty());
      const auto* tanh_normal = dynamic_cast<const TanhNormal*>(&dist);
      REQUIRE(tanh_normal != nullptr);
      a = tanh_normal->rsample_with(normals.front().to(tanh_normal->base_loc().options()));
      normals.pop_front();
    }
    drawn.emplace_back(a.detach(), dist.log_prob(a).detach());
    return a;
  }
};

/// The reference batch, rows permuted and converted as `p` says.
TensorDict sac_batch(const parity::Perturbation& p) {
  TensorDict td({8});
  rlobj_test::set_json_entries(td, sac_reference()["batch"], p.dtype, p.perm("batch", 8));
  return td;
}

/// A deliberate semantic change, to prove the parity tests catch it.
struct Mutation {
  std::optional<double> gamma;          ///< another discount
  std::optional<double> target_entropy; ///< not "auto"
  bool done_as_mask = false;            ///< bootstrap on `done` instead of `terminated`
  bool swap_draws = false;              ///< the actor's normals first, the target's second
};

ProbabilisticActor make_actor(MLP mlp, const rlobj::TensorSpec& spec) {
  auto params = TensorDictSequential(TensorDictModule(mlp, {"observation"}, {"param"}),
                                     TensorDictModule(NormalParamExtractor(), {"param"}, {"loc", "scale"}));
  return ProbabilisticActor(params, TanhNormal::factory(TanhNormalOptions::from_spec(spec)));
}

parity::Quantities run_sac(const std::string& scenario, const parity::Perturbation& pert, bool inject,
                           const Mutation& mut = {}) {
  const auto& ref = sac_reference();
  const auto& sc = ref["scenarios"][scenario];
  const auto& kw = sc["loss_kwargs"];
  parity::MlpLayout actor_layout("actor", {32, 32}, pert);
  std::vector<parity::MlpLayout> q_layouts = {{"qvalue0", {32, 32}, pert}, {"qvalue1", {32, 32}, pert}};
  MLP actor_mlp(MLPOptions(3, 2).num_cells({32, 32}));
  MLP q_mlp(MLPOptions(4, 1).num_cells({32, 32}));
  rlobj_test::fill_canonical(actor_mlp, 0, actor_layout, pert.dtype);
  rlobj_test::fill_canonical(q_mlp, 6, q_layouts[0], pert.dtype);
  rlobj::Bounded spec(-2.0, 2.0, {1}, pert.dtype);
  auto actor = make_actor(actor_mlp, spec);
  ValueOperator qvalue(q_mlp, {"observation", "action"});
  auto options = SACLossOptions().num_qvalue_nets(kw["num_qvalue_nets"].get<int64_t>());
  if (kw.contains("fixed_alpha")) options.fixed_alpha(kw["fixed_alpha"].get<bool>());
  if (kw.contains("alpha_init")) options.alpha_init(kw["alpha_init"].get<double>());
  if (mut.target_entropy) options.target_entropy(*mut.target_entropy);
  auto impl = std::make_shared<InjectedSAC>(actor, qvalue, spec, options);
  SACLoss<> loss(impl);
  if (mut.gamma) loss->make_value_estimator(ValueEstimators::TD0, value::ValueEstimatorOptions().gamma(*mut.gamma));
  if (mut.done_as_mask) loss->set_keys({{"terminated", "done"}});
  {
    // TorchRL redraws the critic copies; the reference overwrites them with the formula.
    torch::NoGradGuard no_grad;
    for (int64_t c = 0; c < 2; ++c) {
      auto named = loss->qvalue_networks()[c]->named_parameters();
      for (size_t l = 0; l < rlobj_test::mlp_param_names().size(); ++l) {
        const auto& name = rlobj_test::mlp_param_names()[l];
        auto& p = named["module." + name];
        p.copy_(q_layouts[c].apply(name, rlobj_test::canonical_weight(static_cast<int>(6 + 6 * c + l), p.sizes())));
      }
    }
  }
  SoftUpdate updater(loss, SoftUpdateOptions().eps(sc["updater"]["eps"].get<double>()));

  const bool learned = !options.fixed_alpha();
  parity::Quantities q;
  auto record_params = [&](const std::string& prefix, bool grads, bool target) {
    for (const char* net : {"actor", "qvalue0", "qvalue1"}) {
      const std::string n(net);
      if (target && n == "actor") continue;  // SAC keeps no target actor
      const parity::MlpLayout* layout = n == "actor" ? &actor_layout : &q_layouts[n.back() - '0'];
      auto named = n == "actor" ? actor_mlp->named_parameters()
                   : target     ? loss->target_qvalue_networks()[n.back() - '0']->named_parameters()
                                : loss->qvalue_networks()[n.back() - '0']->named_parameters();
      for (const auto& name : rlobj_test::mlp_param_names()) {
        const torch::Tensor& p = named[n == "actor" ? name : "module." + name];
        parity::record(q, prefix + (target ? "/target." : "/") + n + "." + name,
                       layout->apply(name, grads ? p.grad() : p, /*inverse=*/true));
      }
    }
    if (learned && !target) parity::record(q, prefix + "/log_alpha", grads ? loss->log_alpha().grad() : loss->log_alpha());
  };

  // What the updater copied into the targets (the operands of the first soft update).
  record_params("initial", false, false);
  torch::optim::Adam optim(loss->parameters(), torch::optim::AdamOptions(ref["meta"]["adam"]["lr"].get<double>()));
  TensorDict batch = sac_batch(pert);
  const auto perm = pert.perm("batch", 8);
  const auto unpermute = torch::argsort(perm);
  const char* sites[] = {"target_policy_on_next_observation", "actor_on_observation"};
  for (size_t i = 0; i < sc["iterations"].size(); ++i) {
    const auto& it_ref = sc["iterations"][i];
    const std::string it = "iterations/" + std::to_string(i);
    const auto& sampling = it_ref["sampling"];
    impl->use_generator = !inject;
    impl->drawn.clear();
    if (inject) {
      std::vector<torch::Tensor> draws;
      for (const auto& d : sampling["rng_draws"]) draws.push_back(rlobj_test::json_tensor(d).to(torch::kFloat32).index_select(0, perm));
      if (mut.swap_draws) std::swap(draws[0], draws[1]);
      for (auto& d : draws) impl->normals.push_back(d);
    } else {
      torch::manual_seed(sampling["seed"].get<uint64_t>());
    }
    TensorDict out = loss(batch);
    REQUIRE(impl->drawn.size() == 2);
    for (size_t k = 0; k < 2; ++k) {
      const std::string prefix = it + "/sampling/" + sites[k];
      parity::record(q, prefix + "/action", impl->drawn[k].first.index_select(0, unpermute));
      parity::record(q, prefix + "/log_prob", impl->drawn[k].second.index_select(0, unpermute));
    }
    for (const auto& item : out.items()) parity::record(q, it + "/loss_out/" + item.first.str(), item.second.tensor());
    parity::record(q, it + "/batch_td_error", batch.get("td_error").index_select(0, unpermute));
    torch::Tensor total = sum_losses(out);
    parity::record(q, it + "/total_loss", total);
    total.backward();
    record_params(it + "/grads", /*grads=*/true, false);
    optim.step();
    record_params(it + "/params_after_adam", false, false);
    updater.step();
    record_params(it + "/params_after_update", false, false);
    record_params(it + "/targets_after_update", false, /*target=*/true);
    optim.zero_grad();
  }
  return q;
}

std::map<std::string, const nlohmann::json*> sac_records(const nlohmann::json& sc) {
  std::map<std::string, const nlohmann::json*> records;
  static std::deque<nlohmann::json> bare;
  for (size_t i = 0; i < sc["iterations"].size(); ++i) {
    const auto& it = sc["iterations"][i];
    const std::string prefix = "iterations/" + std::to_string(i);
    for (const char* part : {"loss_out", "grads", "params_after_adam", "params_after_update"}) {
      parity::collect_records(it[part], prefix + "/" + part, records);
    }
    for (const auto& item : it["targets_after_update"].items()) {
      records[prefix + "/targets_after_update/" + item.key()] = &item.value();
    }
    for (const char* site : {"target_policy_on_next_observation", "actor_on_observation"}) {
      for (const char* what : {"action", "log_prob"}) {
        records[prefix + "/sampling/" + site + "/" + what] = &it["sampling"][site][what];
      }
    }
    records[prefix + "/batch_td_error"] = &it["batch_td_error"];
    bare.push_back({{"values", {it["total_loss"]}}});
    records[prefix + "/total_loss"] = &bare.back();
  }
  return records;
}

/// The soft updates' operand magnitudes (see `parity::soft_update_scales`).
parity::OperandScales sac_operands(const nlohmann::json& sc, const parity::Quantities& run) {
  std::vector<std::string> params;
  for (const char* net : {"qvalue0", "qvalue1"}) {
    for (const auto& name : rlobj_test::mlp_param_names()) params.push_back(std::string(net) + "." + name);
  }
  return parity::soft_update_scales(run, sc["updater"]["eps"].get<double>(), sc["iterations"].size(), params);
}

}  // namespace

TEST_CASE("SACLoss, Adam and SoftUpdate reproduce TorchRL 0.4.0", "[sac][parity]") {
  for (const auto& scenario : sac_reference()["scenarios"].items()) {
    DYNAMIC_SECTION("scenario " << scenario.key()) {
      const auto records = sac_records(scenario.value());
      std::vector<parity::Quantities> spread;
      for (const auto& p : parity::tolerance_runs(kToleranceRuns)) spread.push_back(run_sac(scenario.key(), p, /*inject=*/true));
      // The compared run draws from LibTorch's generator, seeded as TorchRL was.
      const auto drawn = run_sac(scenario.key(), parity::Perturbation::none(), /*inject=*/false);
      parity::require_match(parity::compare(records, drawn, drawn, spread, sac_operands(scenario.value(), drawn)),
                            scenario.key());
      const auto injected = run_sac(scenario.key(), parity::Perturbation::none(), /*inject=*/true);
      parity::require_match(
          parity::compare(records, injected, injected, spread, sac_operands(scenario.value(), injected)),
          scenario.key() + " (injected)");
    }
  }
}

TEST_CASE("SACLoss: parity fails under semantic mutations", "[sac][parity][mutation]") {
  struct Case {
    const char* name;
    Mutation mutation;
    const char* scenario;
  };
  Mutation gamma, entropy, mask, swap;
  gamma.gamma = 0.98;
  entropy.target_entropy = -2.0;  // the target entropy only shows in a learned alpha's loss
  mask.done_as_mask = true;
  swap.swap_draws = true;
  for (const auto& c : {Case{"gamma 0.98", gamma, "fixed_alpha"},
                        Case{"target entropy -2", entropy, "learned_alpha"},
                        Case{"done as the bootstrap mask", mask, "fixed_alpha"},
                        Case{"draws in the other order", swap, "learned_alpha"}}) {
    INFO(c.name);
    const auto records = sac_records(sac_reference()["scenarios"][c.scenario]);
    std::vector<parity::Quantities> spread;
    for (const auto& p : parity::tolerance_runs(kToleranceRuns)) spread.push_back(run_sac(c.scenario, p, /*inject=*/true));
    const auto base = run_sac(c.scenario, parity::Perturbation::none(), /*inject=*/true);
    const auto mutated = run_sac(c.scenario, parity::Perturbation::none(), /*inject=*/true, c.mutation);
    const auto report =
        parity::compare(records, mutated, base, spread, sac_operands(sac_reference()["scenarios"][c.scenario], base));
    INFO(report.mismatches.size() << " mismatches, worst |diff|/tolerance " << report.worst_ratio);
    CHECK(report.compared > 0);
    CHECK(report.mismatches.size() > 0);
  }
}

TEST_CASE("SACLoss: alpha, gradients, options and errors", "[sac]") {
  torch::manual_seed(0);
  rlobj::Bounded spec(-2.0, 2.0, {1});
  MLP actor_mlp(MLPOptions(3, 2).num_cells({8}));
  auto actor = make_actor(actor_mlp, spec);
  ValueOperator qvalue(MLP(MLPOptions(4, 1).num_cells({8})), {"observation", "action"});
  auto loss = SACLoss<>(actor, qvalue, spec, SACLossOptions().alpha_init(0.5));
  TensorDict batch = sac_batch(parity::Perturbation::none());

  SECTION("learned alpha: a parameter; auto target entropy is -(action features)") {
    CHECK(loss->log_alpha().requires_grad());
    CHECK(loss->log_alpha().item<float>() == static_cast<float>(std::log(0.5)));
    CHECK(loss->target_entropy().item<double>() == -1.0);
    CHECK(loss->parameters_of("log_alpha")[0].is_same(loss->log_alpha()));
    auto named = loss->named_parameters();
    CHECK(named.contains("log_alpha"));
    CHECK(named.contains("actor_network_params"));
    CHECK(named.contains("qvalue_network_params"));
    CHECK(loss->named_buffers().contains("target_qvalue_network_params"));
    CHECK_FALSE(loss->named_buffers().contains("target_actor_network_params"));  // delay_actor is off
    auto three = SACLoss<>(actor, qvalue, rlobj::Bounded(-1.0, 1.0, {3}), SACLossOptions().fixed_alpha(true));
    CHECK(three->target_entropy().item<double>() == -3.0);
    CHECK_FALSE(three->log_alpha().requires_grad());
    CHECK_FALSE(three->named_parameters().contains("log_alpha"));
  }
  SECTION("each loss trains only its own part") {
    TensorDict out = loss(batch);
    CHECK(out.get("alpha").item<float>() == Approx(0.5));
    CHECK(out.get("entropy").dim() == 0);
    out.get("loss_alpha").backward();
    CHECK(loss->log_alpha().grad().abs().item<double>() > 0);
    const auto actor_grad = loss->parameters_of("actor_network")[0].grad();
    CHECK_FALSE((actor_grad.defined() && actor_grad.abs().sum().item<double>() > 0));
    loss->zero_grad();
    out = loss(batch);
    out.get("loss_actor").backward();
    CHECK(loss->parameters_of("actor_network")[0].grad().abs().sum().item<double>() > 0);
    CHECK(loss->parameters_of("qvalue_network")[0].grad().abs().sum().item<double>() == 0);
    loss->zero_grad();
    out = loss(batch);
    out.get("loss_qvalue").backward();
    CHECK(loss->parameters_of("actor_network")[0].grad().abs().sum().item<double>() == 0);
    const auto g = loss->parameters_of("qvalue_network")[0].grad();
    CHECK(g.narrow(0, 0, g.numel() / 2).abs().sum().item<double>() > 0);
    CHECK(g.narrow(0, g.numel() / 2, g.numel() / 2).abs().sum().item<double>() > 0);
    CHECK(batch.get("td_error").sizes() == torch::IntArrayRef({8}));
    CHECK((batch.get("td_error") >= 0).all().item<bool>());
  }
  SECTION("alpha bounds clamp log_alpha, as TorchRL 0.4 does") {
    auto bounded = SACLoss<>(actor, qvalue, spec, SACLossOptions().alpha_init(5.0).min_alpha(0.5).max_alpha(2.0));
    CHECK(bounded->alpha().item<float>() == Approx(2.0));
    CHECK(bounded->log_alpha().item<float>() == Approx(std::log(2.0)));
    auto low = SACLoss<>(actor, qvalue, spec, SACLossOptions().alpha_init(0.01).min_alpha(0.1));
    CHECK(low->alpha().item<float>() == Approx(0.1));
    // TorchRL 0.4: max_alpha alone sets min_alpha to 0, which disables the clamp.
    auto max_only = SACLoss<>(actor, qvalue, spec, SACLossOptions().alpha_init(5.0).max_alpha(2.0));
    CHECK(max_only->alpha().item<float>() == Approx(5.0));
  }
  SECTION("the next action comes from the online actor, also with delay_actor") {
    // Each loss redraws its critic's copies from the critic's values: give each the same fresh critic.
    auto fresh_critic = [] {
      torch::manual_seed(21);
      return ValueOperator(MLP(MLPOptions(4, 1).num_cells({8})), {"observation", "action"});
    };
    auto plain = SACLoss<>(actor, fresh_critic(), spec);
    auto delayed = SACLoss<>(actor, fresh_critic(), spec, SACLossOptions().delay_actor(true));
    REQUIRE(torch::equal(plain->parameters_of("qvalue_network")[0], delayed->parameters_of("qvalue_network")[0]));
    {
      torch::NoGradGuard no_grad;
      // Move the online actor away from its (delayed) target copy.
      for (auto& p : actor_mlp->parameters()) p.mul_(1.5);
    }
    torch::manual_seed(3);
    auto a = plain(batch.copy());
    torch::manual_seed(3);
    auto b = delayed(batch.copy());
    CHECK(torch::equal(a.get("loss_qvalue"), b.get("loss_qvalue")));
  }
  SECTION("seeded runs repeat; the loss moves and saves log_alpha") {
    torch::manual_seed(5);
    const double first = loss(batch.copy()).get("loss_actor").item<double>();
    torch::manual_seed(5);
    CHECK(loss(batch.copy()).get("loss_actor").item<double>() == first);
    auto copy = SACLoss<>(actor, qvalue, spec, SACLossOptions().alpha_init(0.5));
    {
      torch::NoGradGuard no_grad;
      loss->log_alpha().fill_(0.25);
    }
    std::stringstream stream;
    torch::save(loss, stream);
    torch::load(copy, stream);
    CHECK(copy->log_alpha().item<float>() == 0.25f);
    loss->to(torch::kFloat64);
    CHECK(loss->log_alpha().scalar_type() == torch::kFloat64);
    CHECK(loss->target_entropy().scalar_type() == torch::kFloat64);
  }
  SECTION("bad options and inputs") {
    REQUIRE_THROWS_WITH(SACLoss<>(actor, qvalue, spec, SACLossOptions().num_qvalue_nets(0)),
                        Contains("num_qvalue_nets must be >= 1, got 0"));
    REQUIRE_THROWS_WITH(SACLoss<>(actor, qvalue, spec, SACLossOptions().alpha_init(0)),
                        Contains("alpha_init must be finite and > 0, got 0"));
    REQUIRE_THROWS_WITH(SACLoss<>(actor, qvalue, spec, SACLossOptions().min_alpha(2).max_alpha(1)),
                        Contains("min_alpha (2) must be < max_alpha (1)"));
    const auto state = at::detail::getDefaultCPUGenerator().get_state();
    TensorDict no_obs = batch.copy();
    no_obs.erase({"next", "observation"});
    REQUIRE_THROWS_WITH(loss(no_obs), Contains("SACLoss: input key \"next.observation\" not found"));
    TensorDict wide = batch.copy();
    wide.set("action", torch::zeros({8, 2}));
    REQUIRE_THROWS_WITH(loss(wide), Contains("\"action\" has shape [8, 2] but the action spec has 1 feature(s)"));
    TensorDict doubles = batch.copy();
    doubles.set("observation", batch.get("observation").to(torch::kFloat64));
    REQUIRE_THROWS_WITH(loss(doubles), Contains("observation"));
    CHECK(torch::equal(at::detail::getDefaultCPUGenerator().get_state(), state));
    REQUIRE_THROWS_WITH(loss->make_value_estimator(ValueEstimators::GAE), Contains("GAE is not implemented"));
  }
}

}  // namespace rlobj_test_objectives_sac_test
