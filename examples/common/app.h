#pragma once

// What every example program shares around rlobj's library trainer (rlobj::trainers::Trainer):
// the settings every example has and their flags, the run's files (--checkpoint, --resume,
// --log-csv), and the reporting loop — an evaluation every --eval-every frames with its CSV row,
// checkpoint and progress line, then the final evaluation and the summary. An example is its own
// settings, its environment, networks, loss and update.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <rlobj/trainers/trainer.h>

#include "common/cli.h"

namespace rlobj_examples {

/// The settings every example has (each example's `Config` derives from it).
struct CommonConfig {
  uint64_t seed = 0;
  int64_t total_frames = 20000;
  int64_t num_envs = 1;
  std::vector<int64_t> num_cells = {64, 64};
  std::string activation = "relu";
  double gamma = 0.99;
  int64_t eval_every = 2000;
  int64_t eval_episodes = 10;
  std::string device = "cpu";

  /// The part of a checkpoint's fingerprint these settings make (a resumed run must agree on
  /// all but total_frames and eval_every).
  std::string common_fingerprint() const {
    return fmt::format("seed={} num_envs={} num_cells={} activation={} gamma={} eval_episodes={} device={}", seed,
                       num_envs, fmt::join(num_cells, ","), activation, gamma, eval_episodes, device);
  }
  /// Seed of the evaluation episodes' start states (derived from the run's seed).
  uint64_t eval_seed() const { return seed + 1000003; }
};

/// `--num-cells` after parsing: at least one layer, and networks this machine's memory holds.
/// A run keeps about `copies` float32 copies of every weight (the networks, their targets,
/// gradients, Adam's two moments); the hidden-to-hidden products dominate the count.
inline void check_num_cells(const CommonConfig& c, int copies = 16) {
  if (c.num_cells.empty()) throw CLI::ValidationError("--num-cells", "give at least one hidden layer size");
  double weights = 0;
  for (size_t i = 0; i < c.num_cells.size(); ++i) {
    const double width = static_cast<double>(c.num_cells[i]);
    weights += width * (i + 1 < c.num_cells.size() ? static_cast<double>(c.num_cells[i + 1]) + 1 : 1) + width;
  }
  const double bytes = weights * 4 * copies;
  const auto memory = static_cast<double>(rlobj::detail::physical_memory_bytes());
  if (bytes > memory) {
    throw CLI::ValidationError(
        "--num-cells", fmt::format("{}: networks of about {:.3g} weights each, {} float32 copies of them (networks, "
                                   "targets, gradients, Adam's moments), need about {:.3g} bytes, more than this "
                                   "machine's {:.3g} bytes of memory",
                                   fmt::join(c.num_cells, ","), weights, copies, bytes, memory));
  }
}

/// The flags about the run itself rather than the algorithm.
struct RunFlags {
  int64_t seed = 0;  // parsed signed, so that "-1" is rejected instead of wrapping to 2^64-1
  std::string checkpoint, resume, log_csv;
  bool quiet = false;
};

/// `--name`, an integer >= `lo`, its default shown in --help.
inline CLI::Option* add_int(CLI::App& app, const std::string& name, int64_t& value, const std::string& help,
                            int64_t lo) {
  return app.add_option(name, value, help)->capture_default_str()->transform(int_at_least(lo));
}
/// `--name`, a finite real accepted by `check`, its default shown in --help.
inline CLI::Option* add_real(CLI::App& app, const std::string& name, double& value, const std::string& help,
                             const CLI::Validator& check) {
  return app.add_option(name, value, help)->capture_default_str()->check(check);
}
/// A real > 0.
inline CLI::Validator positive() { return real([](double v) { return v > 0; }, "a positive number"); }
/// A real >= 0.
inline CLI::Validator non_negative() { return real([](double v) { return v >= 0; }, "a non-negative number"); }
/// A real in (0, 1].
inline CLI::Validator unit_interval() { return real([](double v) { return v > 0 && v <= 1; }, "in (0, 1]"); }

/// The one-line error format of every example, and the flags of `CommonConfig` and `RunFlags`.
/// `what` completes the help of --num-envs and --seed.
inline void add_common_flags(CLI::App& app, const std::string& program, CommonConfig& c, RunFlags& run,
                             const std::string& seed_what, const std::string& envs_what) {
  app.failure_message([program](const CLI::App*, const CLI::Error& e) {
    return fmt::format("{}: error: {} (see --help)\n", program, first_line(e.what()));
  });
  add_int(app, "--seed", run.seed, "Random seed (" + seed_what + "), >= 0", 0);
  add_int(app, "--total-frames", c.total_frames, "Environment steps to collect, >= 1", 1);
  app.add_option("--num-envs", c.num_envs, envs_what + ", >= 1 (and what memory holds)")
      ->capture_default_str()
      ->transform(int_within_memory(1, 1024, "environments"));
  app.add_option("--num-cells", c.num_cells, "Hidden layer sizes of the networks, each >= 1")
      ->capture_default_str()
      ->delimiter(',')
      ->transform(int_at_least(1));
  app.add_option("--activation", c.activation,
                 "Hidden activation: tanh, relu, elu, leaky_relu, gelu, sigmoid, silu or identity")
      ->capture_default_str()
      ->check(activation_name());
  add_real(app, "--gamma", c.gamma, "Discount factor, in (0, 1]", unit_interval());
  add_int(app, "--eval-every", c.eval_every, "Evaluate (deterministic episodes) every N frames, >= 1", 1);
  app.add_option("--eval-episodes", c.eval_episodes, "Episodes per evaluation (one environment each), >= 1")
      ->capture_default_str()
      ->transform(int_within_memory(1, 1024, "evaluation environments"));
  app.add_option("--device", c.device, "Torch device (cpu, cuda, cuda:1, ...)")
      ->capture_default_str()
      ->check(usable_device());
  app.add_option("--checkpoint", run.checkpoint, "Save a checkpoint here at each evaluation and at the end (atomic)")
      ->check(writable_file_path());
  app.add_option("--resume", run.resume, "Resume from this checkpoint")->check(CLI::ExistingFile);
  app.add_option("--log-csv", run.log_csv, "Append evaluation returns and losses to this CSV file");
  app.add_flag("--quiet", run.quiet, "Only print the final summary");
  // The CSV log is appended to; the checkpoint replaces its file: one file for both loses data.
  app.final_callback([&run] {
    refuse_same_file({{"--log-csv", run.log_csv}, {"--checkpoint", run.checkpoint}, {"--resume", run.resume}},
                     /*allowed=*/{{"--checkpoint", "--resume"}});
  });
}

/// A column of the CSV log and its value now (after the shared frames, updates, episodes,
/// wall_s, eval_return and recent_return).
struct Column {
  std::string name;
  std::function<std::string()> value;
};

/// How a run is reported.
struct Report {
  std::string program;
  int64_t total_frames = 0;
  int64_t eval_every = 0;
  /// One evaluation (deterministic episodes): their mean return.
  std::function<double()> evaluate;
  /// The mean return of the last training episodes.
  std::function<double()> recent_return;
  /// The example's columns.
  std::vector<Column> columns;
  /// The example's fields of the progress line ("loss actor ... value ...").
  std::function<std::string()> progress;
  /// What the final evaluation was ("mean of 10 deterministic episodes of 200 steps").
  std::string evaluation;
};

/// Trains to the end: every `eval_every` frames (but the last) an evaluation, its CSV row, the
/// checkpoint and the progress line; then the final evaluation, its row, the checkpoint and the
/// summary. The progress line is redrawn in place on a terminal (at most 5 times a second), one
/// line per evaluation otherwise. Returns 0.
inline int train_and_report(rlobj::trainers::Trainer& trainer, const Report& report, const CommonConfig& c,
                            const RunFlags& run, Clock::time_point t0) {
  // Opened before training, so that an unwritable CSV fails at once.
  std::string header = "frames,updates,episodes,wall_s,eval_return,recent_return";
  for (const auto& col : report.columns) header += "," + col.name;
  CsvLog csv(run.log_csv, /*append=*/!run.resume.empty(), header);
  const auto row = [&](double wall, double eval_return) {
    std::string line = fmt::format("{},{},{},{:.3f},{:.4f},{:.4f}", trainer.frames(), trainer.updates(),
                                   trainer.episodes(), wall, eval_return, report.recent_return());
    for (const auto& col : report.columns) line += "," + col.value();
    csv.row(line);
  };

  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  const int64_t start_frames = trainer.frames();
  double last_eval = std::nan("");
  auto last_print = Clock::now();
  const auto progress = [&](bool force) {
    if (run.quiet) return;
    // Decide before formatting: the line reads losses back from the device.
    if (!force && !(tty && seconds_since(last_print) > 0.2)) return;
    const double wall = seconds_since(t0);
    const double fps = static_cast<double>(trainer.frames() - start_frames) / std::max(wall, 1e-9);
    const double eta = fps > 0 ? static_cast<double>(std::max<int64_t>(0, report.total_frames - trainer.frames())) / fps : 0;
    const std::string line =
        fmt::format("frames {:>7}/{} | episodes {:>5} | recent return {:>7} | eval {:>7} | {} | {:>5.0f} frames/s | "
                    "ETA {:>4.0f}s",
                    trainer.frames(), report.total_frames, trainer.episodes(), fmt_num(report.recent_return()),
                    fmt_num(last_eval), report.progress(), fps, eta);
    if (tty) {
      fmt::print("\r{}", line);
      std::fflush(stdout);
      last_print = Clock::now();
    } else {
      fmt::print("{}\n", line);  // logs get one line per evaluation, not a flood, and get it now
      std::fflush(stdout);
    }
  };

  // Periodic evaluations; the one at the last frame is the final evaluation below.
  int64_t next_eval = (trainer.frames() / report.eval_every + 1) * report.eval_every;
  while (trainer.step()) {
    if (trainer.frames() >= next_eval && trainer.frames() < report.total_frames) {
      last_eval = report.evaluate();
      row(seconds_since(t0), last_eval);
      if (!run.checkpoint.empty()) trainer.save(run.checkpoint);
      while (next_eval <= trainer.frames()) next_eval += report.eval_every;
      progress(/*force=*/true);
      if (tty && !run.quiet) fmt::print("\n");
    } else {
      progress(/*force=*/false);
    }
  }
  const double final_return = report.evaluate();
  const double wall = seconds_since(t0);
  row(wall, final_return);
  if (!run.checkpoint.empty()) trainer.save(run.checkpoint);
  if (tty && !run.quiet) fmt::print("\n");
  fmt::print("summary: seed {} | wall time {:.1f} s | env steps {} | updates {} | episodes {} | final eval return "
             "{:.1f} ({})\n",
             c.seed, wall, trainer.frames(), trainer.updates(), trainer.episodes(), final_return, report.evaluation);
  check_stdout();  // the summary is the job's result
  return 0;
}

/// Restores `trainer` from `run.resume` (if given) and says so.
inline void resume_if_asked(rlobj::trainers::Trainer& trainer, const RunFlags& run) {
  if (run.resume.empty()) return;
  trainer.load(run.resume);
  if (!run.quiet) fmt::print("resumed from {} at frame {}\n", run.resume, trainer.frames());
}

}  // namespace rlobj_examples
