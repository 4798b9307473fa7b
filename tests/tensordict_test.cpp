#include <rlobj/tensordict.h>

#include <cstdint>
#include <limits>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "test_utils.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_tensordict_test {

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

/// Same keys (nested TensorDicts included), batch sizes, devices, shapes, dtypes and values.
bool same_content(const TensorDict& a, const TensorDict& b) {
  if (a.repr() != b.repr() || a.keys(true) != b.keys(true)) return false;
  for (const auto& key : a.keys(true, true)) {
    if (!torch::equal(a.get(key), b.get(key))) return false;
  }
  return true;
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

TEST_CASE("TensorDict: set refuses to nest a TensorDict inside itself", "[tensordict]") {
  TensorDict a({2});
  a.set("x", torch::zeros({2}));
  const auto a_keys = a.keys(true);

  SECTION("directly, at the root or below") {
    REQUIRE_THROWS_AS(a.set("self", a), c10::ValueError);
    REQUIRE_THROWS_WITH(a.set("self", a), Contains("\"self\"") && Contains("cycle"));
    REQUIRE_THROWS_WITH(a.set({"p", "q"}, a), Contains("\"p.q\"") && Contains("cycle"));
    CHECK(a.keys(true) == a_keys);  // no "p" left behind
  }
  SECTION("through another TensorDict") {
    TensorDict b({2});
    a.set("b", b);
    REQUIRE_THROWS_AS(b.set("a", a), c10::ValueError);
    REQUIRE_THROWS_WITH(b.set({"deeper", "a"}, a), Contains("\"deeper.a\"") && Contains("cycle"));
    CHECK(b.empty());
    // Through an alias obtained with get_sub, and three levels deep.
    TensorDict c({2});
    b.set("c", c);
    REQUIRE_THROWS_AS(a.get_sub({"b", "c"}).set("loop", a), c10::ValueError);
    REQUIRE_THROWS_AS(c.set("b", b), c10::ValueError);
    REQUIRE_THROWS_AS(c.set("b", a.get_sub("b")), c10::ValueError);
    CHECK(c.empty());
  }
  SECTION("keys, repr and clone still terminate after the refused sets") {
    TensorDict b({2});
    a.set("b", b);
    REQUIRE_THROWS(b.set("a", a));
    REQUIRE_THROWS(a.set("a", a));
    CHECK(a.keys(true) == std::vector<NestedKey>{"x", "b"});
    CHECK_THAT(a.repr(), Contains("b: TensorDict("));
    auto deep = a.clone();
    CHECK(same_content(deep, a));
    CHECK(a.flatten_keys().keys() == std::vector<NestedKey>{"x"});
  }
  SECTION("sharing a TensorDict (no cycle) is still allowed") {
    TensorDict shared({2});
    shared.set("y", torch::ones({2}));
    a.set("s1", shared);
    a.set({"n", "s2"}, shared);
    a.set("s3", a.get_sub("s1"));
    CHECK(a.keys(true, true) ==
          std::vector<NestedKey>{"x", {"s1", "y"}, {"n", "s2", "y"}, {"s3", "y"}});
    shared.set("y", torch::zeros({2}));
    CHECK(values(a.get({"n", "s2", "y"})) == std::vector<double>{0, 0});
    // update copies what it inserts, so updating with a TensorDict that holds us is fine.
    TensorDict holder({2});
    holder.set("inner", a);
    a.update(holder);
    CHECK(a.contains({"inner", "x"}));
    CHECK_FALSE(a.get_sub("inner").is_same(a));
  }
}

TEST_CASE("TensorDict: flatten_keys and unflatten_keys refuse colliding keys", "[tensordict]") {
  SECTION("flatten_keys: \"a.b\" next to (\"a\", \"b\")") {
    TensorDict td({2});
    td.set("a.b", torch::zeros({2}));
    td.set({"a", "b"}, torch::ones({2}));
    const auto before = td.clone();
    REQUIRE_THROWS_AS(td.flatten_keys(), c10::ValueError);
    REQUIRE_THROWS_WITH(td.flatten_keys(), Contains("TensorDict.flatten_keys") &&
                                               Contains("\"a.b\" holds the separator \".\""));
    CHECK(same_content(td, before));
    // Another separator does not collide.
    CHECK(td.flatten_keys("/").keys() == std::vector<NestedKey>{"a.b", "a/b"});
  }
  SECTION("flatten_keys: a key holding the separator alone (it would come back nested)") {
    TensorDict td({2});
    td.set("obs.pixels", torch::zeros({2}));
    REQUIRE_THROWS_WITH(td.flatten_keys(), Contains("\"obs.pixels\" holds the separator") &&
                                               Contains("pass another separator"));
    // With another separator the round trip gives the key back as it was.
    CHECK(td.flatten_keys("/").unflatten_keys("/").keys() == std::vector<NestedKey>{"obs.pixels"});
  }
  SECTION("flatten_keys with an empty separator") {
    TensorDict td({{{"ab", "c"}, torch::zeros({2})}, {{"a", "bc"}, torch::zeros({2})}}, {2});
    REQUIRE_THROWS_WITH(td.flatten_keys(""), Contains("\"abc\""));
  }
  SECTION("unflatten_keys: a tensor \"a\" and \"a.b\", in either order") {
    TensorDict first({2});
    first.set("a", torch::zeros({2}));
    first.set("a.b", torch::ones({2}));
    TensorDict second({2});
    second.set("a.b", torch::ones({2}));
    second.set("a", torch::zeros({2}));
    for (const auto& td : {first, second}) {
      const auto before = td.clone();
      REQUIRE_THROWS_AS(td.unflatten_keys(), c10::ValueError);
      REQUIRE_THROWS_WITH(td.unflatten_keys(),
                          Contains("TensorDict.unflatten_keys") && Contains("\"a\"") &&
                              Contains("\"a.b\"") && Contains("to be a TensorDict"));
      CHECK(same_content(td, before));
    }
  }
  SECTION("unflatten_keys: two leaves landing on the same key") {
    TensorDict inner({2});
    inner.set("b", torch::zeros({2}));
    TensorDict td({2});
    td.set("a.b", torch::ones({2}));
    td.set("a", inner);
    REQUIRE_THROWS_WITH(td.unflatten_keys(),
                        Contains("\"a.b\"") && Contains("both unflatten to the tensor"));
    CHECK(inner.keys() == std::vector<NestedKey>{"b"});
  }
  SECTION("unflatten_keys: merging TensorDicts is order-independent and keeps batch sizes") {
    TensorDict inner({2, 3});
    inner.set("c", torch::zeros({2, 3, 4}));
    TensorDict first({2});
    first.set("a.b", torch::ones({2, 3}));
    first.set("a", inner);
    TensorDict second({2});
    second.set("a", inner);
    second.set("a.b", torch::ones({2, 3}));
    for (const auto& td : {first, second}) {
      auto u = td.unflatten_keys();
      CHECK(u.get_sub("a").batch_size() == std::vector<int64_t>{2, 3});
      CHECK(u.contains({"a", "b"}));
      CHECK(u.contains({"a", "c"}));
      CHECK_FALSE(u.get_sub("a").is_same(inner));
    }
    CHECK(inner.keys() == std::vector<NestedKey>{"c"});  // the source is never modified
  }
  SECTION("unflatten_keys: TensorDicts with different batch sizes on the same key") {
    TensorDict x({2, 5});
    x.set("y", TensorDict({2, 5}));
    TensorDict td({2});
    td.set("x.y", TensorDict({2}));
    td.set("x", x);
    REQUIRE_THROWS_AS(td.unflatten_keys(), c10::ValueError);
    REQUIRE_THROWS_WITH(td.unflatten_keys(), Contains("(\"x\", \"y\")") && Contains("[2, 5]"));
  }
  SECTION("unflatten_keys: empty parts") {
    TensorDict td({2});
    td.set("a..b", torch::zeros({2}));
    REQUIRE_THROWS_AS(td.unflatten_keys(), c10::ValueError);
    REQUIRE_THROWS_WITH(td.unflatten_keys(), Contains("\"a..b\"") && Contains("empty part"));
    REQUIRE_THROWS_AS(td.unflatten_keys(""), c10::ValueError);
  }
}

TEST_CASE("TensorDict: batch sizes whose product overflows int64 are rejected", "[tensordict]") {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const int64_t two32 = int64_t{1} << 32;
  SECTION("constructors") {
    REQUIRE_THROWS_AS(TensorDict({two32, two32}), c10::ValueError);
    REQUIRE_THROWS_WITH(TensorDict({two32, two32}),
                        Contains("[4294967296, 4294967296]") && Contains("overflows int64"));
    REQUIRE_THROWS_AS(TensorDict({kMax, 2}), c10::ValueError);
    REQUIRE_THROWS_AS(TensorDict({3, kMax / 2}), c10::ValueError);
    REQUIRE_THROWS_AS(TensorDict({{"x", torch::zeros({2})}}, {two32, two32, 2}), c10::ValueError);
    REQUIRE_THROWS_AS(TensorDict({2, -3}), c10::ValueError);
    // At the limit, and zero-element batches, are fine.
    CHECK(TensorDict({kMax}).numel() == kMax);
    CHECK(TensorDict({kMax, 1}).numel() == kMax);
    CHECK(TensorDict({int64_t{1} << 31, int64_t{1} << 31}).numel() == int64_t{1} << 62);
    CHECK(TensorDict({0, two32, two32}).numel() == 0);
  }
  SECTION("reshape and view") {
    TensorDict empty_batch({0});
    REQUIRE_THROWS_AS(empty_batch.reshape({int64_t{1} << 62, 4}), c10::ValueError);
    REQUIRE_THROWS_WITH(empty_batch.view({int64_t{1} << 62, 4}),
                        Contains("TensorDict.view") && Contains("overflows int64"));
    REQUIRE_THROWS_WITH(make_batch(6).reshape({two32, two32, -1}),
                        Contains("TensorDict.reshape") && Contains("overflows int64"));
    REQUIRE_THROWS_WITH(make_batch(6).reshape({-2, -3}), Contains("negative dimension"));
    CHECK(empty_batch.reshape({two32, 0, two32}).batch_size() ==
          std::vector<int64_t>{two32, 0, two32});
  }
  SECTION("stack and cat") {
    TensorDict big({int64_t{1} << 62});
    REQUIRE_THROWS_AS(TensorDict::stack({big, big}), c10::ValueError);
    REQUIRE_THROWS_WITH(TensorDict::stack({big, big}),
                        Contains("TensorDict.stack") && Contains("overflows int64"));
    CHECK(TensorDict::stack({big}).batch_size() == std::vector<int64_t>{1, int64_t{1} << 62});
    REQUIRE_THROWS_AS(TensorDict::cat({TensorDict({kMax}), TensorDict({1})}), c10::ValueError);
    REQUIRE_THROWS_WITH(TensorDict::cat({TensorDict({two32, two32 / 4}), TensorDict({two32, two32 / 4})}, 1),
                        Contains("TensorDict.cat") && Contains("overflows int64"));
    // A nested level with extra dims overflows only once stacked: caught as well.
    TensorDict root({2});
    root.set("inner", TensorDict({2, int64_t{1} << 61}));
    REQUIRE_THROWS_WITH(TensorDict::stack({root, root}), Contains("overflows int64"));
  }
}

TEST_CASE("TensorDict: index_put_ is all-or-nothing", "[tensordict]") {
  torch::manual_seed(0);
  auto td = make_batch(4);
  td.set("noise", torch::randn({4, 2}));
  const auto before = td.clone();
  auto zeros_src = [](int64_t b) {
    auto src = make_batch(b).apply([](const torch::Tensor& t) { return torch::zeros_like(t); });
    src.set("noise", torch::zeros({b, 2}));
    return src;
  };
  const auto rows = torch::tensor({1, 3});

  SECTION("a missing key") {
    auto src = zeros_src(2);
    src.erase({"next", "done"});
    REQUIRE_THROWS_AS(td.index_put_({rows}, src), c10::ValueError);
    REQUIRE_THROWS_WITH(td.index_put_({rows}, src),
                        Contains("has keys") && Contains("missing from the source: [next.done]"));
    CHECK(same_content(td, before));
  }
  SECTION("the last entry has the wrong shape, or would need broadcasting") {
    auto src = zeros_src(2);
    src.set("noise", torch::zeros({2, 3}));
    REQUIRE_THROWS_AS(td.index_put_({rows}, src), c10::ValueError);
    REQUIRE_THROWS_WITH(td.index_put_({rows}, src),
                        Contains("\"noise\"") && Contains("[2, 3]") && Contains("[2, 2]"));
    CHECK(same_content(td, before));
    src.set("noise", torch::zeros({2, 1}));  // broadcastable to [2, 2]: still refused
    REQUIRE_THROWS_WITH(td.index_put_({rows}, src), Contains("does not broadcast"));
    CHECK(same_content(td, before));
    // A one-row source for two rows.
    REQUIRE_THROWS_AS(td.index_put_({rows}, zeros_src(1)), c10::ValueError);
    CHECK(same_content(td, before));
  }
  SECTION("the last entry has the wrong dtype") {
    auto src = zeros_src(2);
    src.set("noise", torch::zeros({2, 2}, torch::kFloat64));
    REQUIRE_THROWS_AS(td.index_put_({rows}, src), c10::TypeError);
    REQUIRE_THROWS_WITH(td.index_put_({rows}, src), Contains("\"noise\"") && Contains("float64"));
    CHECK(same_content(td, before));
  }
  SECTION("an index out of range") {
    REQUIRE_THROWS_AS(td.index_put_({torch::tensor({1, 7})}, zeros_src(2)), c10::IndexError);
    CHECK(same_content(td, before));
  }
  SECTION("a source whose batch size is not the indexed one") {
    TensorDict src = zeros_src(2);
    TensorDict flat;
    for (const auto& key : src.keys(true, true)) flat.set(key, src.get(key));
    REQUIRE_THROWS_WITH(td.index_put_({rows}, flat), Contains("batch_size []"));
    CHECK(same_content(td, before));
  }
  SECTION("a destination that cannot be written in place") {
    TensorDict dst({{"a", torch::zeros({4})}, {"w", torch::zeros({4}, torch::requires_grad())}},
                   {4});
    TensorDict src({{"a", torch::ones({2})}, {"w", torch::ones({2})}}, {2});
    REQUIRE_THROWS_AS(dst.index_put_({rows}, src), c10::ValueError);
    REQUIRE_THROWS_WITH(dst.index_put_({rows}, src), Contains("\"w\"") && Contains("requires grad"));
    CHECK(values(dst.get("a")) == std::vector<double>{0, 0, 0, 0});
  }
  SECTION("a source aliasing the destination is read as it was") {
    td.index_put_({ti::Slice(1, 4)}, td.index({ti::Slice(0, 3)}));
    for (const auto& key : td.keys(true, true)) {
      CHECK(torch::equal(td.get(key).index({ti::Slice(1, 4)}),
                         before.get(key).index({ti::Slice(0, 3)})));
    }
  }
  SECTION("valid writes still work") {
    td.index_put_({rows}, zeros_src(2));
    CHECK(values(td.get("action")) == std::vector<double>{0, 0, 2, 0});
    CHECK(torch::equal(td.get("noise")[0], before.get("noise")[0]));
    CHECK(td.get("noise")[1].abs().sum().item<float>() == 0.0f);
  }
}

TEST_CASE("TensorDict: mutating methods that throw leave everything unchanged",
          "[tensordict]") {
  auto td = make_batch(4);
  const auto before = td.clone();

  SECTION("set: clear, typed errors and no half-created levels") {
    REQUIRE_THROWS_AS(td.set({"new", "deep", "x"}, torch::zeros({3})), c10::ValueError);
    REQUIRE_THROWS_AS(td.set({"new", "deep"}, TensorDict({5})), c10::ValueError);
    REQUIRE_THROWS_AS(td.set({"action", "x"}, torch::zeros({4})), c10::TypeError);
    REQUIRE_THROWS_WITH(td.set({"action", "x"}, TensorDict({4})),
                        Contains("TensorDict.set") && Contains("\"action.x\""));
    CHECK(same_content(td, before));
  }
  SECTION("update stages everything, then applies it") {
    TensorDict other({{"action", torch::ones({4, 1})},
                      {{"next", "reward"}, torch::ones({4, 1})},
                      {"zz", torch::zeros({3})}},
                     {});
    REQUIRE_THROWS_AS(td.update(other), c10::ValueError);
    REQUIRE_THROWS_WITH(td.update(other), Contains("TensorDict.update") && Contains("\"zz\"") &&
                                              Contains("[3]") && Contains("[4]"));
    CHECK(same_content(td, before));
    // The failure deep in a nested TensorDict, after a new nested TensorDict to insert.
    auto next = td.get_sub("next");
    TensorDict bad;
    bad.set("fresh", TensorDict({{"x", torch::ones({4})}}, {4}));  // would be inserted first
    bad.set("next", TensorDict({{"reward", torch::ones({4, 1})}, {"zz", torch::ones({2})}}, {}));
    REQUIRE_THROWS_WITH(td.update(bad), Contains("TensorDict.update: entry \"next.zz\""));
    CHECK(same_content(td, before));
    CHECK(same_content(next, before.get_sub("next")));
    // Valid updates still merge.
    td.update(TensorDict({{{"next", "reward"}, torch::ones({4, 1})}}, {4}));
    CHECK(values(td.get({"next", "reward"}))[0] == 1.0);
    CHECK(td.contains({"next", "done"}));
  }
  SECTION("erase and pop") {
    REQUIRE_THROWS_AS(td.erase("nope"), c10::IndexError);
    REQUIRE_THROWS_AS(td.pop("nope"), c10::IndexError);
    REQUIRE_THROWS_AS(td.pop("next"), c10::TypeError);
    REQUIRE_THROWS_WITH(td.pop("next"), Contains("TensorDict.pop") && Contains("\"next\""));
    REQUIRE_THROWS_AS(td.erase({"action", "x"}), c10::TypeError);
    CHECK(same_content(td, before));
  }
  SECTION("zero_ checks every leaf before zeroing any") {
    TensorDict z({{"a", torch::ones({2})}, {"w", torch::ones({2}, torch::requires_grad())}}, {2});
    REQUIRE_THROWS_AS(z.zero_(), c10::ValueError);
    REQUIRE_THROWS_WITH(z.zero_(), Contains("TensorDict.zero_") && Contains("\"w\""));
    CHECK(values(z.get("a")) == std::vector<double>{1, 1});
    {
      torch::NoGradGuard no_grad;
      z.zero_();
    }
    CHECK(values(z.get("a")) == std::vector<double>{0, 0});
    CHECK(values(z.get("w")) == std::vector<double>{0, 0});
  }
  SECTION("the constructor refuses duplicated and overlapping keys") {
    REQUIRE_THROWS_AS(TensorDict({{"a", torch::zeros({4})}, {"a", torch::ones({4})}}, {4}),
                      c10::ValueError);
    REQUIRE_THROWS_WITH(TensorDict({{"a", torch::zeros({4})}, {"a", torch::ones({4})}}, {4}),
                        Contains("\"a\" appears twice"));
    REQUIRE_THROWS_WITH(
        TensorDict({{{"a", "b"}, torch::zeros({4})}, {"a", torch::ones({4})}}, {4}),
        Contains("\"a.b\" lies inside key \"a\""));
    TensorDict inner({4});
    REQUIRE_THROWS_AS(TensorDict({{"next", inner}, {{"next", "r"}, torch::zeros({4})}}, {4}),
                      c10::ValueError);
    CHECK(inner.empty());  // not written through
    REQUIRE_THROWS_WITH(TensorDict({{"ok", torch::zeros({4})}, {"bad", TensorDict({5})}}, {4}),
                        Contains("\"bad\"") && Contains("[5]"));
  }
  SECTION("stack and cat check dtypes, structure and nested batch sizes up front") {
    auto doubles = td.clone();
    doubles.set("action", td.get("action").to(torch::kFloat64));
    REQUIRE_THROWS_AS(TensorDict::stack({td, doubles}), c10::TypeError);
    REQUIRE_THROWS_WITH(TensorDict::cat({td, doubles}),
                        Contains("\"action\"") && Contains("float64") && Contains("float32"));
    // An empty nested TensorDict in one input only, or a tensor in the other.
    auto with_empty = td.clone();
    with_empty.set("e", TensorDict({4}));
    auto with_tensor = td.clone();
    with_tensor.set("e", torch::zeros({4}));
    REQUIRE_THROWS_WITH(TensorDict::stack({with_empty, td}), Contains("has keys"));
    REQUIRE_THROWS_AS(TensorDict::stack({with_empty, with_tensor}), c10::TypeError);
    REQUIRE_THROWS_WITH(TensorDict::cat({with_tensor, with_empty}),
                        Contains("\"e\" is a tensor in the first TensorDict"));
    // Nested batch sizes that disagree.
    auto wide = td.clone();
    wide.set("e", TensorDict({4, 2}));
    REQUIRE_THROWS_WITH(TensorDict::stack({with_empty, wide}),
                        Contains("nested TensorDict \"e\"") && Contains("[4, 2]"));
    CHECK(TensorDict::cat({wide, wide}).get_sub("e").batch_size() == std::vector<int64_t>{8, 2});
    CHECK(same_content(td, before));
  }
}

}  // namespace rlobj_test_tensordict_test
