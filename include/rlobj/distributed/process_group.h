#pragma once

/// \file
/// `rlobj::distributed::ProcessGroup`: a Gloo (or NCCL) process group (LibTorch's c10d) set up from the
/// variables `torchrun` sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
/// with a timeout on every collective and errors that say which rank failed.
///
/// ```
/// auto pg = rlobj::distributed::ProcessGroup::from_env();   // world of 1 when nothing is set
/// pg.check_same("config", cfg.fingerprint());               // every rank runs the same setup
/// torch::Tensor t = torch::ones({4});
/// pg.allreduce_sum_(t, "ones");                             // t == world_size everywhere
/// pg.finish();                                              // a last barrier, then exit
/// ```
///
/// Needs the target `rlobj::distributed` (it defines `USE_C10D_GLOO`; Gloo's headers come from
/// Debian's `libgloo-dev`). Not included by `rlobj/rlobj.h`.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
// NCCL: LibTorch's CUDA builds define USE_C10D_NCCL for their users (torch_cuda's interface);
// rlobj::distributed adds RLOBJ_NO_NCCL when it cannot find nccl.h for them.
#if defined(USE_C10D_NCCL) && !defined(RLOBJ_NO_NCCL)
#define RLOBJ_DISTRIBUTED_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/arg.h>
#include <torch/types.h>

#ifndef USE_C10D_GLOO
#error "rlobj/distributed needs LibTorch's Gloo backend: link rlobj::distributed (it defines USE_C10D_GLOO)"
#endif

namespace rlobj {
namespace distributed {

namespace detail {
/// The class c10d's backends derive from: `c10d::Backend` in LibTorch 2.x, `c10d::ProcessGroup`
/// in 1.13 (whose `Backend.hpp` exists but is not the backends' base yet).
using BackendBase = std::conditional_t<std::is_base_of<c10d::Backend, c10d::ProcessGroupGloo>::value, c10d::Backend,
                                       c10d::ProcessGroup>;

/// `tensors`' values, each converted to `options`, as one contiguous 1-D tensor: what a
/// collective over a list of parameters moves in one message.
inline torch::Tensor flatten_values(const std::vector<torch::Tensor>& tensors, const torch::TensorOptions& options) {
  std::vector<torch::Tensor> parts;
  parts.reserve(tensors.size());
  for (const auto& t : tensors) parts.push_back(t.detach().reshape({-1}).to(options));
  return torch::cat(parts).contiguous();
}

/// The inverse of `flatten_values`: copies consecutive slices of `flat` into `tensors` (in place,
/// converting back to each one's dtype and device).
inline void copy_from_flat(const torch::Tensor& flat, const std::vector<torch::Tensor>& tensors) {
  int64_t offset = 0;
  for (const auto& t : tensors) {
    t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}
}  // namespace detail

/// The c10d backend a `ProcessGroup` runs on.
enum class BackendType {
  Gloo,  ///< CPU tensors, TCP (every LibTorch build with c10d)
  Nccl,  ///< CUDA tensors (a LibTorch built with NCCL, and nccl.h found: see `has_nccl()`)
};

/// True when this build can make an NCCL process group.
constexpr bool has_nccl() {
#if defined(RLOBJ_DISTRIBUTED_NCCL)
  return true;
#else
  return false;
#endif
}

/// Where this process sits in a multi-process run: torchrun's variables.
struct LaunchInfo {
  /// `RANK`: this process's rank, from 0.
  int64_t rank = 0;
  /// `WORLD_SIZE`: the number of processes.
  int64_t world_size = 1;
  /// `LOCAL_RANK`: this process's rank on its host (default: `RANK`).
  int64_t local_rank = 0;
  /// `MASTER_ADDR`: the host of rank 0's store.
  std::string master_addr = "127.0.0.1";
  /// `MASTER_PORT`: the port of rank 0's store.
  int64_t master_port = 29500;

  /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`. None set: a world of
  /// one (rank 0), so that a program runs alone unchanged. Some set: `RANK` and `WORLD_SIZE` are
  /// required (plus `MASTER_ADDR`/`MASTER_PORT` when `WORLD_SIZE` > 1); a missing or malformed one
  /// is a `c10::Error` naming it. `LOCAL_RANK` defaults to `RANK`.
  static LaunchInfo from_env() {
    static const char* const kVars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
    bool any = false;
    for (const char* v : kVars) any = any || std::getenv(v) != nullptr;
    LaunchInfo info;
    if (!any) return info;
    const auto integer = [](const char* name, bool required, int64_t fallback) -> int64_t {
      const char* text = std::getenv(name);
      if (text == nullptr) {
        TORCH_CHECK_VALUE(!required, "rlobj::distributed: the environment variable ", name,
                          " is not set (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; "
                          "so does scripts/launch.sh)");
        return fallback;
      }
      const std::string s(text);
      size_t used = 0;
      long long value = 0;
      try {
        value = std::stoll(s, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      TORCH_CHECK_VALUE(!s.empty() && used == s.size(), "rlobj::distributed: ", name, "=\"", s,
                        "\" is not an integer");
      return static_cast<int64_t>(value);
    };
    info.world_size = integer("WORLD_SIZE", true, 1);
    info.rank = integer("RANK", true, 0);
    info.local_rank = integer("LOCAL_RANK", false, info.rank);
    info.validate_ranks();
    if (info.world_size > 1) {
      const char* addr = std::getenv("MASTER_ADDR");
      TORCH_CHECK_VALUE(addr != nullptr && *addr != '\0',
                        "rlobj::distributed: the environment variable MASTER_ADDR is not set (the host of rank 0)");
      info.master_addr = addr;
      info.master_port = integer("MASTER_PORT", true, 0);
    }
    info.validate();
    return info;
  }

  /// Checks a hand-made `LaunchInfo` as `from_env` checks the environment: `c10::ValueError`
  /// naming the field (a world of at least one, a rank inside it, a local rank >= 0, a TCP port).
  void validate() const {
    validate_ranks();
    TORCH_CHECK_VALUE(master_port > 0 && master_port < 65536, "rlobj::distributed: MASTER_PORT=", master_port,
                      " is not a TCP port (1..65535)");
    TORCH_CHECK_VALUE(world_size == 1 || !master_addr.empty(),
                      "rlobj::distributed: MASTER_ADDR is empty (the host of rank 0)");
  }

 private:
  void validate_ranks() const {
    TORCH_CHECK_VALUE(world_size >= 1, "rlobj::distributed: WORLD_SIZE=", world_size, " must be >= 1");
    TORCH_CHECK_VALUE(rank >= 0 && rank < world_size, "rlobj::distributed: RANK=", rank, " is outside [0, WORLD_SIZE=",
                      world_size, ")");
    TORCH_CHECK_VALUE(local_rank >= 0, "rlobj::distributed: LOCAL_RANK=", local_rank, " must be >= 0");
  }
};

/// Options of a `ProcessGroup`.
struct ProcessGroupOptions {
  /// Bound on the rendezvous and on every collective or message: a peer that is gone or hung
  /// makes the call fail after at most this long (a dead peer is usually noticed at once).
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::milliseconds(60000);
  /// The address Gloo's TCP transport binds to; empty: this host's name as Gloo resolves it,
  /// or 127.0.0.1 when `MASTER_ADDR` is a loopback address.
  TORCH_ARG(std::string, interface_address) = "";
  /// How often each rank tells the store it is alive; a failed call reads these to name the
  /// rank that stopped.
  TORCH_ARG(std::chrono::milliseconds, heartbeat) = std::chrono::milliseconds(250);
  /// Gloo (CPU tensors) or NCCL (CUDA tensors, one GPU per rank: the caller selects
  /// `cuda:LOCAL_RANK` before building the group). `DistributedCollector` needs Gloo.
  TORCH_ARG(BackendType, backend) = BackendType::Gloo;
};

/// A Gloo process group over a `c10d::TCPStore` hosted by rank 0. Every operation waits at most
/// `options.timeout()`; a failure is a `c10::Error` naming the operation, this rank, and the rank
/// that died or failed when it can be told (from the store: each rank keeps a heartbeat there
/// and leaves its error message before it exits on one).
///
/// A world of one needs no store and no backend: the collectives return at once.
class ProcessGroup {
 public:
  /// `LaunchInfo::from_env()`, then the rendezvous.
  static ProcessGroup from_env(ProcessGroupOptions options = {}) {
    return ProcessGroup(LaunchInfo::from_env(), std::move(options));
  }

  /// Connects to (rank 0: hosts) the store at `info.master_addr:info.master_port`, checks that
  /// every rank has the same `WORLD_SIZE`, and builds the Gloo backend.
  ProcessGroup(LaunchInfo info, ProcessGroupOptions options = {}) : state_(std::make_shared<State>()) {
    info.validate();
    state_->info = std::move(info);
    state_->options = std::move(options);
    TORCH_CHECK_VALUE(state_->options.timeout().count() > 0, "rlobj::distributed: timeout must be positive, got ",
                      state_->options.timeout().count(), " ms");
    TORCH_CHECK_VALUE(state_->options.heartbeat().count() > 0,
                      "rlobj::distributed: heartbeat must be positive, got ", state_->options.heartbeat().count(), " ms");
    TORCH_CHECK_VALUE(state_->options.backend() != BackendType::Nccl || has_nccl(),
                      "rlobj::distributed: backend NCCL asked for, but this build has no NCCL (a LibTorch without "
                      "CUDA/NCCL, or nccl.h not found when rlobj::distributed was configured)");
    if (state_->info.world_size > 1) {
      try {
        connect();
      } catch (...) {
        state_->stop_heartbeat();  // no destructor will run
        throw;
      }
    }
  }

  // Neither copied nor moved: `DataParallel` and `DistributedCollector` keep a reference to it
  // (`auto pg = ProcessGroup::from_env();` needs neither, C++17 constructs it in place).
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;
  ~ProcessGroup() { state_->stop_heartbeat(); }

  /// This process's rank.
  int64_t rank() const { return state_->info.rank; }
  /// Number of processes in the group.
  int64_t world_size() const { return state_->info.world_size; }
  /// This process's rank on its host.
  int64_t local_rank() const { return state_->info.local_rank; }
  /// The launch variables the group was built from.
  const LaunchInfo& info() const { return state_->info; }
  /// The options the group was built with.
  const ProcessGroupOptions& options() const { return state_->options; }
  /// The c10d backend (Gloo's or NCCL's; null in a world of one), for collectives not wrapped
  /// here: a `c10d::Backend` in LibTorch 2.x, a `c10d::ProcessGroup` in 1.13.
  const c10::intrusive_ptr<detail::BackendBase>& backend() const { return state_->backend; }
  /// The backend in use (Gloo or NCCL).
  BackendType backend_type() const { return state_->options.backend(); }

  /// Sums `tensor` (CPU, contiguous) over all ranks, in place. `what` names it in errors.
  void allreduce_sum_(torch::Tensor& tensor, const std::string& what) {
    if (world_size() == 1) return;
    check_tensor(tensor, what, "allreduce");
    std::vector<torch::Tensor> tensors{tensor};
    run("allreduce", what, [&] { return state_->backend->allreduce(tensors); });
  }

  /// Overwrites `tensor` on every rank with `root`'s.
  void broadcast_(torch::Tensor& tensor, int64_t root, const std::string& what) {
    check_root(root, "broadcast");
    if (world_size() == 1) return;
    check_tensor(tensor, what, "broadcast");
    std::vector<torch::Tensor> tensors{tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    run("broadcast", what, [&] { return state_->backend->broadcast(tensors, opts); });
  }

  /// Every rank's `tensor` (same shape and dtype everywhere), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor, const std::string& what) {
    if (world_size() == 1) return {tensor.clone()};
    check_tensor(tensor, what, "all_gather");
    std::vector<torch::Tensor> input{tensor};
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int64_t r = 0; r < world_size(); ++r) output[0].push_back(torch::empty_like(tensor));
    run("all_gather", what, [&] { return state_->backend->allgather(output, input); });
    return output[0];
  }

  /// Sends `tensor`'s bytes to rank `dst` (which calls `recv_` with a tensor of the same size).
  void send(const torch::Tensor& tensor, int64_t dst, int tag, const std::string& what) {
    check_peer(dst, "send");
    check_tensor(tensor, what, "send");
    std::vector<torch::Tensor> tensors{tensor};
    run("send to rank " + std::to_string(dst), what, [&] { return state_->backend->send(tensors, dst, tag); });
  }

  /// Receives into `tensor` what rank `src` sent with `tag`.
  void recv_(torch::Tensor& tensor, int64_t src, int tag, const std::string& what) {
    check_peer(src, "recv");
    check_tensor(tensor, what, "recv");
    std::vector<torch::Tensor> tensors{tensor};
    run("receive from rank " + std::to_string(src), what,
        [&] { return state_->backend->recv(tensors, src, tag); });
  }

  /// Waits for every rank.
  void barrier(const std::string& what) {
    if (world_size() == 1) return;
    // Gloo's barrier is an allreduce of nothing; an allreduce of one number carries the same
    // guarantee on every LibTorch version.
    torch::Tensor one = torch::ones({1}, backend_type() == BackendType::Nccl ? torch::Device(torch::kCUDA)
                                                                              : torch::Device(torch::kCPU));
    allreduce_sum_(one, what);
  }

  /// Checks that every rank passes the same `value` for `what` (a configuration fingerprint, a
  /// batch layout): else every rank throws a `c10::Error` listing the ranks that differ from
  /// rank 0, with both values.
  void check_same(const std::string& what, const std::string& value) {
    if (world_size() == 1) return;
    const std::string prefix = state_->prefix + "same/" + std::to_string(state_->same_checks++) + "/";
    store_call("publish " + what, [&] { state_->store->set(prefix + std::to_string(rank()), bytes(value)); });
    std::string differ;
    std::string reference;
    for (int64_t r = 0; r < world_size(); ++r) {
      std::string v;
      store_call("read rank " + std::to_string(r) + "'s " + what,
                 [&] { v = text(state_->store->get(prefix + std::to_string(r))); });
      if (r == 0) {
        reference = v;
      } else if (v != reference) {
        differ += "\n  rank " + std::to_string(r) + ": " + v;
      }
    }
    // Nobody leaves (and perhaps exits, closing the store) before everyone has read.
    barrier("check_same(" + what + ")");
    TORCH_CHECK(differ.empty(), "rlobj::distributed: ", what, " differs between ranks (all must be started the same):",
                "\n  rank 0: ", reference, differ);
  }

  /// A last barrier, so that rank 0 (which hosts the store) outlives every rank's last use of
  /// it; then stops the heartbeat. Call it at the end of a successful run.
  void finish() {
    barrier("finish");
    state_->stop_heartbeat();
  }

  /// Records `message` in the store as this rank's reason to stop, so that the ranks left waiting
  /// quote it once this rank has exited. On the rank hosting the store (rank 0 unless torchrun
  /// hosts it), also closes the backend's connections, so that every peer's pending call fails
  /// now, and keeps the store up long enough for them to read the heartbeats and name the rank
  /// that stopped (about 6 heartbeats). Call it before exiting on an error; the wrapped
  /// collectives call it when they fail. Never throws.
  void report_failure(const std::string& message) noexcept {
    if (world_size() == 1 || !state_->store) return;
    try {
      state_->store->set(failed_key(rank()), bytes(message));
    } catch (...) {
    }
    if (state_->hosts_store && !state_->reported) {
      state_->reported = true;
      try {
        state_->backend.reset();
      } catch (...) {
      }
      std::this_thread::sleep_for(6 * state_->options.heartbeat() + std::chrono::milliseconds(250));
    }
  }

 private:
  struct State {
    LaunchInfo info;
    ProcessGroupOptions options;
    c10::intrusive_ptr<c10d::TCPStore> store;
    c10::intrusive_ptr<detail::BackendBase> backend;
    int64_t same_checks = 0;
    bool hosts_store = false;
    bool reported = false;
    std::string prefix = "rlobj/";  ///< of every key rlobj sets (torchrun's agent store is shared)
    std::thread heartbeat;
    std::mutex mutex;
    std::condition_variable wake;
    bool stopping = false;

    void stop_heartbeat() {
      {
        std::lock_guard<std::mutex> lock(mutex);
        stopping = true;
      }
      wake.notify_all();
      if (!heartbeat.joinable()) return;
      if (heartbeat.get_id() == std::this_thread::get_id()) {
        heartbeat.detach();  // the thread itself dropped the last reference
      } else {
        heartbeat.join();
      }
    }
    ~State() { stop_heartbeat(); }
  };

  static std::vector<uint8_t> bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
  static std::string text(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }
  std::string heartbeat_key(int64_t r) const { return state_->prefix + "heartbeat/" + std::to_string(r); }
  std::string failed_key(int64_t r) const { return state_->prefix + "failed/" + std::to_string(r); }
  std::string where() const {
    return "rank " + std::to_string(rank()) + " of " + std::to_string(world_size());
  }
  std::string store_address() const {
    return state_->info.master_addr + ":" + std::to_string(state_->info.master_port);
  }

  /// Under torchrun (2.x), its agent already hosts a TCPStore at MASTER_ADDR:MASTER_PORT and
  /// says so with TORCHELASTIC_USE_AGENT_STORE=True: then every rank connects as a client, as
  /// `torch.distributed.init_process_group` does.
  static bool agent_store() {
    const char* v = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    return v != nullptr && std::string(v) == "True";
  }

  c10d::TCPStoreOptions store_options(bool server) const {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(state_->info.master_port);
    o.isServer = server;
    if (server) o.numWorkers = static_cast<size_t>(world_size());
    o.waitWorkers = false;  // the WORLD_SIZE check below waits, with a message
    o.timeout = state_->options.timeout();
    return o;
  }

  void connect() {
    const LaunchInfo& info = state_->info;
    const bool host = rank() == 0 && !agent_store();
    state_->hosts_store = host;
    // A restarted torchrun job reuses its agent's store: keys of this attempt only.
    if (const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT")) state_->prefix += std::string(restart) + "/";
    try {
      state_->store = c10::make_intrusive<c10d::TCPStore>(info.master_addr, store_options(host));
    } catch (const std::exception& e) {
      const std::string reason = e.what();
      if (host) {
        TORCH_CHECK(false, "rlobj::distributed: rank 0 cannot host the rendezvous store on ", store_address(),
                    (reason.find("EADDRINUSE") != std::string::npos || reason.find("in use") != std::string::npos
                         ? ": the port is in use (another run?); choose another MASTER_PORT"
                         : ""),
                    " (", first_line(reason), ")");
      }
      TORCH_CHECK(false, "rlobj::distributed: rank ", rank(), " cannot reach rank 0's store at ", store_address(),
                  " within ", state_->options.timeout().count(), " ms: is rank 0 running, with the same MASTER_ADDR "
                  "and MASTER_PORT? (", first_line(reason), ")");
    }
    // WORLD_SIZE must agree: each rank publishes its own and compares with rank 0's.
    const std::string world_key = state_->prefix + "world_size/";
    store_call("publish WORLD_SIZE",
               [&] { state_->store->set(world_key + std::to_string(rank()), bytes(std::to_string(world_size()))); });
    std::string root_world;
    store_call("read rank 0's WORLD_SIZE", [&] { root_world = text(state_->store->get(world_key + "0")); });
    if (root_world != std::to_string(world_size())) {
      const std::string message = "rlobj::distributed: rank " + std::to_string(rank()) + " was started with WORLD_SIZE=" +
                                  std::to_string(world_size()) + " but rank 0 with WORLD_SIZE=" + root_world;
      report_failure(message);
      TORCH_CHECK(false, message);
    }
    start_heartbeat();
    const bool nccl = state_->options.backend() == BackendType::Nccl;
    try {
      auto backend_store = c10::make_intrusive<c10d::PrefixStore>(state_->prefix + (nccl ? "nccl" : "gloo"),
                                                                  state_->store);
      if (nccl) {
#if defined(RLOBJ_DISTRIBUTED_NCCL)
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = state_->options.timeout();
        state_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(backend_store, static_cast<int>(rank()),
                                                                       static_cast<int>(world_size()), opts);
#endif
      } else {
        auto opts = c10d::ProcessGroupGloo::Options::create(state_->options.timeout());
        std::string address = state_->options.interface_address();
        if (address.empty() && (info.master_addr == "127.0.0.1" || info.master_addr == "localhost")) {
          address = "127.0.0.1";
        }
        opts->devices.push_back(address.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                                : c10d::ProcessGroupGloo::createDeviceForHostname(address));
        state_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(backend_store, static_cast<int>(rank()),
                                                                       static_cast<int>(world_size()), opts);
      }
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "rlobj::distributed: ", where(), ": ", nccl ? "NCCL" : "Gloo", "'s rendezvous failed: ",
                  diagnose(), " (", first_line(e.what()), ")");
    }
  }

  /// A thread with its own store connection that bumps this rank's counter every
  /// `options.heartbeat()`; it stops quietly once the store is gone.
  void start_heartbeat() {
    auto state = state_;
    const auto client_options = store_options(false);
    const std::string key = heartbeat_key(rank());
    state->heartbeat = std::thread([state, client_options, key] {
      try {
        auto client = c10::make_intrusive<c10d::TCPStore>(state->info.master_addr, client_options);
        for (int64_t beat = 1;; ++beat) {
          client->set(key, bytes(std::to_string(beat)));
          std::unique_lock<std::mutex> lock(state->mutex);
          if (state->wake.wait_for(lock, state->options.heartbeat(), [&] { return state->stopping; })) return;
        }
      } catch (...) {
        // The store (rank 0) is gone: the next collective will say so.
      }
    });
  }

  /// Why a call failed, as far as the store can tell: the ranks whose heartbeat stopped (with
  /// the message they left, if any), or rank 0 (the store's host) being unreachable. Ranks that
  /// are alive but failed in turn are not blamed.
  std::string diagnose() {
    if (!state_->store) return "no store";
    try {
      const auto beats = [&] {
        std::vector<std::string> b(world_size());
        for (int64_t r = 0; r < world_size(); ++r) {
          if (r != rank() && state_->store->check({heartbeat_key(r)})) b[r] = text(state_->store->get(heartbeat_key(r)));
        }
        return b;
      };
      const auto before = beats();
      std::this_thread::sleep_for(4 * state_->options.heartbeat());
      const auto after = beats();
      std::string stopped;
      for (int64_t r = 0; r < world_size(); ++r) {
        if (r == rank() || (!after[r].empty() && after[r] != before[r])) continue;
        stopped += stopped.empty() ? "" : "; ";
        if (state_->store->check({failed_key(r)})) {
          stopped += "rank " + std::to_string(r) + " failed: " + text(state_->store->get(failed_key(r)));
        } else if (before[r].empty() && after[r].empty()) {
          stopped += "rank " + std::to_string(r) + " never joined (no heartbeat in the store: not started, or it "
                     "failed before connecting)";
        } else {
          stopped += "rank " + std::to_string(r) + " stopped (its heartbeat in the store stopped: it died or hung)";
        }
      }
      if (!stopped.empty()) return stopped;
      return "every rank is still alive: a peer is slow or stuck in other work (timeout " +
             std::to_string(state_->options.timeout().count()) + " ms)";
    } catch (const std::exception&) {
      if (agent_store()) return "the store at " + store_address() + " (torchrun's agent) no longer answers";
      return "rank 0 stopped (it hosts the store at " + store_address() + ", which no longer answers: it died)";
    }
  }

  template <typename F>
  void store_call(const std::string& what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "rlobj::distributed: ", where(), ": ", what, " failed: ",
                  rank() == 0 ? std::string("a rank did not arrive in time") : diagnose(), " (", first_line(e.what()),
                  ")");
    }
  }

  template <typename F>
  void run(const std::string& op, const std::string& what, F&& start) {
    TORCH_CHECK(state_->backend, "rlobj::distributed: ", op, " of '", what, "' on ", where(),
                ": this process group failed earlier and closed its connections");
    const auto t0 = std::chrono::steady_clock::now();
    try {
      auto work = start();
      work->wait(state_->options.timeout());
    } catch (const std::exception& e) {
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const std::string message = fmt::format("rlobj::distributed: {} of '{}' failed on {} after {:.2f} s: {} ({})", op,
                                              what, where(), waited, diagnose(), first_line(e.what()));
      report_failure(message);
      TORCH_CHECK(false, message);
    }
  }

  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  void check_tensor(const torch::Tensor& t, const std::string& what, const char* op) const {
    TORCH_CHECK_VALUE(t.defined(), "rlobj::distributed: ", op, " of '", what, "': the tensor is undefined");
    if (backend_type() == BackendType::Nccl) {
      TORCH_CHECK_VALUE(t.device().is_cuda(), "rlobj::distributed: ", op, " of '", what, "': the tensor is on ",
                        t.device(), "; the NCCL backend takes CUDA tensors");
    } else {
      TORCH_CHECK_VALUE(t.device().is_cpu(), "rlobj::distributed: ", op, " of '", what, "': the tensor is on ",
                        t.device(), "; the Gloo backend takes CPU tensors (ProcessGroupOptions::backend NCCL: CUDA)");
    }
    TORCH_CHECK_VALUE(t.is_contiguous(), "rlobj::distributed: ", op, " of '", what, "': the tensor must be contiguous");
  }
  void check_root(int64_t root, const char* op) const {
    TORCH_CHECK_VALUE(root >= 0 && root < world_size(), "rlobj::distributed: ", op, ": root rank ", root,
                      " is outside [0, ", world_size(), ")");
  }
  void check_peer(int64_t peer, const char* op) const {
    TORCH_CHECK_VALUE(peer >= 0 && peer < world_size() && peer != rank(), "rlobj::distributed: ", op, ": peer rank ",
                      peer, " must be another rank in [0, ", world_size(), ")");
  }

  std::shared_ptr<State> state_;
};

}  // namespace distributed
}  // namespace rlobj
