#include <rlobj/specs.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

using Catch::Matchers::Contains;
using rlobj::Bounded;
using rlobj::Categorical;
using rlobj::Composite;
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
