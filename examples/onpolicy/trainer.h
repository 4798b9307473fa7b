#pragma once

// One on-policy training loop for PPO, written with rlobj the way TorchRL's PPO examples are:
// a SyncDataCollector gathers `frames_per_batch` transitions from `num_envs` environments (the
// actor samples: ExplorationType::Random), the loss's value estimator computes GAE once per batch
// (no gradient), the batch is flattened to [N*T], and for `num_epochs` epochs minibatches drawn
// without replacement (rlobj::data::MiniBatches) each take one Adam step on
// loss_objective + loss_critic + loss_entropy, with the gradient norm clipped and the learning
// rate optionally annealed linearly to 0.
//
// `Trainer<Algo>` is parameterised by the task (`CartPolePPO`, `PendulumPPO` below: the
// environment, the actor's distribution, the default hyper-parameters); everything else
// (collection, advantages, epochs, evaluation, checkpoints) is shared. Used by
// examples/ppo_{cartpole,pendulum} and by the tests.

#include <algorithm>
#include <cmath>
#include <tuple>
#include <cstdint>
#include <deque>
#include <memory>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <rlobj/data/samplers.h>
#include <rlobj/rlobj.h>

#include "common/generators.h"

namespace onpolicy {

namespace rl = rlobj;

/// Hyper-parameters (the command-line flags), named as in TorchRL's PPO examples. Each task's
/// `defaults()` sets its own.
struct Config {
  uint64_t seed = 0;
  int64_t total_frames = 100000;
  int64_t num_envs = 8;
  /// Transitions per collector batch (num_envs x steps per environment).
  int64_t frames_per_batch = 1024;
  /// Transitions per gradient step; divides frames_per_batch.
  int64_t mini_batch_size = 256;
  /// Passes over each batch (TorchRL: ppo_epochs).
  int64_t num_epochs = 10;
  double lr = 3e-4;
  /// Anneal the learning rate linearly to 0 over the run's updates.
  bool anneal_lr = true;
  /// Clip the global gradient norm to this (0: no clipping).
  double max_grad_norm = 0.5;
  double gamma = 0.99;
  double gae_lambda = 0.95;
  double clip_epsilon = 0.2;
  /// Anneal clip_epsilon linearly, as the learning rate.
  bool anneal_clip_epsilon = false;
  double critic_coef = 0.5;
  double entropy_coef = 0.0;
  std::string loss_critic_type = "l2";
  /// Standardise the advantage in each minibatch.
  bool normalize_advantage = true;
  /// Rewards are multiplied by this before GAE (the logged returns are not).
  double reward_scale = 1.0;
  std::vector<int64_t> num_cells = {64, 64};
  std::string activation = "tanh";
  /// Orthogonal initial weights (gain sqrt(2) in the hidden layers, 0.01 at the policy's output,
  /// 1 at the critic's; zero biases), as CleanRL, SB3 and TorchRL's PPO examples; else
  /// LibTorch's default Linear initialisation.
  bool orthogonal_init = true;
  /// CartPole: actions as int64 indices with a Categorical policy instead of one-hot vectors
  /// with a OneHotCategorical one.
  bool categorical_actions = false;
  int64_t eval_every = 10000;
  int64_t eval_episodes = 10;
  std::string device = "cpu";

  /// What a checkpoint must agree on to be resumed: the shapes, and every setting a resumed run
  /// would otherwise silently change. `total_frames` (and with it the annealing schedule),
  /// `eval_every` and `eval_episodes` may change.
  std::string fingerprint() const {
    return fmt::format(
        "seed={} num_envs={} frames_per_batch={} mini_batch_size={} num_epochs={} lr={} anneal_lr={} "
        "max_grad_norm={} gamma={} gae_lambda={} clip_epsilon={} anneal_clip_epsilon={} critic_coef={} "
        "entropy_coef={} loss_critic_type={} normalize_advantage={} reward_scale={} num_cells={} activation={} "
        "orthogonal_init={} categorical_actions={} device={}",
        seed, num_envs, frames_per_batch, mini_batch_size, num_epochs, lr, anneal_lr, max_grad_norm, gamma,
        gae_lambda, clip_epsilon, anneal_clip_epsilon, critic_coef, entropy_coef, loss_critic_type,
        normalize_advantage, reward_scale, fmt::join(num_cells, ","), activation, orthogonal_init,
        categorical_actions, device);
  }
};

/// The actor's weights: orthogonal (torch.nn.init.orthogonal_, drawn from `gen`) with `gain` in the
/// hidden layers and `last_gain` in the output layer, zero biases.
inline void orthogonal_init(rl::modules::MLP& mlp, double gain, double last_gain, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> weights, biases;
  for (const auto& p : mlp->named_parameters()) {
    const std::string& name = p.key();
    if (name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 && p.value().dim() == 2) {
      weights.push_back(p.value());
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      biases.push_back(p.value());
    }
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    torch::Tensor& w = weights[i];
    const int64_t rows = w.size(0), cols = w.size(1);
    // torch.nn.init.orthogonal_: QR of a normal matrix (transposed when wider than tall), signs
    // fixed by the diagonal of R.
    torch::Tensor flat = torch::empty({rows, cols}, torch::TensorOptions().dtype(torch::kFloat64)).normal_(0, 1, gen);
    if (rows < cols) flat = flat.t();
    auto [q, r] = torch::linalg_qr(flat);
    q = q * r.diagonal().sign();
    if (rows < cols) q = q.t();
    w.copy_(q * (i + 1 == weights.size() ? last_gain : gain));
  }
  for (auto& b : biases) b.zero_();
}

/// TorchRL's `AddStateIndependentNormalScale` (scale_mapping "exp"): passes `loc` through and adds
/// a learned scale that does not depend on the state, `max(exp(log_scale), scale_lb)`, one per
/// action dim, starting at 1. TorchRL's PPO MuJoCo example puts it after the policy MLP.
class AddStateIndependentNormalScaleImpl : public torch::nn::Cloneable<AddStateIndependentNormalScaleImpl> {
 public:
  explicit AddStateIndependentNormalScaleImpl(int64_t n, double scale_lb = 1e-4) : n_(n), scale_lb_(scale_lb) {
    reset();
  }
  void reset() override { log_scale = register_parameter("scale", torch::zeros({n_})); }
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& loc) {
    return {loc, (torch::zeros_like(loc) + log_scale).exp().clamp_min(scale_lb_)};
  }
  torch::Tensor log_scale;

 private:
  int64_t n_;
  double scale_lb_;
};
TORCH_MODULE(AddStateIndependentNormalScale);

/// CartPole-v1 (gymnasium's, 500-step episodes): an MLP writes two logits, a OneHotCategorical
/// (the env's one-hot int64 action) or, with `categorical_actions`, a Categorical (an int64
/// index) samples the action.
struct CartPolePPO {
  static constexpr const char* kName = "PPO";
  static constexpr const char* kProgram = "ppo_cartpole";
  static constexpr const char* kEnvName = "CartPole-v1";
  static constexpr int64_t kMaxEpisodeSteps = 500;
  using Env = rl::envs::CartPole;

  /// rl-baselines3-zoo's PPO CartPole-v1 settings (8 envs x 32 steps, minibatches of 256, 20
  /// epochs, gamma 0.98, lambda 0.8, lr 1e-3 and clip 0.2 both annealed to 0, no entropy bonus),
  /// run for 600 batches (153,600 frames) instead of the zoo's 100k: with 100k, 1 seed in 10
  /// ended at a deterministic return of 456; with 153,600, seeds 0 to 9 all end at 500.
  static Config defaults() {
    Config c;
    c.total_frames = 153600;
    c.num_envs = 8;
    c.frames_per_batch = 256;
    c.mini_batch_size = 256;
    c.num_epochs = 20;
    c.lr = 1e-3;
    c.anneal_lr = true;
    c.gamma = 0.98;
    c.gae_lambda = 0.8;
    c.clip_epsilon = 0.2;
    c.anneal_clip_epsilon = true;
    c.entropy_coef = 0.0;
    c.critic_coef = 0.5;
    c.max_grad_norm = 0.5;
    c.num_cells = {64, 64};
    c.activation = "tanh";
    c.eval_every = 10240;
    return c;
  }
  static Env make_env(const Config& c, int64_t n, uint64_t seed) {
    return Env(rl::envs::CartPoleOptions()
                   .batch_size({n})
                   .seed(seed)
                   .device(torch::Device(c.device))
                   .categorical_action_encoding(c.categorical_actions));
  }
  static rl::modules::ProbabilisticActor make_actor(const Env& env, const Config& c, at::Generator& init) {
    const int64_t n_obs = env.observation_spec().at("observation").shape().back();
    const int64_t n_act = 2;
    auto mlp = rl::modules::MLP(rl::modules::MLPOptions(n_obs, n_act)
                                    .num_cells(c.num_cells)
                                    .activation(rl::modules::activation_from_string(c.activation))
                                    .generator(init));
    if (c.orthogonal_init) orthogonal_init(mlp, std::sqrt(2.0), 0.01, init);
    auto factory = c.categorical_actions ? rl::modules::Categorical::factory() : rl::modules::OneHotCategorical::factory();
    return rl::modules::ProbabilisticActor(
        rl::modules::TensorDictModule(mlp, {"observation"}, {"logits"}), factory,
        rl::modules::ProbabilisticActorOptions().in_keys({"logits"}).return_log_prob(true));
  }
  /// The collecting policy's action as the environment takes it. OneHotCategorical's random
  /// sample is TorchRL's pass-through `rsample` (`one_hot + probs - probs.detach()`, float); TorchRL's
  /// env maps it through its spec (argmax), CartPole takes int64 one-hot vectors only: do the same.
  static void to_env_action(rl::TensorDict& td, const Config& c) {
    if (c.categorical_actions) return;
    const torch::Tensor& a = td.get("action");
    if (a.scalar_type() != torch::kLong) td.set("action", torch::one_hot(a.argmax(-1), a.size(-1)));
  }
};

/// Pendulum-v1 (gym's, 200-step episodes): TorchRL's PPO MuJoCo example adapted — an MLP writes
/// the location, a state-independent learned scale is added, a TanhNormal within the action
/// bounds samples; 2048 frames per batch, minibatches of 64, 10 epochs, lr 3e-4 annealed, critic
/// coefficient 0.25, no entropy bonus, l2 critic loss. Pendulum's changes: rewards scaled by 0.1
/// (the critic's targets would otherwise reach the hundreds) and gamma 0.97 (0.99 learns slowly
/// over 200-step episodes; 0.9, rl-baselines3-zoo's, plateaus higher).
struct PendulumPPO {
  static constexpr const char* kName = "PPO";
  static constexpr const char* kProgram = "ppo_pendulum";
  static constexpr const char* kEnvName = "Pendulum-v1";
  static constexpr int64_t kMaxEpisodeSteps = 200;
  using Env = rl::envs::Pendulum;

  static Config defaults() {
    Config c;
    c.total_frames = 245760;  // 120 batches
    c.num_envs = 8;
    c.frames_per_batch = 2048;
    c.mini_batch_size = 64;
    c.num_epochs = 10;
    c.lr = 3e-4;
    c.anneal_lr = true;
    c.gamma = 0.97;
    c.gae_lambda = 0.95;
    c.clip_epsilon = 0.2;
    c.entropy_coef = 0.0;
    c.critic_coef = 0.25;
    c.max_grad_norm = 0.5;
    c.reward_scale = 0.1;
    c.num_cells = {64, 64};
    c.activation = "tanh";
    c.eval_every = 20480;
    return c;
  }
  static Env make_env(const Config& c, int64_t n, uint64_t seed) {
    return Env(rl::envs::PendulumOptions().batch_size({n}).seed(seed).device(torch::Device(c.device)));
  }
  static rl::modules::ProbabilisticActor make_actor(const Env& env, const Config& c, at::Generator& init) {
    const int64_t n_obs = env.observation_spec().at("observation").shape().back();
    const int64_t n_act = env.action_spec().shape().back();
    // TorchRL's PPO MuJoCo example: the MLP writes the location, the scale is learned apart
    // from the state (AddStateIndependentNormalScale, scale_lb 1e-8).
    auto mlp = rl::modules::MLP(rl::modules::MLPOptions(n_obs, n_act)
                                    .num_cells(c.num_cells)
                                    .activation(rl::modules::activation_from_string(c.activation))
                                    .generator(init));
    if (c.orthogonal_init) orthogonal_init(mlp, std::sqrt(2.0), 0.01, init);
    return rl::modules::ProbabilisticActor(
        rl::modules::TensorDictSequential(
            rl::modules::TensorDictModule(mlp, {"observation"}, {"loc"}),
            rl::modules::TensorDictModule(AddStateIndependentNormalScale(n_act, /*scale_lb=*/1e-8), {"loc"},
                                          {"loc", "scale"})),
        rl::modules::TanhNormal::factory(rl::modules::TanhNormalOptions::from_spec(env.action_spec())),
        rl::modules::ProbabilisticActorOptions().return_log_prob(true));
  }
  static void to_env_action(rl::TensorDict&, const Config&) {}
};

template <typename Algo>
class Trainer {
 public:
  using Env = typename Algo::Env;
  using Loss = rl::objectives::ClipPPOLoss<rl::modules::ProbabilisticActor, rl::modules::ValueOperator>;

  explicit Trainer(Config cfg)
      : cfg_(checked(std::move(cfg))),
        device_(cfg_.device),
        env_(Algo::make_env(cfg_, cfg_.num_envs, cfg_.seed)),
        eval_env_(Algo::make_env(cfg_, cfg_.eval_episodes, eval_seed())),
        minibatches_(rl::data::MiniBatchesOptions(cfg_.mini_batch_size).seed(cfg_.seed + 17)) {
    // The networks' initial weights come from a generator of the trainer's own; the actor's samples
    // come from LibTorch's default generator, as in TorchRL: seeded here, saved with checkpoints.
    auto init = at::make_generator<at::CPUGeneratorImpl>(cfg_.seed);
    torch::manual_seed(cfg_.seed + 43);
    actor_ = Algo::make_actor(env_, cfg_, init);
    // The critic second: its weights are the generator's next draws.
    const int64_t n_obs = env_.observation_spec().at("observation").shape().back();
    auto critic_mlp = rl::modules::MLP(rl::modules::MLPOptions(n_obs, 1)
                                           .num_cells(cfg_.num_cells)
                                           .activation(rl::modules::activation_from_string(cfg_.activation))
                                           .generator(init));
    if (cfg_.orthogonal_init) orthogonal_init(critic_mlp, std::sqrt(2.0), 1.0, init);
    critic_ = rl::modules::ValueOperator(critic_mlp, /*in_keys=*/{"observation"});
    actor_->to(device_);
    critic_->to(device_);

    loss_ = Loss(actor_, critic_,
                 rl::objectives::PPOLossOptions()
                     .clip_epsilon(cfg_.clip_epsilon)
                     .entropy_bonus(cfg_.entropy_coef != 0)
                     .entropy_coef(cfg_.entropy_coef)
                     .critic_coef(cfg_.critic_coef)
                     .loss_critic_type(rl::objectives::loss_function_from_string(cfg_.loss_critic_type))
                     .normalize_advantage(cfg_.normalize_advantage));
    loss_->make_value_estimator(rl::objectives::ValueEstimators::GAE, rl::objectives::value::ValueEstimatorOptions()
                                                                          .gamma(cfg_.gamma)
                                                                          .lmbda(cfg_.gae_lambda));
    optim_ = std::make_unique<torch::optim::Adam>(loss_->parameters(), torch::optim::AdamOptions(cfg_.lr).eps(1e-5));

    auto actor = actor_;
    const Config c = cfg_;
    collector_ = std::make_unique<rl::collectors::SyncDataCollector>(
        env_,
        [actor, c](rl::TensorDict& td) mutable {
          actor(td);
          Algo::to_env_action(td, c);
        },
        cfg_.frames_per_batch, cfg_.total_frames);
    running_return_ = torch::zeros({cfg_.num_envs}, torch::kFloat64);
  }

  /// Collects one batch and trains on it (`num_epochs` epochs of minibatches). Returns false once
  /// `total_frames` have been collected.
  bool step() {
    auto collected = collector_->next();
    if (!collected) return false;
    rl::TensorDict batch = *collected;  // [num_envs, T]
    track_returns(batch);
    if (cfg_.reward_scale != 1.0) {
      batch.set({"next", "reward"}, batch.get({"next", "reward"}) * cfg_.reward_scale);
    }
    {
      // GAE once per batch, with the critic as it is now (TorchRL's value estimator runs it without
      // gradient): writes advantage, value_target and state_value.
      torch::NoGradGuard no_grad;
      loss_->value_estimator().forward(batch);
    }
    rl::TensorDict flat = batch.select(train_keys()).reshape({-1});  // [N*T]
    const int64_t total_updates = total_batches() * cfg_.num_epochs * minibatches_.num_batches(cfg_.frames_per_batch);
    for (int64_t epoch = 0; epoch < cfg_.num_epochs; ++epoch) {
      for (const rl::TensorDict& mb : minibatches_.epoch(flat)) {
        // TorchRL's PPO examples: alpha = 1 - updates / total_updates, before this update.
        const double alpha = std::max(0.0, 1.0 - static_cast<double>(updates_) / static_cast<double>(total_updates));
        if (cfg_.anneal_lr) {
          for (auto& group : optim_->param_groups()) {
            static_cast<torch::optim::AdamOptions&>(group.options()).lr(cfg_.lr * alpha);
          }
        }
        if (cfg_.anneal_clip_epsilon) clip_epsilon_buffer().fill_(cfg_.clip_epsilon * alpha);
        update(mb);
      }
    }
    ++iterations_;
    return true;
  }

  /// One Adam step on loss_objective + loss_critic + loss_entropy of minibatch `mb`.
  void update(const rl::TensorDict& mb) {
    rl::TensorDict out = loss_(mb);
    torch::Tensor total = out.get("loss_objective") + out.get("loss_critic");
    if (const torch::Tensor* e = out.find("loss_entropy")) total = total + *e;
    optim_->zero_grad();
    total.backward();
    if (cfg_.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(loss_->parameters(), cfg_.max_grad_norm);
    optim_->step();
    // Kept on the device; read only when printed or saved.
    last_.objective = out.get("loss_objective").detach();
    last_.critic = out.get("loss_critic").detach();
    last_.entropy = out.find("entropy") ? out.get("entropy").detach() : torch::Tensor();
    last_.clip_fraction = out.get("clip_fraction").detach();
    ++updates_;
  }

  /// Mean return of `eval_episodes` fresh episodes (up to the env's episode length) with the
  /// deterministic policy (the distribution's mode). Every evaluation starts from the same states
  /// (the eval env is reseeded), so the learning curve shows the policy changing, not the luck of
  /// the start states.
  double evaluate() {
    rl::modules::SetExplorationType deterministic(rl::modules::ExplorationType::Deterministic);
    torch::NoGradGuard no_grad;
    eval_env_.set_seed(eval_seed());
    // Until every episode is done; steps after an episode's end repeat it and are not counted.
    rl::TensorDict episodes = eval_env_.rollout(
        Algo::kMaxEpisodeSteps, actor_,
        rl::envs::RolloutOptions().break_when_any_done(false).break_when_all_done(true));
    torch::Tensor done = episodes.get({"next", "done"}).to(torch::kLong);
    torch::Tensor counted = (done.cumsum(-2) - done) == 0;
    torch::Tensor reward = episodes.get({"next", "reward"}).to(torch::kFloat64);
    return (reward * counted).sum(-2).mean().item<double>();
  }

  /// Writes everything needed to continue exactly where we are.
  void save(const std::string& path) const {
    torch::serialize::OutputArchive archive, loss, optim, sampler, collector;
    rl::write_format(archive, format_name());
    archive.write("config", c10::IValue(cfg_.fingerprint()));
    loss_->save(loss);
    archive.write("loss", loss);
    optim_->save(optim);
    archive.write("optim", optim);
    minibatches_.save(sampler);
    archive.write("sampler", sampler);
    rlobj_examples::save_generators(archive, device_);
    collector_->save(collector);
    archive.write("collector", collector);
    archive.write("running_return", running_return_);
    archive.write("recent_returns", torch::tensor(std::vector<double>(recent_returns_.begin(), recent_returns_.end()),
                                                  torch::kFloat64));
    archive.write("counters", torch::tensor({updates_, iterations_}, torch::kInt64));
    archive.write("last_losses", torch::tensor({last_loss_objective(), last_loss_critic(), last_entropy(),
                                                last_clip_fraction()},
                                               torch::kFloat64));
    rl::save_atomic(archive, path);
  }

  /// Restores a checkpoint written by `save` (with the same fingerprint).
  void load(const std::string& path) {
    torch::serialize::InputArchive archive, loss, optim, sampler, collector;
    rl::load_archive(archive, path);
    rl::check_format(archive, format_name(), Algo::kProgram);
    c10::IValue fingerprint;
    archive.read("config", fingerprint);
    TORCH_CHECK(fingerprint.toStringRef() == cfg_.fingerprint(), Algo::kProgram, ": checkpoint \"", path,
                "\" was made with ", fingerprint.toStringRef(), " but this run uses ", cfg_.fingerprint());
    archive.read("loss", loss);
    loss_->load(loss);
    archive.read("optim", optim);
    optim_->load(optim);
    archive.read("sampler", sampler);
    minibatches_.load(sampler);
    rlobj_examples::load_generators(archive, device_);
    archive.read("collector", collector);
    collector_->load(collector);
    torch::Tensor recent, counters, losses;
    archive.read("running_return", running_return_);
    archive.read("recent_returns", recent);
    recent_returns_.assign(recent.data_ptr<double>(), recent.data_ptr<double>() + recent.numel());
    archive.read("counters", counters);
    updates_ = counters[0].item<int64_t>();
    iterations_ = counters[1].item<int64_t>();
    archive.read("last_losses", losses);
    last_.objective = losses[0];
    last_.critic = losses[1];
    last_.entropy = losses[2];
    last_.clip_fraction = losses[3];
  }

  int64_t frames() const { return collector_->frames(); }
  int64_t episodes() const { return collector_->episodes(); }
  /// Gradient steps so far.
  int64_t updates() const { return updates_; }
  /// Collector batches trained on so far.
  int64_t iterations() const { return iterations_; }
  /// Collector batches of the whole run (the annealing schedule's length).
  int64_t total_batches() const { return (cfg_.total_frames + cfg_.frames_per_batch - 1) / cfg_.frames_per_batch; }
  double last_loss_objective() const { return value_of(last_.objective); }
  double last_loss_critic() const { return value_of(last_.critic); }
  /// The policy's entropy on the last minibatch (NaN without an entropy bonus).
  double last_entropy() const { return value_of(last_.entropy); }
  double last_clip_fraction() const { return value_of(last_.clip_fraction); }
  /// The learning rate of the last update.
  double lr() const { return static_cast<const torch::optim::AdamOptions&>(optim_->param_groups()[0].options()).lr(); }
  /// Mean return of the last (up to) 10 finished training episodes (sampled actions).
  double recent_return() const {
    if (recent_returns_.empty()) return std::nan("");
    return std::accumulate(recent_returns_.begin(), recent_returns_.end(), 0.0) / recent_returns_.size();
  }
  const Config& config() const { return cfg_; }
  /// The checkpoint format: one per task (a Pendulum checkpoint cannot resume a CartPole run).
  static std::string format_name() { return std::string("rlobj.examples.") + Algo::kProgram; }
  /// Seed of the evaluation episodes' start states (derived from the run's seed).
  uint64_t eval_seed() const { return cfg_.seed + 1000003; }
  Loss& loss() { return loss_; }
  rl::modules::ProbabilisticActor& actor() { return actor_; }

  /// The entries the loss reads once the advantage is in the batch.
  std::vector<rl::NestedKey> train_keys() const {
    std::vector<rl::NestedKey> keys = {"action", "sample_log_prob", "advantage", "value_target", "state_value"};
    auto add = [&keys](const rl::NestedKey& k) {
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    };
    for (const auto& k : actor_->in_keys()) add(k);
    for (const auto& k : critic_->in_keys()) add(k);
    return keys;
  }

  /// The consistency rules between settings (the command line checks them first, naming flags).
  static Config checked(Config c) {
    const char* p = Algo::kProgram;
    TORCH_CHECK_VALUE(c.num_envs > 0 && c.frames_per_batch > 0 && c.mini_batch_size > 0 && c.num_epochs > 0 &&
                          c.eval_episodes > 0 && c.total_frames > 0,
                      p, ": num_envs, frames_per_batch, mini_batch_size, num_epochs, eval_episodes and total_frames "
                      "must be positive");
    TORCH_CHECK_VALUE(c.frames_per_batch % c.num_envs == 0, p, ": frames_per_batch (", c.frames_per_batch,
                      ") must be a multiple of num_envs (", c.num_envs, ")");
    TORCH_CHECK_VALUE(c.frames_per_batch % c.mini_batch_size == 0, p, ": mini_batch_size (", c.mini_batch_size,
                      ") must divide frames_per_batch (", c.frames_per_batch, ")");
    TORCH_CHECK_VALUE(!c.num_cells.empty(), p, ": num_cells needs at least one hidden layer");
    return c;
  }

 private:
  static double value_of(const torch::Tensor& t) { return t.defined() ? t.item<double>() : std::nan(""); }

  torch::Tensor clip_epsilon_buffer() {
    for (auto& b : loss_->named_buffers()) {
      if (b.key() == "clip_epsilon") return b.value();
    }
    TORCH_CHECK(false, Algo::kProgram, ": the loss has no clip_epsilon buffer");
  }

  void track_returns(const rl::TensorDict& batch) {
    // batch: [num_envs, T]; returns are tracked in double on the CPU, unscaled.
    auto reward = batch.get({"next", "reward"}).reshape({cfg_.num_envs, -1}).to(torch::kCPU, torch::kFloat64);
    auto done = batch.get({"next", "done"}).reshape({cfg_.num_envs, -1}).to(torch::kCPU);
    auto r = reward.accessor<double, 2>();
    auto d = done.accessor<bool, 2>();
    auto run = running_return_.accessor<double, 1>();
    for (int64_t t = 0; t < reward.size(1); ++t) {
      for (int64_t i = 0; i < cfg_.num_envs; ++i) {
        run[i] += r[i][t];
        if (d[i][t]) {
          recent_returns_.push_back(run[i]);
          if (recent_returns_.size() > 10) recent_returns_.pop_front();
          run[i] = 0;
        }
      }
    }
  }

  struct LastLosses {
    torch::Tensor objective, critic, entropy, clip_fraction;
  };

  Config cfg_;
  torch::Device device_;
  Env env_;
  Env eval_env_;
  rl::data::MiniBatches minibatches_;
  rl::modules::ProbabilisticActor actor_{nullptr};
  rl::modules::ValueOperator critic_{nullptr};
  Loss loss_{nullptr};
  std::unique_ptr<torch::optim::Adam> optim_;
  std::unique_ptr<rl::collectors::SyncDataCollector> collector_;
  torch::Tensor running_return_;
  std::deque<double> recent_returns_;
  int64_t updates_ = 0;
  int64_t iterations_ = 0;
  LastLosses last_;
};

}  // namespace onpolicy
