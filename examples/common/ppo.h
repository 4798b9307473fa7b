#pragma once

// ppo_cartpole and ppo_pendulum: PPO as TorchRL's PPO examples write it, on rlobj's library
// trainer — a SyncDataCollector gathers `frames_per_batch` transitions from `num_envs`
// environments (the actor samples: ExplorationType::Random), the loss's value estimator computes
// GAE once per batch (no gradient), the batch is flattened, and for `num_epochs` epochs
// minibatches drawn without replacement each take one Adam step on
// loss_objective + loss_critic + loss_entropy, with the gradient norm clipped and the learning
// rate (and optionally the clip epsilon) annealed linearly to 0. A `Task` struct (in each
// example's main.cpp) gives the environment, the actor and the defaults; each main is
// `return ppo::main<CartPoleTask>(argc, argv);`.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <rlobj/rlobj.h>

#include "common/app.h"
#include "common/cli.h"

namespace ppo {

namespace rl = rlobj;
namespace ex = rlobj_examples;

/// Hyper-parameters (the command-line flags), named as in TorchRL's PPO examples. Each task's
/// `defaults()` sets its own.
struct Config : ex::CommonConfig {
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
  /// Orthogonal initial weights (gain sqrt(2) in the hidden layers, 0.01 at the policy's output,
  /// 1 at the critic's; zero biases), as CleanRL, SB3 and TorchRL's PPO examples; else
  /// LibTorch's default Linear initialisation.
  bool orthogonal_init = true;
  /// CartPole: actions as int64 indices with a Categorical policy instead of one-hot vectors
  /// with a OneHotCategorical one.
  bool categorical_actions = false;

  Config() {
    total_frames = 100000;
    num_envs = 8;
    activation = "tanh";
    eval_every = 10000;
  }

  /// What a checkpoint must agree on to be resumed: the shapes, and every setting a resumed run
  /// would otherwise silently change. `total_frames` (and with it the annealing schedule) and
  /// `eval_every` may change.
  std::string fingerprint() const {
    return fmt::format(
        "{} frames_per_batch={} mini_batch_size={} num_epochs={} lr={} anneal_lr={} max_grad_norm={} gae_lambda={} "
        "clip_epsilon={} anneal_clip_epsilon={} critic_coef={} entropy_coef={} loss_critic_type={} "
        "normalize_advantage={} reward_scale={} orthogonal_init={} categorical_actions={}",
        common_fingerprint(), frames_per_batch, mini_batch_size, num_epochs, lr, anneal_lr, max_grad_norm, gae_lambda,
        clip_epsilon, anneal_clip_epsilon, critic_coef, entropy_coef, loss_critic_type, normalize_advantage,
        reward_scale, orthogonal_init, categorical_actions);
  }
};

/// An MLP's weights made orthogonal (torch.nn.init.orthogonal_, drawn from `gen`) with `gain` in
/// the hidden layers and `last_gain` in the output layer, zero biases.
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

/// The hidden layers and activation of `c`, for an MLP from `in` to `out` features.
inline rl::modules::MLP make_mlp(const Config& c, int64_t in, int64_t out, at::Generator& init) {
  return rl::modules::MLP(rl::modules::MLPOptions(in, out)
                              .num_cells(c.num_cells)
                              .activation(rl::modules::activation_from_string(c.activation))
                              .generator(init));
}

/// One PPO run on `Task`: environments, actor and critic, ClipPPOLoss with GAE, the collector,
/// and rlobj's trainer with its hooks (returns, reward scaling, GAE, minibatch epochs, annealing)
/// and checkpoint records.
template <typename Task>
struct Run {
  using Env = typename Task::Env;
  using Loss = rl::objectives::ClipPPOLoss<rl::modules::ProbabilisticActor, rl::modules::ValueOperator>;

  explicit Run(const Config& c)
      : device(c.device),
        env(Task::make_env(c, c.num_envs, c.seed)),
        eval_env(Task::make_env(c, c.eval_episodes, c.eval_seed())),
        minibatches(rl::data::MiniBatchesOptions(c.mini_batch_size).seed(c.seed + 17)),
        returns(rl::trainers::ReturnTrackerOptions().dtype(torch::kFloat64)),
        losses({"loss_objective", "loss_critic", "entropy", "clip_fraction"}) {
    // The networks' initial weights come from a generator of the run's own; the actor's samples
    // come from LibTorch's default generator, as in TorchRL: seeded here, saved with checkpoints.
    auto init = at::make_generator<at::CPUGeneratorImpl>(c.seed);
    torch::manual_seed(c.seed + 43);
    actor = Task::make_actor(env, c, init);
    // The critic second: its weights are the generator's next draws.
    const int64_t n_obs = env.observation_spec().at("observation").shape().back();
    auto critic_mlp = make_mlp(c, n_obs, 1, init);
    if (c.orthogonal_init) orthogonal_init(critic_mlp, std::sqrt(2.0), 1.0, init);
    critic = rl::modules::ValueOperator(critic_mlp, /*in_keys=*/{"observation"});
    actor->to(device);
    critic->to(device);

    loss = Loss(actor, critic,
                rl::objectives::PPOLossOptions()
                    .clip_epsilon(c.clip_epsilon)
                    .entropy_bonus(c.entropy_coef != 0)
                    .entropy_coef(c.entropy_coef)
                    .critic_coef(c.critic_coef)
                    .loss_critic_type(rl::objectives::loss_function_from_string(c.loss_critic_type))
                    .normalize_advantage(c.normalize_advantage));
    loss->make_value_estimator(rl::objectives::ValueEstimators::GAE,
                               rl::objectives::value::ValueEstimatorOptions().gamma(c.gamma).lmbda(c.gae_lambda));
    optim = std::make_shared<torch::optim::Adam>(loss->parameters(), torch::optim::AdamOptions(c.lr).eps(1e-5));
    auto update = std::make_shared<rl::trainers::LossUpdate<Loss>>(
        loss, optim, nullptr,
        rl::trainers::LossUpdateOptions()
            .loss_keys({"loss_objective", "loss_critic", "loss_entropy"})
            .max_grad_norm(c.max_grad_norm));

    auto policy = actor;
    auto collector = std::make_shared<rl::collectors::SyncDataCollector>(
        env,
        [policy, c](rl::TensorDict& td) mutable {
          policy(td);
          Task::to_env_action(td, c);
        },
        c.frames_per_batch, c.total_frames);
    const int64_t per_epoch = minibatches.num_batches(c.frames_per_batch);
    trainer = std::make_unique<rl::trainers::Trainer>(
        collector, [update](const rl::TensorDict& b) { return (*update)(b); },
        rl::trainers::TrainerOptions().optim_steps_per_batch(c.num_epochs * per_epoch));
    auto& records = trainer->records();
    records.set_kind(std::string("rlobj.examples.") + Task::kProgram);
    records.set_fingerprint(c.fingerprint());

    using rl::trainers::Stage;
    using rl::trainers::StepContext;
    returns.register_with(*trainer);  // the unscaled rewards
    trainer->register_op(Stage::BatchProcess, [this, c](StepContext& s) {
      if (c.reward_scale != 1.0) s.batch.set({"next", "reward"}, s.batch.get({"next", "reward"}) * c.reward_scale);
      {
        // GAE once per batch, with the critic as it is now (TorchRL's value estimator runs it without
        // gradient): writes advantage, value_target and state_value.
        torch::NoGradGuard no_grad;
        loss->value_estimator().forward(s.batch);
      }
      s.batch = s.batch.select(train_keys()).reshape({-1});  // [N*T]
    });
    rl::trainers::MiniBatchHook(minibatches, c.num_epochs).register_with(*trainer);
    // TorchRL's PPO examples: alpha = 1 - updates / total_updates, before each update.
    const int64_t total_batches = (c.total_frames + c.frames_per_batch - 1) / c.frames_per_batch;
    const int64_t total_updates = total_batches * c.num_epochs * per_epoch;
    trainer->register_op(Stage::ProcessOptimBatch, [this, c, total_updates](StepContext&) {
      const double alpha =
          std::max(0.0, 1.0 - static_cast<double>(trainer->updates()) / static_cast<double>(total_updates));
      if (c.anneal_lr) {
        for (auto& group : optim->param_groups()) {
          static_cast<torch::optim::AdamOptions&>(group.options()).lr(c.lr * alpha);
        }
      }
      if (c.anneal_clip_epsilon) clip_epsilon_buffer().fill_(c.clip_epsilon * alpha);
    });
    losses.register_with(*trainer);
    records.add(
        "loss", [this](torch::serialize::OutputArchive& a) { loss->save(a); },
        [this](torch::serialize::InputArchive& a) { loss->load(a); });
    update->register_records(records);
    rl::trainers::add_generator_record(records, device);
  }

  /// The entries the loss reads once the advantage is in the batch.
  std::vector<rl::NestedKey> train_keys() const {
    std::vector<rl::NestedKey> keys = {"action", "sample_log_prob", "advantage", "value_target", "state_value"};
    auto add = [&keys](const rl::NestedKey& k) {
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    };
    for (const auto& k : actor->in_keys()) add(k);
    for (const auto& k : critic->in_keys()) add(k);
    return keys;
  }

  /// The learning rate of the last update.
  double lr() const { return static_cast<const torch::optim::AdamOptions&>(optim->param_groups()[0].options()).lr(); }

  torch::Tensor clip_epsilon_buffer() {
    for (auto& b : loss->named_buffers()) {
      if (b.key() == "clip_epsilon") return b.value();
    }
    TORCH_CHECK(false, Task::kProgram, ": the loss has no clip_epsilon buffer");
  }

  torch::Device device;
  Env env, eval_env;
  rl::data::MiniBatches minibatches;
  rl::modules::ProbabilisticActor actor{nullptr};
  rl::modules::ValueOperator critic{nullptr};
  Loss loss{nullptr};
  std::shared_ptr<torch::optim::Adam> optim;
  rl::trainers::ReturnTracker returns;
  rl::trainers::LossTracker losses;
  std::unique_ptr<rl::trainers::Trainer> trainer;
};

/// A true/false flag whose --help shows its default as true or false (CLI11 would print 1 or 0).
inline CLI::Option* add_bool(CLI::App& app, const std::string& name, bool& value, const std::string& description) {
  return app.add_option(name, value, description + " (true/false)")->default_str(value ? "true" : "false");
}

/// Rules between flags, checked after parsing, each naming the flag to change.
inline void check_consistency(const Config& c) {
  ex::check_num_cells(c);
  if (c.frames_per_batch % c.num_envs != 0) {
    throw CLI::ValidationError(
        "--frames-per-batch", fmt::format("{} is not a multiple of --num-envs {}: every environment steps the same "
                                          "number of times per batch",
                                          c.frames_per_batch, c.num_envs));
  }
  if (c.frames_per_batch % c.mini_batch_size != 0) {
    throw CLI::ValidationError(
        "--mini-batch-size", fmt::format("{} does not divide --frames-per-batch {}: each epoch visits every "
                                         "transition once, in minibatches of one size",
                                         c.mini_batch_size, c.frames_per_batch));
  }
  if (c.total_frames < c.frames_per_batch) {
    throw CLI::ValidationError(
        "--total-frames", fmt::format("{} is less than one batch (--frames-per-batch {})", c.total_frames,
                                      c.frames_per_batch));
  }
}

/// The whole program for `Task`: flags, the run, its report.
template <typename Task>
int run(int argc, char** argv) {
  Config cfg = Task::defaults();
  ex::RunFlags flags;
  CLI::App app{fmt::format("Train PPO on {} with rlobj (TorchRL's objectives for LibTorch).", Task::kEnvName)};
  ex::add_common_flags(app, Task::kProgram, cfg, flags, "networks, environments, sampling, minibatches",
                       "Environments stepped together by the collector");
  ex::add_int(app, "--frames-per-batch", cfg.frames_per_batch,
              "Transitions per collector batch (a multiple of --num-envs), >= 1", 1);
  ex::add_int(app, "--mini-batch-size", cfg.mini_batch_size, "Transitions per gradient step (divides --frames-per-batch)",
              1);
  ex::add_int(app, "--num-epochs", cfg.num_epochs, "Passes over each batch (TorchRL: ppo_epochs), >= 1", 1);
  ex::add_real(app, "--lr", cfg.lr, "Adam learning rate of actor and critic, > 0", ex::positive());
  add_bool(app, "--anneal-lr", cfg.anneal_lr, "Anneal the learning rate linearly to 0");
  ex::add_real(app, "--max-grad-norm", cfg.max_grad_norm, "Clip the gradient norm to this (0: no clipping), >= 0",
               ex::non_negative());
  ex::add_real(app, "--gae-lambda", cfg.gae_lambda, "GAE's lambda, in (0, 1]", ex::unit_interval());
  ex::add_real(app, "--clip-epsilon", cfg.clip_epsilon, "PPO's ratio clip, in (0, 1)",
               ex::real([](double v) { return v > 0 && v < 1; }, "in (0, 1)"));
  add_bool(app, "--anneal-clip-epsilon", cfg.anneal_clip_epsilon,
           "Anneal --clip-epsilon linearly to 0 as the learning rate");
  ex::add_real(app, "--critic-coef", cfg.critic_coef, "Weight of the critic's loss, >= 0", ex::non_negative());
  ex::add_real(app, "--entropy-coef", cfg.entropy_coef, "Weight of the entropy bonus (0: none), >= 0",
               ex::non_negative());
  app.add_option("--loss-critic-type", cfg.loss_critic_type, "Critic loss: l2, l1 or smooth_l1")
      ->capture_default_str()
      ->check(CLI::IsMember({"l2", "l1", "smooth_l1"}));
  add_bool(app, "--normalize-advantage", cfg.normalize_advantage, "Standardise the advantage in each minibatch");
  ex::add_real(app, "--reward-scale", cfg.reward_scale, "Rewards are multiplied by this before GAE, > 0",
               ex::positive());
  add_bool(app, "--orthogonal-init", cfg.orthogonal_init,
           "Orthogonal initial weights (PPO's usual init) instead of LibTorch's default");
  if constexpr (Task::kDiscrete) {
    add_bool(app, "--categorical-actions", cfg.categorical_actions,
             "Actions as int64 indices (Categorical) instead of one-hot vectors (OneHotCategorical)");
  }
  try {
    app.parse(argc, argv);
    check_consistency(cfg);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg.seed = static_cast<uint64_t>(flags.seed);

  const auto t0 = ex::Clock::now();
  Run<Task> r(cfg);
  ex::resume_if_asked(*r.trainer, flags);
  if (!flags.quiet) {
    fmt::print("PPO on {}: seed {}, {} frames, {} env(s), {} frames per batch, minibatch {}, {} epochs, cells [{}], "
               "{}, device {}\n",
               Task::kEnvName, cfg.seed, cfg.total_frames, cfg.num_envs, cfg.frames_per_batch, cfg.mini_batch_size,
               cfg.num_epochs, fmt::join(cfg.num_cells, ", "), cfg.activation, cfg.device);
  }
  rl::trainers::Evaluator evaluate(r.eval_env, r.actor,
                                   rl::trainers::EvaluatorOptions().max_steps(Task::kMaxEpisodeSteps).seed(cfg.eval_seed()));
  ex::Report report;
  report.program = Task::kProgram;
  report.total_frames = cfg.total_frames;
  report.eval_every = cfg.eval_every;
  report.evaluate = [&] { return evaluate(); };
  report.recent_return = [&] { return r.returns.recent_return(); };
  const auto last = [&r](const char* key) { return r.losses.last(key); };
  report.columns = {{"loss_objective", [last] { return fmt::format("{:.6f}", last("loss_objective")); }},
                    {"loss_critic", [last] { return fmt::format("{:.6f}", last("loss_critic")); }},
                    {"entropy", [last] { return fmt::format("{:.6f}", last("entropy")); }},
                    {"clip_fraction", [last] { return fmt::format("{:.6f}", last("clip_fraction")); }},
                    {"lr", [&r] { return fmt::format("{:.6g}", r.lr()); }}};
  report.progress = [&r, last] {
    return fmt::format("loss objective {:>7.4f} critic {:>7.4f} | lr {:.2e}", last("loss_objective"),
                       last("loss_critic"), r.lr());
  };
  report.evaluation = fmt::format("mean of {} deterministic episodes of up to {} steps", cfg.eval_episodes,
                                  Task::kMaxEpisodeSteps);
  return ex::train_and_report(*r.trainer, report, cfg, flags, t0);
}

/// The program's entry point.
template <typename Task>
int main(int argc, char** argv) {
  return ex::guarded_main(Task::kProgram, [&] { return run<Task>(argc, argv); });
}

}  // namespace ppo
