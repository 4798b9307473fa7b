// dqn_cartpole: DQN on gymnasium's CartPole-v1, as TorchRL's DQN CartPole example
// (sota-implementations/dqn/dqn_cartpole.py) writes it: a QValueActor over an MLP, an
// EGreedyModule annealed by collected frames, SyncDataCollector -> ReplayBuffer -> DQNLoss ->
// Adam -> HardUpdate, on rlobj's library trainer. Its default flags solve CartPole-v1 (a greedy
// evaluation return >= 475 over 10 episodes) on seeds 0, 1 and 2.
//
//   dqn_cartpole --seed 0 --log-csv returns.csv
//   dqn_cartpole --help

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <rlobj/rlobj.h>

#include "common/app.h"
#include "common/cli.h"

namespace {

namespace rl = rlobj;
namespace ex = rlobj_examples;

constexpr const char* kProgram = "dqn_cartpole";
constexpr int64_t kMaxEpisodeSteps = 500;  // CartPole-v1's TimeLimit

/// Hyper-parameters (the command-line flags). TorchRL's config_cartpole.yaml where it solves
/// reliably; the changes are commented.
struct Config : ex::CommonConfig {
  int64_t frames_per_batch = 10;
  int64_t num_updates = 1;  ///< gradient steps per collector batch
  int64_t batch_size = 128;
  double lr = 2.5e-4;
  double max_grad_norm = 10;       ///< 0: no clipping
  int64_t hard_update_freq = 50;   ///< gradient steps between target network copies
  int64_t init_random_frames = 10000;
  int64_t buffer_size = 10000;
  double eps_start = 1.0;
  double eps_end = 0.05;
  int64_t annealing_frames = 250000;
  std::string loss_function = "l2";
  bool double_dqn = false;

  Config() {
    total_frames = 500000;
    num_cells = {120, 84};
    eval_every = 50000;
  }
  /// What a checkpoint must agree on to be resumed: the shapes, and every setting a resumed run
  /// would otherwise silently change. `total_frames`, `eval_every` and `batch_size` may change.
  std::string fingerprint() const {
    return fmt::format(
        "{} frames_per_batch={} num_updates={} lr={} max_grad_norm={} hard_update_freq={} init_random_frames={} "
        "buffer_size={} eps_start={} eps_end={} annealing_frames={} loss_function={} double_dqn={}",
        common_fingerprint(), frames_per_batch, num_updates, lr, max_grad_norm, hard_update_freq, init_random_frames,
        buffer_size, eps_start, eps_end, annealing_frames, loss_function, double_dqn);
  }
};

/// Rules between flags, checked after parsing, each naming the flag to change.
void check_consistency(const Config& c) {
  ex::check_num_cells(c);
  if (c.frames_per_batch % c.num_envs != 0) {
    throw CLI::ValidationError(
        "--frames-per-batch", fmt::format("{} is not a multiple of --num-envs {}: every environment steps the same "
                                          "number of times per batch",
                                          c.frames_per_batch, c.num_envs));
  }
  if (c.buffer_size < c.batch_size) {
    throw CLI::ValidationError(
        "--buffer-size", fmt::format("{} is smaller than --batch-size {}: the replay buffer could never hold a batch, "
                                     "so no gradient update would happen",
                                     c.buffer_size, c.batch_size));
  }
  if (c.eps_end > c.eps_start) {
    throw CLI::ValidationError("--eps-end", fmt::format("{} is above --eps-start {}: epsilon only decreases",
                                                        c.eps_end, c.eps_start));
  }
  // Updates start after the first batch that brings the frames to init_random_frames and the
  // buffer to batch_size; batches come frames_per_batch at a time.
  const int64_t first_update = std::max(c.init_random_frames, c.batch_size);
  const auto batches = [&](int64_t frames) { return (frames + c.frames_per_batch - 1) / c.frames_per_batch; };
  if (batches(c.total_frames) < std::max<int64_t>(batches(first_update), 1)) {
    throw CLI::ValidationError(
        "--total-frames",
        fmt::format("{} frames are too few: no gradient update would happen, as updates start at frame {} (the larger "
                    "of --init-random-frames {} and --batch-size {})",
                    c.total_frames, first_update, c.init_random_frames, c.batch_size));
  }
}

/// A one-hot action with a single one. QValueModule's one-hot action has several ones when action
/// values tie (TorchRL's rule); TorchRL's GymEnv then takes the first (argmax), and so do we,
/// since CartPole accepts exact one-hot rows only.
void first_of_ties(rl::TensorDict& td) {
  const torch::Tensor& a = td.get("action");
  td.set("action", torch::one_hot(a.argmax(-1), a.size(-1)));
}

/// The run: CartPole, the Q network, DQNLoss with a hard-updated target, e-greedy exploration,
/// the replay buffer, and rlobj's trainer.
struct Run {
  using Loss = rl::objectives::DQNLoss<rl::modules::QValueActor>;

  explicit Run(const Config& c)
      : device(c.device),
        env(rl::envs::CartPoleOptions().batch_size({c.num_envs}).seed(c.seed).device(device)),
        eval_env(rl::envs::CartPoleOptions().batch_size({c.eval_episodes}).seed(c.eval_seed()).device(device)),
        rb(rl::data::ReplayBufferOptions(c.buffer_size).seed(c.seed + 17)) {
    // The network's initial weights come from a generator of the run's own (the same draws
    // torch::manual_seed(seed) would give); nothing else in DQN draws from the default generator,
    // which is seeded anyway and saved with checkpoints.
    auto init = at::make_generator<at::CPUGeneratorImpl>(c.seed);
    torch::manual_seed(c.seed + 43);
    const int64_t n_obs = env.observation_spec().at("observation").shape().back();
    const int64_t n_act = env.action_spec().shape().back();
    qnet = rl::modules::QValueActor(rl::modules::MLP(rl::modules::MLPOptions(n_obs, n_act)
                                                         .num_cells(c.num_cells)
                                                         .activation(rl::modules::activation_from_string(c.activation))
                                                         .generator(init)),
                                    /*in_keys=*/{"observation"}, rl::modules::ActionSpace::OneHot);
    qnet->to(device);
    loss = Loss(qnet, rl::objectives::DQNLossOptions()
                          .loss_function(rl::objectives::loss_function_from_string(c.loss_function))
                          .delay_value(true)
                          .double_dqn(c.double_dqn));
    loss->make_value_estimator(rl::objectives::ValueEstimators::TD0,
                               rl::objectives::value::ValueEstimatorOptions().gamma(c.gamma));
    hard_update = std::make_shared<rl::objectives::HardUpdate>(loss, c.hard_update_freq);
    update = std::make_shared<rl::trainers::LossUpdate<Loss>>(
        loss, std::make_shared<torch::optim::Adam>(loss->parameters(), torch::optim::AdamOptions(c.lr)), hard_update,
        rl::trainers::LossUpdateOptions().max_grad_norm(c.max_grad_norm));

    // The spec of one action (TorchRL's QValueActor spec), not the env's batched one.
    egreedy = rl::modules::EGreedyModule(rl::OneHot(n_act, {n_act}, torch::kInt64, device),
                                         rl::modules::EGreedyModuleOptions()
                                             .eps_init(c.eps_start)
                                             .eps_end(c.eps_end)
                                             .annealing_num_steps(c.annealing_frames)
                                             .seed(c.seed + 29));
    auto explore = rl::modules::TensorDictSequential(qnet, egreedy);
    auto collector = std::make_shared<rl::collectors::SyncDataCollector>(
        env,
        [explore](rl::TensorDict& td) mutable {
          explore(td);
          first_of_ties(td);
        },
        c.frames_per_batch, c.total_frames, c.init_random_frames);

    trainer = std::make_unique<rl::trainers::Trainer>(collector, [u = update](const rl::TensorDict& b) { return (*u)(b); },
                                                      rl::trainers::TrainerOptions()
                                                          .optim_steps_per_batch(c.num_updates)
                                                          .init_random_frames(c.init_random_frames));
    auto& records = trainer->records();
    records.set_kind(std::string("rlobj.examples.") + kProgram);
    records.set_fingerprint(c.fingerprint());
    returns.register_with(*trainer);
    rl::trainers::ReplayBufferHook(rb, c.batch_size, transition_keys(), device).register_with(*trainer);
    // TorchRL's loop: eps is annealed by every batch's frames, the random ones included.
    trainer->register_op(rl::trainers::Stage::BatchProcess,
                         [this, n = c.frames_per_batch](rl::trainers::StepContext&) { egreedy->step(n); });
    losses.register_with(*trainer);
    records.add(
        "loss", [this](torch::serialize::OutputArchive& a) { loss->save(a); },
        [this](torch::serialize::InputArchive& a) { loss->load(a); });
    update->register_records(records);
    records.add(
        "hard_update", [this](torch::serialize::OutputArchive& a) { a.write("counter", torch::tensor(hard_update->counter())); },
        [this](torch::serialize::InputArchive& a) {
          torch::Tensor counter;
          a.read("counter", counter);
          TORCH_CHECK_VALUE(counter.numel() == 1 && counter.scalar_type() == torch::kLong,
                            "the HardUpdate counter must be one int64");
          hard_update->set_counter(counter.item<int64_t>());
        });
    records.add(
        "egreedy", [this](torch::serialize::OutputArchive& a) { egreedy->save(a); },
        [this](torch::serialize::InputArchive& a) { egreedy->load(a); });
    rl::trainers::add_generator_record(records, device);
  }

  /// Keys the loss reads: only these go into the replay buffer.
  static std::vector<rl::NestedKey> transition_keys() {
    return {"observation", "action", {"next", "observation"}, {"next", "reward"}, {"next", "done"},
            {"next", "terminated"}};
  }

  torch::Device device;
  rl::envs::CartPole env, eval_env;
  rl::data::ReplayBuffer rb;
  rl::modules::QValueActor qnet{nullptr};
  Loss loss{nullptr};
  std::shared_ptr<rl::objectives::HardUpdate> hard_update;
  std::shared_ptr<rl::trainers::LossUpdate<Loss>> update;
  rl::modules::EGreedyModule egreedy{nullptr};
  rl::trainers::ReturnTracker returns;
  rl::trainers::LossTracker losses{{"loss"}};
  std::unique_ptr<rl::trainers::Trainer> trainer;
};

int run(int argc, char** argv) {
  Config cfg;
  ex::RunFlags flags;
  CLI::App app{"Train DQN on gymnasium's CartPole-v1 with rlobj (TorchRL's objectives for LibTorch)."};
  ex::add_common_flags(app, kProgram, cfg, flags, "network, environments, exploration, replay buffer",
                       "Carts stepped together by the collector");
  ex::add_int(app, "--frames-per-batch", cfg.frames_per_batch,
              "Transitions per collector batch (a multiple of --num-envs), >= 1", 1);
  ex::add_int(app, "--num-updates", cfg.num_updates, "Gradient steps per collector batch, >= 1", 1);
  ex::add_int(app, "--batch-size", cfg.batch_size, "Transitions per gradient step, >= 1", 1);
  ex::add_real(app, "--lr", cfg.lr, "Adam learning rate, > 0", ex::positive());
  ex::add_real(app, "--max-grad-norm", cfg.max_grad_norm, "Clip the gradient norm to this (0: no clipping), >= 0",
               ex::non_negative());
  ex::add_int(app, "--hard-update-freq", cfg.hard_update_freq,
              "Gradient steps between copies of the Q network into its target, >= 0", 0);
  ex::add_int(app, "--init-random-frames", cfg.init_random_frames, "Random-action frames before learning starts, >= 0",
              0);
  ex::add_int(app, "--buffer-size", cfg.buffer_size, "Replay buffer capacity, >= --batch-size", 1);
  const auto probability = ex::real([](double v) { return v >= 0 && v <= 1; }, "in [0, 1]");
  ex::add_real(app, "--eps-start", cfg.eps_start, "Initial probability of a random action, in [0, 1]", probability);
  ex::add_real(app, "--eps-end", cfg.eps_end, "Final probability of a random action, in [0, --eps-start]",
               probability);
  ex::add_int(app, "--annealing-frames", cfg.annealing_frames, "Frames over which epsilon decreases linearly, >= 1", 1);
  app.add_option("--loss-function", cfg.loss_function, "TD error distance: l2, l1 or smooth_l1")
      ->capture_default_str()
      ->check(CLI::IsMember({"l2", "l1", "smooth_l1"}));
  app.add_option("--double-dqn", cfg.double_dqn,
                 "Double DQN: the online network picks the next action, the target values it (true/false)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
    check_consistency(cfg);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg.seed = static_cast<uint64_t>(flags.seed);

  const auto t0 = ex::Clock::now();
  Run r(cfg);
  ex::resume_if_asked(*r.trainer, flags);
  if (!flags.quiet) {
    fmt::print("DQN on CartPole-v1: seed {}, {} frames, {} env(s), {} frames per batch, {} update(s) per batch, "
               "batch {}, cells [{}], {}, {}{}, device {}\n",
               cfg.seed, cfg.total_frames, cfg.num_envs, cfg.frames_per_batch, cfg.num_updates, cfg.batch_size,
               fmt::join(cfg.num_cells, ", "), cfg.activation, cfg.loss_function, cfg.double_dqn ? ", double DQN" : "",
               cfg.device);
  }
  rl::trainers::Evaluator evaluate(r.eval_env,
                                   [&r](rl::TensorDict& td) {
                                     r.qnet(td);
                                     first_of_ties(td);
                                   },
                                   rl::trainers::EvaluatorOptions().max_steps(kMaxEpisodeSteps).seed(cfg.eval_seed()));
  ex::Report report;
  report.program = kProgram;
  report.total_frames = cfg.total_frames;
  report.eval_every = cfg.eval_every;
  report.evaluate = [&] { return evaluate(); };
  report.recent_return = [&] { return r.returns.recent_return(); };
  report.columns = {{"loss", [&] { return fmt::format("{:.6f}", r.losses.last("loss")); }},
                    {"eps", [&] { return fmt::format("{:.4f}", r.egreedy->eps()); }}};
  report.progress = [&] { return fmt::format("loss {:>8.4f} | eps {:.3f}", r.losses.last("loss"), r.egreedy->eps()); };
  report.evaluation =
      fmt::format("mean of {} greedy episodes of up to {} steps", cfg.eval_episodes, kMaxEpisodeSteps);
  return ex::train_and_report(*r.trainer, report, cfg, flags, t0);
}

}  // namespace

int main(int argc, char** argv) {
  return rlobj_examples::guarded_main(kProgram, [&] { return run(argc, argv); });
}
