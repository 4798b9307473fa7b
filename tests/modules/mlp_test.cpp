#include <rlobj/modules/mlp.h>

#include <cmath>
#include <limits>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_modules_mlp_test {

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
  {
    // With fast_tanh, rlobj's vectorised tanh: within a few ulps.
    MLP fast(MLPOptions(3, 1).num_cells({32, 32}).fast_tanh(true));
    torch::NoGradGuard no_grad;
    for (const auto& item : fast->named_parameters()) item.value().copy_(p[item.key()]);
    auto yf = fast->forward(x);
    CHECK(torch::allclose(yf, expected, /*rtol=*/1e-5, /*atol=*/1e-6));
  }

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
    REQUIRE_THROWS_WITH(MLP(MLPOptions(2, 1).activation(static_cast<rlobj::modules::Activation>(42))),
                        Contains("activation is not an Activation value (got 42)"));
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

namespace {
// A fused and a per-layer MLP with the same weights.
std::pair<MLP, MLP> twins(MLPOptions options) {
  MLP fused(options.fused(true));
  MLP plain(options.fused(false));
  torch::NoGradGuard no_grad;
  auto a = fused->parameters(), b = plain->parameters();
  for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
  return {fused, plain};
}
}  // namespace

namespace {
// Bit for bit, but with fast_tanh (rlobj's vectorised tanh: within 1 ulp of the exact tanh,
// LibTorch's within 2), where values may move by a few ulps.
void check_same(const torch::Tensor& fused, const torch::Tensor& plain, bool fast_tanh) {
  if (!fast_tanh) {
    CHECK(torch::equal(fused, plain));
  } else {
    CHECK(torch::allclose(fused, plain, /*rtol=*/1e-5, /*atol=*/1e-6));
  }
}
}  // namespace

TEST_CASE("MLP: the fused path gives the per-layer path's values and gradients, bit for bit", "[modules][mlp]") {
  torch::manual_seed(3);
  struct Case {
    Activation act;
    bool activate_last, bias_last;
    std::vector<int64_t> input_shape;
    bool fast_tanh = false;
  };
  const std::vector<Case> cases = {
      {Activation::Tanh, false, true, {16, 5}},       {Activation::ReLU, false, true, {16, 5}},
      {Activation::Sigmoid, true, true, {4, 3, 5}},   {Activation::LeakyReLU, true, false, {5}},
      {Activation::Identity, false, false, {7, 5}},   {Activation::ReLU, true, true, {0, 5}},
      {Activation::Tanh, true, true, {9, 5}, /*fast_tanh=*/true},
  };
  for (const auto& c : cases) {
    INFO(rlobj::modules::activation_name(c.act) << " input " << c.input_shape << " fast_tanh " << c.fast_tanh);
    auto [fused, plain] = twins(MLPOptions(5, 3).num_cells({8, 6}).activation(c.act).negative_slope(0.1)
                                    .activate_last_layer(c.activate_last).bias_last_layer(c.bias_last)
                                    .fast_tanh(c.fast_tanh));
    REQUIRE(fused->is_fused());
    REQUIRE_FALSE(plain->is_fused());
    auto x1 = torch::randn(c.input_shape).requires_grad_(true);
    auto x2 = x1.detach().clone().requires_grad_(true);
    auto y1 = fused->forward(x1), y2 = plain->forward(x2);
    REQUIRE(y1.sizes() == y2.sizes());
    check_same(y1, y2, c.fast_tanh);
    auto w = torch::randn(y1.sizes());
    (y1 * w).sum().backward();
    (y2 * w).sum().backward();
    check_same(x1.grad(), x2.grad(), c.fast_tanh);
    auto p1 = fused->parameters(), p2 = plain->parameters();
    for (size_t i = 0; i < p1.size(); ++i) check_same(p1[i].grad(), p2[i].grad(), c.fast_tanh);
    torch::NoGradGuard no_grad;  // the plain no-graph loop
    check_same(fused->forward(x1), plain->forward(x1), c.fast_tanh);
  }
}

TEST_CASE("MLP: the fused path skips gradients nobody needs and composes with autograd", "[modules][mlp]") {
  torch::manual_seed(4);
  auto [fused, plain] = twins(MLPOptions(4, 2).num_cells({8, 8}).activation(Activation::ReLU));
  // Frozen weights (a loss's detached critic), input gradient only: the same input gradient.
  for (auto& p : fused->parameters()) p.requires_grad_(false);
  for (auto& p : plain->parameters()) p.requires_grad_(false);
  auto x1 = torch::randn({6, 4}).requires_grad_(true);
  auto x2 = x1.detach().clone().requires_grad_(true);
  fused->forward(torch::tanh(x1)).pow(2).sum().backward();
  plain->forward(torch::tanh(x2)).pow(2).sum().backward();
  CHECK(torch::equal(x1.grad(), x2.grad()));
  for (auto& p : fused->parameters()) CHECK_FALSE(p.grad().defined());
  // Trainable weights, constant input: weight gradients, none for the input; the output can
  // be used twice in one graph.
  for (auto& p : fused->parameters()) p.requires_grad_(true);
  for (auto& p : plain->parameters()) p.requires_grad_(true);
  auto x = torch::randn({6, 4});
  auto y1 = fused->forward(x), y2 = plain->forward(x);
  (y1.sum() + y1.pow(2).mean()).backward();
  (y2.sum() + y2.pow(2).mean()).backward();
  auto p1 = fused->parameters(), p2 = plain->parameters();
  for (size_t i = 0; i < p1.size(); ++i) CHECK(torch::equal(p1[i].grad(), p2[i].grad()));
}

TEST_CASE("MLP: options without a fused form take the per-layer path", "[modules][mlp]") {
  CHECK_FALSE(MLP(MLPOptions(3, 1).num_cells({4}).activation(Activation::ELU))->is_fused());
  CHECK_FALSE(MLP(MLPOptions(3, 1).num_cells({4}).activation(Activation::GELU))->is_fused());
  CHECK_FALSE(MLP(MLPOptions(3, 1).num_cells({4}).activation(Activation::LeakyReLU).negative_slope(-0.5))->is_fused());
  CHECK_FALSE(MLP(MLPOptions(3, 1).num_cells({4}).dropout(0.1))->is_fused());
  CHECK_FALSE(MLP(MLPOptions(3, 1).num_cells({4}).layer_norm(true))->is_fused());
  CHECK(MLP(MLPOptions(3, 1).num_cells({4}))->is_fused());  // TorchRL's default Tanh
  // A clone keeps the path.
  MLP net(MLPOptions(3, 1).num_cells({4}));
  CHECK(std::dynamic_pointer_cast<rlobj::modules::MLPImpl>(net->clone())->is_fused());
}

TEST_CASE("MLP: the vectorised tanh is within 2 ulp of LibTorch's and keeps its special values", "[modules][mlp]") {
  // A dense sweep of [-10, 10] (beyond it both round to +-1), odd sizes to reach the tail loop.
  auto x = torch::linspace(-10, 10, 2000003, torch::kFloat);
  auto fast = x.clone();
  rlobj::detail::tanh_inplace(fast);
  auto ref = torch::tanh(x);
  // Distance in ulps of float32, through the ordered integer representation.
  auto ordered = [](const torch::Tensor& f) {
    auto i = f.view(torch::kInt).to(torch::kLong);
    return torch::where(i < 0, -(i & 0x7fffffff), i);
  };
  CHECK((ordered(fast) - ordered(ref)).abs().max().item<int64_t>() <= 2);
  // Against float64's tanh rounded to float32: within 1 ulp.
  auto exact = torch::tanh(x.to(torch::kDouble)).to(torch::kFloat);
  CHECK((ordered(fast) - ordered(exact)).abs().max().item<int64_t>() <= 1);
  auto special = torch::tensor({0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity(), 100.0f, -100.0f, 1e-30f});
  auto s = special.clone();
  rlobj::detail::tanh_inplace(s);
  CHECK(torch::equal(s, torch::tanh(special)));
  CHECK(std::signbit(s[1].item<float>()));
  auto nan = torch::full({5}, std::numeric_limits<float>::quiet_NaN());
  rlobj::detail::tanh_inplace(nan);
  CHECK(nan.isnan().all().item<bool>());
  // Other dtypes and strided tensors take LibTorch's kernel: exactly its values.
  auto d = torch::randn({7, 3}, torch::kDouble), d2 = d.clone();
  rlobj::detail::tanh_inplace(d2);
  CHECK(torch::equal(d2, torch::tanh(d)));
  auto t = torch::randn({6, 4}).t(), t2 = t.clone();  // clone keeps the transposed strides
  REQUIRE_FALSE(t2.is_contiguous());
  rlobj::detail::tanh_inplace(t2);
  CHECK(torch::equal(t2, torch::tanh(t)));
}

TEST_CASE("MLP: the fused path refuses double backward with a clear error", "[modules][mlp]") {
  torch::manual_seed(5);
  auto [fused, plain] = twins(MLPOptions(3, 1).num_cells({4}).activation(Activation::Tanh));
  auto x = torch::randn({5, 3}).requires_grad_(true);
  auto g = torch::autograd::grad({fused->forward(x).sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/false);
  CHECK(g[0].sizes() == x.sizes());  // first order is fine
  REQUIRE_THROWS_WITH(
      torch::autograd::grad({fused->forward(x).sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true),
      Contains("fused path has no double backward"));
  // The per-layer path differentiates twice.
  auto g1 = torch::autograd::grad({plain->forward(x).sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  CHECK(g1[0].requires_grad());
}

}  // namespace rlobj_test_modules_mlp_test
