#pragma once

// The command line shared by ddpg_pendulum, td3_pendulum and sac_pendulum: trains the algorithm
// on gym's Pendulum-v1 with rlobj, evaluates it, logs it. Each example's main.cpp is
// `return offpolicy::main<offpolicy::TD3>(argc, argv);`.
//
//   td3_pendulum --seed 0 --total-frames 20000 --log-csv returns.csv
//   td3_pendulum --help

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)

#include "common/cli.h"
#include "offpolicy/distributed.h"
#include "offpolicy/trainer.h"

namespace offpolicy {
namespace detail {

// The helpers every example shares (examples/common/cli.h).
using rlobj_examples::activation_name;
using rlobj_examples::Clock;
using rlobj_examples::CsvLog;
using rlobj_examples::errno_reason;
using rlobj_examples::first_line;
using rlobj_examples::fmt_num;
using rlobj_examples::int_at_least;
using rlobj_examples::real;
using rlobj_examples::seconds_since;
using rlobj_examples::usable_device;
using rlobj_examples::writable_file_path;

/// Rules between flags, checked after parsing: a run that can never do a gradient update is an error.
inline void check_consistency(const Config& c) {
  if (c.num_cells.empty()) throw CLI::ValidationError("--num-cells", "give at least one hidden layer size");
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

/// The CSV header; `csv_row` writes one row per evaluation.
constexpr const char* kCsvHeader = "frames,updates,episodes,wall_s,eval_return,recent_return,loss_actor,loss_value";
template <typename T>
std::string csv_row(const T& t, double wall, double eval_return) {
  return fmt::format("{},{},{},{:.3f},{:.4f},{:.4f},{:.6f},{:.6f}", t.frames(), t.updates(), t.episodes(), wall,
                     eval_return, t.recent_return(), t.last_loss_actor(), t.last_loss_value());
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

template <typename Algo>
int run(int argc, char** argv) {
  Config cfg = Algo::defaults();
  std::string preset;
  if constexpr (std::is_same<Algo, TD3>::value) {
    if (preset_in(argc, argv) == "rltools") cfg = TD3::rltools_preset();
  }
  int64_t seed = 0;  // parsed signed, so that "-1" is rejected instead of wrapping to 2^64-1
  std::string checkpoint, resume, log_csv;
  bool quiet = false;

  CLI::App app{fmt::format("Train {} on gym's Pendulum-v1 with rlobj (TorchRL's objectives for LibTorch).",
                            Algo::kName)};
  // Every error is one line on stderr: the flag, what is wrong, the value.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("{}: error: {} (see --help)\n", Algo::kProgram, first_line(e.what()));
  });
  app.add_option("--seed", seed, "Random seed (networks, environments, noise, replay buffer), >= 0")
      ->capture_default_str()
      ->check(int_at_least(0));
  app.add_option("--total-frames", cfg.total_frames, "Environment steps to collect, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--num-envs", cfg.num_envs, "Pendulums stepped together (one update per frame), >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--batch-size", cfg.batch_size, "Transitions per gradient step, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--lr-actor", cfg.lr_actor, "Adam learning rate of the actor, > 0")
      ->capture_default_str()
      ->check(real([](double v) { return v > 0; }, "a positive number"));
  app.add_option("--lr-critic", cfg.lr_critic, "Adam learning rate of the critic, > 0")
      ->capture_default_str()
      ->check(real([](double v) { return v > 0; }, "a positive number"));
  app.add_option("--gamma", cfg.gamma, "Discount factor, in (0, 1]")
      ->capture_default_str()
      ->check(real([](double v) { return v > 0 && v <= 1; }, "in (0, 1]"));
  app.add_option("--tau", cfg.tau, "Soft target update weight (SoftUpdate tau = 1 - eps), in (0, 1]")
      ->capture_default_str()
      ->check(real([](double v) { return v > 0 && v <= 1; }, "in (0, 1]"));
  app.add_option("--num-cells", cfg.num_cells, "Hidden layer sizes of actor and critic, each >= 1")
      ->capture_default_str()
      ->delimiter(',')
      ->check(int_at_least(1));
  app.add_option("--activation", cfg.activation,
                 "Hidden activation: tanh, relu, elu, leaky_relu, gelu, sigmoid, silu or identity")
      ->capture_default_str()
      ->check(activation_name());
  app.add_option("--init-random-frames", cfg.init_random_frames, "Random-action frames before learning starts, >= 0")
      ->capture_default_str()
      ->check(int_at_least(0));
  app.add_option("--buffer-size", cfg.buffer_size, "Replay buffer capacity, >= --batch-size")
      ->capture_default_str()
      ->check(int_at_least(1));
  if constexpr (!Algo::kStochastic) {
    app.add_option("--noise-std", cfg.noise_std, "Std of the Gaussian exploration noise, >= 0")
        ->capture_default_str()
        ->check(real([](double v) { return v >= 0; }, "a non-negative number"));
  }
  if constexpr (std::is_same<Algo, TD3>::value) {
    app.add_option("--policy-delay", cfg.policy_delay, "Update the actor and the targets every N-th update, >= 1")
        ->capture_default_str()
        ->check(int_at_least(1));
    app.add_option("--policy-noise", cfg.policy_noise, "Std of the target policy smoothing noise, >= 0")
        ->capture_default_str()
        ->check(real([](double v) { return v >= 0; }, "a non-negative number"));
    app.add_option("--noise-clip", cfg.noise_clip, "The smoothing noise is clipped to +-this, >= 0")
        ->capture_default_str()
        ->check(real([](double v) { return v >= 0; }, "a non-negative number"));
    app.add_option("--preset", preset,
                   "rltools: RLtools' TD3 Pendulum configuration (64-64 ReLU, batch 100, lr 1e-3, 100 warm-up frames, "
                   "buffer 10k, 10k frames); other flags still override it")
        ->check(CLI::IsMember({"rltools"}));
  }
  if constexpr (std::is_same<Algo, SAC>::value) {
    app.add_option("--alpha-init", cfg.alpha_init, "Initial temperature alpha, > 0")
        ->capture_default_str()
        ->check(real([](double v) { return v > 0; }, "a positive number"));
    app.add_option("--lr-alpha", cfg.lr_alpha, "Adam learning rate of log(alpha), > 0")
        ->capture_default_str()
        ->check(real([](double v) { return v > 0; }, "a positive number"));
  }
  app.add_option("--loss-function", cfg.loss_function, "Critic loss: l2, l1 or smooth_l1")
      ->capture_default_str()
      ->check(CLI::IsMember({"l2", "l1", "smooth_l1"}));
  app.add_option("--eval-every", cfg.eval_every, "Evaluate (10 deterministic episodes) every N frames, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--device", cfg.device, "Torch device (cpu, cuda, cuda:1, ...)")
      ->capture_default_str()
      ->check(usable_device());
  app.add_option("--checkpoint", checkpoint, "Save a checkpoint here at each evaluation and at the end (atomic)")
      ->check(writable_file_path());
  app.add_option("--resume", resume, "Resume from this checkpoint")->check(CLI::ExistingFile);
  app.add_option("--log-csv", log_csv, "Append evaluation returns and losses to this CSV file");
  app.add_flag("--quiet", quiet, "Only print the final summary");
  DistributedSettings dist;
  app.add_option("--collectors", dist.collectors,
                 "Collector processes (0: one process). Launch N+1 processes: scripts/launch.sh -n N+1 -- ... or "
                 "torchrun --nproc_per_node N+1 ...; rank 0 learns")
      ->capture_default_str()
      ->check(int_at_least(0));
  app.add_option("--weights-every", dist.weights_every, "With --collectors: push the policy to the collectors every "
                 "N rounds, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--dist-timeout", dist.timeout_s, "With --collectors: seconds any collective or message may take "
                 "before the run fails, in (0, 86400]")
      ->capture_default_str()
      ->check(real([](double v) { return v > 0 && v <= 86400; }, "in (0, 86400]"));
  try {
    app.parse(argc, argv);
    check_consistency(cfg);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg.seed = static_cast<uint64_t>(seed);

  // A multi-process run: torchrun's variables name this process's rank (none set: one process).
  namespace dist_ns = rlobj::distributed;
  // Without --collectors only WORLD_SIZE is looked at (a stray RANK in the environment is ignored).
  if (const char* world = std::getenv("WORLD_SIZE"); dist.collectors == 0 && world && std::string(world) != "1") {
    throw std::invalid_argument(fmt::format(
        "{}: started as one of WORLD_SIZE={} processes without --collectors: pass --collectors N with N+1 processes "
        "(rank 0 learns, the others collect)", Algo::kProgram, world));
  }
  const auto launch = dist.collectors > 0 ? dist_ns::LaunchInfo::from_env() : dist_ns::LaunchInfo{};
  if (dist.collectors > 0 && launch.world_size != dist.collectors + 1) {
    throw std::invalid_argument(fmt::format(
        "{}: --collectors {} needs {} processes (the learner and {} collectors), but WORLD_SIZE={}: launch it with "
        "scripts/launch.sh -n {} -- {} ... or torchrun --nproc_per_node {} ...", Algo::kProgram, dist.collectors,
        dist.collectors + 1, dist.collectors, launch.world_size, dist.collectors + 1, Algo::kProgram,
        dist.collectors + 1));
  }
  std::optional<dist_ns::ProcessGroup> pg;
  std::optional<dist_ns::DistributedCollector> channel;
  if (dist.collectors > 0) {
    pg.emplace(launch, dist_ns::ProcessGroupOptions().timeout(
                           std::chrono::milliseconds(static_cast<int64_t>(dist.timeout_s * 1000))));
    pg->check_same("configuration", cfg.fingerprint() + " " + dist.fingerprint() + " resume=" +
                                        std::to_string(!resume.empty()));
    channel.emplace(*pg);
  }
  // A failure on any rank is left in the store, so that the others name it when they notice.
  try {
    if (pg && pg->rank() != 0) {
      const auto t0 = Clock::now();
      const int64_t frames = run_collector<Algo>(*pg, *channel, cfg, dist);
      pg->finish();
      if (!quiet) {
        fmt::print("collector rank {}: sent {} frames in {:.1f} s\n", pg->rank(), frames, seconds_since(t0));
      }
      return 0;
    }

    {
      const auto t0 = Clock::now();
      // Opened before the (slower) trainer, so that an unwritable CSV fails at once.
      CsvLog csv(log_csv, /*append=*/!resume.empty(), kCsvHeader);
      Trainer<Algo> trainer(cfg);
      if (pg) trainer.set_remote_collection();
      if (!resume.empty()) {
        trainer.load(resume);
        if (!quiet) fmt::print("resumed from {} at frame {}\n", resume, trainer.frames());
      }
      const bool tty = ::isatty(STDOUT_FILENO) != 0;
      if (!quiet) {
        fmt::print("{} on Pendulum-v1: seed {}, {} frames, {} env(s), batch {}, cells [{}], {}, device {}{}\n",
                   Algo::kName, cfg.seed, cfg.total_frames, cfg.num_envs, cfg.batch_size, fmt::join(cfg.num_cells, ", "),
                   cfg.activation, cfg.device, preset.empty() ? std::string() : ", preset " + preset);
      }

      if (pg && !quiet) {
        fmt::print("distributed: rank 0 learns, {} collector processes, weights pushed every {} round(s) of {} "
                   "frames\n", dist.collectors, dist.weights_every, dist.collectors * cfg.num_envs);
      }
      std::optional<Learner<Algo>> learner;
      if (pg) learner.emplace(*channel, trainer, dist);
      const auto step = [&] { return learner ? learner->step() : trainer.step(); };
      const int64_t start_frames = trainer.frames();
      double last_eval = std::nan("");
      auto last_print = Clock::now();
      auto progress = [&](bool force) {
        if (quiet) return;
        // Decide before formatting: the line reads losses and counters back from the device.
        const bool print = force || (tty && seconds_since(last_print) > 0.2);
        if (!print) return;
        const double wall = seconds_since(t0);
        const double fps = (trainer.frames() - start_frames) / std::max(wall, 1e-9);
        const double eta = fps > 0 ? (cfg.total_frames - trainer.frames()) / fps : 0;
        const std::string line = fmt::format(
            "frames {:>6}/{} | episodes {:>4} | recent return {:>7} | eval {:>7} | loss actor {:>7.3f} value "
            "{:>7.4f} | {:>5.0f} frames/s | ETA {:>4.0f}s",
            trainer.frames(), cfg.total_frames, trainer.episodes(), fmt_num(trainer.recent_return()),
            fmt_num(last_eval), trainer.last_loss_actor(), trainer.last_loss_value(), fps, eta);
        if (tty) {
          // A live line redrawn in place, at most 5 times a second.
          fmt::print("\r{}", line);
          std::fflush(stdout);
          last_print = Clock::now();
        } else {
          fmt::print("{}\n", line);  // logs get one line per evaluation, not a flood,
          std::fflush(stdout);         // and get it now (tail -f, a supervisor watching progress)
        }
      };

      // Periodic evaluations; the one at the last frame is the final evaluation below.
      int64_t next_eval = (trainer.frames() / cfg.eval_every + 1) * cfg.eval_every;
      while (step()) {
        if (cfg.eval_every > 0 && trainer.frames() >= next_eval && trainer.frames() < cfg.total_frames) {
          last_eval = trainer.evaluate();
          csv.row(csv_row(trainer, seconds_since(t0), last_eval));
          if (!checkpoint.empty()) trainer.save(checkpoint);
          next_eval += cfg.eval_every;
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
                 "{:.1f} (mean of {} deterministic episodes of 200 steps)\n",
                 cfg.seed, wall, trainer.frames(), trainer.updates(), trainer.episodes(), final_return,
                 cfg.eval_episodes);
    }
    if (pg) pg->finish();
  } catch (const std::exception& e) {
    if (pg) pg->report_failure(first_line(e.what()));
    throw;
  }
  rlobj_examples::check_stdout();  // the summary is the job's result
  return 0;
}

}  // namespace detail

/// The whole program: parses the flags, trains, evaluates, prints the summary. Whatever escapes
/// the run (a bad or mismatched checkpoint, a failed write, ...) is one line on stderr.
template <typename Algo>
int main(int argc, char** argv) {
  return rlobj_examples::guarded_main(Algo::kProgram, [&] { return detail::run<Algo>(argc, argv); });
}

}  // namespace offpolicy
