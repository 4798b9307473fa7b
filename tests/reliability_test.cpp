// Classes of bad input across components that the per-component tests do not cover: a call
// that fails must name what it refused and leave everything as it was (strong guarantee),
// including generators (a rejected call draws nothing).
#include <rlobj/rlobj.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_reliability_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using namespace rlobj::modules;     // NOLINT(build/namespaces)
using namespace rlobj::envs;        // NOLINT(build/namespaces)
using namespace rlobj::objectives;  // NOLINT(build/namespaces)

namespace {

bool same_leaves(const TensorDict& a, const TensorDict& b) {
  const auto keys = a.keys(true, true);
  if (keys.size() != b.keys(true, true).size()) return false;
  for (const auto& key : keys) {
    if (!b.find(key) || !torch::equal(a.get(key), b.get(key))) return false;
  }
  return true;
}

struct TwoOutImpl : torch::nn::Module {
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) { return {x + 1, x.sum()}; }
};
TORCH_MODULE(TwoOut);

// An environment with a batch dim of 0: no sub-environment at all.
struct EmptyEnv : EnvBase {
  EmptyEnv() : EnvBase({0}, torch::kCPU, 0) {}
  TensorDict reset_impl(const TensorDict*) override { return TensorDict({0}); }
  TensorDict step_impl(const TensorDict&) override { return TensorDict({0}); }
};

}  // namespace

TEST_CASE("Pendulum: a rejected partial reset draws nothing and changes nothing", "[reliability][pendulum]") {
  Pendulum env(PendulumOptions().batch_size({3}).seed(5));
  TensorDict root = env.reset();
  const auto state = env.generator().get_state();

  TensorDict no_th = root.copy();
  no_th.set("_reset", torch::tensor({true, false, true}).view({3, 1}));
  no_th.erase("th");
  REQUIRE_THROWS_WITH(env.reset(no_th), Contains("no \"th\""));
  CHECK(torch::equal(env.generator().get_state(), state));

  TensorDict bad_count = root.copy();
  bad_count.set("_reset", torch::tensor({true, false, true}).view({3, 1}));
  bad_count.set("step_count", torch::zeros({3, 1}, torch::kFloat64));
  REQUIRE_THROWS_WITH(env.reset(bad_count), Contains("\"step_count\" must be int64 of shape [3, 1]"));
  CHECK(torch::equal(env.generator().get_state(), state));

  TensorDict bad_flag = root.copy();
  bad_flag.set("_reset", torch::tensor({true, false, true}).view({3, 1}));
  bad_flag.set("done", torch::zeros({3, 3}, torch::kBool));  // would have broadcast to [3, 3]
  REQUIRE_THROWS_WITH(env.reset(bad_flag), Contains("\"done\" must be bool of shape [3, 1]"));
  CHECK(torch::equal(env.generator().get_state(), state));
}

TEST_CASE("EnvBase: step accepts a TensorDict that has a device", "[reliability][envs]") {
  Pendulum env(PendulumOptions().batch_size({2}).seed(1));
  TensorDict td = env.reset().to(torch::kCPU);
  REQUIRE(td.device().has_value());
  td.set("action", torch::zeros({2, 1}));
  env.step(td);
  CHECK(td.get_sub("next").device() == td.device());
  CHECK(td.get({"next", "observation"}).sizes() == torch::IntArrayRef({2, 3}));
}

TEST_CASE("EnvBase.rollout: contradicting break options are refused", "[reliability][envs]") {
  Pendulum env(PendulumOptions().batch_size({2}).seed(1));
  REQUIRE_THROWS_WITH(env.rollout(3, RolloutOptions().break_when_all_done(true)),
                      Contains("break_when_all_done(true) needs break_when_any_done(false)"));
  CHECK(env.rollout(3, RolloutOptions().break_when_any_done(false).break_when_all_done(true)).batch_size() ==
        TensorDict::BatchSize{2, 3});
}

TEST_CASE("Modules with several outputs write all of them or none", "[reliability][modules]") {
  SECTION("TensorDictModule: the second output has the wrong batch dims") {
    TensorDictModule m(TwoOut(), {"x"}, {"y", "total"});
    TensorDict td({{"x", torch::ones({4, 2})}}, {4});
    const TensorDict before = td.copy();
    REQUIRE_THROWS_WITH(m(td), Contains("total"));
    CHECK(same_leaves(td, before));
    CHECK_FALSE(td.contains("y"));
  }
  SECTION("TanhModule: the second input is missing") {
    TanhModule m({"a", "b"}, {"x", "y"});
    TensorDict td({{"a", torch::zeros({2, 1})}}, {2});
    REQUIRE_THROWS_WITH(m(td), Contains("input key \"b\" not found"));
    CHECK_FALSE(td.contains("x"));
  }
  SECTION("TanhModule: a later input may read an earlier output, as in TorchRL") {
    TanhModule m({"a", "x"}, {"x", "y"});
    TensorDict td({{"a", torch::full({2, 1}, 0.5)}}, {2});
    m(td);
    CHECK(torch::allclose(td.get("y"), torch::full({2, 1}, 0.5).tanh().tanh()));
  }
  SECTION("TanhModule: a spec whose rows differ is refused") {
    rlobj::Bounded spec(torch::tensor({{-1.0f}, {-2.0f}}), torch::tensor({{1.0f}, {2.0f}}));
    REQUIRE_THROWS_WITH(TanhModule({"a"}, {"b"}, spec), Contains("bounds differ between its leading rows"));
    rlobj::Bounded same(torch::tensor({{-1.0f}, {-1.0f}}), torch::tensor({{1.0f}, {1.0f}}));
    CHECK_NOTHROW(TanhModule({"a"}, {"b"}, same));
  }
}

TEST_CASE("Exploration modules: rejected options draw nothing from the global generator",
          "[reliability][exploration]") {
  rlobj::Bounded spec(-1.0, 1.0, {1});
  auto draw_after = [](const std::function<void()>& body) {
    torch::manual_seed(11);
    try {
      body();
    } catch (const c10::Error&) {
    }
    return torch::rand({1}).item<double>();
  };
  torch::manual_seed(11);
  const double untouched = torch::rand({1}).item<double>();
  auto gaussian = [&](AdditiveGaussianModuleOptions o) { return [&spec, o] { AdditiveGaussianModule(spec, o); }; };
  auto ou = [&](OrnsteinUhlenbeckProcessModuleOptions o) {
    return [&spec, o] { OrnsteinUhlenbeckProcessModule(spec, o); };
  };
  CHECK(draw_after(gaussian(AdditiveGaussianModuleOptions().std(-1))) == untouched);
  CHECK(draw_after(gaussian(AdditiveGaussianModuleOptions().annealing_num_steps(0))) == untouched);
  CHECK(draw_after(ou(OrnsteinUhlenbeckProcessModuleOptions().dt(0))) == untouched);
  CHECK(draw_after(ou(OrnsteinUhlenbeckProcessModuleOptions().sigma(NAN))) == untouched);

  REQUIRE_THROWS_WITH(AdditiveGaussianModule(spec, AdditiveGaussianModuleOptions().mean(INFINITY)),
                      Contains("AdditiveGaussianModuleOptions: mean must be finite, got inf"));
  REQUIRE_THROWS_WITH(AdditiveGaussianModule(spec, AdditiveGaussianModuleOptions().annealing_num_steps(0)),
                      Contains("annealing_num_steps must be positive, got 0"));
  REQUIRE_THROWS_WITH(OrnsteinUhlenbeckProcessModule(spec, OrnsteinUhlenbeckProcessModuleOptions().theta(-1)),
                      Contains("OrnsteinUhlenbeckProcessModuleOptions: theta must be >= 0, got -1"));
  REQUIRE_THROWS_WITH(OrnsteinUhlenbeckProcessModule(spec, OrnsteinUhlenbeckProcessModuleOptions().sigma_min(-0.5)),
                      Contains("sigma_min must be >= 0, got -0.5"));
  // A valid module draws its seed (the global generator moves).
  CHECK(draw_after([&] { AdditiveGaussianModule(spec, AdditiveGaussianModuleOptions()); }) != untouched);
}

TEST_CASE("Value estimators: a failed estimate leaves the TensorDict as it was", "[reliability][value]") {
  using namespace rlobj::objectives::value;  // NOLINT(build/namespaces)
  auto value_net = [](TensorDict td) {
    td.set("state_value", td.get("observation").sum(-1, true));
    return td;
  };
  auto g = at::make_generator<at::CPUGeneratorImpl>(3);
  TensorDict next({{"observation", torch::randn({2, 5, 3}, g)},
                   {"reward", torch::randn({2, 5, 1}, g)},
                   {"done", torch::zeros({2, 5, 1}, torch::kBool)},
                   {"terminated", torch::zeros({2, 5, 1}, torch::kBool)}},
                  {2, 5});
  TensorDict td({{"observation", torch::randn({2, 5, 3}, g)}}, {2, 5});
  td.set("next", next);
  const TensorDict before = td.clone();

  for (const bool gae : {false, true}) {
    INFO("gae " << gae);
    auto options = ValueEstimatorOptions().average_rewards(true);
    std::unique_ptr<ValueEstimatorBase> estimator;
    if (gae) {
      estimator = std::make_unique<GAE>(value_net, options);
    } else {
      estimator = std::make_unique<TD1Estimator>(value_net, options);
    }
    // A wrong next value: refused after the rewards were standardised, which must not stick.
    REQUIRE_THROWS_WITH(estimator->value_estimate(td, torch::zeros({2, 5, 2})), Contains("they must match"));
    CHECK(same_leaves(td, before));
    // forward with a value network of the wrong width: refused after the rewards were
    // standardised, which must not stick either.
    auto wide_net = [](TensorDict t) {
      t.set("state_value", t.get("observation").narrow(-1, 0, 2));
      return t;
    };
    std::unique_ptr<ValueEstimatorBase> wide;
    if (gae) {
      wide = std::make_unique<GAE>(wide_net, options);
    } else {
      wide = std::make_unique<TD1Estimator>(wide_net, options);
    }
    REQUIRE_THROWS_WITH(wide->forward(td), Contains("they must match"));
    CHECK(same_leaves(td, before));
  }
  // And a good call writes the standardised rewards, as TorchRL does.
  TD1Estimator ok(value_net, ValueEstimatorOptions().average_rewards(true));
  TensorDict good = td.clone();
  ok.forward(good);
  CHECK(good.get({"next", "reward"}).mean().item<double>() == Approx(0).margin(1e-6));
}

TEST_CASE("TD0Estimator: steps_to_next_obs must be one integer count per reward", "[reliability][value]") {
  using namespace rlobj::objectives::value;  // NOLINT(build/namespaces)
  TensorDict next({{"reward", torch::ones({4, 1})},
                   {"done", torch::zeros({4, 1}, torch::kBool)},
                   {"terminated", torch::zeros({4, 1}, torch::kBool)}},
                  {4});
  TensorDict td({{"steps_to_next_obs", torch::ones({4, 2}, torch::kLong)}}, {4});
  td.set("next", next);
  TD0Estimator td0(nullptr);
  REQUIRE_THROWS_WITH(td0.value_estimate(td, torch::zeros({4, 1})),
                      Contains("\"steps_to_next_obs\" has shape [4, 2] on cpu, expected one count per reward ([4, 1])"));
  td.set("steps_to_next_obs", torch::ones({4, 1}));
  REQUIRE_THROWS_WITH(td0.value_estimate(td, torch::zeros({4, 1})),
                      Contains("\"steps_to_next_obs\" must hold integer step counts, got float32"));
  td.set("steps_to_next_obs", torch::full({4, 1}, 2, torch::kLong));
  CHECK(torch::allclose(td0.value_estimate(td, torch::ones({4, 1})), torch::full({4, 1}, 1 + 0.99f * 0.99f)));
}

TEST_CASE("td0_return_estimate: a tensor gamma is checked like a scalar one", "[reliability][value]") {
  using namespace rlobj::objectives::value;  // NOLINT(build/namespaces)
  auto v = torch::ones({3, 1}), r = torch::ones({3, 1});
  auto term = torch::zeros({3, 1}, torch::kBool);
  REQUIRE_THROWS_WITH(td0_return_estimate(torch::tensor(5.0), v, r, term), Contains("gamma must be in [0, 1], got 5"));
  REQUIRE_THROWS_WITH(td0_return_estimate(torch::full({3, 1}, 0.5, torch::kFloat64), v, r, term),
                      Contains("gamma must be 0-dim or a tensor of the reward's shape [3, 1] whose dtype does not widen the "
                               "reward's (float32), got float64 [3, 1]"));
  REQUIRE_THROWS_WITH(td0_return_estimate(torch::tensor(1), v, r, term), Contains("gamma must be floating point"));
  CHECK(torch::allclose(td0_return_estimate(torch::full({3, 1}, 0.5f), v, r, term), torch::full({3, 1}, 1.5f)));
}

TEST_CASE("DDPGLoss: networks of different dtypes are refused at construction", "[reliability][ddpg]") {
  auto actor = Actor(MLP(MLPOptions(3, 1).num_cells({4})));
  auto value = ValueOperator(MLP(MLPOptions(4, 1).num_cells({4})), {"observation", "action"});
  value->to(torch::kFloat64);
  REQUIRE_THROWS_WITH(DDPGLoss(actor, value), Contains("DDPGLoss: value_network parameter \"module.0.weight\" is "
                                                       "float64 on cpu but the networks' first parameter is float32"));
}

TEST_CASE("ReplayBuffer: empty batches are checked; stored data carries no autograd history",
          "[reliability][data]") {
  rlobj::data::ReplayBuffer rb(rlobj::data::ReplayBufferOptions().capacity(8).seed(1));
  rb.extend(TensorDict({{"x", torch::ones({2, 3})}}, {2}));
  REQUIRE_THROWS_WITH(rb.extend(TensorDict({{"y", torch::ones({0, 3})}}, {0})), Contains("entry \"y\" is not in the storage"));
  CHECK(rb.size() == 2);
  auto w = torch::ones({3, 3}, torch::requires_grad());
  rb.extend(TensorDict({{"x", w * 2}}, {3}));
  auto sample = rb.sample(4);
  CHECK_FALSE(sample.get("x").requires_grad());
  CHECK_FALSE(sample.get("x").grad_fn());
}

TEST_CASE("SyncDataCollector: no environments, or a checkpoint of another env, are refused",
          "[reliability][collectors]") {
  auto policy = [](TensorDict td) { return td.set("action", torch::zeros({td.batch_size()[0], 1})); };
  EmptyEnv empty;
  REQUIRE_THROWS_WITH(rlobj::collectors::SyncDataCollector(empty, policy, 4),
                      Contains("the environment's batch_size [0] holds no environment"));

  Pendulum four(PendulumOptions().batch_size({4}).seed(1));
  rlobj::collectors::SyncDataCollector a(four, policy, 4);
  a.next();
  torch::serialize::OutputArchive out;
  a.save(out);
  std::stringstream stream;
  out.save_to(stream);
  Pendulum two(PendulumOptions().batch_size({2}).seed(1));
  rlobj::collectors::SyncDataCollector b(two, policy, 4);
  torch::serialize::InputArchive in;
  in.load_from(stream);
  REQUIRE_THROWS_WITH(b.load(in), Contains("root has batch_size [4] but the environment has [2]"));
  CHECK(b.frames() == 0);
}

TEST_CASE("TensorDict.unbind: a dim too long to unbind (over empty data) is refused", "[reliability][tensordict]") {
  TensorDict td({1, int64_t{1} << 40});
  REQUIRE_THROWS_WITH(td.unbind(1), Contains("dim 1 has size 1099511627776; unbind makes at most"));
  CHECK(td.unbind(0).size() == 1);
}

TEST_CASE("TensorDict: indexing a huge batch of empty data allocates nothing", "[reliability][tensordict]") {
  // Found by the fuzzer: the result shape used to be computed on a CPU dummy of the batch
  // shape, which advanced indexing materialised (2 TB here).
  const int64_t huge = int64_t{1} << 40;
  TensorDict td({4, huge, 3});
  CHECK(td.index({torch::tensor({0, 2})}).batch_size() == TensorDict::BatchSize{2, huge, 3});
  CHECK(td.index({torch::tensor({true, false, true, true})}).batch_size() == TensorDict::BatchSize{3, huge, 3});
  TensorDict dst = td.index({torch::tensor({1, 3})});
  CHECK_NOTHROW(td.index_put_({torch::tensor({1, 3})}, dst));
  // Integer index tensors are range-checked as LibTorch would.
  REQUIRE_THROWS_AS(td.index({torch::tensor({0, 9})}), c10::IndexError);
  REQUIRE_THROWS_WITH(td.index({torch::tensor({0, 9})}),
                      Contains("TensorDict.index: index 9 is out of bounds for dimension 0 with size 4"));
  CHECK(td.index({1, torch::tensor({-2})}).batch_size() == TensorDict::BatchSize{1, 3});  // -2 is in range
  REQUIRE_THROWS_WITH(td.index({1, 0, torch::tensor({-4})}),
                      Contains("index -4 is out of bounds for dimension 2 with size 3"));
}

TEST_CASE("LossModule.load: a mismatched checkpoint names the entry", "[reliability][serialize]") {
  auto small = DDPGLoss(Actor(MLP(MLPOptions(3, 1).num_cells({4}))),
                        ValueOperator(MLP(MLPOptions(4, 1).num_cells({4})), {"observation", "action"}));
  auto big = DDPGLoss(Actor(MLP(MLPOptions(3, 1).num_cells({8}))),
                      ValueOperator(MLP(MLPOptions(4, 1).num_cells({8})), {"observation", "action"}));
  std::stringstream stream;
  torch::save(small, stream);
  REQUIRE_THROWS_WITH(torch::load(big, stream),
                      Contains("LossModule.load: the checkpoint's \"actor_network_params\" has shape [21] where the "
                               "loss has [41]"));
}

TEST_CASE("Distributions: unbounded or mis-shaped TanhNormal bounds and negative probabilities are refused",
          "[reliability][distributions]") {
  const auto loc = torch::zeros({4, 2}), scale = torch::ones({4, 2});
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(TanhNormal(loc, scale, TanhNormalOptions().low(torch::full({2}, -inf)).high(torch::ones({2}))),
                    Contains("finite"));
  CHECK_THROWS_WITH(TanhNormal(loc, scale, TanhNormalOptions().low(torch::full({2}, -1.0)).high(torch::full({2}, inf))),
                    Contains("finite"));
  // Bounds of three features for a location of two would broadcast the location itself.
  CHECK_THROWS_WITH(TanhNormal(loc, scale, TanhNormalOptions().low(-2 * torch::ones({3})).high(2 * torch::ones({3}))),
                    Contains("bounds of shape [3] do not broadcast to loc of shape [4, 2]"));
  CHECK_THROWS_WITH(TanhNormal(loc, scale, TanhNormalOptions().low(-2 * torch::ones({5, 4, 2})).high(2 * torch::ones({5, 4, 2}))),
                    Contains("do not broadcast"));
  // Per-feature and scalar bounds broadcast.
  CHECK(TanhNormal(loc, scale, TanhNormalOptions().low(-2 * torch::ones({2})).high(2 * torch::ones({2}))).rsample().sizes() ==
        loc.sizes());
  CHECK(TanhNormal(loc, scale, TanhNormalOptions().low(torch::tensor(-3.0)).high(torch::tensor(3.0))).rsample().sizes() ==
        loc.sizes());
  CHECK_THROWS_WITH(Categorical::from_probs(torch::tensor({0.5, -0.1, 0.6})), Contains("probs must be >= 0"));
  CHECK_THROWS_WITH(Categorical::from_probs(torch::tensor({0.5, std::numeric_limits<double>::quiet_NaN(), 0.5})), Contains("probs must be >= 0"));
  CHECK(Categorical::from_probs(torch::tensor({0.5, 0.0, 0.5})).log_prob(torch::tensor(int64_t{2})).item<double>() ==
        Approx(std::log(0.5)));
}

TEST_CASE("ProbabilisticActor: a log-probability written over the sample is refused", "[reliability][modules]") {
  auto params = TensorDictModule(NormalParamExtractor(), {"param"}, {"loc", "scale"});
  CHECK_THROWS_WITH(ProbabilisticActor(params, TanhNormal::factory(),
                                       ProbabilisticActorOptions().return_log_prob(true).log_prob_key("action")),
                    Contains("log_prob_key and out_key are both \"action\""));
  // Without return_log_prob the key is not written: nothing to refuse.
  CHECK_NOTHROW(ProbabilisticActor(params, TanhNormal::factory(), ProbabilisticActorOptions().log_prob_key("action")));
}

TEST_CASE("LossModule: an ensemble larger than memory is refused, naming it", "[reliability][objectives]") {
  // Before: num_qvalue_nets of 2^40 cloned critics until the process was killed for memory.
  rlobj::Bounded spec(-2.0, 2.0, {1});
  auto actor = Actor(MLP(MLPOptions(3, 1).num_cells({8})));
  auto critic = ValueOperator(MLP(MLPOptions(4, 1).num_cells({8})), {"observation", "action"});
  const auto before = critic->parameters()[0].clone();
  CHECK_THROWS_WITH(TD3Loss(actor, critic, spec, TD3LossOptions().num_qvalue_nets(int64_t{1} << 40)),
                    Contains("qvalue_network: an ensemble of 1099511627776 copies") && Contains("bytes of memory"));
  CHECK(torch::equal(critic->parameters()[0], before));
  CHECK(TD3Loss(actor, critic, spec, TD3LossOptions().num_qvalue_nets(3))->qvalue_networks().size() == 3);
}

}  // namespace rlobj_test_reliability_test
