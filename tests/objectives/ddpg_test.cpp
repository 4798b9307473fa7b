#include <rlobj/engine/actor_critic.h>
#include <rlobj/objectives/ddpg.h>
#include <rlobj/objectives/utils.h>

#include <deque>
#include <fstream>
#include <optional>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "objectives/parity.h"
#include "objectives/reference.h"
#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_objectives_ddpg_test {

using Catch::Matchers::Contains;
using rlobj::NestedKey;
using rlobj::TensorDict;
using namespace rlobj::objectives;
using rlobj_test::reference;
using rlobj_test::reference_batch;
using rlobj_test::ReferenceNets;
namespace parity = rlobj_test::parity;

namespace {

/// A deliberate semantic change, to prove the parity tests catch it.
struct Mutation {
  std::optional<double> gamma;          ///< another discount
  bool done_as_mask = false;            ///< bootstrap on `done` instead of `terminated`
  bool sum_reduction = false;           ///< drop the 1/B of the mean
  bool eps_tau_swapped = false;         ///< SoftUpdate given tau where eps is meant
};

/// One run of a reference scenario of ddpg_torchrl.json: every quantity the reference
/// records, in its layout.
/// `engine`: the update on `rlobj::engine::ActorCriticEngine` (where it computes the run: float32,
/// a mean reduction), op by op otherwise.
parity::Quantities run_ddpg(const nlohmann::json& sc, const parity::Perturbation& pert, bool extra_truncations,
                            const Mutation& mut = {}, bool engine = false) {
  const auto& meta = reference()["meta"];
  ReferenceNets nets(pert);
  DDPGLossOptions options;
  if (sc["loss_kwargs"].contains("delay_actor")) options.delay_actor(sc["loss_kwargs"]["delay_actor"]);
  if (sc["loss_kwargs"].contains("delay_value")) options.delay_value(sc["loss_kwargs"]["delay_value"]);
  if (mut.sum_reduction) options.reduction(Reduction::Sum);
  auto loss = DDPGLoss(nets.actor, nets.value, options);
  if (mut.gamma) loss->make_value_estimator(ValueEstimators::TD0, value::ValueEstimatorOptions().gamma(*mut.gamma));
  if (mut.done_as_mask) loss->set_keys({{"terminated", "done"}});

  std::shared_ptr<TargetNetUpdater> updater;
  if (sc["updater"] == "hard") {
    updater = std::make_shared<HardUpdate>(loss, meta["hard_update_interval"].get<int64_t>());
  } else {
    const double eps = meta["soft_update_eps"].get<double>();
    updater = std::make_shared<SoftUpdate>(loss, SoftUpdateOptions().eps(mut.eps_tau_swapped ? 1.0 - eps : eps));
  }
  auto target_of = [&](const std::string& canonical) {
    const bool is_actor = canonical.rfind("actor.", 0) == 0;
    const std::string local = "module." + canonical.substr(6);
    auto target = is_actor ? loss->target_actor_network()->named_parameters()[local]
                           : loss->target_value_network()->named_parameters()[local];
    return nets.canonical(canonical, target);
  };
  parity::Quantities q;
  auto record_targets = [&](const std::string& prefix) {
    for (const char* net : {"actor", "value"}) {
      for (const auto& name : rlobj_test::mlp_param_names()) {
        const std::string canonical = std::string(net) + "." + name;
        parity::record(q, prefix + "/" + net + "/" + canonical, target_of(canonical));
      }
    }
  };
  auto record_params = [&](const std::string& prefix, bool grads) {
    for (const char* net : {"actor", "value"}) {
      for (const auto& name : rlobj_test::mlp_param_names()) {
        const std::string canonical = std::string(net) + "." + name;
        auto p = nets.param(canonical);
        parity::record(q, prefix + "/" + canonical, nets.canonical(canonical, grads ? p.grad() : p));
      }
    }
  };
  record_targets("targets_after_updater_init");

  auto optim = std::make_shared<torch::optim::Adam>(loss->parameters(),
                                                    torch::optim::AdamOptions(meta["adam"]["lr"].get<double>()));
  std::unique_ptr<rlobj::engine::ActorCriticEngine> fused;
  if (engine) {
    std::string why;
    fused = rlobj::engine::ActorCriticEngine::make(loss, optim, optim, nullptr, updater, &why);
    // The engine computes every float32 mean-reduced run (the float64 perturbation and the
    // sum-reduction mutation run op by op).
    const bool computable = pert.dtype == torch::kFloat32 && !mut.sum_reduction;
    INFO(why);
    REQUIRE((fused != nullptr) == computable);
  }
  auto batch = reference_batch(pert, extra_truncations);
  const auto unpermute = torch::argsort(pert.perm("batch", batch.batch_size()[0]));
  const int64_t n_iter = static_cast<int64_t>(sc["iterations"].size());
  for (int64_t i = 0; i < n_iter; ++i) {
    const std::string it = "iterations/" + std::to_string(i);
    TensorDict out = fused ? fused->critic_loss(batch) : loss(batch);
    if (fused) out.update(fused->actor_loss(batch));
    for (const auto& item : out.items()) {
      const auto& t = item.second.tensor();
      const bool per_sample = t.dim() == 1;
      parity::record(q, it + "/loss_out/" + item.first.str(), per_sample ? t.index_select(0, unpermute) : t);
      if (per_sample) parity::record(q, it + "/per_sample/" + item.first.str(), t.index_select(0, unpermute));
    }
    parity::record(q, it + "/batch_td_error", batch.get("td_error").index_select(0, unpermute));
    torch::Tensor total = sum_losses(out);
    parity::record(q, it + "/total_loss", total);
    if (!fused) total.backward();
    record_params(it + "/grads", /*grads=*/true);
    if (fused) {
      fused->step_critic();
      fused->step_actor();
    } else {
      optim->step();
    }
    record_params(it + "/params_after_adam", false);
    if (fused) {
      fused->update_targets();
    } else {
      updater->step();
    }
    record_params(it + "/params_after_update", false);
    record_targets(it + "/targets_after_update");
    if (!fused) optim->zero_grad();  // the engine overwrites the gradients
  }
  return q;
}

/// The reference records of a scenario, by the same keys `run_ddpg` uses.
std::map<std::string, const nlohmann::json*> ddpg_records(const nlohmann::json& sc) {
  std::map<std::string, const nlohmann::json*> records;
  parity::collect_records(sc["targets_after_updater_init"], "targets_after_updater_init", records);
  for (size_t i = 0; i < sc["iterations"].size(); ++i) {
    const auto& it = sc["iterations"][i];
    const std::string prefix = "iterations/" + std::to_string(i);
    for (const char* part : {"loss_out", "per_sample", "grads", "params_after_adam", "params_after_update",
                             "targets_after_update"}) {
      parity::collect_records(it[part], prefix + "/" + part, records);
    }
    parity::collect_records(it["batch_td_error"], prefix + "/batch_td_error", records);
    // A bare number in the file: compared as a one-value record.
    static std::deque<nlohmann::json> bare;
    bare.push_back({{"values", {it["total_loss"]}}});
    records[prefix + "/total_loss"] = &bare.back();
  }
  return records;
}

/// The unperturbed and the perturbed runs of a scenario (cached: the mutation tests reuse them).
struct Spread {
  parity::Quantities base;
  std::vector<parity::Quantities> perturbed;
};
const Spread& ddpg_spread(const std::string& scenario, bool extra_truncations) {
  static std::map<std::pair<std::string, bool>, Spread> cache;
  auto& s = cache[{scenario, extra_truncations}];
  if (s.perturbed.empty()) {
    const auto& sc = reference()["scenarios"][scenario];
    s.base = run_ddpg(sc, parity::Perturbation::none(), extra_truncations);
    for (const auto& p : parity::tolerance_runs()) s.perturbed.push_back(run_ddpg(sc, p, extra_truncations));
  }
  return s;
}

/// `engine`: the compared run on the fused engine, compared on what it outputs, within the
/// tolerances of the op-by-op path (the engine's reductions in another order are one more
/// reordering, which those tolerances bound; a spread of engine runs would also take in the
/// float64 run, which the engine leaves to the op-by-op path, and a fault of the engine's).
parity::Report ddpg_report(const std::string& scenario, bool extra_truncations, const Mutation& mut = {},
                           bool engine = false) {
  const auto& sc = reference()["scenarios"][scenario];
  const auto& spread = ddpg_spread(scenario, extra_truncations);
  const bool mutated = mut.gamma || mut.done_as_mask || mut.sum_reduction || mut.eps_tau_swapped;
  auto records = ddpg_records(sc);
  if (engine) records = parity::engine_records(records);
  return parity::compare(records,
                         mutated || engine ? run_ddpg(sc, parity::Perturbation::none(), extra_truncations, mut, engine)
                                           : spread.base,
                         spread.base, spread.perturbed);
}

}  // namespace

TEST_CASE("Actor and critic reproduce TorchRL on the reference weights", "[ddpg][parity]") {
  const auto& ref = reference()["actor_forward_on_batch"];
  auto run = [](const parity::Perturbation& p) {
    ReferenceNets nets(p);
    auto batch = reference_batch(p);
    auto unpermute = torch::argsort(p.perm("batch", 8));
    auto td = TensorDict({{"observation", batch.get("observation")}}, {8});
    nets.actor(td);
    nets.value(td);
    parity::Quantities q;
    parity::record(q, "action_from_actor", td.get("action").index_select(0, unpermute));
    parity::record(q, "state_action_value(obs, actor_action)", td.get("state_action_value").index_select(0, unpermute));
    return q;
  };
  std::map<std::string, const nlohmann::json*> records;
  for (const char* key : {"action_from_actor", "state_action_value(obs, actor_action)"}) records[key] = &ref[key];
  std::vector<parity::Quantities> spread;
  for (const auto& p : parity::tolerance_runs()) spread.push_back(run(p));
  const auto base = run(parity::Perturbation::none());
  parity::require_match(parity::compare(records, base, base, spread), "forward");
}

TEST_CASE("DDPGLoss, Adam and target updaters reproduce TorchRL 0.4.0", "[ddpg][parity]") {
  const auto& ref = reference();
  for (const auto& scenario : ref["scenarios"].items()) {
    DYNAMIC_SECTION("scenario " << scenario.key()) {
      const auto& sc = scenario.value();
      // What the scenario says about the loss's configuration.
      ReferenceNets nets;
      DDPGLossOptions options;
      if (sc["loss_kwargs"].contains("delay_actor")) options.delay_actor(sc["loss_kwargs"]["delay_actor"]);
      if (sc["loss_kwargs"].contains("delay_value")) options.delay_value(sc["loss_kwargs"]["delay_value"]);
      auto loss = DDPGLoss(nets.actor, nets.value, options);
      CHECK(loss->options.delay_actor() == sc["effective_delay_actor"].get<bool>());
      CHECK(loss->options.delay_value() == sc["effective_delay_value"].get<bool>());
      auto pairs = loss->target_pairs();
      CHECK(pairs[0].delayed == sc["target_has_own_storage"]["actor"].get<bool>());
      CHECK(pairs[1].delayed == sc["target_has_own_storage"]["value"].get<bool>());
      CHECK(loss->value_estimator().gamma().item<double>() == sc["gamma"].get<double>());
      CHECK(std::string(loss->value_estimator().name()) == sc["value_estimator"].get<std::string>());
      auto out = loss(reference_batch());
      CHECK(out.keys().size() == sc["iterations"][0]["loss_out"].size());
      for (const auto& it : sc["iterations"]) {
        CHECK(it["total_loss_keys"] == nlohmann::json({"loss_actor", "loss_value"}));
      }
      if (sc["updater"] == "hard") {
        HardUpdate updater(loss, ref["meta"]["hard_update_interval"].get<int64_t>());
        for (const auto& it : sc["iterations"]) {
          updater.step();
          CHECK(updater.counter() == it["hard_counter_after_step"].get<int64_t>());
        }
      }
      // Every number, within its derived tolerance, op by op and on the fused engine.
      for (const bool engine : {false, true}) {
        const std::string path = engine ? " (fused engine)" : "";
        parity::require_match(ddpg_report(scenario.key(), /*extra_truncations=*/false, {}, engine), scenario.key() + path);
        // Rows that are done but not terminated (truncations) change nothing: TD(0) bootstraps
        // through them.
        parity::require_match(ddpg_report(scenario.key(), /*extra_truncations=*/true, {}, engine),
                              scenario.key() + " with extra truncations" + path);
      }
    }
  }
}

TEST_CASE("DDPG parity tests fail under semantic mutations", "[ddpg][parity][mutation]") {
  // Each mutation is a plausible bug; the derived tolerances must be tight enough to see it
  // in every scenario it applies to.
  struct Case {
    const char* name;
    Mutation mutation;
    bool soft_only;
  };
  Mutation gamma;
  gamma.gamma = 0.98;
  Mutation done_mask;
  done_mask.done_as_mask = true;
  Mutation sum;
  sum.sum_reduction = true;
  Mutation swapped;
  swapped.eps_tau_swapped = true;
  for (const auto& c : {Case{"gamma 0.98 instead of 0.99", gamma, false},
                        Case{"done instead of terminated as the bootstrap mask", done_mask, false},
                        Case{"a missing 1/B in the mean", sum, false},
                        Case{"soft update with eps and tau swapped", swapped, true}}) {
    for (const auto& scenario : reference()["scenarios"].items()) {
      if (c.soft_only && scenario.value()["updater"] != "soft") continue;
      for (const bool engine : {false, true}) {
        INFO(c.name << ", scenario " << scenario.key() << (engine ? ", fused engine" : ""));
        // The mask mutation needs rows whose done and terminated differ: the batch with extra
        // truncations, which the unmutated loss reproduces exactly (above).
        const auto report =
            ddpg_report(scenario.key(), /*extra_truncations=*/c.mutation.done_as_mask, c.mutation, engine);
        INFO(report.mismatches.size() << " mismatches, worst |diff|/tolerance " << report.worst_ratio << " at "
                                      << report.worst);
        CHECK(report.compared > 0);
        CHECK(report.mismatches.size() > 0);
      }
    }
  }
}

namespace {

struct Setup {
  ReferenceNets nets;
  TensorDict batch = reference_batch();
};

double grad_abs_sum(const std::vector<torch::Tensor>& params) {
  double s = 0;
  for (const auto& p : params) {
    if (p.grad().defined()) s += p.grad().abs().sum().item<double>();
  }
  return s;
}

}  // namespace

TEST_CASE("DDPGLoss: loss_actor trains only the actor, loss_value only the critic", "[ddpg]") {
  Setup s;
  auto loss = DDPGLoss(s.nets.actor, s.nets.value);
  auto actor_params = s.nets.actor->parameters();
  auto value_params = s.nets.value->parameters();

  auto out = loss(s.batch);
  out.get("loss_actor").backward();
  CHECK(grad_abs_sum(actor_params) > 0);
  CHECK(grad_abs_sum(value_params) == 0);
  std::vector<torch::Tensor> actor_grads;
  for (auto& p : actor_params) actor_grads.push_back(p.grad().clone());
  loss->zero_grad();

  out = loss(s.batch);
  out.get("loss_value").backward();
  CHECK(grad_abs_sum(actor_params) == 0);
  CHECK(grad_abs_sum(value_params) > 0);
  std::vector<torch::Tensor> value_grads;
  for (auto& p : value_params) value_grads.push_back(p.grad().clone());
  loss->zero_grad();

  // Summed and back-propagated once: the same gradients.
  sum_losses(loss(s.batch)).backward();
  for (size_t i = 0; i < actor_params.size(); ++i) CHECK(torch::equal(actor_params[i].grad(), actor_grads[i]));
  for (size_t i = 0; i < value_params.size(); ++i) CHECK(torch::equal(value_params[i].grad(), value_grads[i]));
  // The flat leaves hold the same gradients.
  auto flat = loss->parameters();
  REQUIRE(flat.size() == 2);
  CHECK(torch::equal(flat[0].grad(), torch::cat({actor_grads[0].flatten(), actor_grads[1].flatten(), actor_grads[2].flatten(),
                                                 actor_grads[3].flatten(), actor_grads[4].flatten(), actor_grads[5].flatten()})));
}

TEST_CASE("DDPGLoss: parameters(), buffers and outputs", "[ddpg]") {
  Setup s;
  auto loss = DDPGLoss(s.nets.actor, s.nets.value);
  auto named = loss->named_parameters();
  CHECK(named.keys() == std::vector<std::string>{"actor_network_params", "value_network_params"});
  int64_t actor_numel = 0, value_numel = 0;
  for (auto& p : s.nets.actor->parameters()) actor_numel += p.numel();
  for (auto& p : s.nets.value->parameters()) value_numel += p.numel();
  CHECK(named["actor_network_params"].numel() == actor_numel);
  CHECK(named["value_network_params"].numel() == value_numel);
  CHECK(loss->named_buffers().keys() == std::vector<std::string>{"target_value_network_params"});
  // The networks' own parameters alias the flat leaves.
  CHECK(s.nets.actor->parameters()[0].data_ptr() == named["actor_network_params"].data_ptr());

  auto out = loss(s.batch);
  CHECK(out.batch_size().empty());
  CHECK(out.keys() == std::vector<NestedKey>{"loss_actor", "loss_value", "td_error", "pred_value", "target_value",
                                             "target_value_max", "pred_value_max"});
  CHECK(out.get("loss_actor").requires_grad());
  CHECK(out.get("loss_value").requires_grad());
  for (const char* k : {"td_error", "pred_value", "target_value", "target_value_max", "pred_value_max"}) {
    CHECK_FALSE(out.get(k).requires_grad());
  }
  CHECK(out.get("td_error").sizes() == torch::IntArrayRef({8}));
  std::vector<std::string> in_keys;
  for (const auto& k : loss->in_keys()) in_keys.push_back(k.str());
  CHECK(in_keys == std::vector<std::string>{"action", "next.action", "next.done", "next.observation",
                                            "next.reward", "next.terminated", "observation"});
  CHECK(loss->out_keys().front() == "loss_actor");
  std::ostringstream os;
  os << *loss;
  CHECK(os.str().find("DDPGLoss(delay_actor=false, delay_value=true") != std::string::npos);
}

TEST_CASE("DDPGLoss: loss functions and reductions", "[ddpg]") {
  Setup s;
  auto base = DDPGLoss(s.nets.actor, s.nets.value);
  auto ref_out = base(s.batch.copy());
  auto pred = ref_out.get("pred_value");
  auto target = ref_out.get("target_value");
  auto d = pred - target;
  for (auto fn : {LossFunction::L1, LossFunction::L2, LossFunction::SmoothL1}) {
    ReferenceNets nets;
    auto loss = DDPGLoss(nets.actor, nets.value, DDPGLossOptions().loss_function(fn));
    auto out = loss(s.batch.copy());
    torch::Tensor expected = fn == LossFunction::L2   ? d.pow(2)
                             : fn == LossFunction::L1 ? d.abs()
                                                      : torch::where(d.abs() < 1, 0.5 * d.pow(2), d.abs() - 0.5);
    CHECK(torch::allclose(out.get("loss_value"), expected.mean()));
    CHECK(torch::equal(out.get("td_error"), d.pow(2)));  // always the squared difference
  }
  for (auto red : {Reduction::Sum, Reduction::None}) {
    ReferenceNets nets;
    auto loss = DDPGLoss(nets.actor, nets.value, DDPGLossOptions().reduction(red));
    auto out = loss(s.batch.copy());
    if (red == Reduction::Sum) {
      CHECK(torch::allclose(out.get("loss_value"), d.pow(2).sum()));
      CHECK(torch::allclose(out.get("loss_actor"), ref_out.get("loss_actor") * 8));
    } else {
      CHECK(out.get("loss_value").sizes() == torch::IntArrayRef({8}));
      CHECK(out.get("loss_actor").sizes() == torch::IntArrayRef({8}));
      CHECK(torch::allclose(out.get("loss_value").mean(), ref_out.get("loss_value")));
    }
  }
  CHECK(loss_function_from_string("smooth_l1") == LossFunction::SmoothL1);
  CHECK(reduction_from_string("none") == Reduction::None);
  REQUIRE_THROWS_AS(loss_function_from_string("l3"), c10::ValueError);
  REQUIRE_THROWS_AS(reduction_from_string("avg"), c10::ValueError);
}

TEST_CASE("DDPGLoss: the target bootstraps through truncation, not termination", "[ddpg]") {
  Setup s;
  auto loss = DDPGLoss(s.nets.actor, s.nets.value);
  auto batch = s.batch.copy();
  batch.set({"next", "terminated"}, torch::zeros({8, 1}, torch::kBool));  // rows 2, 5: done, truncated
  auto truncated = loss(batch).get("target_value");
  auto terminated = loss(s.batch.copy()).get("target_value");
  auto reward = s.batch.get({"next", "reward"}).squeeze(-1);
  for (int i : {2, 5}) {
    CHECK(terminated[i].item<float>() == reward[i].item<float>());
    CHECK(truncated[i].item<float>() != reward[i].item<float>());
  }
  CHECK(torch::equal(truncated.index({0}), terminated.index({0})));
  // Without a terminated entry, done is used (TorchRL's fallback).
  auto no_term = s.batch.copy();
  no_term.get_sub("next").erase("terminated");
  CHECK(torch::equal(loss(no_term).get("target_value"), terminated));
}

TEST_CASE("DDPGLoss: set_keys renames inputs", "[ddpg]") {
  Setup s;
  auto value = rlobj::modules::ValueOperator(s.nets.value_mlp, {"observation", "action"}, {"q"});
  auto loss = DDPGLoss(s.nets.actor, value);
  loss->set_keys({{"reward", "r"}, {"done", "d"}, {"terminated", "t"}, {"state_action_value", "q"},
                  {"priority", "prio"}});
  CHECK(loss->tensor_keys().reward == NestedKey("r"));
  auto batch = s.batch.copy();
  auto next = batch.get_sub("next");
  next.set("r", next.pop("reward"));
  next.set("d", next.pop("done"));
  next.set("t", next.pop("terminated"));
  auto out = loss(batch);
  CHECK(batch.contains("prio"));
  ReferenceNets fresh;
  auto plain = DDPGLoss(fresh.actor, fresh.value);
  CHECK(torch::allclose(out.get("loss_value"), plain(s.batch.copy()).get("loss_value")));
  REQUIRE_THROWS_AS(loss->set_keys({{"rewards", "x"}}), c10::ValueError);
  REQUIRE_THROWS_WITH(loss->set_keys({{"rewards", "x"}}), Contains("\"rewards\" is not an accepted key"));
}

TEST_CASE("DDPGLoss: bad input is a clear error", "[ddpg]") {
  Setup s;
  auto loss = DDPGLoss(s.nets.actor, s.nets.value);
  REQUIRE_THROWS_WITH(loss(s.batch.exclude({"action"})), Contains("input key \"action\" not found"));
  auto no_next_obs = s.batch.copy();
  no_next_obs.get_sub("next").erase("observation");
  REQUIRE_THROWS_WITH(loss(no_next_obs), Contains("\"next.observation\" not found"));
  auto no_reward = s.batch.copy();
  no_reward.get_sub("next").erase("reward");
  REQUIRE_THROWS_WITH(loss(no_reward), Contains("no reward \"next.reward\""));
  auto flat_reward = s.batch.copy();
  flat_reward.set({"next", "reward"}, torch::zeros({8}));
  REQUIRE_THROWS_WITH(loss(flat_reward), Contains("\"next.reward\" has shape [8]"));
  auto float_done = s.batch.copy();
  float_done.set({"next", "done"}, torch::zeros({8, 1}));
  REQUIRE_THROWS_AS(loss(float_done), c10::TypeError);
  REQUIRE_THROWS_WITH(loss(float_done), Contains("\"next.done\" must be bool"));
  auto nan_reward = s.batch.clone();
  nan_reward.get({"next", "reward"})[3][0] = NAN;
  REQUIRE_THROWS_WITH(loss(nan_reward), Contains("input \"next.reward\" contains NaN or Inf"));
  auto nan_obs = s.batch.clone();
  nan_obs.get("observation")[0][1] = NAN;
  REQUIRE_THROWS_WITH(loss(nan_obs), Contains("input \"observation\" contains NaN or Inf"));
  auto inf_reward = s.batch.clone();
  inf_reward.get({"next", "reward"})[0][0] = INFINITY;
  REQUIRE_THROWS_WITH(loss(inf_reward), Contains("input \"next.reward\" contains NaN or Inf"));
  // Inf where the loss stays finite (tanh saturates) but the gradients would be NaN.
  auto inf_obs = s.batch.clone();
  inf_obs.get("observation")[2][0] = INFINITY;
  REQUIRE_THROWS_AS(loss(inf_obs), c10::ValueError);
  REQUIRE_THROWS_WITH(loss(inf_obs), Contains("input \"observation\" contains NaN or Inf"));
  CHECK_FALSE(inf_obs.contains("td_error"));  // nothing written before the error
  auto inf_next_obs = s.batch.clone();
  inf_next_obs.get({"next", "observation"})[1][2] = -INFINITY;
  REQUIRE_THROWS_WITH(loss(inf_next_obs), Contains("input \"next.observation\" contains NaN or Inf"));
  auto inf_action = s.batch.clone();
  inf_action.get("action")[4][0] = INFINITY;
  REQUIRE_THROWS_WITH(loss(inf_action), Contains("input \"action\" contains NaN or Inf"));
  // Finite values large enough for their sum to overflow are not an error.
  auto huge = s.batch.clone();
  huge.get("observation").fill_(3e38f);
  CHECK_NOTHROW(loss(huge));
  // The check can be turned off (e.g. to keep a CUDA loop free of host syncs).
  ReferenceNets other;
  auto unchecked = DDPGLoss(other.actor, other.value, DDPGLossOptions().check_finite(FiniteCheck::Never));
  auto out = unchecked(inf_obs.clone());
  sum_losses(out).backward();
  CHECK(torch::isnan(unchecked->parameters()[0].grad()).any().item<bool>());  // what the check prevents
  REQUIRE_THROWS_WITH(loss(s.batch.index({0})), Contains("batch_dims >= 1"));
  REQUIRE_THROWS_AS(loss->make_value_estimator(ValueEstimators::GAE), c10::NotImplementedError);
  REQUIRE_THROWS_AS(DDPGLoss(rlobj::modules::Actor(nullptr), s.nets.value), c10::ValueError);
}

TEST_CASE("DDPGLoss: value estimators TD1 and TD(lambda), gamma", "[ddpg]") {
  Setup s;
  auto loss = DDPGLoss(s.nets.actor, s.nets.value);
  auto td0 = loss(s.batch.copy()).get("target_value");
  loss->make_value_estimator(ValueEstimators::TD0, value::ValueEstimatorOptions().gamma(0.5));
  auto td0_half = loss(s.batch.copy()).get("target_value");
  auto reward = s.batch.get({"next", "reward"}).squeeze(-1);
  auto not_term = s.batch.get({"next", "terminated"}).squeeze(-1).logical_not();
  // y = r + gamma * !term * Q': recover Q' from gamma 0.99 and predict gamma 0.5.
  auto q_next = (td0 - reward) / 0.99f;
  CHECK(torch::allclose(td0_half, reward + 0.5 * not_term * q_next, 1e-5, 1e-6));
  loss->make_value_estimator(ValueEstimators::TD1);
  CHECK(loss->value_type() == ValueEstimators::TD1);
  CHECK(std::string(loss->value_estimator().name()) == "TD1Estimator");
  auto td1 = loss(s.batch.copy()).get("target_value");
  // The batch read as one trajectory: the last step bootstraps like TD(0) (row 7 is not done).
  CHECK(td1[7].item<float>() == Approx(td0[7].item<float>()).epsilon(1e-6));
  CHECK(td1[5].item<float>() == Approx(reward[5].item<float>()).epsilon(1e-6));  // terminated
  loss->make_value_estimator(ValueEstimators::TDLambda, value::ValueEstimatorOptions().lmbda(0.0));
  CHECK(torch::allclose(loss(s.batch.copy()).get("target_value"), td0, 1e-6, 1e-7));  // lambda 0 == TD(0)
  CHECK(value_estimator_from_string("td_lambda") == ValueEstimators::TDLambda);
}

TEST_CASE("SoftUpdate and HardUpdate: options, math and errors", "[ddpg][updaters]") {
  SECTION("exactly one of eps or tau, in [0, 1]") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value);
    REQUIRE_THROWS_WITH(SoftUpdate(loss, SoftUpdateOptions()), Contains("neither was given"));
    REQUIRE_THROWS_WITH(SoftUpdate(loss, SoftUpdateOptions().eps(0.9).tau(0.1)), Contains("both were given"));
    REQUIRE_THROWS_WITH(SoftUpdate(loss, SoftUpdateOptions().eps(1.5)), Contains("eps must be in [0, 1]"));
    REQUIRE_THROWS_WITH(SoftUpdate(loss, SoftUpdateOptions().tau(-0.1)), Contains("tau must be in [0, 1]"));
    CHECK(SoftUpdate(loss, SoftUpdateOptions().tau(0.25)).eps() == 0.75);
    REQUIRE_THROWS_AS(HardUpdate(loss, -1), c10::ValueError);
  }
  SECTION("a loss without delayed targets is an error") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value, DDPGLossOptions().delay_value(false));
    REQUIRE_THROWS_WITH(SoftUpdate(loss, SoftUpdateOptions().eps(0.9)), Contains("no delayed target"));
    REQUIRE_THROWS_WITH(HardUpdate(loss), Contains("no delayed target"));
  }
  SECTION("soft: target = eps * target + (1 - eps) * source, one group at a time") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value, DDPGLossOptions().delay_actor(true));
    SoftUpdate updater(loss, SoftUpdateOptions().eps(0.75));
    CHECK(updater.pairs().size() == 2);
    CHECK(loss->has_updater());
    auto target = loss->named_buffers()["target_value_network_params"];
    auto source = loss->named_parameters()["value_network_params"];
    CHECK(torch::equal(target, source));  // initialised from the source
    {
      torch::NoGradGuard g;
      source.add_(1.0);
    }
    auto before = target.clone();
    updater.step();
    CHECK(torch::allclose(target, 0.75 * before + 0.25 * source, 1e-6, 1e-7));
    // The target network sees it: its parameters alias the buffer.
    CHECK(loss->target_value_network()->parameters()[0].data_ptr() == target.data_ptr());
    CHECK_FALSE(loss->target_value_network()->parameters()[0].requires_grad());
  }
  SECTION("hard: copies on step interval + 1, then every interval + 1 steps") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value);
    HardUpdate updater(loss, 2);
    auto target = loss->named_buffers()["target_value_network_params"];
    auto source = loss->named_parameters()["value_network_params"];
    std::vector<int64_t> counters;
    std::vector<bool> copied;
    for (int step = 1; step <= 6; ++step) {
      {
        torch::NoGradGuard g;
        source.add_(1.0);
      }
      updater.step();
      counters.push_back(updater.counter());
      copied.push_back(torch::equal(target, source));
    }
    CHECK(counters == std::vector<int64_t>{1, 2, 0, 1, 2, 0});
    CHECK(copied == std::vector<bool>{false, false, true, false, false, true});
    updater.set_counter(1);
    CHECK(updater.counter() == 1);
    REQUIRE_THROWS_AS(updater.set_counter(3), c10::ValueError);
  }
}

TEST_CASE("DDPGLoss: the aliasing survives what users do to networks and grads", "[ddpg]") {
  SECTION("new weights loaded into the actor are picked up by the loss") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value);
    std::stringstream stream;
    ReferenceNets other;
    {
      torch::NoGradGuard g;
      for (auto& p : other.actor->parameters()) p.mul_(2.0);
    }
    torch::save(other.actor, stream);
    torch::load(s.nets.actor, stream);  // replaces the parameters' storage
    loss(s.batch.copy());               // forward re-links
    CHECK(torch::equal(s.nets.actor->parameters()[0], other.actor->parameters()[0]));
    CHECK(s.nets.actor->parameters()[0].data_ptr() == loss->named_parameters()["actor_network_params"].data_ptr());
    CHECK(torch::equal(loss->named_parameters()["actor_network_params"].narrow(0, 0, 96),
                       other.actor->parameters()[0].flatten()));
  }
  SECTION("gradients set to none (LibTorch 2.x zero_grad) are re-attached") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value);
    sum_losses(loss(s.batch.copy())).backward();
    auto expected = loss->parameters()[0].grad().clone();
    loss->zero_grad(/*set_to_none=*/true);
    s.nets.actor->zero_grad(/*set_to_none=*/true);
    CHECK_FALSE(loss->parameters()[0].grad().defined());
    sum_losses(loss(s.batch.copy())).backward();
    CHECK(torch::equal(loss->parameters()[0].grad(), expected));
  }
  SECTION("loss->to(dtype) moves everything and keeps the aliasing") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value);
    loss->to(torch::kFloat64);
    CHECK(s.nets.actor->parameters()[0].scalar_type() == torch::kFloat64);
    CHECK(loss->target_value_network()->parameters()[0].scalar_type() == torch::kFloat64);
    auto batch = s.batch.apply([](const torch::Tensor& t) {
      return at::isFloatingType(t.scalar_type()) ? t.to(torch::kFloat64) : t;
    });
    auto out = loss(batch);
    CHECK(out.get("loss_value").scalar_type() == torch::kFloat64);
    sum_losses(out).backward();
    CHECK(loss->parameters()[1].grad().abs().sum().item<double>() > 0);
    CHECK(s.nets.value->parameters()[0].data_ptr() == loss->parameters()[1].data_ptr());
  }
  SECTION("moving a network away from its loss is a clear error") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value);
    s.nets.actor->to(torch::kFloat64);
    REQUIRE_THROWS_WITH(loss(s.batch.copy()), Contains("move the loss (loss->to(...)), not its networks"));
  }
  SECTION("torch::save / torch::load of the loss restore online and target parameters") {
    Setup s;
    auto loss = DDPGLoss(s.nets.actor, s.nets.value, DDPGLossOptions().delay_actor(true));
    SoftUpdate updater(loss, SoftUpdateOptions().eps(0.5));
    torch::optim::Adam optim(loss->parameters());
    for (int i = 0; i < 3; ++i) {
      sum_losses(loss(s.batch.copy())).backward();
      optim.step();
      optim.zero_grad();
      updater.step();
    }
    std::stringstream stream;
    torch::save(loss, stream);
    auto before = loss(s.batch.copy());

    ReferenceNets fresh;
    auto restored = DDPGLoss(fresh.actor, fresh.value, DDPGLossOptions().delay_actor(true));
    torch::load(restored, stream);
    auto after = restored(s.batch.copy());
    CHECK(torch::equal(before.get("loss_value"), after.get("loss_value")));
    CHECK(torch::equal(before.get("target_value"), after.get("target_value")));
    CHECK(torch::equal(fresh.actor->parameters()[2], s.nets.actor->parameters()[2]));
    CHECK(fresh.actor->parameters()[2].data_ptr() != s.nets.actor->parameters()[2].data_ptr());
  }
}

namespace {

// Actor and critic that share a first layer (a common trunk). torch::nn::Cloneable would
// clone_() the shared child in place (overwriting the other network's trunk), so these
// modules implement clone() themselves: each copy gets its own copy of the trunk.
torch::nn::Linear copy_linear(const torch::nn::Linear& src) {
  return torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(src->clone()));
}

struct TrunkPolicyImpl : torch::nn::Module {
  explicit TrunkPolicyImpl(torch::nn::Linear t)
      : trunk(register_module("trunk", std::move(t))), head(register_module("head", torch::nn::Linear(8, 1))) {}
  torch::Tensor forward(const torch::Tensor& obs) { return head(torch::tanh(trunk(obs))); }
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& = c10::nullopt) const override {
    auto copy = std::make_shared<TrunkPolicyImpl>(copy_linear(trunk));
    copy->head = copy->replace_module("head", copy_linear(head));
    return copy;
  }
  torch::nn::Linear trunk, head;
};
TORCH_MODULE(TrunkPolicy);

struct TrunkCriticImpl : torch::nn::Module {
  explicit TrunkCriticImpl(torch::nn::Linear t)
      : trunk(register_module("trunk", std::move(t))), head(register_module("head", torch::nn::Linear(9, 1))) {}
  torch::Tensor forward(const torch::Tensor& obs, const torch::Tensor& action) {
    return head(torch::cat({torch::tanh(trunk(obs)), action}, -1));
  }
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& = c10::nullopt) const override {
    auto copy = std::make_shared<TrunkCriticImpl>(copy_linear(trunk));
    copy->head = copy->replace_module("head", copy_linear(head));
    return copy;
  }
  torch::nn::Linear trunk, head;
};
TORCH_MODULE(TrunkCritic);

}  // namespace

TEST_CASE("DDPGLoss: shared parameters and separate_losses", "[ddpg]") {
  auto batch = reference_batch();
  for (bool separate : {false, true}) {
    INFO("separate_losses=" << separate);
    torch::manual_seed(0);
    torch::nn::Linear trunk(3, 8);
    auto actor = rlobj::modules::Actor(TrunkPolicy(trunk));
    auto critic = rlobj::modules::ValueOperator(TrunkCritic(trunk), {"observation", "action"});
    auto loss = DDPGLoss(actor, critic, DDPGLossOptions().separate_losses(separate));
    // The shared trunk is trained through the actor's group only: no double counting.
    int64_t total = 0;
    for (auto& p : loss->parameters()) total += p.numel();
    CHECK(total == 3 * 8 + 8 + 9 + 1 + 8 + 1);
    loss(batch.copy()).get("loss_value").backward();
    const double trunk_grad = trunk->weight.grad().abs().sum().item<double>();
    if (separate) {
      CHECK(trunk_grad == 0);  // the value loss leaves shared parameters alone
    } else {
      CHECK(trunk_grad > 0);
    }
    CHECK(critic->parameters().back().grad().abs().sum().item<double>() > 0);  // its own head trains
    // A delayed critic over shared parameters: not supported yet, refused before any change.
    REQUIRE_THROWS_WITH(SoftUpdate(loss, SoftUpdateOptions().eps(0.995)),
                        Contains("shares parameters with another network") && Contains("not supported yet"));
    CHECK_FALSE(loss->has_updater());
  }
}

namespace {

// LibTorch 2.x's Optimizer::zero_grad() sets gradients to none; 1.13's zeroes them in place.
// Both are simulated here, whichever LibTorch runs the test, besides the optimizer's own.
enum class Zeroing { InPlace, ToNone, OptimizerDefault };
enum class Order { ZeroForwardBackwardStep, ForwardZeroBackwardStep, ForwardBackwardStepZero };
enum class Optimizers { OverLoss, PerNetwork, NetworkZeroGrad };

const char* name_of(Zeroing z) {
  return z == Zeroing::InPlace ? "in place" : z == Zeroing::ToNone ? "set to none" : "optimizer default";
}
const char* name_of(Order o) {
  return o == Order::ZeroForwardBackwardStep   ? "zero_grad, forward, backward, step"
         : o == Order::ForwardZeroBackwardStep ? "forward, zero_grad, backward, step"
                                               : "forward, backward, step, zero_grad";
}
const char* name_of(Optimizers o) {
  return o == Optimizers::OverLoss     ? "Adam(loss->parameters())"
         : o == Optimizers::PerNetwork ? "Adam(parameters_of(name)) per network"
                                       : "zero_grad on the networks' own parameters";
}

void zero_tensors(const std::vector<torch::Tensor>& params, Zeroing how) {
  for (auto p : params) {
    if (how == Zeroing::ToNone) {
      p.mutable_grad().reset();
    } else if (p.grad().defined()) {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
  }
}

// Three DDPG steps; returns the actor's and critic's parameters afterwards.
std::vector<torch::Tensor> train_three_steps(Zeroing zeroing, Order order, Optimizers optimizers) {
  ReferenceNets nets;
  auto loss = DDPGLoss(nets.actor, nets.value);
  SoftUpdate updater(loss, SoftUpdateOptions().eps(0.9));
  std::vector<std::unique_ptr<torch::optim::Adam>> optims;
  if (optimizers == Optimizers::PerNetwork) {
    optims.push_back(std::make_unique<torch::optim::Adam>(loss->parameters_of("actor_network")));
    optims.push_back(std::make_unique<torch::optim::Adam>(loss->parameters_of("value_network")));
  } else {
    optims.push_back(std::make_unique<torch::optim::Adam>(loss->parameters()));
  }
  auto zero = [&] {
    if (optimizers == Optimizers::NetworkZeroGrad) {
      // What a user does who thinks in terms of their networks, not the loss.
      if (zeroing == Zeroing::OptimizerDefault) {
        nets.actor->zero_grad();
        nets.value->zero_grad();
      } else {
        zero_tensors(nets.actor->parameters(), zeroing);
        zero_tensors(nets.value->parameters(), zeroing);
      }
      return;
    }
    for (auto& o : optims) {
      if (zeroing == Zeroing::OptimizerDefault) {
        o->zero_grad();
      } else {
        for (auto& group : o->param_groups()) zero_tensors(group.params(), zeroing);
      }
    }
  };
  auto step = [&] {
    for (auto& o : optims) o->step();
    updater.step();
  };
  auto batch = reference_batch();
  for (int i = 0; i < 3; ++i) {
    if (order == Order::ZeroForwardBackwardStep) zero();
    auto out = loss(batch);
    if (order == Order::ForwardZeroBackwardStep) zero();
    sum_losses(out).backward();
    step();
    if (order == Order::ForwardBackwardStepZero) zero();
  }
  std::vector<torch::Tensor> params;
  for (auto& p : nets.actor->parameters()) params.push_back(p.detach().clone());
  for (auto& p : nets.value->parameters()) params.push_back(p.detach().clone());
  return params;
}

}  // namespace

TEST_CASE("Training works for every order of forward, zero_grad, backward and step", "[ddpg][zero_grad]") {
  // The canonical loop, gradients zeroed in place: what the parity tests check against TorchRL.
  const auto expected = train_three_steps(Zeroing::InPlace, Order::ForwardBackwardStepZero, Optimizers::OverLoss);
  ReferenceNets initial;
  std::vector<torch::Tensor> start;
  for (auto& p : initial.actor->parameters()) start.push_back(p.detach().clone());
  for (auto& p : initial.value->parameters()) start.push_back(p.detach().clone());
  for (size_t i = 0; i < start.size(); ++i) CHECK_FALSE(torch::equal(expected[i], start[i]));  // it trained

  for (auto zeroing : {Zeroing::InPlace, Zeroing::ToNone, Zeroing::OptimizerDefault}) {
    for (auto order : {Order::ZeroForwardBackwardStep, Order::ForwardZeroBackwardStep, Order::ForwardBackwardStepZero}) {
      for (auto optimizers : {Optimizers::OverLoss, Optimizers::PerNetwork, Optimizers::NetworkZeroGrad}) {
        INFO("zeroing " << name_of(zeroing) << "; order " << name_of(order) << "; " << name_of(optimizers));
        const auto got = train_three_steps(zeroing, order, optimizers);
        REQUIRE(got.size() == expected.size());
        for (size_t i = 0; i < got.size(); ++i) {
          INFO("parameter " << i);
          CHECK(torch::equal(got[i], expected[i]));  // bit for bit: the same operations
        }
      }
    }
  }
}

TEST_CASE("Gradients accumulate across backward calls until zeroed, in every zeroing mode", "[ddpg][zero_grad]") {
  for (auto zeroing : {Zeroing::InPlace, Zeroing::ToNone}) {
    INFO("zeroing " << name_of(zeroing));
    ReferenceNets nets;
    auto loss = DDPGLoss(nets.actor, nets.value);
    auto batch = reference_batch();
    sum_losses(loss(batch)).backward();
    const auto once = loss->parameters()[0].grad().clone();
    sum_losses(loss(batch)).backward();
    CHECK(torch::allclose(loss->parameters()[0].grad(), 2 * once));  // accumulated
    auto out = loss(batch);
    zero_tensors(loss->parameters(), zeroing);
    sum_losses(out).backward();
    CHECK(torch::equal(loss->parameters()[0].grad(), once));  // started from zero
    // The network's own .grad views show the same numbers.
    CHECK(torch::equal(nets.actor->parameters()[0].grad().flatten(), once.narrow(0, 0, 96)));
  }
}

TEST_CASE("loss->to(dtype) moves every buffer of its networks", "[ddpg]") {
  torch::manual_seed(0);
  auto spec = rlobj::Bounded(-2.0, 2.0, {1});
  using Seq = rlobj::modules::TensorDictSequential;
  auto actor = Seq(rlobj::modules::TensorDictModule(rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({8})),
                                                    {"observation"}, {"param"}),
                   rlobj::modules::TanhModule({"param"}, {"action"}, spec));
  auto critic = rlobj::modules::ValueOperator(rlobj::modules::MLP(rlobj::modules::MLPOptions(4, 1).num_cells({8})),
                                              {"observation", "action"});
  auto loss = DDPGLoss<Seq, rlobj::modules::ValueOperator>(actor, critic, DDPGLossOptions().delay_actor(true));
  for (const auto& b : actor->buffers()) CHECK(b.scalar_type() == torch::kFloat32);
  loss->to(torch::kFloat64);
  for (const auto& b : actor->buffers()) CHECK(b.scalar_type() == torch::kFloat64);
  for (const auto& b : loss->target_actor_network()->buffers()) CHECK(b.scalar_type() == torch::kFloat64);
  auto batch = reference_batch().apply([](const torch::Tensor& t) {
    return t.is_floating_point() ? t.to(torch::kFloat64) : t;
  });
  auto out = loss(batch);
  CHECK(out.get("loss_actor").scalar_type() == torch::kFloat64);
  CHECK(out.get("target_value").scalar_type() == torch::kFloat64);
  // Bounds built from a float64 spec are float64 from the start.
  auto wide = rlobj::modules::TanhModule({"x"}, {"y"}, rlobj::Bounded(-1.0, 1.0, {1}, torch::kFloat64));
  for (const auto& b : wide->buffers()) CHECK(b.scalar_type() == torch::kFloat64);
}

TEST_CASE("DDPGLoss: inputs of the wrong dtype or shape, and empty batches, are clear errors", "[ddpg]") {
  ReferenceNets nets;
  auto loss = DDPGLoss(nets.actor, nets.value);
  auto batch = reference_batch();
  auto int_obs = batch.clone();
  int_obs.set("observation", int_obs.get("observation").to(torch::kLong));
  REQUIRE_THROWS_AS(loss(int_obs), c10::TypeError);
  REQUIRE_THROWS_WITH(loss(int_obs), Contains("input \"observation\" is int64 but the networks are float32"));
  auto f64_obs = batch.clone();
  f64_obs.set({"next", "observation"}, f64_obs.get({"next", "observation"}).to(torch::kFloat64));
  REQUIRE_THROWS_WITH(loss(f64_obs), Contains("input \"next.observation\" is float64 but the networks are float32"));
  auto f64_reward = batch.clone();
  f64_reward.set({"next", "reward"}, f64_reward.get({"next", "reward"}).to(torch::kFloat64));
  REQUIRE_THROWS_WITH(loss(f64_reward), Contains("input \"next.reward\" is float64 but the networks are float32"));
  auto flat_action = batch.clone();
  flat_action.set("action", flat_action.get("action").squeeze(-1));
  REQUIRE_THROWS_AS(loss(flat_action), c10::ValueError);
  REQUIRE_THROWS_WITH(loss(flat_action), Contains("input \"action\" has shape [8], no feature dim"));
  REQUIRE_THROWS_WITH(loss(batch.index({torch::indexing::Slice(0, 0)})), Contains("the batch is empty"));
  CHECK_FALSE(int_obs.contains("td_error"));  // refused before anything was written
}

TEST_CASE("Target updaters: a constructor that throws changes nothing", "[ddpg][updaters]") {
  ReferenceNets nets;
  auto loss = DDPGLoss(nets.actor, nets.value);
  {
    torch::NoGradGuard g;
    loss->named_parameters()["value_network_params"].add_(1.0);  // source != target now
  }
  auto target = loss->named_buffers()["target_value_network_params"];
  const auto before = target.clone();
  REQUIRE_THROWS_AS(SoftUpdate(loss, SoftUpdateOptions().tau(2.0)), c10::ValueError);
  REQUIRE_THROWS_AS(SoftUpdate(loss, SoftUpdateOptions().eps(NAN)), c10::ValueError);
  REQUIRE_THROWS_AS(HardUpdate(loss, -5), c10::ValueError);
  CHECK(torch::equal(target, before));  // not re-initialised from the source
  CHECK_FALSE(loss->has_updater());
  SoftUpdate ok(loss, SoftUpdateOptions().tau(0.5));
  CHECK(loss->has_updater());
  CHECK(torch::equal(target, loss->named_parameters()["value_network_params"]));
}

TEST_CASE("DDPGLoss: a network with frozen parameters trains the others", "[ddpg][zero_grad]") {
  ReferenceNets nets;
  auto frozen = nets.actor_mlp->named_parameters()["0.weight"];
  frozen.requires_grad_(false);
  const auto before = frozen.detach().clone();
  auto loss = DDPGLoss(nets.actor, nets.value);  // no hook on a parameter that gets no gradient
  torch::optim::Adam optim(loss->parameters());
  auto batch = reference_batch();
  for (int i = 0; i < 2; ++i) {
    auto out = loss(batch);
    optim.zero_grad();
    sum_losses(out).backward();
    optim.step();
  }
  CHECK(torch::equal(nets.actor_mlp->named_parameters()["0.weight"], before));
  CHECK_FALSE(torch::equal(nets.actor_mlp->named_parameters()["2.weight"], ReferenceNets().actor_mlp->named_parameters()["2.weight"]));
}

TEST_CASE("separate_losses: gradients through the critic's clone survive zero_grad set to none", "[ddpg][zero_grad]") {
  // The value loss runs a clone of the critic (its shared parameters frozen); its gradients
  // must land in the critic's group whatever was reset between forward and backward.
  auto run = [](bool reset_between) {
    torch::manual_seed(0);
    torch::nn::Linear trunk(3, 8);
    auto actor = rlobj::modules::Actor(TrunkPolicy(trunk));
    auto critic = rlobj::modules::ValueOperator(TrunkCritic(trunk), {"observation", "action"});
    auto loss = DDPGLoss(actor, critic, DDPGLossOptions().separate_losses(true));
    auto batch = reference_batch();
    std::vector<torch::Tensor> grads;
    for (int i = 0; i < 2; ++i) {
      auto out = loss(batch);
      if (reset_between) {
        critic->zero_grad(/*set_to_none=*/true);
        for (auto p : loss->parameters()) p.mutable_grad().reset();
      } else {
        loss->zero_grad();
      }
      sum_losses(out).backward();
      grads.push_back(loss->parameters_of("value_network")[0].grad().clone());
    }
    return grads;
  };
  const auto expected = run(false), got = run(true);
  for (size_t i = 0; i < expected.size(); ++i) CHECK(torch::equal(got[i], expected[i]));
  CHECK(expected[1].abs().sum().item<double>() > 0);
}

}  // namespace rlobj_test_objectives_ddpg_test
