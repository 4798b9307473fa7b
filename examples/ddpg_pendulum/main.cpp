// ddpg_pendulum: trains DDPG on gym's Pendulum-v1 with rlobj, evaluates it, logs it.
//
//   ddpg_pendulum --seed 0 --total-frames 20000 --log-csv returns.csv
//   ddpg_pendulum --help

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)

#include "trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt_num(double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.1f}", v); }

// The CSV log: one row per evaluation.
class CsvLog {
 public:
  explicit CsvLog(const std::string& path, bool append) {
    if (path.empty()) return;
    const bool exists = std::ifstream(path).good();
    out_ = std::make_unique<std::ofstream>(path, append ? std::ios::app : std::ios::trunc);
    if (!*out_) throw std::runtime_error("cannot open --log-csv file " + path);
    if (!append || !exists) *out_ << "frames,updates,episodes,wall_s,eval_return,recent_return,loss_actor,loss_value\n";
  }
  void row(const ddpg_pendulum::Trainer& t, double wall, double eval_return) {
    if (!out_) return;
    *out_ << fmt::format("{},{},{},{:.3f},{:.4f},{:.4f},{:.6f},{:.6f}\n", t.frames(), t.updates(), t.episodes(), wall,
                         eval_return, t.recent_return(), t.last_loss_actor(), t.last_loss_value());
    out_->flush();
  }

 private:
  std::unique_ptr<std::ofstream> out_;
};

}  // namespace

int main(int argc, char** argv) {
  ddpg_pendulum::Config cfg;
  std::string checkpoint, resume, log_csv;
  bool quiet = false;

  CLI::App app{"Train DDPG on gym's Pendulum-v1 with rlobj (TorchRL's objectives for LibTorch)."};
  app.add_option("--seed", cfg.seed, "Random seed (networks, environments, noise, replay buffer)")->capture_default_str();
  app.add_option("--total-frames", cfg.total_frames, "Environment steps to collect")->capture_default_str();
  app.add_option("--num-envs", cfg.num_envs, "Pendulums stepped together (one update per frame)")->capture_default_str();
  app.add_option("--batch-size", cfg.batch_size, "Transitions per gradient step")->capture_default_str();
  app.add_option("--lr-actor", cfg.lr_actor, "Adam learning rate of the actor")->capture_default_str();
  app.add_option("--lr-critic", cfg.lr_critic, "Adam learning rate of the critic")->capture_default_str();
  app.add_option("--gamma", cfg.gamma, "Discount factor")->capture_default_str();
  app.add_option("--tau", cfg.tau, "Soft target update weight (SoftUpdate tau = 1 - eps)")->capture_default_str();
  app.add_option("--num-cells", cfg.num_cells, "Hidden layer sizes of actor and critic")->capture_default_str()->delimiter(',');
  app.add_option("--activation", cfg.activation, "Hidden activation: relu, tanh, elu, ...")->capture_default_str();
  app.add_option("--init-random-frames", cfg.init_random_frames, "Random-action frames before learning starts")
      ->capture_default_str();
  app.add_option("--buffer-size", cfg.buffer_size, "Replay buffer capacity")->capture_default_str();
  app.add_option("--noise-std", cfg.noise_std, "Std of the Gaussian exploration noise")->capture_default_str();
  app.add_option("--eval-every", cfg.eval_every, "Evaluate (10 deterministic episodes) every N frames")->capture_default_str();
  app.add_option("--device", cfg.device, "Torch device (cpu, cuda, cuda:1, ...)")->capture_default_str();
  app.add_option("--checkpoint", checkpoint, "Save a checkpoint here at each evaluation and at the end (atomic)");
  app.add_option("--resume", resume, "Resume from this checkpoint")->check(CLI::ExistingFile);
  app.add_option("--log-csv", log_csv, "Append evaluation returns and losses to this CSV file");
  app.add_flag("--quiet", quiet, "Only print the final summary");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto t0 = Clock::now();
    ddpg_pendulum::Trainer trainer(cfg);
    if (!resume.empty()) {
      trainer.load(resume);
      if (!quiet) fmt::print("resumed from {} at frame {}\n", resume, trainer.frames());
    }
    CsvLog csv(log_csv, /*append=*/!resume.empty());
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    if (!quiet) {
      fmt::print("DDPG on Pendulum-v1: seed {}, {} frames, {} env(s), batch {}, cells [{}], {}, device {}\n", cfg.seed,
                 cfg.total_frames, cfg.num_envs, cfg.batch_size, fmt::join(cfg.num_cells, ", "), cfg.activation,
                 cfg.device);
    }

    const int64_t start_frames = trainer.frames();
    double last_eval = std::nan("");
    auto last_print = Clock::now();
    auto progress = [&](bool force) {
      if (quiet) return;
      const double wall = seconds_since(t0);
      const double fps = (trainer.frames() - start_frames) / std::max(wall, 1e-9);
      const double eta = fps > 0 ? (cfg.total_frames - trainer.frames()) / fps : 0;
      const std::string line = fmt::format(
          "frames {:>6}/{} | episodes {:>4} | recent return {:>7} | eval {:>7} | loss actor {:>7.3f} value {:>7.4f} | "
          "{:>5.0f} frames/s | ETA {:>4.0f}s",
          trainer.frames(), cfg.total_frames, trainer.episodes(), fmt_num(trainer.recent_return()), fmt_num(last_eval),
          trainer.last_loss_actor(), trainer.last_loss_value(), fps, eta);
      if (tty) {
        // A live line redrawn in place, at most 5 times a second.
        if (force || seconds_since(last_print) > 0.2) {
          fmt::print("\r{}", line);
          std::fflush(stdout);
          last_print = Clock::now();
        }
      } else if (force) {
        fmt::print("{}\n", line);  // logs get one line per evaluation, not a flood
      }
    };

    // Periodic evaluations; the one at the last frame is the final evaluation below.
    int64_t next_eval = (trainer.frames() / cfg.eval_every + 1) * cfg.eval_every;
    while (trainer.step()) {
      if (cfg.eval_every > 0 && trainer.frames() >= next_eval && trainer.frames() < cfg.total_frames) {
        last_eval = trainer.evaluate();
        csv.row(trainer, seconds_since(t0), last_eval);
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
    csv.row(trainer, wall, final_return);
    if (!checkpoint.empty()) trainer.save(checkpoint);
    if (tty && !quiet) fmt::print("\n");
    fmt::print("summary: seed {} | wall time {:.1f} s | env steps {} | updates {} | episodes {} | final eval return "
               "{:.1f} (mean of {} deterministic episodes of 200 steps)\n",
               cfg.seed, wall, trainer.frames(), trainer.updates(), trainer.episodes(), final_return,
               cfg.eval_episodes);
    return 0;
  } catch (const c10::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
