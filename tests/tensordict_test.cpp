#include <rlobj/tensordict.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "test_utils.h"

using rlobj_test::ints;
using rlobj_test::values;

using rlobj::NestedKey;
using rlobj::TensorDict;
using Catch::Matchers::Contains;
namespace ti = torch::indexing;

namespace {

TensorDict make_batch(int64_t b = 4) {
  auto obs = torch::arange(b * 3, torch::kFloat32).view({b, 3});
  auto act = torch::arange(b, torch::kFloat32).view({b, 1});
  return TensorDict({{"observation", obs},
                     {"action", act},
                     {{"next", "observation"}, obs + 100},
                     {{"next", "reward"}, -act},
                     {{"next", "done"}, torch::zeros({b, 1}, torch::kBool)}},
                    {b});
}

}  // namespace

TEST_CASE("NestedKey: construction, printing and validation", "[tensordict]") {
  NestedKey a = "reward";
  NestedKey b = {"next", "reward"};
  CHECK(a.size() == 1);
  CHECK_FALSE(a.is_nested());
  CHECK(b.is_nested());
  CHECK(b.leaf() == "reward");
  CHECK(b.str() == "next.reward");
  CHECK(b.str("/") == "next/reward");
  CHECK(fmt::format("{}", b) == "next.reward");
  CHECK((NestedKey("next") / "reward") == b);
  CHECK(a != b);
  REQUIRE_THROWS_AS(NestedKey(""), c10::ValueError);
  REQUIRE_THROWS_WITH(NestedKey({"next", ""}), Contains("empty part"));
  REQUIRE_THROWS_WITH(NestedKey(std::vector<std::string>{}), Contains("at least one part"));
}

TEST_CASE("TensorDict: set/get with batch-size checks", "[tensordict]") {
  TensorDict td({4});
  td.set("a", torch::zeros({4, 2}));
  CHECK(td.get("a").sizes() == torch::IntArrayRef({4, 2}));
  CHECK(td.batch_size() == std::vector<int64_t>{4});
  CHECK(td.batch_dims() == 1);
  CHECK(td.numel() == 4);
  CHECK(td.size() == 1);

  SECTION("a wrong leading dim is rejected, naming the key and both shapes") {
    REQUIRE_THROWS_WITH(td.set({"next", "reward"}, torch::zeros({3, 1})),
                        Contains("\"next.reward\"") && Contains("[3, 1]") && Contains("[4]"));
    // The failed set must not leave a half-created nested TensorDict behind.
    CHECK_FALSE(td.contains("next"));
  }
  SECTION("too few dims is rejected") {
    REQUIRE_THROWS_AS(td.set("s", torch::tensor(1.0)), c10::Error);
  }
  SECTION("undefined tensors are rejected") {
    REQUIRE_THROWS_AS(td.set("u", torch::Tensor()), c10::ValueError);
  }
  SECTION("missing keys throw and list what is there") {
    REQUIRE_THROWS_WITH(td.get("b"), Contains("\"b\" not found") && Contains("[a]"));
    CHECK(td.find("b") == nullptr);
    CHECK_FALSE(td.contains("b"));
    CHECK(td.get("b", torch::ones({1})).item<float>() == 1.0f);
  }
  SECTION("replacing an entry keeps its position") {
    td.set("b", torch::zeros({4}));
    td.set("a", torch::ones({4, 5}));
    CHECK(td.keys() == std::vector<NestedKey>{"a", "b"});
    CHECK(td.get("a").size(1) == 5);
  }
  SECTION("negative batch dims are rejected") {
    REQUIRE_THROWS_AS(TensorDict({-1}), c10::ValueError);
  }
}

TEST_CASE("TensorDict: handle semantics, clone and copy", "[tensordict]") {
  auto td = make_batch();
  TensorDict alias = td;
  alias.set("extra", torch::zeros({4}));
  CHECK(td.contains("extra"));
  CHECK(alias.is_same(td));

  auto shallow = td.copy();
  shallow.set("only_in_copy", torch::zeros({4}));
  shallow.set({"next", "only_in_copy"}, torch::zeros({4}));
  CHECK_FALSE(td.contains("only_in_copy"));
  CHECK_FALSE(td.contains({"next", "only_in_copy"}));
  shallow.get("observation").add_(1);  // tensors are shared
  CHECK(td.get("observation")[0][0].item<float>() == 1.0f);

  auto deep = td.clone();
  deep.get("observation").add_(1);
  deep.get({"next", "reward"}).add_(1);
  CHECK(td.get("observation")[0][0].item<float>() == 1.0f);
  CHECK(td.get({"next", "reward"})[1][0].item<float>() == -1.0f);
  CHECK_FALSE(deep.is_same(td));
}

TEST_CASE("TensorDict: nested keys", "[tensordict]") {
  auto td = make_batch();
  SECTION("set creates nested TensorDicts with the parent's batch size") {
    TensorDict root({2, 3});
    root.set({"a", "b", "c"}, torch::zeros({2, 3, 4}));
    CHECK(root.get_sub("a").batch_size() == std::vector<int64_t>{2, 3});
    CHECK(root.get_sub({"a", "b"}).get("c").sizes() == torch::IntArrayRef({2, 3, 4}));
  }
  SECTION("get_sub aliases the nested TensorDict") {
    auto next = td.get_sub("next");
    next.set("extra", torch::zeros({4}));
    CHECK(td.contains({"next", "extra"}));
  }
  SECTION("a nested TensorDict may carry extra batch dims") {
    TensorDict inner({4, 2});
    inner.set("x", torch::zeros({4, 2, 7}));
    td.set("inner", inner);
    CHECK(td.get({"inner", "x"}).size(2) == 7);
    REQUIRE_THROWS_WITH(td.set("bad", TensorDict({5})), Contains("does not start with"));
    REQUIRE_THROWS_WITH(td.set("self", td), Contains("inside itself"));
  }
  SECTION("errors for paths through tensors and for type mix-ups") {
    REQUIRE_THROWS_WITH(td.set({"action", "x"}, torch::zeros({4})),
                        Contains("goes through \"action\", which is a tensor"));
    REQUIRE_THROWS_WITH(td.get("next"), Contains("nested TensorDict, not a tensor"));
    REQUIRE_THROWS_WITH(td.get_sub("action"), Contains("is a tensor, not a nested TensorDict"));
    REQUIRE_THROWS_WITH(td.get_sub("nope"), Contains("not found"));
    CHECK(td.find({"action", "x"}) == nullptr);
  }
  SECTION("erase and pop") {
    auto r = td.pop({"next", "reward"});
    CHECK(r.size(0) == 4);
    CHECK_FALSE(td.contains({"next", "reward"}));
    td.erase("next");
    CHECK_FALSE(td.contains("next"));
    REQUIRE_THROWS_WITH(td.erase("next"), Contains("\"next\" not found"));
    REQUIRE_THROWS_WITH(td.erase({"nope", "x"}), Contains("not found"));
  }
}

TEST_CASE("TensorDict: keys and items", "[tensordict]") {
  auto td = make_batch();
  CHECK(td.keys() == std::vector<NestedKey>{"observation", "action", "next"});
  CHECK(td.keys(true) ==
        std::vector<NestedKey>{"observation", "action", "next", {"next", "observation"},
                               {"next", "reward"}, {"next", "done"}});
  CHECK(td.keys(true, true) ==
        std::vector<NestedKey>{"observation", "action", {"next", "observation"},
                               {"next", "reward"}, {"next", "done"}});
  CHECK(td.keys(false, true) == std::vector<NestedKey>{"observation", "action"});

  auto items = td.items();
  REQUIRE(items.size() == 3);
  CHECK(items[2].second.is_tensordict());
  CHECK(items[2].second.tensordict().contains("reward"));
  REQUIRE_THROWS_AS(items[2].second.tensor(), c10::Error);
  REQUIRE_THROWS_AS(items[0].second.tensordict(), c10::Error);

  // Summing the "loss_*" entries by hand, as a TorchRL training loop does.
  TensorDict losses({{"loss_a", torch::tensor(1.5)}, {"loss_b", torch::tensor(2.0)},
                     {"pred", torch::tensor(10.0)}},
                    {});
  torch::Tensor total = torch::zeros({});
  for (const auto& [key, value] : losses.items()) {
    if (key.str().rfind("loss_", 0) == 0) total = total + value;
  }
  CHECK(total.item<double>() == 3.5);
}

TEST_CASE("TensorDict: indexing along batch dims", "[tensordict]") {
  auto td = make_batch(6);
  SECTION("integer") {
    auto row = td.index({2});
    CHECK(row.batch_size().empty());
    CHECK(row.get("observation").sizes() == torch::IntArrayRef({3}));
    CHECK(row.get({"next", "reward"}).item<float>() == -2.0f);
    CHECK(td.index({-1}).get("action").item<float>() == 5.0f);
    CHECK(td.unbind(0).size() == 6);
  }
  SECTION("slice") {
    auto s = td.index({ti::Slice(1, 5, 2)});
    CHECK(s.batch_size() == std::vector<int64_t>{2});
    CHECK(values(s.get("action")) == std::vector<double>{1, 3});
    CHECK(s.get_sub("next").batch_size() == std::vector<int64_t>{2});
  }
  SECTION("bool mask") {
    auto mask = torch::tensor({true, false, true, false, false, true});
    auto s = td.index({mask});
    CHECK(s.batch_size() == std::vector<int64_t>{3});
    CHECK(values(s.get({"next", "reward"})) == std::vector<double>{-0.0, -2, -5});
  }
  SECTION("index tensor") {
    auto s = td.index({torch::tensor({5, 0, 5}, torch::kLong)});
    CHECK(s.batch_size() == std::vector<int64_t>{3});
    CHECK(values(s.get("action")) == std::vector<double>{5, 0, 5});
  }
  SECTION("two batch dims, nested entries with an extra batch dim") {
    TensorDict t2({2, 3});
    t2.set("x", torch::arange(6).view({2, 3}));
    TensorDict inner({2, 3, 4});
    inner.set("y", torch::zeros({2, 3, 4, 5}));
    t2.set("inner", inner);
    auto s = t2.index({ti::Slice(), 1});
    CHECK(s.batch_size() == std::vector<int64_t>{2});
    CHECK(ints(s.get("x")) == std::vector<int64_t>{1, 4});
    CHECK(s.get_sub("inner").batch_size() == std::vector<int64_t>{2, 4});
    CHECK(s.get({"inner", "y"}).sizes() == torch::IntArrayRef({2, 4, 5}));
    auto m = t2.index({torch::tensor({{true, false, true}, {false, false, true}})});
    CHECK(m.batch_size() == std::vector<int64_t>{3});
    CHECK(ints(m.get("x")) == std::vector<int64_t>{0, 2, 5});
  }
  SECTION("errors: too many dims, out of range, unsupported index kinds") {
    REQUIRE_THROWS_AS(td.index({0, 0}), c10::IndexError);
    REQUIRE_THROWS_WITH(td.index({0, 0}), Contains("addresses 2 dims") && Contains("[6]"));
    REQUIRE_THROWS_AS(td.index({6}), c10::IndexError);
    REQUIRE_THROWS_AS(td.index({ti::None}), c10::IndexError);
    REQUIRE_THROWS_AS(td.index({ti::Ellipsis}), c10::IndexError);
    REQUIRE_THROWS_WITH(td.index({torch::tensor({0.5})}), Contains("integer or bool"));
  }
}

TEST_CASE("TensorDict: index_put_ writes rows", "[tensordict]") {
  auto td = make_batch(4);
  auto src = make_batch(2).apply([](const torch::Tensor& t) { return torch::zeros_like(t); });
  td.index_put_({torch::tensor({1, 3})}, src);
  CHECK(values(td.get("action")) == std::vector<double>{0, 0, 2, 0});
  auto missing = src.exclude({{"next", "done"}});
  REQUIRE_THROWS_WITH(td.index_put_({0}, missing), Contains("has keys"));
  auto wrong = make_batch(3);
  REQUIRE_THROWS_WITH(td.index_put_({torch::tensor({0, 1})}, wrong),
                      Contains("TensorDict.index_put_: entry \"observation\""));
}

TEST_CASE("TensorDict: stack and cat", "[tensordict]") {
  auto a = make_batch(4);
  auto b = a.apply([](const torch::Tensor& t) { return t.logical_not().to(t.scalar_type()); });
  SECTION("stack on a new last batch dim") {
    auto s = TensorDict::stack({a, b}, -1);
    CHECK(s.batch_size() == std::vector<int64_t>{4, 2});
    CHECK(s.get("observation").sizes() == torch::IntArrayRef({4, 2, 3}));
    CHECK(s.get_sub("next").batch_size() == std::vector<int64_t>{4, 2});
    CHECK(torch::equal(s.index({ti::Slice(), 1}).get("action"), b.get("action")));
  }
  SECTION("stack on dim 0") {
    auto s = TensorDict::stack({a, b, a});
    CHECK(s.batch_size() == std::vector<int64_t>{3, 4});
  }
  SECTION("cat") {
    auto c = TensorDict::cat({a, make_batch(2)});
    CHECK(c.batch_size() == std::vector<int64_t>{6});
    CHECK(c.get({"next", "done"}).size(0) == 6);
  }
  SECTION("errors name the offending key or batch") {
    REQUIRE_THROWS_WITH(TensorDict::stack({a, make_batch(3)}), Contains("batch_size [3]"));
    REQUIRE_THROWS_WITH(TensorDict::stack({a, a.exclude({"action"})}), Contains("has keys"));
    auto wide = a.clone();
    wide.set("observation", torch::zeros({4, 5}));
    REQUIRE_THROWS_WITH(TensorDict::stack({a, wide}),
                        Contains("\"observation\"") && Contains("[4, 5]"));
    REQUIRE_THROWS_WITH(TensorDict::cat({a, wide}), Contains("\"observation\""));
    REQUIRE_THROWS_AS(TensorDict::stack({}), c10::ValueError);
    REQUIRE_THROWS_AS(TensorDict::stack({a}, 3), c10::IndexError);
    REQUIRE_THROWS_WITH(TensorDict::cat({TensorDict(), TensorDict()}), Contains("batch_size []"));
  }
}

TEST_CASE("TensorDict: select, exclude, update, flatten_keys, apply", "[tensordict]") {
  auto td = make_batch(4);
  SECTION("select keeps only the named keys") {
    auto s = td.select({"action", {"next", "reward"}});
    CHECK(s.keys(true, true) == std::vector<NestedKey>{"action", {"next", "reward"}});
    CHECK(s.get("action").data_ptr() == td.get("action").data_ptr());
    REQUIRE_THROWS_WITH(td.select({"nope"}), Contains("\"nope\" not found"));
    CHECK(td.select({"nope", "action"}, /*strict=*/false).keys() == std::vector<NestedKey>{"action"});
    auto whole = td.select({"next"});
    whole.set({"next", "new"}, torch::zeros({4}));
    CHECK_FALSE(td.contains({"next", "new"}));
  }
  SECTION("exclude") {
    auto e = td.exclude({"next", "missing-is-fine"});
    CHECK(e.keys() == std::vector<NestedKey>{"observation", "action"});
    CHECK(td.contains("next"));
  }
  SECTION("update merges nested entries") {
    TensorDict other({{{"next", "reward"}, torch::ones({4, 1})}, {"extra", torch::ones({4})}}, {4});
    td.update(other);
    CHECK(values(td.get({"next", "reward"}))[0] == 1.0);
    CHECK(td.contains({"next", "done"}));
    CHECK(td.contains("extra"));
  }
  SECTION("flatten_keys and back") {
    auto f = td.flatten_keys();
    CHECK(f.keys() == std::vector<NestedKey>{"observation", "action", "next.observation",
                                             "next.reward", "next.done"});
    auto u = f.unflatten_keys();
    CHECK(u.keys(true, true) == td.keys(true, true));
  }
  SECTION("apply maps every leaf and checks the batch dims") {
    auto doubled = td.apply([](const torch::Tensor& t) { return t * 2; });
    CHECK(values(doubled.get("action"))[3] == 6.0);
    REQUIRE_THROWS_WITH(td.apply([](const torch::Tensor& t) { return t.sum(); }),
                        Contains("TensorDict.apply: entry \"observation\" has shape []"));
  }
  SECTION("zero_") {
    td.zero_();
    CHECK(td.get({"next", "reward"}).abs().sum().item<float>() == 0.0f);
  }
}

TEST_CASE("TensorDict: batch-size changes", "[tensordict]") {
  auto td = make_batch(6);
  auto u = td.unsqueeze(0);
  CHECK(u.batch_size() == std::vector<int64_t>{1, 6});
  CHECK(u.get("observation").sizes() == torch::IntArrayRef({1, 6, 3}));
  CHECK(td.unsqueeze(-1).batch_size() == std::vector<int64_t>{6, 1});
  CHECK(td.unsqueeze(-1).get("observation").sizes() == torch::IntArrayRef({6, 1, 3}));
  CHECK(u.squeeze(0).batch_size() == std::vector<int64_t>{6});
  REQUIRE_THROWS_WITH(td.squeeze(0), Contains("expected 1"));
  auto r = td.reshape({2, -1});
  CHECK(r.batch_size() == std::vector<int64_t>{2, 3});
  CHECK(r.get({"next", "reward"}).sizes() == torch::IntArrayRef({2, 3, 1}));
  CHECK(td.view({3, 2}).get("observation").sizes() == torch::IntArrayRef({3, 2, 3}));
  REQUIRE_THROWS_WITH(td.reshape({4, -1}), Contains("cannot reshape batch_size [6] into [4, -1]"));
  REQUIRE_THROWS_AS(td.reshape({-1, -1}), c10::ValueError);
  REQUIRE_THROWS_AS(td.unsqueeze(3), c10::IndexError);
  auto t = td.reshape({2, 3}).index({ti::Slice(), 0});
  REQUIRE_THROWS_WITH(TensorDict({{"x", torch::zeros({3, 2}).t()}}, {2, 3}).view({6}),
                      Contains("TensorDict.view: entry \"x\""));
  CHECK(t.batch_size() == std::vector<int64_t>{2});
}

TEST_CASE("TensorDict: dtype, device and detach", "[tensordict]") {
  auto td = make_batch(2);
  auto d = td.to(torch::kFloat64);
  CHECK(d.get("observation").scalar_type() == torch::kFloat64);
  auto c = td.to(torch::Device(torch::kCPU));
  REQUIRE(c.device().has_value());
  CHECK(c.device()->is_cpu());
  CHECK(c.get_sub("next").device() == c.device());

  SECTION("a TensorDict with a device rejects tensors elsewhere") {
    TensorDict meta({2}, torch::Device(torch::kMeta));
    REQUIRE_THROWS_WITH(meta.set("x", torch::zeros({2})),
                        Contains("\"x\" is on cpu") && Contains("device is meta"));
    meta.set("x", torch::empty({2}, torch::TensorOptions().device(torch::kMeta)));
    CHECK(meta.get("x").device().is_meta());
  }
  SECTION("without a device, mixed devices are fine") {
    TensorDict any({2});
    any.set("cpu", torch::zeros({2}));
    any.set("meta", torch::empty({2}, torch::TensorOptions().device(torch::kMeta)));
    CHECK_FALSE(any.device().has_value());
  }
  SECTION("detach") {
    auto w = torch::ones({2, 1}, torch::requires_grad());
    TensorDict g({{"y", w * 2}}, {2});
    CHECK(g.get("y").requires_grad());
    CHECK_FALSE(g.detach().get("y").requires_grad());
  }
}

TEST_CASE("TensorDict: TorchRL-like printing", "[tensordict]") {
  TensorDict td({{"observation", torch::zeros({8, 3})},
                 {{"next", "reward"}, torch::zeros({8, 1})},
                 {"done", torch::zeros({8, 1}, torch::kBool)}},
                {8});
  const std::string expected =
      "TensorDict(\n"
      "    fields={\n"
      "        done: Tensor(shape=[8, 1], device=cpu, dtype=bool),\n"
      "        next: TensorDict(\n"
      "            fields={\n"
      "                reward: Tensor(shape=[8, 1], device=cpu, dtype=float32)},\n"
      "            batch_size=[8],\n"
      "            device=None),\n"
      "        observation: Tensor(shape=[8, 3], device=cpu, dtype=float32)},\n"
      "    batch_size=[8],\n"
      "    device=None)";
  CHECK(td.repr() == expected);
  CHECK(fmt::format("{}", td) == expected);
  std::ostringstream os;
  os << td;
  CHECK(os.str() == expected);
  CHECK(TensorDict().repr() ==
        "TensorDict(\n    fields={\n    },\n    batch_size=[],\n    device=None)");
}
