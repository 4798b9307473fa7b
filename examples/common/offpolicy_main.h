#pragma once

// The program of ddpg_pendulum, td3_pendulum and sac_pendulum (examples/common/offpolicy.h):
// flags, the run, and --collectors where rlobj::distributed is built (RLOBJ_EXAMPLES_DISTRIBUTED).

#include <chrono>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)

#include "common/app.h"
#include "common/offpolicy.h"
// --save-dataset where nlohmann/json is (rlobj::offline, rlobj/data/torchrl_files.h).
#if __has_include(<nlohmann/json.hpp>)
#include <filesystem>

#include <rlobj/data/torchrl_files.h>
#define RLOBJ_EXAMPLES_DATASET 1
#endif
#if RLOBJ_EXAMPLES_DISTRIBUTED
#include "common/distributed.h"
#endif

namespace offpolicy {

/// The whole program: parses the flags, trains, evaluates, prints the summary. Whatever escapes
/// the run (a bad or mismatched checkpoint, a failed write, ...) is one line on stderr.
template <typename Algo>
int run(int argc, char** argv) {
  Config cfg = Algo::defaults();
  std::string preset;
  if constexpr (std::is_same<Algo, TD3>::value) {
    if (preset_in(argc, argv) == "rltools") cfg = TD3::rltools_preset();
  }
  ex::RunFlags flags;
  CLI::App app{fmt::format("Train {} on gymnasium's {} with rlobj (TorchRL's objectives for LibTorch).",
                            Algo::kName, task_name(cfg.env))};
  ex::add_common_flags(app, Algo::kProgram, cfg, flags, "networks, environments, noise, replay buffer",
                       "Environments stepped together (one update per frame)");
  add_flags<Algo>(app, cfg, preset);
  int64_t collectors = 0, weights_every = 1;
  double dist_timeout = 60;
  ex::add_int(app, "--collectors", collectors,
              "Collector processes (0: one process). Launch N+1 processes: scripts/launch.sh -n N+1 -- ... or "
              "torchrun --nproc_per_node N+1 ...; rank 0 learns",
              0);
  ex::add_int(app, "--weights-every", weights_every,
              "With --collectors: push the policy to the collectors every N rounds, >= 1", 1);
  std::string dataset;
#if RLOBJ_EXAMPLES_DATASET
  app.add_option("--save-dataset", dataset,
                 "At the end, write the replay buffer (every transition it holds, exploration included) to this new "
                 "folder in TorchRL's ReplayBuffer.dumps layout: an offline dataset for C++ or Python");
#endif
  ex::add_real(app, "--dist-timeout", dist_timeout,
               "With --collectors: seconds any collective or message may take before the run fails, in (0, 86400]",
               ex::real([](double v) { return v > 0 && v <= 86400; }, "in (0, 86400]"));
  try {
    app.parse(argc, argv);
    check_consistency(cfg);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg.seed = static_cast<uint64_t>(flags.seed);
  const auto t0 = ex::Clock::now();
  const auto announce = [&](const Run<Algo>& r) {
    if (flags.quiet) return;
    fmt::print("{} on {}: seed {}, {} frames, {} env(s), batch {}, cells [{}], {}, device {}{}\n",
               Algo::kName, task_name(cfg.env), cfg.seed, cfg.total_frames, cfg.num_envs, cfg.batch_size, fmt::join(cfg.num_cells, ", "),
               cfg.activation, cfg.device, preset.empty() ? std::string() : ", preset " + preset);
    fmt::print("update: {}{}\n", r.update->path(), r.update->reason().empty() ? "" : " (" + r.update->reason() + ")");
  };

  // Without --collectors only WORLD_SIZE is looked at (a stray RANK in the environment is ignored).
  if (const char* world = std::getenv("WORLD_SIZE"); collectors == 0 && world && std::string(world) != "1") {
    throw std::invalid_argument(fmt::format(
        "{}: started as one of WORLD_SIZE={} processes without --collectors: pass --collectors N with N+1 processes "
        "(rank 0 learns, the others collect)", Algo::kProgram, world));
  }
  if (collectors == 0) {
#if RLOBJ_EXAMPLES_DATASET
    // Refused before training, not after it.
    if (!dataset.empty() && std::filesystem::exists(dataset)) {
      throw std::invalid_argument(fmt::format("{}: --save-dataset {}: the folder exists; remove it or pick another",
                                              Algo::kProgram, dataset));
    }
#endif
    Run<Algo> r(cfg);
    ex::resume_if_asked(*r.trainer, flags);
    announce(r);
    const int status = ex::train_and_report(*r.trainer, report_of(r, cfg), cfg, flags, t0);
#if RLOBJ_EXAMPLES_DATASET
    if (!dataset.empty()) {
      rlobj::data::dump_torchrl_buffer(r.rb, dataset);
      fmt::print("dataset: {} transitions written to {} (TorchRL's ReplayBuffer.dumps layout)\n", r.rb.size(), dataset);
    }
#endif
    return status;
  }
  if (!dataset.empty()) {
    throw std::invalid_argument(fmt::format("{}: --save-dataset is for one-process runs (not with --collectors)",
                                            Algo::kProgram));
  }
#if RLOBJ_EXAMPLES_DISTRIBUTED
  namespace dist = rlobj::distributed;
  DistributedSettings settings{collectors, weights_every, dist_timeout};
  const auto launch = dist::LaunchInfo::from_env();
  if (launch.world_size != collectors + 1) {
    throw std::invalid_argument(fmt::format(
        "{}: --collectors {} needs {} processes (the learner and {} collectors), but WORLD_SIZE={}: launch it with "
        "scripts/launch.sh -n {} -- {} ... or torchrun --nproc_per_node {} ...", Algo::kProgram, collectors,
        collectors + 1, collectors, launch.world_size, collectors + 1, Algo::kProgram, collectors + 1));
  }
  dist::ProcessGroup pg(launch, dist::ProcessGroupOptions().timeout(
                                    std::chrono::milliseconds(static_cast<int64_t>(dist_timeout * 1000))));
  pg.check_same("configuration",
                cfg.fingerprint() + " " + settings.fingerprint() + " resume=" + std::to_string(!flags.resume.empty()));
  dist::DistributedCollector channel(pg);
  // A failure on any rank is left in the store, so that the others name it when they notice.
  try {
    if (pg.rank() != 0) {
      const int64_t frames = run_collector<Algo>(pg, channel, cfg, settings);
      pg.finish();
      if (!flags.quiet) fmt::print("collector rank {}: sent {} frames in {:.1f} s\n", pg.rank(), frames, ex::seconds_since(t0));
      return 0;
    }
    std::optional<Run<Algo>> r;
    auto remote = std::make_shared<RemoteCollector>(channel, cfg, collectors, [&r] { return r->policy_parameters(); });
    r.emplace(cfg, Collection{remote, collectors * cfg.num_envs});
    // The collectors pull the policy after every `weights_every` rounds, once the round is trained on.
    r->trainer->register_op(rlobj::trainers::Stage::PostSteps, [&](rlobj::trainers::StepContext&) {
      if (remote->rounds() % weights_every == 0) channel.push_weights(r->policy_parameters());
    });
    ex::resume_if_asked(*r->trainer, flags);
    announce(*r);
    if (!flags.quiet) {
      fmt::print("distributed: rank 0 learns, {} collector processes, weights pushed every {} round(s) of {} frames\n",
                 collectors, weights_every, collectors * cfg.num_envs);
    }
    const int status = ex::train_and_report(*r->trainer, report_of(*r, cfg), cfg, flags, t0);
    pg.finish();
    return status;
  } catch (const std::exception& e) {
    pg.report_failure(ex::first_line(e.what()));
    throw;
  }
#else
  (void)weights_every;
  throw std::invalid_argument(fmt::format("{}: --collectors needs rlobj::distributed, which this build does not have "
                                          "(LibTorch's c10d Gloo headers and Gloo's own: apt-get install libgloo-dev)",
                                          Algo::kProgram));
#endif
}

/// The program's entry point.
template <typename Algo>
int main(int argc, char** argv) {
  return ex::guarded_main(Algo::kProgram, [&] { return run<Algo>(argc, argv); });
}

}  // namespace offpolicy
