// deploy_policy: from a ddpg_pendulum checkpoint to a TorchScript policy that runs without
// rlobj, and a Pendulum episode with it.
//
//   ddpg_pendulum --checkpoint ddpg.pt                       # train (the README's main job)
//   deploy_policy --checkpoint ddpg.pt --output policy.ts    # export, reload, run
//   deploy_policy --help
//
// 1. Rebuilds the trainer the checkpoint was made with (its settings are stored in it) and
//    restores it: the actor is the trained one.
// 2. rlobj::export_policy traces the actor (observation -> action, deterministic) into a
//    TorchScript file; --state-dict also writes its parameters for Python
//    (`actor.load_state_dict(torch.load(path))` on TorchRL's Actor).
// 3. torch::jit::load()s the file, as a deployment would, and runs --episodes Pendulum episodes
//    (200 steps) with it, checking at every step that it acts exactly as the actor.

#include <cmath>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <rlobj/rlobj.h>
#include <torch/script.h>

#include "common/cli.h"
#include "common/offpolicy.h"

namespace rl = rlobj;

int main(int argc, char** argv) {
  std::string checkpoint, output, state_dict_path;
  int64_t seed = 0, episodes = 1;
  CLI::App app{"Export the policy of a ddpg_pendulum checkpoint to TorchScript, reload it and run Pendulum with it."};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("deploy_policy: error: {} (see --help)\n", rlobj_examples::first_line(e.what()));
  });
  app.add_option("--checkpoint", checkpoint, "A checkpoint written by ddpg_pendulum --checkpoint")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--output", output, "Where to write the TorchScript policy (atomic)")
      ->required()
      ->check(rlobj_examples::writable_file_path());
  app.add_option("--state-dict", state_dict_path, "Also write the actor's state dict here, for Python's torch.load")
      ->check(rlobj_examples::writable_file_path());
  app.add_option("--seed", seed, "Seed of the Pendulum episodes' start states, >= 0")
      ->capture_default_str()
      ->transform(rlobj_examples::int_at_least(0));
  app.add_option("--episodes", episodes, "Episodes to run with the exported policy (together, batched), >= 1")
      ->capture_default_str()
      ->transform(rlobj_examples::int_at_least(1));
  app.final_callback([&] {
    rlobj_examples::refuse_same_file(
        {{"--checkpoint", checkpoint}, {"--output", output}, {"--state-dict", state_dict_path}});
  });
  CLI11_PARSE(app, argc, argv);

  try {
    // 1. The trained actor, from the checkpoint and the settings stored in it.
    torch::serialize::InputArchive archive;
    rl::load_archive(archive, checkpoint);
    rl::check_format(archive, std::string("rlobj.examples.") + offpolicy::DDPG::kProgram, "deploy_policy");
    c10::IValue fingerprint;
    archive.read("config", fingerprint);
    auto cfg = offpolicy::Config::from_fingerprint(fingerprint.toStringRef(), offpolicy::DDPG::defaults());
    offpolicy::Run<offpolicy::DDPG> run(cfg);
    run.trainer->load(checkpoint);
    auto actor = run.actor;
    fmt::print("loaded {} ({} frames of training; {})\n", checkpoint, run.trainer->frames(), cfg.fingerprint());

    // 2. Export.
    const int64_t n_obs = 3;  // Pendulum's [cos theta, sin theta, theta dot]
    rl::export_policy(actor, torch::zeros({1, n_obs}), output);
    fmt::print("exported the policy to {}\n", output);
    if (!state_dict_path.empty()) {
      rl::save_state_dict(actor, state_dict_path);
      fmt::print("wrote the actor's state dict to {} ({} tensors)\n", state_dict_path, rl::state_dict(*actor).size());
    }

    // 3. What a deployment does: load the file and act with it.
    torch::jit::Module policy = torch::jit::load(output);
    policy.eval();
    auto env = rl::envs::Pendulum(rl::envs::PendulumOptions().batch_size({episodes}).seed(static_cast<uint64_t>(seed)));
    rl::modules::SetExplorationType deterministic(rl::modules::ExplorationType::Deterministic);
    torch::NoGradGuard no_grad;
    rl::TensorDict td = env.reset();
    torch::Tensor returns = torch::zeros({episodes});
    double max_diff = 0;
    for (int step = 0; step < 200; ++step) {
      const torch::Tensor obs = td.get("observation");
      const torch::Tensor action = policy.forward({obs}).toTensor();
      rl::TensorDict check({episodes});
      check.set("observation", obs);
      max_diff = std::max(max_diff, (actor(check).get("action") - action).abs().max().item<double>());
      td.set("action", action);
      td = env.step(td);
      returns += td.get({"next", "reward"}).reshape({episodes});
      td = rl::envs::step_mdp(td);
    }
    for (int64_t e = 0; e < episodes; ++e) fmt::print("episode {}: return {:.1f}\n", e, returns[e].item<double>());
    fmt::print("deploy summary: {} episode(s) of 200 steps with the TorchScript policy, mean return {:.1f}, "
               "max |TorchScript action - actor action| = {:.3g}\n",
               episodes, returns.mean().item<double>(), max_diff);
    return max_diff == 0 ? 0 : 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "deploy_policy: error: %s\n", rlobj_examples::first_line(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {  // std::bad_alloc and the like: one line too
    std::fprintf(stderr, "deploy_policy: error: %s\n", rlobj_examples::first_line(e.what()).c_str());
    return 1;
  }
}
