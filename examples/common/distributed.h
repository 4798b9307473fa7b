#pragma once

// `--collectors N`: the off-policy examples on several processes, TorchRL's distributed
// collector pattern, with collection plugged into the library trainer as a collector. Rank 0
// learns (its trainer's collector is a `RemoteCollector`: replay buffer, updates, evaluation,
// checkpoints as in a one-process run); ranks 1..N each step their own Pendulums with the latest
// policy weights (pushed by the learner every `weights_every` rounds) and send every batch to the
// learner. One round = one batch of `num_envs` frames from every collector; the learner then does
// one update per frame received.
//
//   scripts/launch.sh -n 3 -- build/examples/td3_pendulum --collectors 2
//   torchrun --nproc_per_node 3 build/examples/td3_pendulum --collectors 2
//
// Resuming (`--resume`, on rank 0's checkpoint) works with any number of collectors: the
// learner's state is the run's state; collectors start fresh episodes from seeds derived from
// the run's seed, their rank and the frame they start at.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <rlobj/collectors/common.h>
#include <rlobj/distributed.h>

#include "common/offpolicy.h"

namespace offpolicy {

/// The flags of a distributed run.
struct DistributedSettings {
  int64_t collectors = 0;     ///< collector processes (0: a single-process run)
  int64_t weights_every = 1;  ///< rounds between weight pushes
  double timeout_s = 60;      ///< bound on every collective and message

  std::string fingerprint() const {
    return "collectors=" + std::to_string(collectors) + " weights_every=" + std::to_string(weights_every);
  }
};

/// Where the collectors start: sent by the learner when it starts (or resumes).
struct CollectionPlan {
  int64_t start_frame = 0;    ///< frames collected before this run (a resumed checkpoint's)
  int64_t rounds = 0;         ///< rounds left until total_frames
  int64_t random_frames = 0;  ///< per collector: random-action frames left of the warm-up

  static CollectionPlan make(const Config& cfg, int64_t start_frame, int64_t collectors) {
    CollectionPlan plan;
    plan.start_frame = start_frame;
    const int64_t per_round = collectors * cfg.num_envs;
    const int64_t left = std::max<int64_t>(0, cfg.total_frames - start_frame);
    plan.rounds = (left + per_round - 1) / per_round;
    const int64_t random_left = std::max<int64_t>(0, cfg.init_random_frames - start_frame);
    plan.random_frames = (random_left + collectors - 1) / collectors;
    return plan;
  }
};

/// The plan, from the learner (rank 0) to every rank.
inline CollectionPlan share_plan(rlobj::distributed::ProcessGroup& pg, CollectionPlan plan) {
  torch::Tensor t = torch::tensor({plan.start_frame, plan.rounds, plan.random_frames}, torch::kInt64);
  pg.broadcast_(t, 0, "collection plan");
  return CollectionPlan{t[0].item<int64_t>(), t[1].item<int64_t>(), t[2].item<int64_t>()};
}

/// The learner's collector: each batch is one round from every collector process. The plan is
/// made and shared at the first batch (after a resume has restored the frame count), and the
/// collectors get the current policy then.
class RemoteCollector : public rlobj::collectors::DataCollectorBase {
 public:
  RemoteCollector(rlobj::distributed::DistributedCollector& channel, Config cfg, int64_t collectors,
                  std::function<std::vector<torch::Tensor>()> weights)
      : channel_(&channel), cfg_(std::move(cfg)), collectors_(collectors), weights_(std::move(weights)) {}

  std::optional<rlobj::TensorDict> next() override {
    if (!plan_) {
      plan_ = share_plan(channel_->process_group(), CollectionPlan::make(cfg_, frames_, collectors_));
      if (plan_->rounds > 0) channel_->push_weights(weights_());
    }
    if (rounds_ == plan_->rounds) return std::nullopt;
    rlobj::TensorDict batch = channel_->receive();
    ++rounds_;
    frames_ += batch.batch_size().at(0);
    episodes_ += batch.get({"next", "done"}).sum().item<int64_t>();
    return batch;
  }
  int64_t frames() const override { return frames_; }
  int64_t episodes() const override { return episodes_; }
  /// Rounds received in this process's run.
  int64_t rounds() const noexcept { return rounds_; }

  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("counters", torch::tensor({frames_, episodes_}, torch::kInt64));
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor counters;
    archive.read("counters", counters);
    TORCH_CHECK_VALUE(counters.scalar_type() == torch::kLong && counters.numel() == 2 &&
                          (counters >= 0).all().item<bool>(),
                      "the remote collection counters must be 2 int64 values >= 0");
    frames_ = counters[0].item<int64_t>();
    episodes_ = counters[1].item<int64_t>();
  }

 private:
  rlobj::distributed::DistributedCollector* channel_;
  Config cfg_;
  int64_t collectors_;
  std::function<std::vector<torch::Tensor>()> weights_;
  std::optional<CollectionPlan> plan_;
  int64_t rounds_ = 0, frames_ = 0, episodes_ = 0;
};

/// A collector rank's whole run: its own Pendulums, actor and exploration noise (it never
/// updates), seeded apart from every other rank's. Returns the frames it sent.
template <typename Algo>
int64_t run_collector(rlobj::distributed::ProcessGroup& pg, rlobj::distributed::DistributedCollector& channel,
                      Config cfg, const DistributedSettings& settings) {
  const CollectionPlan plan = share_plan(pg, {});
  if (plan.rounds == 0) return 0;
  cfg.seed = cfg.seed + 7919 * static_cast<uint64_t>(pg.rank()) + static_cast<uint64_t>(plan.start_frame);
  cfg.total_frames = plan.rounds * cfg.num_envs;
  cfg.init_random_frames = plan.random_frames;
  cfg.eval_episodes = 1;
  Run<Algo> run(cfg);
  const auto weights = run.policy_parameters();
  channel.pull_weights(weights);  // the learner's current policy
  int64_t frames = 0;
  for (int64_t round = 0; round < plan.rounds; ++round) {
    auto batch = run.local->next();
    TORCH_CHECK(batch.has_value(), Algo::kProgram, ": collector rank ", pg.rank(), " ran out of frames at round ",
                round);
    frames += batch->batch_size().at(0);
    channel.send(batch->select(transition_keys()).to(torch::kCPU));  // messages travel from CPU memory (--device cuda)
    if ((round + 1) % settings.weights_every == 0) channel.pull_weights(weights);
  }
  return frames;
}

}  // namespace offpolicy
