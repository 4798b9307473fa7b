// Checkpoint files: atomic, checked writes; verified, all-or-nothing loads.

#include <rlobj/collectors/sync.h>
#include <rlobj/data/replay_buffer.h>
#include <rlobj/envs/pendulum.h>
#include <rlobj/objectives/ddpg.h>
#include <rlobj/serialize.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>
#include <catch2/catch.hpp>
#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include "objectives/reference.h"
#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_serialize_test {

using Catch::Matchers::Contains;
using rlobj::TensorDict;
using rlobj::data::ReplayBuffer;
using rlobj::data::ReplayBufferOptions;
namespace fs = std::filesystem;

namespace {

using rlobj_test::slurp;
using rlobj_test::spit;

/// A file in this process's scratch folder (removed when the process ends).
fs::path scratch(const std::string& name) { return rlobj_test::process_scratch("rlobj_serialize_test") / name; }

TensorDict transitions(int64_t first, int64_t n) {
  auto id = torch::arange(first, first + n, torch::kLong);
  return TensorDict({{"id", id},
                     {"observation", torch::sin(id.to(torch::kFloat32)).unsqueeze(-1).expand({n, 3}).contiguous()},
                     {{"next", "reward"}, -id.to(torch::kFloat32).unsqueeze(-1)}},
                    {n});
}

}  // namespace

TEST_CASE("crc32 is zip's CRC-32", "[serialize]") {
  const std::string check = "123456789";  // the standard check value
  CHECK(rlobj::detail::crc32(check.data(), check.size()) == 0xCBF43926u);
  CHECK(rlobj::detail::crc32(nullptr, 0) == 0u);
}

TEST_CASE("load_archive reads regular files only, and names the file", "[serialize][validation]") {
  torch::serialize::InputArchive archive;
  if (std::filesystem::exists("/dev/zero")) {  // would never end if read whole
    REQUIRE_THROWS_WITH(rlobj::load_archive(archive, "/dev/zero"),
                        Contains("load_archive: \"/dev/zero\" is not a regular file"));
  }
  const auto dir = std::filesystem::temp_directory_path();
  REQUIRE_THROWS_WITH(rlobj::load_archive(archive, dir.string()), Contains("is not a regular file"));
  REQUIRE_THROWS_WITH(rlobj::load_archive(archive, (dir / "rlobj_no_such_file.pt").string()),
                      Contains("cannot open") && Contains("rlobj_no_such_file.pt"));
  // An empty regular file is read (zero bytes) and refused as an archive, naming it.
  const auto empty = dir / ("rlobj_empty_" + std::to_string(::getpid()) + ".pt");
  { std::ofstream(empty.string()); }
  REQUIRE_THROWS_WITH(rlobj::load_archive(archive, empty.string()), Contains(empty.string()));
  std::filesystem::remove(empty);
}

TEST_CASE("A flipped byte inside any record of a checkpoint is an error naming the record", "[serialize]") {
  ReplayBuffer rb(ReplayBufferOptions(100).seed(3));
  rb.extend(transitions(0, 40));
  const auto path = scratch("flip.pt");
  rb.save(path.string());
  const std::string good = slurp(path);
  // Every record's data, at its start, middle and end.
  std::istringstream stream(good);
  caffe2::serialize::PyTorchStreamReader reader(&stream);
  int flips = 0;
  for (const auto& name : reader.getAllRecords()) {
    // The tensors' bytes (stored uncompressed; a flip anywhere else fails the zip or pickle
    // checks too, but may be reported under a neighbouring record).
    if (name.rfind("data/", 0) != 0) continue;
    const size_t offset = reader.getRecordOffset(name);
    const size_t size = std::get<1>(reader.getRecord(name));
    if (size == 0) continue;
    for (size_t at : {offset, offset + size / 2, offset + size - 1}) {
      std::string bad = good;
      bad[at] = static_cast<char>(bad[at] ^ 0x10);
      spit(path, bad);
      INFO("record " << name << ", byte " << at);
      ReplayBuffer other(ReplayBufferOptions(100));
      REQUIRE_THROWS_WITH(other.load(path.string()), Contains("record \"" + name + "\""));
      CHECK(other.empty());  // nothing loaded
      ++flips;
    }
  }
  CHECK(flips >= 9);
  spit(path, good);
  ReplayBuffer restored(ReplayBufferOptions(100));
  restored.load(path.string());
  CHECK(restored.size() == 40);
  // A truncated file is an error too.
  spit(path, good.substr(0, good.size() / 2));
  REQUIRE_THROWS_WITH(ReplayBuffer(ReplayBufferOptions(100)).load(path.string()), Contains("flip.pt"));
  fs::remove_all(path.parent_path());
}

TEST_CASE("ReplayBuffer: a checkpoint holds the filled rows only", "[serialize][data]") {
  ReplayBuffer rb(ReplayBufferOptions(1000000).seed(0));
  rb.extend(transitions(0, 1500));
  const auto path = scratch("rows.pt");
  rb.save(path.string());
  // 1,500 rows of 4 floats and 1 int64: ~36 KB of data, not 1M rows (~24 MB).
  CHECK(fs::file_size(path) < 200 * 1024);
  ReplayBuffer restored(ReplayBufferOptions(1000000).seed(0));
  restored.load(path.string());
  CHECK(torch::equal(restored.storage().get("id"), rb.storage().get("id")));
  CHECK(torch::equal(restored.sample(64).get("id"), rb.sample(64).get("id")));  // sampler state too
  fs::remove_all(path.parent_path());
}

TEST_CASE("ReplayBuffer: a failed load leaves the buffer as it was", "[serialize][data]") {
  ReplayBuffer rb(ReplayBufferOptions(50).seed(1));
  rb.extend(transitions(0, 30));
  const auto before = rb.storage().get("id").clone();
  const auto sampler_before = rb.generator().get_state();
  const auto path = scratch("other.pt");
  SECTION("another capacity") {
    ReplayBuffer small(ReplayBufferOptions(10));
    small.extend(transitions(100, 5));
    small.save(path.string());
    REQUIRE_THROWS_WITH(rb.load(path.string()), Contains("capacity 10 but this buffer has 50"));
  }
  SECTION("another kind of checkpoint") {
    auto env = rlobj::envs::Pendulum();
    rlobj::collectors::SyncDataCollector collector(env, [](TensorDict td) { return td; }, 1, 10, 10);
    torch::serialize::OutputArchive archive;
    collector.save(archive);
    rlobj::save_atomic(archive, path.string());
    REQUIRE_THROWS_WITH(rb.load(path.string()), Contains("holds a rlobj.SyncDataCollector, expected a rlobj.ReplayBuffer"));
  }
  SECTION("stored rows that do not fit the stored layout (found after the new storage is built)") {
    // A hand-made archive: a valid stamp, counters and layout, but rows one column short.
    torch::serialize::OutputArchive archive;
    rlobj::write_format(archive, "rlobj.ReplayBuffer");
    archive.write("counters", torch::tensor({20, 20, 50}, torch::kInt64));
    archive.write("generator", at::make_generator<at::CPUGeneratorImpl>(9).get_state());
    archive.write("storage_0", torch::zeros({20, 1}, torch::kLong));   // id
    archive.write("storage_1", torch::zeros({20, 3}, torch::kFloat));  // observation (3) + reward (1) expected
    torch::serialize::OutputArchive example;
    rlobj::save_tensordict(transitions(0, 1).apply([](const torch::Tensor& t) { return torch::zeros_like(t); }),
                           example);
    archive.write("example", example);
    rlobj::save_atomic(archive, path.string());
    REQUIRE_THROWS_WITH(rb.load(path.string()), Contains("stored rows 1 are float32 [20, 3], expected float32 [20, 4]"));
  }
  SECTION("inconsistent counters") {
    torch::serialize::OutputArchive bad;
    rlobj::write_format(bad, "rlobj.ReplayBuffer");
    bad.write("counters", torch::tensor({7, 20, 50}, torch::kInt64));  // cursor != size below capacity
    rlobj::save_atomic(bad, path.string());
    REQUIRE_THROWS_WITH(rb.load(path.string()), Contains("inconsistent counters"));
  }
  SECTION("a different layout is fine: the checkpoint defines it") {
    ReplayBuffer wide(ReplayBufferOptions(50));
    auto t = transitions(0, 30);
    t.set("observation", torch::zeros({30, 4}));
    wide.extend(t);
    wide.save(path.string());
    ReplayBuffer same_capacity(ReplayBufferOptions(50).seed(1));
    same_capacity.extend(transitions(0, 30));
    same_capacity.load(path.string());
    CHECK(same_capacity.storage().get("observation").size(1) == 4);
  }
  const auto sampler_after = rb.generator().get_state();
  CHECK(rb.size() == 30);
  CHECK(rb.cursor() == 30);
  CHECK(torch::equal(rb.storage().get("id"), before));
  CHECK(torch::equal(sampler_after, sampler_before));
  CHECK(rb.sample(4).get("id").defined());
  fs::remove_all(path.parent_path());
}

TEST_CASE("ReplayBuffer: gather refuses rows never written", "[serialize][data]") {
  ReplayBuffer rb(ReplayBufferOptions(100));
  rb.extend(transitions(0, 10));
  CHECK(rlobj_test::ints(rb.gather(torch::tensor({0, 9}, torch::kLong)).get("id")) == std::vector<int64_t>{0, 9});
  REQUIRE_THROWS_AS(rb.gather(torch::tensor({10}, torch::kLong)), c10::IndexError);
  REQUIRE_THROWS_WITH(rb.gather(torch::tensor({3, 50}, torch::kLong)), Contains("positions must be in [0, 10)"));
  REQUIRE_THROWS_AS(rb.gather(torch::tensor({-1}, torch::kLong)), c10::IndexError);
  REQUIRE_THROWS_AS(rb.gather(torch::tensor({1.0})), c10::ValueError);
  REQUIRE_THROWS_AS(ReplayBuffer().gather(torch::tensor({0}, torch::kLong)), c10::IndexError);
}

TEST_CASE("save_atomic: checked writes, one findable temporary file", "[serialize]") {
  ReplayBuffer rb(ReplayBufferOptions(10));
  rb.extend(transitions(0, 3));
  const auto path = scratch("atomic.pt");
  SECTION("no temporary file is left behind") {
    rb.save(path.string());
    CHECK(fs::exists(path));
    CHECK_FALSE(fs::exists(rlobj::temp_path_of(path.string())));
  }
  SECTION("a stale temporary file from a killed run is overwritten") {
    spit(rlobj::temp_path_of(path.string()), "torn bytes of a checkpoint written when the process was killed");
    rb.save(path.string());
    CHECK_FALSE(fs::exists(rlobj::temp_path_of(path.string())));
    ReplayBuffer restored(ReplayBufferOptions(10));
    restored.load(path.string());
    CHECK(restored.size() == 3);
  }
  SECTION("an unwritable path is an error and leaves the old file") {
    rb.save(path.string());
    const auto old = slurp(path);
    REQUIRE_THROWS_WITH(rb.save((path.parent_path() / "missing_dir" / "x.pt").string()), Contains("cannot write"));
    CHECK(slurp(path) == old);
  }
  SECTION("a full disk is an error") {
    // A file-size limit makes write() fail as a full disk does (EFBIG instead of ENOSPC).
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto previous = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    small.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    bool threw = false;
    std::string message;
    try {
      rlobj::write_file_atomic(std::string(1 << 16, 'x'), path.string());
    } catch (const c10::Error& e) {
      threw = true;
      message = e.what_without_backtrace();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, previous);
    CHECK(threw);
    CHECK_THAT(message, Contains("cannot write") && Contains("File too large"));
    CHECK_FALSE(fs::exists(path));
    CHECK_FALSE(fs::exists(rlobj::temp_path_of(path.string())));
  }
  SECTION("what is not a regular file is never replaced") {
    fs::create_directories(path);
    REQUIRE_THROWS_WITH(rb.save(path.string()), Contains("is not a regular file"));
    CHECK(fs::is_directory(path));
  }
  fs::remove_all(path.parent_path());
}

TEST_CASE("Checkpoints load onto a chosen device (map_location)", "[serialize]") {
  ReplayBuffer rb(ReplayBufferOptions(10).seed(2));
  rb.extend(transitions(0, 5));
  const auto path = scratch("map.pt");
  rb.save(path.string());
  ReplayBuffer restored(ReplayBufferOptions(10));
  restored.load(path.string(), torch::Device(torch::kCPU));
  CHECK(restored.storage().get("observation").device().is_cpu());
  torch::serialize::InputArchive archive;
  rlobj::load_archive(archive, path.string(), torch::Device(torch::kCPU));
  torch::Tensor counters;
  archive.read("counters", counters);
  CHECK(counters.device().is_cpu());
  fs::remove_all(path.parent_path());
}

TEST_CASE("LossModule: a failed torch::load leaves every parameter as it was", "[serialize][ddpg]") {
  rlobj_test::ReferenceNets nets;
  auto loss = rlobj::objectives::DDPGLoss(nets.actor, nets.value);
  auto small_actor = rlobj::modules::Actor(rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({4})));
  auto small_value = rlobj::modules::ValueOperator(rlobj::modules::MLP(rlobj::modules::MLPOptions(4, 1).num_cells({4})),
                                                   {"observation", "action"});
  auto other = rlobj::objectives::DDPGLoss(small_actor, small_value);
  std::stringstream stream;
  torch::save(other, stream);
  std::vector<torch::Tensor> before;
  for (const auto& p : loss->parameters()) before.push_back(p.detach().clone());
  for (const auto& b : loss->buffers()) before.push_back(b.detach().clone());
  CHECK_THROWS(torch::load(loss, stream));
  std::vector<torch::Tensor> after;
  for (const auto& p : loss->parameters()) after.push_back(p.detach());
  for (const auto& b : loss->buffers()) after.push_back(b.detach());
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < before.size(); ++i) CHECK(torch::equal(after[i], before[i]));
  // And it still trains: the networks alias the (restored) flat buffers.
  auto out = loss(rlobj_test::reference_batch());
  rlobj::objectives::sum_losses(out).backward();
  CHECK(nets.actor->parameters()[0].data_ptr() == loss->parameters()[0].data_ptr());
}

}  // namespace rlobj_test_serialize_test
