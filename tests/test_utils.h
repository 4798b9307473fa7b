#pragma once

// Helpers shared by rlobj's tests.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <rlobj/tensordict.h>

namespace rlobj_test {

/// This process's scratch folder `<temp>/<prefix>_<pid>`, created on first use and removed (with
/// everything in it) when the process ends: tests leave nothing behind in /tmp.
inline std::filesystem::path process_scratch(const std::string& prefix) {
  struct Roots {
    std::map<std::string, std::filesystem::path> paths;
    ~Roots() {
      std::error_code ec;
      for (const auto& item : paths) std::filesystem::remove_all(item.second, ec);
    }
  };
  static Roots roots;
  auto it = roots.paths.find(prefix);
  if (it == roots.paths.end()) {
    it = roots.paths.emplace(prefix, std::filesystem::temp_directory_path() /
                                         (prefix + "_" + std::to_string(::getpid()))).first;
  }
  std::filesystem::create_directories(it->second);
  return it->second;
}

/// The elements of `t`, flattened, as doubles (for readable CHECKs).
inline std::vector<double> values(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous().flatten();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

/// The elements of an integer/bool tensor, flattened.
inline std::vector<int64_t> ints(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kInt64).contiguous().flatten();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

/// A whole file's bytes.
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Writes `bytes` as the whole file `p` (tests that damage files on purpose).
inline void spit(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Steps `env` (batch size 2, reset) from step counts {INT64_MAX, 3} with `action`: the first
/// saturates at INT64_MAX and truncates instead of wrapping, the second counts on.
template <typename Env>
void check_step_count_saturates(Env& env, const torch::Tensor& action) {
  rlobj::TensorDict td = env.reset();
  td.set("step_count", torch::tensor({std::numeric_limits<int64_t>::max(), int64_t{3}}).view({2, 1}));
  td.set("action", action);
  env.step(td);
  const torch::Tensor count = td.get({"next", "step_count"});
  CHECK(count[0].item<int64_t>() == std::numeric_limits<int64_t>::max());
  CHECK(count[1].item<int64_t>() == 4);
  CHECK(td.get({"next", "truncated"})[0].item<bool>());
  CHECK_FALSE(td.get({"next", "truncated"})[1].item<bool>());
}

}  // namespace rlobj_test
