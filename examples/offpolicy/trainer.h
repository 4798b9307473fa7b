#pragma once

// One off-policy training loop for DDPG, TD3 and SAC on the batched Pendulum, written with rlobj
// the way TorchRL's examples are: collector -> replay buffer -> loss -> Adam -> SoftUpdate.
// `Trainer<Algo>` is parameterised by the algorithm (`DDPG`, `TD3`, `SAC` below: the networks,
// the loss and its options); everything else (collection, replay, updates, evaluation,
// checkpoints) is shared. Used by examples/{ddpg,td3,sac}_pendulum and by the tests.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <rlobj/rlobj.h>

#include "common/generators.h"

namespace offpolicy {

namespace rl = rlobj;

/// Hyper-parameters (the command-line flags). Each algorithm's `defaults()` sets its own;
/// `policy_*`/`noise_clip` are TD3's, `alpha_*` SAC's, `noise_std` DDPG's and TD3's.
struct Config {
  uint64_t seed = 0;
  int64_t total_frames = 20000;
  int64_t num_envs = 1;
  int64_t batch_size = 256;
  double lr_actor = 3e-4;
  double lr_critic = 1e-3;
  double gamma = 0.99;
  double tau = 0.005;
  std::vector<int64_t> num_cells = {32, 32};
  std::string activation = "relu";
  int64_t init_random_frames = 1000;
  int64_t buffer_size = 100000;
  double noise_std = 0.1;       ///< exploration noise (DDPG, TD3)
  int64_t policy_delay = 1;     ///< actor and targets updated every N-th update (TD3: 2)
  double policy_noise = 0.2;    ///< TD3's target policy smoothing noise
  double noise_clip = 0.5;      ///< ... clipped to +-noise_clip
  std::string loss_function = "l2";  ///< critic distance: l2, l1 or smooth_l1 (l2: TorchRL's examples)
  double alpha_init = 1.0;      ///< SAC's initial temperature
  double lr_alpha = 3e-4;       ///< SAC's temperature learning rate
  int64_t eval_every = 2000;
  int64_t eval_episodes = 10;
  std::string device = "cpu";

  /// What a checkpoint must agree on to be resumed.
  /// What a checkpoint must agree on to be resumed: the shapes, and every setting a resumed run
  /// would otherwise silently change (the optimizers' state restores their learning rates; the
  /// seed picks the evaluation states). `total_frames`, `eval_every` and the batch size may change.
  std::string fingerprint() const {
    return fmt::format(
        "seed={} num_envs={} num_cells={} activation={} buffer_size={} device={} lr_actor={} lr_critic={} gamma={} "
        "tau={} loss_function={} noise_std={} policy_delay={} policy_noise={} noise_clip={} alpha_init={} lr_alpha={}",
        seed, num_envs, fmt::join(num_cells, ","), activation, buffer_size, device, lr_actor, lr_critic, gamma, tau,
        loss_function, noise_std, policy_delay, policy_noise, noise_clip, alpha_init, lr_alpha);
  }

  /// The settings a checkpoint was made with, from its `fingerprint()`, on top of `base` (an
  /// algorithm's `defaults()`, for what the fingerprint does not hold). Throws on anything it
  /// does not read back exactly.
  static Config from_fingerprint(const std::string& fingerprint, Config base) {
    Config c = std::move(base);
    std::istringstream words(fingerprint);
    std::string word;
    const auto i64 = [](const std::string& v) { return static_cast<int64_t>(std::stoll(v)); };
    while (words >> word) try {
      const auto eq = word.find('=');
      TORCH_CHECK(eq != std::string::npos, "checkpoint settings: \"", word, "\" is not key=value");
      const std::string k = word.substr(0, eq), v = word.substr(eq + 1);
      if (k == "seed") c.seed = std::stoull(v);
      else if (k == "num_envs") c.num_envs = i64(v);
      else if (k == "num_cells") {
        c.num_cells.clear();
        std::istringstream cells(v);
        for (std::string n; std::getline(cells, n, ',');) c.num_cells.push_back(i64(n));
      } else if (k == "activation") c.activation = v;
      else if (k == "buffer_size") c.buffer_size = i64(v);
      else if (k == "device") c.device = v;
      else if (k == "lr_actor") c.lr_actor = std::stod(v);
      else if (k == "lr_critic") c.lr_critic = std::stod(v);
      else if (k == "gamma") c.gamma = std::stod(v);
      else if (k == "tau") c.tau = std::stod(v);
      else if (k == "loss_function") c.loss_function = v;
      else if (k == "noise_std") c.noise_std = std::stod(v);
      else if (k == "policy_delay") c.policy_delay = i64(v);
      else if (k == "policy_noise") c.policy_noise = std::stod(v);
      else if (k == "noise_clip") c.noise_clip = std::stod(v);
      else if (k == "alpha_init") c.alpha_init = std::stod(v);
      else if (k == "lr_alpha") c.lr_alpha = std::stod(v);
      else TORCH_CHECK(false, "checkpoint settings: unknown key \"", k, "\"");
    } catch (const std::logic_error& e) {  // std::stoll and friends on a malformed number
      TORCH_CHECK(false, "checkpoint settings: cannot read \"", word, "\" (", e.what(), ")");
    }
    TORCH_CHECK(c.fingerprint() == fingerprint, "checkpoint settings: \"", fingerprint,
                "\" do not read back as themselves (\"", c.fingerprint(), "\")");
    return c;
  }
};

/// DDPG: a deterministic actor squashed by a TanhModule, Gaussian exploration noise.
struct DDPG {
  static constexpr const char* kName = "DDPG";
  static constexpr const char* kProgram = "ddpg_pendulum";
  static constexpr const char* kCritic = "value_network";
  static constexpr const char* kCriticLoss = "loss_value";
  static constexpr bool kStochastic = false;
  using Actor = rl::modules::TensorDictSequential;
  using Loss = rl::objectives::DDPGLoss<Actor, rl::modules::ValueOperator>;
  static Config defaults() { return {}; }
  static Loss make_loss(Actor actor, rl::modules::ValueOperator critic, const rl::TensorSpec&, const Config& c) {
    return Loss(std::move(actor), std::move(critic),
                rl::objectives::DDPGLossOptions().loss_function(rl::objectives::loss_function_from_string(c.loss_function)));
  }
};

/// TD3: DDPG's networks, twin critics, target policy smoothing, the actor and the targets
/// updated every `policy_delay` (2) updates.
struct TD3 {
  static constexpr const char* kName = "TD3";
  static constexpr const char* kProgram = "td3_pendulum";
  static constexpr const char* kCritic = "qvalue_network";
  static constexpr const char* kCriticLoss = "loss_qvalue";
  static constexpr bool kStochastic = false;
  using Actor = rl::modules::TensorDictSequential;
  using Loss = rl::objectives::TD3Loss<Actor, rl::modules::ValueOperator>;
  static Config defaults() {
    Config c;
    c.lr_actor = 1e-3;
    c.num_cells = {64, 64};  // RLtools' size; 32-32 solves too, with less margin (-193 on seed 1)
    c.policy_delay = 2;
    c.loss_function = "l2";  // TorchRL's TD3 example (the loss class defaults to smooth_l1)
    return c;
  }
  /// RLtools' TD3 on Pendulum (its `rl_environments_pendulum_td3` configuration), so that wall
  /// times compare the same work.
  static Config rltools_preset() {
    Config c = defaults();
    c.num_cells = {64, 64};
    c.activation = "relu";
    c.batch_size = 100;
    c.lr_actor = c.lr_critic = 1e-3;
    c.init_random_frames = 100;
    c.buffer_size = 10000;
    c.total_frames = 10000;
    c.policy_delay = 2;
    c.policy_noise = 0.2;
    c.noise_clip = 0.5;
    c.noise_std = 0.1;
    c.gamma = 0.99;
    c.tau = 0.005;
    c.loss_function = "l2";  // RLtools' critics minimise the squared error
    return c;
  }
  static Loss make_loss(Actor actor, rl::modules::ValueOperator critic, const rl::TensorSpec& spec, const Config& c) {
    return Loss(std::move(actor), std::move(critic), spec,
                rl::objectives::TD3LossOptions()
                    .policy_noise(c.policy_noise)
                    .noise_clip(c.noise_clip)
                    .loss_function(rl::objectives::loss_function_from_string(c.loss_function)));
  }
};

/// SAC: a TanhNormal ProbabilisticActor (it explores by sampling), twin critics, a learned
/// temperature.
struct SAC {
  static constexpr const char* kName = "SAC";
  static constexpr const char* kProgram = "sac_pendulum";
  static constexpr const char* kCritic = "qvalue_network";
  static constexpr const char* kCriticLoss = "loss_qvalue";
  static constexpr bool kStochastic = true;
  using Actor = rl::modules::ProbabilisticActor;
  using Loss = rl::objectives::SACLoss<Actor, rl::modules::ValueOperator>;
  static Config defaults() {
    Config c;
    c.lr_actor = 1e-3;
    c.lr_alpha = 1e-3;
    c.num_cells = {64, 64};
    c.loss_function = "l2";  // TorchRL's SAC example (the loss class defaults to smooth_l1)
    return c;
  }
  static Loss make_loss(Actor actor, rl::modules::ValueOperator critic, const rl::TensorSpec& spec, const Config& c) {
    return Loss(std::move(actor), std::move(critic), spec,
                rl::objectives::SACLossOptions().alpha_init(c.alpha_init).loss_function(
                    rl::objectives::loss_function_from_string(c.loss_function)));
  }
};

/// Keys the loss reads: only these go into the replay buffer.
inline std::vector<rl::NestedKey> transition_keys() {
  return {"observation", "action", {"next", "observation"}, {"next", "reward"}, {"next", "done"},
          {"next", "terminated"}};
}

template <typename Algo>
class Trainer {
 public:
  using ActorNet = typename Algo::Actor;
  using Loss = typename Algo::Loss;

  explicit Trainer(Config cfg)
      : cfg_(std::move(cfg)),
        device_(cfg_.device),
        env_(rl::envs::PendulumOptions().batch_size({cfg_.num_envs}).seed(cfg_.seed).device(device_)),
        eval_env_(rl::envs::PendulumOptions().batch_size({cfg_.eval_episodes}).seed(eval_seed()).device(device_)),
        rb_(rl::data::ReplayBufferOptions(cfg_.buffer_size).seed(cfg_.seed + 17)) {
    TORCH_CHECK_VALUE(cfg_.num_envs > 0 && cfg_.batch_size > 0 && cfg_.eval_episodes > 0,
                      Algo::kProgram, ": num_envs, batch_size and eval_episodes must be positive");
    TORCH_CHECK_VALUE(cfg_.tau > 0 && cfg_.tau <= 1, Algo::kProgram, ": tau must be in (0, 1]");
    TORCH_CHECK_VALUE(cfg_.policy_delay >= 1, Algo::kProgram, ": policy_delay must be >= 1");
    // The networks' initial weights come from a generator of the trainer's own (the same draws
    // torch::manual_seed(seed) would give): they do not depend on what other threads draw.
    auto init = at::make_generator<at::CPUGeneratorImpl>(cfg_.seed);
    // TD3's smoothing noise, SAC's samples and the ensembles' redrawn copies come from LibTorch's
    // default generator, as in TorchRL: seeded here, saved with checkpoints. (DDPG draws nothing
    // from it, so DDPG trainers in parallel threads do not disturb each other.)
    if (!std::is_same<Algo, DDPG>::value) torch::manual_seed(cfg_.seed + 43);
    const auto act = rl::modules::activation_from_string(cfg_.activation);
    const int64_t n_obs = env_.observation_spec().at("observation").shape().back();
    const int64_t n_act = env_.action_spec().shape().back();

    if constexpr (Algo::kStochastic) {
      // Actor: MLP -> (loc, scale) -> TanhNormal within the action bounds; it explores by sampling.
      auto actor_mlp = rl::modules::MLP(
          rl::modules::MLPOptions(n_obs, 2 * n_act).num_cells(cfg_.num_cells).activation(act).generator(init));
      // TorchRL's SAC example: the scale floored at 0.1 (a collapsing scale with saturated
      // samples gives hugely negative re-inverted log-probabilities and exploding soft targets),
      // tanh_loc off.
      actor_ = ActorNet(
          rl::modules::TensorDictSequential(
              rl::modules::TensorDictModule(actor_mlp, {"observation"}, {"param"}),
              rl::modules::TensorDictModule(
                  rl::modules::NormalParamExtractor(rl::modules::NormalParamExtractorOptions().scale_lb(0.1)),
                  {"param"}, {"loc", "scale"})),
          rl::modules::TanhNormal::factory(rl::modules::TanhNormalOptions::from_spec(env_.action_spec())));
    } else {
      // Actor: MLP -> "param", squashed into the action bounds by a TanhModule.
      auto actor_mlp = rl::modules::MLP(
          rl::modules::MLPOptions(n_obs, n_act).num_cells(cfg_.num_cells).activation(act).generator(init));
      actor_ = ActorNet(rl::modules::TensorDictModule(actor_mlp, {"observation"}, {"param"}),
                        rl::modules::TanhModule({"param"}, {"action"}, env_.action_spec()));
    }
    // The critic second: its weights are the generator's next draws.
    critic_ = rl::modules::ValueOperator(
        rl::modules::MLP(
            rl::modules::MLPOptions(n_obs + n_act, 1).num_cells(cfg_.num_cells).activation(act).generator(init)),
        /*in_keys=*/{"observation", "action"});
    actor_->to(device_);
    critic_->to(device_);

    loss_ = Algo::make_loss(actor_, critic_, env_.action_spec(), cfg_);
    loss_->make_value_estimator(rl::objectives::ValueEstimators::TD0,
                                rl::objectives::value::ValueEstimatorOptions().gamma(cfg_.gamma));
    optim_actor_ = std::make_unique<torch::optim::Adam>(loss_->parameters_of("actor_network"),
                                                        torch::optim::AdamOptions(cfg_.lr_actor));
    optim_critic_ = std::make_unique<torch::optim::Adam>(loss_->parameters_of(Algo::kCritic),
                                                         torch::optim::AdamOptions(cfg_.lr_critic));
    if constexpr (Algo::kStochastic) {
      optim_alpha_ = std::make_unique<torch::optim::Adam>(loss_->parameters_of("log_alpha"),
                                                          torch::optim::AdamOptions(cfg_.lr_alpha));
    }
    updater_ = std::make_unique<rl::objectives::SoftUpdate>(loss_, rl::objectives::SoftUpdateOptions().tau(cfg_.tau));

    if constexpr (Algo::kStochastic) {
      policy_ = rl::modules::TensorDictSequential(actor_);  // the collector acts under ExplorationType::Random: the actor samples
    } else {
      // Exploration: constant Gaussian noise on top of the actor (TorchRL's DDPG/TD3 examples).
      noise_ = rl::modules::AdditiveGaussianModule(
          env_.action_spec(),
          rl::modules::AdditiveGaussianModuleOptions().sigma_init(1.0).sigma_end(1.0).std(cfg_.noise_std).seed(cfg_.seed + 29));
      policy_ = rl::modules::TensorDictSequential(actor_, noise_);
    }
    collector_ = std::make_unique<rl::collectors::SyncDataCollector>(
        env_, policy_, /*frames_per_batch=*/cfg_.num_envs, /*total_frames=*/cfg_.total_frames,
        /*init_random_frames=*/cfg_.init_random_frames);
    running_return_ = torch::zeros({cfg_.num_envs});
  }

  /// Collects one step of every environment and, past the warm-up, does `num_envs` updates.
  /// Returns false once `total_frames` have been collected.
  bool step() {
    auto batch = collector_->next();
    if (!batch) return false;
    track_returns(*batch);
    rb_.extend(batch->select(transition_keys()));
    if (collector_->frames() >= cfg_.init_random_frames && rb_.size() >= cfg_.batch_size) {
      for (int64_t i = 0; i < cfg_.num_envs; ++i) update();
    }
    return true;
  }

  /// Distributed learner (`--collectors N`, examples/offpolicy/distributed.h): the transitions
  /// come from collector processes instead of this trainer's own environments. Set it before
  /// `load`: such a run's checkpoints have their own format (a single-process run cannot resume
  /// one, nor the reverse).
  void set_remote_collection() { remote_ = true; }

  /// Distributed learner: one round of batches collected elsewhere (`[rows, 1]`, the
  /// `transition_keys()`), into the replay buffer, then (past the warm-up) one update per row.
  void consume(const rl::TensorDict& batch) {
    TORCH_CHECK(remote_, Algo::kProgram, ": consume() needs set_remote_collection()");
    const int64_t rows = batch.batch_size().at(0);
    if (running_return_.numel() != rows) running_return_ = torch::zeros({rows});
    remote_episodes_ += track_returns(batch);
    rb_.extend(batch.select(transition_keys()));
    remote_frames_ += rows;
    if (frames() >= cfg_.init_random_frames && rb_.size() >= cfg_.batch_size) {
      for (int64_t i = 0; i < rows; ++i) update();
    }
  }

  /// Distributed collector: the next batch of this trainer's environments (`transition_keys()`
  /// only), or nothing once `total_frames` are collected. No updates.
  std::optional<rl::TensorDict> collect() {
    auto batch = collector_->next();
    if (!batch) return std::nullopt;
    return batch->select(transition_keys());
  }

  /// The policy's weights (the actor network's flat parameters), as pushed to collectors.
  std::vector<torch::Tensor> policy_parameters() const { return loss_->parameters_of("actor_network"); }

  /// One gradient step of the critic; every `policy_delay`-th update also one of the actor (and
  /// SAC's temperature) and a soft target update (TD3's delayed policy update; DDPG and SAC
  /// have `policy_delay` 1). TD3 follows TorchRL's TD3 example: the critic loss, the critic's
  /// step, then, on the actor's turn, the actor loss against the updated critic. DDPG and SAC
  /// follow theirs: one forward, the summed losses, one backward, every optimizer.
  void update() {
    rl::TensorDict sample = rb_.sample(cfg_.batch_size);
    if (!device_.is_cpu()) sample = sample.to(device_);
    const bool actor_turn = (updates_ + 1) % cfg_.policy_delay == 0;  // TorchRL counts from 1
    if constexpr (std::is_same<Algo, TD3>::value) {
      rl::TensorDict value_out = loss_->value_loss(sample);
      optim_critic_->zero_grad();
      value_out.get(Algo::kCriticLoss).backward();
      optim_critic_->step();
      // Kept on the device; read only when printed or saved (no host sync per update).
      last_loss_value_ = value_out.get(Algo::kCriticLoss).detach();
      if (actor_turn) {
        rl::TensorDict actor_out = loss_->actor_loss(sample);
        optim_actor_->zero_grad();
        actor_out.get("loss_actor").backward();
        optim_actor_->step();
        updater_->step();
        last_loss_actor_ = actor_out.get("loss_actor").detach();
      }
    } else {
      rl::TensorDict out = loss_(sample);
      torch::Tensor total = actor_turn ? rl::objectives::sum_losses(out) : out.get(Algo::kCriticLoss);
      optim_actor_->zero_grad();
      optim_critic_->zero_grad();
      if (optim_alpha_) optim_alpha_->zero_grad();
      total.backward();
      optim_critic_->step();
      if (actor_turn) {
        optim_actor_->step();
        if (optim_alpha_) optim_alpha_->step();
        updater_->step();
      }
      last_loss_actor_ = out.get("loss_actor").detach();
      last_loss_value_ = out.get(Algo::kCriticLoss).detach();
    }
    ++updates_;
  }

  /// Mean return of `eval_episodes` fresh 200-step episodes, without exploration noise. Every
  /// evaluation starts from the same `eval_episodes` states (the eval env is reseeded), so the
  /// learning curve shows the policy changing, not the luck of the start states (one episode's
  /// return varies by ~85 around a good policy's mean).
  double evaluate() {
    rl::modules::SetExplorationType deterministic(rl::modules::ExplorationType::Deterministic);
    torch::NoGradGuard no_grad;
    eval_env_.set_seed(eval_seed());
    rl::TensorDict episodes = eval_env_.rollout(/*max_steps=*/200, actor_);
    return episodes.get({"next", "reward"}).sum(-2).mean().item<double>();
  }

  /// Writes everything needed to continue exactly where we are.
  void save(const std::string& path) const {
    torch::serialize::OutputArchive archive, loss, optim_a, optim_c, optim_alpha, noise, rb, collector;
    rl::write_format(archive, checkpoint_format());
    archive.write("config", c10::IValue(cfg_.fingerprint()));
    loss_->save(loss);
    archive.write("loss", loss);
    optim_actor_->save(optim_a);
    archive.write("optim_actor", optim_a);
    optim_critic_->save(optim_c);
    archive.write("optim_critic", optim_c);
    if (optim_alpha_) {
      optim_alpha_->save(optim_alpha);
      archive.write("optim_alpha", optim_alpha);
    }
    if (!noise_.is_empty()) {
      noise_->save(noise);
      archive.write("noise", noise);
    }
    // On an accelerator, TD3's noise and SAC's samples come from the device's default generator.
    rlobj_examples::save_generators(archive, device_);
    rb_.save(rb);
    archive.write("replay_buffer", rb);
    collector_->save(collector);
    archive.write("collector", collector);
    archive.write("running_return", running_return_);
    archive.write("recent_returns", torch::tensor(std::vector<double>(recent_returns_.begin(), recent_returns_.end()),
                                                  torch::kFloat64));
    archive.write("counters", torch::tensor({updates_}, torch::kInt64));
    if (remote_) archive.write("remote_counters", torch::tensor({remote_frames_, remote_episodes_}, torch::kInt64));
    archive.write("last_losses", torch::tensor({last_loss_actor(), last_loss_value()}, torch::kFloat64));
    rl::save_atomic(archive, path);
  }

  /// Restores a checkpoint written by `save` (with the same fingerprint).
  void load(const std::string& path) {
    torch::serialize::InputArchive archive, loss, optim_a, optim_c, optim_alpha, noise, rb, collector;
    // Verified record by record before anything is read. No map_location: the fingerprint
    // pins the device, and CPU-side state (generator states, return tracking) must stay put.
    rl::load_archive(archive, path);
    rl::check_format(archive, checkpoint_format(), Algo::kProgram);
    c10::IValue fingerprint;
    archive.read("config", fingerprint);
    TORCH_CHECK(fingerprint.toStringRef() == cfg_.fingerprint(), Algo::kProgram, ": checkpoint \"", path,
                "\" was made with ", fingerprint.toStringRef(), " but this run uses ", cfg_.fingerprint());
    archive.read("loss", loss);
    loss_->load(loss);
    archive.read("optim_actor", optim_a);
    optim_actor_->load(optim_a);
    archive.read("optim_critic", optim_c);
    optim_critic_->load(optim_c);
    if (optim_alpha_) {
      archive.read("optim_alpha", optim_alpha);
      optim_alpha_->load(optim_alpha);
    }
    if (!noise_.is_empty()) {
      archive.read("noise", noise);
      noise_->load(noise);
    }
    // Older ddpg_pendulum checkpoints have no generator state (DDPG does not draw from it).
    rlobj_examples::load_generators(archive, device_, /*cpu_required=*/false);
    archive.read("replay_buffer", rb);
    rb_.load(rb);
    archive.read("collector", collector);
    collector_->load(collector);
    torch::Tensor recent, counters, losses;
    archive.read("running_return", running_return_);
    // Collectors start fresh episodes at every (re)start: partial returns do not carry over
    // (`consume` sizes the tracker to the rounds it receives).
    if (remote_) running_return_ = torch::zeros({0});
    archive.read("recent_returns", recent);
    recent_returns_.assign(recent.data_ptr<double>(), recent.data_ptr<double>() + recent.numel());
    archive.read("counters", counters);
    updates_ = counters[0].item<int64_t>();
    if (remote_) {
      torch::Tensor remote;
      archive.read("remote_counters", remote);
      remote_frames_ = remote[0].item<int64_t>();
      remote_episodes_ = remote[1].item<int64_t>();
    }
    archive.read("last_losses", losses);
    last_loss_actor_ = losses[0];
    last_loss_value_ = losses[1];
  }

  int64_t frames() const { return collector_->frames() + remote_frames_; }
  int64_t episodes() const { return collector_->episodes() + remote_episodes_; }
  int64_t updates() const { return updates_; }
  double last_loss_actor() const { return last_loss_actor_.defined() ? last_loss_actor_.item<double>() : std::nan(""); }
  double last_loss_value() const { return last_loss_value_.defined() ? last_loss_value_.item<double>() : std::nan(""); }
  /// Mean return of the last (up to) 10 finished training episodes (with exploration noise).
  double recent_return() const {
    if (recent_returns_.empty()) return std::nan("");
    return std::accumulate(recent_returns_.begin(), recent_returns_.end(), 0.0) / recent_returns_.size();
  }
  const Config& config() const { return cfg_; }
  /// The checkpoint format: one per algorithm (a TD3 checkpoint cannot resume a SAC run).
  static std::string format_name() { return std::string("rlobj.examples.") + Algo::kProgram; }
  /// This run's checkpoint format: `format_name()`, with ".collectors" for a distributed learner.
  std::string checkpoint_format() const { return format_name() + (remote_ ? ".collectors" : ""); }
  /// Seed of the evaluation episodes' start states (derived from the run's seed).
  uint64_t eval_seed() const { return cfg_.seed + 1000003; }
  Loss& loss() { return loss_; }
  ActorNet& actor() { return actor_; }

 private:
  /// Adds `batch`'s rewards to the running returns; returns how many episodes it finished.
  int64_t track_returns(const rl::TensorDict& batch) {
    // batch: [num_envs, 1]
    auto reward = batch.get({"next", "reward"}).reshape({-1}).to(torch::kCPU, torch::kFloat32);
    auto done = batch.get({"next", "done"}).reshape({-1}).to(torch::kCPU);
    running_return_ += reward;
    int64_t finished = 0;
    for (int64_t i = 0; i < done.numel(); ++i) {
      if (done[i].item<bool>()) {
        recent_returns_.push_back(running_return_[i].item<double>());
        ++finished;
        if (recent_returns_.size() > 10) recent_returns_.pop_front();
        running_return_[i] = 0;
      }
    }
    return finished;
  }

  Config cfg_;
  torch::Device device_;
  rl::envs::Pendulum env_;
  rl::envs::Pendulum eval_env_;
  rl::data::ReplayBuffer rb_;
  ActorNet actor_{nullptr};
  rl::modules::ValueOperator critic_{nullptr};
  Loss loss_{nullptr};
  std::unique_ptr<torch::optim::Adam> optim_actor_, optim_critic_, optim_alpha_;
  std::unique_ptr<rl::objectives::SoftUpdate> updater_;
  rl::modules::AdditiveGaussianModule noise_{nullptr};
  rl::modules::TensorDictSequential policy_{nullptr};
  std::unique_ptr<rl::collectors::SyncDataCollector> collector_;
  torch::Tensor running_return_;
  std::deque<double> recent_returns_;
  int64_t updates_ = 0;
  bool remote_ = false;
  int64_t remote_frames_ = 0, remote_episodes_ = 0;
  torch::Tensor last_loss_actor_, last_loss_value_;
};

}  // namespace offpolicy
