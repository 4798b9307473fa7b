// The loss contract (rlobj/objectives/loss_module.h): a toy loss written only against the public
// API — its options, its keys and its maths — gets forward's checks, set_keys, in_keys, the
// finite rule, re-linking, the exploration type, parameters(), targets and save/load from the base.
// docs/contributing.md walks through the same loss.
#include <rlobj/rlobj.h>

#include <sstream>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "objectives/toy_loss.h"
#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_objectives_loss_module_test {

namespace rl = rlobj;
using rl::NestedKey;
using rl::TensorDict;
using rl::objectives::FiniteCheck;
using rlobj_test::ToyLoss;
using rlobj_test::ToyLossOptions;
using Catch::Matchers::Contains;

namespace {

rl::modules::ValueOperator toy_critic() {
  torch::manual_seed(3);
  return rl::modules::ValueOperator(rl::modules::MLP(rl::modules::MLPOptions(2, 1).num_cells({8})));
}

TensorDict toy_batch(int64_t n = 6) {
  TensorDict td({n});
  td.set("observation", torch::randn({n, 2}));
  td.set({"next", "observation"}, torch::randn({n, 2}));
  td.set({"next", "reward"}, torch::randn({n, 1}));
  return td;
}

}  // namespace

TEST_CASE("A toy loss written against the public contract trains", "[loss_module]") {
  // gamma 0: a plain regression onto the rewards, whose loss must fall.
  ToyLoss loss(toy_critic(), ToyLossOptions().gamma(0.0));
  CHECK(loss->loss_name() == "ToyLoss");
  CHECK(loss->out_keys() == std::vector<std::string>{"loss_value", "target_value"});
  // parameters(): one flat leaf for the critic; the target is a buffer.
  REQUIRE(loss->parameters().size() == 1);
  CHECK(loss->parameters()[0].numel() == 2 * 8 + 8 + 8 + 1);
  torch::optim::Adam optim(loss->parameters(), torch::optim::AdamOptions(1e-2));
  rl::objectives::SoftUpdate updater(loss, rl::objectives::SoftUpdateOptions().tau(0.5));
  const TensorDict batch = toy_batch();
  double first = 0, last = 0;
  for (int i = 0; i < 50; ++i) {
    TensorDict out = loss(batch);
    torch::Tensor total = rl::objectives::sum_losses(out);
    if (i == 0) first = total.item<double>();
    last = total.item<double>();
    optim.zero_grad();
    total.backward();
    optim.step();
    updater.step();
  }
  CHECK(last < first);
}

TEST_CASE("The contract's keys: in_keys, set_keys and their errors come from the base", "[loss_module]") {
  ToyLoss loss(toy_critic());
  // Sorted by dotted name.
  const std::vector<NestedKey> expected = {NestedKey({"next", "observation"}), NestedKey({"next", "reward"}),
                                           "observation"};
  CHECK(loss->in_keys() == expected);
  CHECK(loss->tensor_keys().reward == NestedKey("reward"));

  loss->set_keys({{"reward", "r"}});
  CHECK(loss->tensor_keys().reward == NestedKey("r"));
  CHECK(loss->in_keys() == std::vector<NestedKey>{NestedKey({"next", "observation"}), NestedKey({"next", "r"}),
                                                  "observation"});
  TensorDict batch = toy_batch();
  REQUIRE_THROWS_WITH(loss(batch), Contains("ToyLoss: input key \"next.r\" not found"));
  batch.set({"next", "r"}, batch.get({"next", "reward"}));
  CHECK_NOTHROW(loss(batch));

  REQUIRE_THROWS_WITH(loss->set_keys({{"rewards", "x"}}),
                      Contains("ToyLoss.set_keys: \"rewards\" is not an accepted key; expected one of value, reward"));
  CHECK(loss->tensor_keys().reward == NestedKey("r"));  // unchanged by the refused call
}

TEST_CASE("The contract checks the batch before the loss computes anything", "[loss_module]") {
  ToyLoss loss(toy_critic());
  const torch::Tensor before = loss->parameters()[0].detach().clone();
  SECTION("no batch dim") {
    REQUIRE_THROWS_WITH(loss(toy_batch().index({0})), Contains("ToyLoss: expected a batch of transitions"));
  }
  SECTION("a network input of another dtype") {
    TensorDict batch = toy_batch();
    batch.set("observation", batch.get("observation").to(torch::kFloat64));
    REQUIRE_THROWS_WITH(loss(batch), Contains("ToyLoss: input \"observation\" is float64 but the networks are float32"));
  }
  SECTION("NaN in an input, by the options' FiniteCheck") {
    TensorDict batch = toy_batch();
    batch.get({"next", "reward"})[2][0] = std::nan("");
    REQUIRE_THROWS_WITH(loss(batch), Contains("ToyLoss: input \"next.reward\" contains NaN or Inf"));
    loss->options.check_finite(FiniteCheck::Never);
    CHECK_NOTHROW(loss(batch));
  }
  CHECK(torch::equal(loss->parameters()[0], before));
}

TEST_CASE("The contract sets the exploration type and re-links the parameter groups", "[loss_module]") {
  ToyLoss loss(toy_critic());
  loss(toy_batch());
  REQUIRE(loss->seen_exploration.has_value());
  CHECK(*loss->seen_exploration == rl::modules::ExplorationType::Mode);  // TorchRL 0.4's
  CHECK_FALSE(rl::modules::explicit_exploration_type().has_value());    // restored after forward
  loss->set_deterministic_sampling_mode(rl::modules::ExplorationType::Deterministic);
  loss(toy_batch());
  CHECK(*loss->seen_exploration == rl::modules::ExplorationType::Deterministic);

  // A critic whose parameter storage was replaced from outside (torch::load into the network)
  // is re-linked by the next forward: the flat leaf holds the loaded values again.
  auto critic = toy_critic();
  ToyLoss linked(critic);
  {
    torch::NoGradGuard no_grad;
    critic->parameters()[0].set_data(torch::full_like(critic->parameters()[0], 0.25));
  }
  linked(toy_batch());
  CHECK(linked->parameters()[0].narrow(0, 0, 16).eq(0.25).all().item<bool>());
}

}  // namespace rlobj_test_objectives_loss_module_test
