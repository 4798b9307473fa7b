#include <rlobj/collectors/sync.h>
#include <rlobj/envs/pendulum.h>
#include <rlobj/modules/distributions.h>
#include <rlobj/modules/mlp.h>
#include <rlobj/modules/probabilistic.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <optional>

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_modules_distributions_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using namespace rlobj::modules;  // NOLINT(build/namespaces)

namespace {
torch::Tensor log_normal_pdf(const torch::Tensor& x, const torch::Tensor& loc, const torch::Tensor& scale) {
  return -0.5 * ((x - loc) / scale).pow(2) - scale.log() - 0.5 * std::log(2 * M_PI);
}
}  // namespace

TEST_CASE("IndependentNormal and Normal: draws, densities, entropy, shapes", "[distributions]") {
  auto loc = torch::tensor({{0.5, -1.0}, {2.0, 0.0}, {0.0, 0.3}}, torch::kFloat64);
  auto scale = torch::tensor({{1.0, 0.5}, {2.0, 0.1}, {0.3, 3.0}}, torch::kFloat64);
  IndependentNormal d(loc, scale);
  CHECK(d.batch_shape() == std::vector<int64_t>{3});
  CHECK(d.event_shape() == std::vector<int64_t>{2});
  // One normal_() call on the default generator, as PyTorch's rsample.
  torch::manual_seed(3);
  auto eps = torch::empty({4, 3, 2}, torch::kFloat64).normal_();
  torch::manual_seed(3);
  auto s = d.rsample({4});
  CHECK(torch::equal(s, loc + eps * scale));
  auto x = torch::randn({5, 3, 2}, torch::kFloat64);
  CHECK(torch::allclose(d.log_prob(x), log_normal_pdf(x, loc, scale).sum(-1), 0, 1e-12));
  CHECK(torch::allclose(d.entropy(), (0.5 + 0.5 * std::log(2 * M_PI) + scale.log()).sum(-1), 0, 1e-12));
  CHECK(torch::equal(d.mode(), loc));
  Normal n(loc, scale);
  CHECK(n.event_shape().empty());
  CHECK(torch::allclose(n.log_prob(x), log_normal_pdf(x, loc, scale), 0, 1e-12));
  CHECK_FALSE(n.sample().requires_grad());
  REQUIRE_THROWS_WITH(d.log_prob(torch::zeros({3})), Contains("IndependentNormal.log_prob: expected a value whose last "
                                                                "dims are batch_shape + event_shape [3, 2], got [3]"));
  REQUIRE_THROWS_WITH(d.log_prob(torch::zeros({3, 1}, torch::kFloat64)), Contains("got [3, 1]"));
  REQUIRE_THROWS_WITH(IndependentNormal(loc, scale.narrow(1, 0, 1)),
                      Contains("loc has shape [3, 2] but scale has shape [3, 1] (nothing is broadcast)"));
  CHECK(torch::equal(d.mean(), loc));
}

TEST_CASE("TanhNormal: TorchRL's shifted location, bounds, density and mode", "[distributions]") {
  auto loc = torch::tensor({{0.3}, {-1.7}, {2.5}}, torch::kFloat64);
  auto scale = torch::tensor({{0.4}, {1.1}, {0.05}}, torch::kFloat64);
  auto options = TanhNormalOptions().low(torch::tensor({-2.0})).high(torch::tensor({2.0}));
  TanhNormal d(loc, scale, options);
  CHECK(torch::equal(d.base_loc(), (loc + 2.0) - 2.0));
  // float32: (loc + 2) - 2 is not always loc; TorchRL's distribution uses the rounded value.
  auto loc32 = torch::tensor({0.1f, 0.3f, -0.7f, 1e-3f}).unsqueeze(-1);
  TanhNormal d32(loc32, torch::ones_like(loc32), options);
  CHECK(torch::equal(d32.base_loc(), (loc32 + 2.0f) + (-2.0f)));
  CHECK_FALSE(torch::equal(d32.base_loc(), loc32));

  SECTION("samples lie inside the bounds; log_prob is the change-of-variables density") {
    torch::manual_seed(1);
    auto a = d.rsample({2000});
    CHECK((a.abs() < 2.0).all().item<bool>());
    auto a_test = torch::tensor({{1.2}, {-0.5}, {1.99}}, torch::kFloat64);
    auto x = torch::atanh(a_test / 2);
    auto want = log_normal_pdf(x, loc, scale) - torch::log(2 * (1 - torch::tanh(x).pow(2)));
    CHECK(torch::allclose(d.log_prob(a_test), want.sum(-1), 1e-9, 1e-9));
    // The density integrates to 1 over (-2, 2) (trapezoid rule, 1-D event).
    auto grid = torch::linspace(-2 + 1e-9, 2 - 1e-9, 200001, torch::kFloat64).view({-1, 1, 1}).expand({-1, 3, 1});
    auto pdf = d.log_prob(grid.contiguous()).exp();  // [G, 3]
    auto mass = torch::trapezoid(pdf, torch::linspace(-2 + 1e-9, 2 - 1e-9, 200001, torch::kFloat64), 0);
    CHECK(torch::allclose(mass, torch::ones({3}, torch::kFloat64), 0, 2e-3));
  }
  SECTION("gradients flow from a sample's log_prob to loc and scale") {
    auto l = loc.clone().requires_grad_(true);
    auto sc = scale.clone().requires_grad_(true);
    TanhNormal g(l, sc, options);
    g.log_prob(g.rsample()).sum().backward();
    CHECK(l.grad().defined());
    CHECK(sc.grad().abs().sum().item<double>() > 0);
  }
  SECTION("mode, default bounds, undefined moments") {
    CHECK(torch::allclose(d.mode(), 2 * torch::tanh(d.base_loc())));
    TanhNormal unit(loc, scale);
    CHECK(torch::equal(unit.base_loc(), loc));
    CHECK(torch::allclose(unit.mode(), torch::tanh(loc)));
    TanhNormal same(loc, scale, TanhNormalOptions().low(-torch::ones({1})).high(torch::ones({1})));
    CHECK(torch::equal(same.base_loc(), loc));  // (-1, 1) as tensors: no affine map, no shift
    REQUIRE_THROWS_AS(d.mean(), c10::NotImplementedError);
    REQUIRE_THROWS_WITH(d.entropy(), Contains("TanhNormal does not define entropy"));
    REQUIRE_THROWS_WITH(TanhNormal(loc, scale, TanhNormalOptions().low(torch::ones({1})).high(torch::zeros({1}))),
                        Contains("high must be > low"));
    auto spec_opts = TanhNormalOptions::from_spec(rlobj::Bounded(-3.0, 1.0, {1}));
    CHECK(spec_opts.low().item<double>() == -3.0);
  }
  SECTION("tanh_loc squashes the location") {
    TanhNormal t(loc, scale, TanhNormalOptions().tanh_loc(true).upscale(2.0));
    CHECK(torch::allclose(t.base_loc(), torch::tanh(loc / 2.0) * 2.0));
  }
}

TEST_CASE("Delta: all the mass on the parameter", "[distributions]") {
  auto p = torch::tensor({{1.0, 2.0}, {3.0, 4.0}});
  Delta d(p);
  CHECK(d.sample({5}).sizes() == torch::IntArrayRef({5, 2, 2}));
  auto lp = d.log_prob(torch::tensor({{1.0, 2.0}, {3.0, 4.5}}));
  CHECK(std::isinf(lp[0].item<float>()));
  CHECK(lp[0].item<float>() > 0);
  CHECK(lp[1].item<float>() < 0);
  CHECK(torch::equal(d.mode(), p));
  REQUIRE_THROWS_AS(d.entropy(), c10::NotImplementedError);
}

TEST_CASE("Categorical and OneHotCategorical", "[distributions]") {
  auto logits = torch::tensor({{0.0, 1.0, 2.0}, {3.0, 0.0, -1.0}}, torch::kFloat64);
  Categorical c(logits);
  CHECK(c.batch_shape() == std::vector<int64_t>{2});
  CHECK(torch::allclose(c.logits(), torch::log_softmax(logits, -1)));
  CHECK(torch::allclose(c.log_prob(torch::tensor({2, 0})),
                        torch::log_softmax(logits, -1).gather(-1, torch::tensor({{2}, {0}})).squeeze(-1)));
  auto p = torch::softmax(logits, -1);
  CHECK(torch::allclose(c.entropy(), -(p * p.log()).sum(-1)));
  CHECK(torch::equal(c.mode(), torch::tensor({2, 0})));
  torch::manual_seed(0);
  auto s = c.sample({20000});
  REQUIRE(s.sizes() == torch::IntArrayRef({20000, 2}));
  for (int64_t k = 0; k < 3; ++k) {
    CHECK((s.select(1, 0) == k).to(torch::kFloat64).mean().item<double>() == Approx(p[0][k].item<double>()).margin(0.02));
  }
  REQUIRE_THROWS_WITH(c.log_prob(torch::tensor({0.5, 1.0})), Contains("expected integer category indices, got Float"));
  REQUIRE_THROWS_WITH(c.log_prob(torch::tensor({0, 3})), Contains("outcomes must be in [0, 3), got values in [0, 3]"));
  REQUIRE_THROWS_WITH(c.log_prob(torch::tensor({0, 1, 2})), Contains("got [3]"));
  auto from_probs = Categorical::from_probs(torch::tensor({2.0, 6.0}, torch::kFloat64));
  CHECK(torch::allclose(from_probs.probs(), torch::tensor({0.25, 0.75}, torch::kFloat64)));

  OneHotCategorical h(logits.unsqueeze(-1).squeeze(-1));
  CHECK(h.event_shape() == std::vector<int64_t>{3});
  auto one_hot = h.sample({4});
  CHECK(one_hot.sizes() == torch::IntArrayRef({4, 2, 3}));
  CHECK(torch::equal(one_hot.sum(-1), torch::ones({4, 2}, torch::kLong)));
  CHECK(torch::allclose(h.log_prob(torch::one_hot(torch::tensor({1, 2}), 3)), c.log_prob(torch::tensor({1, 2}))));
  CHECK(torch::equal(h.mode(), torch::tensor({{0, 0, 1}, {1, 0, 0}})));
  // Pass-through gradient: d/dlogits of sum(w * rsample) equals that of sum(w * probs).
  auto l = logits.clone().requires_grad_(true);
  auto w = torch::tensor({{1.0, -2.0, 0.5}, {0.3, 0.0, 2.0}}, torch::kFloat64);
  (OneHotCategorical(l).rsample() * w).sum().backward();
  auto l2 = logits.clone().requires_grad_(true);
  (torch::softmax(l2, -1) * w).sum().backward();
  CHECK(torch::allclose(l.grad(), l2.grad()));
  CHECK(OneHotCategorical(torch::zeros({5, 1})).batch_shape().empty());  // a trailing 1 is dropped, as TorchRL
}

TEST_CASE("NormalParamExtractor: loc and a biased-softplus scale", "[distributions]") {
  NormalParamExtractor npe;
  CHECK(static_cast<float>(NormalParamExtractor::Impl::bias()) ==
        static_cast<float>(std::log(std::expm1(0.99))));
  auto x = torch::tensor({{0.5f, -2.0f, 0.0f, -100.0f}});
  auto [loc, scale] = npe(x);
  CHECK(torch::equal(loc, x.narrow(1, 0, 2)));
  CHECK(scale[0][0].item<float>() == Approx(1.0f));
  CHECK(scale[0][1].item<float>() == Approx(0.01f));  // softplus -> 0: the floor 0.01
  REQUIRE_THROWS_WITH(npe(torch::zeros({2, 3})), Contains("the last dim must be even"));
}

TEST_CASE("ProbabilisticActor: exploration types, log-probabilities, cloning", "[distributions][probabilistic]") {
  torch::manual_seed(0);
  auto params = TensorDictSequential(TensorDictModule(MLP(MLPOptions(3, 2).num_cells({8})), {"observation"}, {"param"}),
                                     TensorDictModule(NormalParamExtractor(), {"param"}, {"loc", "scale"}));
  auto spec = rlobj::Bounded(-2.0, 2.0, {1});
  auto actor = ProbabilisticActor(params, TanhNormal::factory(TanhNormalOptions::from_spec(spec)),
                                  ProbabilisticActorOptions().return_log_prob(true));
  TensorDict td({4});
  td.set("observation", torch::randn({4, 3}));
  CHECK(actor->in_keys() == std::vector<rlobj::NestedKey>{"observation"});
  CHECK_FALSE(explicit_exploration_type().has_value());

  auto out = actor(td.copy());  // no guard: the default interaction type, Mode
  auto dist = actor->get_dist(out);
  CHECK(torch::equal(out.get("action"), dist->mode()));
  CHECK(torch::allclose(out.get("sample_log_prob"), dist->log_prob(out.get("action"))));
  {
    SetExplorationType random(ExplorationType::Random);
    torch::manual_seed(4);
    auto a1 = actor(td.copy()).get("action");
    torch::manual_seed(4);
    CHECK(torch::equal(actor(td.copy()).get("action"), a1));
    CHECK_FALSE(torch::equal(a1, dist->mode()));
  }
  {
    SetExplorationType mean(ExplorationType::Mean);  // TanhNormal has no mean: 1000 samples
    auto m = actor(td.copy()).get("action");
    CHECK(m.sizes() == torch::IntArrayRef({4, 1}));
    CHECK((m.abs() < 2).all().item<bool>());
  }
  auto copy = std::dynamic_pointer_cast<ProbabilisticActorImpl>(actor->clone());
  REQUIRE(copy != nullptr);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.add_(1.0);
  }
  CHECK_FALSE(torch::equal(copy->parameters()[0], actor->parameters()[0]));
  REQUIRE_THROWS_WITH(ProbabilisticActor(params, IndependentNormal::factory(),
                                         ProbabilisticActorOptions().in_keys({"loc", "std"}))(td.copy()),
                      Contains("distribution parameter \"std\" not found"));

  // The collector acts under Random: the policy sees it.
  rlobj::envs::Pendulum env(rlobj::envs::PendulumOptions().seed(0));
  std::optional<ExplorationType> seen;
  rlobj::collectors::SyncDataCollector collector(
      env, [&](TensorDict& t) { seen = explicit_exploration_type(); actor(t); }, 1, 1);
  collector.next();
  CHECK(seen == ExplorationType::Random);
  CHECK_FALSE(explicit_exploration_type().has_value());
}

}  // namespace rlobj_test_modules_distributions_test
