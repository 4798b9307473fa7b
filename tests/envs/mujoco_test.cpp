// rlobj::envs::mujoco against gymnasium 1.4.0's recorded trajectories
// (tests/data/reference/mujoco/, made by the real HalfCheetah-v5, Hopper-v5, Walker2d-v5 and
// Ant-v5 on MuJoCo 3.17.0). On MuJoCo 3.17.0 every number must be the same double, bit for bit;
// on another version the test says which one it ran and compares the first kShortHorizon steps
// within kOtherVersionTolerance (chaotic dynamics drift apart later: that is not a bug).

#include <rlobj/envs/mujoco.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_envs_mujoco_test {

namespace {

namespace mj = rlobj::envs::mujoco;
using json = nlohmann::json;

constexpr int64_t kShortHorizon = 20;
constexpr double kOtherVersionTolerance = 1e-6;  // relative, another MuJoCo build only

bool exact_version() { return mj::version() == "3.17.0"; }

const json& reference(const std::string& env) {
  static std::map<std::string, json> cache;
  auto it = cache.find(env);
  if (it == cache.end()) {
    std::ifstream in(std::string(RLOBJ_TEST_DATA_DIR) + "/reference/mujoco/mujoco_" + env + ".json");
    REQUIRE(in.good());
    it = cache.emplace(env, json::parse(in)).first;
  }
  return it->second;
}

// Reals, and the strings "inf", "-inf", "nan" of the oracle's format.
double real(const json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    return std::numeric_limits<double>::quiet_NaN();
  }
  return v.get<double>();
}

mj::Range range(const json& v) { return mj::Range{real(v[0]), real(v[1])}; }

// The same double (exact version), or within the stated tolerance.
bool same(double got, double want, int64_t t) {
  if (exact_version()) return got == want || (std::isnan(got) && std::isnan(want));
  if (t >= kShortHorizon) return true;
  return std::abs(got - want) <= kOtherVersionTolerance * std::max(1.0, std::abs(want));
}

// gymnasium's constructor arguments of a case, as the env's options.
std::unique_ptr<mj::MujocoEnv> make_env(const std::string& env, const json& kwargs, mj::MujocoOptions common) {
  auto get = [&](const char* k) -> const json* { return kwargs.contains(k) ? &kwargs.at(k) : nullptr; };
  if (env == "halfcheetah") {
    mj::HalfCheetahOptions o;
    if (auto v = get("forward_reward_weight")) o.forward_reward_weight(real(*v));
    if (auto v = get("ctrl_cost_weight")) o.ctrl_cost_weight(real(*v));
    if (auto v = get("reset_noise_scale")) o.reset_noise_scale(real(*v));
    if (auto v = get("exclude_current_positions_from_observation")) o.exclude_current_positions_from_observation(v->get<bool>());
    if (auto v = get("frame_skip")) o.frame_skip(v->get<int64_t>());
    return std::make_unique<mj::HalfCheetah>(o, common);
  }
  if (env == "hopper" || env == "walker2d") {
    auto fill = [&](auto o) {
      if (auto v = get("forward_reward_weight")) o.forward_reward_weight(real(*v));
      if (auto v = get("ctrl_cost_weight")) o.ctrl_cost_weight(real(*v));
      if (auto v = get("healthy_reward")) o.healthy_reward(real(*v));
      if (auto v = get("terminate_when_unhealthy")) o.terminate_when_unhealthy(v->get<bool>());
      if (auto v = get("healthy_z_range")) o.healthy_z_range(range(*v));
      if (auto v = get("healthy_angle_range")) o.healthy_angle_range(range(*v));
      if (auto v = get("reset_noise_scale")) o.reset_noise_scale(real(*v));
      if (auto v = get("exclude_current_positions_from_observation")) o.exclude_current_positions_from_observation(v->get<bool>());
      if (auto v = get("frame_skip")) o.frame_skip(v->get<int64_t>());
      return o;
    };
    if (env == "hopper") {
      mj::HopperOptions o = fill(mj::HopperOptions());
      if (auto v = get("healthy_state_range")) o.healthy_state_range(range(*v));
      return std::make_unique<mj::Hopper>(o, common);
    }
    return std::make_unique<mj::Walker2d>(fill(mj::Walker2dOptions()), common);
  }
  REQUIRE(env == "ant");
  mj::AntOptions o;
  if (auto v = get("forward_reward_weight")) o.forward_reward_weight(real(*v));
  if (auto v = get("ctrl_cost_weight")) o.ctrl_cost_weight(real(*v));
  if (auto v = get("contact_cost_weight")) o.contact_cost_weight(real(*v));
  if (auto v = get("healthy_reward")) o.healthy_reward(real(*v));
  if (auto v = get("terminate_when_unhealthy")) o.terminate_when_unhealthy(v->get<bool>());
  if (auto v = get("healthy_z_range")) o.healthy_z_range(range(*v));
  if (auto v = get("contact_force_range")) o.contact_force_range(range(*v));
  if (auto v = get("reset_noise_scale")) o.reset_noise_scale(real(*v));
  if (auto v = get("exclude_current_positions_from_observation")) o.exclude_current_positions_from_observation(v->get<bool>());
  if (auto v = get("include_cfrc_ext_in_observation")) o.include_cfrc_ext_in_observation(v->get<bool>());
  if (auto v = get("frame_skip")) o.frame_skip(v->get<int64_t>());
  return std::make_unique<mj::Ant>(o, common);
}

torch::Tensor doubles(const json& v) {
  std::vector<double> x;
  for (const auto& e : v) x.push_back(real(e));
  return torch::tensor(x, torch::kFloat64);
}

// Counts the values compared and the mismatches, and names the first one.
struct Tally {
  int64_t compared = 0;
  int64_t mismatched = 0;
  std::string first;
  void check(double got, double want, int64_t t, const std::string& what) {
    ++compared;
    if (!same(got, want, t)) {
      if (mismatched++ == 0) {
        first = what + " at t=" + std::to_string(t) + ": got " + std::to_string(got) + " (" +
                fmt::format("{:.17g}", got) + "), want " + fmt::format("{:.17g}", want);
      }
    }
  }
  void check_all(const double* got, const json& want, int64_t t, const std::string& what) {
    for (size_t j = 0; j < want.size(); ++j) check(got[j], real(want[j]), t, what + "[" + std::to_string(j) + "]");
  }
};

// Replays the cases `which` (all with the same constructor arguments and action dtype) in one
// batched environment, copy c replaying case which[c]; copies whose case has ended step zeros.
// Twice in the same environment: the second episode must not inherit anything from the first
// (MuJoCo's solver warm start lives in mjData; a reset must clear it).
Tally replay(const std::string& env_key, const std::vector<const json*>& which, int64_t threads) {
  Tally tally;
  const json& first = *which.front();
  const auto n = static_cast<int64_t>(which.size());
  const bool f32 = first.at("action_spec").at("dtype") == "float32";
  auto env = make_env(env_key, first.at("env_kwargs"),
                      mj::MujocoOptions().batch_size({n}).num_threads(threads).write_info(true).action_dtype(
                          f32 ? torch::kFloat32 : torch::kFloat64));
  const mjModel& m = env->model();
  std::vector<torch::Tensor> qpos, qvel;
  for (const json* c : which) {
    qpos.push_back(doubles(c->at("qpos0")));
    qvel.push_back(doubles(c->at("qvel0")));
  }
  rlobj::TensorDict start({n});
  start.set("qpos", torch::stack(qpos));
  start.set("qvel", torch::stack(qvel));
  for (int episode = 0; episode < 2; ++episode) {
  rlobj::TensorDict td = env->reset(start);
  const torch::Tensor obs0 = td.get("observation").contiguous();
  for (int64_t c = 0; c < n; ++c) {
    tally.check_all(obs0[c].data_ptr<double>(), which[c]->at("obs0"), 0, which[c]->at("name").get<std::string>() + " obs0");
  }
  int64_t horizon = 0;
  for (const json* c : which) horizon = std::max<int64_t>(horizon, c->at("n_steps").get<int64_t>());
  std::vector<size_t> next_record(static_cast<size_t>(n), 0);
  const auto& names = env->info_names();
  for (int64_t t = 0; t < horizon; ++t) {
    torch::Tensor action = torch::zeros({n, m.nu}, torch::kFloat64);
    for (int64_t c = 0; c < n; ++c) {
      if (t < which[c]->at("n_steps").get<int64_t>()) action[c] = doubles(which[c]->at("actions")[t]);
    }
    td.set("action", f32 ? action.to(torch::kFloat32) : action);
    env->step(td);
    rlobj::TensorDict next = td.get_sub("next");
    const torch::Tensor obs = next.get("observation").contiguous();
    for (int64_t c = 0; c < n; ++c) {
      const json& cs = *which[c];
      if (t >= cs.at("n_steps").get<int64_t>()) continue;
      const std::string tag = cs.at("name").get<std::string>();
      tally.check(next.get("reward")[c][0].item<double>(), real(cs.at("reward")[t]), t, tag + " reward");
      tally.check(next.get("terminated")[c][0].item<bool>(), cs.at("terminated")[t].get<bool>(), t, tag + " terminated");
      tally.check(next.get("truncated")[c][0].item<bool>(), cs.at("truncated")[t].get<bool>(), t, tag + " truncated");
      const json& records = cs.at("steps");
      size_t& r = next_record[static_cast<size_t>(c)];
      if (r >= records.size() || records[r].at("t").get<int64_t>() != t) continue;
      const json& rec = records[r++];
      tally.check_all(obs[c].data_ptr<double>(), rec.at("obs"), t, tag + " obs");
      const mjData& d = env->data(c);
      tally.check_all(d.qpos, rec.at("qpos"), t, tag + " qpos");
      tally.check_all(d.qvel, rec.at("qvel"), t, tag + " qvel");
      for (const auto& name : names) {
        const double got = next.get(name)[c][0].item<double>();
        const double want = real(rec.at("info").at(name));
        if (name == "distance_from_origin") {
          // numpy's norm goes through OpenBLAS's ddot, whose kernel is picked at run time:
          // within one ulp (the oracle's README).
          tally.check(std::abs(got - want) <= std::abs(std::nextafter(want, 0.0) - want) ? want : got, want, t,
                      tag + " info." + name);
        } else {
          tally.check(got, want, t, tag + " info." + name);
        }
      }
      if (rec.contains("main_body_xpos")) tally.check_all(d.xpos + 3, rec.at("main_body_xpos"), t, tag + " xpos");
      if (rec.contains("cfrc_ext")) tally.check_all(d.cfrc_ext, rec.at("cfrc_ext"), t, tag + " cfrc_ext");
    }
  }
  for (int64_t c = 0; c < n; ++c) {
    INFO(which[c]->at("name").get<std::string>());
    CHECK(next_record[static_cast<size_t>(c)] == which[c]->at("steps").size());  // every record compared
  }
  }
  return tally;
}

void report(const Tally& tally) {
  INFO("MuJoCo " << mj::version() << (exact_version() ? " (bit for bit)" : " (another version: first 20 steps, rel 1e-6)")
                 << "; first mismatch: " << tally.first);
  CHECK(tally.compared > 0);
  CHECK(tally.mismatched == 0);
}

const std::vector<std::string> kEnvs = {"halfcheetah", "hopper", "walker2d", "ant"};

}  // namespace

TEST_CASE("mujoco: every recorded gymnasium case, bit for bit", "[envs][mujoco]") {
  for (const auto& env : kEnvs) {
    for (const json& c : reference(env).at("cases")) {
      INFO(env << " / " << c.at("name").get<std::string>());
      report(replay(env, {&c}, 1));
    }
  }
}

TEST_CASE("mujoco: cases batched in one environment, any thread count", "[envs][mujoco]") {
  // The default-argument cases of each task replayed side by side (one copy each, ending at
  // different steps) on 1, 2 and 3 threads: each copy's numbers are its case's, whatever the
  // batch and the threads.
  for (const auto& env : kEnvs) {
    std::vector<const json*> group;
    for (const json& c : reference(env).at("cases")) {
      if (c.at("env_kwargs").empty() && c.at("action_spec").at("dtype") == "float64") group.push_back(&c);
    }
    REQUIRE(group.size() >= 3);
    for (int64_t threads : {1, 2, 3}) {
      INFO(env << ", " << group.size() << " copies, " << threads << " threads");
      report(replay(env, group, threads));
    }
  }
}

TEST_CASE("mujoco: the reset noise follows gymnasium's law", "[envs][mujoco]") {
  // 4,000 resets as the oracle recorded them: every coordinate's mean within 4 standard errors
  // of 0 and of the recorded mean, its std within 5% of the law's and of the recorded one, and
  // uniform draws inside [-s, s].
  for (const auto& env_key : kEnvs) {
    const json& dist = reference(env_key).at("reset_distribution");
    const auto n = dist.at("n_resets").get<int64_t>();
    auto env = make_env(env_key, dist.at("env_kwargs"), mj::MujocoOptions().batch_size({n}).seed(7));
    env->reset();
    const mjModel& m = env->model();
    const json& expected = dist.at("expected");
    for (const char* part : {"qpos", "qvel"}) {
      const bool is_qpos = std::string(part) == "qpos";
      const int size = is_qpos ? m.nq : m.nv;
      const json& recorded = dist.at(std::string(part) + "_dev");
      const double law_std = real(expected.at(std::string(part) + "_std"));
      const json& abs_max = expected.at(std::string(part) + "_abs_max");  // a number, or "unbounded (normal)"
      const bool uniform = abs_max.is_number();
      for (int j = 0; j < size; ++j) {
        double sum = 0, sum2 = 0, lo = INFINITY, hi = -INFINITY;
        for (int64_t i = 0; i < n; ++i) {
          const mjData& d = env->data(i);
          const double x = is_qpos ? d.qpos[j] - m.qpos0[j] : d.qvel[j];
          sum += x;
          sum2 += x * x;
          lo = std::min(lo, x);
          hi = std::max(hi, x);
        }
        const double mean = sum / n;
        const double std = std::sqrt(sum2 / n - mean * mean);
        const double se = law_std / std::sqrt(static_cast<double>(n));
        INFO(env_key << " " << part << "[" << j << "]: mean " << mean << ", std " << std << " (law " << law_std << ")");
        CHECK(std::abs(mean) < 4 * se);
        CHECK(std::abs(mean - real(recorded.at("mean")[j])) < 4 * std::sqrt(2.0) * se);
        CHECK(std::abs(std / law_std - 1) < 0.05);
        CHECK(std::abs(std / real(recorded.at("std")[j]) - 1) < 0.05);
        if (uniform) {
          const double s = abs_max.get<double>();
          CHECK(lo >= -s);
          CHECK(hi <= s);
        }
      }
    }
  }
}

TEST_CASE("mujoco: TorchRL's keys, specs, TimeLimit and partial resets", "[envs][mujoco]") {
  mj::Hopper env(mj::HopperOptions(), mj::MujocoOptions().batch_size({3}).max_episode_steps(4).seed(3));
  CHECK(env.observation_spec().at("observation").shape() == std::vector<int64_t>{3, 11});
  CHECK(env.action_spec().shape() == std::vector<int64_t>{3, 3});
  CHECK(env.action_spec().dtype() == torch::kFloat32);
  {
    // The bounds are the model's ctrlrange, held by the spec (not a view of freed memory: the
    // allocations below would overwrite it).
    std::vector<torch::Tensor> churn;
    for (int i = 0; i < 64; ++i) churn.push_back(torch::full({3}, 7.0f));
    const auto& bounded = dynamic_cast<const rlobj::Bounded&>(env.action_spec());
    CHECK(bounded.low().equal(torch::full({3, 3}, -1.0f)));
    CHECK(bounded.high().equal(torch::full({3, 3}, 1.0f)));
  }
  rlobj::TensorDict td = env.reset();
  CHECK(td.get("observation").scalar_type() == torch::kFloat64);
  CHECK(env.observation_spec().at("observation").is_in(td.get("observation")));
  // Small actions keep the hoppers healthy for 4 steps: the 4th is truncated, not terminated.
  for (int t = 1; t <= 4; ++t) {
    td.set("action", torch::zeros({3, 3}));
    env.step(td);
    const rlobj::TensorDict next = td.get_sub("next");
    CHECK(next.get("step_count").eq(t).all().item<bool>());
    CHECK(next.get("truncated").all().item<bool>() == (t == 4));
    CHECK_FALSE(next.get("terminated").any().item<bool>());
    CHECK(env.reward_spec().is_in(next.get("reward")));
    td = rlobj::envs::step_mdp(td);
  }
  // Only copy 1 restarts; the others keep their state, counters and flags.
  const double kept_qpos = env.data(0).qpos[0];
  td.set("_reset", torch::tensor({false, true, false}).view({3, 1}));
  rlobj::TensorDict after = env.reset(td);
  CHECK(env.data(0).qpos[0] == kept_qpos);
  CHECK(rlobj_test::ints(after.get("step_count")) == std::vector<int64_t>{4, 0, 4});
  CHECK(after.get("truncated").view({3}).equal(torch::tensor({true, false, true})));
  CHECK(after.get("is_init").view({3}).equal(torch::tensor({false, true, false})));
  // A start state is loaded by its reset and not carried on: the next restart draws noise.
  rlobj::TensorDict start({3});
  start.set("qpos", torch::zeros({3, 6}, torch::kFloat64));
  start.set("qvel", torch::zeros({3, 6}, torch::kFloat64));
  rlobj::TensorDict from_start = env.reset(start);
  CHECK(env.data(2).qpos[1] == 0.0);
  CHECK_FALSE(from_start.contains("qpos"));
  CHECK_FALSE(from_start.contains("qvel"));
  from_start.set("_reset", torch::tensor({false, false, true}).view({3, 1}));
  env.reset(from_start);
  CHECK(env.data(2).qpos[1] != 0.0);  // noise around init_qpos[1] = 1.25
  CHECK(env.data(0).qpos[1] == 0.0);
  // A random rollout runs through TorchRL's loop.
  rlobj::TensorDict roll = env.rollout(3, rlobj::envs::RolloutOptions().break_when_any_done(false));
  CHECK(roll.batch_size() == std::vector<int64_t>{3, 3});
}

TEST_CASE("mujoco: every task keeps to its specs (check_env_specs)", "[envs][mujoco][specs]") {
  for (const auto& env_key : kEnvs) {
    for (bool info : {false, true}) {
      INFO(env_key << (info ? " with" : " without") << " info terms");
      auto env = make_env(env_key, json::object(),
                          mj::MujocoOptions().batch_size({2}).write_info(info).dtype(info ? torch::kFloat64 : torch::kFloat32));
      rlobj::envs::check_env_specs(*env, 20);  // Hopper and Walker2d fall and restart within 20 random steps
    }
  }
}

TEST_CASE("mujoco: float32 observations round gymnasium's float64 ones", "[envs][mujoco]") {
  mj::HalfCheetah wide(mj::HalfCheetahOptions(), mj::MujocoOptions().seed(5));
  mj::HalfCheetah narrow(mj::HalfCheetahOptions(), mj::MujocoOptions().seed(5).dtype(torch::kFloat32));
  rlobj::TensorDict a = wide.reset(), b = narrow.reset();
  CHECK(b.get("observation").scalar_type() == torch::kFloat32);
  CHECK(b.get("observation").equal(a.get("observation").to(torch::kFloat32)));
  a.set("action", torch::full({6}, 0.5f));
  b.set("action", torch::full({6}, 0.5f));
  wide.step(a);
  narrow.step(b);
  CHECK(b.get({"next", "reward"}).equal(a.get({"next", "reward"}).to(torch::kFloat32)));
}

TEST_CASE("mujoco: bad options and inputs are refused, naming them", "[envs][mujoco]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(mj::HalfCheetah(mj::HalfCheetahOptions().frame_skip(0)), Contains("frame_skip"));
  CHECK_THROWS_WITH(mj::HalfCheetah(mj::HalfCheetahOptions().ctrl_cost_weight(NAN)), Contains("ctrl_cost_weight"));
  CHECK_THROWS_WITH(mj::HalfCheetah(mj::HalfCheetahOptions().reset_noise_scale(-1)), Contains("reset_noise_scale"));
  CHECK_THROWS_WITH(mj::Hopper(mj::HopperOptions().healthy_z_range({2.0, 1.0})), Contains("healthy_z_range"));
  CHECK_THROWS_WITH(mj::Ant(mj::AntOptions().main_body(99)), Contains("main_body"));
  CHECK_THROWS_WITH(mj::HalfCheetah(mj::HalfCheetahOptions().xml_file("no_such.xml")), Contains("no_such.xml"));
  CHECK_THROWS_WITH(mj::HalfCheetah(mj::HalfCheetahOptions(), mj::MujocoOptions().num_threads(0)),
                    Contains("num_threads"));
  CHECK_THROWS_WITH(mj::HalfCheetah(mj::HalfCheetahOptions(), mj::MujocoOptions().dtype(torch::kInt64)),
                    Contains("dtype"));
  CHECK_THROWS_WITH(mj::HalfCheetah(mj::HalfCheetahOptions(), mj::MujocoOptions().batch_size({0})),
                    Contains("batch_size"));

  mj::HalfCheetah env(mj::HalfCheetahOptions(), mj::MujocoOptions().batch_size({2}));
  rlobj::TensorDict td = env.reset();
  const double before = env.data(1).qpos[0];
  td.set("action", torch::zeros({2, 5}));
  CHECK_THROWS_WITH(env.step(td), Contains("\"action\" has shape [2, 5], expected [2, 6]"));
  td.set("action", torch::zeros({2, 6}, torch::kFloat64));
  CHECK_THROWS_WITH(env.step(td), Contains("\"action\" has dtype float64, expected float32"));
  torch::Tensor nan_action = torch::zeros({2, 6});
  nan_action[1][2] = NAN;
  td.set("action", nan_action);
  CHECK_THROWS_WITH(env.step(td), Contains("\"action\" is not finite (copy 1, actuator 2"));
  CHECK(env.data(1).qpos[0] == before);  // refused before any copy moved
  rlobj::TensorDict start({2});
  start.set("qpos", torch::zeros({2, 9}, torch::kFloat64));
  CHECK_THROWS_WITH(env.reset(start), Contains("\"qpos\" without \"qvel\""));
  start.set("qvel", torch::zeros({2, 8}, torch::kFloat64));
  CHECK_THROWS_WITH(env.reset(start), Contains("\"qvel\" must be float64 of shape [2, 9]"));
}

TEST_CASE("mujoco: numpy's pairwise sum", "[envs][mujoco]") {
  // Below 8 values left to right; 8 accumulators up to 128; halves above. Values chosen so the
  // three orders give different doubles.
  std::vector<double> x(300);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i % 3 == 0 ? 1e16 : 1.0) * (i % 2 ? -1 : 1) + 0.1 * static_cast<double>(i);
  double left = 0;
  for (int i = 0; i < 7; ++i) left += x[i];
  CHECK(mj::detail::numpy_sum(x.data(), 7) == left);
  double r[8];
  for (int j = 0; j < 8; ++j) r[j] = x[j];
  for (int i = 8; i < 16; i += 8)
    for (int j = 0; j < 8; ++j) r[j] += x[i + j];
  double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  res += x[16];
  res += x[17];
  CHECK(mj::detail::numpy_sum(x.data(), 18) == res);
  CHECK(mj::detail::numpy_sum(x.data(), 300) ==
        mj::detail::numpy_sum(x.data(), 144) + mj::detail::numpy_sum(x.data() + 144, 156));
}

}  // namespace rlobj_test_envs_mujoco_test
