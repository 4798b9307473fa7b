#pragma once

// DQN on gymnasium's CartPole-v1, written with rlobj the way TorchRL's DQN CartPole example
// (sota-implementations/dqn/dqn_cartpole.py) is: a QValueActor over an MLP, an EGreedyModule
// annealed by collected frames, SyncDataCollector -> ReplayBuffer -> DQNLoss -> Adam ->
// HardUpdate. Used by examples/dqn_cartpole/main.cpp.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <rlobj/rlobj.h>

#include "common/generators.h"

namespace dqn {

namespace rl = rlobj;

constexpr const char* kProgram = "dqn_cartpole";
constexpr int64_t kMaxEpisodeSteps = 500;  // CartPole-v1's TimeLimit

/// Hyper-parameters (the command-line flags). TorchRL's config_cartpole.yaml where it solves
/// reliably; the changes are commented.
struct Config {
  uint64_t seed = 0;
  int64_t total_frames = 500000;
  int64_t num_envs = 1;
  int64_t frames_per_batch = 10;
  int64_t num_updates = 1;  ///< gradient steps per collector batch
  int64_t batch_size = 128;
  double lr = 2.5e-4;
  double max_grad_norm = 10;  ///< 0: no clipping
  double gamma = 0.99;
  int64_t hard_update_freq = 50;  ///< gradient steps between target network copies
  std::vector<int64_t> num_cells = {120, 84};
  std::string activation = "relu";
  int64_t init_random_frames = 10000;
  int64_t buffer_size = 10000;
  double eps_start = 1.0;
  double eps_end = 0.05;
  int64_t annealing_frames = 250000;
  std::string loss_function = "l2";
  bool double_dqn = false;
  int64_t eval_every = 50000;
  int64_t eval_episodes = 10;
  std::string device = "cpu";

  /// What a checkpoint must agree on to be resumed: the shapes, and every setting a resumed run
  /// would otherwise silently change. `total_frames`, `eval_every` and `batch_size` may change.
  std::string fingerprint() const {
    return fmt::format(
        "seed={} num_envs={} frames_per_batch={} num_updates={} lr={} max_grad_norm={} gamma={} hard_update_freq={} "
        "num_cells={} activation={} init_random_frames={} buffer_size={} eps_start={} eps_end={} annealing_frames={} "
        "loss_function={} double_dqn={} eval_episodes={} device={}",
        seed, num_envs, frames_per_batch, num_updates, lr, max_grad_norm, gamma, hard_update_freq,
        fmt::join(num_cells, ","), activation, init_random_frames, buffer_size, eps_start, eps_end, annealing_frames,
        loss_function, double_dqn, eval_episodes, device);
  }
};

/// Keys the loss reads: only these go into the replay buffer.
inline std::vector<rl::NestedKey> transition_keys() {
  return {"observation", "action", {"next", "observation"}, {"next", "reward"}, {"next", "done"},
          {"next", "terminated"}};
}

/// A one-hot action with a single one. QValueModule's one-hot action has several ones when action
/// values tie (TorchRL's rule); TorchRL's GymEnv then takes the first (argmax), and so do we,
/// since CartPole accepts exact one-hot rows only.
inline void first_of_ties(rl::TensorDict& td) {
  const torch::Tensor& a = td.get("action");
  td.set("action", torch::one_hot(a.argmax(-1), a.size(-1)));
}

class Trainer {
 public:
  using Loss = rl::objectives::DQNLoss<rl::modules::QValueActor>;

  explicit Trainer(Config cfg)
      : cfg_(std::move(cfg)),
        device_(cfg_.device),
        env_(rl::envs::CartPoleOptions().batch_size({cfg_.num_envs}).seed(cfg_.seed).device(device_)),
        eval_env_(rl::envs::CartPoleOptions().batch_size({cfg_.eval_episodes}).seed(eval_seed()).device(device_)),
        rb_(rl::data::ReplayBufferOptions(cfg_.buffer_size).seed(cfg_.seed + 17)) {
    TORCH_CHECK_VALUE(cfg_.num_envs > 0 && cfg_.batch_size > 0 && cfg_.eval_episodes > 0 && cfg_.num_updates > 0,
                      kProgram, ": num_envs, batch_size, num_updates and eval_episodes must be positive");
    TORCH_CHECK_VALUE(cfg_.frames_per_batch % cfg_.num_envs == 0, kProgram,
                      ": frames_per_batch must be a multiple of num_envs");
    // The network's initial weights come from a generator of the trainer's own (the same draws
    // torch::manual_seed(seed) would give); nothing else in DQN draws from the default generator,
    // which is seeded anyway and saved with checkpoints.
    auto init = at::make_generator<at::CPUGeneratorImpl>(cfg_.seed);
    torch::manual_seed(cfg_.seed + 43);
    const int64_t n_obs = env_.observation_spec().at("observation").shape().back();
    const int64_t n_act = env_.action_spec().shape().back();
    qnet_ = rl::modules::QValueActor(
        rl::modules::MLP(rl::modules::MLPOptions(n_obs, n_act)
                             .num_cells(cfg_.num_cells)
                             .activation(rl::modules::activation_from_string(cfg_.activation))
                             .generator(init)),
        /*in_keys=*/{"observation"}, rl::modules::ActionSpace::OneHot);
    qnet_->to(device_);

    loss_ = Loss(qnet_, rl::objectives::DQNLossOptions()
                            .loss_function(rl::objectives::loss_function_from_string(cfg_.loss_function))
                            .delay_value(true)
                            .double_dqn(cfg_.double_dqn));
    loss_->make_value_estimator(rl::objectives::ValueEstimators::TD0,
                                rl::objectives::value::ValueEstimatorOptions().gamma(cfg_.gamma));
    optim_ = std::make_unique<torch::optim::Adam>(loss_->parameters(), torch::optim::AdamOptions(cfg_.lr));
    updater_ = std::make_unique<rl::objectives::HardUpdate>(loss_, cfg_.hard_update_freq);

    // The spec of one action (TorchRL's QValueActor spec), not the env's batched one.
    egreedy_ = rl::modules::EGreedyModule(rl::OneHot(n_act, {n_act}, torch::kInt64, device_),
                                          rl::modules::EGreedyModuleOptions()
                                              .eps_init(cfg_.eps_start)
                                              .eps_end(cfg_.eps_end)
                                              .annealing_num_steps(cfg_.annealing_frames)
                                              .seed(cfg_.seed + 29));
    explore_ = rl::modules::TensorDictSequential(qnet_, egreedy_);
    collector_ = std::make_unique<rl::collectors::SyncDataCollector>(
        env_,
        [this](rl::TensorDict& td) {
          explore_(td);
          first_of_ties(td);
        },
        cfg_.frames_per_batch, cfg_.total_frames, cfg_.init_random_frames);
    running_return_ = torch::zeros({cfg_.num_envs});
  }

  /// Collects one batch and, past the warm-up, does `num_updates` gradient steps (TorchRL's loop:
  /// eps is annealed by every batch's frames, the random ones included). Returns false once
  /// `total_frames` have been collected.
  bool step() {
    auto batch = collector_->next();
    if (!batch) return false;
    track_returns(*batch);
    rb_.extend(batch->select(transition_keys()));
    egreedy_->step(cfg_.frames_per_batch);
    if (collector_->frames() >= cfg_.init_random_frames && rb_.size() >= cfg_.batch_size) {
      for (int64_t i = 0; i < cfg_.num_updates; ++i) update();
    }
    return true;
  }

  /// One gradient step on a sampled batch, then the HardUpdate counter.
  void update() {
    rl::TensorDict sample = rb_.sample(cfg_.batch_size);
    if (!device_.is_cpu()) sample = sample.to(device_);
    torch::Tensor loss = loss_(sample).get("loss");
    optim_->zero_grad();
    loss.backward();
    if (cfg_.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(loss_->parameters(), cfg_.max_grad_norm);
    optim_->step();
    updater_->step();
    last_loss_ = loss.detach();  // read only when printed or saved (no host sync per update)
    ++updates_;
  }

  /// Mean return of `eval_episodes` fresh episodes of up to 500 steps with the greedy policy
  /// (no exploration). Every evaluation starts from the same states (the eval env is reseeded).
  double evaluate() {
    rl::modules::SetExplorationType deterministic(rl::modules::ExplorationType::Deterministic);
    torch::NoGradGuard no_grad;
    eval_env_.set_seed(eval_seed());
    // Until every episode is done; steps after an episode's end are not counted.
    rl::TensorDict episodes = eval_env_.rollout(
        kMaxEpisodeSteps,
        [this](rl::TensorDict& td) {
          qnet_(td);
          first_of_ties(td);
        },
        rl::envs::RolloutOptions().break_when_any_done(false).break_when_all_done(true));
    torch::Tensor done = episodes.get({"next", "done"}).to(torch::kLong);
    torch::Tensor counted = (done.cumsum(-2) - done) == 0;
    torch::Tensor reward = episodes.get({"next", "reward"}).to(torch::kFloat64);
    return (reward * counted).sum(-2).mean().item<double>();
  }

  /// Writes everything needed to continue exactly where we are.
  void save(const std::string& path) const {
    torch::serialize::OutputArchive archive, loss, optim, egreedy, rb, collector;
    rl::write_format(archive, format_name());
    archive.write("config", c10::IValue(cfg_.fingerprint()));
    loss_->save(loss);
    archive.write("loss", loss);
    optim_->save(optim);
    archive.write("optim", optim);
    egreedy_->save(egreedy);
    archive.write("egreedy", egreedy);
    rlobj_examples::save_generators(archive, device_);
    rb_.save(rb);
    archive.write("replay_buffer", rb);
    collector_->save(collector);
    archive.write("collector", collector);
    archive.write("running_return", running_return_);
    archive.write("recent_returns", torch::tensor(std::vector<double>(recent_returns_.begin(), recent_returns_.end()),
                                                  torch::kFloat64));
    archive.write("counters", torch::tensor({updates_, updater_->counter()}, torch::kInt64));
    archive.write("last_loss", torch::tensor({last_loss()}, torch::kFloat64));
    rl::save_atomic(archive, path);
  }

  /// Restores a checkpoint written by `save` (with the same fingerprint).
  void load(const std::string& path) {
    torch::serialize::InputArchive archive, loss, optim, egreedy, rb, collector;
    rl::load_archive(archive, path);  // verified record by record before anything is read
    rl::check_format(archive, format_name(), kProgram);
    c10::IValue fingerprint;
    archive.read("config", fingerprint);
    TORCH_CHECK(fingerprint.toStringRef() == cfg_.fingerprint(), kProgram, ": checkpoint \"", path,
                "\" was made with ", fingerprint.toStringRef(), " but this run uses ", cfg_.fingerprint());
    archive.read("loss", loss);
    loss_->load(loss);
    archive.read("optim", optim);
    optim_->load(optim);
    archive.read("egreedy", egreedy);
    egreedy_->load(egreedy);
    rlobj_examples::load_generators(archive, device_);
    archive.read("replay_buffer", rb);
    rb_.load(rb);
    archive.read("collector", collector);
    collector_->load(collector);
    torch::Tensor recent, counters, losses;
    archive.read("running_return", running_return_);
    archive.read("recent_returns", recent);
    recent_returns_.assign(recent.data_ptr<double>(), recent.data_ptr<double>() + recent.numel());
    archive.read("counters", counters);
    updates_ = counters[0].item<int64_t>();
    updater_->set_counter(counters[1].item<int64_t>());
    archive.read("last_loss", losses);
    last_loss_ = losses[0];
  }

  int64_t frames() const { return collector_->frames(); }
  int64_t episodes() const { return collector_->episodes(); }
  int64_t updates() const { return updates_; }
  double last_loss() const { return last_loss_.defined() ? last_loss_.item<double>() : std::nan(""); }
  /// The current probability of a random action.
  double eps() const { return egreedy_->eps(); }
  /// Mean return of the last (up to) 10 finished training episodes (with exploration).
  double recent_return() const {
    if (recent_returns_.empty()) return std::nan("");
    return std::accumulate(recent_returns_.begin(), recent_returns_.end(), 0.0) / recent_returns_.size();
  }
  const Config& config() const { return cfg_; }
  static std::string format_name() { return std::string("rlobj.examples.") + kProgram; }
  /// Seed of the evaluation episodes' start states (derived from the run's seed).
  uint64_t eval_seed() const { return cfg_.seed + 1000003; }
  Loss& loss() { return loss_; }
  rl::modules::QValueActor& qnet() { return qnet_; }

 private:
  void track_returns(const rl::TensorDict& batch) {
    // batch: [num_envs, T]; steps in time order per env.
    auto reward = batch.get({"next", "reward"}).reshape({cfg_.num_envs, -1}).to(torch::kCPU, torch::kFloat64);
    auto done = batch.get({"next", "done"}).reshape({cfg_.num_envs, -1}).to(torch::kCPU);
    auto r = reward.accessor<double, 2>();
    auto d = done.accessor<bool, 2>();
    auto run = running_return_.accessor<float, 1>();
    for (int64_t t = 0; t < reward.size(1); ++t) {
      for (int64_t i = 0; i < reward.size(0); ++i) {
        run[i] += static_cast<float>(r[i][t]);
        if (d[i][t]) {
          recent_returns_.push_back(run[i]);
          if (recent_returns_.size() > 10) recent_returns_.pop_front();
          run[i] = 0;
        }
      }
    }
  }

  Config cfg_;
  torch::Device device_;
  rl::envs::CartPole env_;
  rl::envs::CartPole eval_env_;
  rl::data::ReplayBuffer rb_;
  rl::modules::QValueActor qnet_{nullptr};
  Loss loss_{nullptr};
  std::unique_ptr<torch::optim::Adam> optim_;
  std::unique_ptr<rl::objectives::HardUpdate> updater_;
  rl::modules::EGreedyModule egreedy_{nullptr};
  rl::modules::TensorDictSequential explore_{nullptr};
  std::unique_ptr<rl::collectors::SyncDataCollector> collector_;
  torch::Tensor running_return_;
  std::deque<double> recent_returns_;
  int64_t updates_ = 0;
  torch::Tensor last_loss_;
};

}  // namespace dqn
