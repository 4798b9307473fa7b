#pragma once

/// \file
/// `rlobj::trainers::Trainer`: TorchRL's `torchrl.trainers.Trainer` — the training loop over any
/// collector (any `EnvBase`) and any update (any loss), with named hook stages
/// (`register_op`) for what differs between algorithms: replay buffers, minibatch epochs,
/// return tracking, evaluation, logging and checkpoints are hooks (`hooks.h`), as in TorchRL.
///
/// One `step()` is one collected batch:
///
/// ```
/// batch = collector.next()                      // nothing left: step() returns false
/// BatchProcess(batch)                           // e.g. track returns, extend the replay buffer, GAE
/// PreStepsLog(batch)
/// if frames >= init_random_frames and every gate is open:
///   PreOptimSteps()
///   repeat optim_steps_per_batch times:
///     ProcessOptimBatch()                       // sub_batch = batch, or a replay sample, a minibatch
///     losses = update(sub_batch)                // forward, backward, optimiser steps, target update
///     PostLoss(), PostOptim(), PostOptimLog()
/// PostSteps(), PostStepsLog(batch)              // e.g. evaluate, log, checkpoint
/// ```
///
/// Offline (`Trainer(Offline{}, update, options)`, TorchRL's offline loops): no collector; each
/// step makes `optim_steps_per_batch` updates on what the ProcessOptimBatch hooks give (a
/// dataset's samples: `DatasetHook`) until `total_updates`, with an empty batch for the other
/// stages.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>

#include "rlobj/collectors/common.h"
#include "rlobj/tensordict.h"
#include "rlobj/trainers/checkpoint.h"

namespace rlobj {
namespace trainers {

/// Where a hook runs in `Trainer::step` (TorchRL's `register_op` destinations).
enum class Stage {
  BatchProcess,       ///< `batch_process`: on each collected batch (may replace it)
  PreStepsLog,        ///< `pre_steps_log`: after BatchProcess, before the optimisation steps
  PreOptimSteps,      ///< `pre_optim_steps`: once before a batch's optimisation steps
  ProcessOptimBatch,  ///< `process_optim_batch`: before each update; sets the sub-batch it trains on
  PostLoss,           ///< `post_loss`: after each update, with its losses
  PostOptim,          ///< `post_optim`: after each update
  PostOptimLog,       ///< `post_optim_log`: after each update, for logging
  PostSteps,          ///< `post_steps`: after a batch's optimisation steps (run even without them)
  PostStepsLog,       ///< `post_steps_log`: last, for evaluation, logging and checkpoints
};

/// TorchRL's name of `stage` (`"batch_process"`, ...).
inline const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::BatchProcess: return "batch_process";
    case Stage::PreStepsLog: return "pre_steps_log";
    case Stage::PreOptimSteps: return "pre_optim_steps";
    case Stage::ProcessOptimBatch: return "process_optim_batch";
    case Stage::PostLoss: return "post_loss";
    case Stage::PostOptim: return "post_optim";
    case Stage::PostOptimLog: return "post_optim_log";
    case Stage::PostSteps: return "post_steps";
    case Stage::PostStepsLog: return "post_steps_log";
  }
  return "?";
}

/// What the hooks of one `Trainer::step` see and may change.
struct StepContext {
  /// The collected batch (BatchProcess hooks may replace it, e.g. with its flattened view).
  TensorDict batch;
  /// What the current update trains on: the batch unless a ProcessOptimBatch hook set it.
  TensorDict sub_batch;
  /// The current update's losses (detached), from PostLoss on.
  TensorDict losses;
  /// The current update's index among the batch's `optim_steps_per_batch`.
  int64_t optim_step = 0;
};

/// Options of `Trainer`, with TorchRL's names.
struct TrainerOptions {
  /// Updates per collected batch (off-policy: usually one per frame; on-policy: epochs times
  /// minibatches).
  TORCH_ARG(int64_t, optim_steps_per_batch) = 1;
  /// Updates start once this many frames are collected (and every gate is open).
  TORCH_ARG(int64_t, init_random_frames) = 0;
  /// Offline trainers: the number of updates the run makes (the last step makes fewer than
  /// `optim_steps_per_batch` if that is what is left).
  TORCH_ARG(int64_t, total_updates) = 0;
};

/// Tag of the offline `Trainer` constructor: `Trainer(Offline{}, update, options)`.
struct Offline {};

/// The training loop (see the file comment). The collector and the update are the trainer's;
/// hooks are callables registered per stage and run in registration order.
///
/// ```
/// trainers::Trainer trainer(collector, trainers::LossUpdate(loss, optimizer),
///                           trainers::TrainerOptions().optim_steps_per_batch(1).init_random_frames(1000));
/// trainers::ReplayBufferHook(rb, /*batch_size=*/256).register_with(trainer);
/// trainer.register_op(trainers::Stage::PostStepsLog, [&](trainers::StepContext&) { ... });
/// trainer.train();
/// ```
class Trainer {
 public:
  /// A hook.
  using Op = std::function<void(StepContext&)>;
  /// One optimisation step on a sub-batch; returns the losses (detached) for the hooks.
  using Update = std::function<TensorDict(const TensorDict&)>;

  /// Trains with the batches of `collector` and the update `update`. The trainer's own records
  /// ("collector" and "trainer_counters") are registered in `records()`.
  Trainer(std::shared_ptr<collectors::DataCollectorBase> collector, Update update, TrainerOptions options = {})
      : collector_(std::move(collector)), update_(std::move(update)), options_(options) {
    TORCH_CHECK_VALUE(collector_ != nullptr, "Trainer: the collector is empty");
    TORCH_CHECK_VALUE(options_.optim_steps_per_batch() >= 0, "Trainer: optim_steps_per_batch must be >= 0, got ",
                      options_.optim_steps_per_batch());
    TORCH_CHECK_VALUE(options_.init_random_frames() >= 0, "Trainer: init_random_frames must be >= 0, got ",
                      options_.init_random_frames());
    records_.add(
        "collector", [this](torch::serialize::OutputArchive& a) { collector_->save(a); },
        [this](torch::serialize::InputArchive& a) { collector_->load(a); });
    add_counters();
  }

  /// Offline: no collector, no environment. Each `step()` makes `optim_steps_per_batch` (>= 1)
  /// updates, on the sub-batches the ProcessOptimBatch hooks set (`DatasetHook`), until
  /// `options.total_updates()` (>= 1) updates are made; the batch the other stages see is empty,
  /// and `frames()` and `episodes()` stay 0. A gate that is closed (a dataset smaller than a
  /// batch) is an error, not an endless loop. The trainer's own record is "trainer_counters".
  Trainer(Offline, Update update, TrainerOptions options) : update_(std::move(update)), options_(options) {
    TORCH_CHECK_VALUE(options_.optim_steps_per_batch() >= 1,
                      "Trainer (offline): optim_steps_per_batch must be >= 1, got ", options_.optim_steps_per_batch());
    TORCH_CHECK_VALUE(options_.total_updates() >= 1, "Trainer (offline): total_updates must be >= 1, got ",
                      options_.total_updates());
    TORCH_CHECK_VALUE(options_.init_random_frames() == 0, "Trainer (offline): init_random_frames must be 0 (there "
                      "are no frames), got ", options_.init_random_frames());
    add_counters();
  }

  /// Registers `op` to run at `stage`, after the ops already registered there.
  /// Registers `op` to run at `stage`, after the ops already registered there.
  void register_op(Stage stage, Op op) {
    TORCH_CHECK_VALUE(static_cast<bool>(op), "Trainer.register_op(", stage_name(stage), "): the op is empty");
    ops_[static_cast<size_t>(stage)].push_back(std::move(op));
  }
  /// Adds a condition the optimisation steps wait for (a replay buffer holding a full batch).
  void add_gate(std::function<bool()> gate) {
    TORCH_CHECK_VALUE(static_cast<bool>(gate), "Trainer.add_gate: the gate is empty");
    gates_.push_back(std::move(gate));
  }

  /// Collects one batch and trains on it; false once the collector is exhausted.
  bool step() {
    StepContext context;
    int64_t steps = options_.optim_steps_per_batch();
    if (collector_) {
      std::optional<TensorDict> collected = collector_->next();
      if (!collected) return false;
      context.batch = std::move(*collected);
    } else {
      if (updates_ >= options_.total_updates()) return false;
      steps = std::min(steps, options_.total_updates() - updates_);
    }
    run(Stage::BatchProcess, context);
    run(Stage::PreStepsLog, context);
    const bool go = ready();
    TORCH_CHECK(go || collector_ != nullptr, "Trainer (offline): a gate is closed, so no update can ever run (a "
                "dataset holding fewer transitions than a batch?)");
    if (go) {
      run(Stage::PreOptimSteps, context);
      for (int64_t i = 0; i < steps; ++i) {
        context.optim_step = i;
        context.sub_batch = context.batch;
        run(Stage::ProcessOptimBatch, context);
        context.losses = update_(context.sub_batch);
        ++updates_;
        run(Stage::PostLoss, context);
        run(Stage::PostOptim, context);
        run(Stage::PostOptimLog, context);
      }
    }
    ++batches_;
    run(Stage::PostSteps, context);
    run(Stage::PostStepsLog, context);
    return true;
  }

  /// Runs `step()` until the collector is exhausted (offline: until `total_updates`).
  void train() {
    while (step()) {
    }
  }

  /// Frames collected so far (the collector's count, restored with it; 0 offline).
  int64_t frames() const { return collector_ ? collector_->frames() : 0; }
  /// Episodes finished so far (0 offline).
  int64_t episodes() const { return collector_ ? collector_->episodes() : 0; }
  /// Whether the trainer has no collector (`Trainer(Offline{}, ...)`).
  bool offline() const noexcept { return collector_ == nullptr; }
  /// Updates (optimisation steps) so far.
  int64_t updates() const noexcept { return updates_; }
  /// Batches trained on so far.
  int64_t batches() const noexcept { return batches_; }
  /// The trainer's options.
  const TrainerOptions& options() const noexcept { return options_; }
  /// The collector (`c10::Error` for an offline trainer, which has none).
  collectors::DataCollectorBase& collector() {
    TORCH_CHECK(collector_ != nullptr, "Trainer.collector: an offline trainer has no collector");
    return *collector_;
  }

  /// The records a checkpoint holds; hooks and users add theirs.
  CheckpointRegistry& records() noexcept { return records_; }
  /// Writes a checkpoint of every record (atomically).
  void save(const std::string& path) const { records_.save(path); }
  /// Restores a checkpoint written by `save` (see `CheckpointRegistry::load`).
  void load(const std::string& path) { records_.load(path); }

 private:
  bool ready() const {
    if (frames() < options_.init_random_frames()) return false;
    for (const auto& gate : gates_) {
      if (!gate()) return false;
    }
    return true;
  }

  // The trainer's own record: its counters.
  void add_counters() {
    TORCH_CHECK_VALUE(static_cast<bool>(update_), "Trainer: the update is empty");
    records_.add(
        "trainer_counters",
        [this](torch::serialize::OutputArchive& a) {
          a.write("counters", torch::tensor({updates_, batches_}, torch::kInt64));
        },
        [this](torch::serialize::InputArchive& a) {
          torch::Tensor counters;
          a.read("counters", counters);
          TORCH_CHECK_VALUE(counters.scalar_type() == torch::kLong && counters.numel() == 2,
                            "the trainer's counters must be 2 int64 values, got ", counters.numel(), " ",
                            counters.scalar_type());
          counters = counters.cpu();
          const int64_t updates = counters[0].item<int64_t>(), batches = counters[1].item<int64_t>();
          TORCH_CHECK_VALUE(updates >= 0 && batches >= 0, "the trainer's counters are negative (updates ", updates,
                            ", batches ", batches, ")");
          updates_ = updates;
          batches_ = batches;
        });
  }

  void run(Stage stage, StepContext& context) {
    for (auto& op : ops_[static_cast<size_t>(stage)]) op(context);
  }

  std::shared_ptr<collectors::DataCollectorBase> collector_;
  Update update_;
  TrainerOptions options_;
  std::vector<Op> ops_[static_cast<size_t>(Stage::PostStepsLog) + 1];
  std::vector<std::function<bool()>> gates_;
  CheckpointRegistry records_;
  int64_t updates_ = 0;
  int64_t batches_ = 0;
};

}  // namespace trainers
}  // namespace rlobj
