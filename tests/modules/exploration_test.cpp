#include <rlobj/modules/exploration.h>

#include <sstream>

#include <catch2/catch.hpp>
#include <torch/torch.h>

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_modules_exploration_test {

using Catch::Matchers::Contains;
using rlobj::Bounded;
using rlobj::TensorDict;
using namespace rlobj::modules;

namespace {
TensorDict zeros_action(int64_t n) { return TensorDict({{"action", torch::zeros({n, 1})}}, {n}); }
std::vector<int64_t> rlobj_steps(const TensorDict& td) {
  auto s = td.get(OrnsteinUhlenbeckProcessModuleImpl::kStepsKey).to(torch::kInt64).contiguous();
  return std::vector<int64_t>(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
}
}  // namespace

TEST_CASE("AdditiveGaussianModule: noise statistics, projection, annealing", "[exploration]") {
  Bounded spec(-2.0, 2.0, {1});
  AdditiveGaussianModule noise(spec, AdditiveGaussianModuleOptions().sigma_init(1.0).sigma_end(0.1).std(0.5).seed(1)
                                         .annealing_num_steps(10));
  auto a = noise(zeros_action(20000)).get("action");
  CHECK(a.mean().item<double>() == Approx(0).margin(0.02));
  CHECK(a.std().item<double>() == Approx(0.5).epsilon(0.03));  // sigma 1 * std 0.5

  AdditiveGaussianModule wide(spec, AdditiveGaussianModuleOptions().std(10.0).seed(2));
  auto w = wide(zeros_action(1000)).get("action");
  CHECK(w.abs().max().item<float>() == 2.0f);  // clamped to the action spec

  CHECK(noise->sigma() == Approx(1.0));
  noise->step(5);
  CHECK(noise->sigma() == Approx(0.55).epsilon(1e-6));
  noise->step(100);
  CHECK(noise->sigma() == Approx(0.1).epsilon(1e-6));
  auto annealed = noise(zeros_action(20000)).get("action");
  CHECK(annealed.std().item<double>() == Approx(0.05).epsilon(0.03));
  REQUIRE_THROWS_AS(AdditiveGaussianModule(spec, AdditiveGaussianModuleOptions().sigma_init(0.1).sigma_end(1.0)),
                    c10::ValueError);
  REQUIRE_THROWS_WITH(noise(TensorDict({2})), Contains("no \"action\""));
}

TEST_CASE("Exploration is off under a Deterministic exploration type", "[exploration]") {
  Bounded spec(-2.0, 2.0, {1});
  AdditiveGaussianModule noise(spec, AdditiveGaussianModuleOptions().seed(1));
  OrnsteinUhlenbeckProcessModule ou(spec, OrnsteinUhlenbeckProcessModuleOptions().seed(1));
  CHECK(exploration_type() == ExplorationType::Random);
  {
    SetExplorationType guard(ExplorationType::Deterministic);
    CHECK(noise(zeros_action(5)).get("action").abs().sum().item<float>() == 0.0f);
    auto td = ou(zeros_action(5));
    CHECK(td.get("action").abs().sum().item<float>() == 0.0f);
    CHECK_FALSE(td.contains(OrnsteinUhlenbeckProcessModuleImpl::kNoiseKey));
    {
      SetExplorationType inner(ExplorationType::Random);
      CHECK(exploration_type() == ExplorationType::Random);
    }
    CHECK(exploration_type() == ExplorationType::Deterministic);
  }
  CHECK(noise(zeros_action(5)).get("action").abs().sum().item<float>() > 0.0f);
}

TEST_CASE("Noise modules are seeded and save their generator", "[exploration]") {
  Bounded spec(-2.0, 2.0, {1});
  auto draw = [&](uint64_t seed) {
    AdditiveGaussianModule n(spec, AdditiveGaussianModuleOptions().seed(seed));
    return n(zeros_action(8)).get("action");
  };
  CHECK(torch::equal(draw(3), draw(3)));
  CHECK_FALSE(torch::equal(draw(3), draw(4)));

  AdditiveGaussianModule a(spec, AdditiveGaussianModuleOptions().seed(9).annealing_num_steps(4));
  a(zeros_action(4));
  a->step(2);
  std::stringstream stream;
  torch::save(a, stream);
  auto expected = a(zeros_action(4)).get("action");
  AdditiveGaussianModule b(spec, AdditiveGaussianModuleOptions().seed(123).annealing_num_steps(4));
  torch::load(b, stream);
  CHECK(b->sigma() == a->sigma());
  CHECK(torch::equal(b(zeros_action(4)).get("action"), expected));
}

TEST_CASE("OrnsteinUhlenbeckProcessModule: correlated noise with the OU statistics", "[exploration]") {
  Bounded spec(-100.0, 100.0, {1});
  const double theta = 0.15, sigma = 0.2, dt = 0.01;
  OrnsteinUhlenbeckProcessModule ou(spec, OrnsteinUhlenbeckProcessModuleOptions().seed(4).theta(theta).sigma(sigma).dt(dt));
  const int64_t n = 2000;
  TensorDict td = zeros_action(n);
  torch::Tensor prev;
  double lag1_num = 0, lag1_den = 0;
  for (int step = 0; step < 3000; ++step) {
    td.set("action", torch::zeros({n, 1}));
    ou(td);
    auto x = td.get(OrnsteinUhlenbeckProcessModuleImpl::kNoiseKey);
    if (step > 2000 && prev.defined()) {
      lag1_num += (x * prev).sum().item<double>();
      lag1_den += (prev * prev).sum().item<double>();
    }
    prev = x.clone();
  }
  // x' = (1 - theta dt) x + sigma sqrt(dt) N(0, 1): stationary variance sigma^2 dt / (1 - a^2).
  const double a = 1 - theta * dt;
  const double var = sigma * sigma * dt / (1 - a * a);
  CHECK(prev.var().item<double>() == Approx(var).epsilon(0.08));
  CHECK(lag1_num / lag1_den == Approx(a).epsilon(0.002));
  CHECK(td.get(OrnsteinUhlenbeckProcessModuleImpl::kStepsKey).max().item<int64_t>() == 3000);
  // The action is action + eps * noise with eps = 1.
  CHECK(torch::allclose(td.get("action"), td.get(OrnsteinUhlenbeckProcessModuleImpl::kNoiseKey)));
}

TEST_CASE("OrnsteinUhlenbeckProcessModule: per-environment reset on is_init, annealing", "[exploration]") {
  Bounded spec(-100.0, 100.0, {1});
  OrnsteinUhlenbeckProcessModule ou(spec, OrnsteinUhlenbeckProcessModuleOptions().seed(5).sigma(1.0).dt(1.0)
                                              .eps_init(1.0).eps_end(0.5).annealing_num_steps(2));
  TensorDict td = zeros_action(3);
  for (int i = 0; i < 5; ++i) {
    td.set("action", torch::zeros({3, 1}));
    ou(td);
  }
  CHECK(rlobj_steps(td) == std::vector<int64_t>{5, 5, 5});
  td.set("is_init", torch::tensor({false, true, false}).view({3, 1}));
  td.set("action", torch::zeros({3, 1}));
  ou(td);
  auto steps = td.get(OrnsteinUhlenbeckProcessModuleImpl::kStepsKey);
  CHECK(steps[0].item<int64_t>() == 6);
  CHECK(steps[1].item<int64_t>() == 1);  // restarted
  ou->step(1);
  CHECK(ou->eps() == Approx(0.75));
  ou->step(10);
  CHECK(ou->eps() == Approx(0.5));
  td.set("is_init", torch::ones({3, 2}, torch::kBool));
  REQUIRE_THROWS_WITH(ou(td), Contains("\"is_init\" has shape [3, 2], not compatible with the batch_size [3]"));
  REQUIRE_THROWS_AS(OrnsteinUhlenbeckProcessModule(spec, OrnsteinUhlenbeckProcessModuleOptions().dt(0)), c10::ValueError);
}

TEST_CASE("OrnsteinUhlenbeckProcessModule: sigma annealing per environment step", "[exploration]") {
  Bounded spec(-100.0, 100.0, {1});
  OrnsteinUhlenbeckProcessModule ou(spec, OrnsteinUhlenbeckProcessModuleOptions().seed(6).theta(0).dt(1.0).sigma(1.0)
                                              .sigma_min(0.0).n_steps_annealing(10));
  // theta = 0: increments are sigma_t N(0, 1) with sigma_t = 1 - steps / 10, clamped at 0.
  const int64_t n = 20000;
  TensorDict td = zeros_action(n);
  std::vector<double> stds;
  torch::Tensor prev = torch::zeros({n, 1});
  for (int step = 0; step < 12; ++step) {
    td.set("action", torch::zeros({n, 1}));
    ou(td);
    auto x = td.get(OrnsteinUhlenbeckProcessModuleImpl::kNoiseKey);
    stds.push_back((x - prev).std().item<double>());
    prev = x.clone();
  }
  CHECK(stds[0] == Approx(1.0).epsilon(0.03));
  CHECK(stds[5] == Approx(0.5).epsilon(0.03));
  CHECK(stds[11] == Approx(0.0).margin(1e-12));
}

}  // namespace rlobj_test_modules_exploration_test
