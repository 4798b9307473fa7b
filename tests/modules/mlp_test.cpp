#include <rlobj/modules/mlp.h>

#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

using Catch::Matchers::Contains;
using rlobj::modules::Activation;
using rlobj::modules::MLP;
using rlobj::modules::MLPOptions;

namespace {
std::vector<std::string> param_names(const torch::nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& p : m.named_parameters()) out.push_back(p.key());
  return out;
}
std::vector<std::string> child_names(const torch::nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& c : m.named_children()) out.push_back(c.key());
  return out;
}
}  // namespace

TEST_CASE("MLP: TorchRL layout, names and default Tanh", "[modules][mlp]") {
  MLP mlp(MLPOptions(3, 1).num_cells({32, 32}));
  CHECK(param_names(*mlp) ==
        std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"});
  CHECK(child_names(*mlp) == std::vector<std::string>{"0", "1", "2", "3", "4"});
  CHECK(mlp->named_children()["1"]->name() == "torch::nn::TanhImpl");
  CHECK(mlp->named_parameters()["0.weight"].sizes() == torch::IntArrayRef({32, 3}));
  CHECK(mlp->named_parameters()["4.weight"].sizes() == torch::IntArrayRef({1, 32}));

  auto x = torch::randn({8, 3});
  auto y = mlp->forward(x);
  CHECK(y.sizes() == torch::IntArrayRef({8, 1}));
  // The same computation written out: Linear, tanh, Linear, tanh, Linear.
  auto p = mlp->named_parameters();
  auto h = torch::tanh(torch::addmm(p["0.bias"], x, p["0.weight"].t()));
  h = torch::tanh(torch::addmm(p["2.bias"], h, p["2.weight"].t()));
  auto expected = torch::addmm(p["4.bias"], h, p["4.weight"].t());
  CHECK(torch::equal(y, expected));

  // Works on any leading batch shape.
  CHECK(mlp->forward(torch::randn({2, 5, 3})).sizes() == torch::IntArrayRef({2, 5, 1}));
}

TEST_CASE("MLP: default LibTorch Linear initialisation", "[modules][mlp]") {
  torch::manual_seed(0);
  MLP mlp(MLPOptions(4, 2).num_cells({64}));
  for (const auto& p : mlp->named_parameters()) {
    const int64_t fan_in = p.key().front() == '0' ? 4 : 64;
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    CHECK(p.value().abs().max().item<double>() <= bound);
    CHECK(p.value().abs().max().item<double>() > 0.5 * bound);
  }
}

TEST_CASE("MLP: options", "[modules][mlp]") {
  SECTION("num_cells with depth repeats a single size") {
    MLP m(MLPOptions(2, 1).num_cells({16}).depth(3));
    CHECK(m->hidden_sizes() == std::vector<int64_t>{16, 16, 16});
    MLP d(MLPOptions(2, 1).depth(2));
    CHECK(d->hidden_sizes() == std::vector<int64_t>{32, 32});
    REQUIRE_THROWS_WITH(MLP(MLPOptions(2, 1).num_cells({8, 8}).depth(3)), Contains("depth 3 does not match"));
  }
  SECTION("no hidden layer without num_cells (TorchRL >= 0.7)") {
    MLP m(MLPOptions(2, 3));
    CHECK(param_names(*m) == std::vector<std::string>{"0.weight", "0.bias"});
  }
  SECTION("activation, activate_last_layer, bias_last_layer") {
    MLP m(MLPOptions(2, 1).num_cells({4}).activation(Activation::ReLU).activate_last_layer(true).bias_last_layer(false));
    CHECK(child_names(*m) == std::vector<std::string>{"0", "1", "2", "3"});
    CHECK(m->named_children()["3"]->name() == "torch::nn::ReLUImpl");
    CHECK_FALSE(m->named_parameters().contains("2.bias"));
    CHECK((m->forward(torch::randn({10, 2})) >= 0).all().item<bool>());
  }
  SECTION("dropout and layer norm follow TorchRL's Linear, Dropout, Norm, Act order") {
    MLP m(MLPOptions(2, 1).num_cells({4}).dropout(0.5).layer_norm(true));
    CHECK(child_names(*m) == std::vector<std::string>{"0", "1", "2", "3", "4"});
    CHECK(m->named_children()["1"]->name() == "torch::nn::DropoutImpl");
    CHECK(m->named_children()["2"]->name() == "torch::nn::LayerNormImpl");
    m->eval();
    auto x = torch::randn({3, 2});
    CHECK(torch::equal(m->forward(x), m->forward(x)));  // no dropout in eval mode
  }
  SECTION("every activation runs") {
    for (auto a : {Activation::Tanh, Activation::ReLU, Activation::ELU, Activation::LeakyReLU,
                   Activation::GELU, Activation::Sigmoid, Activation::SiLU, Activation::Identity}) {
      MLP m(MLPOptions(2, 1).num_cells({4}).activation(a));
      CHECK(m->forward(torch::randn({3, 2})).sizes() == torch::IntArrayRef({3, 1}));
      CHECK(rlobj::modules::activation_from_string(rlobj::modules::activation_name(a)) == a);
    }
    REQUIRE_THROWS_AS(rlobj::modules::activation_from_string("swish2"), c10::ValueError);
  }
  SECTION("bad options and inputs") {
    REQUIRE_THROWS_AS(MLP(MLPOptions(0, 1)), c10::ValueError);
    REQUIRE_THROWS_AS(MLP(MLPOptions(2, 1).num_cells({0})), c10::ValueError);
    REQUIRE_THROWS_AS(MLP(MLPOptions(2, 1).dropout(1.0)), c10::ValueError);
    MLP m(MLPOptions(3, 1).num_cells({4}));
    REQUIRE_THROWS_WITH(m->forward(torch::randn({5, 4})), Contains("last dim 3"));
  }
}

TEST_CASE("MLP: clone() is an independent deep copy", "[modules][mlp]") {
  MLP mlp(MLPOptions(3, 1).num_cells({8, 8}));
  auto copy = std::dynamic_pointer_cast<rlobj::modules::MLPImpl>(mlp->clone());
  REQUIRE(copy != nullptr);
  auto x = torch::randn({4, 3});
  CHECK(torch::equal(copy->forward(x), mlp->forward(x)));
  {
    torch::NoGradGuard g;
    for (auto& p : copy->parameters()) p.add_(1.0);
  }
  CHECK_FALSE(torch::equal(copy->forward(x), mlp->forward(x)));
  CHECK(copy->linears().size() == 3);
  CHECK(copy->linears()[0]->weight.data_ptr() == copy->named_parameters()["0.weight"].data_ptr());
  CHECK(copy->linears()[0]->weight.data_ptr() != mlp->named_parameters()["0.weight"].data_ptr());
}

TEST_CASE("MLP: weights from a generator of its own, as the global one would draw them", "[modules][mlp]") {
  using rlobj::modules::MLP;
  using rlobj::modules::MLPOptions;
  auto opts = MLPOptions(3, 2).num_cells({8, 8});
  torch::manual_seed(11);
  MLP global_a(opts), global_b(MLPOptions(4, 1).num_cells({8}));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  torch::manual_seed(999);  // the global generator must not matter
  MLP own_a(MLPOptions(opts).generator(gen)), own_b(MLPOptions(4, 1).num_cells({8}).generator(gen));
  auto pa = global_a->parameters(), pb = own_a->parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));  // bit for bit
  auto qa = global_b->parameters(), qb = own_b->parameters();
  for (size_t i = 0; i < qa.size(); ++i) CHECK(torch::equal(qa[i], qb[i]));  // one stream, in sequence
  // A clone is a copy and does not draw from the generator.
  auto probe = at::make_generator<at::CPUGeneratorImpl>(5);
  MLP net(MLPOptions(opts).generator(probe));
  auto before = probe.get_state();
  auto copy = std::dynamic_pointer_cast<rlobj::modules::MLPImpl>(net->clone());
  CHECK(torch::equal(probe.get_state(), before));
  CHECK(torch::equal(copy->parameters()[0], net->parameters()[0]));
}

TEST_CASE("MLP: networks built in parallel threads from their own generators are reproducible", "[modules][mlp]") {
  using rlobj::modules::MLP;
  using rlobj::modules::MLPOptions;
  auto build = [](uint64_t seed) {
    MLP net(MLPOptions(3, 1).num_cells({64, 64}).generator(at::make_generator<at::CPUGeneratorImpl>(seed)));
    return torch::cat({net->parameters()[0].flatten(), net->parameters()[4].flatten()});
  };
  std::vector<torch::Tensor> sequential, parallel(8);
  for (uint64_t s = 0; s < 8; ++s) sequential.push_back(build(s));
  std::vector<std::thread> threads;
  for (uint64_t s = 0; s < 8; ++s) threads.emplace_back([&, s] { parallel[s] = build(s); });
  for (auto& t : threads) t.join();
  for (size_t s = 0; s < 8; ++s) CHECK(torch::equal(sequential[s], parallel[s]));
}

TEST_CASE("MLP: a clone keeps the source's training mode", "[modules][mlp]") {
  rlobj::modules::MLP net(rlobj::modules::MLPOptions(3, 1).num_cells({4}).dropout(0.5));
  net->eval();
  auto copy = std::dynamic_pointer_cast<rlobj::modules::MLPImpl>(net->clone());
  CHECK_FALSE(copy->is_training());
  auto x = torch::ones({2, 3});
  CHECK(torch::equal(copy->forward(x), net->forward(x)));  // no dropout in eval mode
  for (const auto& child : copy->children()) CHECK_FALSE(child->is_training());

  // Mixed modes survive too: the network training, one dropout layer frozen in eval.
  net->train();
  net->named_modules()["1"]->eval();
  auto mixed = std::dynamic_pointer_cast<rlobj::modules::MLPImpl>(net->clone());
  CHECK(mixed->is_training());
  for (const auto& item : net->named_modules()) {
    INFO(item.key());
    CHECK(mixed->named_modules()[item.key()]->is_training() == item.value()->is_training());
  }
}
