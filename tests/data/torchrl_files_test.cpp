// Offline data in TorchRL's files (rlobj/data/torchrl_files.h): a replay buffer TorchRL 0.14.1
// dumped (tests/data/reference/torchrl-0.14.1/replay_buffer, made by
// tools/reference/cases/replay_buffer.py) loads position for position, and what rlobj dumps is
// TorchRL's layout, file for file. The Python half (TorchRL loads what rlobj dumps, and dumps it
// back) is in the ctest entry interop.torchrl.

#include <rlobj/data/torchrl_files.h>
#include <rlobj/interop.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "objectives/json_reference.h"
#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_data_torchrl_files {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using rlobj::TensorDict;

const std::string kDir = std::string(RLOBJ_TEST_DATA_DIR) + "/reference/torchrl-0.14.1";

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// A scratch folder, emptied when the test case starts and ends (and removed with the process's).
struct Scratch {
  fs::path dir = rlobj_test::process_scratch("rlobj_torchrl_files") / "case";
  Scratch() { fs::remove_all(dir); }
  ~Scratch() { fs::remove_all(dir); }
};

TEST_CASE("A replay buffer TorchRL 0.14.1 dumped loads position for position", "[data][torchrl_files]") {
  const auto ref = rlobj_test::read_json_file(kDir + "/replay_buffer_torchrl.json");
  auto rb = rlobj::data::load_torchrl_buffer(kDir + "/replay_buffer", /*seed=*/3);
  CHECK(rb.capacity() == ref["capacity"].get<int64_t>());
  CHECK(rb.size() == ref["len"].get<int64_t>());
  CHECK(rb.cursor() == ref["cursor"].get<int64_t>());
  CHECK(rb.options().batch_size() == ref["batch_size"].get<int64_t>());
  const TensorDict rows = rb.gather(torch::arange(rb.size(), torch::kLong));
  size_t compared = 0;
  for (const auto& item : ref["storage"].items()) {
    INFO("entry " << item.key());
    const torch::Tensor want = rlobj_test::json_tensor_typed(item.value());
    const torch::Tensor got = rows.get(rlobj_test::dotted_key(item.key()));
    CHECK(got.scalar_type() == want.scalar_type());
    CHECK(torch::equal(got, want));  // bit for bit
    ++compared;
  }
  CHECK(compared == 7);
  CHECK(rb.sample().batch_size() == TensorDict::BatchSize{4});
  // assign() refuses rows and a cursor that do not fit, and changes nothing then.
  REQUIRE_THROWS_WITH(rb.assign(rows.index({torch::indexing::Slice(0, 5)}), 2),
                      Contains("5 rows with the next write at 2 do not fit capacity 12"));
  REQUIRE_THROWS_WITH(rb.assign(rows, 12), Contains("do not fit capacity 12"));
  CHECK(rb.size() == 12);
  CHECK(torch::equal(rb.gather(torch::arange(12, torch::kLong)).get("observation"), rows.get("observation")));
  // The buffer keeps going where TorchRL's would: the next row lands at the cursor.
  TensorDict one = rows.index({torch::indexing::Slice(0, 1)}).clone();
  one.set("step_count", torch::full({1, 1}, 99, torch::kLong));
  rb.extend(one);
  CHECK(rb.gather(torch::tensor({ref["cursor"].get<int64_t>()})).get("step_count").item<int64_t>() == 99);
}

TEST_CASE("dump_torchrl_buffer writes TorchRL's layout, file for file", "[data][torchrl_files]") {
  Scratch scratch;
  auto rb = rlobj::data::load_torchrl_buffer(kDir + "/replay_buffer");
  const std::string out = (scratch.dir / "dumped").string();
  rlobj::data::dump_torchrl_buffer(rb, out);
  CHECK_FALSE(fs::exists(rlobj::temp_path_of(out)));
  // Every file TorchRL wrote has the same bytes, but for its prefetch queue's pickle (optional
  // to TorchRL's loads) and the writer's write count (rlobj does not count overwritten rows).
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kDir + "/replay_buffer")) {
    if (!entry.is_regular_file()) continue;
    const fs::path rel = fs::relative(entry.path(), kDir + "/replay_buffer");
    if (rel == "README.md" || rel == "prefetch.pkl") continue;
    INFO(rel.string());
    REQUIRE(fs::exists(fs::path(out) / rel));
    if (rel == fs::path("writer") / "metadata.json") {
      CHECK(bytes_of(fs::path(out) / rel) == R"({"cursor": 3, "write_count": 12})");
    } else {
      CHECK(bytes_of(fs::path(out) / rel) == bytes_of(entry.path()));
    }
    ++files;
  }
  CHECK(files == 12);
  // And it loads back the same.
  auto again = rlobj::data::load_torchrl_buffer(out);
  CHECK(again.cursor() == rb.cursor());
  const auto all = torch::arange(rb.size(), torch::kLong);
  for (const auto& item : rb.gather(all).items(true, true)) {
    CHECK(torch::equal(again.gather(all).get(item.first), item.second.tensor()));
  }
  SECTION("never over an existing path") {
    REQUIRE_THROWS_WITH(rlobj::data::dump_torchrl_buffer(rb, out), Contains("exists; remove it first"));
  }
  SECTION("a buffer that is not full: unwritten positions as zeros, cursor at len") {
    rlobj::data::ReplayBuffer small(rlobj::data::ReplayBufferOptions(10));
    small.extend(rb.gather(torch::arange(3, torch::kLong)));
    const std::string path = (scratch.dir / "small").string();
    rlobj::data::dump_torchrl_buffer(small, path);
    const TensorDict storage = rlobj::data::load_memmap(path + "/storage");
    CHECK(storage.batch_size() == TensorDict::BatchSize{10});
    CHECK(storage.get("observation").narrow(0, 3, 7).abs().sum().item<double>() == 0);
    auto back = rlobj::data::load_torchrl_buffer(path);
    CHECK(back.size() == 3);
    CHECK(back.cursor() == 3);
    CHECK(back.options().batch_size() == 0);  // null in buffer_metadata.json
  }
}

TEST_CASE("TorchRL's files: damaged or unsupported folders are clear errors", "[data][torchrl_files]") {
  Scratch scratch;
  auto rb = rlobj::data::load_torchrl_buffer(kDir + "/replay_buffer");
  const fs::path out = scratch.dir / "buf";
  rlobj::data::dump_torchrl_buffer(rb, out.string());
  SECTION("a tensor file shorter than its metadata") {
    fs::resize_file(out / "storage" / "next" / "reward.memmap", 40);
    REQUIRE_THROWS_WITH(rlobj::data::load_torchrl_buffer(out.string()),
                        Contains("reward.memmap\" holds 40 bytes; entry \"next.reward\" (torch.float64 [12, 1]) needs 96"));
  }
  SECTION("an unknown dtype") {
    auto meta = rlobj_test::read_json_file((out / "storage" / "meta.json").string());
    meta["action"]["dtype"] = "torch.complex64";
    std::ofstream((out / "storage" / "meta.json").string()) << meta.dump();
    REQUIRE_THROWS_WITH(rlobj::data::load_torchrl_buffer(out.string()),
                        Contains("entry \"action\" has dtype \"torch.complex64\", which rlobj does not read"));
  }
  SECTION("counters that do not fit the capacity") {
    std::ofstream((out / "writer" / "metadata.json").string()) << R"({"cursor": 12, "write_count": 15})";
    REQUIRE_THROWS_WITH(rlobj::data::load_torchrl_buffer(out.string()),
                        Contains("len 12 and cursor 12 do not fit a capacity of 12"));
  }
  SECTION("a missing file, and broken JSON") {
    fs::remove(out / "buffer_metadata.json");
    REQUIRE_THROWS_WITH(rlobj::data::load_torchrl_buffer(out.string()), Contains("buffer_metadata.json\""));
    std::ofstream((out / "buffer_metadata.json").string()) << "{not json";
    REQUIRE_THROWS_WITH(rlobj::data::load_torchrl_buffer(out.string()), Contains("is not valid JSON"));
  }
  SECTION("a pytree storage") {
    std::ofstream((out / "storage" / "storage_metadata.json").string())
        << R"({"metadata": {}, "is_pytree": true, "len": 12})";
    REQUIRE_THROWS_WITH(rlobj::data::load_torchrl_buffer(out.string()), Contains("(pytree)"));
  }
  REQUIRE_THROWS_WITH(rlobj::data::dump_torchrl_buffer(*std::make_unique<rlobj::data::ReplayBuffer>(
                                                           rlobj::data::ReplayBufferOptions(4)),
                                                       (scratch.dir / "empty").string()),
                      Contains("the buffer is empty"));
}

// The ctest entry examples.sac_pendulum_dataset_loads: what sac_pendulum --save-dataset wrote.
TEST_CASE("examples: sac_pendulum's --save-dataset folder loads", "[.dataset]") {
  const char* dir = std::getenv("RLOBJ_DATASET_DIR");
  REQUIRE(dir != nullptr);
  auto rb = rlobj::data::load_torchrl_buffer(dir);
  CHECK(rb.size() == 300);
  const TensorDict rows = rb.gather(torch::arange(rb.size(), torch::kLong));
  for (const char* key : {"observation", "action"}) CHECK(rows.contains(key));
  CHECK(rows.get("observation").sizes() == torch::IntArrayRef({300, 3}));
  CHECK(rows.get({"next", "reward"}).sizes() == torch::IntArrayRef({300, 1}));
  // Pendulum's transitions in the order they happened: the next observation of row i is the
  // observation of row i + 1 within the first episode (200 steps, one environment), which ends
  // truncated at row 199.
  CHECK(torch::equal(rows.get({"next", "observation"}).narrow(0, 0, 199), rows.get("observation").narrow(0, 1, 199)));
  CHECK(rows.get({"next", "done"})[199].item<bool>());
  CHECK_FALSE(rows.get({"next", "terminated"}).any().item<bool>());
  CHECK(rows.get("action").abs().max().item<float>() <= 2.0f);
}

// The C++ halves of interop.torchrl's replay-buffer round trip (tests/interop/check_torchrl.cmake).
TEST_CASE("interop.torchrl: rlobj's replay buffer for TorchRL", "[.interop-torchrl-write]") {
  const char* dir = std::getenv("RLOBJ_TORCHRL_DIR");
  REQUIRE(dir != nullptr);
  // 40 transitions into a buffer of 32: wrapped, cursor 8.
  torch::manual_seed(5);
  TensorDict td({40});
  td.set("observation", torch::randn({40, 3}));
  td.set("action", torch::rand({40, 1}) * 4 - 2);
  td.set({"next", "reward"}, torch::randn({40, 1}, torch::kFloat64));
  td.set({"next", "done"}, torch::rand({40, 1}) < 0.2);
  td.set("collector_step", torch::arange(40, torch::kLong).unsqueeze(-1));
  rlobj::data::ReplayBuffer rb(rlobj::data::ReplayBufferOptions(32).batch_size(16));
  rb.extend(td);
  rlobj::data::dump_torchrl_buffer(rb, std::string(dir) + "/rlobj_buffer");
  rlobj::StateDict expected("entry");
  for (const auto& item : rb.gather(torch::arange(32, torch::kLong)).items(true, true)) {
    expected.insert(item.first.str(), item.second.tensor());
  }
  expected.insert("cursor", torch::tensor(rb.cursor()));
  rlobj::write_state_dict(expected, std::string(dir) + "/rlobj_buffer_expected.pt");
}

TEST_CASE("interop.torchrl: TorchRL's dump of rlobj's replay buffer", "[.interop-torchrl-read]") {
  const char* dir = std::getenv("RLOBJ_TORCHRL_DIR");
  REQUIRE(dir != nullptr);
  const auto expected = rlobj::read_state_dict(std::string(dir) + "/rlobj_buffer_expected.pt");
  auto rb = rlobj::data::load_torchrl_buffer(std::string(dir) + "/torchrl_buffer");
  CHECK(rb.cursor() == expected["cursor"].item<int64_t>());
  CHECK(rb.options().batch_size() == 16);
  const TensorDict rows = rb.gather(torch::arange(32, torch::kLong));
  for (const auto& item : expected) {
    if (item.key() == "cursor") continue;
    INFO(item.key());
    CHECK(torch::equal(rows.get(rlobj_test::dotted_key(item.key())), item.value()));
  }
}

}  // namespace rlobj_test_data_torchrl_files
