#pragma once

/// \file
/// `rlobj::collectors::SyncDataCollector`: TorchRL's `SyncDataCollector` — steps an
/// environment with a policy and yields batches of transitions in TorchRL's layout.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/collectors/common.h"
#include "rlobj/envs/common.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/serialize.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace collectors {

/// Collects `frames_per_batch` transitions per iteration from `env` (all its sub-environments
/// step together), until `total_frames` (-1: forever). The first `init_random_frames` frames use
/// random actions from the env's action spec; after that the policy acts, under
/// `torch::NoGradGuard`. Done sub-environments are reset and go on, so episodes span batches.
///
/// Each batch has batch_size `[*env.batch_size(), T]` with `T = frames_per_batch /
/// env numel`, root entries at t and `"next"` entries at t+1, as `env.rollout` returns.
///
/// ```
/// rlobj::collectors::SyncDataCollector collector(env, policy, /*frames_per_batch=*/1000,
///                                                /*total_frames=*/20000, /*init_random_frames=*/1000);
/// for (rlobj::TensorDict batch : collector) rb.extend(batch);
/// ```
class SyncDataCollector : public DataCollectorBase {
 public:
  /// The type-erased policy: called on each step's root TensorDict, it writes the action.
  using Policy = std::function<void(TensorDict&)>;

  /// `env` must outlive the collector. `policy` is anything callable on a TensorDict (a module
  /// holder, a lambda) that writes the action.
  template <typename P>
  SyncDataCollector(envs::EnvBase& env, P policy, int64_t frames_per_batch, int64_t total_frames = -1,
                    int64_t init_random_frames = 0)
      : env_(&env),
        policy_(wrap(std::move(policy))),
        frames_per_batch_(frames_per_batch),
        total_frames_(total_frames),
        init_random_frames_(init_random_frames) {
    int64_t n_envs = 1;
    for (auto s : env.batch_size()) n_envs *= s;
    TORCH_CHECK_VALUE(n_envs > 0, "SyncDataCollector: the environment's batch_size ",
                      rlobj::detail::shape_str(env.batch_size()), " holds no environment");
    TORCH_CHECK_VALUE(frames_per_batch > 0, "SyncDataCollector: frames_per_batch must be positive, got ",
                      frames_per_batch);
    TORCH_CHECK_VALUE(frames_per_batch % n_envs == 0, "SyncDataCollector: frames_per_batch (", frames_per_batch,
                      ") must be a multiple of the number of environments (", n_envs, ")");
    TORCH_CHECK_VALUE(total_frames == -1 || total_frames > 0,
                      "SyncDataCollector: total_frames must be positive or -1 (no limit), got ", total_frames);
    TORCH_CHECK_VALUE(init_random_frames >= 0, "SyncDataCollector: init_random_frames must be >= 0, got ",
                      init_random_frames);
    steps_per_batch_ = frames_per_batch / n_envs;
  }

  /// The next batch, or nothing once `total_frames` have been collected. With one step per
  /// batch (`frames_per_batch` = the number of environments), the batch holds views of that
  /// step's tensors rather than copies, and its `next` entries are the collector's next root:
  /// a policy must write new tensors (`td.set`), not modify its input's in place, and a batch
  /// you keep must not be modified in place before the next call (the library's environments,
  /// modules and replay buffer never do either).
  std::optional<TensorDict> next() override {
    if (total_frames_ > 0 && frames_ >= total_frames_) return std::nullopt;
    if (!root_) root_ = env_->reset();
    const bool random = frames_ < init_random_frames_;
    std::vector<TensorDict> steps;
    steps.reserve(static_cast<size_t>(steps_per_batch_));
    for (int64_t t = 0; t < steps_per_batch_; ++t) {
      TensorDict td = *root_;
      if (random) {
        env_->rand_action(td);
      } else {
        torch::NoGradGuard no_grad;
        modules::SetExplorationType exploration(exploration_type_);
        policy_(td);
      }
      auto stepped = env_->step_and_maybe_reset(td);
      // Counted on the env's device and read back only when asked: no host sync per step.
      auto finished = stepped.first.get({"next", "done"}).sum();
      done_count_ = done_count_.defined() ? done_count_ + finished : finished;
      steps.push_back(std::move(stepped.first));
      root_ = std::move(stepped.second);
    }
    frames_ += frames_per_batch_;
    // One step per batch: views, not copies (see above).
    if (steps.size() == 1) return steps.front().unsqueeze(-1);
    return TensorDict::stack(steps, -1);
  }

  /// The exploration type the policy acts under (TorchRL's collector argument
  /// `exploration_type`; default `Random`: a `ProbabilisticActor` samples, noise modules add noise).
  void set_exploration_type(modules::ExplorationType type) noexcept { exploration_type_ = type; }
  /// The exploration type the policy acts under (see `set_exploration_type`).
  modules::ExplorationType exploration_type() const noexcept { return exploration_type_; }

  /// Frames collected so far.
  int64_t frames() const noexcept override { return frames_; }
  /// Episodes finished so far (done flags seen). Reads a counter kept on the environment's
  /// device (a host sync on CUDA).
  int64_t episodes() const override { return episodes_ + (done_count_.defined() ? done_count_.item<int64_t>() : 0); }
  /// Transitions per batch, over all sub-environments.
  int64_t frames_per_batch() const noexcept { return frames_per_batch_; }
  /// Frames to collect before the iteration ends (-1: no limit).
  int64_t total_frames() const noexcept { return total_frames_; }
  /// Restarts every sub-environment on the next batch.
  void reset() { root_.reset(); }

  /// Writes the collector's progress, the environments' current state and the env's
  /// generator into `archive`.
  void save(torch::serialize::OutputArchive& archive) const override {
    write_format(archive, "rlobj.SyncDataCollector");
    archive.write("counters", torch::tensor({frames_, episodes()}, torch::kInt64));
    archive.write("env_generator", env_->generator().get_state());
    if (root_) {
      torch::serialize::OutputArchive root;
      save_tensordict(*root_, root);
      archive.write("root", root);
    }
  }
  /// Restores what `save` wrote.
  /// Everything is read and checked before anything changes.
  void load(torch::serialize::InputArchive& archive) override {
    check_format(archive, "rlobj.SyncDataCollector", "SyncDataCollector.load");
    torch::Tensor counters, gen;
    archive.read("counters", counters);
    archive.read("env_generator", gen);
    TORCH_CHECK_VALUE(counters.scalar_type() == torch::kLong && counters.numel() == 2,
                      "SyncDataCollector.load: corrupt counters");
    counters = counters.cpu();
    const int64_t frames = counters[0].item<int64_t>(), episodes = counters[1].item<int64_t>();
    TORCH_CHECK_VALUE(frames >= 0 && episodes >= 0, "SyncDataCollector.load: corrupt counters (frames ", frames,
                      ", episodes ", episodes, ")");
    at::Generator generator = detail::scratch_generator(env_->generator());
    generator.set_state(gen.cpu());
    std::optional<TensorDict> root;
    torch::serialize::InputArchive root_archive;
    if (archive.try_read("root", root_archive)) {
      root = load_tensordict(root_archive);
      TORCH_CHECK_VALUE(root->batch_size() == env_->batch_size(), "SyncDataCollector.load: the checkpoint's "
                        "root has batch_size ", rlobj::detail::shape_str(root->batch_size()),
                        " but the environment has ", rlobj::detail::shape_str(env_->batch_size()));
      for (const auto& key : env_->observation_spec().keys()) {
        TORCH_CHECK_VALUE(root->contains(key), "SyncDataCollector.load: the checkpoint's root has no \"", key,
                          "\", which the environment's observation_spec holds");
      }
    }
    frames_ = frames;
    episodes_ = episodes;
    done_count_ = torch::Tensor();
    env_->generator().set_state(generator.get_state());
    root_ = std::move(root);
  }

  /// Input iterator over the batches: `for (TensorDict batch : collector)`.
  class iterator {
   public:
    /// An input iterator: each batch is collected when the iterator advances.
    using iterator_category = std::input_iterator_tag;
    /// A batch of transitions.
    using value_type = TensorDict;
    /// Required by the iterator traits; not meaningful for an input iterator.
    using difference_type = std::ptrdiff_t;
    /// Pointer to the current batch.
    using pointer = const TensorDict*;
    /// Reference to the current batch.
    using reference = const TensorDict&;

    iterator() = default;
    /// Starts iterating `c`: collects its next batch.
    explicit iterator(SyncDataCollector* c) : collector_(c) { ++*this; }
    /// The current batch.
    reference operator*() const { return *current_; }
    /// The current batch.
    pointer operator->() const { return &*current_; }
    /// Collects the next batch; the iterator becomes `end()` once `total_frames` are collected.
    iterator& operator++() {
      current_ = collector_->next();
      if (!current_) collector_ = nullptr;
      return *this;
    }
    /// Equal when both are past the end, or both iterate the same collector.
    bool operator==(const iterator& other) const { return collector_ == other.collector_; }
    /// The negation of `operator==`.
    bool operator!=(const iterator& other) const { return !(*this == other); }

   private:
    SyncDataCollector* collector_ = nullptr;
    std::optional<TensorDict> current_;
  };
  /// An iterator at the next batch (collecting it).
  iterator begin() { return iterator(this); }
  /// The past-the-end iterator.
  iterator end() { return iterator(); }

 private:
  template <typename P>
  static Policy wrap(P policy) {
    return [p = std::move(policy)](TensorDict& td) mutable { envs::detail::apply_policy(p, td); };
  }

  envs::EnvBase* env_;
  Policy policy_;
  modules::ExplorationType exploration_type_ = modules::ExplorationType::Random;
  int64_t frames_per_batch_;
  int64_t total_frames_;
  int64_t init_random_frames_;
  int64_t steps_per_batch_ = 1;
  int64_t frames_ = 0;
  int64_t episodes_ = 0;
  torch::Tensor done_count_;  // episodes finished since construction or load, on the env device
  std::optional<TensorDict> root_;
};

}  // namespace collectors
}  // namespace rlobj
