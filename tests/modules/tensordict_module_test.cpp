#include <rlobj/modules/actor.h>
#include <rlobj/modules/mlp.h>
#include <rlobj/modules/tensordict_module.h>
#include <rlobj/modules/value_operator.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_modules_tensordict_module_test {

using Catch::Matchers::Contains;
using rlobj::NestedKey;
using rlobj::TensorDict;
using namespace rlobj::modules;

namespace {

// A module whose forward takes two tensors and returns two.
struct TwoInTwoOutImpl : torch::nn::Module {
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& a, const torch::Tensor& b) {
    return {a + b, a - b};
  }
};
TORCH_MODULE(TwoInTwoOut);

struct ListInImpl : torch::nn::Module {
  torch::Tensor forward(const std::vector<torch::Tensor>& xs) { return xs[0] * xs[1]; }
};
TORCH_MODULE(ListIn);

TensorDict obs_td(int64_t b = 5) {
  return TensorDict({{"observation", torch::randn({b, 3})}, {"action", torch::randn({b, 1})}}, {b});
}

}  // namespace

TEST_CASE("TensorDictModule: reads in_keys, writes out_keys, returns the same TensorDict", "[modules]") {
  MLP mlp(MLPOptions(3, 2).num_cells({8}));
  TensorDictModule m(mlp, {"observation"}, {{"out", "hidden"}});
  auto td = obs_td();
  auto out = m(td);
  CHECK(out.is_same(td));
  CHECK(td.get({"out", "hidden"}).sizes() == torch::IntArrayRef({5, 2}));
  CHECK(torch::equal(td.get({"out", "hidden"}), mlp->forward(td.get("observation"))));
  CHECK(m->in_keys() == std::vector<NestedKey>{"observation"});
  CHECK(m->out_keys() == std::vector<NestedKey>{{"out", "hidden"}});
  CHECK(m->module_as<MLPImpl>().get() == mlp.ptr().get());
  REQUIRE_THROWS_AS(m->module_as<torch::nn::LinearImpl>(), c10::Error);
  // TorchRL's parameter naming: the wrapped module is the child "module".
  CHECK(m->named_parameters().contains("module.0.weight"));

  SECTION("works on any batch shape, e.g. [N, T]") {
    TensorDict seq({{"observation", torch::randn({2, 7, 3})}}, {2, 7});
    m(seq);
    CHECK(seq.get({"out", "hidden"}).sizes() == torch::IntArrayRef({2, 7, 2}));
  }
  SECTION("a missing input key is named") {
    TensorDict empty({5});
    REQUIRE_THROWS_WITH(m(empty), Contains("input key \"observation\" not found"));
  }
}

TEST_CASE("TensorDictModule: several inputs and outputs", "[modules]") {
  SECTION("a single-input module gets the in_keys concatenated on the last dim") {
    MLP mlp(MLPOptions(4, 1).num_cells({8}));
    TensorDictModule m(mlp, {"observation", "action"}, {"q"});
    auto td = obs_td();
    m(td);
    auto expected = mlp->forward(torch::cat({td.get("observation"), td.get("action")}, -1));
    CHECK(torch::equal(td.get("q"), expected));
  }
  SECTION("a two-input module gets two tensors; a tuple fills two out_keys") {
    TensorDictModule m(TwoInTwoOut(), {"x", "y"}, {"sum", "diff"});
    TensorDict td({{"x", torch::ones({2, 1})}, {"y", torch::full({2, 1}, 3.0f)}}, {2});
    m(td);
    CHECK(td.get("sum")[0].item<float>() == 4.0f);
    CHECK(td.get("diff")[0].item<float>() == -2.0f);
  }
  SECTION("a module taking a vector of tensors") {
    TensorDictModule m(ListIn(), {"x", "y"}, {"prod"});
    TensorDict td({{"x", torch::full({2, 1}, 2.0f)}, {"y", torch::full({2, 1}, 3.0f)}}, {2});
    m(td);
    CHECK(td.get("prod")[1].item<float>() == 6.0f);
  }
  SECTION("output count mismatch and empty keys are errors") {
    TensorDictModule m(TwoInTwoOut(), {"x", "y"}, {"only_one"});
    TensorDict td({{"x", torch::ones({2, 1})}, {"y", torch::ones({2, 1})}}, {2});
    REQUIRE_THROWS_WITH(m(td), Contains("returned 2 tensor(s) but there are 1 out_keys"));
    REQUIRE_THROWS_AS(TensorDictModule(TwoInTwoOut(), {}, {"a"}), c10::ValueError);
  }
}

TEST_CASE("Actor and ValueOperator: TorchRL's default keys", "[modules]") {
  auto actor = Actor(MLP(MLPOptions(3, 1).num_cells({8})));
  CHECK(actor->in_keys() == std::vector<NestedKey>{"observation"});
  CHECK(actor->out_keys() == std::vector<NestedKey>{"action"});

  auto q = ValueOperator(MLP(MLPOptions(4, 1).num_cells({8})), /*in_keys=*/{"observation", "action"});
  CHECK(q->out_keys() == std::vector<NestedKey>{"state_action_value"});
  auto v = ValueOperator(MLP(MLPOptions(3, 1).num_cells({8})));
  CHECK(v->out_keys() == std::vector<NestedKey>{"state_value"});
  auto custom = ValueOperator(MLP(MLPOptions(3, 1).num_cells({8})), {"observation"}, {"my_value"});
  CHECK(custom->out_keys() == std::vector<NestedKey>{"my_value"});

  auto td = TensorDict({{"observation", torch::randn({6, 3})}}, {6});
  actor(td);
  q(td);
  v(td);
  CHECK(td.get("action").sizes() == torch::IntArrayRef({6, 1}));
  CHECK(td.get("state_action_value").sizes() == torch::IntArrayRef({6, 1}));
  CHECK(td.get("state_value").sizes() == torch::IntArrayRef({6, 1}));
  REQUIRE_THROWS_WITH(actor(TensorDict({6})), Contains("Actor: input key \"observation\""));
}

TEST_CASE("Actor: the spec documents the action space; safe=true projects", "[modules]") {
  auto spec = std::make_shared<rlobj::Bounded>(-0.1, 0.1, std::vector<int64_t>{1});
  MLP mlp(MLPOptions(3, 1).num_cells({8}));
  {
    torch::NoGradGuard g;
    mlp->named_parameters()["2.bias"].fill_(5.0);
  }
  auto loose = Actor(mlp, {"observation"}, {"action"}, spec);
  auto safe = Actor(mlp, {"observation"}, {"action"}, spec, /*safe=*/true);
  auto td = obs_td();
  CHECK(loose(td).get("action").max().item<float>() > 1.0f);
  CHECK(safe(td).get("action").max().item<float>() == Approx(0.1f));
  CHECK(loose->spec() == spec);
  CHECK(safe->safe());
}

TEST_CASE("Actor/ValueOperator: clone() keeps the type and copies the weights", "[modules]") {
  auto actor = Actor(MLP(MLPOptions(3, 1).num_cells({8})));
  auto copy = std::dynamic_pointer_cast<ActorImpl>(actor->clone());
  REQUIRE(copy != nullptr);
  CHECK(copy->in_keys() == actor->in_keys());
  auto td = obs_td();
  auto a1 = actor(td.copy()).get("action");
  auto a2 = copy->forward(td.copy()).get("action");
  CHECK(torch::equal(a1, a2));
  {
    torch::NoGradGuard g;
    for (auto& p : copy->parameters()) p.zero_();
  }
  CHECK(torch::equal(actor(td.copy()).get("action"), a1));
  CHECK(copy->forward(td.copy()).get("action").abs().sum().item<float>() == 0.0f);

  auto q = ValueOperator(MLP(MLPOptions(4, 1).num_cells({8})), {"observation", "action"});
  CHECK(std::dynamic_pointer_cast<ValueOperatorImpl>(q->clone()) != nullptr);
}

TEST_CASE("TensorDictSequential: actor then critic", "[modules]") {
  auto actor = Actor(MLP(MLPOptions(3, 1).num_cells({8})));
  auto q = ValueOperator(MLP(MLPOptions(4, 1).num_cells({8})), {"observation", "action"});
  TensorDictSequential ac(actor, q);
  CHECK(ac->in_keys() == std::vector<NestedKey>{"observation"});
  CHECK(ac->out_keys() == std::vector<NestedKey>{"action", "state_action_value"});
  CHECK(ac->size() == 2);
  auto td = TensorDict({{"observation", torch::randn({4, 3})}}, {4});
  ac(td);
  auto expected = q(actor(TensorDict({{"observation", td.get("observation")}}, {4}))).get("state_action_value");
  CHECK(torch::equal(td.get("state_action_value"), expected));
  CHECK(ac->named_parameters().contains("module.1.module.0.weight"));
  auto clone = std::dynamic_pointer_cast<TensorDictSequentialImpl>(ac->clone());
  REQUIRE(clone != nullptr);
  CHECK(clone->parameters()[0].data_ptr() != ac->parameters()[0].data_ptr());
}

}  // namespace rlobj_test_modules_tensordict_module_test
