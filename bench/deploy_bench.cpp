// Per-action latency of a deployed Pendulum policy (DDPG's: observation 3 -> [cells, cells] ReLU
// -> 1 -> TanhModule into [-2, 2]) in each runtime rlobj exports to: the rlobj actor itself,
// TorchScript (torch::jit::load), and the plain-C export compiled with the C compiler ($CC, else
// cc; -O2) into a shared library and loaded (float32 and int8 weights). One observation per call:
// a controller's loop. ONNX Runtime is timed by bench/onnxruntime_latency.py on the models this
// program writes (scripts/bench_deploy.sh runs both). Prints each file's size first.

#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <rlobj/rlobj.h>
#include <torch/script.h>
#ifdef RLOBJ_BENCH_ONNX
#include <rlobj/deploy/onnx.h>
#endif

namespace rl = rlobj;
namespace fs = std::filesystem;

namespace {

fs::path out_dir() {
  const char* d = std::getenv("RLOBJ_DEPLOY_BENCH_DIR");
  fs::path p = d != nullptr && *d != '\0' ? fs::path(d) : fs::temp_directory_path() / "rlobj_deploy_bench";
  fs::create_directories(p);
  return p;
}

rl::modules::TensorDictSequential make_actor(int64_t cells) {
  torch::manual_seed(0);
  return rl::modules::TensorDictSequential(
      rl::modules::TensorDictModule(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({cells, cells}).activation(
                                        rl::modules::Activation::ReLU)),
                                    {"observation"}, {"param"}),
      rl::modules::TanhModule({"param"}, {"action"}, rl::Bounded(-2.0, 2.0, {1})));
}

using Forward = void (*)(const float*, float*);

/// `<stem>.c` compiled and loaded; its `policy_forward`.
Forward load_c(const fs::path& stem) {
  const char* cc = std::getenv("CC");
  const std::string so = stem.string() + ".so";
  const std::string cmd = std::string(cc != nullptr && *cc != '\0' ? cc : "cc") + " -std=c99 -O2 -shared -fPIC -o " + so +
                          " " + stem.string() + ".c -lm";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot compile " + stem.string() + ".c");
  void* h = ::dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) throw std::runtime_error(::dlerror());
  auto f = reinterpret_cast<Forward>(::dlsym(h, "policy_forward"));
  if (f == nullptr) throw std::runtime_error("no policy_forward in " + so);
  return f;
}

/// Every export of the [cells, cells] policy, written once.
struct Exports {
  rl::modules::TensorDictSequential actor{nullptr};
  torch::jit::Module script;
  Forward c = nullptr, c_int8 = nullptr;
};

Exports& exports(int64_t cells) {
  static std::map<int64_t, std::unique_ptr<Exports>> all;
  auto& e = all[cells];
  if (e) return *e;
  e = std::make_unique<Exports>();
  e->actor = make_actor(cells);
  const fs::path dir = out_dir();
  const std::string name = "policy_" + std::to_string(cells);
  const torch::Tensor example = torch::zeros({1, 3});
  rl::export_policy(e->actor, example, (dir / (name + ".ts")).string());
  e->script = torch::jit::load((dir / (name + ".ts")).string());
  e->script.eval();
  const auto program = rl::deploy::lower_policy(e->actor, example);
  const auto f32 = rl::deploy::export_c(program, (dir / name).string());
  const auto i8 = rl::deploy::export_c(program, (dir / (name + "_int8")).string(), rl::deploy::CExportOptions().int8(true));
  e->c = load_c(dir / name);
  e->c_int8 = load_c(dir / (name + "_int8"));
#ifdef RLOBJ_BENCH_ONNX
  rl::deploy::export_onnx(program, (dir / (name + ".onnx")).string());
  std::printf("deploy_bench: [%ld, %ld] ONNX file %ld bytes\n", static_cast<long>(cells), static_cast<long>(cells),
              static_cast<long>(fs::file_size(dir / (name + ".onnx"))));
#endif
  std::printf("deploy_bench: [%ld, %ld] %ld parameters; TorchScript file %ld bytes; C constants %ld bytes (int8 %ld), "
              "stack %ld bytes; C source %ld bytes (int8 %ld)\n",
              static_cast<long>(cells), static_cast<long>(cells), static_cast<long>(program.parameter_count()),
              static_cast<long>(fs::file_size(dir / (name + ".ts"))), static_cast<long>(f32.constant_bytes),
              static_cast<long>(i8.constant_bytes), static_cast<long>(f32.stack_bytes),
              static_cast<long>(fs::file_size(f32.source_path)), static_cast<long>(fs::file_size(i8.source_path)));
  return *e;
}

void PolicyAct_rlobj(benchmark::State& state) {
  auto& e = exports(state.range(0));
  torch::NoGradGuard no_grad;
  rl::modules::SetExplorationType deterministic(rl::modules::ExplorationType::Deterministic);
  const torch::Tensor obs = torch::randn({1, 3});
  for (auto _ : state) {
    rl::TensorDict td({1});
    td.set("observation", obs);
    benchmark::DoNotOptimize(e.actor(td).get("action").data_ptr<float>());
  }
}

void PolicyAct_torchscript(benchmark::State& state) {
  auto& e = exports(state.range(0));
  torch::NoGradGuard no_grad;
  const torch::Tensor obs = torch::randn({1, 3});
  for (auto _ : state) benchmark::DoNotOptimize(e.script.forward({obs}).toTensor().data_ptr<float>());
}

void act_c(benchmark::State& state, Forward f) {
  float obs[3] = {0.3f, -0.9f, 0.5f}, action[1];
  for (auto _ : state) {
    f(obs, action);
    benchmark::DoNotOptimize(action[0]);
    benchmark::ClobberMemory();
  }
}
void PolicyAct_c(benchmark::State& state) { act_c(state, exports(state.range(0)).c); }
void PolicyAct_c_int8(benchmark::State& state) { act_c(state, exports(state.range(0)).c_int8); }

}  // namespace

BENCHMARK(PolicyAct_rlobj)->ArgName("cells")->Arg(64)->Arg(256);
BENCHMARK(PolicyAct_torchscript)->ArgName("cells")->Arg(64)->Arg(256);
BENCHMARK(PolicyAct_c)->ArgName("cells")->Arg(64)->Arg(256);
BENCHMARK(PolicyAct_c_int8)->ArgName("cells")->Arg(64)->Arg(256);

BENCHMARK_MAIN();
