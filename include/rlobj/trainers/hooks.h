#pragma once

/// \file
/// The standard hooks of `rlobj::trainers::Trainer`, after TorchRL's trainer hooks: each
/// `register_with(trainer)` registers its ops at their stages and its state as checkpoint
/// records.
///
/// | hook | TorchRL | stages |
/// |---|---|---|
/// | `ReplayBufferHook` | `ReplayBufferTrainer` | extends at `batch_process`, samples at `process_optim_batch`, gates the updates |
/// | `DatasetHook` | an offline loop's `replay_buffer.sample()` | samples a fixed dataset at `process_optim_batch`, gates the updates (offline trainers) |
/// | `MiniBatchHook` | `BatchSubSampler` (on-policy epochs) | a minibatch per `process_optim_batch`, epochs over each batch |
/// | `ReturnTracker` | `LogReward` | training episodes' returns at `batch_process` |
/// | `LossTracker` | `LogScalar` of the losses | the last value of chosen loss entries at `post_loss` |
///
/// `Evaluator` runs deterministic evaluation episodes (TorchRL's `LogValidationReward`); where
/// and how often is the training program's choice.

#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/data/replay_buffer.h"
#include "rlobj/data/samplers.h"
#include "rlobj/envs/common.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/tensordict.h"
#include "rlobj/trainers/trainer.h"

namespace rlobj {
namespace trainers {

/// Fills a replay buffer with each collected batch (only `keys`, when given: the entries the
/// loss reads) and trains on samples of `batch_size` transitions, once the buffer holds that
/// many (TorchRL's `ReplayBufferTrainer`). Record: `replay_buffer`.
class ReplayBufferHook {
 public:
  /// `rb` must outlive the trainer. Samples move to `device` (when not the CPU).
  ReplayBufferHook(data::ReplayBuffer& rb, int64_t batch_size, std::vector<NestedKey> keys = {},
                   torch::Device device = torch::kCPU)
      : rb_(&rb), batch_size_(batch_size), keys_(std::move(keys)), device_(device) {
    TORCH_CHECK_VALUE(batch_size_ > 0, "ReplayBufferHook: batch_size must be positive, got ", batch_size_);
  }

  /// Registers the extend, gate, sample and record.
  void register_with(Trainer& trainer) const {
    data::ReplayBuffer* rb = rb_;
    const int64_t batch_size = batch_size_;
    const std::vector<NestedKey> keys = keys_;
    const torch::Device device = device_;
    trainer.register_op(Stage::BatchProcess,
                        [rb, keys](StepContext& c) { rb->extend(keys.empty() ? c.batch : c.batch.select(keys)); });
    trainer.add_gate([rb, batch_size] { return rb->size() >= batch_size; });
    trainer.register_op(Stage::ProcessOptimBatch, [rb, batch_size, device](StepContext& c) {
      c.sub_batch = rb->sample(batch_size);
      if (!device.is_cpu()) c.sub_batch = c.sub_batch.to(device);
    });
    trainer.records().add(
        "replay_buffer", [rb](torch::serialize::OutputArchive& a) { rb->save(a); },
        [rb](torch::serialize::InputArchive& a) { rb->load(a); });
  }

 private:
  data::ReplayBuffer* rb_;
  int64_t batch_size_;
  std::vector<NestedKey> keys_;
  torch::Device device_;
};

/// Offline RL: each update trains on a sample of `dataset`, a replay buffer of logged transitions
/// (`data::load_torchrl_buffer`) that the run never extends. Registers the gate (the dataset holds
/// a batch), the sample (at ProcessOptimBatch, moved to `device`) and the record
/// `dataset_sampler`: the dataset's sampling generator and size (the data is the dataset's, not
/// the checkpoint's; resuming with a dataset of another size is refused, naming both).
///
/// ```
/// auto dataset = data::load_torchrl_buffer("pendulum_dataset");
/// trainers::Trainer trainer(trainers::Offline{}, update, trainers::TrainerOptions().total_updates(20000));
/// trainers::DatasetHook(dataset, /*batch_size=*/256).register_with(trainer);
/// trainer.train();
/// ```
class DatasetHook {
 public:
  /// `dataset` must outlive the trainer.
  DatasetHook(data::ReplayBuffer& dataset, int64_t batch_size, torch::Device device = torch::kCPU)
      : rb_(&dataset), batch_size_(batch_size), device_(device) {
    TORCH_CHECK_VALUE(batch_size_ > 0, "DatasetHook: batch_size must be positive, got ", batch_size_);
  }

  /// Registers the gate, the sample and the record.
  void register_with(Trainer& trainer) const {
    data::ReplayBuffer* rb = rb_;
    const int64_t batch_size = batch_size_;
    const torch::Device device = device_;
    trainer.add_gate([rb, batch_size] { return rb->size() >= batch_size; });
    trainer.register_op(Stage::ProcessOptimBatch, [rb, batch_size, device](StepContext& c) {
      c.sub_batch = rb->sample(batch_size);
      if (!device.is_cpu()) c.sub_batch = c.sub_batch.to(device);
    });
    trainer.records().add(
        "dataset_sampler",
        [rb](torch::serialize::OutputArchive& a) {
          a.write("generator", rb->generator().get_state());
          a.write("size", torch::tensor(rb->size(), torch::kInt64));
        },
        [rb](torch::serialize::InputArchive& a) {
          torch::Tensor state, size;
          a.read("generator", state);
          a.read("size", size);
          TORCH_CHECK_VALUE(size.numel() == 1 && size.scalar_type() == torch::kLong,
                            "the dataset sampler's record is corrupt");
          TORCH_CHECK_VALUE(size.item<int64_t>() == rb->size(), "the checkpoint was made with a dataset of ",
                            size.item<int64_t>(), " transitions; this one holds ", rb->size());
          rb->generator().set_state(state);
        });
  }

 private:
  data::ReplayBuffer* rb_;
  int64_t batch_size_;
  torch::Device device_;
};

/// On-policy epochs: each collected batch (flattened to one batch dim) is trained on for
/// `num_epochs` epochs of minibatches drawn without replacement (`data::MiniBatches`), one
/// minibatch per update. Give the trainer `optim_steps_per_batch = num_epochs *
/// minibatches.num_batches(frames_per_batch)`. Record: `sampler`.
class MiniBatchHook {
 public:
  /// `minibatches` must outlive the trainer.
  MiniBatchHook(data::MiniBatches& minibatches, int64_t num_epochs)
      : state_(std::make_shared<State>()) {
    state_->minibatches = &minibatches;
    state_->num_epochs = num_epochs;
    TORCH_CHECK_VALUE(num_epochs > 0, "MiniBatchHook: num_epochs must be positive, got ", num_epochs);
  }

  /// Registers the minibatch op (at `process_optim_batch`) and the sampler's record.
  void register_with(Trainer& trainer) const {
    auto state = state_;
    trainer.register_op(Stage::ProcessOptimBatch, [state](StepContext& c) {
      if (c.optim_step == 0 || state->it == state->epoch->end()) {
        // A new epoch over the batch (the epoch keeps its own handle on the batch).
        if (c.optim_step == 0) state->epochs_left = state->num_epochs;
        TORCH_CHECK(state->epochs_left > 0, "MiniBatchHook: more optimisation steps than num_epochs (",
                    state->num_epochs, ") epochs of minibatches; set optim_steps_per_batch to num_epochs * "
                    "minibatches per epoch");
        --state->epochs_left;
        state->epoch.emplace(state->minibatches->epoch(c.batch));
        state->it = state->epoch->begin();
      }
      c.sub_batch = *state->it;
      ++state->it;
    });
    trainer.records().add(
        "sampler", [state](torch::serialize::OutputArchive& a) { state->minibatches->save(a); },
        [state](torch::serialize::InputArchive& a) { state->minibatches->load(a); });
  }

 private:
  struct State {
    data::MiniBatches* minibatches = nullptr;
    int64_t num_epochs = 1;
    int64_t epochs_left = 0;
    std::optional<data::MiniBatches::Epoch> epoch;
    data::MiniBatches::Epoch::iterator it;
  };
  std::shared_ptr<State> state_;
};

/// Options of `ReturnTracker`.
struct ReturnTrackerOptions {
  /// Finished episodes `recent_return()` averages.
  TORCH_ARG(int64_t, window) = 10;
  /// The dtype episode returns accumulate in (float32: the reward's own).
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
  /// Restore the unfinished episodes' partial returns with a checkpoint (off for a learner whose
  /// collector processes start fresh episodes when resumed).
  TORCH_ARG(bool, restore_running) = true;
};

/// The returns of the training episodes (TorchRL's `LogReward`): each collected batch's
/// `("next", "reward")` is added to each environment's running return, in time order, and a
/// `("next", "done")` closes its episode. Records: `running_return`, `recent_returns`.
class ReturnTracker {
 public:
  /// Tracks returns as `options` say.
  explicit ReturnTracker(ReturnTrackerOptions options = {}) : state_(std::make_shared<State>()) {
    TORCH_CHECK_VALUE(options.window() > 0, "ReturnTracker: window must be positive, got ", options.window());
    TORCH_CHECK_VALUE(options.dtype() == torch::kFloat32 || options.dtype() == torch::kFloat64,
                      "ReturnTracker: dtype must be float32 or float64");
    state_->options = options;
  }

  /// Registers the tracking (at `batch_process`, first registered first) and its records.
  void register_with(Trainer& trainer) const {
    auto state = state_;
    trainer.register_op(Stage::BatchProcess, [state](StepContext& c) { state->track(c.batch); });
    trainer.records().add(
        "running_return",
        [state](torch::serialize::OutputArchive& a) {
          // None yet (nothing collected since a restore that dropped them): an empty tensor.
          a.write("value", state->running.defined() ? state->running : torch::zeros({0}, state->options.dtype()));
        },
        [state](torch::serialize::InputArchive& a) {
          torch::Tensor running;
          a.read("value", running);
          TORCH_CHECK_VALUE(running.dim() == 1 && running.scalar_type() == state->options.dtype(),
                            "running returns must be a 1-d ", state->options.dtype(), " tensor");
          state->running = state->options.restore_running() && running.numel() > 0 ? running.cpu() : torch::Tensor();
        });
    trainer.records().add(
        "recent_returns",
        [state](torch::serialize::OutputArchive& a) {
          a.write("value", torch::tensor(std::vector<double>(state->recent.begin(), state->recent.end()),
                                         torch::kFloat64));
        },
        [state](torch::serialize::InputArchive& a) {
          torch::Tensor recent;
          a.read("value", recent);
          TORCH_CHECK_VALUE(recent.dim() == 1 && recent.scalar_type() == torch::kFloat64 &&
                                recent.numel() <= state->options.window(),
                            "recent returns must be a 1-d float64 tensor of at most ", state->options.window(),
                            " values");
          recent = recent.cpu().contiguous();
          state->recent.assign(recent.data_ptr<double>(), recent.data_ptr<double>() + recent.numel());
        });
  }

  /// Adds `batch`'s rewards (`[*envs, T]`) to the running returns; returns the episodes it finished.
  int64_t track(const TensorDict& batch) const { return state_->track(batch); }
  /// Mean return of the last (up to) `window` finished training episodes; NaN before the first.
  double recent_return() const {
    const auto& r = state_->recent;
    if (r.empty()) return std::nan("");
    return std::accumulate(r.begin(), r.end(), 0.0) / static_cast<double>(r.size());
  }
  /// Forgets the unfinished episodes' partial returns.
  void reset_running() const { state_->running = torch::Tensor(); }

 private:
  struct State {
    ReturnTrackerOptions options;
    torch::Tensor running;  // per environment, CPU, options.dtype
    std::deque<double> recent;

    int64_t track(const TensorDict& batch) {
      const int64_t steps = batch.batch_size().empty() ? 1 : batch.batch_size().back();
      const auto dtype = options.dtype();
      torch::Tensor reward = batch.get({"next", "reward"}).reshape({-1, steps}).to(torch::kCPU, dtype);
      torch::Tensor done = batch.get({"next", "done"}).reshape({-1, steps}).to(torch::kCPU);
      const int64_t envs = reward.size(0);
      if (!running.defined() || running.numel() != envs) running = torch::zeros({envs}, dtype);
      return dtype == torch::kFloat32 ? accumulate<float>(reward, done) : accumulate<double>(reward, done);
    }

    template <typename T>
    int64_t accumulate(const torch::Tensor& reward, const torch::Tensor& done) {
      auto r = reward.accessor<T, 2>();
      auto d = done.accessor<bool, 2>();
      auto run = running.accessor<T, 1>();
      int64_t finished = 0;
      for (int64_t t = 0; t < reward.size(1); ++t) {
        for (int64_t i = 0; i < reward.size(0); ++i) {
          run[i] += r[i][t];
          if (d[i][t]) {
            recent.push_back(static_cast<double>(run[i]));
            if (static_cast<int64_t>(recent.size()) > options.window()) recent.pop_front();
            run[i] = 0;
            ++finished;
          }
        }
      }
      return finished;
    }
  };
  std::shared_ptr<State> state_;
};

/// The last value of chosen loss entries (TorchRL's `LogScalar` over the losses), kept on the
/// device and read back only when asked (no host sync per update). Record: `last_losses`.
class LossTracker {
 public:
  /// Tracks `keys` (an entry an update did not output keeps its previous value).
  explicit LossTracker(std::vector<std::string> keys) : state_(std::make_shared<State>()) {
    state_->keys = std::move(keys);
    state_->last.resize(state_->keys.size());
  }

  /// Registers the tracking (at `post_loss`) and its record.
  void register_with(Trainer& trainer) const {
    auto state = state_;
    trainer.register_op(Stage::PostLoss, [state](StepContext& c) {
      for (size_t i = 0; i < state->keys.size(); ++i) {
        if (const torch::Tensor* t = c.losses.find(state->keys[i])) state->last[i] = t->detach();
      }
    });
    trainer.records().add(
        "last_losses",
        [state](torch::serialize::OutputArchive& a) {
          std::vector<double> values;
          for (size_t i = 0; i < state->keys.size(); ++i) values.push_back(state->value(i));
          a.write("value", torch::tensor(values, torch::kFloat64));
        },
        [state](torch::serialize::InputArchive& a) {
          torch::Tensor values;
          a.read("value", values);
          TORCH_CHECK_VALUE(values.dim() == 1 && values.scalar_type() == torch::kFloat64 &&
                                values.numel() == static_cast<int64_t>(state->keys.size()),
                            "last losses must be ", state->keys.size(), " float64 values");
          values = values.cpu();
          for (size_t i = 0; i < state->keys.size(); ++i) {
            const double v = values[static_cast<int64_t>(i)].item<double>();
            state->last[i] = std::isnan(v) ? torch::Tensor() : torch::tensor(v, torch::kFloat64);
          }
        });
  }

  /// The last value of `key` (NaN before any update output it).
  double last(const std::string& key) const {
    for (size_t i = 0; i < state_->keys.size(); ++i) {
      if (state_->keys[i] == key) return state_->value(i);
    }
    TORCH_CHECK_VALUE(false, "LossTracker: \"", key, "\" is not tracked");
  }

 private:
  struct State {
    std::vector<std::string> keys;
    std::vector<torch::Tensor> last;
    double value(size_t i) const { return last[i].defined() ? last[i].item<double>() : std::nan(""); }
  };
  std::shared_ptr<State> state_;
};

/// Options of `Evaluator`.
struct EvaluatorOptions {
  /// Steps per episode at most (the environment's time limit).
  TORCH_ARG(int64_t, max_steps) = 1000;
  /// The evaluation environment is reseeded with this before each evaluation: every evaluation
  /// starts from the same states, so the learning curve shows the policy changing.
  TORCH_ARG(uint64_t, seed) = 0;
  /// The dtype each episode's return is summed in.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat64;
  /// How the policy acts (deterministic: TorchRL's evaluations).
  TORCH_ARG(modules::ExplorationType, exploration_type) = modules::ExplorationType::Deterministic;
};

/// The mean return of one episode per sub-environment of an evaluation environment, each
/// counted up to its end (TorchRL's `LogValidationReward`), without gradient.
///
/// ```
/// trainers::Evaluator evaluate(eval_env, actor, trainers::EvaluatorOptions().max_steps(200).seed(7));
/// double mean_return = evaluate();
/// ```
class Evaluator {
 public:
  /// The policy writes the action into the step's TensorDict (a module holder, a lambda).
  using Policy = std::function<void(TensorDict&)>;

  /// `env` must outlive the evaluator.
  template <typename P>
  Evaluator(envs::EnvBase& env, P policy, EvaluatorOptions options = {})
      : env_(&env),
        policy_([p = std::move(policy)](TensorDict& td) mutable { envs::detail::apply_policy(p, td); }),
        options_(options) {
    TORCH_CHECK_VALUE(options_.max_steps() > 0, "Evaluator: max_steps must be positive, got ", options_.max_steps());
    TORCH_CHECK_VALUE(options_.dtype() == torch::kFloat32 || options_.dtype() == torch::kFloat64,
                      "Evaluator: dtype must be float32 or float64");
  }

  /// Runs the episodes and returns their mean return.
  double operator()() {
    modules::SetExplorationType exploration(options_.exploration_type());
    torch::NoGradGuard no_grad;
    env_->set_seed(options_.seed());
    // Until every episode is done; steps after an episode's end repeat it and are not counted.
    TensorDict episodes = env_->rollout(
        options_.max_steps(), [this](TensorDict& td) { policy_(td); },
        envs::RolloutOptions().break_when_any_done(false).break_when_all_done(true));
    torch::Tensor done = episodes.get({"next", "done"}).to(torch::kLong);
    torch::Tensor counted = (done.cumsum(-2) - done) == 0;
    torch::Tensor reward = episodes.get({"next", "reward"}).to(options_.dtype());
    return (reward * counted).sum(-2).mean().item<double>();
  }

 private:
  envs::EnvBase* env_;
  Policy policy_;
  EvaluatorOptions options_;
};

}  // namespace trainers
}  // namespace rlobj
