#include <rlobj/envs/pendulum.h>

#include <cmath>
#include <limits>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_envs_pendulum_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using rlobj::envs::Pendulum;
using rlobj::envs::PendulumOptions;

namespace {

// gym's Pendulum-v1 (gym/envs/classic_control/pendulum.py), re-derived in double precision.
struct GymPendulum {
  double th, thdot;
  static double angle_normalize(double x) {
    const double m = std::fmod(x + M_PI, 2 * M_PI);
    return (m < 0 ? m + 2 * M_PI : m) - M_PI;  // Python's floor modulo
  }
  // Returns the reward; updates the state.
  double step(double u) {
    const double g = 10.0, m = 1.0, l = 1.0, dt = 0.05;
    u = std::min(std::max(u, -2.0), 2.0);
    const double costs = std::pow(angle_normalize(th), 2) + 0.1 * thdot * thdot + 0.001 * (u * u);
    double newthdot = thdot + (3 * g / (2 * l) * std::sin(th) + 3.0 / (m * l * l) * u) * dt;
    newthdot = std::min(std::max(newthdot, -8.0), 8.0);
    th = th + newthdot * dt;
    thdot = newthdot;
    return -costs;
  }
};

// Starting states and action schedules that exercise the clips and the wrap-around.
const std::vector<double> kTh0 = {0.5, 3.0, -3.1, 10.0};
const std::vector<double> kThdot0 = {0.0, 7.5, -1.0, 2.0};
double action_at(int env, int t) {
  switch (env) {
    case 0: return 3.0 * std::sin(0.1 * t);  // |u| > 2, clipped
    case 1: return 2.0;                      // spins up to the 8 rad/s clip
    case 2: return -2.5;                     // spins the other way
    default: return 0.7 * std::cos(0.3 * t);
  }
}

TensorDict start(Pendulum& env) {
  TensorDict init({4});
  init.set("th", torch::tensor(kTh0, torch::kFloat64).view({4, 1}));
  init.set("thdot", torch::tensor(kThdot0, torch::kFloat64).view({4, 1}));
  return env.reset(init);
}

// Whole 200-step trajectories from the same start and the same actions: the env keeps its
// state in float64 like gym, so only the float32 outputs' rounding separates the two.
void check_against_gym(torch::Dtype dtype, bool fused, double tol) {
  Pendulum env(PendulumOptions().batch_size({4}).dtype(dtype).fused_cpu_step(fused));
  TensorDict td = start(env);
  std::vector<GymPendulum> ref;
  for (int i = 0; i < 4; ++i) ref.push_back({kTh0[i], kThdot0[i]});
  bool saw_speed_clip = false, saw_wrap = false;
  for (int t = 0; t < 200; ++t) {
    std::vector<double> u(4), r(4);
    for (int i = 0; i < 4; ++i) u[i] = action_at(i, t);
    auto action = torch::tensor(u, torch::kFloat64).view({4, 1}).to(dtype);
    td.set("action", action);
    env.step(td);
    // gym receives the action the policy produced (float32 in a float32 env).
    auto sent = rlobj_test::values(action);
    for (int i = 0; i < 4; ++i) r[i] = ref[i].step(sent[i]);
    auto next = td.get_sub("next");
    auto reward = rlobj_test::values(next.get("reward"));
    auto obs = rlobj_test::values(next.get("observation"));
    auto th = rlobj_test::values(next.get("th"));
    auto thdot = rlobj_test::values(next.get("thdot"));
    for (int i = 0; i < 4; ++i) {
      INFO("env " << i << " step " << t);
      CHECK(reward[i] == Approx(r[i]).margin(tol).epsilon(0));
      CHECK(th[i] == Approx(ref[i].th).margin(tol).epsilon(0));
      CHECK(thdot[i] == Approx(ref[i].thdot).margin(tol).epsilon(0));
      CHECK(obs[3 * i] == Approx(std::cos(ref[i].th)).margin(tol).epsilon(0));
      CHECK(obs[3 * i + 1] == Approx(std::sin(ref[i].th)).margin(tol).epsilon(0));
      CHECK(obs[3 * i + 2] == Approx(ref[i].thdot).margin(tol).epsilon(0));
      saw_speed_clip |= std::abs(ref[i].thdot) == 8.0;
      saw_wrap |= std::abs(ref[i].th) > M_PI;
    }
    td = rlobj::envs::step_mdp(td);
  }
  CHECK(saw_speed_clip);
  CHECK(saw_wrap);
}

}  // namespace

TEST_CASE("Pendulum: float64 trajectories equal gym's formulas (1e-12)", "[envs][pendulum]") {
  for (bool fused : {true, false}) {
    INFO("fused_cpu_step=" << fused);
    check_against_gym(torch::kFloat64, fused, 1e-12);
  }
}

TEST_CASE("Pendulum: float32 trajectories equal gym's formulas (1e-5)", "[envs][pendulum]") {
  for (bool fused : {true, false}) {
    INFO("fused_cpu_step=" << fused);
    check_against_gym(torch::kFloat32, fused, 1e-5);
  }
}

TEST_CASE("Pendulum: a step count at INT64_MAX saturates and truncates instead of wrapping", "[envs][pendulum][validation]") {
  Pendulum env(PendulumOptions().batch_size({2}).seed(0));
  rlobj_test::check_step_count_saturates(env, torch::zeros({2, 1}));
}

TEST_CASE("Pendulum: fused and tensor-op steps agree", "[envs][pendulum]") {
  CHECK(PendulumOptions().fused_cpu_max_batch() == 512);  // above it, vectorized ops are faster
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    Pendulum a(PendulumOptions().batch_size({64}).dtype(dtype).seed(3));
    Pendulum b(PendulumOptions().batch_size({64}).dtype(dtype).seed(3).fused_cpu_step(false));
    auto ta = a.reset(), tb = b.reset();
    for (int t = 0; t < 50; ++t) {
      auto act = torch::linspace(-3, 3, 64, torch::TensorOptions().dtype(dtype)).view({64, 1});
      ta.set("action", act);
      tb.set("action", act.clone());
      a.step(ta);
      b.step(tb);
      // Same float64 arithmetic: only libm vs ATen's sin/cos/fmod can differ (an ulp or so).
      CHECK(torch::allclose(ta.get({"next", "th"}), tb.get({"next", "th"}), 0, 1e-12));
      CHECK(torch::allclose(ta.get({"next", "thdot"}), tb.get({"next", "thdot"}), 0, 1e-12));
      const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-6;
      CHECK(torch::allclose(ta.get({"next", "observation"}), tb.get({"next", "observation"}), 0, tol));
      CHECK(torch::allclose(ta.get({"next", "reward"}), tb.get({"next", "reward"}), 0, tol));
      ta = rlobj::envs::step_mdp(ta);
      tb = rlobj::envs::step_mdp(tb);
    }
  }
}

TEST_CASE("Pendulum: batches above fused_cpu_max_batch use the tensor-op step", "[envs][pendulum]") {
  // Same results whichever path the batch size selects.
  Pendulum small_limit(PendulumOptions().batch_size({8}).seed(2).fused_cpu_max_batch(4));
  Pendulum fused(PendulumOptions().batch_size({8}).seed(2));
  auto a = small_limit.reset(), b = fused.reset();
  a.set("action", torch::full({8, 1}, 1.5f));
  b.set("action", torch::full({8, 1}, 1.5f));
  small_limit.step(a);
  fused.step(b);
  CHECK(torch::allclose(a.get({"next", "th"}), b.get({"next", "th"}), 0, 1e-12));
  CHECK(torch::allclose(a.get({"next", "reward"}), b.get({"next", "reward"}), 0, 1e-6));
}

TEST_CASE("Pendulum: reset distribution and seeding", "[envs][pendulum]") {
  Pendulum env(PendulumOptions().batch_size({20000}).seed(123));
  auto td = env.reset();
  auto th = td.get("th");
  auto thdot = td.get("thdot");
  CHECK(th.min().item<double>() >= -M_PI);
  CHECK(th.max().item<double>() <= M_PI);
  CHECK(thdot.min().item<double>() >= -1.0);
  CHECK(thdot.max().item<double>() <= 1.0);
  // Uniform: mean 0, variance (b - a)^2 / 12; 20000 samples give ~1% precision.
  CHECK(th.mean().item<double>() == Approx(0.0).margin(0.05));
  CHECK(th.var().item<double>() == Approx(M_PI * M_PI / 3).epsilon(0.03));
  CHECK(thdot.var().item<double>() == Approx(1.0 / 3).epsilon(0.03));
  CHECK(th.scalar_type() == torch::kFloat64);
  CHECK(td.get("observation").scalar_type() == torch::kFloat32);
  CHECK(torch::allclose(td.get("observation"), torch::cat({th.cos(), th.sin(), thdot}, -1).to(torch::kFloat32)));
  CHECK_FALSE(td.get("done").any().item<bool>());
  CHECK(td.get("step_count").sum().item<int64_t>() == 0);

  Pendulum same(PendulumOptions().batch_size({20000}).seed(123));
  CHECK(torch::equal(same.reset().get("th"), th));
  Pendulum other(PendulumOptions().batch_size({20000}).seed(124));
  CHECK_FALSE(torch::equal(other.reset().get("th"), th));
  // float32 and float64 environments with one seed start from the same states.
  Pendulum f64(PendulumOptions().batch_size({20000}).seed(123).dtype(torch::kFloat64));
  CHECK(torch::equal(f64.reset().get("th"), th));
  // set_seed restarts the sequence.
  env.set_seed(123);
  CHECK(torch::equal(env.reset().get("th"), th));
}

TEST_CASE("Pendulum: same seed, same trajectory", "[envs][pendulum]") {
  auto run = [](uint64_t seed) {
    Pendulum env(PendulumOptions().batch_size({3}).seed(seed));
    return env.rollout(50).get({"next", "observation"});  // random actions from the env generator
  };
  CHECK(torch::equal(run(5), run(5)));
  CHECK_FALSE(torch::equal(run(5), run(6)));
}

TEST_CASE("Pendulum: specs", "[envs][pendulum]") {
  Pendulum env(PendulumOptions().batch_size({8}));
  CHECK(env.observation_spec().at("observation").shape().back() == 3);
  CHECK(env.action_spec().shape() == std::vector<int64_t>{8, 1});
  CHECK(env.reward_spec().shape() == std::vector<int64_t>{8, 1});
  CHECK(env.done_spec().at("truncated").dtype() == torch::kBool);
  auto td = env.reset();
  CHECK(env.observation_spec().is_in(td));
  CHECK(env.done_spec().is_in(td));
  env.rand_action(td);
  CHECK(env.action_spec().is_in(td.get("action")));
  env.step(td);
  CHECK(env.observation_spec().is_in(td.get_sub("next")));
  CHECK(env.reward_spec().is_in(td.get({"next", "reward"})));
  Pendulum single;
  CHECK(single.batch_size().empty());
  CHECK(single.action_spec().shape() == std::vector<int64_t>{1});
  CHECK(single.reset().get("observation").sizes() == torch::IntArrayRef({3}));
}

TEST_CASE("Pendulum: truncation at max_episode_steps", "[envs][pendulum]") {
  Pendulum env(PendulumOptions().batch_size({2}).max_episode_steps(200));
  auto td = env.reset();
  for (int t = 1; t <= 200; ++t) {
    env.rand_action(td);
    env.step(td);
    const bool last = t == 200;
    CHECK(td.get({"next", "truncated"}).all().item<bool>() == last);
    CHECK(td.get({"next", "done"}).all().item<bool>() == last);
    CHECK_FALSE(td.get({"next", "terminated"}).any().item<bool>());
    CHECK(td.get({"next", "step_count"})[0].item<int64_t>() == t);
    td = rlobj::envs::step_mdp(td);
  }
}

TEST_CASE("Pendulum: bad actions and states are clear errors", "[envs][pendulum]") {
  Pendulum env(PendulumOptions().batch_size({4}));
  auto td = env.reset();
  REQUIRE_THROWS_WITH(env.step(td.copy()), Contains("no \"action\""));
  td.set("action", torch::zeros({4, 2}));
  REQUIRE_THROWS_WITH(env.step(td.copy()), Contains("\"action\" has shape [4, 2], expected [4, 1]"));
  td.set("action", torch::zeros({4, 1}, torch::kFloat64));
  REQUIRE_THROWS_AS(env.step(td.copy()), c10::TypeError);
  td.set("action", torch::tensor({0.0f, NAN, 0.0f, 0.0f}).view({4, 1}));
  REQUIRE_THROWS_WITH(env.step(td.copy()), Contains("NaN"));
  Pendulum slow(PendulumOptions().batch_size({4}).fused_cpu_step(false));
  REQUIRE_THROWS_WITH(slow.step(td.copy()), Contains("NaN"));
  td.set("action", torch::zeros({4, 1}));
  REQUIRE_THROWS_WITH(env.step(td.exclude({"th"})), Contains("no \"th\""));
  REQUIRE_THROWS_WITH(env.step(TensorDict({3})), Contains("batch_size [3]"));
  auto bad_state = td.copy();
  bad_state.set("thdot", torch::zeros({4, 1}, torch::kFloat32));
  REQUIRE_THROWS_WITH(env.step(bad_state), Contains("\"thdot\" must be float64 of shape [4, 1]"));
  REQUIRE_THROWS_AS(Pendulum(PendulumOptions().dtype(torch::kInt32)), c10::ValueError);
  REQUIRE_THROWS_AS(Pendulum(PendulumOptions().max_episode_steps(-1)), c10::ValueError);
  auto wrong_mask = env.reset();
  wrong_mask.set("_reset", torch::ones({4, 1}));
  REQUIRE_THROWS_WITH(env.reset(wrong_mask), Contains("\"_reset\" must be a bool tensor"));
}

TEST_CASE("Pendulum: partial reset keeps the other pendulums", "[envs][pendulum]") {
  Pendulum env(PendulumOptions().batch_size({3}).seed(9));
  auto td = env.reset();
  for (int t = 0; t < 5; ++t) {
    env.rand_action(td);
    td = rlobj::envs::step_mdp(env.step(td));
  }
  td.set("_reset", torch::tensor({false, true, false}).view({3, 1}));
  td.set("policy_state", torch::ones({3, 4}));
  auto after = env.reset(td);
  auto sc = rlobj_test::ints(after.get("step_count"));
  CHECK(sc == std::vector<int64_t>{5, 0, 5});
  CHECK(after.get("th")[0].item<float>() == td.get("th")[0].item<float>());
  CHECK(after.get("th")[1].item<float>() != td.get("th")[1].item<float>());
  CHECK_FALSE(after.contains("_reset"));
  CHECK(rlobj_test::ints(after.get("is_init")) == std::vector<int64_t>{0, 1, 0});
  CHECK(after.contains("policy_state"));  // entries the env does not own are carried over
}

TEST_CASE("Pendulum: bad start states and options are clear errors", "[envs][pendulum]") {
  auto env = rlobj::envs::Pendulum(rlobj::envs::PendulumOptions().batch_size({2}));
  auto state = [](double th, double thdot) {
    return rlobj::TensorDict({{"th", torch::full({2, 1}, th, torch::kFloat64)},
                              {"thdot", torch::full({2, 1}, thdot, torch::kFloat64)}},
                             {2});
  };
  CHECK(env.reset(state(1.0, 8.0)).get("thdot").max().item<double>() == 8.0);  // the bound itself is fine
  REQUIRE_THROWS_AS(env.reset(state(NAN, 0.0)), c10::ValueError);
  REQUIRE_THROWS_WITH(env.reset(state(INFINITY, 0.0)), Contains("\"th\" must be finite"));
  REQUIRE_THROWS_WITH(env.reset(state(0.0, 8.5)), Contains("\"thdot\" must be in [-max_speed, max_speed]"));
  REQUIRE_THROWS_WITH(env.reset(state(0.0, NAN)), Contains("\"thdot\" must be in"));
  REQUIRE_THROWS_WITH(env.reset(state(0.0, 0.0).exclude({"thdot"})), Contains("got \"th\" without \"thdot\""));
  REQUIRE_THROWS_WITH(env.reset(state(0.0, 0.0).exclude({"th"})), Contains("got \"thdot\" without \"th\""));
  REQUIRE_THROWS_WITH(rlobj::envs::Pendulum(rlobj::envs::PendulumOptions().g(NAN)), Contains("g must be finite"));
  REQUIRE_THROWS_WITH(rlobj::envs::Pendulum(rlobj::envs::PendulumOptions().dt(INFINITY)),
                      Contains("dt must be finite and positive"));
  REQUIRE_THROWS_WITH(rlobj::envs::Pendulum(rlobj::envs::PendulumOptions().m(-1)), Contains("m must be finite"));
}

}  // namespace rlobj_test_envs_pendulum_test
