// Writes state dicts and torch::save archives of example policies with rlobj 0.1.0's names
// (TensorDictSequential children "0", "1"; ProbabilisticActor child "module"; TanhModule
// "scale"/"shift"; AddStateIndependentNormalScale "scale"), and the actions they take.
// Built against rlobj 0.1.0's headers (commit 31ce483):
//   g++ -std=c++17 -O1 -I<rlobj 0.1.0>/include -I/usr/include/torch/csrc/api/include make_files.cpp \
//       -ltorch -ltorch_cpu -lc10 -o make_files && ./make_files OUT_DIR
#include <rlobj/interop.h>
#include <rlobj/version.h>
#include <rlobj/modules/actor.h>
#include <rlobj/modules/distributions.h>
#include <rlobj/modules/exploration_type.h>
#include <rlobj/modules/mlp.h>
#include <rlobj/modules/probabilistic.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <torch/torch.h>

namespace m = rlobj::modules;

static void write_values(std::ofstream& out, const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat64).contiguous().reshape({-1});
  out << "[";
  for (int64_t i = 0; i < c.numel(); ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", c[i].item<double>());
    out << (i ? ", " : "") << buf;
  }
  out << "]";
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  torch::manual_seed(7);
  const rlobj::Bounded box(-2.0, 2.0, {1});
  auto ddpg = m::TensorDictSequential(
      m::TensorDictModule(m::MLP(m::MLPOptions(3, 1).num_cells({16, 16}).activation(m::Activation::ReLU)),
                          {"observation"}, {"param"}),
      m::TanhModule({"param"}, {"action"}, box));
  auto ppo = m::ProbabilisticActor(
      m::TensorDictSequential(
          m::TensorDictModule(m::MLP(m::MLPOptions(3, 1).num_cells({16, 16})), {"observation"}, {"loc"}),
          m::TensorDictModule(m::AddStateIndependentNormalScale(1, 1e-8), {"loc"}, {"loc", "scale"})),
      m::TanhNormal::factory(m::TanhNormalOptions::from_spec(box)));
  {
    torch::NoGradGuard no_grad;
    ppo->named_parameters()["module.1.module.scale"].fill_(-0.4);
  }
  const torch::Tensor obs = torch::randn({8, 3}) * 2;
  std::ofstream json(dir + "/actions.json");
  json << "{\n \"rlobj_version\": \"" << RLOBJ_VERSION_STRING << "\",\n \"observation\": ";
  write_values(json, obs);
  struct Item {
    const char* name;
    std::shared_ptr<m::TensorDictModuleBase> actor;
  };
  for (const Item& item : {Item{"ddpg", ddpg.ptr()}, Item{"ppo_pendulum", ppo.ptr()}}) {
    rlobj::save_state_dict(*item.actor, dir + "/" + item.name + "_state_dict.pt");
    torch::serialize::OutputArchive archive;
    item.actor->save(archive);
    archive.save_to(dir + "/" + item.name + "_archive.pt");
    torch::NoGradGuard no_grad;
    m::SetExplorationType deterministic(m::ExplorationType::Deterministic);
    rlobj::TensorDict td({8});
    td.set("observation", obs);
    json << ",\n \"" << item.name << "\": ";
    write_values(json, item.actor->forward(td).get("action"));
    std::printf("%s:", item.name);
    for (const auto& k : rlobj::state_dict(*item.actor).keys()) std::printf(" %s", k.c_str());
    std::printf("\n");
  }
  json << "\n}\n";
  return 0;
}
