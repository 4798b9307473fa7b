#pragma once

/// \file
/// `rlobj::collectors::DataCollectorBase`: what a source of collected batches gives a training
/// loop (TorchRL's `DataCollectorBase`): the next batch, the frames and episodes so far, and its
/// state for checkpoints. `SyncDataCollector` steps environments in this process;
/// `rlobj::distributed::RemoteCollector` receives batches from collector processes.

#include <cstdint>
#include <optional>

#include <torch/serialize/archive.h>

#include "rlobj/tensordict.h"

namespace rlobj {
namespace collectors {

/// A source of batches of transitions in TorchRL's layout (`[*env batch, T]`, `"next"` entries at
/// t+1), as `rlobj::trainers::Trainer` consumes them.
class DataCollectorBase {
 public:
  virtual ~DataCollectorBase() = default;

  /// The next batch, or nothing once the collector is exhausted.
  virtual std::optional<TensorDict> next() = 0;
  /// Frames (transitions) collected so far, over every environment.
  virtual int64_t frames() const = 0;
  /// Episodes finished so far.
  virtual int64_t episodes() const = 0;
  /// Writes the collector's state (progress, environments, generators) into `archive`.
  virtual void save(torch::serialize::OutputArchive& archive) const = 0;
  /// Restores what `save` wrote; everything is read and checked before anything changes.
  virtual void load(torch::serialize::InputArchive& archive) = 0;
};

}  // namespace collectors
}  // namespace rlobj
