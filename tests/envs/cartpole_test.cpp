#include <rlobj/envs/cartpole.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_envs_cartpole_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using rlobj::envs::CartPole;
using rlobj::envs::CartPoleOptions;

namespace {

// Rounds `v` to double in memory: a product passed through it cannot be fused with the sum it
// feeds, whatever flags this file is built with (the env uses another mechanism; this
// re-derivation must not share it).
double rounded(double v) {
  volatile double r = v;
  return r;
}

// Gymnasium's CartPoleEnv.step (classic_control/cartpole.py) plus TimeLimit(500), re-derived
// from the Python source in plain double precision: operation by operation in gym's order,
// glibc sin/cos, no FMA.
struct GymCartPole {
  double x, x_dot, theta, theta_dot;
  int steps_beyond_terminated = -1;  // None
  int elapsed = 0;
  bool terminated = false, truncated = false;

  // Returns the reward.
  double step(int action) {
    const double gravity = 9.8, masscart = 1.0, masspole = 0.1;
    const double total_mass = masspole + masscart;
    const double length = 0.5;
    const double polemass_length = masspole * length;
    const double force_mag = 10.0, tau = 0.02;
    const double theta_threshold_radians = 12 * 2 * M_PI / 360;
    const double x_threshold = 2.4;
    const double force = action == 1 ? force_mag : -force_mag;
    const double costheta = std::cos(theta);
    const double sintheta = std::sin(theta);
    const double temp = (force + rounded(rounded(polemass_length * rounded(theta_dot * theta_dot)) * sintheta)) /
                        total_mass;
    const double thetaacc = (rounded(gravity * sintheta) - rounded(costheta * temp)) /
                            (length * (4.0 / 3.0 - rounded(masspole * rounded(costheta * costheta)) / total_mass));
    const double xacc = temp - rounded(rounded(polemass_length * thetaacc) * costheta) / total_mass;
    x = x + rounded(tau * x_dot);
    x_dot = x_dot + rounded(tau * xacc);
    theta = theta + rounded(tau * theta_dot);
    theta_dot = theta_dot + rounded(tau * thetaacc);
    terminated = x < -x_threshold || x > x_threshold || theta < -theta_threshold_radians ||
                 theta > theta_threshold_radians;
    double reward;
    if (!terminated) {
      reward = 1.0;
    } else if (steps_beyond_terminated < 0) {
      steps_beyond_terminated = 0;
      reward = 1.0;
    } else {
      steps_beyond_terminated += 1;
      reward = 0.0;
    }
    elapsed += 1;
    truncated = elapsed >= 500;
    return reward;
  }
};

// A bang-bang controller that balances the pole for 500 steps from gym's start states.
int balance(double x, double x_dot, double theta, double theta_dot) {
  return rounded(rounded(rounded(theta * 10) + theta_dot) + rounded(0.1 * x)) + rounded(0.5 * x_dot) > 0 ? 1 : 0;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

std::vector<double> doubles(const torch::Tensor& t) {
  auto c = t.contiguous();
  REQUIRE(c.scalar_type() == torch::kFloat64);
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}
std::vector<float> floats(const torch::Tensor& t) {
  auto c = t.contiguous();
  REQUIRE(c.scalar_type() == torch::kFloat32);
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TensorDict with_state(CartPole& env, const std::vector<std::vector<double>>& states) {
  const int64_t n = static_cast<int64_t>(states.size());
  auto t = torch::empty({n, 4}, torch::kFloat64);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < 4; ++j) t[i][j] = states[i][j];
  }
  TensorDict init({n});
  init.set("state", t);
  return env.reset(init);
}

torch::Tensor one_hot(const std::vector<int>& actions) {
  auto index = torch::tensor(std::vector<int64_t>(actions.begin(), actions.end()));
  return torch::one_hot(index, 2);
}

// Steps one cart (batch [1]) from `state0` with `policy(state)`, for `steps` steps.
template <typename Policy>
std::vector<double> run_one(std::vector<double> state0, int steps, Policy policy, bool fused = true) {
  CartPole env(CartPoleOptions().batch_size({1}).fused_cpu_step(fused).max_episode_steps(0));
  TensorDict td = with_state(env, {state0});
  for (int t = 0; t < steps; ++t) {
    auto s = doubles(td.get("state"));
    td.set("action", one_hot({policy(s)}));
    td = rlobj::envs::step_mdp(env.step(td));
  }
  return doubles(td.get("state"));
}

}  // namespace

TEST_CASE("CartPole: golden trajectories computed by CPython from gym's source", "[envs][cartpole]") {
  // Computed with CPython 3.11 (IEEE double, glibc's math.sin/math.cos) from gym's step as
  // written in cartpole.py, state0 = (0.01, -0.02, 0.03, 0.04); printed with float.hex.
  const std::vector<double> state0 = {0.01, -0.02, 0.03, 0.04};
  auto policy = [](const std::vector<double>& s) { return balance(s[0], s[1], s[2], s[3]); };
  const std::vector<double> after_500 = {-0x1.9b538bbfe23c8p-6, -0x1.38b97540b9f80p-6, 0x1.a11a48d79a980p-10,
                                         0x1.4521372c61140p-6};
  const std::vector<double> right_10 = {0x1.73adf2e82900bp-3, 0x1.eedd4eced24a2p+0, -0x1.c9dea38049626p-3,
                                        -0x1.7df66c641a140p+1};
  const std::vector<double> right_15 = {0x1.a7a03031712f3p-2, 0x1.72d28e22e2d5ep+1, -0x1.305a19ddca033p-1,
                                        -0x1.36069760f2887p+2};
  auto fused_500 = run_one(state0, 500, policy);
  auto fused_r10 = run_one(state0, 10, [](const std::vector<double>&) { return 1; });
  auto fused_r15 = run_one(state0, 15, [](const std::vector<double>&) { return 1; });
  for (int j = 0; j < 4; ++j) {
    INFO("component " << j);
    CHECK(same_bits(fused_500[j], after_500[j]));
    CHECK(same_bits(fused_r10[j], right_10[j]));
    CHECK(same_bits(fused_r15[j], right_15[j]));
  }
  // The tensor-op path (ATen's sin/cos) stays within a few ulps over a short horizon.
  auto ops_r15 = run_one(state0, 15, [](const std::vector<double>&) { return 1; }, /*fused=*/false);
  for (int j = 0; j < 4; ++j) CHECK(ops_r15[j] == Approx(right_15[j]).epsilon(1e-13));
}

TEST_CASE("CartPole: bit-exact to gym over long trajectories with partial resets", "[envs][cartpole]") {
  // Six carts, each with its own policy, for 1500 steps; done carts are reset in place
  // (step_and_maybe_reset), the others must go on untouched. Every entry of every step is
  // compared bit for bit with the re-derivation.
  constexpr int kCarts = 6;
  constexpr int kSteps = 1500;
  CartPole env(CartPoleOptions().batch_size({kCarts}).seed(11));
  // Start states as the reference cases impose them, some far from gym's reset range.
  const std::vector<std::vector<double>> starts = {{0.01, -0.02, 0.03, 0.04},  {0.0, 0.0, 0.0, 0.0},
                                                   {-0.04, 0.03, -0.01, 0.02}, {2.3, 0.5, 0.0, 0.0},
                                                   {0.0, 0.0, 0.2, 0.1},       {-1.0, -2.0, -0.1, 0.5}};
  TensorDict td = with_state(env, starts);
  std::vector<GymCartPole> ref;
  for (const auto& s : starts) ref.push_back({s[0], s[1], s[2], s[3]});
  std::mt19937 rng(7);
  int terminations = 0, truncations = 0, resets = 0;
  for (int t = 0; t < kSteps; ++t) {
    std::vector<int> actions(kCarts);
    auto obs = floats(td.get("observation"));
    for (int i = 0; i < kCarts; ++i) {
      const GymCartPole& r = ref[i];
      switch (i) {
        case 0: actions[i] = balance(r.x, r.x_dot, r.theta, r.theta_dot); break;  // truncates
        case 1: actions[i] = obs[4 * i + 2] > 0 ? 1 : 0; break;  // from the float32 observation
        case 2: actions[i] = static_cast<int>(rng() % 2); break;
        case 3: actions[i] = 1; break;
        case 4: actions[i] = t % 2; break;
        default: actions[i] = (t / 7) % 2; break;
      }
    }
    td.set("action", one_hot(actions));
    auto stepped = env.step_and_maybe_reset(td);
    TensorDict next = stepped.first.get_sub("next");
    std::vector<double> rewards(kCarts);
    for (int i = 0; i < kCarts; ++i) rewards[i] = ref[i].step(actions[i]);
    const auto state = doubles(next.get("state"));
    const auto observation = floats(next.get("observation"));
    const auto reward = floats(next.get("reward"));
    const auto terminated = rlobj_test::ints(next.get("terminated"));
    const auto truncated = rlobj_test::ints(next.get("truncated"));
    const auto done = rlobj_test::ints(next.get("done"));
    const auto step_count = rlobj_test::ints(next.get("step_count"));
    const auto beyond = rlobj_test::ints(next.get("steps_beyond_terminated"));
    for (int i = 0; i < kCarts; ++i) {
      INFO("cart " << i << " step " << t);
      const GymCartPole& r = ref[i];
      const double want[4] = {r.x, r.x_dot, r.theta, r.theta_dot};
      for (int j = 0; j < 4; ++j) {
        REQUIRE(same_bits(state[4 * i + j], want[j]));
        REQUIRE(same_bits(observation[4 * i + j], static_cast<float>(want[j])));
      }
      REQUIRE(reward[i] == static_cast<float>(rewards[i]));
      REQUIRE(terminated[i] == r.terminated);
      REQUIRE(truncated[i] == r.truncated);
      REQUIRE(done[i] == (r.terminated || r.truncated));
      REQUIRE(step_count[i] == r.elapsed);
      REQUIRE(beyond[i] == r.steps_beyond_terminated);
    }
    td = stepped.second;
    // Carts that were done restarted from a state drawn by the env: the reference takes it.
    const auto root_state = doubles(td.get("state"));
    const auto is_init = rlobj_test::ints(td.get("is_init"));
    for (int i = 0; i < kCarts; ++i) {
      terminations += ref[i].terminated;
      truncations += ref[i].truncated;
      if (done[i] == 0) {
        REQUIRE(is_init[i] == 0);
        for (int j = 0; j < 4; ++j) REQUIRE(same_bits(root_state[4 * i + j], state[4 * i + j]));
        continue;
      }
      ++resets;
      REQUIRE(is_init[i] == 1);
      ref[i] = GymCartPole{root_state[4 * i], root_state[4 * i + 1], root_state[4 * i + 2], root_state[4 * i + 3]};
      for (int j = 0; j < 4; ++j) {
        REQUIRE(std::abs(root_state[4 * i + j]) <= 0.05);
      }
    }
    std::vector<int64_t> elapsed;
    for (const auto& r : ref) elapsed.push_back(r.elapsed);
    REQUIRE(rlobj_test::ints(td.get("step_count")) == elapsed);
  }
  CHECK(truncations >= 2);  // cart 0 balances through 500 steps, twice at least
  CHECK(terminations > 50);
  CHECK(resets >= terminations);
}

TEST_CASE("CartPole: thresholds are strict, on the new float64 state", "[envs][cartpole]") {
  const double thr = 12 * 2 * M_PI / 360;
  CHECK(CartPole::kThetaThresholdRadians == 0.20943951023931953);
  CHECK(same_bits(CartPole::kThetaThresholdRadians, thr));
  // With zero velocities a step leaves x and theta exactly where they are; the last four
  // states reach a threshold exactly by integration (x + 0.02 * x_dot == 2.4 in double, as
  // CPython computes it).
  const double th0 = thr - 0.02 * 0.5;
  REQUIRE(th0 + rounded(0.02 * 0.5) == thr);
  const std::vector<std::vector<double>> starts = {
      {2.4, 0.0, 0.0, 0.0},
      {-2.4, 0.0, 0.0, 0.0},
      {0.0, 0.0, thr, 0.0},
      {0.0, 0.0, -thr, 0.0},
      {std::nextafter(2.4, 3.0), 0.0, 0.0, 0.0},
      {std::nextafter(-2.4, -3.0), 0.0, 0.0, 0.0},
      {0.0, 0.0, std::nextafter(thr, 1.0), 0.0},
      {0.0, 0.0, std::nextafter(-thr, -1.0), 0.0},
      {2.38, 1.0, 0.0, 0.0},
      {-2.39, -0.5, 0.0, 0.0},
      {0.0, 0.0, th0, 0.5},
      {0.0, 0.0, -th0, -0.5},
  };
  for (bool fused : {true, false}) {
    INFO("fused_cpu_step=" << fused);
    CartPole env(CartPoleOptions().batch_size({12}).fused_cpu_step(fused));
    TensorDict td = with_state(env, starts);
    td.set("action", one_hot({0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0}));
    env.step(td);
    auto x = doubles(td.get({"next", "state"}).select(-1, 0));
    auto theta = doubles(td.get({"next", "state"}).select(-1, 2));
    CHECK(x[0] == 2.4);
    CHECK(x[1] == -2.4);
    CHECK(theta[2] == thr);
    CHECK(theta[3] == -thr);
    CHECK(x[8] == 2.4);
    CHECK(x[9] == -2.4);
    CHECK(theta[10] == thr);
    CHECK(theta[11] == -thr);
    auto terminated = rlobj_test::ints(td.get({"next", "terminated"}));
    CHECK(terminated == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0});
    CHECK(rlobj_test::ints(td.get({"next", "done"})) == terminated);
    auto reward = rlobj_test::values(td.get({"next", "reward"}));
    CHECK(reward == std::vector<double>(12, 1.0));  // the terminating step is rewarded too
  }
  // A start state outside the thresholds does not terminate by itself: only the new state counts.
  CartPole env(CartPoleOptions().batch_size({1}));
  TensorDict td = with_state(env, {{2.5, -10.0, 0.0, 0.0}});
  CHECK_FALSE(td.get("terminated").item<bool>());
  td.set("action", one_hot({0}));
  env.step(td);
  CHECK(td.get({"next", "state"})[0][0].item<double>() < 2.4);
  CHECK_FALSE(td.get({"next", "terminated"}).item<bool>());
}

TEST_CASE("CartPole: rewards after termination, as gym's steps_beyond_terminated", "[envs][cartpole]") {
  for (bool fused : {true, false}) {
    INFO("fused_cpu_step=" << fused);
    // Leaves through x = 2.4 on the first step, comes back while pushed left, then leaves again.
    CartPole env(CartPoleOptions().batch_size({1}).fused_cpu_step(fused));
    TensorDict td = with_state(env, {{2.399, 0.2, 0.0, 0.0}});
    CHECK(td.get("steps_beyond_terminated").item<int64_t>() == -1);
    GymCartPole ref{2.399, 0.2, 0.0, 0.0};
    std::vector<int64_t> terminated_seen, beyond_seen;
    std::vector<double> rewards_seen;
    for (int t = 0; t < 40; ++t) {
      const int a = t < 3 ? 0 : 1;
      td.set("action", one_hot({a}));
      env.step(td);
      const double r = ref.step(a);
      TensorDict next = td.get_sub("next");
      REQUIRE(next.get("reward").item<float>() == static_cast<float>(r));
      REQUIRE(next.get("terminated").item<bool>() == ref.terminated);
      REQUIRE(next.get("done").item<bool>() == ref.terminated);
      REQUIRE(next.get("steps_beyond_terminated").item<int64_t>() == ref.steps_beyond_terminated);
      REQUIRE(same_bits(next.get("state")[0][0].item<double>(), ref.x));
      terminated_seen.push_back(ref.terminated);
      beyond_seen.push_back(ref.steps_beyond_terminated);
      rewards_seen.push_back(r);
      td = rlobj::envs::step_mdp(td);
    }
    // Step 0 terminates (reward 1), step 1 is still out (reward 0), then the cart comes back
    // (terminated false, reward 1), leaves again (reward 0: gym remembers the first fall).
    CHECK(terminated_seen[0] == 1);
    CHECK(rewards_seen[0] == 1.0);
    CHECK(beyond_seen[0] == 0);
    CHECK(terminated_seen[1] == 1);
    CHECK(rewards_seen[1] == 0.0);
    CHECK(beyond_seen[1] == 1);
    auto back = std::find(terminated_seen.begin(), terminated_seen.end(), 0);
    REQUIRE(back != terminated_seen.end());
    const auto k = back - terminated_seen.begin();
    CHECK(rewards_seen[k] == 1.0);
    auto again = std::find(back, terminated_seen.end(), 1);
    REQUIRE(again != terminated_seen.end());
    CHECK(rewards_seen[again - terminated_seen.begin()] == 0.0);
    CHECK(beyond_seen.back() > 1);
  }
  // Sutton and Barto's reward: 0 per step, -1 on the terminating step and after it.
  CartPole sb(CartPoleOptions().batch_size({1}).sutton_barto_reward(true));
  TensorDict td = with_state(sb, {{2.39, 1.0, 0.0, 0.0}});
  std::vector<double> rewards;
  for (int t = 0; t < 3; ++t) {
    td.set("action", one_hot({1}));
    sb.step(td);
    rewards.push_back(td.get({"next", "reward"}).item<double>());
    td = rlobj::envs::step_mdp(td);
  }
  CHECK(rewards == std::vector<double>{-1.0, -1.0, -1.0});
  TensorDict calm = with_state(sb, {{0.0, 0.0, 0.0, 0.0}});
  calm.set("action", one_hot({1}));
  CHECK(sb.step(calm).get({"next", "reward"}).item<double>() == 0.0);
}

TEST_CASE("CartPole: truncation at 500 steps, independent of termination", "[envs][cartpole]") {
  CHECK(CartPoleOptions().max_episode_steps() == 500);
  for (bool fused : {true, false}) {
    INFO("fused_cpu_step=" << fused);
    // Cart 0 balances; cart 1 falls at once and is stepped on, pushed the way the pole falls
    // (gym keeps integrating; it never comes back: x reaches -458).
    CartPole env(CartPoleOptions().batch_size({2}).fused_cpu_step(fused));
    TensorDict td = with_state(env, {{0.01, -0.02, 0.03, 0.04}, {0.0, 0.0, 0.2, 2.0}});
    for (int t = 1; t <= 503; ++t) {
      auto s = doubles(td.get("state"));
      td.set("action", one_hot({balance(s[0], s[1], s[2], s[3]), 0}));
      env.step(td);
      TensorDict next = td.get_sub("next");
      INFO("step " << t);
      const auto truncated = rlobj_test::ints(next.get("truncated"));
      const auto terminated = rlobj_test::ints(next.get("terminated"));
      const auto done = rlobj_test::ints(next.get("done"));
      REQUIRE(truncated == std::vector<int64_t>(2, t >= 500));  // and after: TimeLimit does not stop
      REQUIRE(terminated[0] == 0);
      REQUIRE(done[0] == (t >= 500));
      REQUIRE(done[1] == 1);
      REQUIRE(rlobj_test::ints(next.get("step_count")) == std::vector<int64_t>(2, t));
      if (t == 500) {
        CHECK(terminated[1] == 1);  // both flags on the same step
        CHECK(rlobj_test::values(next.get("reward")) == std::vector<double>{1.0, 0.0});
      }
      td = rlobj::envs::step_mdp(td);
    }
  }
  // 0: no limit.
  CartPole unlimited(CartPoleOptions().batch_size({2}).max_episode_steps(0));
  TensorDict td = unlimited.reset();
  for (int t = 0; t < 600; ++t) {
    unlimited.rand_action(td);
    td = rlobj::envs::step_mdp(unlimited.step(td));
    REQUIRE_FALSE(td.get("truncated").any().item<bool>());
  }
  CHECK(td.get("step_count")[0].item<int64_t>() == 600);
  // Another limit.
  CartPole short_env(CartPoleOptions().max_episode_steps(3));
  TensorDict one = short_env.reset();
  for (int t = 1; t <= 3; ++t) {
    one.set("action", one_hot({t % 2}).squeeze(0));
    one = rlobj::envs::step_mdp(short_env.step(one));
    CHECK(one.get("truncated").item<bool>() == (t == 3));
  }
}

TEST_CASE("CartPole: reset distribution, bounds and seeding", "[envs][cartpole]") {
  CartPole env(CartPoleOptions().batch_size({20000}).seed(123));
  TensorDict td = env.reset();
  auto state = td.get("state");
  REQUIRE(state.scalar_type() == torch::kFloat64);
  REQUIRE(state.sizes() == torch::IntArrayRef({20000, 4}));
  CHECK(state.min().item<double>() >= -0.05);
  CHECK(state.max().item<double>() <= 0.05);
  CHECK(state.min().item<double>() < -0.0499);  // covers the range
  CHECK(state.max().item<double>() > 0.0499);
  for (int j = 0; j < 4; ++j) {
    auto c = state.select(-1, j);
    CHECK(c.mean().item<double>() == Approx(0.0).margin(0.002));
    CHECK(c.var().item<double>() == Approx(0.01 / 12).epsilon(0.03));  // (b - a)^2 / 12
  }
  CHECK(torch::equal(td.get("observation"), state.to(torch::kFloat32)));
  CHECK(td.get("observation").scalar_type() == torch::kFloat32);
  CHECK_FALSE(td.get("done").any().item<bool>());
  CHECK_FALSE(td.get("terminated").any().item<bool>());
  CHECK_FALSE(td.get("truncated").any().item<bool>());
  CHECK(td.get("step_count").sum().item<int64_t>() == 0);
  CHECK((td.get("steps_beyond_terminated") == -1).all().item<bool>());
  CHECK(td.get("is_init").all().item<bool>());

  CartPole same(CartPoleOptions().batch_size({20000}).seed(123));
  CHECK(torch::equal(same.reset().get("state"), state));
  CartPole other(CartPoleOptions().batch_size({20000}).seed(124));
  CHECK_FALSE(torch::equal(other.reset().get("state"), state));
  CartPole f64(CartPoleOptions().batch_size({20000}).seed(123).dtype(torch::kFloat64));
  TensorDict td64 = f64.reset();
  CHECK(torch::equal(td64.get("state"), state));
  CHECK(torch::equal(td64.get("observation"), state));
  CartPole categorical(CartPoleOptions().batch_size({20000}).seed(123).categorical_action_encoding(true));
  CHECK(torch::equal(categorical.reset().get("state"), state));
  // The next reset draws new states; set_seed restarts the sequence.
  CHECK_FALSE(torch::equal(env.reset().get("state"), state));
  env.set_seed(123);
  CHECK(torch::equal(env.reset().get("state"), state));

  // Gym's reset options {"low": L, "high": H}.
  CartPole wide(CartPoleOptions().batch_size({20000}).reset_low(-0.2).reset_high(0.3));
  auto w = wide.reset().get("state");
  CHECK(w.min().item<double>() >= -0.2);
  CHECK(w.max().item<double>() <= 0.3);
  CHECK(w.mean().item<double>() == Approx(0.05).margin(0.005));
  CartPole fixed(CartPoleOptions().batch_size({3}).reset_low(0.01).reset_high(0.01));
  CHECK((fixed.reset().get("state") == 0.01).all().item<bool>());
}

TEST_CASE("CartPole: same seed, same trajectory", "[envs][cartpole]") {
  auto run = [](uint64_t seed, bool categorical) {
    CartPole env(CartPoleOptions().batch_size({3}).seed(seed).categorical_action_encoding(categorical));
    // Random actions from the env's generator; done carts are reset and go on.
    return env.rollout(300, rlobj::envs::RolloutOptions().break_when_any_done(false));
  };
  for (bool categorical : {false, true}) {
    auto a = run(5, categorical), b = run(5, categorical), c = run(6, categorical);
    CHECK(torch::equal(a.get({"next", "state"}), b.get({"next", "state"})));
    CHECK(torch::equal(a.get("action"), b.get("action")));
    CHECK_FALSE(torch::equal(a.get({"next", "state"}), c.get({"next", "state"})));
    CHECK(a.batch_size() == std::vector<int64_t>{3, 300});
    CHECK(a.get({"next", "done"}).any().item<bool>());  // random actions fail within 300 steps
  }
}

TEST_CASE("CartPole: partial reset keeps the other carts", "[envs][cartpole]") {
  CartPole env(CartPoleOptions().batch_size({3}).seed(9));
  TensorDict td = env.reset();
  for (int t = 0; t < 5; ++t) {
    env.rand_action(td);
    td = rlobj::envs::step_mdp(env.step(td));
  }
  td.set("steps_beyond_terminated", torch::tensor({int64_t{2}, int64_t{3}, int64_t{-1}}).view({3, 1}));
  td.set("terminated", torch::tensor({true, true, false}).view({3, 1}));
  td.set("done", torch::tensor({true, true, false}).view({3, 1}));
  td.set("_reset", torch::tensor({false, true, false}).view({3, 1}));
  td.set("policy_state", torch::ones({3, 4}));
  const auto gen_before = env.generator().get_state();
  TensorDict after = env.reset(td);
  CHECK_FALSE(torch::equal(env.generator().get_state(), gen_before));  // the masked cart drew
  CHECK(rlobj_test::ints(after.get("step_count")) == std::vector<int64_t>{5, 0, 5});
  CHECK(rlobj_test::ints(after.get("steps_beyond_terminated")) == std::vector<int64_t>{2, -1, -1});
  CHECK(rlobj_test::ints(after.get("terminated")) == std::vector<int64_t>{1, 0, 0});
  CHECK(rlobj_test::ints(after.get("done")) == std::vector<int64_t>{1, 0, 0});
  CHECK(torch::equal(after.get("state")[0], td.get("state")[0]));
  CHECK(torch::equal(after.get("state")[2], td.get("state")[2]));
  CHECK_FALSE(torch::equal(after.get("state")[1], td.get("state")[1]));
  CHECK(after.get("state")[1].abs().max().item<double>() <= 0.05);
  CHECK(torch::equal(after.get("observation"), after.get("state").to(torch::kFloat32)));
  CHECK_FALSE(after.contains("_reset"));
  CHECK(rlobj_test::ints(after.get("is_init")) == std::vector<int64_t>{0, 1, 0});
  CHECK(after.contains("policy_state"));  // entries the env does not own are carried over

  // Without step_count and flags, the kept carts start counting from 0.
  TensorDict bare({3});
  bare.set("state", td.get("state"));
  bare.set("_reset", torch::tensor({true, false, false}).view({3, 1}));
  TensorDict fresh = env.reset(bare);
  CHECK(rlobj_test::ints(fresh.get("step_count")) == std::vector<int64_t>{0, 0, 0});
  CHECK(torch::equal(fresh.get("state")[1], td.get("state")[1]));
}

TEST_CASE("CartPole: a rejected reset draws nothing and changes nothing", "[envs][cartpole]") {
  CartPole env(CartPoleOptions().batch_size({3}).seed(5));
  TensorDict root = env.reset();
  const auto gen = env.generator().get_state();
  const auto mask = torch::tensor({true, false, true}).view({3, 1});

  TensorDict no_state = root.exclude({"state"});
  no_state.set("_reset", mask);
  REQUIRE_THROWS_WITH(env.reset(no_state), Contains("no \"state\""));
  TensorDict bad_state = root.copy();
  bad_state.set("_reset", mask);
  bad_state.set("state", torch::zeros({3, 4}, torch::kFloat32));
  REQUIRE_THROWS_WITH(env.reset(bad_state), Contains("\"state\" must be float64 of shape [3, 4]") &&
                                                Contains("got float32 [3, 4]"));
  TensorDict bad_count = root.copy();
  bad_count.set("_reset", mask);
  bad_count.set("step_count", torch::zeros({3, 1}, torch::kInt32));
  REQUIRE_THROWS_WITH(env.reset(bad_count), Contains("\"step_count\" must be int64 of shape [3, 1]"));
  TensorDict bad_beyond = root.copy();
  bad_beyond.set("_reset", mask);
  bad_beyond.set("steps_beyond_terminated", torch::zeros({3}, torch::kInt64));
  REQUIRE_THROWS_WITH(env.reset(bad_beyond), Contains("\"steps_beyond_terminated\" must be int64 of shape [3, 1]"));
  TensorDict bad_flag = root.copy();
  bad_flag.set("_reset", mask);
  bad_flag.set("done", torch::zeros({3, 3}, torch::kBool));  // would have broadcast to [3, 3]
  REQUIRE_THROWS_WITH(env.reset(bad_flag), Contains("\"done\" must be bool of shape [3, 1]"));
  TensorDict bad_mask = root.copy();
  bad_mask.set("_reset", torch::ones({3}, torch::kBool));
  REQUIRE_THROWS_WITH(env.reset(bad_mask), Contains("\"_reset\" must be a bool tensor of shape [3, 1]"));
  CHECK(torch::equal(env.generator().get_state(), gen));

  // A given start state: checked, and nothing drawn.
  TensorDict start({3});
  start.set("state", torch::zeros({3, 4}, torch::kFloat64));
  start.get("state")[1][2] = NAN;
  REQUIRE_THROWS_AS(env.reset(start), c10::ValueError);
  REQUIRE_THROWS_WITH(env.reset(start), Contains("\"state\" must be finite"));
  start.set("state", torch::zeros({3, 1}, torch::kFloat64));
  REQUIRE_THROWS_WITH(env.reset(start), Contains("\"state\" must be float64 of shape [3, 4]") &&
                                            Contains("got float64 [3, 1]"));
  start.set("state", torch::full({3, 4}, 0.5, torch::kFloat64));
  TensorDict imposed = env.reset(start);
  CHECK(torch::equal(imposed.get("state"), start.get("state")));
  CHECK(torch::equal(imposed.get("observation"), torch::full({3, 4}, 0.5f)));
  CHECK(torch::equal(env.generator().get_state(), gen));
}

TEST_CASE("CartPole: imposed start state, as the reference cases do", "[envs][cartpole]") {
  // gym: env.reset(); env.unwrapped.state = state0; obs_0 = float32(state0).
  const std::vector<double> s0 = {0.012345678901234567, -0.3, 0.1999999999, 1.0 / 3.0};
  CartPole env;  // unbatched, like gym
  TensorDict init;
  init.set("state", torch::tensor(s0, torch::kFloat64));
  TensorDict td = env.reset(init);
  CHECK(td.batch_size().empty());
  CHECK(td.get("observation").sizes() == torch::IntArrayRef({4}));
  auto obs = floats(td.get("observation"));
  for (int j = 0; j < 4; ++j) CHECK(same_bits(obs[j], static_cast<float>(s0[j])));
  CHECK(td.get("step_count").sizes() == torch::IntArrayRef({1}));
  td.set("action", torch::tensor({int64_t{0}, int64_t{1}}));
  env.step(td);
  GymCartPole ref{s0[0], s0[1], s0[2], s0[3]};
  ref.step(1);
  auto s1 = doubles(td.get({"next", "state"}));
  CHECK(same_bits(s1[0], ref.x));
  CHECK(same_bits(s1[3], ref.theta_dot));
  // The observation is only a copy: the float64 state is what goes on.
  CHECK(td.get({"next", "state"}).scalar_type() == torch::kFloat64);
}

TEST_CASE("CartPole: a step count at INT64_MAX saturates and truncates instead of wrapping", "[envs][cartpole][validation]") {
  for (bool fused : {true, false}) {
    INFO("fused step " << fused);
    CartPole env(CartPoleOptions().batch_size({2}).fused_cpu_step(fused));
    rlobj_test::check_step_count_saturates(env, torch::tensor({int64_t{1}, int64_t{0}, int64_t{1}, int64_t{0}}).view({2, 2}));
  }
}

TEST_CASE("CartPole: categorical actions", "[envs][cartpole]") {
  CartPole cat(CartPoleOptions().batch_size({4}).categorical_action_encoding(true));
  CartPole hot(CartPoleOptions().batch_size({4}));
  const std::vector<std::vector<double>> starts(4, {0.01, -0.02, 0.03, 0.04});
  TensorDict a = with_state(cat, starts), b = with_state(hot, starts);
  a.set("action", torch::tensor({int64_t{0}, int64_t{1}, int64_t{1}, int64_t{0}}));
  b.set("action", one_hot({0, 1, 1, 0}));
  cat.step(a);
  hot.step(b);
  CHECK(torch::equal(a.get({"next", "state"}), b.get({"next", "state"})));
  auto s = doubles(a.get({"next", "state"}));
  CHECK(s[1] < s[5]);  // 1 pushes right: x_dot grows
  CHECK(cat.action_spec().shape() == std::vector<int64_t>{4});
  CHECK(dynamic_cast<const rlobj::Categorical*>(&cat.action_spec()) != nullptr);
  CartPole single(CartPoleOptions().categorical_action_encoding(true));
  TensorDict td = single.reset();
  single.rand_action(td);
  CHECK(td.get("action").dim() == 0);  // TorchRL's Categorical(2) spec: shape []
  CHECK(single.action_spec().is_in(td.get("action")));
  single.step(td);
  CHECK(td.get({"next", "reward"}).item<float>() == 1.0f);
}

TEST_CASE("CartPole: bad actions are clear errors that change nothing", "[envs][cartpole]") {
  for (bool fused : {true, false}) {
    INFO("fused_cpu_step=" << fused);
    CartPole env(CartPoleOptions().batch_size({4}).fused_cpu_step(fused));
    TensorDict td = env.reset();
    const auto gen = env.generator().get_state();
    auto expect_refused = [&](const torch::Tensor& action) {
      TensorDict copy = td.copy();
      copy.set("action", action);
      return copy;
    };
    REQUIRE_THROWS_WITH(env.step(td), Contains("no \"action\""));
    CHECK_FALSE(td.contains("next"));
    // Wrong dtype: TypeError naming the dtype.
    auto f = expect_refused(one_hot({0, 1, 1, 0}).to(torch::kFloat32));
    REQUIRE_THROWS_AS(env.step(f), c10::TypeError);
    REQUIRE_THROWS_WITH(env.step(f), Contains("\"action\" has dtype float32, expected int64"));
    CHECK_FALSE(f.contains("next"));
    REQUIRE_THROWS_AS(env.step(expect_refused(one_hot({0, 1, 1, 0}).to(torch::kBool))), c10::TypeError);
    REQUIRE_THROWS_AS(env.step(expect_refused(one_hot({0, 1, 1, 0}).to(torch::kInt32))), c10::TypeError);
    // Wrong shape: ValueError, no broadcasting.
    auto index = expect_refused(torch::tensor({int64_t{0}, int64_t{1}, int64_t{1}, int64_t{0}}));
    REQUIRE_THROWS_AS(env.step(index), c10::ValueError);
    REQUIRE_THROWS_WITH(env.step(index), Contains("\"action\" has shape [4], expected [4, 2]") &&
                                             Contains("categorical_action_encoding is false"));
    REQUIRE_THROWS_WITH(env.step(expect_refused(torch::zeros({4, 1}, torch::kInt64))),
                        Contains("has shape [4, 1], expected [4, 2]"));
    REQUIRE_THROWS_WITH(env.step(expect_refused(torch::zeros({4, 3}, torch::kInt64))),
                        Contains("has shape [4, 3], expected [4, 2]"));
    // Not one-hot: ValueError naming the row and its values.
    auto two = one_hot({0, 1, 1, 0});
    two[2][0] = 1;
    REQUIRE_THROWS_AS(env.step(expect_refused(two)), c10::ValueError);
    REQUIRE_THROWS_WITH(env.step(expect_refused(two)), Contains("\"action\" must be one-hot") &&
                                                           Contains("row 2 (index [2] in batch_size [4]) is [1, 1]"));
    auto none = one_hot({0, 1, 1, 0});
    none[3][0] = 0;
    REQUIRE_THROWS_WITH(env.step(expect_refused(none)), Contains("row 3") && Contains("is [0, 0]"));
    auto sums_to_one = one_hot({0, 1, 1, 0});
    sums_to_one[0][0] = 2;
    sums_to_one[0][1] = -1;
    REQUIRE_THROWS_WITH(env.step(expect_refused(sums_to_one)), Contains("row 0") && Contains("is [2, -1]"));
    // Wrong state entries.
    TensorDict good = expect_refused(one_hot({0, 1, 1, 0}));
    REQUIRE_THROWS_WITH(env.step(good.exclude({"state"})), Contains("no \"state\""));
    REQUIRE_THROWS_WITH(env.step(good.exclude({"step_count"})), Contains("no \"step_count\""));
    REQUIRE_THROWS_WITH(env.step(good.exclude({"steps_beyond_terminated"})),
                        Contains("no \"steps_beyond_terminated\""));
    TensorDict f32 = good.copy();
    f32.set("state", good.get("state").to(torch::kFloat32));
    REQUIRE_THROWS_WITH(env.step(f32), Contains("\"state\" must be float64 of shape [4, 4]"));
    REQUIRE_THROWS_WITH(env.step(TensorDict({3})), Contains("batch_size [3]"));
    CHECK(torch::equal(env.generator().get_state(), gen));
    env.step(good);  // and the good one goes through
    CHECK(good.contains("next"));
  }
  for (bool fused : {true, false}) {
    INFO("fused_cpu_step=" << fused);
    CartPole env(CartPoleOptions().batch_size({2, 2}).categorical_action_encoding(true).fused_cpu_step(fused));
    TensorDict td = env.reset();
    auto with = [&](const torch::Tensor& action) {
      TensorDict copy = td.copy();
      copy.set("action", action);
      return copy;
    };
    REQUIRE_THROWS_AS(env.step(with(torch::ones({2, 2}))), c10::TypeError);
    REQUIRE_THROWS_WITH(env.step(with(torch::ones({2, 2}))), Contains("has dtype float32, expected int64 (0 or 1)"));
    REQUIRE_THROWS_WITH(env.step(with(torch::ones({2, 2, 1}, torch::kInt64))),
                        Contains("has shape [2, 2, 1], expected [2, 2]") &&
                            Contains("categorical_action_encoding is true"));
    REQUIRE_THROWS_WITH(env.step(with(torch::ones({2, 2, 2}, torch::kInt64))), Contains("expected [2, 2]"));
    auto out_of_range = torch::ones({2, 2}, torch::kInt64);
    out_of_range[1][0] = 2;
    REQUIRE_THROWS_AS(env.step(with(out_of_range)), c10::ValueError);
    REQUIRE_THROWS_WITH(env.step(with(out_of_range)), Contains("must be 0 (push left) or 1 (push right)") &&
                                                          Contains("element 2 (index [1, 0] in batch_size [2, 2]) is 2"));
    out_of_range[1][0] = -1;
    REQUIRE_THROWS_WITH(env.step(with(out_of_range)), Contains("is -1"));
    env.step(with(torch::ones({2, 2}, torch::kInt64)));
  }
}

TEST_CASE("CartPole: bad options are clear errors", "[envs][cartpole]") {
  REQUIRE_THROWS_WITH(CartPole(CartPoleOptions().dtype(torch::kInt32)), Contains("dtype must be float32 or float64"));
  REQUIRE_THROWS_AS(CartPole(CartPoleOptions().dtype(torch::kFloat16)), c10::ValueError);
  REQUIRE_THROWS_WITH(CartPole(CartPoleOptions().max_episode_steps(-1)), Contains("max_episode_steps must be >= 0"));
  REQUIRE_THROWS_WITH(CartPole(CartPoleOptions().reset_low(0.1).reset_high(0.0)),
                      Contains("reset_low <= reset_high"));
  REQUIRE_THROWS_AS(CartPole(CartPoleOptions().reset_low(NAN)), c10::ValueError);
  REQUIRE_THROWS_AS(CartPole(CartPoleOptions().reset_high(INFINITY)), c10::ValueError);
  REQUIRE_THROWS_WITH(CartPole(CartPoleOptions().batch_size({2, 0})), Contains("batch_size dims must be positive"));
}

TEST_CASE("CartPole: specs", "[envs][cartpole]") {
  CartPole env(CartPoleOptions().batch_size({8}));
  CHECK(env.observation_spec().at("observation").shape() == std::vector<int64_t>{8, 4});
  CHECK(env.observation_spec().at("observation").dtype() == torch::kFloat32);
  CHECK(env.observation_spec().at("state").dtype() == torch::kFloat64);
  const auto* action_spec = dynamic_cast<const rlobj::OneHot*>(&env.action_spec());
  REQUIRE(action_spec != nullptr);
  CHECK(action_spec->n() == 2);
  CHECK(env.action_spec().shape() == std::vector<int64_t>{8, 2});
  CHECK(env.action_spec().dtype() == torch::kInt64);
  CHECK(env.reward_spec().shape() == std::vector<int64_t>{8, 1});
  CHECK(env.reward_spec().dtype() == torch::kFloat32);
  for (const char* k : {"done", "terminated", "truncated"}) {
    CHECK(env.done_spec().at(k).dtype() == torch::kBool);
    CHECK(env.done_spec().at(k).shape() == std::vector<int64_t>{8, 1});
  }
  TensorDict td = env.reset();
  CHECK(env.observation_spec().is_in(td));
  CHECK(env.done_spec().is_in(td));
  for (int t = 0; t < 100; ++t) {  // past termination too
    env.rand_action(td);
    REQUIRE(env.action_spec().is_in(td.get("action")));
    env.step(td);
    REQUIRE(env.observation_spec().is_in(td.get_sub("next")));
    REQUIRE(env.done_spec().is_in(td.get_sub("next")));
    REQUIRE(env.reward_spec().is_in(td.get({"next", "reward"})));
    td = rlobj::envs::step_mdp(td);
  }
  CHECK(td.get("terminated").any().item<bool>());
  auto draws = env.action_spec().rand({500});
  CHECK(draws.select(-1, 1).sum().item<int64_t>() > 1500);  // both actions drawn
  CHECK(draws.select(-1, 1).sum().item<int64_t>() < 2500);

  CartPole single;
  CHECK(single.batch_size().empty());
  CHECK(single.action_spec().shape() == std::vector<int64_t>{2});
  CHECK(single.reset().get("observation").sizes() == torch::IntArrayRef({4}));
  CHECK(single.reset().get("done").sizes() == torch::IntArrayRef({1}));
  CartPole f64(CartPoleOptions().dtype(torch::kFloat64));
  CHECK(f64.observation_spec().at("observation").dtype() == torch::kFloat64);
  CHECK(f64.reward_spec().dtype() == torch::kFloat64);
  TensorDict t64 = f64.reset();
  f64.rand_action(t64);
  f64.step(t64);
  CHECK(torch::equal(t64.get({"next", "observation"}), t64.get({"next", "state"})));
}

TEST_CASE("CartPole: fused and tensor-op steps agree", "[envs][cartpole]") {
  // One step from the same states and actions: only ATen's sin/cos against glibc's can differ.
  CartPole fused(CartPoleOptions().batch_size({256}).seed(3).reset_low(-0.3).reset_high(0.3));
  CartPole ops(CartPoleOptions().batch_size({256}).seed(3).fused_cpu_step(false));
  TensorDict a = fused.reset();
  for (int t = 0; t < 30; ++t) {
    fused.rand_action(a);
    TensorDict b = a.copy();
    fused.step(a);
    ops.step(b);
    TensorDict na = a.get_sub("next"), nb = b.get_sub("next");
    REQUIRE(torch::allclose(na.get("state"), nb.get("state"), 1e-14, 1e-13));
    for (const char* k : {"terminated", "truncated", "done", "step_count", "steps_beyond_terminated", "reward"}) {
      INFO(k);
      REQUIRE(torch::equal(na.get(k), nb.get(k)));
    }
    a = rlobj::envs::step_mdp(a);
  }
  CHECK(a.get("terminated").any().item<bool>());
  if (torch::cuda::is_available()) {
    CartPole cuda(CartPoleOptions().batch_size({256}).seed(3).device(torch::kCUDA));
    TensorDict c = cuda.reset();
    CartPole cpu(CartPoleOptions().batch_size({256}).seed(3));
    TensorDict h = cpu.reset();
    CHECK(torch::equal(c.get("state").cpu(), h.get("state")));
    for (int t = 0; t < 20; ++t) {
      h.set("action", torch::one_hot(torch::full({256}, t % 2, torch::kInt64), 2));
      c.set("action", h.get("action").to(torch::kCUDA));
      cpu.step(h);
      cuda.step(c);
      REQUIRE(torch::allclose(c.get({"next", "state"}).cpu(), h.get({"next", "state"}), 1e-12, 1e-14));
      h = rlobj::envs::step_mdp(h);
      c = rlobj::envs::step_mdp(c);
    }
  }
}

}  // namespace rlobj_test_envs_cartpole_test
