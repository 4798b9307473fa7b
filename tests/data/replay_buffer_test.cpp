#include <rlobj/data/replay_buffer.h>

#include <cstdio>
#include <filesystem>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_data_replay_buffer_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using rlobj::data::ReplayBuffer;
using rlobj::data::ReplayBufferOptions;

namespace {

// n transitions whose "id" is first, first+1, ...
TensorDict transitions(int64_t first, int64_t n) {
  auto id = torch::arange(first, first + n, torch::kLong);
  return TensorDict({{"id", id},
                     {"observation", id.to(torch::kFloat32).unsqueeze(-1).expand({n, 3}).contiguous()},
                     {{"next", "reward"}, -id.to(torch::kFloat32).unsqueeze(-1)},
                     {{"next", "done"}, (id % 2 == 0).unsqueeze(-1)}},
                    {n});
}

std::vector<int64_t> stored_ids(ReplayBuffer& rb) { return rlobj_test::ints(rb.storage().get("id")); }

}  // namespace

TEST_CASE("ReplayBuffer: extend and sample keep keys, dtypes and shapes", "[data]") {
  ReplayBuffer rb(ReplayBufferOptions(100).seed(1));
  CHECK(rb.empty());
  rb.extend(transitions(0, 10));
  CHECK(rb.size() == 10);
  auto batch = rb.sample(32);
  CHECK(batch.batch_size() == std::vector<int64_t>{32});
  CHECK(batch.keys(true, true) == std::vector<rlobj::NestedKey>{"id", "observation", {"next", "reward"}, {"next", "done"}});
  CHECK(batch.get("observation").sizes() == torch::IntArrayRef({32, 3}));
  CHECK(batch.get({"next", "done"}).scalar_type() == torch::kBool);
  // Each sampled row is a whole transition: entries agree with its id.
  auto id = batch.get("id").to(torch::kFloat32);
  CHECK(torch::equal(batch.get("observation").select(1, 2), id));
  CHECK(torch::equal(batch.get({"next", "reward"}).squeeze(-1), -id));
  CHECK(torch::equal(batch.get({"next", "done"}).squeeze(-1), batch.get("id") % 2 == 0));
  // Batch dims are flattened: a [2, 5] rollout adds 10 transitions.
  rb.extend(transitions(10, 10).reshape({2, 5}));
  CHECK(rb.size() == 20);
  CHECK(stored_ids(rb).back() == 19);
}

TEST_CASE("ReplayBuffer: ring-buffer overwrite at capacity", "[data]") {
  ReplayBuffer rb(ReplayBufferOptions(5));
  rb.extend(transitions(0, 3));
  rb.extend(transitions(3, 4));  // wraps: 0 and 1 are overwritten
  CHECK(rb.size() == 5);
  CHECK(rb.cursor() == 2);
  CHECK(stored_ids(rb) == std::vector<int64_t>{2, 3, 4, 5, 6});
  rb.extend(transitions(100, 12));  // more than the capacity: the last 5 survive
  CHECK(stored_ids(rb) == std::vector<int64_t>{107, 108, 109, 110, 111});
  auto ids = rlobj_test::ints(rb.sample(200).get("id"));
  for (auto i : ids) CHECK((i >= 107 && i <= 111));
}

TEST_CASE("ReplayBuffer: sampling is uniform", "[data]") {
  ReplayBuffer rb(ReplayBufferOptions(10).seed(3));
  rb.extend(transitions(0, 10));
  const int64_t n = 100000;
  auto counts = torch::bincount(rb.sample(n).get("id"), {}, 10).to(torch::kFloat64);
  // Pearson's chi-square with 9 degrees of freedom: P(X > 37.7) < 1e-5.
  const double expected = n / 10.0;
  const double chi2 = ((counts - expected).pow(2) / expected).sum().item<double>();
  CHECK(chi2 < 37.7);
  CHECK(counts.min().item<double>() > 0);
}

TEST_CASE("ReplayBuffer: seeded sampler", "[data]") {
  auto draw = [](uint64_t seed) {
    ReplayBuffer rb(ReplayBufferOptions(50).seed(seed));
    rb.extend(transitions(0, 50));
    return rb.sample(64).get("id");
  };
  CHECK(torch::equal(draw(7), draw(7)));
  CHECK_FALSE(torch::equal(draw(7), draw(8)));
}

TEST_CASE("ReplayBuffer: save and load round trip", "[data]") {
  const std::string path = (std::filesystem::temp_directory_path() / "rlobj_rb_test.pt").string();
  ReplayBuffer rb(ReplayBufferOptions(8).seed(5));
  rb.extend(transitions(0, 11));  // wrapped
  rb.sample(3);                   // advance the sampler
  rb.save(path);
  CHECK(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));

  ReplayBuffer restored(ReplayBufferOptions(8).seed(999));
  restored.load(path);
  CHECK(restored.size() == 8);
  CHECK(restored.cursor() == rb.cursor());
  CHECK(stored_ids(restored) == stored_ids(rb));
  CHECK(torch::equal(restored.sample(16).get("observation"), rb.sample(16).get("observation")));
  restored.extend(transitions(20, 2));
  rb.extend(transitions(20, 2));
  CHECK(stored_ids(restored) == stored_ids(rb));

  ReplayBuffer wrong(ReplayBufferOptions(9));
  REQUIRE_THROWS_WITH(wrong.load(path), Contains("capacity 8"));
  std::remove(path.c_str());
}

TEST_CASE("ReplayBuffer: bad input is a clear error", "[data]") {
  REQUIRE_THROWS_AS(ReplayBuffer(ReplayBufferOptions(0)), c10::ValueError);
  ReplayBuffer rb(ReplayBufferOptions(10));
  REQUIRE_THROWS_WITH(rb.sample(4), Contains("empty"));
  REQUIRE_THROWS_WITH(rb.sample(), Contains("no default batch_size"));
  REQUIRE_THROWS_WITH(rb.extend(transitions(0, 1).index({0})), Contains("at least one batch dim"));
  rb.extend(transitions(0, 4));
  REQUIRE_THROWS_AS(rb.sample(0), c10::ValueError);
  REQUIRE_THROWS_WITH(rb.extend(transitions(0, 2).exclude({"id"})), Contains("but the storage holds"));
  auto renamed = transitions(0, 2);
  renamed.set("other", renamed.pop("id"));
  REQUIRE_THROWS_WITH(rb.extend(renamed), Contains("entry \"other\" is not in the storage"));
  auto wide = transitions(0, 2);
  wide.set("observation", torch::zeros({2, 4}));
  REQUIRE_THROWS_WITH(rb.extend(wide), Contains("entry \"observation\" is float32 with feature shape [4] but the storage "
                                                "holds float32 [3]"));
  auto doubles = transitions(0, 2);
  doubles.set({"next", "reward"}, torch::zeros({2, 1}, torch::kFloat64));
  REQUIRE_THROWS_WITH(rb.extend(doubles), Contains("\"next.reward\" is float64"));
  CHECK(rb.size() == 4);  // failed writes change nothing
  ReplayBuffer with_default(ReplayBufferOptions(10).batch_size(6));
  with_default.extend(transitions(0, 3));
  CHECK(with_default.sample().batch_size() == std::vector<int64_t>{6});
}

}  // namespace rlobj_test_data_replay_buffer_test
