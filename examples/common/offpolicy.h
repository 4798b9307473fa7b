#pragma once

// ddpg_pendulum, td3_pendulum and sac_pendulum: an actor and a critic on gym's Pendulum-v1,
// collected by a SyncDataCollector, replayed from a ReplayBuffer, trained by the algorithm's loss
// with Adam and a SoftUpdate, on rlobj's library trainer (rlobj::trainers). What differs between
// the three is an `Algo` struct: the networks (a deterministic actor squashed into the action
// bounds with Gaussian exploration noise, or SAC's TanhNormal actor), the loss and its options,
// and the defaults. Each example's main.cpp is `return offpolicy::main<offpolicy::TD3>(argc, argv);`.
//
//   td3_pendulum --seed 0 --total-frames 20000 --log-csv returns.csv
//   td3_pendulum --help
//
// --collectors N runs it on N+1 processes (examples/common/distributed.h; needs rlobj::distributed).

#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <rlobj/rlobj.h>

#include "common/app.h"
#include "common/cli.h"
#if RLOBJ_EXAMPLES_MUJOCO
#include <rlobj/envs/mujoco.h>
#endif

namespace offpolicy {

namespace rl = rlobj;
namespace ex = rlobj_examples;

/// Hyper-parameters (the command-line flags). Each algorithm's `defaults()` sets its own;
/// `policy_*`/`noise_clip` are TD3's, `alpha_*` SAC's, `noise_std` DDPG's and TD3's.
struct Config : ex::CommonConfig {
  int64_t batch_size = 256;
  double lr_actor = 3e-4;
  double lr_critic = 1e-3;
  double tau = 0.005;
  int64_t init_random_frames = 1000;
  int64_t buffer_size = 100000;
  double noise_std = 0.1;            ///< exploration noise (DDPG, TD3)
  int64_t policy_delay = 1;          ///< actor and targets updated every N-th update (TD3: 2)
  double policy_noise = 0.2;         ///< TD3's target policy smoothing noise
  double noise_clip = 0.5;           ///< ... clipped to +-noise_clip
  std::string loss_function = "l2";  ///< critic distance: l2, l1 or smooth_l1 (l2: TorchRL's examples)
  double alpha_init = 1.0;           ///< SAC's initial temperature
  double lr_alpha = 3e-4;            ///< SAC's temperature learning rate
  std::string update_engine = "auto";  ///< auto, fused or op-by-op (not part of the fingerprint: same numbers)
  std::string env = "pendulum";        ///< the task: pendulum, or (built with MuJoCo) halfcheetah, hopper, walker2d, ant

  Config() { num_cells = {32, 32}; }

  /// What a checkpoint must agree on to be resumed: the shapes, and every setting a resumed run
  /// would otherwise silently change (the optimizers' state restores their learning rates; the
  /// seed picks the evaluation states). `total_frames`, `eval_every` and the batch size may change.
  std::string fingerprint() const {
    return fmt::format(
        "{} buffer_size={} lr_actor={} lr_critic={} tau={} loss_function={} noise_std={} policy_delay={} "
        "policy_noise={} noise_clip={} alpha_init={} lr_alpha={}",
        common_fingerprint(), buffer_size, lr_actor, lr_critic, tau, loss_function, noise_std, policy_delay,
        policy_noise, noise_clip, alpha_init, lr_alpha) +
        (env == "pendulum" ? std::string() : " env=" + env);  // Pendulum's checkpoints predate the choice
  }

  /// The settings a checkpoint was made with, from its `fingerprint()`, on top of `base` (an
  /// algorithm's `defaults()`). Throws on anything it does not read back exactly.
  static Config from_fingerprint(const std::string& fingerprint, Config c) {
    const auto i64 = [](const std::string& v) { return static_cast<int64_t>(std::stoll(v)); };
    const std::map<std::string, std::function<void(const std::string&)>> fields = {
        {"seed", [&](const std::string& v) { c.seed = std::stoull(v); }},
        {"num_envs", [&](const std::string& v) { c.num_envs = i64(v); }},
        {"num_cells",
         [&](const std::string& v) {
           c.num_cells.clear();
           std::istringstream cells(v);
           for (std::string n; std::getline(cells, n, ',');) c.num_cells.push_back(i64(n));
         }},
        {"activation", [&](const std::string& v) { c.activation = v; }},
        {"gamma", [&](const std::string& v) { c.gamma = std::stod(v); }},
        {"eval_episodes", [&](const std::string& v) { c.eval_episodes = i64(v); }},
        {"device", [&](const std::string& v) { c.device = v; }},
        {"buffer_size", [&](const std::string& v) { c.buffer_size = i64(v); }},
        {"lr_actor", [&](const std::string& v) { c.lr_actor = std::stod(v); }},
        {"lr_critic", [&](const std::string& v) { c.lr_critic = std::stod(v); }},
        {"tau", [&](const std::string& v) { c.tau = std::stod(v); }},
        {"loss_function", [&](const std::string& v) { c.loss_function = v; }},
        {"noise_std", [&](const std::string& v) { c.noise_std = std::stod(v); }},
        {"policy_delay", [&](const std::string& v) { c.policy_delay = i64(v); }},
        {"policy_noise", [&](const std::string& v) { c.policy_noise = std::stod(v); }},
        {"noise_clip", [&](const std::string& v) { c.noise_clip = std::stod(v); }},
        {"alpha_init", [&](const std::string& v) { c.alpha_init = std::stod(v); }},
        {"lr_alpha", [&](const std::string& v) { c.lr_alpha = std::stod(v); }},
        {"env", [&](const std::string& v) { c.env = v; }}};
    std::istringstream words(fingerprint);
    for (std::string word; words >> word;) {
      try {
        const auto eq = word.find('=');
        TORCH_CHECK(eq != std::string::npos, "checkpoint settings: \"", word, "\" is not key=value");
        const auto field = fields.find(word.substr(0, eq));
        TORCH_CHECK(field != fields.end(), "checkpoint settings: unknown key \"", word.substr(0, eq), "\"");
        field->second(word.substr(eq + 1));
      } catch (const std::logic_error& e) {  // std::stoll and friends on a malformed number
        TORCH_CHECK(false, "checkpoint settings: cannot read \"", word, "\" (", e.what(), ")");
      }
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
  static constexpr bool kCriticFirst = false;
  using Actor = rl::modules::TensorDictSequential;
  using Loss = rl::objectives::DDPGLoss<Actor, rl::modules::ValueOperator>;
  static Config defaults() { return {}; }
  static Loss make_loss(Actor actor, rl::modules::ValueOperator critic, const rl::TensorSpec&, const Config& c) {
    return Loss(std::move(actor), std::move(critic),
                rl::objectives::DDPGLossOptions().loss_function(rl::objectives::loss_function_from_string(c.loss_function)));
  }
};

/// TD3: DDPG's networks, twin critics, target policy smoothing, the actor and the targets
/// updated every `policy_delay` (2) updates; TorchRL's TD3 example steps the critic first.
struct TD3 {
  static constexpr const char* kName = "TD3";
  static constexpr const char* kProgram = "td3_pendulum";
  static constexpr const char* kCritic = "qvalue_network";
  static constexpr const char* kCriticLoss = "loss_qvalue";
  static constexpr bool kStochastic = false;
  static constexpr bool kCriticFirst = true;
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
  static constexpr bool kCriticFirst = false;
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

/// SAC on HalfCheetah-v5 with TorchRL's and CleanRL's MuJoCo settings: 256-256 ReLU networks,
/// batch 256, learning rates 3e-4, a learned temperature from 1, 5,000 random frames, a buffer of
/// 1M transitions, 100k frames; the scale floored at 0.1 and the location squashed as in
/// `sac_pendulum`. `--env` picks another MuJoCo task.
struct SACMujoco : SAC {
  static constexpr const char* kProgram = "sac_halfcheetah";
  static Config defaults() {
    Config c = SAC::defaults();
    c.env = "halfcheetah";
    c.num_cells = {256, 256};
    c.activation = "relu";
    c.batch_size = 256;
    c.lr_actor = c.lr_critic = c.lr_alpha = 3e-4;
    c.alpha_init = 1.0;
    c.init_random_frames = 5000;
    c.buffer_size = 1000000;
    c.total_frames = 100000;
    c.eval_every = 10000;
    c.eval_episodes = 5;
    return c;
  }
};

/// The name of a task in gymnasium's terms.
inline std::string task_name(const std::string& env) {
  if (env == "pendulum") return "Pendulum-v1";
  if (env == "halfcheetah") return "HalfCheetah-v5";
  if (env == "hopper") return "Hopper-v5";
  if (env == "walker2d") return "Walker2d-v5";
  if (env == "ant") return "Ant-v5";
  return env;
}

/// The tasks `--env` offers in this build.
inline std::vector<std::string> tasks() {
#if RLOBJ_EXAMPLES_MUJOCO
  return {"pendulum", "halfcheetah", "hopper", "walker2d", "ant"};
#else
  return {"pendulum"};
#endif
}

/// Steps of one episode of the task (its TimeLimit): an evaluation episode's length.
inline int64_t episode_steps(const Config& c) { return c.env == "pendulum" ? 200 : 1000; }

/// `copies` environments of the task `c.env`, seeded with `seed`. The MuJoCo tasks give float32
/// observations and rewards (the networks' dtype) and run on the CPU.
inline std::unique_ptr<rl::envs::EnvBase> make_env(const Config& c, int64_t copies, uint64_t seed,
                                                   torch::Device device) {
  if (c.env == "pendulum") {
    return std::make_unique<rl::envs::Pendulum>(
        rl::envs::PendulumOptions().batch_size({copies}).seed(seed).device(device));
  }
#if RLOBJ_EXAMPLES_MUJOCO
  namespace mj = rl::envs::mujoco;
  TORCH_CHECK_VALUE(device.is_cpu(), "--env ", c.env, ": the MuJoCo tasks run on the CPU, got --device ", c.device);
  const auto common = mj::MujocoOptions().batch_size({copies}).seed(seed).dtype(torch::kFloat32);
  if (c.env == "halfcheetah") return std::make_unique<mj::HalfCheetah>(mj::HalfCheetahOptions(), common);
  if (c.env == "hopper") return std::make_unique<mj::Hopper>(mj::HopperOptions(), common);
  if (c.env == "walker2d") return std::make_unique<mj::Walker2d>(mj::Walker2dOptions(), common);
  if (c.env == "ant") return std::make_unique<mj::Ant>(mj::AntOptions(), common);
#endif
  TORCH_CHECK_VALUE(false, "--env ", c.env, " is not a task of this build (", fmt::format("{}", fmt::join(tasks(), ", ")),
                    ")");
}

/// Keys the loss reads: only these go into the replay buffer.
inline std::vector<rl::NestedKey> transition_keys() {
  return {"observation", "action", {"next", "observation"}, {"next", "reward"}, {"next", "done"},
          {"next", "terminated"}};
}

/// Where a run's batches come from: this process's own Pendulums, or (a distributed learner)
/// the collector processes (`collector`: how many rows each round brings).
struct Collection {
  std::shared_ptr<rl::collectors::DataCollectorBase> remote;
  int64_t rows_per_round = 0;
};

/// One run of `Algo` on its task (`Config::env`): the environments, the networks, the loss and its update, the
/// collector and replay buffer, and rlobj's trainer with its hooks and checkpoint records.
template <typename Algo>
struct Run {
  using ActorNet = typename Algo::Actor;
  using Loss = typename Algo::Loss;

  explicit Run(const Config& c, const Collection& collection = {})
      : device(c.device),
        env(make_env(c, c.num_envs, c.seed, device)),
        eval_env(make_env(c, c.eval_episodes, c.eval_seed(), device)),
        rb(rl::data::ReplayBufferOptions(c.buffer_size).seed(c.seed + 17)),
        returns(rl::trainers::ReturnTrackerOptions().restore_running(collection.remote == nullptr)),
        losses({"loss_actor", Algo::kCriticLoss}) {
    // The networks' initial weights come from a generator of the run's own (the same draws
    // torch::manual_seed(seed) would give): they do not depend on what other threads draw.
    auto init = at::make_generator<at::CPUGeneratorImpl>(c.seed);
    // TD3's smoothing noise, SAC's samples and the ensembles' redrawn copies come from LibTorch's
    // default generator, as in TorchRL: seeded here, saved with checkpoints. (DDPG draws nothing
    // from it, so DDPG runs in parallel threads do not disturb each other.)
    if (!std::is_same<Algo, DDPG>::value) torch::manual_seed(c.seed + 43);
    const auto act = rl::modules::activation_from_string(c.activation);
    const int64_t n_obs = env->observation_spec().at("observation").shape().back();
    const int64_t n_act = env->action_spec().shape().back();
    if constexpr (Algo::kStochastic) {
      // Actor: MLP -> (loc, scale) -> TanhNormal within the action bounds; it explores by sampling.
      auto actor_mlp = rl::modules::MLP(
          rl::modules::MLPOptions(n_obs, 2 * n_act).num_cells(c.num_cells).activation(act).generator(init));
      // The scale floored at 0.1 (TorchRL's SAC example) and the location squashed into
      // (-5, 5) (tanh_loc; TorchRL's example leaves it off): a location far past tanh's range,
      // or a collapsing scale, with saturated samples gives hugely negative re-inverted
      // log-probabilities, and the soft targets explode (seeds 2 and 3 diverged without it).
      actor = ActorNet(
          rl::modules::TensorDictSequential(
              rl::modules::TensorDictModule(actor_mlp, {"observation"}, {"param"}),
              rl::modules::TensorDictModule(
                  rl::modules::NormalParamExtractor(rl::modules::NormalParamExtractorOptions().scale_lb(0.1)),
                  {"param"}, {"loc", "scale"})),
          rl::modules::TanhNormal::factory(rl::modules::TanhNormalOptions::from_spec(env->action_spec()).tanh_loc(true)));
    } else {
      // Actor: MLP -> "param", squashed into the action bounds by a TanhModule.
      auto actor_mlp = rl::modules::MLP(
          rl::modules::MLPOptions(n_obs, n_act).num_cells(c.num_cells).activation(act).generator(init));
      actor = ActorNet(rl::modules::TensorDictModule(actor_mlp, {"observation"}, {"param"}),
                       rl::modules::TanhModule({"param"}, {"action"}, env->action_spec()));
    }
    // The critic second: its weights are the generator's next draws.
    critic = rl::modules::ValueOperator(
        rl::modules::MLP(
            rl::modules::MLPOptions(n_obs + n_act, 1).num_cells(c.num_cells).activation(act).generator(init)),
        /*in_keys=*/{"observation", "action"});
    actor->to(device);
    critic->to(device);

    loss = Algo::make_loss(actor, critic, env->action_spec(), c);
    loss->make_value_estimator(rl::objectives::ValueEstimators::TD0,
                               rl::objectives::value::ValueEstimatorOptions().gamma(c.gamma));
    auto adam = [](std::vector<torch::Tensor> params, double lr) {
      return std::make_shared<torch::optim::Adam>(std::move(params), torch::optim::AdamOptions(lr));
    };
    std::shared_ptr<torch::optim::Optimizer> optim_alpha;
    if constexpr (Algo::kStochastic) optim_alpha = adam(loss->parameters_of("log_alpha"), c.lr_alpha);
    update = std::make_shared<rl::trainers::ActorCriticUpdate<Loss>>(
        loss, Algo::kCriticLoss, adam(loss->parameters_of("actor_network"), c.lr_actor),
        adam(loss->parameters_of(Algo::kCritic), c.lr_critic), optim_alpha,
        std::make_shared<rl::objectives::SoftUpdate>(loss, rl::objectives::SoftUpdateOptions().tau(c.tau)),
        rl::trainers::ActorCriticUpdateOptions()
            .policy_delay(c.policy_delay)
            .critic_first(Algo::kCriticFirst)
            .engine(c.update_engine == "fused"      ? rl::trainers::UpdateEngine::Fused
                    : c.update_engine == "op-by-op" ? rl::trainers::UpdateEngine::OpByOp
                                                    : rl::trainers::UpdateEngine::Auto));

    rl::modules::TensorDictSequential policy(nullptr);
    if constexpr (Algo::kStochastic) {
      policy = rl::modules::TensorDictSequential(actor);  // the collector acts under ExplorationType::Random: the actor samples
    } else {
      // Exploration: constant Gaussian noise on top of the actor (TorchRL's DDPG/TD3 examples).
      noise = rl::modules::AdditiveGaussianModule(env->action_spec(), rl::modules::AdditiveGaussianModuleOptions()
                                                                          .sigma_init(1.0)
                                                                          .sigma_end(1.0)
                                                                          .std(c.noise_std)
                                                                          .seed(c.seed + 29));
      policy = rl::modules::TensorDictSequential(actor, noise);
    }
    local = std::make_shared<rl::collectors::SyncDataCollector>(*env, policy, /*frames_per_batch=*/c.num_envs,
                                                                c.total_frames, c.init_random_frames);

    // One update per frame collected.
    const int64_t rows = collection.remote ? collection.rows_per_round : c.num_envs;
    trainer = std::make_unique<rl::trainers::Trainer>(
        collection.remote ? collection.remote : local, [u = update](const rl::TensorDict& b) { return (*u)(b); },
        rl::trainers::TrainerOptions().optim_steps_per_batch(rows).init_random_frames(c.init_random_frames));
    auto& records = trainer->records();
    // A distributed learner's checkpoints have their own kind: a one-process run cannot resume
    // one, nor the reverse.
    records.set_kind(std::string("rlobj.examples.") + Algo::kProgram + (collection.remote ? ".collectors" : ""));
    records.set_fingerprint(c.fingerprint());
    returns.register_with(*trainer);
    rl::trainers::ReplayBufferHook(rb, c.batch_size, transition_keys(), device).register_with(*trainer);
    losses.register_with(*trainer);
    records.add(
        "loss", [this](torch::serialize::OutputArchive& a) { loss->save(a); },
        [this](torch::serialize::InputArchive& a) { loss->load(a); });
    update->register_records(records);
    if (!noise.is_empty()) {
      records.add(
          "noise", [this](torch::serialize::OutputArchive& a) { noise->save(a); },
          [this](torch::serialize::InputArchive& a) { noise->load(a); });
    }
    // On an accelerator, TD3's noise and SAC's samples come from the device's default generator.
    rl::trainers::add_generator_record(records, device);
  }

  /// The policy's weights (the actor network's flat parameters), as pushed to collectors.
  std::vector<torch::Tensor> policy_parameters() const { return loss->parameters_of("actor_network"); }

  torch::Device device;
  std::unique_ptr<rl::envs::EnvBase> env, eval_env;
  rl::data::ReplayBuffer rb;
  ActorNet actor{nullptr};
  rl::modules::ValueOperator critic{nullptr};
  Loss loss{nullptr};
  std::shared_ptr<rl::trainers::ActorCriticUpdate<Loss>> update;
  rl::modules::AdditiveGaussianModule noise{nullptr};
  std::shared_ptr<rl::collectors::SyncDataCollector> local;
  rl::trainers::ReturnTracker returns;
  rl::trainers::LossTracker losses;
  std::unique_ptr<rl::trainers::Trainer> trainer;
};

/// Rules between flags, checked after parsing: a run that can never do a gradient update is an error.
inline void check_consistency(const Config& c) {
  ex::check_num_cells(c);
  if (c.buffer_size < c.batch_size) {
    throw CLI::ValidationError(
        "--buffer-size", fmt::format("{} is smaller than --batch-size {}: the replay buffer could never hold a batch, "
                                     "so no gradient update would happen",
                                     c.buffer_size, c.batch_size));
  }
  // Frames come num_envs at a time until total_frames are reached (the last step may overshoot); the
  // updates start at the first step with init_random_frames frames collected and batch_size transitions
  // in the buffer.
  const int64_t first_update = std::max(c.init_random_frames, c.batch_size);
  const auto steps = [&](int64_t frames) { return frames / c.num_envs + (frames % c.num_envs != 0 ? 1 : 0); };
  if (steps(c.total_frames) < steps(first_update)) {
    throw CLI::ValidationError(
        "--total-frames",
        fmt::format("{} frames are too few: no gradient update would happen, as updates start at frame {} (the larger "
                    "of --init-random-frames {} and --batch-size {})",
                    c.total_frames, first_update, c.init_random_frames, c.batch_size));
  }
}

/// The value of `--preset` in `argv`, if given (read before the flags are declared, so that the
/// preset's values become the flags' defaults, and explicit flags still override them).
inline std::string preset_in(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--preset" && i + 1 < argc) return argv[i + 1];
    if (arg.rfind("--preset=", 0) == 0) return arg.substr(9);
  }
  return {};
}

/// The algorithm's flags on top of the shared ones.
template <typename Algo>
void add_flags(CLI::App& app, Config& c, std::string& preset) {
  ex::add_int(app, "--batch-size", c.batch_size, "Transitions per gradient step, >= 1", 1);
  ex::add_real(app, "--lr-actor", c.lr_actor, "Adam learning rate of the actor, > 0", ex::positive());
  ex::add_real(app, "--lr-critic", c.lr_critic, "Adam learning rate of the critic, > 0", ex::positive());
  ex::add_real(app, "--tau", c.tau, "Soft target update weight (SoftUpdate tau = 1 - eps), in (0, 1]",
               ex::unit_interval());
  ex::add_int(app, "--init-random-frames", c.init_random_frames, "Random-action frames before learning starts, >= 0",
              0);
  app.add_option("--buffer-size", c.buffer_size, "Replay buffer capacity, >= --batch-size")
      ->capture_default_str()
      ->transform(ex::int_within_memory(1, 64, "transitions"));
  app.add_option("--loss-function", c.loss_function, "Critic loss: l2, l1 or smooth_l1")
      ->capture_default_str()
      ->check(CLI::IsMember({"l2", "l1", "smooth_l1"}));
  app.add_option("--update-engine", c.update_engine,
                 "auto: the fused update engine where it applies (DDPG, TD3), else op by op; fused: fail where it "
                 "does not; op-by-op: loss, backward, optimiser and updater steps")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fused", "op-by-op"}));
  if constexpr (!Algo::kStochastic) {
    ex::add_real(app, "--noise-std", c.noise_std, "Std of the Gaussian exploration noise, >= 0", ex::non_negative());
  }
  if constexpr (std::is_same<Algo, TD3>::value) {
    ex::add_int(app, "--policy-delay", c.policy_delay, "Update the actor and the targets every N-th update, >= 1", 1);
    ex::add_real(app, "--policy-noise", c.policy_noise, "Std of the target policy smoothing noise, >= 0",
                 ex::non_negative());
    ex::add_real(app, "--noise-clip", c.noise_clip, "The smoothing noise is clipped to +-this, >= 0",
                 ex::non_negative());
    app.add_option("--preset", preset,
                   "rltools: RLtools' TD3 Pendulum configuration (64-64 ReLU, batch 100, lr 1e-3, 100 warm-up frames, "
                   "buffer 10k, 10k frames); other flags still override it")
        ->check(CLI::IsMember({"rltools"}));
  } else {
    (void)preset;
  }
#if RLOBJ_EXAMPLES_MUJOCO
  app.add_option("--env", c.env, "The task: " + fmt::format("{}", fmt::join(tasks(), ", ")))
      ->capture_default_str()
      ->check(CLI::IsMember(tasks()));
#endif
  if constexpr (std::is_base_of<SAC, Algo>::value) {
    ex::add_real(app, "--alpha-init", c.alpha_init, "Initial temperature alpha, > 0", ex::positive());
    ex::add_real(app, "--lr-alpha", c.lr_alpha, "Adam learning rate of log(alpha), > 0", ex::positive());
  }
}

/// How the run is reported (CSV columns, progress line, summary).
template <typename Algo>
ex::Report report_of(Run<Algo>& r, const Config& c) {
  rl::trainers::Evaluator evaluate(*r.eval_env, r.actor,
                                   rl::trainers::EvaluatorOptions()
                                       .max_steps(episode_steps(c))
                                       .seed(c.eval_seed())
                                       .dtype(torch::kFloat32));  // the returns summed as the rewards are
  ex::Report report;
  report.program = Algo::kProgram;
  report.total_frames = c.total_frames;
  report.eval_every = c.eval_every;
  report.evaluate = [evaluate]() mutable { return evaluate(); };
  report.recent_return = [&r] { return r.returns.recent_return(); };
  const auto last = [&r](const char* key) { return r.losses.last(key); };
  report.columns = {{"loss_actor", [last] { return fmt::format("{:.6f}", last("loss_actor")); }},
                    {"loss_value", [last] { return fmt::format("{:.6f}", last(Algo::kCriticLoss)); }}};
  report.progress = [last] {
    return fmt::format("loss actor {:>7.3f} value {:>7.4f}", last("loss_actor"), last(Algo::kCriticLoss));
  };
  report.evaluation = fmt::format("mean of {} deterministic episodes of {} steps", c.eval_episodes, episode_steps(c));
  return report;
}

}  // namespace offpolicy
