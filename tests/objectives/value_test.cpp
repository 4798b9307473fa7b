#include <rlobj/objectives/value/advantages.h>
#include <rlobj/objectives/value/functional.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_objectives_value_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using namespace rlobj::objectives::value;

namespace {

// Trajectories of B=3 envs, T=12 steps, with truncations (done, not terminated) and
// terminations (done and terminated).
struct Data {
  int64_t B = 3, T = 12;
  torch::Tensor reward, value, next_value, done, terminated;
  Data() {
    auto g = at::make_generator<at::CPUGeneratorImpl>(42);
    reward = torch::randn({B, T, 1}, g, torch::kFloat64);
    value = torch::randn({B, T, 1}, g, torch::kFloat64);
    next_value = torch::randn({B, T, 1}, g, torch::kFloat64);
    done = torch::zeros({B, T, 1}, torch::kBool);
    terminated = torch::zeros({B, T, 1}, torch::kBool);
    done[0][3][0] = true;  // truncation
    done[0][8][0] = true;  // termination
    terminated[0][8][0] = true;
    done[1][11][0] = true;  // termination at the end
    terminated[1][11][0] = true;
    done[2][5][0] = true;  // truncation
  }
  double r(int64_t b, int64_t t) const { return reward[b][t][0].item<double>(); }
  double v(int64_t b, int64_t t) const { return value[b][t][0].item<double>(); }
  double nv(int64_t b, int64_t t) const { return next_value[b][t][0].item<double>(); }
  bool d(int64_t b, int64_t t) const { return done[b][t][0].item<bool>(); }
  bool term(int64_t b, int64_t t) const { return terminated[b][t][0].item<bool>(); }
};

// The plain reverse loops (Sutton & Barto, with TorchRL's truncation handling).
std::vector<double> ref_td1(const Data& x, double gamma) {
  std::vector<double> out;
  for (int64_t b = 0; b < x.B; ++b) {
    std::vector<double> G(x.T);
    for (int64_t t = x.T - 1; t >= 0; --t) {
      double boot;
      if (x.term(b, t)) boot = 0;
      else if (x.d(b, t) || t == x.T - 1) boot = x.nv(b, t);
      else boot = G[t + 1];
      G[t] = x.r(b, t) + gamma * boot;
    }
    out.insert(out.end(), G.begin(), G.end());
  }
  return out;
}

std::vector<double> ref_td_lambda(const Data& x, double gamma, double lmbda) {
  std::vector<double> out;
  for (int64_t b = 0; b < x.B; ++b) {
    std::vector<double> G(x.T);
    for (int64_t t = x.T - 1; t >= 0; --t) {
      const double v_next = x.term(b, t) ? 0.0 : x.nv(b, t);
      const double later = (x.d(b, t) || t == x.T - 1) ? v_next : G[t + 1];
      G[t] = x.r(b, t) + gamma * ((1 - lmbda) * v_next + lmbda * later);
    }
    out.insert(out.end(), G.begin(), G.end());
  }
  return out;
}

std::vector<double> ref_gae(const Data& x, double gamma, double lmbda) {
  std::vector<double> out;
  for (int64_t b = 0; b < x.B; ++b) {
    std::vector<double> A(x.T);
    double next_adv = 0;
    for (int64_t t = x.T - 1; t >= 0; --t) {
      const double delta = x.r(b, t) + gamma * (x.term(b, t) ? 0.0 : x.nv(b, t)) - x.v(b, t);
      A[t] = delta + gamma * lmbda * (x.d(b, t) ? 0.0 : next_adv);
      next_adv = A[t];
    }
    out.insert(out.end(), A.begin(), A.end());
  }
  return out;
}

void check_close(const torch::Tensor& got, const std::vector<double>& want, const char* what) {
  INFO(what);
  auto g = rlobj_test::values(got);
  REQUIRE(g.size() == want.size());
  for (size_t i = 0; i < g.size(); ++i) {
    INFO("element " << i);
    CHECK(g[i] == Approx(want[i]).margin(1e-12).epsilon(0));
  }
}

}  // namespace

TEST_CASE("td0_return_estimate", "[value]") {
  Data x;
  auto got = td0_return_estimate(0.9, x.next_value, x.reward, x.terminated);
  std::vector<double> want;
  for (int64_t b = 0; b < x.B; ++b)
    for (int64_t t = 0; t < x.T; ++t) want.push_back(x.r(b, t) + 0.9 * (x.term(b, t) ? 0 : x.nv(b, t)));
  check_close(got, want, "td0");
  // A float32 0-dim gamma is what the estimators pass (TorchRL stores gamma that way).
  auto f = td0_return_estimate(torch::tensor(0.99f), x.next_value.to(torch::kFloat32), x.reward.to(torch::kFloat32),
                               x.terminated);
  CHECK(f.scalar_type() == torch::kFloat32);
  REQUIRE_THROWS_WITH(td0_return_estimate(0.9, x.next_value, x.reward.squeeze(-1), x.terminated),
                      Contains("reward has shape [3, 12]"));
  REQUIRE_THROWS_AS(td0_return_estimate(0.9, x.next_value, x.reward, x.terminated.to(torch::kFloat64)), c10::TypeError);
  check_close(td0_advantage_estimate(0.9, x.value, x.next_value, x.reward, x.terminated),
              [&] {
                auto w = want;
                auto v = rlobj_test::values(x.value);
                for (size_t i = 0; i < w.size(); ++i) w[i] -= v[i];
                return w;
              }(),
              "td0 advantage");
}

TEST_CASE("td1_return_estimate matches a reverse loop", "[value]") {
  Data x;
  check_close(td1_return_estimate(0.95, x.next_value, x.reward, x.done, x.terminated), ref_td1(x, 0.95), "td1");
  REQUIRE_THROWS_WITH(td1_return_estimate(0.95, x.next_value[0][0], x.reward[0][0], x.done[0][0], x.terminated[0][0]),
                      Contains("time at dim -2"));
}

TEST_CASE("td_lambda_return_estimate matches a reverse loop", "[value]") {
  Data x;
  for (double lmbda : {0.0, 0.5, 0.95, 1.0}) {
    INFO("lambda " << lmbda);
    check_close(td_lambda_return_estimate(0.9, lmbda, x.next_value, x.reward, x.done, x.terminated),
                ref_td_lambda(x, 0.9, lmbda), "td(lambda)");
  }
  // lambda = 1 is TD(1); lambda = 0 is TD(0).
  CHECK(torch::allclose(td_lambda_return_estimate(0.9, 1.0, x.next_value, x.reward, x.done, x.terminated),
                        td1_return_estimate(0.9, x.next_value, x.reward, x.done, x.terminated)));
  CHECK(torch::allclose(td_lambda_return_estimate(0.9, 0.0, x.next_value, x.reward, x.done, x.terminated),
                        td0_return_estimate(0.9, x.next_value, x.reward, x.terminated)));
}

TEST_CASE("generalized_advantage_estimate matches a reverse loop", "[value]") {
  Data x;
  auto [adv, target] = generalized_advantage_estimate(0.99, 0.95, x.value, x.next_value, x.reward, x.done, x.terminated);
  check_close(adv, ref_gae(x, 0.99, 0.95), "gae");
  CHECK(torch::allclose(target, adv + x.value));
}

namespace {

// A value network V(s) = sum(observation) written under "state_value".
TensorDict value_net(TensorDict td) {
  td.set("state_value", td.get("observation").sum(-1, true));
  return td;
}

TensorDict trajectory(const Data& x) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(43);
  auto obs = torch::randn({x.B, x.T, 2}, g, torch::kFloat64);
  auto next_obs = torch::randn({x.B, x.T, 2}, g, torch::kFloat64);
  return TensorDict({{"observation", obs},
                     {{"next", "observation"}, next_obs},
                     {{"next", "reward"}, x.reward},
                     {{"next", "done"}, x.done},
                     {{"next", "terminated"}, x.terminated}},
                    {x.B, x.T});
}

}  // namespace

TEST_CASE("Estimators evaluate the value network on the next states", "[value]") {
  Data x;
  auto td = trajectory(x);
  auto next_value = td.get({"next", "observation"}).sum(-1, true);
  auto value = td.get("observation").sum(-1, true);

  TD0Estimator td0(value_net);
  CHECK(td0.gamma().scalar_type() == torch::kFloat32);
  CHECK(td0.gamma().item<double>() == static_cast<double>(0.99f));
  CHECK(torch::allclose(td0.value_estimate(td), td0_return_estimate(td0.gamma(), next_value, x.reward, x.terminated)));
  // forward writes advantage and value_target.
  td0.forward(td);
  CHECK(torch::allclose(td.get("advantage"), td.get("value_target") - value));

  TD1Estimator td1(value_net, ValueEstimatorOptions().gamma(0.9));
  Data y = x;
  y.next_value = next_value;
  check_close(td1.value_estimate(td), ref_td1(y, static_cast<double>(0.9f)), "TD1Estimator");

  TDLambdaEstimator tdl(value_net, ValueEstimatorOptions().gamma(0.9).lmbda(0.7));
  // gamma and lmbda are float32 buffers in TorchRL: the estimators use their float32 values.
  check_close(tdl.value_estimate(td), ref_td_lambda(y, static_cast<double>(0.9f), static_cast<double>(0.7f)),
              "TDLambdaEstimator");

  GAE gae(value_net, ValueEstimatorOptions().gamma(0.9).lmbda(0.7));
  gae.forward(td);
  y.value = value;
  check_close(td.get("advantage"), ref_gae(y, static_cast<double>(0.9f), static_cast<double>(0.7f)), "GAE");
  GAE normalized(value_net, ValueEstimatorOptions().average_gae(true));
  normalized.forward(td);
  CHECK(td.get("advantage").mean().item<double>() == Approx(0).margin(1e-9));
  CHECK(td.get("advantage").std().item<double>() == Approx(1).epsilon(1e-9));
}

TEST_CASE("Estimators: options, keys and errors", "[value]") {
  Data x;
  SECTION("next_value given explicitly skips the network") {
    TD0Estimator td0(nullptr);
    auto td = trajectory(x);
    CHECK(torch::allclose(td0.value_estimate(td, x.next_value),
                          td0_return_estimate(td0.gamma(), x.next_value, x.reward, x.terminated)));
    REQUIRE_THROWS_WITH(td0.value_estimate(td), Contains("no value network"));
  }
  SECTION("steps_to_next_obs raises gamma to that power") {
    TD0Estimator td0(value_net);
    auto td = trajectory(x);
    td.set("steps_to_next_obs", torch::full({x.B, x.T, 1}, 3, torch::kInt64));
    auto gamma3 = td0.gamma().pow(3);
    CHECK(torch::allclose(td0.value_estimate(td, x.next_value),
                          td0_return_estimate(gamma3, x.next_value, x.reward, x.terminated)));
  }
  SECTION("average_rewards standardises (and writes back) the rewards") {
    TD0Estimator td0(value_net, ValueEstimatorOptions().average_rewards(true));
    auto td = trajectory(x);
    td0.value_estimate(td, x.next_value);
    CHECK(td.get({"next", "reward"}).mean().item<double>() == Approx(0).margin(1e-9));
  }
  SECTION("average_rewards refuses a single reward (no standard deviation), before writing anything") {
    TD0Estimator td0(value_net, ValueEstimatorOptions().average_rewards(true));
    TensorDict one({1});
    one.set("observation", torch::zeros({1, 3}));
    one.set(rlobj::NestedKey({"next", "observation"}), torch::zeros({1, 3}));
    one.set(rlobj::NestedKey({"next", "reward"}), torch::ones({1, 1}));
    one.set(rlobj::NestedKey({"next", "done"}), torch::zeros({1, 1}, torch::kBool));
    one.set(rlobj::NestedKey({"next", "terminated"}), torch::zeros({1, 1}, torch::kBool));
    CHECK_THROWS_WITH(td0.value_estimate(one, torch::zeros({1, 1})),
                      Contains("average_rewards") && Contains("at least 2") && Contains("[1, 1]"));
    CHECK(one.get({"next", "reward"}).item<float>() == 1.0f);
  }
  SECTION("set_keys renames; unknown names throw") {
    TD0Estimator td0([](TensorDict td) {
      td.set("v", td.get("observation").sum(-1, true));
      return td;
    });
    td0.set_keys({{"value", "v"}, {"reward", "r"}});
    auto td = trajectory(x);
    td.get_sub("next").set("r", x.reward);
    CHECK(td0.value_estimate(td).sizes() == x.reward.sizes());
    REQUIRE_THROWS_WITH(td0.set_keys({{"values", "v"}}), Contains("\"values\" is not an accepted key"));
  }
  SECTION("errors name the keys") {
    TD0Estimator td0(value_net);
    auto td = trajectory(x);
    td.get_sub("next").erase("reward");
    REQUIRE_THROWS_WITH(td0.value_estimate(td), Contains("no reward \"next.reward\""));
    auto bad = trajectory(x);
    bad.set({"next", "reward"}, x.reward.squeeze(-1));
    REQUIRE_THROWS_WITH(td0.value_estimate(bad), Contains("\"next.reward\" has shape [3, 12]"));
    TD0Estimator writes_nothing([](TensorDict td) { return td; });
    REQUIRE_THROWS_WITH(writes_nothing.value_estimate(trajectory(x)), Contains("did not write \"state_value\""));
    REQUIRE_THROWS_AS(TD0Estimator(value_net, ValueEstimatorOptions().gamma(1.5)), c10::ValueError);
    REQUIRE_THROWS_AS(GAE(value_net, ValueEstimatorOptions().lmbda(-0.1)), c10::ValueError);
  }
  SECTION("differentiable=false runs the network without gradient") {
    auto w = torch::ones({1}, torch::requires_grad());
    auto net = [&](TensorDict td) {
      td.set("state_value", td.get("observation").sum(-1, true) * w);
      return td;
    };
    TD0Estimator frozen(net);
    CHECK_FALSE(frozen.value_estimate(trajectory(x)).requires_grad());
    TD0Estimator diff(net, ValueEstimatorOptions().differentiable(true));
    CHECK(diff.value_estimate(trajectory(x)).requires_grad());
  }
}

TEST_CASE("Functional estimators: bad discounts, dtypes and empty time dims are clear errors", "[value]") {
  Data x;
  REQUIRE_THROWS_WITH(td1_return_estimate(5.0, x.next_value, x.reward, x.done, x.terminated),
                      Contains("gamma must be in [0, 1], got 5"));
  REQUIRE_THROWS_AS(td1_return_estimate(NAN, x.next_value, x.reward, x.done, x.terminated), c10::ValueError);
  REQUIRE_THROWS_WITH(td_lambda_return_estimate(0.9, 1.5, x.next_value, x.reward, x.done, x.terminated),
                      Contains("lmbda must be in [0, 1]"));
  REQUIRE_THROWS_WITH(generalized_advantage_estimate(-0.1, 0.9, x.value, x.next_value, x.reward, x.done, x.terminated),
                      Contains("gamma must be in [0, 1]"));
  REQUIRE_THROWS_WITH(td0_return_estimate(1.01, x.next_value, x.reward, x.terminated), Contains("gamma"));
  // A float32 reward against float64 values: no silent promotion.
  REQUIRE_THROWS_AS(td1_return_estimate(0.9, x.next_value, x.reward.to(torch::kFloat32), x.done, x.terminated),
                    c10::TypeError);
  REQUIRE_THROWS_WITH(td0_return_estimate(0.9, x.next_value, x.reward.to(torch::kFloat32), x.terminated),
                      Contains("reward is float32 but next_state_value is float64"));
  REQUIRE_THROWS_AS(td0_return_estimate(0.9, x.next_value.to(torch::kLong), x.reward.to(torch::kLong), x.terminated),
                    c10::TypeError);
  // A time dim of length 0.
  auto empty = [](const torch::Tensor& t) { return t.narrow(1, 0, 0); };
  REQUIRE_THROWS_WITH(td1_return_estimate(0.9, empty(x.next_value), empty(x.reward), empty(x.done), empty(x.terminated)),
                      Contains("the time dim (dim -2) is empty"));
}

}  // namespace rlobj_test_objectives_value_test
