#include <rlobj/specs.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_specs_test {

using Catch::Matchers::Contains;
using rlobj::Bounded;
using rlobj::Categorical;
using rlobj::Composite;
using rlobj::OneHot;
using rlobj::Unbounded;

TEST_CASE("Bounded: rand, zero, is_in, project", "[specs]") {
  Bounded spec(-2.0, 2.0, {1});
  CHECK(spec.shape() == std::vector<int64_t>{1});
  CHECK(spec.dtype() == torch::kFloat32);
  CHECK(spec.device().is_cpu());

  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto sample = spec.rand({1000}, gen);
  CHECK(sample.sizes() == torch::IntArrayRef({1000, 1}));
  CHECK(spec.is_in(sample));
  CHECK(sample.min().item<float>() < -1.8f);  // covers the range
  CHECK(sample.max().item<float>() > 1.8f);
  auto gen2 = at::make_generator<at::CPUGeneratorImpl>(7);
  CHECK(torch::equal(sample, spec.rand({1000}, gen2)));  // seeded: reproducible

  CHECK(torch::equal(spec.zero({3}), torch::zeros({3, 1})));
  auto outside = torch::tensor({{-3.0f}, {0.5f}, {2.5f}});
  CHECK_FALSE(spec.is_in(outside));
  CHECK(torch::equal(spec.project(outside), torch::tensor({{-2.0f}, {0.5f}, {2.0f}})));
  REQUIRE_THROWS_WITH(spec.assert_is_in(outside), Contains("outside [low, high]") && Contains("Bounded("));
  REQUIRE_THROWS_WITH(spec.assert_is_in(torch::zeros({3, 2})), Contains("does not end with the spec's shape [1]"));
  REQUIRE_THROWS_WITH(spec.assert_is_in(torch::zeros({3, 1}, torch::kFloat64)), Contains("dtype float64"));
  REQUIRE_THROWS_WITH(spec.assert_is_in(torch::full({1}, NAN)), Contains("NaN"));
  CHECK(spec.repr() == "Bounded(shape=[1], dtype=float32, device=cpu, low=-2, high=2)");
  CHECK(fmt::format("{}", spec) == spec.repr());
}

TEST_CASE("Bounded: tensor bounds, integers, expand and errors", "[specs]") {
  Bounded spec(torch::tensor({-1.0f, -8.0f}), torch::tensor({1.0f, 8.0f}));
  auto s = spec.rand({500});
  CHECK(s.select(-1, 1).abs().max().item<float>() > 6.0f);
  CHECK(s.select(-1, 0).abs().max().item<float>() <= 1.0f);
  auto batched = spec.expand({4});
  CHECK(batched->shape() == std::vector<int64_t>{4, 2});
  CHECK(batched->rand().sizes() == torch::IntArrayRef({4, 2}));

  Bounded ints(0, 3, {}, torch::kInt64);
  auto draws = ints.rand({2000});
  CHECK(draws.min().item<int64_t>() == 0);
  CHECK(draws.max().item<int64_t>() == 3);

  REQUIRE_THROWS_AS(Bounded(1.0, -1.0, {1}), c10::ValueError);
  REQUIRE_THROWS_AS(Bounded(torch::zeros({2}), torch::ones({3})), c10::ValueError);
}

TEST_CASE("Unbounded and Categorical", "[specs]") {
  Unbounded u({3});
  CHECK(u.rand({5}).sizes() == torch::IntArrayRef({5, 3}));
  CHECK(u.is_in(torch::full({2, 3}, 1e30f)));
  CHECK_FALSE(u.is_in(torch::zeros({2, 4})));
  CHECK(u.repr() == "Unbounded(shape=[3], dtype=float32, device=cpu)");

  Categorical done(2, {1}, torch::kBool);
  CHECK(done.rand({10}).scalar_type() == torch::kBool);
  CHECK(done.is_in(torch::zeros({4, 1}, torch::kBool)));
  Categorical c(5, {});
  CHECK(c.is_in(torch::tensor({0, 4})));
  CHECK_FALSE(c.is_in(torch::tensor({5})));
  CHECK(torch::equal(c.project(torch::tensor({-1, 7})), torch::tensor({0, 4})));
  REQUIRE_THROWS_AS(Categorical(0), c10::ValueError);
  REQUIRE_THROWS_AS(Categorical(3, {1}, torch::kBool), c10::ValueError);
  REQUIRE_THROWS_AS(Unbounded({-1}), c10::ValueError);
}

TEST_CASE("OneHot: rand, is_in, project, expand and errors", "[specs]") {
  OneHot spec(3);
  CHECK(spec.shape() == std::vector<int64_t>{3});
  CHECK(spec.dtype() == torch::kBool);  // TorchRL's default
  CHECK(spec.n() == 3);
  CHECK(spec.repr() == "OneHot(n=3, shape=[3], dtype=bool, device=cpu)");
  CHECK(fmt::format("{}", spec) == spec.repr());

  OneHot ints(2, {2}, torch::kInt64);  // TorchRL's GymEnv wraps Discrete(2) so
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto draws = ints.rand({1000}, gen);
  CHECK(draws.sizes() == torch::IntArrayRef({1000, 2}));
  CHECK(draws.scalar_type() == torch::kInt64);
  CHECK(ints.is_in(draws));
  CHECK(torch::equal(draws.sum(-1), torch::ones({1000}, torch::kInt64)));
  const int64_t ones = draws.select(-1, 1).sum().item<int64_t>();
  CHECK(ones > 400);  // both categories drawn
  CHECK(ones < 600);
  auto gen2 = at::make_generator<at::CPUGeneratorImpl>(3);
  CHECK(torch::equal(draws, ints.rand({1000}, gen2)));  // seeded: reproducible
  CHECK(spec.is_in(spec.rand({4, 5})));
  CHECK(spec.rand({4, 5}).sizes() == torch::IntArrayRef({4, 5, 3}));

  CHECK(ints.is_in(torch::tensor({{0, 1}, {1, 0}})));
  CHECK_FALSE(ints.is_in(torch::tensor({{1, 1}, {1, 0}})));
  CHECK_FALSE(ints.is_in(torch::tensor({{0, 0}})));
  CHECK_FALSE(ints.is_in(torch::tensor({{2, -1}})));  // sums to 1, still not one-hot
  CHECK_FALSE(ints.is_in(torch::tensor({1, 0, 0})));
  CHECK_FALSE(ints.is_in(torch::tensor({{0.0f, 1.0f}})));
  CHECK(ints.is_in(torch::zeros({0, 2}, torch::kInt64)));
  REQUIRE_THROWS_WITH(ints.assert_is_in(torch::tensor({{1, 1}, {1, 0}, {0, 0}})),
                      Contains("OneHot(n=2") && Contains("2 of its rows are not one-hot"));
  REQUIRE_THROWS_WITH(ints.assert_is_in(torch::tensor({{0, 1}}, torch::kInt32)), Contains("dtype int32"));
  CHECK(spec.is_in(torch::tensor({false, true, false})));
  CHECK_FALSE(spec.is_in(torch::tensor({true, true, false})));

  CHECK(torch::equal(ints.project(torch::tensor({{0, 1}, {3, 1}, {0, 0}, {-1, 2}})),
                     torch::tensor({{0, 1}, {1, 0}, {1, 0}, {0, 1}})));
  CHECK(torch::equal(ints.project(torch::tensor({{0.2f, 0.7f}})), torch::tensor({{0, 1}})));
  CHECK(torch::equal(ints.to_categorical(torch::tensor({{0, 1}, {1, 0}})), torch::tensor({1, 0})));

  auto batched = ints.expand({4});
  CHECK(batched->shape() == std::vector<int64_t>{4, 2});
  CHECK(dynamic_cast<const OneHot*>(batched.get())->n() == 2);
  CHECK(batched->rand().sizes() == torch::IntArrayRef({4, 2}));
  CHECK(batched->clone()->repr() == "OneHot(n=2, shape=[4, 2], dtype=int64, device=cpu)");
  CHECK(torch::equal(ints.zero({3}), torch::zeros({3, 2}, torch::kInt64)));  // as TorchRL: not one-hot

  REQUIRE_THROWS_WITH(OneHot(0), Contains("n must be positive, got 0"));
  REQUIRE_THROWS_WITH(OneHot(-2), Contains("n must be positive, got -2"));
  REQUIRE_THROWS_WITH(OneHot(3, {4, 2}), Contains("the last dim of shape [4, 2] must be n = 3"));
  REQUIRE_THROWS_AS(OneHot(2, {2}, torch::kFloat32), c10::ValueError);
  REQUIRE_THROWS_AS(OneHot(2, {-1, 2}), c10::ValueError);
}

TEST_CASE("Composite: a map of specs producing TensorDicts", "[specs]") {
  Composite spec({4});
  spec.set("observation", Unbounded({3}).expand({4})).set("action", Bounded(-1, 1, {1}).expand({4}));
  CHECK(spec.keys() == std::vector<std::string>{"observation", "action"});
  CHECK(spec.at("observation").shape() == std::vector<int64_t>{4, 3});
  CHECK(spec.contains("action"));
  REQUIRE_THROWS_WITH(spec.at("reward"), Contains("no spec \"reward\"") && Contains("observation"));
  REQUIRE_THROWS_WITH(spec.set("bad", Unbounded({3})), Contains("does not start with"));

  auto td = spec.rand();
  CHECK(td.batch_size() == std::vector<int64_t>{4});
  CHECK(spec.is_in(td));
  td.set("action", torch::full({4, 1}, 5.0f));
  CHECK_FALSE(spec.is_in(td));
  REQUIRE_THROWS_WITH(spec.assert_is_in(td), Contains("key \"action\""));
  CHECK(spec.is_in(spec.project(td)));
  CHECK(spec.zero().get("observation").abs().sum().item<float>() == 0.0f);
  REQUIRE_THROWS_WITH(spec.assert_is_in(td.exclude({"observation"})), Contains("missing key \"observation\""));
  CHECK(spec.repr().find("observation: Unbounded(shape=[4, 3]") != std::string::npos);
}

}  // namespace rlobj_test_specs_test
