// dqn_cartpole: trains DQN (DQNLoss, a QValueActor with e-greedy exploration, a hard-updated
// target network) on gymnasium's CartPole-v1 with rlobj, evaluates it, logs it. Its default flags
// solve CartPole-v1 (a greedy evaluation return >= 475 over 10 episodes) on seeds 0, 1 and 2.
// Conventions (validators, progress line, CSV, checkpoints, summary) are the other examples'.
//
//   dqn_cartpole --seed 0 --log-csv returns.csv
//   dqn_cartpole --help

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)

#include "common/cli.h"
#include "dqn_cartpole/trainer.h"

namespace {

using rlobj_examples::Clock;
using rlobj_examples::fmt_num;
using rlobj_examples::int_at_least;
using rlobj_examples::real;
using rlobj_examples::seconds_since;

/// Rules between flags, checked after parsing, each naming the flag to change.
void check_consistency(const dqn::Config& c) {
  if (c.num_cells.empty()) throw CLI::ValidationError("--num-cells", "give at least one hidden layer size");
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

/// The CSV header; `csv_row` writes one row per evaluation (eval_return is the 5th column, as in
/// the other examples' logs, which scripts/plot_returns.sh reads).
constexpr const char* kCsvHeader = "frames,updates,episodes,wall_s,eval_return,recent_return,loss,eps";
std::string csv_row(const dqn::Trainer& t, double wall, double eval_return) {
  return fmt::format("{},{},{},{:.3f},{:.4f},{:.4f},{:.6f},{:.4f}", t.frames(), t.updates(), t.episodes(), wall,
                     eval_return, t.recent_return(), t.last_loss(), t.eps());
}

int run(int argc, char** argv) {
  dqn::Config cfg;
  int64_t seed = 0;  // parsed signed, so that "-1" is rejected instead of wrapping to 2^64-1
  std::string checkpoint, resume, log_csv;
  bool quiet = false;

  CLI::App app{"Train DQN on gymnasium's CartPole-v1 with rlobj (TorchRL's objectives for LibTorch)."};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("{}: error: {} (see --help)\n", dqn::kProgram, rlobj_examples::first_line(e.what()));
  });
  const auto positive = real([](double v) { return v > 0; }, "a positive number");
  const auto probability = real([](double v) { return v >= 0 && v <= 1; }, "in [0, 1]");
  app.add_option("--seed", seed, "Random seed (network, environments, exploration, replay buffer), >= 0")
      ->capture_default_str()
      ->check(int_at_least(0));
  app.add_option("--total-frames", cfg.total_frames, "Environment steps to collect, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--num-envs", cfg.num_envs, "Carts stepped together by the collector, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--frames-per-batch", cfg.frames_per_batch,
                 "Transitions per collector batch (a multiple of --num-envs), >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--num-updates", cfg.num_updates, "Gradient steps per collector batch, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--batch-size", cfg.batch_size, "Transitions per gradient step, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--lr", cfg.lr, "Adam learning rate, > 0")->capture_default_str()->check(positive);
  app.add_option("--max-grad-norm", cfg.max_grad_norm, "Clip the gradient norm to this (0: no clipping), >= 0")
      ->capture_default_str()
      ->check(real([](double v) { return v >= 0; }, "a non-negative number"));
  app.add_option("--gamma", cfg.gamma, "Discount factor, in (0, 1]")
      ->capture_default_str()
      ->check(real([](double v) { return v > 0 && v <= 1; }, "in (0, 1]"));
  app.add_option("--hard-update-freq", cfg.hard_update_freq,
                 "Gradient steps between copies of the Q network into its target, >= 0")
      ->capture_default_str()
      ->check(int_at_least(0));
  app.add_option("--num-cells", cfg.num_cells, "Hidden layer sizes of the Q network, each >= 1")
      ->capture_default_str()
      ->delimiter(',')
      ->check(int_at_least(1));
  app.add_option("--activation", cfg.activation,
                 "Hidden activation: tanh, relu, elu, leaky_relu, gelu, sigmoid, silu or identity")
      ->capture_default_str()
      ->check(rlobj_examples::activation_name());
  app.add_option("--init-random-frames", cfg.init_random_frames, "Random-action frames before learning starts, >= 0")
      ->capture_default_str()
      ->check(int_at_least(0));
  app.add_option("--buffer-size", cfg.buffer_size, "Replay buffer capacity, >= --batch-size")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--eps-start", cfg.eps_start, "Initial probability of a random action, in [0, 1]")
      ->capture_default_str()
      ->check(probability);
  app.add_option("--eps-end", cfg.eps_end, "Final probability of a random action, in [0, --eps-start]")
      ->capture_default_str()
      ->check(probability);
  app.add_option("--annealing-frames", cfg.annealing_frames, "Frames over which epsilon decreases linearly, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--loss-function", cfg.loss_function, "TD error distance: l2, l1 or smooth_l1")
      ->capture_default_str()
      ->check(CLI::IsMember({"l2", "l1", "smooth_l1"}));
  app.add_option("--double-dqn", cfg.double_dqn,
                 "Double DQN: the online network picks the next action, the target values it (true/false)")
      ->capture_default_str();
  app.add_option("--eval-every", cfg.eval_every, "Evaluate (greedy episodes) every N frames, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--eval-episodes", cfg.eval_episodes, "Episodes per evaluation, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--device", cfg.device, "Torch device (cpu, cuda, cuda:1, ...)")
      ->capture_default_str()
      ->check(rlobj_examples::usable_device());
  app.add_option("--checkpoint", checkpoint, "Save a checkpoint here at each evaluation and at the end (atomic)")
      ->check(rlobj_examples::writable_file_path());
  app.add_option("--resume", resume, "Resume from this checkpoint")->check(CLI::ExistingFile);
  app.add_option("--log-csv", log_csv, "Append evaluation returns and losses to this CSV file");
  app.add_flag("--quiet", quiet, "Only print the final summary");
  try {
    app.parse(argc, argv);
    check_consistency(cfg);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg.seed = static_cast<uint64_t>(seed);

  {
    const auto t0 = Clock::now();
    // Opened before the (slower) trainer, so that an unwritable CSV fails at once.
    rlobj_examples::CsvLog csv(log_csv, /*append=*/!resume.empty(), kCsvHeader);
    dqn::Trainer trainer(cfg);
    if (!resume.empty()) {
      trainer.load(resume);
      if (!quiet) fmt::print("resumed from {} at frame {}\n", resume, trainer.frames());
    }
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    if (!quiet) {
      fmt::print("DQN on CartPole-v1: seed {}, {} frames, {} env(s), {} frames per batch, {} update(s) per batch, "
                 "batch {}, cells [{}], {}, {}{}, device {}\n",
                 cfg.seed, cfg.total_frames, cfg.num_envs, cfg.frames_per_batch, cfg.num_updates, cfg.batch_size,
                 fmt::join(cfg.num_cells, ", "), cfg.activation, cfg.loss_function,
                 cfg.double_dqn ? ", double DQN" : "", cfg.device);
    }

    const int64_t start_frames = trainer.frames();
    double last_eval = std::nan("");
    auto last_print = Clock::now();
    auto progress = [&](bool force) {
      if (quiet) return;
      // Decide before formatting: the line reads the loss back from the device.
      const bool print = force || (tty && seconds_since(last_print) > 0.2);
      if (!print) return;
      const double wall = seconds_since(t0);
      const double fps = (trainer.frames() - start_frames) / std::max(wall, 1e-9);
      const double eta = fps > 0 ? std::max<double>(0, cfg.total_frames - trainer.frames()) / fps : 0;
      const std::string line = fmt::format(
          "frames {:>7}/{} | episodes {:>5} | recent return {:>7} | eval {:>7} | loss {:>8.4f} | eps {:.3f} | "
          "{:>5.0f} frames/s | ETA {:>4.0f}s",
          trainer.frames(), cfg.total_frames, trainer.episodes(), fmt_num(trainer.recent_return()), fmt_num(last_eval),
          trainer.last_loss(), trainer.eps(), fps, eta);
      if (tty) {
        fmt::print("\r{}", line);  // a live line redrawn in place, at most 5 times a second
        std::fflush(stdout);
        last_print = Clock::now();
      } else {
        fmt::print("{}\n", line);  // logs get one line per evaluation
        std::fflush(stdout);
      }
    };

    // Periodic evaluations; the one at the last frame is the final evaluation below.
    int64_t next_eval = (trainer.frames() / cfg.eval_every + 1) * cfg.eval_every;
    while (trainer.step()) {
      if (trainer.frames() >= next_eval && trainer.frames() < cfg.total_frames) {
        last_eval = trainer.evaluate();
        csv.row(csv_row(trainer, seconds_since(t0), last_eval));
        if (!checkpoint.empty()) trainer.save(checkpoint);
        while (next_eval <= trainer.frames()) next_eval += cfg.eval_every;
        progress(/*force=*/true);
        if (tty && !quiet) fmt::print("\n");
      } else {
        progress(/*force=*/false);
      }
    }
    const double final_return = trainer.evaluate();
    const double wall = seconds_since(t0);
    csv.row(csv_row(trainer, wall, final_return));
    if (!checkpoint.empty()) trainer.save(checkpoint);
    if (tty && !quiet) fmt::print("\n");
    fmt::print("summary: seed {} | wall time {:.1f} s | env steps {} | updates {} | episodes {} | final eval return "
               "{:.1f} (mean of {} greedy episodes of up to {} steps)\n",
               cfg.seed, wall, trainer.frames(), trainer.updates(), trainer.episodes(), final_return,
               cfg.eval_episodes, dqn::kMaxEpisodeSteps);
  }
  rlobj_examples::check_stdout();  // the summary is the job's result
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return rlobj_examples::guarded_main(dqn::kProgram, [&] { return run(argc, argv); });
}
