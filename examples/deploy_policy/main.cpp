// deploy_policy: from a ddpg_pendulum checkpoint to a policy that runs without rlobj — a
// TorchScript file, an ONNX model or plain C99 — and Pendulum episodes checking it.
//
//   ddpg_pendulum --checkpoint ddpg.pt                                    # train (the README's main job)
//   deploy_policy --checkpoint ddpg.pt --output policy.ts                 # TorchScript (the default)
//   deploy_policy --checkpoint ddpg.pt --output policy.onnx --format onnx # ONNX
//   deploy_policy --checkpoint ddpg.pt --output policy --format c         # policy.h + policy.c
//   deploy_policy --help
//
// 1. Rebuilds the trainer the checkpoint was made with (its settings are stored in it) and
//    restores it: the actor is the trained one.
// 2. Exports the actor (observation -> action, deterministic): rlobj::export_policy traces it into
//    TorchScript; rlobj::deploy::lower_policy makes it a program that export_onnx and export_c
//    write (docs/deployment.md). --state-dict also writes its parameters for Python.
// 3. Runs --episodes Pendulum episodes (200 steps), checking every action:
//    TorchScript: torch::jit::load()s the file and acts with it; its actions must equal the
//      actor's exactly.
//    C: compiles the source with the C compiler ($CC, else cc) into a shared library, loads it and
//      acts with <prefix>_forward_batch; its actions must be within the derived tolerance of the
//      actor's (PolicyProgram::check).
//    ONNX: checks the model with the ONNX checker; the actor acts, and ONNX Runtime (through a
//      Python with onnxruntime: --onnxruntime-python) computes the actions for every observation
//      of the episodes afterwards, each within the derived tolerance of the actor's.

#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <rlobj/rlobj.h>
#include <torch/script.h>
#ifdef RLOBJ_EXAMPLES_ONNX
#include <rlobj/deploy/onnx.h>
#endif

#include "common/cli.h"
#include "common/offpolicy.h"

namespace rl = rlobj;
namespace fs = std::filesystem;

namespace {

/// A scratch folder, removed on destruction.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "rlobj_deploy_XXXXXX").string();
    TORCH_CHECK(::mkdtemp(pattern.data()) != nullptr, "deploy_policy: cannot create a scratch folder in ",
                fs::temp_directory_path().string());
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// The C policy at `<stem>.c`, compiled into a shared library and loaded: `<prefix>_forward_batch`.
class CPolicy {
 public:
  CPolicy(const std::string& source, const fs::path& dir) {
    const char* cc = std::getenv("CC");
    const std::string compiler = cc != nullptr && *cc != '\0' ? cc : "cc";
    const fs::path so = dir / "policy.so", log = dir / "cc.log";
    const std::string cmd = shell_quote(compiler) + " -std=c99 -O2 -shared -fPIC -o " + shell_quote(so.string()) + " " +
                            shell_quote(source) + " -lm 2>" + shell_quote(log.string());
    if (std::system(cmd.c_str()) != 0) {
      std::ifstream in(log);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      TORCH_CHECK(false, "cannot compile the C policy with \"", compiler, "\" (set CC to a C compiler): ",
                  rlobj_examples::first_line(text));
    }
    handle_ = ::dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
    TORCH_CHECK(handle_ != nullptr, "cannot load the compiled C policy: ", ::dlerror());
    forward_ = reinterpret_cast<Forward>(::dlsym(handle_, "policy_forward_batch"));
    TORCH_CHECK(forward_ != nullptr, "the compiled C policy has no policy_forward_batch");
  }
  ~CPolicy() {
    if (handle_ != nullptr) ::dlclose(handle_);
  }
  CPolicy(const CPolicy&) = delete;
  CPolicy& operator=(const CPolicy&) = delete;
  torch::Tensor operator()(const torch::Tensor& obs, int64_t action_size) const {
    const torch::Tensor x = obs.to(torch::kFloat32).contiguous();
    torch::Tensor out = torch::empty({x.size(0), action_size}, torch::kFloat32);
    forward_(x.data_ptr<float>(), out.data_ptr<float>(), static_cast<long>(x.size(0)));
    return out;
  }

 private:
  using Forward = void (*)(const float*, float*, long);
  void* handle_ = nullptr;
  Forward forward_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, output, state_dict_path, format = "torchscript";
  const char* env_python = std::getenv("RLOBJ_ONNXRUNTIME_PYTHON");
  std::string python = env_python != nullptr && *env_python != '\0' ? env_python : "python3";
  int64_t seed = 0, episodes = 1;
  CLI::App app{"Export the policy of a ddpg_pendulum checkpoint to TorchScript, ONNX or C, and run Pendulum checking "
               "every action it takes."};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("deploy_policy: error: {} (see --help)\n", rlobj_examples::first_line(e.what()));
  });
  app.add_option("--checkpoint", checkpoint, "A checkpoint written by ddpg_pendulum --checkpoint")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--output", output, "Where to write the policy (atomic); with --format c, the stem of <stem>.h and <stem>.c")
      ->required()
      ->check(rlobj_examples::writable_file_path());
  app.add_option("--format", format, "torchscript, onnx or c")
      ->capture_default_str()
      ->check(CLI::IsMember({"torchscript", "onnx", "c"}));
  app.add_option("--onnxruntime-python", python,
                 "With --format onnx: a Python with onnxruntime that runs the model (default: $RLOBJ_ONNXRUNTIME_PYTHON, "
                 "else python3)");
  app.add_option("--state-dict", state_dict_path, "Also write the actor's state dict here, for Python's torch.load")
      ->check(rlobj_examples::writable_file_path());
  app.add_option("--seed", seed, "Seed of the Pendulum episodes' start states, >= 0")
      ->capture_default_str()
      ->transform(rlobj_examples::int_at_least(0));
  app.add_option("--episodes", episodes, "Episodes to run with the exported policy (together, batched), >= 1")
      ->capture_default_str()
      ->transform(rlobj_examples::int_at_least(1));
  app.final_callback([&] {
    std::vector<std::pair<std::string, std::string>> paths{{"--checkpoint", checkpoint}, {"--state-dict", state_dict_path}};
    if (format == "c") {
      paths.push_back({"--output (.h)", output + ".h"});
      paths.push_back({"--output (.c)", output + ".c"});
    } else {
      paths.push_back({"--output", output});
    }
    rlobj_examples::refuse_same_file(paths);
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

    // 2. Export, and the exported policy in its runtime.
    const int64_t n_obs = 3;  // Pendulum's [cos theta, sin theta, theta dot]
    const torch::Tensor example = torch::zeros({1, n_obs});
    ScratchDir scratch;
    std::function<torch::Tensor(const torch::Tensor&)> exported;  // observation -> action (TorchScript, C)
    std::optional<torch::jit::Module> script;
    std::optional<CPolicy> c_policy;
    std::optional<rl::deploy::PolicyProgram> program;
    std::string what;
    if (format == "torchscript") {
      rl::export_policy(actor, example, output);
      fmt::print("exported the policy to {} (TorchScript)\n", output);
      script = torch::jit::load(output);  // what a deployment does: load the file and act with it
      script->eval();
      exported = [&](const torch::Tensor& obs) { return script->forward({obs}).toTensor(); };
      what = "TorchScript";
    } else {
      program = rl::deploy::lower_policy(actor, example);
      if (format == "c") {
        const auto info = rl::deploy::export_c(*program, output);
        fmt::print("exported the policy to {} and {} (C99; {} bytes of constants, {} bytes of stack per call)\n",
                   info.header_path, info.source_path, info.constant_bytes, info.stack_bytes);
        c_policy.emplace(info.source_path, scratch.path);
        const int64_t n_act = program->action().size;
        exported = [&, n_act](const torch::Tensor& obs) { return (*c_policy)(obs, n_act); };
        what = "C";
      } else {
#ifdef RLOBJ_EXAMPLES_ONNX
        rl::deploy::export_onnx(*program, output);
        rl::deploy::check_onnx(output);
        fmt::print("exported the policy to {} (ONNX, opset 17; the ONNX checker accepts it)\n", output);
        what = "ONNX Runtime";
#else
        TORCH_CHECK(false, "--format onnx: this deploy_policy was built without rlobj::onnx (Debian: apt-get install "
                    "libonnx-dev libprotobuf-dev, then reconfigure)");
#endif
      }
    }
    if (!state_dict_path.empty()) {
      rl::save_state_dict(actor, state_dict_path);
      fmt::print("wrote the actor's state dict to {} ({} tensors)\n", state_dict_path, rl::state_dict(*actor).size());
    }

    // 3. Episodes. TorchScript and C act; with ONNX the actor acts and ONNX Runtime's actions
    // for the same observations are checked afterwards.
    auto env = rl::envs::Pendulum(rl::envs::PendulumOptions().batch_size({episodes}).seed(static_cast<uint64_t>(seed)));
    rl::modules::SetExplorationType deterministic(rl::modules::ExplorationType::Deterministic);
    torch::NoGradGuard no_grad;
    rl::TensorDict td = env.reset();
    torch::Tensor returns = torch::zeros({episodes});
    double max_diff = 0, max_ratio = 0;
    bool ok = true;
    std::vector<torch::Tensor> seen, actor_actions;
    auto compare = [&](const torch::Tensor& obs, const torch::Tensor& expected, const torch::Tensor& got) {
      if (!program) {  // TorchScript: exactly the actor's
        const double d = (expected - got).abs().max().item<double>();
        max_diff = std::max(max_diff, d);
        ok = ok && d == 0;
        return;
      }
      const auto r = program->check(obs, expected, got);
      max_diff = std::max(max_diff, r.max_abs_diff);
      max_ratio = std::max(max_ratio, r.max_ratio);
      ok = ok && r.ok;
    };
    for (int step = 0; step < 200; ++step) {
      const torch::Tensor obs = td.get("observation");
      rl::TensorDict check({episodes});
      check.set("observation", obs);
      const torch::Tensor expected = actor(check).get("action");
      torch::Tensor action = expected;
      if (exported) {
        action = exported(obs);
        compare(obs, expected, action);
      } else {
        seen.push_back(obs);
        actor_actions.push_back(expected);
      }
      td.set("action", action);
      td = env.step(td);
      returns += td.get({"next", "reward"}).reshape({episodes});
      td = rl::envs::step_mdp(td);
    }
    if (!exported) {  // ONNX Runtime on every observation of the episodes
      const torch::Tensor obs = torch::cat(seen).to(torch::kFloat32).contiguous();
      const fs::path dir = scratch.path;
      fs::copy_file(output, dir / "policy.onnx");
      {
        std::ofstream raw(dir / "policy.obs.bin", std::ios::binary);
        raw.write(static_cast<const char*>(obs.data_ptr()), static_cast<std::streamsize>(obs.numel() * 4));
        std::ofstream(dir / "policy.shape") << obs.size(0) << " " << obs.size(1) << " float32\n";
        TORCH_CHECK(raw.good(), "cannot write the observations to ", dir.string());
      }
      const std::string cmd = shell_quote(python) + " " + shell_quote(RLOBJ_RUN_ONNXRUNTIME_SCRIPT) + " " +
                              shell_quote(dir.string()) + " > " + shell_quote((dir / "ort.log").string()) + " 2>&1";
      if (std::system(cmd.c_str()) != 0) {
        std::ifstream in(dir / "ort.log");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        TORCH_CHECK(false, "ONNX Runtime did not run the model (", python, " ", RLOBJ_RUN_ONNXRUNTIME_SCRIPT,
                    "; give a Python with onnxruntime with --onnxruntime-python): ", text);
      }
      torch::Tensor ort = torch::empty({obs.size(0), program->action().size}, torch::kFloat32);
      std::ifstream in(dir / "policy.ort.bin", std::ios::binary);
      in.read(static_cast<char*>(ort.data_ptr()), static_cast<std::streamsize>(ort.numel() * 4));
      TORCH_CHECK(in.gcount() == static_cast<std::streamsize>(ort.numel() * 4), "ONNX Runtime wrote too few actions");
      compare(obs, torch::cat(actor_actions), ort);
    }
    for (int64_t e = 0; e < episodes; ++e) fmt::print("episode {}: return {:.1f}\n", e, returns[e].item<double>());
    if (program && !exported) {
      fmt::print("deploy summary: {} episode(s) of 200 steps with the actor, mean return {:.1f}; the {} policy's actions "
                 "for all {} observations checked, max |{} action - actor action| = {:.3g} ({:.3f} of the derived "
                 "tolerance){}\n",
                 episodes, returns.mean().item<double>(), what, 200 * episodes, what, max_diff, max_ratio,
                 ok ? "" : ": FAILED");
    } else if (program) {
      fmt::print("deploy summary: {} episode(s) of 200 steps checked with the {} policy, mean return {:.1f}, "
                 "max |{} action - actor action| = {:.3g} ({:.3f} of the derived tolerance){}\n",
                 episodes, what, returns.mean().item<double>(), what, max_diff, max_ratio, ok ? "" : ": FAILED");
    } else {
      fmt::print("deploy summary: {} episode(s) of 200 steps with the TorchScript policy, mean return {:.1f}, "
                 "max |TorchScript action - actor action| = {:.3g}\n",
                 episodes, returns.mean().item<double>(), max_diff);
    }
    return ok ? 0 : 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "deploy_policy: error: %s\n", rlobj_examples::first_line(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {  // std::bad_alloc and the like: one line too
    std::fprintf(stderr, "deploy_policy: error: %s\n", rlobj_examples::first_line(e.what()).c_str());
    return 1;
  }
}
