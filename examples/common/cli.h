#pragma once

// What the example programs' command lines share (the off-policy examples ddpg/td3/sac_pendulum and the
// on-policy ppo_cartpole/ppo_pendulum): flag validators whose errors name the flag and the value, timing,
// the CSV log, and the wrapper that turns whatever escapes a run into one line on stderr.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <rlobj/detail/memory.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <rlobj/modules/mlp.h>

namespace rlobj_examples {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline std::string fmt_num(double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.1f}", v); }

/// The first line of an error message (LibTorch's messages can carry context lines and backtraces).
inline std::string first_line(const std::string& s) {
  const auto eol = s.find('\n');
  return eol == std::string::npos ? s : s.substr(0, eol);
}

inline std::string errno_reason(int err) { return err != 0 ? std::strerror(err) : std::string("write failed"); }

// ---- Validators of single flags. Their descriptions are empty, so --help keeps showing "FLOAT=0.001";
// ---- each flag's text states its allowed range instead.

constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();

/// A decimal integer >= lo, as written: digits with an optional sign (no 0x / 0b / 0o prefix, no
/// exponent), leading zeros read as decimal (CLI11 alone reads 0400 as octal 256), within 64 bits
/// (CLI11's conversion would silently saturate it), then CLI11's Range. It rewrites the input
/// (leading zeros dropped), so options add it with `transform`, not `check`.
inline CLI::Validator int_at_least(int64_t lo) {
  const CLI::Validator range = CLI::Range(lo, kMaxInt64);
  return CLI::Validator(
      [range](std::string& input) -> std::string {
        const size_t digits = !input.empty() && (input[0] == '+' || input[0] == '-') ? 1 : 0;
        if (digits == input.size() || input.find_first_not_of("0123456789", digits) != std::string::npos) {
          return fmt::format("{} is not a decimal integer", input);
        }
        // Decimal as written: CLI11 converts with base 0, which reads 0400 as octal 256.
        const size_t first = input.find_first_not_of('0', digits);
        input = input.substr(0, digits) + (first == std::string::npos ? "0" : input.substr(first));
        errno = 0;
        std::strtoll(input.c_str(), nullptr, 10);
        if (errno == ERANGE) return fmt::format("{} does not fit in a 64-bit integer", input);
        return range(input);
      },
      "");
}

/// `int_at_least(lo)`, and at most what this machine's memory holds at about `bytes_each` bytes
/// per `unit` (environments, transitions): a size that could never be allocated is refused at the
/// flag, with the bound, instead of failing in an allocator (or being killed) later.
inline CLI::Validator int_within_memory(int64_t lo, int64_t bytes_each, const std::string& unit) {
  const int64_t memory = rlobj::detail::physical_memory_bytes();
  const int64_t hi = std::max(lo, memory / bytes_each);
  const CLI::Validator at_least = int_at_least(lo);
  return CLI::Validator(
      [at_least, hi, memory, bytes_each, unit](std::string& input) -> std::string {
        std::string error = at_least(input);
        if (!error.empty()) return error;
        const int64_t value = std::strtoll(input.c_str(), nullptr, 10);
        if (value > hi) {
          return fmt::format("{} {} at about {} bytes each need more than this machine's {} bytes of memory (at most {})",
                             value, unit, bytes_each, memory, hi);
        }
        return "";
      },
      "");
}

/// A finite real number accepted by `ok`. (CLI::Range and CLI::PositiveNumber let "nan" through, and
/// their messages print the limits of double.)
inline CLI::Validator real(std::function<bool(double)> ok, std::string what) {
  return CLI::Validator(
      [ok = std::move(ok), what = std::move(what)](std::string& input) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(input, v) || !std::isfinite(v) || !ok(v)) {
          return fmt::format("must be {}, got \"{}\"", what, input);
        }
        return {};
      },
      "");
}

/// One of the names `rlobj::modules::activation_from_string` knows (the library holds the list).
inline CLI::Validator activation_name() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        try {
          rlobj::modules::activation_from_string(input);
          return {};
        } catch (const c10::Error& e) {
          return first_line(e.what_without_backtrace());
        }
      },
      "");
}

/// A device this machine has: "cpu", or a CUDA device that exists (LibTorch's own errors for a bad device
/// come late and as multi-kilobyte dispatcher dumps).
inline CLI::Validator usable_device() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        std::optional<torch::Device> device;
        try {
          device.emplace(input);
        } catch (const c10::Error& e) {
          return fmt::format("invalid device \"{}\": {}", input, first_line(e.what_without_backtrace()));
        }
        if (device->is_cpu()) {
          if (device->has_index()) return fmt::format("invalid device \"{}\": use cpu (without an index)", input);
          return {};
        }
        if (!device->is_cuda()) return fmt::format("unsupported device \"{}\": use cpu or cuda[:N]", input);
        if (!torch::cuda::is_available()) {
          return fmt::format("CUDA is not available on this machine (asked for \"{}\"); use --device cpu", input);
        }
        const auto count = static_cast<int64_t>(torch::cuda::device_count());
        if (device->has_index() && device->index() >= count) {
          return fmt::format("CUDA device {} does not exist: this machine has {} CUDA device(s) (cuda:0 to cuda:{})",
                             static_cast<int>(device->index()), count, count - 1);
        }
        return {};
      },
      "");
}

/// A path a file can be (atomically) written to: not a directory, in a writable directory. Checked up front
/// so that a long run does not fail at its first checkpoint.
inline CLI::Validator writable_file_path() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        if (path.empty()) return "the path is empty";
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return fmt::format("{} is a directory", path);
        const auto slash = path.find_last_of('/');
        const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
        if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
          return fmt::format("directory {} of {} does not exist", dir, path);
        }
        if (::access(dir.c_str(), W_OK | X_OK) != 0) {
          return fmt::format("cannot write into directory {}: {}", dir, std::strerror(errno));
        }
        return {};
      },
      "");
}

/// Whether two paths name one file: the same path after resolving `.`, `..` and symbolic links
/// (for the parts that exist), or, when both exist, the same inode (hard links).
inline bool same_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  std::error_code ec_a, ec_b;
  const fs::path ca = fs::weakly_canonical(fs::absolute(a), ec_a), cb = fs::weakly_canonical(fs::absolute(b), ec_b);
  if (!ec_a && !ec_b && ca == cb) return true;
  std::error_code ec;
  return fs::exists(a, ec) && fs::exists(b, ec) && fs::equivalent(a, b, ec) && !ec;
}

/// Refuses (CLI::ValidationError naming both flags) two given file flags that name one file: an
/// output written over another output or over an input loses data. `flags` holds (flag, path)
/// pairs; empty paths (flags not given) are skipped; `allowed` lists the pairs that may share a file
/// (such as `--resume` and `--checkpoint`: a run continued in place).
inline void refuse_same_file(const std::vector<std::pair<std::string, std::string>>& flags,
                             const std::vector<std::pair<std::string, std::string>>& allowed = {}) {
  for (size_t i = 0; i < flags.size(); ++i) {
    for (size_t j = i + 1; j < flags.size(); ++j) {
      const auto& [flag_a, path_a] = flags[i];
      const auto& [flag_b, path_b] = flags[j];
      if (path_a.empty() || path_b.empty()) continue;
      bool ok = false;
      for (const auto& [x, y] : allowed) ok = ok || (x == flag_a && y == flag_b) || (x == flag_b && y == flag_a);
      if (!ok && same_file(path_a, path_b)) {
        throw CLI::ValidationError(flag_a, fmt::format("{} and {} name the same file ({}); one would overwrite the other",
                                                       path_a, flag_b, path_b));
      }
    }
  }
}

/// The CSV log: a header, then one row per evaluation. Every write is flushed and checked: a lost
/// row is an error. With `append` (a resumed run) the header is written only into an empty file.
class CsvLog {
 public:
  CsvLog(const std::string& path, bool append, const std::string& header) : path_(path) {
    if (path.empty()) return;
    struct stat st {};
    const bool has_content = ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
    errno = 0;
    out_ = std::make_unique<std::ofstream>(path, append ? std::ios::app : std::ios::trunc);
    if (!*out_) {
      throw std::runtime_error(fmt::format("cannot open --log-csv file {} for {}: {}", path,
                                           append ? "appending" : "writing", errno_reason(errno)));
    }
    if (!append || !has_content) write(header + "\n");
  }
  /// Appends one line (without its newline); nothing without a path.
  void row(const std::string& line) {
    if (out_) write(line + "\n");
  }

 private:
  void write(const std::string& text) {
    errno = 0;
    *out_ << text;
    out_->flush();
    if (!*out_) throw std::runtime_error(fmt::format("cannot write to --log-csv file {}: {}", path_, errno_reason(errno)));
  }

  std::string path_;
  std::unique_ptr<std::ofstream> out_;
};

/// The summary is a job's result: a failed write to stdout (a full disk, say) is an error too.
inline void check_stdout() {
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    throw std::runtime_error(fmt::format("cannot write to standard output: {}", errno_reason(errno)));
  }
}

/// Runs a whole program (`run` parses, trains, prints); whatever escapes it (a bad or mismatched
/// checkpoint, a failed write, ...) is one line on stderr, `<program>: error: ...`, and exit code 1.
inline int guarded_main(const char* program, const std::function<int()>& run) {
  try {
    return run();
  } catch (const c10::Error& e) {
    fmt::print(stderr, "{}: error: {}\n", program, first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", program, first_line(e.what()));
  } catch (...) {
    fmt::print(stderr, "{}: error: unknown exception\n", program);
  }
  return 1;
}

}  // namespace rlobj_examples
