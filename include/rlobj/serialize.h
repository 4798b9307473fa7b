#pragma once

/// \file
/// Serialization helpers for checkpoints, on top of LibTorch's archives
/// (`torch::serialize::OutputArchive` / `InputArchive`, what `torch::save` / `torch::load`
/// use):
///
/// * `save_tensordict` / `load_tensordict` put a TensorDict in an archive;
/// * `save_atomic` writes an archive to a file so that a crash never leaves a torn file: it
///   writes a temporary file in the same directory, flushes it to disk, then renames it over
///   the destination (atomic on POSIX file systems).

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <c10/util/Exception.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/tensordict.h"

namespace rlobj {

namespace detail {
constexpr char kPartSeparator = '\x1f';  // between the parts of a nested key
}  // namespace detail

/// Writes every leaf of `td`, its batch size and device into `archive`. Nested TensorDicts
/// are restored with their parent's batch size.
inline void save_tensordict(const TensorDict& td, torch::serialize::OutputArchive& archive) {
  auto keys = td.keys(/*include_nested=*/true, /*leaves_only=*/true);
  std::string names;
  for (size_t i = 0; i < keys.size(); ++i) {
    names += keys[i].str(std::string(1, detail::kPartSeparator));
    names += '\n';
    archive.write("leaf_" + std::to_string(i), td.get(keys[i]));
  }
  archive.write("keys", c10::IValue(names));
  archive.write("batch_size", torch::tensor(td.batch_size(), torch::kInt64));
  archive.write("device", c10::IValue(td.device() ? td.device()->str() : std::string()));
}

/// Reads a TensorDict written by `save_tensordict`.
inline TensorDict load_tensordict(torch::serialize::InputArchive& archive) {
  c10::IValue names_value, device_value;
  archive.read("keys", names_value);
  archive.read("device", device_value);
  torch::Tensor batch;
  archive.read("batch_size", batch);
  std::vector<int64_t> batch_size(batch.data_ptr<int64_t>(), batch.data_ptr<int64_t>() + batch.numel());
  const std::string device_str = device_value.toStringRef();
  TensorDict td(batch_size, device_str.empty() ? std::nullopt : std::optional<torch::Device>(torch::Device(device_str)));
  const std::string names = names_value.toStringRef();
  size_t start = 0, index = 0;
  for (size_t end; (end = names.find('\n', start)) != std::string::npos; start = end + 1, ++index) {
    std::vector<std::string> parts;
    const std::string line = names.substr(start, end - start);
    size_t p = 0;
    for (size_t q; (q = line.find(detail::kPartSeparator, p)) != std::string::npos; p = q + 1) {
      parts.push_back(line.substr(p, q - p));
    }
    parts.push_back(line.substr(p));
    torch::Tensor leaf;
    archive.read("leaf_" + std::to_string(index), leaf);
    td.set(NestedKey(parts), leaf);
  }
  return td;
}

/// Writes `archive` to `path` atomically (temporary file, fsync, rename).
inline void save_atomic(torch::serialize::OutputArchive& archive, const std::string& path) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  archive.save_to(tmp);
  const int fd = ::open(tmp.c_str(), O_RDONLY);
  TORCH_CHECK(fd >= 0, "save_atomic: cannot reopen \"", tmp, "\": ", std::strerror(errno));
  const int synced = ::fsync(fd);
  ::close(fd);
  if (synced != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "save_atomic: cannot write \"", path, "\": ", reason);
  }
  // Persist the rename itself.
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace rlobj
