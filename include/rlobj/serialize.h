#pragma once

/// \file
/// Serialization helpers for checkpoints, on top of LibTorch's archives
/// (`torch::serialize::OutputArchive` / `InputArchive`, what `torch::save` / `torch::load`
/// use):
///
/// * `save_tensordict` / `load_tensordict` put a TensorDict in an archive;
/// * `save_atomic` writes an archive to a file so that a crash never leaves a torn file: the
///   bytes go to `<path>.tmp` (a fixed name: a run killed mid-write leaves at most that one
///   file, which the next save overwrites), are flushed to disk, then renamed over `path`
///   (atomic on POSIX file systems). Every write is checked: a full disk or an unwritable path
///   is an error, never a silently lost checkpoint;
/// * `load_archive` verifies a file before reading it: every record of LibTorch's zip
///   container is checked against the CRC32 the writer stored for it, so a flipped byte is an
///   error naming the record instead of a silently different model; `map_location` moves every
///   tensor to one device (a CUDA checkpoint on a CPU-only machine);
/// * `write_format` / `check_format` stamp an archive with what it holds and its format
///   version, so a file of another kind or version is refused with a clear message.

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/in_memory_adapter.h>
#include <caffe2/serialize/inline_container.h>
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
  // The key list is stored one key a line, parts separated by \x1f: refuse keys holding either,
  // which would come back as other keys (or not at all).
  for (const auto& key : keys) {
    for (const auto& part : key.parts()) {
      TORCH_CHECK_VALUE(part.find('\n') == std::string::npos && part.find(detail::kPartSeparator) == std::string::npos,
                        "save_tensordict: key \"", key.str(), "\" contains a newline or a \\x1f character, which "
                        "checkpoints cannot hold");
    }
  }
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

/// Reads a TensorDict written by `save_tensordict`. If the archive was loaded with a
/// `map_location` that moved the tensors off the TensorDict's saved device, the TensorDict
/// takes the tensors' device.
inline TensorDict load_tensordict(torch::serialize::InputArchive& archive) {
  c10::IValue names_value, device_value;
  archive.read("keys", names_value);
  archive.read("device", device_value);
  torch::Tensor batch;
  archive.read("batch_size", batch);
  TORCH_CHECK_VALUE(batch.scalar_type() == torch::kLong && batch.dim() == 1, "load_tensordict: corrupt batch_size");
  batch = batch.cpu();
  std::vector<int64_t> batch_size(batch.data_ptr<int64_t>(), batch.data_ptr<int64_t>() + batch.numel());
  std::vector<std::pair<NestedKey, torch::Tensor>> leaves;
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
    leaves.emplace_back(NestedKey(parts), std::move(leaf));
  }
  const std::string device_str = device_value.toStringRef();
  std::optional<torch::Device> device;
  if (!device_str.empty()) {
    device = torch::Device(device_str);
    if (!leaves.empty() && leaves.front().second.device() != *device) device = leaves.front().second.device();
  }
  TensorDict td(batch_size, device);
  for (auto& [key, leaf] : leaves) td.set(key, std::move(leaf));
  return td;
}

/// The version of the formats rlobj writes (`write_format`); bumped when a layout changes.
constexpr int64_t kFormatVersion = 1;

namespace detail {

/// A generator of the same kind as `like`, to try a saved state on before committing it to
/// `like`. Not `like.clone()` where that can be helped: LibTorch 1.13's GeneratorImpl::clone
/// leaks the copy (its weak count is left at 0, so the last release never frees it; fixed in
/// 2.x), which LeakSanitizer reports in every load.
inline at::Generator scratch_generator(const at::Generator& like) {
  if (like.device().is_cpu()) return at::detail::createCPUGenerator();
  return like.clone();
}

/// CRC-32 (IEEE 802.3, zip's), table-driven.
inline uint32_t crc32(const void* data, size_t n, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/// A little-endian reader over a byte buffer that fails (with `what` in the message) instead
/// of reading past the end.
class ByteView {
 public:
  ByteView(const std::string& bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {}
  uint64_t le(size_t offset, int width) const {
    TORCH_CHECK(offset + static_cast<size_t>(width) <= bytes_.size() && offset <= bytes_.size(), what_,
                ": truncated or corrupt file (a zip structure points past its end)");
    uint64_t v = 0;
    for (int i = width - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes_[offset + static_cast<size_t>(i)]);
    return v;
  }
  std::string str(size_t offset, size_t n) const {
    TORCH_CHECK(offset + n <= bytes_.size() && offset <= bytes_.size(), what_, ": truncated or corrupt file");
    return bytes_.substr(offset, n);
  }
  size_t size() const { return bytes_.size(); }
  const std::string& what() const { return what_; }

 private:
  const std::string& bytes_;
  std::string what_;
};

/// (name, CRC-32) of every entry in a zip file's central directory (zip64 included).
inline std::vector<std::pair<std::string, uint32_t>> zip_crcs(const std::string& bytes, const std::string& what) {
  ByteView z(bytes, what);
  // End of central directory: 22 bytes plus a comment of up to 64 KiB, at the end.
  TORCH_CHECK(bytes.size() >= 22, what, ": not a LibTorch archive (", bytes.size(), " bytes)");
  size_t eocd = std::string::npos;
  const size_t lowest = bytes.size() > 22 + 65535 ? bytes.size() - 22 - 65535 : 0;
  for (size_t i = bytes.size() - 22 + 1; i-- > lowest;) {
    if (z.le(i, 4) == 0x06054b50u) {
      eocd = i;
      break;
    }
  }
  TORCH_CHECK(eocd != std::string::npos, what, ": not a LibTorch archive (no zip directory; truncated?)");
  uint64_t entries = z.le(eocd + 10, 2);
  uint64_t cd_offset = z.le(eocd + 16, 4);
  if ((entries == 0xFFFFu || cd_offset == 0xFFFFFFFFu) && eocd >= 20 && z.le(eocd - 20, 4) == 0x07064b50u) {
    const uint64_t z64 = z.le(eocd - 20 + 8, 8);  // zip64 end of central directory record
    TORCH_CHECK(z.le(static_cast<size_t>(z64), 4) == 0x06064b50u, what, ": corrupt zip64 directory");
    entries = z.le(static_cast<size_t>(z64) + 32, 8);
    cd_offset = z.le(static_cast<size_t>(z64) + 48, 8);
  }
  std::vector<std::pair<std::string, uint32_t>> out;
  size_t p = static_cast<size_t>(cd_offset);
  for (uint64_t e = 0; e < entries; ++e) {
    TORCH_CHECK(z.le(p, 4) == 0x02014b50u, what, ": corrupt zip directory (entry ", e, ")");
    const auto crc = static_cast<uint32_t>(z.le(p + 16, 4));
    const size_t name_len = z.le(p + 28, 2), extra_len = z.le(p + 30, 2), comment_len = z.le(p + 32, 2);
    out.emplace_back(z.str(p + 46, name_len), crc);
    p += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

/// Reads a whole regular file; errors name it. Devices, FIFOs and directories are refused before
/// anything is read (`/dev/zero` would never end), the size is taken from the file system and
/// read once (a file that grows meanwhile is read to that size), and a size that does not fit in
/// memory is a `c10::Error` naming the file, not a `std::bad_alloc`.
inline std::string read_file(const std::string& path, const char* where) {
  struct stat st {};
  TORCH_CHECK(::stat(path.c_str(), &st) == 0, where, ": cannot open \"", path, "\": ", std::strerror(errno));
  TORCH_CHECK(S_ISREG(st.st_mode), where, ": \"", path, "\" is not a regular file (a directory, device or pipe)");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), where, ": cannot open \"", path, "\": ", std::strerror(errno));
  const auto size = static_cast<uint64_t>(st.st_size);
  std::string bytes;
  try {
    TORCH_CHECK(size <= bytes.max_size(), where, ": \"", path, "\" (", size, " bytes) is too large to read");
    bytes.resize(static_cast<size_t>(size));
  } catch (const std::bad_alloc&) {
    TORCH_CHECK(false, where, ": \"", path, "\" (", size, " bytes) does not fit in memory");
  }
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  TORCH_CHECK(!in.bad() && static_cast<uint64_t>(in.gcount()) == size, where, ": cannot read \"", path, "\": ",
              in.bad() ? std::strerror(errno) : "the file shrank while it was read");
  return bytes;
}

}  // namespace detail

/// Checks every record of a LibTorch archive held in `bytes` against the CRC-32 its writer
/// stored; throws naming the first corrupt record. `what` names the file in messages.
inline void verify_archive(const std::string& bytes, const std::string& what) {
  const auto crcs = detail::zip_crcs(bytes, what);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    // Reads `bytes` in place (no copy of the file).
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(
        std::make_shared<caffe2::serialize::MemoryReadAdapter>(bytes.data(), static_cast<off_t>(bytes.size())));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, what, ": not a readable LibTorch archive: ", e.what_without_backtrace());
  } catch (const std::exception& e) {  // e.g. std::out_of_range from a version record that does not fit
    TORCH_CHECK(false, what, ": not a readable LibTorch archive: ", e.what());
  }
  for (const auto& [full_name, crc] : crcs) {
    // Entries are "<archive name>/<record>"; the reader takes the record name.
    const auto slash = full_name.find('/');
    const std::string name = slash == std::string::npos ? full_name : full_name.substr(slash + 1);
    if (name.empty() || name.back() == '/') continue;  // a directory entry
    at::DataPtr data;
    size_t size = 0;
    try {
      std::tie(data, size) = reader->getRecord(name);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, what, ": record \"", name, "\" cannot be read (corrupt file): ", e.what_without_backtrace());
    }
    const uint32_t got = detail::crc32(data.get(), size);
    TORCH_CHECK(got == crc, what, ": record \"", name, "\" is corrupt (CRC-32 ", got, ", the file says ", crc,
                "); the file was damaged after it was written");
  }
}

/// Reads `path` into `archive` after verifying every record (`verify_archive`). With
/// `map_location`, every tensor is loaded onto that device (as `torch.load`'s
/// `map_location`): a checkpoint made on CUDA loads on a CPU-only machine.
inline void load_archive(torch::serialize::InputArchive& archive, const std::string& path,
                         std::optional<torch::Device> map_location = std::nullopt) {
  const std::string bytes = detail::read_file(path, "load_archive");
  verify_archive(bytes, "checkpoint \"" + path + "\"");
  archive.load_from(bytes.data(), bytes.size(),
                    map_location ? c10::optional<torch::Device>(*map_location) : c10::nullopt);
}

/// Stamps `archive` with what it holds (`kind`, e.g. `"rlobj.ReplayBuffer"`) and
/// `kFormatVersion`.
inline void write_format(torch::serialize::OutputArchive& archive, const std::string& kind) {
  archive.write("rlobj_format", c10::IValue(kind));
  archive.write("rlobj_format_version", c10::IValue(kFormatVersion));
}

/// Checks the stamp `write_format` left: the same kind, a version this build reads.
inline void check_format(torch::serialize::InputArchive& archive, const std::string& kind, const char* where) {
  c10::IValue got_kind, got_version;
  TORCH_CHECK(archive.try_read("rlobj_format", got_kind) && got_kind.isString(), where,
              ": not an rlobj checkpoint of kind ", kind, " (no format stamp; written by another program or by "
              "rlobj < 0.2?)");
  TORCH_CHECK(got_kind.toStringRef() == kind, where, ": the checkpoint holds a ", got_kind.toStringRef(),
              ", expected a ", kind);
  TORCH_CHECK(archive.try_read("rlobj_format_version", got_version) && got_version.isInt(), where,
              ": the checkpoint has no format version");
  TORCH_CHECK(got_version.toInt() >= 1 && got_version.toInt() <= kFormatVersion, where,
              ": the checkpoint has format version ", got_version.toInt(), "; this build reads versions 1 to ",
              kFormatVersion);
}

/// The temporary file `save_atomic(…, path)` writes before renaming it over `path`. A run
/// killed mid-write leaves at most this file; the next save to `path` overwrites it.
inline std::string temp_path_of(const std::string& path) { return path + ".tmp"; }

/// Writes `bytes` to `path` atomically: `temp_path_of(path)`, every write checked, fsync,
/// rename, fsync of the directory. Throws (leaving `path` as it was and no temporary file)
/// on any failure, naming the path and the reason (e.g. "No space left on device"). The
/// temporary file is locked (`flock`) from before it is truncated until after the rename,
/// so a second writer to the same path at the same time fails clearly instead of tearing the
/// first one's file.
inline void write_file_atomic(const std::string& bytes, const std::string& path) {
  const std::string tmp = temp_path_of(path);
  struct stat st {};
  // Renaming over a device node, a directory or a socket would replace it: refuse.
  TORCH_CHECK_VALUE(::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode), "save_atomic: \"", path,
                    "\" exists and is not a regular file");
  int fd = -1;
  auto fail = [&](const char* step, bool remove_tmp = true) {
    const std::string reason = std::strerror(errno);
    if (remove_tmp) ::unlink(tmp.c_str());
    if (fd >= 0) ::close(fd);
    TORCH_CHECK(false, "save_atomic: cannot write \"", path, "\" (", step, " \"", tmp, "\"): ", reason);
  };
  fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("creating", false);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    errno = errno == EWOULDBLOCK ? EBUSY : errno;
    fail("another process or thread is writing", false);
  }
  if (::ftruncate(fd, 0) != 0) fail("truncating");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      fail("writing");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("flushing");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming");
  const int closed = ::close(fd);  // releases the lock, after the rename
  fd = -1;
  TORCH_CHECK(closed == 0, "save_atomic: cannot write \"", path, "\" (closing): ", std::strerror(errno));
  // Persist the rename itself.
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

/// Writes `archive` to `path` atomically (see `write_file_atomic`).
inline void save_atomic(torch::serialize::OutputArchive& archive, const std::string& path) {
  std::ostringstream stream;
  archive.save_to(stream);
  TORCH_CHECK(stream.good(), "save_atomic: cannot serialize the archive for \"", path, "\"");
  write_file_atomic(stream.str(), path);
}

}  // namespace rlobj
