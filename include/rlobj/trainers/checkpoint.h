#pragma once

/// \file
/// `rlobj::trainers::CheckpointRegistry`: one registry of the records a training run saves and
/// restores — its components (the trainer's counters, the collector, the loss, the optimisers,
/// the replay buffer, the return tracker, ...) each register a named record with how to write
/// and read it. A checkpoint is stamped with its kind and layout version and fingerprinted with
/// the settings a resumed run must share; it is written atomically (`save_atomic`) and verified
/// record by record (CRC) before anything is read.

#include <cstdint>
#include <exception>
#include <functional>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <torch/serialize/archive.h>

#include "rlobj/serialize.h"

namespace rlobj {
namespace trainers {

/// The layout of the checkpoints `CheckpointRegistry` writes (1: the examples' trainers before
/// `rlobj::trainers`, which kept their own records).
constexpr int64_t kCheckpointLayout = 2;

/// The records of a training checkpoint, in registration order.
///
/// ```
/// trainers::CheckpointRegistry records("rlobj.examples.ddpg_pendulum", settings.fingerprint());
/// records.add("optim_actor", [&](auto& a) { optim_actor.save(a); }, [&](auto& a) { optim_actor.load(a); });
/// records.save("run.pt");   // atomic
/// records.load("run.pt");   // kind, layout, fingerprint, then every record, errors naming it
/// ```
class CheckpointRegistry {
 public:
  /// Writes one record into its own archive.
  using Save = std::function<void(torch::serialize::OutputArchive&)>;
  /// Reads one record from its own archive.
  using Load = std::function<void(torch::serialize::InputArchive&)>;

  /// `kind`: what the checkpoint holds (a checkpoint of another kind is refused); `fingerprint`:
  /// the settings a resumed run must share (see `set_fingerprint`).
  explicit CheckpointRegistry(std::string kind = "rlobj.Trainer", std::string fingerprint = {})
      : kind_(std::move(kind)), fingerprint_(std::move(fingerprint)) {}

  /// What the checkpoints hold (`"rlobj.examples.ddpg_pendulum"`).
  void set_kind(std::string kind) { kind_ = std::move(kind); }
  /// The kind of the checkpoints.
  const std::string& kind() const noexcept { return kind_; }
  /// The settings a checkpoint must have been made with to be resumed (a loaded checkpoint with
  /// another fingerprint is refused, naming both).
  void set_fingerprint(std::string fingerprint) { fingerprint_ = std::move(fingerprint); }
  /// The fingerprint checkpoints are written and checked with.
  const std::string& fingerprint() const noexcept { return fingerprint_; }

  /// Registers a record. Names are unique; `optional` records may be absent from a checkpoint
  /// (a component added after it was written), the others must be there.
  void add(const std::string& name, Save save, Load load, bool optional = false) {
    TORCH_CHECK_VALUE(!name.empty() && name.rfind("rlobj_", 0) != 0, "CheckpointRegistry: invalid record name \"",
                      name, "\"");
    for (const auto& r : records_) {
      TORCH_CHECK_VALUE(r.name != name, "CheckpointRegistry: a record named \"", name, "\" is already registered");
    }
    records_.push_back({name, std::move(save), std::move(load), optional});
  }
  /// The record names, in order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& r : records_) out.push_back(r.name);
    return out;
  }

  /// Writes every record to `path`, atomically: a crash leaves the previous checkpoint whole.
  void save(const std::string& path) const {
    torch::serialize::OutputArchive archive;
    write_format(archive, kind_);
    archive.write("rlobj_checkpoint_layout", c10::IValue(kCheckpointLayout));
    archive.write("config", c10::IValue(fingerprint_));
    for (const auto& r : records_) {
      torch::serialize::OutputArchive record;
      r.save(record);
      archive.write(r.name, record);
    }
    save_atomic(archive, path);
  }

  /// Reads a checkpoint written by `save` with the same kind and fingerprint: the file is
  /// verified (every record's CRC) and its stamp and fingerprint checked before any record is
  /// read; then every record in order. Errors name the file and the record; a standard exception
  /// from a record (`std::bad_alloc` on a huge size) becomes a `c10::Error` too.
  void load(const std::string& path) {
    const std::string where = "checkpoint \"" + path + "\"";
    torch::serialize::InputArchive archive;
    guarded(where, [&] { load_archive(archive, path); });
    check_format(archive, kind_, where.c_str());
    c10::IValue layout;
    TORCH_CHECK(archive.try_read("rlobj_checkpoint_layout", layout) && layout.isInt(), where,
                " has layout 1 (written by the examples' own trainers, before rlobj::trainers); this build reads "
                "layout ", kCheckpointLayout, ": start a new run, or resume it with the rlobj that wrote it");
    TORCH_CHECK(layout.toInt() == kCheckpointLayout, where, " has layout ", layout.toInt(), "; this build reads layout ",
                kCheckpointLayout);
    c10::IValue fingerprint;
    TORCH_CHECK(archive.try_read("config", fingerprint) && fingerprint.isString(), where, " has no settings record");
    TORCH_CHECK(fingerprint.toStringRef() == fingerprint_, where, " was made with ", fingerprint.toStringRef(),
                " but this run uses ", fingerprint_);
    for (const auto& r : records_) {
      torch::serialize::InputArchive record;
      bool found = false;
      guarded(where + ", record \"" + r.name + "\"", [&] { found = archive.try_read(r.name, record); });
      if (!found) {
        TORCH_CHECK(r.optional, where, " has no record \"", r.name, "\"");
        continue;
      }
      guarded(where + ", record \"" + r.name + "\"", [&] { r.load(record); });
    }
  }

 private:
  struct Record {
    std::string name;
    Save save;
    Load load;
    bool optional;
  };

  // Runs `fn`, prefixing the message of any error with `where`.
  template <typename Fn>
  static void guarded(const std::string& where, Fn&& fn) {
    try {
      fn();
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, where, ": ", e.what_without_backtrace());
    } catch (const std::bad_alloc&) {
      TORCH_CHECK(false, where, ": out of memory while reading it (a corrupt size?)");
    } catch (const std::exception& e) {
      TORCH_CHECK(false, where, ": ", e.what());
    }
  }

  std::string kind_;
  std::string fingerprint_;
  std::vector<Record> records_;
};

/// Registers LibTorch's default generators as the record `generators`: the CPU one (network
/// redraws, TD3's noise, SAC's and PPO's samples) and, for an accelerator `device`, that device's.
/// A seeded run resumed from a checkpoint then draws what the uninterrupted run would have.
inline void add_generator_record(CheckpointRegistry& records, torch::Device device) {
  records.add(
      "generators",
      [device](torch::serialize::OutputArchive& a) {
        a.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
        if (!device.is_cpu()) a.write("device", at::globalContext().defaultGenerator(device).get_state());
      },
      [device](torch::serialize::InputArchive& a) {
        torch::Tensor cpu, accelerator;
        a.read("cpu", cpu);
        const bool has_device = !device.is_cpu() && a.try_read("device", accelerator);
        // Both states are tried on scratch generators before either is committed.
        at::Generator scratch = detail::scratch_generator(at::detail::getDefaultCPUGenerator());
        scratch.set_state(cpu);
        at::Generator generator = at::detail::getDefaultCPUGenerator();
        generator.set_state(cpu);
        if (has_device) {
          at::Generator on_device = at::globalContext().defaultGenerator(device);
          on_device.set_state(accelerator);
        }
      });
}

}  // namespace trainers
}  // namespace rlobj
