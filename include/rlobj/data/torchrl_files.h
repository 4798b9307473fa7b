#pragma once

/// \file
/// Offline data in TorchRL's files (target `rlobj::offline`, which needs nlohmann/json):
///
/// * `load_memmap` / `save_memmap`: tensordict's memory-mapped layout (`TensorDict.memmap(path)`,
///   `TensorDict.load_memmap(path)`): a folder with a `meta.json` describing each entry and one
///   raw file `<key>.memmap` per tensor, a sub-TensorDict as a folder of its own;
/// * `load_torchrl_buffer` / `dump_torchrl_buffer`: a replay buffer as TorchRL's
///   `ReplayBuffer.dumps(path)` writes it and `ReplayBuffer.loads(path)` reads it (`storage/` in
///   that layout with `storage_metadata.json`, `writer/metadata.json`, `buffer_metadata.json`),
///   so that a dataset logged in Python trains in C++ and the reverse.
///
/// ```
/// auto rb = rlobj::data::load_torchrl_buffer("pendulum_dataset");   // from rb.dumps(...) in Python
/// rlobj::TensorDict batch = rb.sample(256);
/// rlobj::data::dump_torchrl_buffer(rb, "copy");                     // rb.loads("copy") in Python
/// ```
///
/// Reading checks every size against the metadata before anything is returned (a clear
/// `c10::Error` names the file and what was expected); writing goes to a temporary folder that
/// is renamed into place when complete, and refuses a path that exists.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "rlobj/data/replay_buffer.h"
#include "rlobj/detail/format.h"
#include "rlobj/serialize.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace data {

namespace detail_files {

namespace fs = std::filesystem;

/// tensordict's dtype names ("torch.float32") and LibTorch's dtypes.
inline const std::vector<std::pair<std::string, torch::Dtype>>& memmap_dtypes() {
  static const std::vector<std::pair<std::string, torch::Dtype>> table = {
      {"torch.float32", torch::kFloat32}, {"torch.float64", torch::kFloat64}, {"torch.float16", torch::kFloat16},
      {"torch.bfloat16", torch::kBFloat16}, {"torch.int64", torch::kInt64}, {"torch.int32", torch::kInt32},
      {"torch.int16", torch::kInt16}, {"torch.int8", torch::kInt8}, {"torch.uint8", torch::kUInt8},
      {"torch.bool", torch::kBool}};
  return table;
}

inline nlohmann::ordered_json read_json(const fs::path& path) {
  std::ifstream in(path);
  TORCH_CHECK(in.good(), "TorchRL files: cannot read \"", path.string(), "\"");
  try {
    return nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "TorchRL files: \"", path.string(), "\" is not valid JSON: ", e.what());
  }
}

inline void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  TORCH_CHECK(out.good(), "TorchRL files: cannot write \"", path.string(), "\"");
}

// The shape a meta.json entry gives, checked.
inline std::vector<int64_t> meta_shape(const nlohmann::ordered_json& entry, const fs::path& where, const std::string& key) {
  TORCH_CHECK(entry.contains("shape") && entry["shape"].is_array(), "TorchRL files: \"", where.string(),
              "\": entry \"", key, "\" has no shape");
  std::vector<int64_t> shape;
  for (const auto& d : entry["shape"]) {
    TORCH_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, "TorchRL files: \"", where.string(), "\": entry \"",
                key, "\" has a bad shape ", entry["shape"].dump());
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

inline void load_memmap_into(TensorDict& out, const std::vector<std::string>& prefix, const fs::path& dir) {
  const fs::path meta_path = dir / "meta.json";
  const nlohmann::ordered_json meta = read_json(meta_path);
  TORCH_CHECK(meta.is_object(), "TorchRL files: \"", meta_path.string(), "\" is not a JSON object");
  for (const auto& item : meta.items()) {
    const std::string& key = item.key();
    if (key == "shape" || key == "device" || key == "_type") continue;
    const auto& entry = item.value();
    TORCH_CHECK(entry.is_object(), "TorchRL files: \"", meta_path.string(), "\": entry \"", key, "\" is not an object");
    std::vector<std::string> parts = prefix;
    parts.push_back(key);
    const NestedKey full(parts);
    if (entry.contains("type")) {
      TORCH_CHECK(entry["type"] == "TensorDict", "TorchRL files: \"", meta_path.string(), "\": entry \"", key,
                  "\" is a ", entry["type"].dump(), "; only tensors and TensorDicts are read");
      load_memmap_into(out, parts, dir / key);
      continue;
    }
    TORCH_CHECK(!entry.value("is_nested", false), "TorchRL files: \"", meta_path.string(), "\": entry \"", key,
                "\" is a nested (jagged) tensor, which rlobj does not read");
    const std::string dtype_name = entry.value("dtype", std::string());
    std::optional<torch::Dtype> dtype;
    for (const auto& [name, d] : memmap_dtypes()) {
      if (name == dtype_name) dtype = d;
    }
    TORCH_CHECK(dtype.has_value(), "TorchRL files: \"", meta_path.string(), "\": entry \"", key, "\" has dtype \"",
                dtype_name, "\", which rlobj does not read");
    const std::vector<int64_t> shape = meta_shape(entry, meta_path, key);
    torch::Tensor t = torch::empty(shape, torch::dtype(*dtype));
    const fs::path file = dir / (key + ".memmap");
    std::error_code ec;
    const auto bytes = fs::file_size(file, ec);
    const auto want = static_cast<std::uintmax_t>(t.numel()) * t.element_size();
    TORCH_CHECK(!ec, "TorchRL files: cannot read \"", file.string(), "\" (entry \"", full.str(), "\")");
    TORCH_CHECK(bytes == want, "TorchRL files: \"", file.string(), "\" holds ", bytes, " bytes; entry \"", full.str(),
                "\" (", dtype_name, " ", rlobj::detail::shape_str(shape), ") needs ", want);
    std::ifstream in(file, std::ios::binary);
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(want));
    TORCH_CHECK(in.gcount() == static_cast<std::streamsize>(want), "TorchRL files: short read of \"", file.string(), "\"");
    out.set(full, t);
  }
}

inline void save_memmap_into(const TensorDict& td, const fs::path& dir, const std::vector<std::string>& prefix) {
  fs::create_directories(dir);
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  // Entries in the TensorDict's order, sub-TensorDicts once, at their first leaf.
  std::vector<std::string> subs;
  for (const auto& item : td.items(/*include_nested=*/true, /*leaves_only=*/true)) {
    const auto& parts = item.first.parts();
    if (!std::equal(prefix.begin(), prefix.end(), parts.begin()) || parts.size() <= prefix.size()) continue;
    const std::string& name = parts[prefix.size()];
    if (parts.size() > prefix.size() + 1) {
      if (std::find(subs.begin(), subs.end(), name) == subs.end()) {
        subs.push_back(name);
        meta[name] = {{"type", "TensorDict"}};
      }
      continue;
    }
    const torch::Tensor t = item.second.tensor().detach().to(torch::kCPU).contiguous();
    std::string dtype_name;
    for (const auto& [n, d] : memmap_dtypes()) {
      if (d == t.scalar_type()) dtype_name = n;
    }
    TORCH_CHECK(!dtype_name.empty(), "dump: entry \"", item.first.str(), "\" has dtype ",
                rlobj::detail::dtype_str(t.scalar_type()), ", which tensordict's memmap layout does not take here");
    meta[name] = {{"device", "cpu"}, {"shape", t.sizes().vec()}, {"dtype", dtype_name}, {"is_nested", false}};
    std::ofstream out(dir / (name + ".memmap"), std::ios::binary);
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    out.close();
    TORCH_CHECK(out.good(), "dump: cannot write \"", (dir / (name + ".memmap")).string(), "\"");
  }
  for (const auto& name : subs) {
    std::vector<std::string> inner = prefix;
    inner.push_back(name);
    save_memmap_into(td, dir / name, inner);
  }
  meta["shape"] = std::vector<int64_t>(td.batch_size().begin(), td.batch_size().end());
  meta["device"] = "cpu";
  meta["_type"] = "<class 'tensordict._td.TensorDict'>";
  write_text(dir / "meta.json", meta.dump());
}

// Writes a folder through `fill` into a temporary sibling, then renames it to `path`; refuses
// an existing `path`; removes the temporary folder on failure.
template <typename Fill>
void write_folder_atomic(const std::string& path, const char* who, Fill&& fill) {
  const fs::path target(path);
  TORCH_CHECK_VALUE(!fs::exists(target), who, ": \"", path, "\" exists; remove it first (nothing was written)");
  const fs::path tmp = fs::path(rlobj::temp_path_of(path));
  fs::remove_all(tmp);
  try {
    fill(tmp);
    fs::rename(tmp, target);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace detail_files

/// Reads a TensorDict saved in tensordict's memory-mapped layout (`td.memmap(path)` in Python):
/// every tensor into memory, on the CPU, with the batch size `meta.json` gives. Nested
/// TensorDicts come back as nested keys; non-tensor entries and nested (jagged) tensors are
/// refused, naming them.
inline TensorDict load_memmap(const std::string& dir) {
  const nlohmann::ordered_json meta = detail_files::read_json(detail_files::fs::path(dir) / "meta.json");
  const std::vector<int64_t> batch = detail_files::meta_shape(meta, detail_files::fs::path(dir) / "meta.json", "(the TensorDict)");
  TensorDict out(batch);
  detail_files::load_memmap_into(out, {}, dir);
  return out;
}

/// Writes `td` in tensordict's memory-mapped layout (what `TensorDict.load_memmap(dir)` reads in
/// Python): CPU copies, C order. `dir` must not exist; it appears when complete.
inline void save_memmap(const TensorDict& td, const std::string& dir) {
  detail_files::write_folder_atomic(dir, "save_memmap", [&](const detail_files::fs::path& tmp) {
    detail_files::save_memmap_into(td, tmp, {});
  });
}

/// A replay buffer from the folder TorchRL's `ReplayBuffer.dumps(path)` writes (over a
/// `LazyMemmapStorage` or `LazyTensorStorage` of TensorDicts): the capacity is the storage's,
/// the rows `[0, len)` keep their positions, the next write goes where TorchRL's writer would
/// put it, and the default batch size is the buffer's. Sampling is rlobj's (uniform, seeded
/// with `seed`); a sampler's saved state (priorities) is not read.
inline ReplayBuffer load_torchrl_buffer(const std::string& path, uint64_t seed = 0) {
  const detail_files::fs::path root(path);
  const nlohmann::ordered_json storage_meta = detail_files::read_json(root / "storage" / "storage_metadata.json");
  TORCH_CHECK(!storage_meta.value("is_pytree", false), "load_torchrl_buffer: \"", path,
              "\" holds a storage of plain tensors (pytree); rlobj reads storages of TensorDicts");
  const nlohmann::ordered_json writer = detail_files::read_json(root / "writer" / "metadata.json");
  const nlohmann::ordered_json buffer = detail_files::read_json(root / "buffer_metadata.json");
  TensorDict storage = load_memmap((root / "storage").string());
  TORCH_CHECK(storage.batch_dims() == 1, "load_torchrl_buffer: \"", path, "\": the storage has batch size ",
              rlobj::detail::shape_str(storage.batch_size()), "; rlobj reads one batch dim (the buffer's positions)");
  const int64_t capacity = storage.batch_size()[0];
  const int64_t len = storage_meta.value("len", int64_t{-1});
  const int64_t cursor = writer.value("cursor", int64_t{-1});
  TORCH_CHECK(len >= 0 && len <= capacity && cursor >= 0 && capacity > 0 && cursor < capacity &&
                  (len == capacity || cursor == len),
              "load_torchrl_buffer: \"", path, "\": len ", len, " and cursor ", cursor, " do not fit a capacity of ",
              capacity);
  int64_t batch_size = 0;
  if (buffer.contains("batch_size") && buffer["batch_size"].is_number_integer()) {
    batch_size = buffer["batch_size"].get<int64_t>();
  }
  ReplayBuffer rb(ReplayBufferOptions(capacity).batch_size(batch_size).seed(seed));
  rb.assign(storage.index({torch::indexing::Slice(0, len)}), cursor);
  return rb;
}

/// Writes `rb` as TorchRL's `ReplayBuffer.dumps(path)` does, for
/// `ReplayBuffer(storage=LazyMemmapStorage(capacity)).loads(path)` (or a `LazyTensorStorage`) in
/// Python: every position of the storage (those never written as zeros), `len`, the writer's
/// cursor (its write count is taken as `len`: rlobj does not count overwritten rows) and the
/// default batch size (`null` when it is 0). `path` must not exist; it appears when complete.
inline void dump_torchrl_buffer(ReplayBuffer& rb, const std::string& path) {
  TORCH_CHECK_VALUE(!rb.empty(), "dump_torchrl_buffer: the buffer is empty (TorchRL cannot load an uninitialised "
                    "storage)");
  const int64_t capacity = rb.capacity(), len = rb.size();
  TensorDict rows = rb.gather(torch::arange(len, torch::kLong));
  TensorDict full({capacity});
  for (const auto& item : rows.items(true, true)) {
    std::vector<int64_t> shape = item.second.tensor().sizes().vec();
    shape[0] = capacity;
    torch::Tensor t = torch::zeros(shape, item.second.tensor().options().device(torch::kCPU));
    t.narrow(0, 0, len).copy_(item.second.tensor());
    full.set(item.first, t);
  }
  detail_files::write_folder_atomic(path, "dump_torchrl_buffer", [&](const detail_files::fs::path& tmp) {
    detail_files::save_memmap_into(full, tmp / "storage", {});
    nlohmann::ordered_json storage_meta = {{"metadata", nlohmann::ordered_json::object()}, {"is_pytree", false},
                                           {"len", len}};
    nlohmann::ordered_json writer = {{"cursor", rb.cursor()}, {"write_count", len}};
    nlohmann::ordered_json buffer = {{"batch_size", nullptr}, {"consume_after_n_samples", nullptr}};
    if (rb.options().batch_size() > 0) buffer["batch_size"] = rb.options().batch_size();
    // Python's json.dump separators, as TorchRL writes these three.
    auto python_json = [](const nlohmann::ordered_json& j) {
      std::string s = j.dump();
      std::string out;
      bool in_string = false;
      for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        out += c;
        if (c == '"' && (i == 0 || s[i - 1] != '\\')) in_string = !in_string;
        if (!in_string && (c == ',' || c == ':')) out += ' ';
      }
      return out;
    };
    detail_files::write_text(tmp / "storage" / "storage_metadata.json", python_json(storage_meta));
    detail_files::fs::create_directories(tmp / "writer");
    detail_files::write_text(tmp / "writer" / "metadata.json", python_json(writer));
    detail_files::write_text(tmp / "buffer_metadata.json", python_json(buffer));
  });
}

}  // namespace data
}  // namespace rlobj
