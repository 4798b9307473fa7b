#pragma once

// The command line shared by ppo_cartpole and ppo_pendulum: trains PPO with rlobj, evaluates it,
// logs it. Each example's main.cpp is `return onpolicy::main<onpolicy::CartPolePPO>(argc, argv);`.
// Conventions (validators, progress line, CSV, checkpoints, summary) are the off-policy examples'.
//
//   ppo_cartpole --seed 0 --log-csv returns.csv
//   ppo_cartpole --help

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)

#include "common/cli.h"
#include "onpolicy/trainer.h"

namespace onpolicy {
namespace detail {

using rlobj_examples::activation_name;
using rlobj_examples::Clock;
using rlobj_examples::CsvLog;
using rlobj_examples::fmt_num;
using rlobj_examples::int_at_least;
using rlobj_examples::real;
using rlobj_examples::seconds_since;
using rlobj_examples::usable_device;
using rlobj_examples::writable_file_path;

/// A true/false flag whose --help shows its default as true or false (CLI11 would print 1 or 0).
inline CLI::Option* add_bool(CLI::App& app, const std::string& name, bool& value, const std::string& description) {
  return app.add_option(name, value, description + " (true/false)")->default_str(value ? "true" : "false");
}

/// Rules between flags, checked after parsing, each naming the flag to change.
inline void check_consistency(const Config& c) {
  if (c.num_cells.empty()) throw CLI::ValidationError("--num-cells", "give at least one hidden layer size");
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

/// The CSV header; `csv_row` writes one row per evaluation (eval_return is the 5th column, as in
/// the off-policy examples' logs, which scripts/plot_returns.sh reads).
constexpr const char* kCsvHeader =
    "frames,updates,episodes,wall_s,eval_return,recent_return,loss_objective,loss_critic,entropy,clip_fraction,lr";
template <typename T>
std::string csv_row(const T& t, double wall, double eval_return) {
  return fmt::format("{},{},{},{:.3f},{:.4f},{:.4f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6g}", t.frames(), t.updates(),
                     t.episodes(), wall, eval_return, t.recent_return(), t.last_loss_objective(),
                     t.last_loss_critic(), t.last_entropy(), t.last_clip_fraction(), t.lr());
}

template <typename Algo>
int run(int argc, char** argv) {
  Config cfg = Algo::defaults();
  int64_t seed = 0;  // parsed signed, so that "-1" is rejected instead of wrapping to 2^64-1
  std::string checkpoint, resume, log_csv;
  bool quiet = false;

  CLI::App app{fmt::format("Train {} on {} with rlobj (TorchRL's objectives for LibTorch).", Algo::kName,
                           Algo::kEnvName)};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("{}: error: {} (see --help)\n", Algo::kProgram, rlobj_examples::first_line(e.what()));
  });
  const auto positive = real([](double v) { return v > 0; }, "a positive number");
  const auto non_negative = real([](double v) { return v >= 0; }, "a non-negative number");
  const auto unit = real([](double v) { return v > 0 && v <= 1; }, "in (0, 1]");
  app.add_option("--seed", seed, "Random seed (networks, environments, sampling, minibatches), >= 0")
      ->capture_default_str()
      ->check(int_at_least(0));
  app.add_option("--total-frames", cfg.total_frames, "Environment steps to collect, >= --frames-per-batch")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--num-envs", cfg.num_envs, "Environments stepped together by the collector, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--frames-per-batch", cfg.frames_per_batch,
                 "Transitions per collector batch (a multiple of --num-envs), >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--mini-batch-size", cfg.mini_batch_size, "Transitions per gradient step (divides --frames-per-batch)")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--num-epochs", cfg.num_epochs, "Passes over each batch (TorchRL: ppo_epochs), >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--lr", cfg.lr, "Adam learning rate of actor and critic, > 0")->capture_default_str()->check(positive);
  add_bool(app, "--anneal-lr", cfg.anneal_lr, "Anneal the learning rate linearly to 0");
  app.add_option("--max-grad-norm", cfg.max_grad_norm, "Clip the gradient norm to this (0: no clipping), >= 0")
      ->capture_default_str()
      ->check(non_negative);
  app.add_option("--gamma", cfg.gamma, "Discount factor, in (0, 1]")->capture_default_str()->check(unit);
  app.add_option("--gae-lambda", cfg.gae_lambda, "GAE's lambda, in (0, 1]")->capture_default_str()->check(unit);
  app.add_option("--clip-epsilon", cfg.clip_epsilon, "PPO's ratio clip, in (0, 1)")
      ->capture_default_str()
      ->check(real([](double v) { return v > 0 && v < 1; }, "in (0, 1)"));
  add_bool(app, "--anneal-clip-epsilon", cfg.anneal_clip_epsilon,
           "Anneal --clip-epsilon linearly to 0 as the learning rate");
  app.add_option("--critic-coef", cfg.critic_coef, "Weight of the critic's loss, >= 0")
      ->capture_default_str()
      ->check(non_negative);
  app.add_option("--entropy-coef", cfg.entropy_coef, "Weight of the entropy bonus (0: none), >= 0")
      ->capture_default_str()
      ->check(non_negative);
  app.add_option("--loss-critic-type", cfg.loss_critic_type, "Critic loss: l2, l1 or smooth_l1")
      ->capture_default_str()
      ->check(CLI::IsMember({"l2", "l1", "smooth_l1"}));
  add_bool(app, "--normalize-advantage", cfg.normalize_advantage, "Standardise the advantage in each minibatch");
  app.add_option("--reward-scale", cfg.reward_scale, "Rewards are multiplied by this before GAE, > 0")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--num-cells", cfg.num_cells, "Hidden layer sizes of actor and critic, each >= 1")
      ->capture_default_str()
      ->delimiter(',')
      ->check(int_at_least(1));
  app.add_option("--activation", cfg.activation,
                 "Hidden activation: tanh, relu, elu, leaky_relu, gelu, sigmoid, silu or identity")
      ->capture_default_str()
      ->check(activation_name());
  add_bool(app, "--orthogonal-init", cfg.orthogonal_init,
           "Orthogonal initial weights (PPO's usual init) instead of LibTorch's default");
  if constexpr (std::is_same<Algo, CartPolePPO>::value) {
    add_bool(app, "--categorical-actions", cfg.categorical_actions,
             "Actions as int64 indices (Categorical) instead of one-hot vectors (OneHotCategorical)");
  }
  app.add_option("--eval-every", cfg.eval_every, "Evaluate (deterministic episodes) every N frames, >= 1")
      ->capture_default_str()
      ->check(int_at_least(1));
  app.add_option("--eval-episodes", cfg.eval_episodes, "Episodes per evaluation, >= 1")
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
    CsvLog csv(log_csv, /*append=*/!resume.empty(), kCsvHeader);
    Trainer<Algo> trainer(cfg);
    if (!resume.empty()) {
      trainer.load(resume);
      if (!quiet) fmt::print("resumed from {} at frame {}\n", resume, trainer.frames());
    }
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    if (!quiet) {
      fmt::print("{} on {}: seed {}, {} frames, {} env(s), {} frames per batch, minibatch {}, {} epochs, cells [{}], "
                 "{}, device {}\n",
                 Algo::kName, Algo::kEnvName, cfg.seed, cfg.total_frames, cfg.num_envs, cfg.frames_per_batch,
                 cfg.mini_batch_size, cfg.num_epochs, fmt::join(cfg.num_cells, ", "), cfg.activation, cfg.device);
    }

    const int64_t start_frames = trainer.frames();
    double last_eval = std::nan("");
    auto last_print = Clock::now();
    auto progress = [&](bool force) {
      if (quiet) return;
      const bool print = force || (tty && seconds_since(last_print) > 0.2);
      if (!print) return;
      const double wall = seconds_since(t0);
      const double fps = (trainer.frames() - start_frames) / std::max(wall, 1e-9);
      const double eta = fps > 0 ? std::max<double>(0, cfg.total_frames - trainer.frames()) / fps : 0;
      const std::string line = fmt::format(
          "frames {:>7}/{} | episodes {:>5} | recent return {:>7} | eval {:>7} | loss objective {:>7.4f} critic "
          "{:>7.4f} | lr {:.2e} | {:>5.0f} frames/s | ETA {:>4.0f}s",
          trainer.frames(), cfg.total_frames, trainer.episodes(), fmt_num(trainer.recent_return()), fmt_num(last_eval),
          trainer.last_loss_objective(), trainer.last_loss_critic(), trainer.lr(), fps, eta);
      if (tty) {
        fmt::print("\r{}", line);
        std::fflush(stdout);
        last_print = Clock::now();
      } else {
        fmt::print("{}\n", line);
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
               "{:.1f} (mean of {} deterministic episodes of up to {} steps)\n",
               cfg.seed, wall, trainer.frames(), trainer.updates(), trainer.episodes(), final_return,
               cfg.eval_episodes, Algo::kMaxEpisodeSteps);
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

}  // namespace onpolicy
