#include <rlobj/data/samplers.h>

#include <algorithm>
#include <memory>
#include <set>
#include <sstream>
#include <vector>

#include <torch/torch.h>
// After LibTorch, whose glog include defines a CHECK of its own (the CMake build precompiles both
// in this order).
#include <catch2/catch.hpp>

#include <rlobj/data/replay_buffer.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_data_samplers_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using rlobj::data::MiniBatches;
using rlobj::data::MiniBatchesOptions;
using rlobj::data::SamplerWithoutReplacement;
using rlobj::data::SamplerWithoutReplacementOptions;

namespace {

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

// One pass of the sampler: the positions of each batch, in order.
std::vector<std::vector<int64_t>> pass(SamplerWithoutReplacement& s, int64_t storage_size, int64_t batch_size) {
  std::vector<std::vector<int64_t>> batches;
  do {
    batches.push_back(rlobj_test::ints(s.sample(storage_size, batch_size)));
    REQUIRE(batches.size() <= static_cast<size_t>(storage_size));
  } while (!s.ran_out());
  return batches;
}

std::vector<int64_t> concat(const std::vector<std::vector<int64_t>>& batches) {
  std::vector<int64_t> all;
  for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
  return all;
}

// A collector-like batch [n_envs, T] whose "id" numbers its elements row-major.
TensorDict env_time_batch(int64_t n_envs, int64_t t) {
  auto id = torch::arange(n_envs * t, torch::kLong).reshape({n_envs, t});
  return TensorDict({{"id", id},
                     {"observation", id.to(torch::kFloat32).unsqueeze(-1).expand({n_envs, t, 4}).contiguous()},
                     {{"next", "reward"}, -id.to(torch::kFloat32).unsqueeze(-1)}},
                    {n_envs, t});
}

}  // namespace

TEST_CASE("SamplerWithoutReplacement: each pass hands out every position exactly once", "[data][sampler]") {
  SamplerWithoutReplacement s(SamplerWithoutReplacementOptions().seed(3));
  auto first = pass(s, 12, 4);
  CHECK(first.size() == 3);
  for (const auto& b : first) CHECK(b.size() == 4);
  CHECK(sorted(concat(first)) == iota(12));
  CHECK(s.ran_out());
  CHECK(s.remaining() == 0);
  // The next pass is a new permutation, again complete.
  auto second = pass(s, 12, 4);
  CHECK(sorted(concat(second)) == iota(12));
  CHECK(concat(second) != concat(first));
  // The index is what ReplayBuffer::gather and TensorDict::index take.
  auto index = s.sample(12, 5);
  CHECK(index.scalar_type() == torch::kLong);
  CHECK(index.dim() == 1);
  CHECK_FALSE(s.ran_out());
}

TEST_CASE("SamplerWithoutReplacement: seeded and reproducible", "[data][sampler]") {
  SamplerWithoutReplacement a(SamplerWithoutReplacementOptions().seed(7));
  SamplerWithoutReplacement b(SamplerWithoutReplacementOptions().seed(7));
  SamplerWithoutReplacement c(SamplerWithoutReplacementOptions().seed(8));
  for (int i = 0; i < 3; ++i) {
    auto pa = concat(pass(a, 100, 10));
    CHECK(pa == concat(pass(b, 100, 10)));
    CHECK(pa != concat(pass(c, 100, 10)));
  }
  // The default generator is not touched.
  torch::manual_seed(0);
  auto expected = torch::rand({3});
  torch::manual_seed(0);
  pass(a, 100, 10);
  CHECK(torch::equal(torch::rand({3}), expected));
}

TEST_CASE("SamplerWithoutReplacement: a batch size that does not divide the storage", "[data][sampler]") {
  SECTION("without drop_last the last batch holds the rest (TorchRL)") {
    SamplerWithoutReplacement s;
    auto batches = pass(s, 10, 4);
    REQUIRE(batches.size() == 3);
    CHECK(batches[2].size() == 2);
    CHECK(sorted(concat(batches)) == iota(10));
  }
  SECTION("with drop_last every batch is full and the rest is left out") {
    SamplerWithoutReplacement s(SamplerWithoutReplacementOptions().drop_last(true));
    auto batches = pass(s, 10, 4);
    REQUIRE(batches.size() == 2);
    auto all = concat(batches);
    CHECK(all.size() == 8);
    CHECK(std::set<int64_t>(all.begin(), all.end()).size() == 8);
    CHECK(s.remaining() == 2);
    // The next sample starts a new pass (the two left-over positions are not handed out).
    CHECK(s.sample(10, 4).numel() == 4);
    CHECK(s.remaining() == 6);
  }
}

TEST_CASE("SamplerWithoutReplacement: shuffle(false), storage changes, reset", "[data][sampler]") {
  SamplerWithoutReplacement ordered(SamplerWithoutReplacementOptions().shuffle(false));
  CHECK(concat(pass(ordered, 7, 3)) == iota(7));

  SamplerWithoutReplacement s;
  s.sample(10, 4);
  CHECK(s.remaining() == 6);
  // A storage that grew: a new pass over the new size.
  s.sample(20, 4);
  CHECK(s.remaining() == 16);
  s.reset();
  CHECK(s.remaining() == 0);
  CHECK_FALSE(s.ran_out());
  CHECK(sorted(concat(pass(s, 20, 5))) == iota(20));
}

TEST_CASE("SamplerWithoutReplacement: clear errors", "[data][sampler]") {
  SamplerWithoutReplacement s;
  REQUIRE_THROWS_WITH(s.sample(10, 0), Contains("batch_size must be positive, got 0"));
  REQUIRE_THROWS_WITH(s.sample(10, -3), Contains("batch_size must be positive, got -3"));
  REQUIRE_THROWS_WITH(s.sample(0, 4), Contains("the storage is empty"));
  SamplerWithoutReplacement d(SamplerWithoutReplacementOptions().drop_last(true));
  REQUIRE_THROWS_WITH(d.sample(3, 4), Contains("batch_size (4) must not exceed the storage size (3)"));
  CHECK_THROWS_AS(s.sample(10, 0), c10::ValueError);
}

TEST_CASE("SamplerWithoutReplacement: save and load continue the pass and the generator", "[data][sampler]") {
  SamplerWithoutReplacement s(SamplerWithoutReplacementOptions().seed(11));
  s.sample(30, 7);
  torch::serialize::OutputArchive out;
  s.save(out);
  std::stringstream bytes;
  out.save_to(bytes);

  auto rest = concat(pass(s, 30, 7));
  auto next_pass = concat(pass(s, 30, 7));

  SamplerWithoutReplacement restored(SamplerWithoutReplacementOptions().seed(999));
  torch::serialize::InputArchive in;
  in.load_from(bytes);
  restored.load(in);
  CHECK(restored.remaining() == 23);
  CHECK(concat(pass(restored, 30, 7)) == rest);
  CHECK(concat(pass(restored, 30, 7)) == next_pass);

  // Not a sampler's archive: refused, and the sampler is unchanged.
  torch::serialize::OutputArchive other;
  rlobj::write_format(other, "rlobj.ReplayBuffer");
  std::stringstream other_bytes;
  other.save_to(other_bytes);
  torch::serialize::InputArchive other_in;
  other_in.load_from(other_bytes);
  REQUIRE_THROWS_WITH(restored.load(other_in), Contains("expected a rlobj.SamplerWithoutReplacement"));
}

TEST_CASE("SamplerWithoutReplacement: an archive whose order repeats or leaves the range is refused",
          "[data][sampler][reliability]") {
  SamplerWithoutReplacement s(SamplerWithoutReplacementOptions().seed(11));
  s.sample(6, 2);
  const auto archive_with = [&](const torch::Tensor& order, int64_t ran_out) {
    torch::serialize::OutputArchive out;
    rlobj::write_format(out, "rlobj.SamplerWithoutReplacement");
    out.write("counters", torch::tensor({int64_t{6}, int64_t{2}, ran_out}, torch::kInt64));
    out.write("generator", at::make_generator<at::CPUGeneratorImpl>(3).get_state());
    out.write("order", order);
    auto bytes = std::make_shared<std::stringstream>();
    out.save_to(*bytes);
    return bytes;
  };
  const auto load = [&](const std::shared_ptr<std::stringstream>& bytes) {
    torch::serialize::InputArchive in;
    in.load_from(*bytes);
    s.load(in);
  };
  const auto before = s.remaining();
  CHECK_THROWS_WITH(load(archive_with(torch::tensor({0, 1, 1, 3, 4, 5}, torch::kLong), 0)),
                    Contains("not a permutation of [0, 6)"));
  CHECK_THROWS_WITH(load(archive_with(torch::tensor({0, 1, 2, 3, 4, 6}, torch::kLong), 0)),
                    Contains("not a permutation of [0, 6)"));
  CHECK_THROWS_WITH(load(archive_with(torch::tensor({5, 4, 3, 2, 1, 0}, torch::kLong), 7)),
                    Contains("ran_out flag 7"));
  CHECK(s.remaining() == before);  // nothing changed
  CHECK_NOTHROW(load(archive_with(torch::tensor({5, 4, 3, 2, 1, 0}, torch::kLong), 0)));
  CHECK(s.remaining() == 4);
}

TEST_CASE("SamplerWithoutReplacement: epochs over a ReplayBuffer", "[data][sampler]") {
  rlobj::data::ReplayBuffer rb(rlobj::data::ReplayBufferOptions(64));
  rb.extend(env_time_batch(4, 8));  // 32 transitions
  SamplerWithoutReplacement s(SamplerWithoutReplacementOptions().seed(1));
  std::vector<int64_t> ids;
  do {
    TensorDict mb = rb.gather(s.sample(rb.size(), 8));
    CHECK(mb.batch_size() == std::vector<int64_t>{8});
    auto id = rlobj_test::ints(mb.get("id"));
    ids.insert(ids.end(), id.begin(), id.end());
  } while (!s.ran_out());
  CHECK(sorted(ids) == iota(32));
}

TEST_CASE("MiniBatches: an epoch begun while another runs stops the first with an error, not short",
          "[data][sampler][reliability]") {
  TensorDict batch = env_time_batch(8, 16);  // 128 elements: 4 minibatches of 32
  MiniBatches minibatches(MiniBatchesOptions(32).seed(5));
  auto first = minibatches.epoch(batch);
  auto it = first.begin();
  ++it;  // two minibatches of the first epoch seen
  auto second = minibatches.epoch(batch);
  int64_t count = 0;
  for (const TensorDict& mb : second) {
    (void)mb;
    ++count;
  }
  CHECK(count == 4);  // the second epoch is whole
  CHECK_THROWS_WITH(++it, Contains("another epoch was started while this one was running"));
}

TEST_CASE("MiniBatches: every element once per epoch, in a new order each epoch", "[data][sampler]") {
  TensorDict batch = env_time_batch(8, 16);  // [8, 16]: 128 elements
  MiniBatches minibatches(MiniBatchesOptions(32).seed(5));
  std::vector<std::vector<int64_t>> orders;
  for (int epoch = 0; epoch < 4; ++epoch) {
    auto e = minibatches.epoch(batch);
    CHECK(e.size() == 4);
    std::vector<int64_t> ids;
    int64_t count = 0;
    for (const TensorDict& mb : e) {
      ++count;
      REQUIRE(mb.batch_size() == std::vector<int64_t>{32});
      // Each row is one whole element: its entries agree with its id.
      auto id = mb.get("id");
      CHECK(torch::equal(mb.get("observation").select(1, 3), id.to(torch::kFloat32)));
      CHECK(torch::equal(mb.get({"next", "reward"}).squeeze(-1), -id.to(torch::kFloat32)));
      auto v = rlobj_test::ints(id);
      ids.insert(ids.end(), v.begin(), v.end());
    }
    CHECK(count == 4);
    CHECK(sorted(ids) == iota(128));
    orders.push_back(ids);
  }
  CHECK(orders[0] != orders[1]);
  CHECK(orders[1] != orders[2]);
  CHECK(minibatches.num_batches(128) == 4);

  // Same seed, same epochs.
  MiniBatches again(MiniBatchesOptions(32).seed(5));
  std::vector<int64_t> ids;
  for (const TensorDict& mb : again.epoch(batch)) {
    auto v = rlobj_test::ints(mb.get("id"));
    ids.insert(ids.end(), v.begin(), v.end());
  }
  CHECK(ids == orders[0]);

  // shuffle(false): the data's own (flattened, row-major) order.
  MiniBatches ordered(MiniBatchesOptions(64).shuffle(false));
  ids.clear();
  for (const TensorDict& mb : ordered.epoch(batch)) {
    auto v = rlobj_test::ints(mb.get("id"));
    ids.insert(ids.end(), v.begin(), v.end());
  }
  CHECK(ids == iota(128));
}

TEST_CASE("MiniBatches: an epoch abandoned half-way does not shorten the next one", "[data][sampler]") {
  TensorDict batch = env_time_batch(2, 10);
  MiniBatches minibatches(MiniBatchesOptions(5).seed(0));
  for (const TensorDict& mb : minibatches.epoch(batch)) {
    (void)mb;
    break;
  }
  std::vector<int64_t> ids;
  for (const TensorDict& mb : minibatches.epoch(batch)) {
    auto v = rlobj_test::ints(mb.get("id"));
    ids.insert(ids.end(), v.begin(), v.end());
  }
  CHECK(sorted(ids) == iota(20));
}

TEST_CASE("MiniBatches: drop_last leaves the remainder out", "[data][sampler]") {
  TensorDict batch = env_time_batch(2, 5);  // 10 elements
  MiniBatches minibatches(MiniBatchesOptions(4).drop_last(true).seed(2));
  auto e = minibatches.epoch(batch);
  CHECK(e.size() == 2);
  std::vector<int64_t> ids;
  for (const TensorDict& mb : e) {
    CHECK(mb.batch_size() == std::vector<int64_t>{4});
    auto v = rlobj_test::ints(mb.get("id"));
    ids.insert(ids.end(), v.begin(), v.end());
  }
  CHECK(std::set<int64_t>(ids.begin(), ids.end()).size() == 8);
}

TEST_CASE("MiniBatches: clear errors", "[data][sampler]") {
  TensorDict batch = env_time_batch(4, 25);  // 100 elements
  REQUIRE_THROWS_WITH(MiniBatches(MiniBatchesOptions(0)), Contains("MiniBatches: batch_size must be positive, got 0"));
  REQUIRE_THROWS_WITH(MiniBatches(MiniBatchesOptions(-2)), Contains("batch_size must be positive, got -2"));
  MiniBatches minibatches(MiniBatchesOptions(64));
  REQUIRE_THROWS_WITH(minibatches.epoch(batch),
                      Contains("batch_size (64) does not divide the 100 elements of the data") &&
                          Contains("drop_last(true)"));
  CHECK_THROWS_AS(minibatches.epoch(batch), c10::ValueError);
  REQUIRE_THROWS_WITH(minibatches.epoch(batch.index({torch::indexing::Slice(0, 0)})),
                      Contains("the data holds no element"));
  REQUIRE_THROWS_WITH(minibatches.epoch(TensorDict({{"x", torch::zeros({3})}}, {})),
                      Contains("at least one batch dim"));
  MiniBatches dropping(MiniBatchesOptions(128).drop_last(true));
  REQUIRE_THROWS_WITH(dropping.epoch(batch), Contains("batch_size (128) exceeds the 100 elements"));
  // An epoch is iterated once.
  MiniBatches ok(MiniBatchesOptions(50));
  auto e = ok.epoch(batch);
  for (const TensorDict& mb : e) (void)mb;
  REQUIRE_THROWS_WITH(e.begin(), Contains("an epoch is iterated once"));
}

TEST_CASE("MiniBatches: save and load restore the order of the next epochs", "[data][sampler]") {
  TensorDict batch = env_time_batch(3, 4);
  MiniBatches a(MiniBatchesOptions(4).seed(9));
  for (const TensorDict& mb : a.epoch(batch)) (void)mb;
  torch::serialize::OutputArchive out;
  a.save(out);
  std::stringstream bytes;
  out.save_to(bytes);
  MiniBatches b(MiniBatchesOptions(4).seed(1));
  torch::serialize::InputArchive in;
  in.load_from(bytes);
  b.load(in);
  auto ids = [&](MiniBatches& m) {
    std::vector<int64_t> all;
    for (const TensorDict& mb : m.epoch(batch)) {
      auto v = rlobj_test::ints(mb.get("id"));
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  CHECK(ids(a) == ids(b));
  CHECK(ids(a) == ids(b));
}

}  // namespace rlobj_test_data_samplers_test
