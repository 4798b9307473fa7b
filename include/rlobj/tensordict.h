#pragma once

/// \file
/// `rlobj::TensorDict`: a dictionary of `torch::Tensor`s sharing leading batch dimensions,
/// with TorchRL's `tensordict.TensorDict` semantics (nested keys, batch-size checks,
/// indexing, stacking...). It is the currency of every rlobj module, loss and environment.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <ATen/MemoryOverlap.h>
#include <ATen/TensorIndexing.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <torch/types.h>

#include "rlobj/detail/format.h"

namespace rlobj {

// ---------------------------------------------------------------------------------------------
// NestedKey
// ---------------------------------------------------------------------------------------------

/// A key into a TensorDict: a single string (`"reward"`) or a path of strings into nested
/// TensorDicts (`{"next", "reward"}`), like TorchRL's `NestedKey`. Printed dotted
/// (`next.reward`).
///
/// ```
/// rlobj::NestedKey k = {"next", "reward"};
/// td.get(k);            // same as td.get_sub("next").get("reward")
/// ```
class NestedKey {
 public:
  /// A one-level key.
  NestedKey(const char* key) : NestedKey(std::string(key)) {}  // NOLINT(runtime/explicit)
  /// A one-level key.
  NestedKey(std::string key) : parts_{std::move(key)} { validate(); }  // NOLINT
  /// A path of keys, outermost first.
  NestedKey(std::initializer_list<std::string> parts) : parts_(parts) { validate(); }
  /// A path of keys, outermost first.
  explicit NestedKey(std::vector<std::string> parts) : parts_(std::move(parts)) { validate(); }

  /// The path, outermost first.
  const std::vector<std::string>& parts() const noexcept { return parts_; }
  /// Number of levels (1 for a plain key).
  size_t size() const noexcept { return parts_.size(); }
  /// True for keys that go through a nested TensorDict.
  bool is_nested() const noexcept { return parts_.size() > 1; }
  /// The innermost name (`"reward"` for `{"next", "reward"}`).
  const std::string& leaf() const noexcept { return parts_.back(); }
  /// The key joined with `sep` (`"next.reward"`).
  std::string str(const std::string& sep = ".") const {
    return fmt::format("{}", fmt::join(parts_, sep));
  }
  /// `{"next"} / "reward"` == `{"next", "reward"}`.
  NestedKey operator/(const NestedKey& inner) const {
    std::vector<std::string> parts = parts_;
    parts.insert(parts.end(), inner.parts_.begin(), inner.parts_.end());
    return NestedKey(std::move(parts));
  }

  friend bool operator==(const NestedKey& a, const NestedKey& b) { return a.parts_ == b.parts_; }
  friend bool operator!=(const NestedKey& a, const NestedKey& b) { return !(a == b); }
  friend bool operator<(const NestedKey& a, const NestedKey& b) { return a.parts_ < b.parts_; }
  friend std::ostream& operator<<(std::ostream& os, const NestedKey& key) {
    return os << key.str();
  }

 private:
  void validate() const {
    TORCH_CHECK_VALUE(!parts_.empty(), "NestedKey: a key needs at least one part");
    for (const auto& part : parts_) {
      TORCH_CHECK_VALUE(!part.empty(), "NestedKey: empty part in key \"",
                        fmt::format("{}", fmt::join(parts_, ".")), "\"");
    }
  }

  std::vector<std::string> parts_;
};

class TensorDict;

namespace detail {
struct TensorDictImpl;
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// TensorDict
// ---------------------------------------------------------------------------------------------

/// A dictionary of tensors (and nested TensorDicts) whose leading dimensions all equal its
/// `batch_size`, as TorchRL's `TensorDict`.
///
/// Handle semantics, like `torch::Tensor`: copying a `TensorDict` aliases it, `clone()`
/// deep-copies, `copy()` copies the structure but shares the tensors. Keys keep insertion
/// order. Every `set` checks the entry's leading dims against `batch_size` and, when the
/// TensorDict has a device, the entry's device.
///
/// Invariants, checked wherever they could break: every batch size has no negative dim and
/// a product (`numel()`) that fits in int64; nesting never forms a cycle (a TensorDict never
/// contains itself, at any depth), so `keys(true)`, `repr()`, `clone()`... always terminate.
/// Mutating methods are all-or-nothing: when they throw (a `c10::ValueError`,
/// `c10::IndexError` or `c10::TypeError` naming the method and the key), the TensorDict is
/// unchanged.
///
/// ```
/// rlobj::TensorDict td({{"observation", torch::zeros({8, 3})},
///                       {{"next", "reward"}, torch::zeros({8, 1})}},
///                      /*batch_size=*/{8});
/// td.set("action", torch::zeros({8, 1}));
/// torch::Tensor r = td.get({"next", "reward"});
/// rlobj::TensorDict first_half = td.index({at::indexing::Slice(0, 4)});
/// std::cout << td << "\n";
/// ```
class TensorDict {
 public:
  /// The batch dims, outermost first.
  using BatchSize = std::vector<int64_t>;

  /// An entry: a tensor or a nested TensorDict. Converts implicitly to `const torch::Tensor&`
  /// (throwing if it holds a TensorDict), so summing `items()` reads naturally.
  class Value {
   public:
    /// A tensor entry.
    Value(torch::Tensor tensor) : tensor_(std::move(tensor)) {}  // NOLINT(runtime/explicit)
    /// A nested TensorDict entry (aliased, not copied).
    Value(const TensorDict& td);                                 // NOLINT(runtime/explicit)

    /// True if the entry is a tensor.
    bool is_tensor() const noexcept { return td_ == nullptr; }
    /// True if the entry is a nested TensorDict.
    bool is_tensordict() const noexcept { return td_ != nullptr; }
    /// The tensor; throws if the entry is a TensorDict.
    const torch::Tensor& tensor() const {
      TORCH_CHECK(is_tensor(), "TensorDict entry is a TensorDict, not a tensor");
      return tensor_;
    }
    /// The nested TensorDict (aliased); throws if the entry is a tensor.
    TensorDict tensordict() const;
    /// The tensor (`tensor()`); throws if the entry is a TensorDict.
    operator const torch::Tensor&() const { return tensor(); }  // NOLINT(runtime/explicit)

   private:
    friend class TensorDict;
    friend struct detail::TensorDictImpl;
    torch::Tensor tensor_;
    std::shared_ptr<detail::TensorDictImpl> td_;
  };

  /// A `(key, entry)` pair, as `items()` returns them.
  using Item = std::pair<NestedKey, Value>;

  /// An empty TensorDict with `batch_size` `[]` and no device.
  TensorDict();
  /// An empty TensorDict. Throws `c10::ValueError` if `batch_size` has a negative dim or if
  /// the product of its dims overflows int64.
  explicit TensorDict(BatchSize batch_size, std::optional<torch::Device> device = std::nullopt);
  /// A TensorDict filled from `source` (TorchRL's `TensorDict(source, batch_size, device)`),
  /// entry by entry as `set` would. `batch_size` is checked as by the constructor above. A key
  /// may appear only once in `source`, and no key may lie inside another one (`"next"` and
  /// `{"next", "reward"}` together): that would silently drop an entry, or write into the
  /// TensorDict given under the outer key. Both throw `c10::ValueError` before anything is
  /// set, so a failing constructor never modifies a nested TensorDict passed in `source`.
  TensorDict(std::vector<Item> source, BatchSize batch_size,
             std::optional<torch::Device> device = std::nullopt);

  // -- shape and device -------------------------------------------------------------------------

  /// The shared leading dims of every entry.
  const BatchSize& batch_size() const noexcept;
  /// `batch_size().size()`.
  int64_t batch_dims() const noexcept { return static_cast<int64_t>(batch_size().size()); }
  /// Product of the batch dims (1 for `batch_size` `[]`).
  int64_t numel() const noexcept;
  /// The device every entry must live on, or `nullopt` when entries may live anywhere.
  const std::optional<torch::Device>& device() const noexcept;

  // -- entries ----------------------------------------------------------------------------------

  /// Sets (or replaces) an entry. Intermediate nested TensorDicts are created on demand with
  /// this TensorDict's batch size and device. Throws `c10::ValueError` if the tensor is
  /// undefined, if its leading dims differ from the batch size (no broadcasting), or if it
  /// lives on another device than the TensorDict's; `c10::TypeError` if the key goes through a
  /// tensor. Nothing is created or replaced when it throws.
  TensorDict& set(const NestedKey& key, torch::Tensor tensor);
  /// Sets (or replaces) a nested TensorDict entry (aliased, not copied); its batch size must
  /// start with its parent's, and its device must be the parent's when the parent has one
  /// (`c10::ValueError` otherwise). Refuses, with a `c10::ValueError` naming the key, to
  /// create a cycle: `td` may not be, or contain at any depth, the TensorDict it would be
  /// nested in (`a.set("x", a)`, or `a.set("b", b)` after `b.set("a", a)`). Nothing is
  /// created or replaced when it throws.
  TensorDict& set(const NestedKey& key, const TensorDict& td);
  /// The tensor under `key`; throws, listing the keys present, if there is none.
  torch::Tensor get(const NestedKey& key) const;
  /// The tensor under `key`, or `default_value` if there is none.
  torch::Tensor get(const NestedKey& key, torch::Tensor default_value) const;
  /// The nested TensorDict under `key` (aliased: changes show in this TensorDict).
  TensorDict get_sub(const NestedKey& key) const;
  /// Pointer to the tensor under `key`, or nullptr. Valid until the TensorDict is modified.
  const torch::Tensor* find(const NestedKey& key) const noexcept;
  /// True if `key` names an entry (tensor or nested TensorDict).
  bool contains(const NestedKey& key) const noexcept;
  /// Removes an entry; throws `c10::IndexError`, listing the keys present, if there is none
  /// (`c10::TypeError` if the key goes through a tensor).
  TensorDict& erase(const NestedKey& key);
  /// Removes an entry and returns its tensor; throws `c10::IndexError` if there is none and
  /// `c10::TypeError` if it is a nested TensorDict (nothing is removed then).
  torch::Tensor pop(const NestedKey& key);
  /// Same as `get(key)`.
  torch::Tensor operator[](const NestedKey& key) const { return get(key); }

  /// Keys in insertion order; with `include_nested` the keys of nested TensorDicts follow
  /// their parent's key; with `leaves_only` nested TensorDicts themselves are left out.
  std::vector<NestedKey> keys(bool include_nested = false, bool leaves_only = false) const;
  /// `(key, value)` pairs, with the same options as `keys()`.
  std::vector<Item> items(bool include_nested = false, bool leaves_only = false) const;
  /// Number of top-level entries.
  size_t size() const noexcept;
  /// True when there is no entry.
  bool empty() const noexcept { return size() == 0; }

  // -- copies -----------------------------------------------------------------------------------

  /// Deep copy: new structure, new tensor storage.
  TensorDict clone() const;
  /// Shallow copy: new structure (setting a key in the copy leaves this one alone), shared
  /// tensors.
  TensorDict copy() const;
  /// Shallow copy whose tensors are `detach()`ed.
  TensorDict detach() const;
  /// Every entry moved to `device`; the result has that device.
  TensorDict to(torch::Device device, bool non_blocking = false) const;
  /// Every entry cast to `dtype` (all leaves, as TorchRL's `td.to(dtype)`).
  TensorDict to(torch::Dtype dtype) const;
  /// `fn` applied to every leaf; the results must keep the batch dims.
  TensorDict apply(const std::function<torch::Tensor(const torch::Tensor&)>& fn) const;
  /// Zeroes every leaf in place. All-or-nothing: it first checks that every leaf can be
  /// written in place (not a leaf tensor, or a view of one, that requires grad while grad
  /// mode is on; not an inference tensor outside InferenceMode), throwing `c10::ValueError`
  /// naming the first offending key before zeroing any.
  TensorDict& zero_();

  // -- structure --------------------------------------------------------------------------------

  /// Only `keys` (nested TensorDicts come whole). With `strict`, a missing key throws.
  TensorDict select(const std::vector<NestedKey>& keys, bool strict = true) const;
  /// Everything but `keys` (missing keys are ignored).
  TensorDict exclude(const std::vector<NestedKey>& keys) const;
  /// Sets every leaf of `other` into this TensorDict (nested entries merge; nested
  /// TensorDicts of `other` that have no counterpart here are inserted as shallow copies).
  /// Each entry is checked as `set` checks it, against the nested TensorDict it lands in.
  /// All-or-nothing: every change is staged and checked first, then applied at once, so when
  /// it throws this TensorDict (and every nested TensorDict in it) is unchanged.
  TensorDict& update(const TensorDict& other);
  /// All leaves at the root, nested keys joined with `sep` (`"next.reward"`). Throws
  /// `c10::ValueError` when a key holds `sep` (`"a.b"` with `"."`: `unflatten_keys` would make it
  /// the nested key `{"a", "b"}`), naming it, and, naming both keys, when two leaves would get
  /// the same flattened key (possible with an empty `sep`) instead of dropping one.
  TensorDict flatten_keys(const std::string& sep = ".") const;
  /// The inverse of `flatten_keys`: every key is split on `sep` (empty `sep`: `c10::ValueError`)
  /// and entries sharing a prefix are grouped into nested TensorDicts; nested TensorDicts of
  /// the source keep their batch size and device. Throws `c10::ValueError`, naming the keys,
  /// when the split keys collide: two entries mapping to the same key, a tensor that would
  /// also have to be a TensorDict (`"a"` and `"a.b"` both tensors), two TensorDicts merged
  /// with different batch sizes or devices, or a key with an empty part (`"a..b"`). The
  /// source is never modified and no partial result is returned.
  TensorDict unflatten_keys(const std::string& sep = ".") const;

  // -- batch dims -------------------------------------------------------------------------------

  /// Indexes every entry along the batch dims: integers, slices, bool masks and index tensors
  /// (`at::indexing::TensorIndex`), at most `batch_dims()` dims consumed.
  TensorDict index(at::ArrayRef<at::indexing::TensorIndex> indices) const;
  /// Writes `src` into the indexed rows of every entry (TorchRL's `td[idx] = src`). `src` must
  /// have the same leaf keys (`c10::ValueError`), each leaf exactly the shape of the indexed
  /// destination (no broadcasting, `c10::ValueError`), the same dtype (`c10::TypeError`) and
  /// the same device (`c10::ValueError`); `src`'s batch size must be the indexed batch size.
  /// All-or-nothing: the indices and every entry are checked (including that each destination
  /// can be written in place, see `zero_`) before any is written; a source sharing memory
  /// with a destination is copied first, so every write sees `src` as it was at the call.
  /// (Only an out-of-memory or device error during the writes themselves could still leave
  /// some entries written.) Like `index`, index tensors not on the CPU are copied there to
  /// check them.
  TensorDict& index_put_(at::ArrayRef<at::indexing::TensorIndex> indices, const TensorDict& src);
  /// A batch dim of size 1 inserted at `dim` (counted among the batch dims).
  TensorDict unsqueeze(int64_t dim) const;
  /// The batch dim `dim` (of size 1) removed.
  TensorDict squeeze(int64_t dim) const;
  /// Batch dims reshaped to `batch_size` (one `-1` allowed); entries keep their feature dims.
  /// Throws `c10::ValueError` for other negative dims, a product of dims overflowing int64,
  /// or a batch size with another number of elements.
  TensorDict reshape(BatchSize batch_size) const;
  /// As `reshape`, but every entry must be viewable (no copy).
  TensorDict view(BatchSize batch_size) const;
  /// Splits along batch dim `dim`.
  std::vector<TensorDict> unbind(int64_t dim) const;

  /// Stacks TensorDicts with identical keys and batch sizes along a new batch dim. Every
  /// input must have the same structure (same keys, a key being a tensor or a TensorDict in
  /// all), and each entry the same shape, dtype (`c10::TypeError`, no type promotion) and
  /// device in all; nested batch sizes must agree. The stacked batch size must fit in int64.
  /// All is checked before any tensor is stacked.
  static TensorDict stack(const std::vector<TensorDict>& tds, int64_t dim = 0);
  /// Concatenates TensorDicts with identical keys along existing batch dim `dim`; the same
  /// checks as `stack`, except that shapes and batch sizes may differ along `dim`.
  static TensorDict cat(const std::vector<TensorDict>& tds, int64_t dim = 0);

  /// True if both handles alias the same TensorDict.
  bool is_same(const TensorDict& other) const noexcept { return impl_ == other.impl_; }

  /// The TorchRL-like listing printed by `operator<<` and `fmt::format("{}", td)`.
  std::string repr() const;

 private:
  friend class Value;
  friend struct detail::TensorDictImpl;
  struct FromImpl {};
  TensorDict(FromImpl, std::shared_ptr<detail::TensorDictImpl> impl) : impl_(std::move(impl)) {}

  std::shared_ptr<detail::TensorDictImpl> impl_;
};

/// Prints `td.repr()`, TorchRL's listing.
inline std::ostream& operator<<(std::ostream& os, const TensorDict& td) { return os << td.repr(); }

// ---------------------------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------------------------

namespace detail {

struct TensorDictImpl {
  TensorDict::BatchSize batch_size;
  std::optional<torch::Device> device;
  std::vector<std::pair<std::string, TensorDict::Value>> entries;

  TensorDict::Value* find(const std::string& key) noexcept {
    for (auto& kv : entries) {
      if (kv.first == key) return &kv.second;
    }
    return nullptr;
  }
  const TensorDict::Value* find(const std::string& key) const noexcept {
    return const_cast<TensorDictImpl*>(this)->find(key);
  }
  void put(const std::string& key, TensorDict::Value value) {
    if (auto* v = find(key)) {
      *v = std::move(value);
    } else {
      entries.emplace_back(key, std::move(value));
    }
  }

  // Accessors for the private parts of TensorDict and Value (this struct is their friend).
  static TensorDictImpl* sub(const TensorDict::Value& v) noexcept { return v.td_.get(); }
  static const std::shared_ptr<TensorDictImpl>& sub_ptr(const TensorDict::Value& v) noexcept {
    return v.td_;
  }
  static TensorDict::Value value_of(std::shared_ptr<TensorDictImpl> impl) {
    TensorDict::Value v{torch::Tensor()};
    v.td_ = std::move(impl);
    return v;
  }
  static TensorDict wrap(std::shared_ptr<TensorDictImpl> impl) {
    return TensorDict(TensorDict::FromImpl{}, std::move(impl));
  }
  static const std::shared_ptr<TensorDictImpl>& of(const TensorDict& td) noexcept {
    return td.impl_;
  }
};

inline std::string keys_str(const std::vector<NestedKey>& keys) {
  std::vector<std::string> names;
  names.reserve(keys.size());
  for (const auto& k : keys) names.push_back(k.str());
  return fmt::format("[{}]", fmt::join(names, ", "));
}

inline bool starts_with(c10::IntArrayRef shape, c10::IntArrayRef prefix) {
  if (shape.size() < prefix.size()) return false;
  return std::equal(prefix.begin(), prefix.end(), shape.begin());
}

/// True when `a` and `b` have the same rank and agree on every dim but `except` (-1: on all).
inline bool same_except(c10::IntArrayRef a, c10::IntArrayRef b, int64_t except) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (static_cast<int64_t>(i) != except && a[i] != b[i]) return false;
  }
  return true;
}

/// The product of `dims` in `*out`; false when it overflows int64 (or a dim is negative). A
/// zero dim makes the product 0 whatever the other dims are: it counts elements.
inline bool checked_product(c10::IntArrayRef dims, int64_t* out) noexcept {
  for (auto d : dims) {
    if (d == 0) {
      *out = 0;
      return true;
    }
  }
  uint64_t p = 1;
  for (auto d : dims) {
    if (d < 0 || c10::mul_overflows(p, static_cast<uint64_t>(d), &p) ||
        p > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return false;
    }
  }
  *out = static_cast<int64_t>(p);
  return true;
}

/// Throws `c10::ValueError`, naming `where` and the batch size, unless every dim is >= 0 and
/// their product (the TensorDict's `numel()`) fits in int64.
inline void check_batch_size(const char* where, c10::IntArrayRef batch) {
  for (auto s : batch) {
    TORCH_CHECK_VALUE(s >= 0, where, ": batch_size ", shape_str(batch),
                      " has a negative dimension (", s, ")");
  }
  int64_t n = 0;
  TORCH_CHECK_VALUE(checked_product(batch, &n), where, ": batch_size ", shape_str(batch),
                    " has too many elements: the product of its dims overflows int64");
}

inline std::shared_ptr<TensorDictImpl> make_impl(TensorDict::BatchSize batch_size,
                                                 std::optional<torch::Device> device,
                                                 const char* where = "TensorDict") {
  check_batch_size(where, batch_size);
  auto impl = std::make_shared<TensorDictImpl>();
  impl->batch_size = std::move(batch_size);
  impl->device = device;
  return impl;
}

/// Runs a per-entry tensor op and, if it throws, rethrows with the entry's key in the message
/// (keeping the error's type).
template <typename F>
auto with_key(const char* where, const NestedKey& key, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, where, ": entry \"", key.str(), "\": ", e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    TORCH_CHECK_TYPE(false, where, ": entry \"", key.str(), "\": ", e.what_without_backtrace());
  } catch (const c10::IndexError& e) {
    TORCH_CHECK_INDEX(false, where, ": entry \"", key.str(), "\": ", e.what_without_backtrace());
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, where, ": entry \"", key.str(), "\": ", e.what_without_backtrace());
  }
}

inline int64_t normalize_dim(const char* where, int64_t dim, int64_t ndims) {
  TORCH_CHECK_INDEX(dim >= -ndims && dim < ndims, where, ": dim ", dim,
                    " is out of range for ", ndims, " batch dims");
  return dim < 0 ? dim + ndims : dim;
}

}  // namespace detail

inline TensorDict::Value::Value(const TensorDict& td) : td_(td.impl_) {
  TORCH_CHECK(td_ != nullptr, "TensorDict::Value: null TensorDict");
}

inline TensorDict TensorDict::Value::tensordict() const {
  TORCH_CHECK(is_tensordict(), "TensorDict entry is a tensor, not a TensorDict");
  return TensorDict(TensorDict::FromImpl{}, td_);
}

inline TensorDict::TensorDict() : impl_(detail::make_impl({}, std::nullopt)) {}

inline TensorDict::TensorDict(BatchSize batch_size, std::optional<torch::Device> device)
    : impl_(detail::make_impl(std::move(batch_size), device)) {}

inline const TensorDict::BatchSize& TensorDict::batch_size() const noexcept {
  return impl_->batch_size;
}

inline int64_t TensorDict::numel() const noexcept {
  int64_t n = 0;
  detail::checked_product(impl_->batch_size, &n);  // cannot fail: batch sizes are checked
  return n;
}

inline const std::optional<torch::Device>& TensorDict::device() const noexcept {
  return impl_->device;
}

inline size_t TensorDict::size() const noexcept { return impl_->entries.size(); }


namespace detail {

using Impl = TensorDictImpl;

/// `"a.b"` for a one-part key, `("a", "b")` for a nested one: unambiguous when a part holds
/// the separator.
inline std::string key_repr(const NestedKey& key) {
  if (!key.is_nested()) return fmt::format("\"{}\"", key.leaf());
  std::vector<std::string> quoted;
  quoted.reserve(key.size());
  for (const auto& part : key.parts()) quoted.push_back(fmt::format("\"{}\"", part));
  return fmt::format("({})", fmt::join(quoted, ", "));
}

/// The entry under `key`, or nullptr if any level is missing or goes through a tensor.
inline const TensorDict::Value* lookup(const Impl* root, const NestedKey& key) noexcept {
  const Impl* node = root;
  const auto& parts = key.parts();
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const TensorDict::Value* v = node->find(parts[i]);
    if (v == nullptr || v->is_tensor()) return nullptr;
    node = Impl::sub(*v);
  }
  return node->find(parts.back());
}

/// The deepest existing TensorDict on `key`'s path; `*depth` is the number of `key`'s levels
/// found. When `*depth == key.size() - 1` it is `key`'s parent; otherwise it is the ancestor
/// the missing levels would hang from (and whose batch size and device they would inherit).
/// Throws `c10::TypeError` if the path goes through a tensor. Changes nothing.
inline Impl* deepest_parent(Impl* root, const NestedKey& key, const char* where, size_t* depth) {
  Impl* node = root;
  const auto& parts = key.parts();
  size_t i = 0;
  for (; i + 1 < parts.size(); ++i) {
    TensorDict::Value* v = node->find(parts[i]);
    if (v == nullptr) break;
    TORCH_CHECK_TYPE(v->is_tensordict(), where, ": key \"", key.str(), "\" goes through \"",
                     NestedKey(std::vector<std::string>(parts.begin(), parts.begin() + i + 1)).str(),
                     "\", which is a tensor, not a TensorDict");
    node = Impl::sub(*v);
  }
  *depth = i;
  return node;
}

/// Stores `value` at `key`, given `node` and `depth` from `deepest_parent`. Missing levels
/// (with `node`'s batch size and device) are built detached and attached by one final
/// insertion, so that a failure (only `std::bad_alloc` is possible) leaves the tree unchanged.
inline void put_at(Impl* node, size_t depth, const NestedKey& key, TensorDict::Value value) {
  const auto& parts = key.parts();
  if (depth + 1 == parts.size()) {
    node->put(parts.back(), std::move(value));
    return;
  }
  auto top = make_impl(node->batch_size, node->device);
  Impl* cur = top.get();
  for (size_t i = depth + 1; i + 1 < parts.size(); ++i) {
    auto sub = make_impl(node->batch_size, node->device);
    Impl* raw = sub.get();
    cur->entries.emplace_back(parts[i], Impl::value_of(std::move(sub)));
    cur = raw;
  }
  cur->entries.emplace_back(parts.back(), std::move(value));
  node->entries.emplace_back(parts[depth], Impl::value_of(std::move(top)));
}

/// True if `from` is `target` or contains it at any depth (shared sub-TensorDicts are visited
/// once).
inline bool reaches(const Impl* from, const Impl* target) {
  std::vector<const Impl*> todo{from};
  std::unordered_set<const Impl*> seen;
  while (!todo.empty()) {
    const Impl* node = todo.back();
    todo.pop_back();
    if (node == target) return true;
    if (!seen.insert(node).second) continue;
    for (const auto& kv : node->entries) {
      if (kv.second.is_tensordict()) todo.push_back(Impl::sub(kv.second));
    }
  }
  return false;
}

inline void collect_keys(const Impl& node, const std::vector<std::string>& prefix,
                         bool include_nested, bool leaves_only,
                         std::vector<TensorDict::Item>* out) {
  for (const auto& kv : node.entries) {
    std::vector<std::string> parts = prefix;
    parts.push_back(kv.first);
    const bool is_td = kv.second.is_tensordict();
    if (!(is_td && leaves_only)) out->emplace_back(NestedKey(parts), kv.second);
    if (is_td && include_nested) {
      collect_keys(*Impl::sub(kv.second), parts, include_nested, leaves_only, out);
    }
  }
}

inline std::vector<NestedKey> nested_keys(const Impl& node, bool leaves_only) {
  std::vector<TensorDict::Item> items;
  collect_keys(node, {}, true, leaves_only, &items);
  std::vector<NestedKey> keys;
  keys.reserve(items.size());
  for (auto& it : items) keys.push_back(std::move(it.first));
  return keys;
}

inline std::vector<NestedKey> leaf_keys(const Impl& node) { return nested_keys(node, true); }

/// A new TensorDict with the same structure; each leaf mapped by `fn(key, tensor)`.
/// `batch_fn` maps each level's batch size (the result is checked, naming `where`); `device`
/// is the new device of every level.
template <typename LeafFn, typename BatchFn>
std::shared_ptr<Impl> map_structure(const Impl& src, const std::vector<std::string>& prefix,
                                    const LeafFn& fn, const BatchFn& batch_fn,
                                    const std::optional<torch::Device>& device,
                                    const char* where) {
  auto out = make_impl(batch_fn(src.batch_size), device, where);
  out->entries.reserve(src.entries.size());
  for (const auto& kv : src.entries) {
    std::vector<std::string> parts = prefix;
    parts.push_back(kv.first);
    if (kv.second.is_tensor()) {
      out->entries.emplace_back(kv.first, TensorDict::Value(fn(NestedKey(parts), kv.second.tensor())));
    } else {
      out->entries.emplace_back(
          kv.first,
          Impl::value_of(map_structure(*Impl::sub(kv.second), parts, fn, batch_fn, device, where)));
    }
  }
  return out;
}

/// Fast path for maps that keep shapes: no key bookkeeping.
template <typename LeafFn>
std::shared_ptr<Impl> map_leaves(const Impl& src, const LeafFn& fn,
                                 const std::optional<torch::Device>& device) {
  auto out = std::make_shared<Impl>();
  out->batch_size = src.batch_size;
  out->device = device;
  out->entries.reserve(src.entries.size());
  for (const auto& kv : src.entries) {
    if (kv.second.is_tensor()) {
      out->entries.emplace_back(kv.first, TensorDict::Value(fn(kv.second.tensor())));
    } else {
      out->entries.emplace_back(kv.first,
                                Impl::value_of(map_leaves(*Impl::sub(kv.second), fn, device)));
    }
  }
  return out;
}

/// Shallow copy of a level: new structure, shared tensors.
inline std::shared_ptr<Impl> copy_impl(const Impl& src) {
  return map_leaves(src, [](const torch::Tensor& t) { return t; }, src.device);
}

inline void check_leaf(const Impl& node, const NestedKey& key, const torch::Tensor& t,
                       const char* where) {
  TORCH_CHECK_VALUE(t.defined(), where, ": the tensor for \"", key.str(), "\" is undefined");
  TORCH_CHECK_VALUE(starts_with(t.sizes(), node.batch_size), where, ": entry \"", key.str(),
                    "\" has shape ", shape_str(t.sizes()),
                    ", whose leading dims do not match the batch_size ",
                    shape_str(node.batch_size));
  if (node.device) {
    TORCH_CHECK_VALUE(t.device() == *node.device, where, ": entry \"", key.str(), "\" is on ",
                      t.device().str(), " but the TensorDict's device is ", node.device->str(),
                      "; move it with .to() first, or use a TensorDict without a device");
  }
}

/// Checks a nested TensorDict (its batch size and device) against the parent it would go in.
inline void check_sub(const Impl& node, const NestedKey& key,
                      const TensorDict::BatchSize& batch_size,
                      const std::optional<torch::Device>& device, const char* where) {
  TORCH_CHECK_VALUE(starts_with(batch_size, node.batch_size), where, ": nested TensorDict \"",
                    key.str(), "\" has batch_size ", shape_str(batch_size),
                    ", which does not start with the parent's batch_size ",
                    shape_str(node.batch_size));
  if (node.device) {
    TORCH_CHECK_VALUE(device == node.device, where, ": nested TensorDict \"", key.str(),
                      "\" has device ", device ? device->str() : std::string("None"),
                      " but the parent's device is ", node.device->str());
  }
}

/// `set`'s work, for `set` and the constructor: every check first, then one insertion.
inline void set_value(Impl* root, const NestedKey& key, TensorDict::Value value,
                      const char* where) {
  size_t depth = 0;
  Impl* node = deepest_parent(root, key, where, &depth);
  if (value.is_tensor()) {
    check_leaf(*node, key, value.tensor(), where);
  } else {
    const Impl* td = Impl::sub(value);
    // The new link node -> td closes a cycle exactly when td already reaches node.
    TORCH_CHECK_VALUE(!reaches(td, node), where, ": cannot set \"", key.str(),
                      "\": the TensorDict is, or contains, the TensorDict it would be nested in; "
                      "nesting a TensorDict inside itself would create a cycle");
    check_sub(*node, key, td->batch_size, td->device, where);
  }
  put_at(node, depth, key, std::move(value));
}

/// The constructor's check of its source: no key twice, no key inside another one.
inline void check_source_keys(const std::vector<TensorDict::Item>& source) {
  std::vector<const TensorDict::Item*> sorted;
  sorted.reserve(source.size());
  for (const auto& item : source) sorted.push_back(&item);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  // In this order a key is followed by the keys inside it, if any.
  for (size_t i = 0; i + 1 < sorted.size(); ++i) {
    const auto& outer = sorted[i]->first.parts();
    const auto& next = sorted[i + 1]->first.parts();
    TORCH_CHECK_VALUE(outer != next, "TensorDict: key \"", sorted[i]->first.str(),
                      "\" appears twice in the source; one entry would silently replace the other");
    TORCH_CHECK_VALUE(
        !(next.size() > outer.size() && std::equal(outer.begin(), outer.end(), next.begin())),
        "TensorDict: key \"", sorted[i + 1]->first.str(), "\" lies inside key \"",
        sorted[i]->first.str(), "\", which the source also gives (as a ",
        sorted[i]->second.is_tensor() ? "tensor" : "TensorDict",
        "); one entry would silently replace or modify the other. Give the inner entries in "
        "the TensorDict under \"", sorted[i]->first.str(), "\", or drop one of them");
  }
}

/// Throws `c10::ValueError`, naming `where` and `key`, if `t` cannot be written in place:
/// a leaf that requires grad (or a view of one) while grad mode is on, an inference tensor
/// outside InferenceMode, or (`no_overlap`) a tensor whose elements share memory.
inline void check_writable(const char* where, const NestedKey& key, const torch::Tensor& t,
                           bool no_overlap) {
  TORCH_CHECK_VALUE(!t.is_inference() || c10::InferenceMode::is_enabled(), where, ": entry \"",
                    key.str(), "\" is an inference tensor; it cannot be written in place outside "
                    "InferenceMode");
  if (c10::GradMode::is_enabled() && t.requires_grad()) {
    TORCH_CHECK_VALUE(!t.is_leaf(), where, ": entry \"", key.str(), "\" is a leaf tensor that "
                      "requires grad; it cannot be written in place while grad mode is on (use "
                      "torch::NoGradGuard)");
    TORCH_CHECK_VALUE(!(t.is_view() && t._base().is_leaf()), where, ": entry \"", key.str(),
                      "\" is a view of a leaf tensor that requires grad; it cannot be written in "
                      "place while grad mode is on (use torch::NoGradGuard)");
  }
  if (no_overlap) {
    TORCH_CHECK_VALUE(at::has_internal_overlap(t) != at::MemOverlap::Yes, where, ": entry \"",
                      key.str(), "\" has elements sharing memory (an expand()ed tensor?); it "
                      "cannot be written in place; clone() it first");
  }
}

/// Checks that every input of `stack`/`cat` has the first one's keys (nested TensorDicts
/// included); `expected` is the first one's, sorted.
inline void check_same_keys(const std::vector<NestedKey>& expected, const Impl& other,
                            const char* where, size_t position) {
  auto got = nested_keys(other, /*leaves_only=*/false);
  std::sort(got.begin(), got.end());
  TORCH_CHECK_VALUE(expected == got, where, ": TensorDict ", position, " has keys ",
                    keys_str(got), " but the first one has ", keys_str(expected));
}

/// Everything `stack` (`cat_dim` -1) or `cat` (along `cat_dim`) needs of its inputs, checked
/// before anything is computed: the same structure, each leaf with the same dtype, device and
/// shape (but along `cat_dim`) in all inputs, nested batch sizes that agree likewise, and a
/// valid resulting batch size (`batch_of`) at every level.
inline void check_combinable(const std::vector<const Impl*>& srcs,
                             const std::vector<std::string>& prefix, int64_t cat_dim,
                             const std::function<TensorDict::BatchSize(const Impl&)>& batch_of,
                             const char* where) {
  const Impl& first = *srcs.front();
  if (!prefix.empty()) {
    for (size_t i = 1; i < srcs.size(); ++i) {
      TORCH_CHECK_VALUE(same_except(srcs[i]->batch_size, first.batch_size, cat_dim), where,
                        ": nested TensorDict \"", NestedKey(prefix).str(), "\" has batch_size ",
                        shape_str(srcs[i]->batch_size), " in TensorDict ", i, " but ",
                        shape_str(first.batch_size), " in the first one");
    }
  }
  check_batch_size(where, batch_of(first));
  std::vector<const Impl*> subs(srcs.size());
  for (const auto& kv : first.entries) {
    std::vector<std::string> parts = prefix;
    parts.push_back(kv.first);
    const NestedKey key(parts);
    subs[0] = kv.second.is_tensordict() ? Impl::sub(kv.second) : nullptr;
    for (size_t i = 1; i < srcs.size(); ++i) {
      const TensorDict::Value* v = srcs[i]->find(kv.first);
      TORCH_CHECK_VALUE(v != nullptr, where, ": entry \"", key.str(), "\" is missing from TensorDict ",
                        i);
      TORCH_CHECK_TYPE(v->is_tensor() == kv.second.is_tensor(), where, ": entry \"", key.str(),
                       "\" is a ", kv.second.is_tensor() ? "tensor" : "TensorDict",
                       " in the first TensorDict but a ", v->is_tensor() ? "tensor" : "TensorDict",
                       " in TensorDict ", i);
      if (v->is_tensordict()) {
        subs[i] = Impl::sub(*v);
        continue;
      }
      const torch::Tensor& t0 = kv.second.tensor();
      const torch::Tensor& t = v->tensor();
      TORCH_CHECK_TYPE(t.scalar_type() == t0.scalar_type(), where, ": entry \"", key.str(),
                       "\" has dtype ", dtype_str(t.scalar_type()), " in TensorDict ", i, " but ",
                       dtype_str(t0.scalar_type()), " in the first one (no type promotion)");
      TORCH_CHECK_VALUE(t.device() == t0.device(), where, ": entry \"", key.str(), "\" is on ",
                        t.device().str(), " in TensorDict ", i, " but on ", t0.device().str(),
                        " in the first one");
      TORCH_CHECK_VALUE(same_except(t.sizes(), t0.sizes(), cat_dim), where, ": entry \"",
                        key.str(), "\" has shape ", shape_str(t.sizes()), " in TensorDict ", i,
                        " but ", shape_str(t0.sizes()), " in the first one",
                        cat_dim >= 0 ? fmt::format(" (they may differ only along dim {})", cat_dim)
                                     : std::string());
    }
    if (kv.second.is_tensordict()) check_combinable(subs, parts, cat_dim, batch_of, where);
  }
}

/// Number of dims an index consumes, or throws for indices that would not address batch dims.
inline int64_t consumed_dims(const at::indexing::TensorIndex& idx, const char* where) {
  if (idx.is_integer() || idx.is_slice()) return 1;
  if (idx.is_tensor()) {
    const auto& t = idx.tensor();
    if (t.scalar_type() == torch::kBool || t.scalar_type() == torch::kByte) {
      TORCH_CHECK_INDEX(t.dim() > 0, where, ": a 0-dim bool index would add a batch dim;"
                        " not supported");
      return t.dim();
    }
    TORCH_CHECK_INDEX(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), where,
                      ": index tensors must be integer or bool, got ", dtype_str(t.scalar_type()));
    return 1;
  }
  TORCH_CHECK_INDEX(false, where, ": only integers, slices, bool masks and index tensors are "
                    "supported (no None, Ellipsis or bool scalars)");
}

inline TensorDict::BatchSize indexed_batch(const TensorDict::BatchSize& batch,
                                           at::ArrayRef<at::indexing::TensorIndex> indices,
                                           const char* where) {
  int64_t consumed = 0;
  for (const auto& idx : indices) consumed += consumed_dims(idx, where);
  TORCH_CHECK_INDEX(consumed <= static_cast<int64_t>(batch.size()), where, ": the index addresses ",
                    consumed, " dims but the batch_size ", shape_str(batch), " has only ",
                    batch.size());
  // Apply the index to a meta tensor of the batch shape: torch's own rules for the resulting
  // batch dims, with no memory at all (a CPU dummy would materialise advanced indexing over
  // the batch, terabytes for the huge batch dims an empty TensorDict may have). Meta tensors
  // skip one check, the range of integer index tensors, which is made here first.
  std::vector<at::indexing::TensorIndex> cpu_indices;
  cpu_indices.reserve(indices.size());
  int64_t dim = 0;
  for (const auto& idx : indices) {
    if (idx.is_tensor()) {
      const auto t = idx.tensor().device().is_cpu() ? idx.tensor() : idx.tensor().to(torch::kCPU);
      if (t.scalar_type() != at::kBool && t.numel() > 0) {
        const int64_t n = batch[static_cast<size_t>(dim)];
        const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
        TORCH_CHECK_INDEX(lo >= -n && hi < n, where, ": index ", lo < -n ? lo : hi, " is out of bounds for dimension ",
                          dim, " with size ", n, " (batch_size ", shape_str(batch), ")");
      }
      cpu_indices.emplace_back(t);
    } else {
      cpu_indices.push_back(idx);
    }
    dim += consumed_dims(idx, where);
  }
  auto dummy = at::empty(batch, at::TensorOptions().dtype(at::kByte).device(at::kMeta));
  try {
    auto r = dummy.index(cpu_indices);
    return r.sizes().vec();
  } catch (const c10::Error& e) {
    TORCH_CHECK_INDEX(false, where, ": ", e.what_without_backtrace(), " (batch_size ",
                      shape_str(batch), ")");
  }
}

template <typename BatchFn, typename LeafFn>
std::shared_ptr<Impl> map_batch(const Impl& src, const BatchFn& new_batch_of,
                                const LeafFn& leaf_fn, const char* where) {
  // new_batch_of(level batch size) -> new level batch size; leaf_fn(key, tensor, level batch
  // dims) -> new tensor.
  return map_structure(
      src, {},
      [&](const NestedKey& key, const torch::Tensor& t) {
        return with_key(where, key, [&] { return leaf_fn(t); });
      },
      new_batch_of, src.device, where);
}

inline std::string repr(const Impl& node, int indent) {
  const std::string pad(indent, ' ');
  const std::string in1 = pad + "    ";
  const std::string in2 = pad + "        ";
  std::vector<const std::pair<std::string, TensorDict::Value>*> sorted;
  sorted.reserve(node.entries.size());
  for (const auto& kv : node.entries) sorted.push_back(&kv);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  std::vector<std::string> fields;
  fields.reserve(sorted.size());
  for (const auto* kv : sorted) {
    if (kv->second.is_tensor()) {
      const auto& t = kv->second.tensor();
      fields.push_back(fmt::format("{}{}: Tensor(shape={}, device={}, dtype={})", in2, kv->first,
                                   shape_str(t.sizes()), t.device().str(),
                                   dtype_str(t.scalar_type())));
    } else {
      fields.push_back(
          fmt::format("{}{}: {}", in2, kv->first, repr(*Impl::sub(kv->second), indent + 8)));
    }
  }
  // TorchRL's layout: `fields={\n<f1>,\n<f2>},` or, when empty, `fields={\n    },`.
  std::string body = fmt::format("{}", fmt::join(fields, ",\n"));
  if (fields.empty()) body = in1;
  return fmt::format("TensorDict(\n{}fields={{\n{}}},\n{}batch_size={},\n{}device={})", in1, body,
                     in1, shape_str(node.batch_size), in1,
                     node.device ? node.device->str() : std::string("None"));
}

}  // namespace detail

// -- construction from items ------------------------------------------------------------------

inline TensorDict::TensorDict(std::vector<Item> source, BatchSize batch_size,
                              std::optional<torch::Device> device)
    : impl_(detail::make_impl(std::move(batch_size), device)) {
  detail::check_source_keys(source);
  for (auto& item : source) {
    detail::set_value(impl_.get(), item.first, std::move(item.second), "TensorDict");
  }
}

// -- entries ----------------------------------------------------------------------------------

inline TensorDict& TensorDict::set(const NestedKey& key, torch::Tensor tensor) {
  detail::set_value(impl_.get(), key, Value(std::move(tensor)), "TensorDict.set");
  return *this;
}

inline TensorDict& TensorDict::set(const NestedKey& key, const TensorDict& td) {
  detail::set_value(impl_.get(), key, Value(td), "TensorDict.set");
  return *this;
}

inline torch::Tensor TensorDict::get(const NestedKey& key) const {
  const Value* v = detail::lookup(impl_.get(), key);
  TORCH_CHECK(v != nullptr, "TensorDict.get: key \"", key.str(), "\" not found; keys present: ",
              detail::keys_str(keys(/*include_nested=*/true)));
  TORCH_CHECK(v->is_tensor(), "TensorDict.get: entry \"", key.str(),
              "\" is a nested TensorDict, not a tensor; use get_sub(\"", key.str(), "\")");
  return v->tensor_;
}

inline torch::Tensor TensorDict::get(const NestedKey& key, torch::Tensor default_value) const {
  const Value* v = detail::lookup(impl_.get(), key);
  if (v == nullptr) return default_value;
  TORCH_CHECK(v->is_tensor(), "TensorDict.get: entry \"", key.str(),
              "\" is a nested TensorDict, not a tensor; use get_sub(\"", key.str(), "\")");
  return v->tensor_;
}

inline TensorDict TensorDict::get_sub(const NestedKey& key) const {
  const Value* v = detail::lookup(impl_.get(), key);
  TORCH_CHECK(v != nullptr, "TensorDict.get_sub: key \"", key.str(),
              "\" not found; keys present: ", detail::keys_str(keys(/*include_nested=*/true)));
  TORCH_CHECK(v->is_tensordict(), "TensorDict.get_sub: entry \"", key.str(),
              "\" is a tensor, not a nested TensorDict; use get(\"", key.str(), "\")");
  return TensorDict(FromImpl{}, v->td_);
}

inline const torch::Tensor* TensorDict::find(const NestedKey& key) const noexcept {
  const Value* v = detail::lookup(impl_.get(), key);
  return (v != nullptr && v->is_tensor()) ? &v->tensor_ : nullptr;
}

inline bool TensorDict::contains(const NestedKey& key) const noexcept {
  return detail::lookup(impl_.get(), key) != nullptr;
}

inline TensorDict& TensorDict::erase(const NestedKey& key) {
  constexpr const char* where = "TensorDict.erase";
  size_t depth = 0;
  detail::Impl* node = detail::deepest_parent(impl_.get(), key, where, &depth);
  auto& entries = node->entries;
  auto it = entries.end();
  if (depth + 1 == key.size()) {
    it = std::find_if(entries.begin(), entries.end(),
                      [&](const auto& kv) { return kv.first == key.leaf(); });
  }
  TORCH_CHECK_INDEX(it != entries.end(), where, ": key \"", key.str(),
                    "\" not found; keys present: ", detail::keys_str(keys(/*include_nested=*/true)));
  entries.erase(it);
  return *this;
}

inline torch::Tensor TensorDict::pop(const NestedKey& key) {
  constexpr const char* where = "TensorDict.pop";
  const Value* v = detail::lookup(impl_.get(), key);
  TORCH_CHECK_INDEX(v != nullptr, where, ": key \"", key.str(), "\" not found; keys present: ",
                    detail::keys_str(keys(/*include_nested=*/true)));
  TORCH_CHECK_TYPE(v->is_tensor(), where, ": entry \"", key.str(),
                   "\" is a nested TensorDict, not a tensor; use get_sub(\"", key.str(),
                   "\") then erase(\"", key.str(), "\")");
  torch::Tensor t = v->tensor_;
  erase(key);
  return t;
}

inline std::vector<NestedKey> TensorDict::keys(bool include_nested, bool leaves_only) const {
  std::vector<Item> items;
  detail::collect_keys(*impl_, {}, include_nested, leaves_only, &items);
  std::vector<NestedKey> out;
  out.reserve(items.size());
  for (auto& it : items) out.push_back(std::move(it.first));
  return out;
}

inline std::vector<TensorDict::Item> TensorDict::items(bool include_nested,
                                                       bool leaves_only) const {
  std::vector<Item> items;
  detail::collect_keys(*impl_, {}, include_nested, leaves_only, &items);
  return items;
}

// -- copies -----------------------------------------------------------------------------------

inline TensorDict TensorDict::clone() const {
  return TensorDict(FromImpl{}, detail::map_leaves(
      *impl_, [](const torch::Tensor& t) { return t.clone(); }, impl_->device));
}

inline TensorDict TensorDict::copy() const { return TensorDict(FromImpl{}, detail::copy_impl(*impl_)); }

inline TensorDict TensorDict::detach() const {
  return TensorDict(FromImpl{}, detail::map_leaves(
      *impl_, [](const torch::Tensor& t) { return t.detach(); }, impl_->device));
}

inline TensorDict TensorDict::to(torch::Device device, bool non_blocking) const {
  return TensorDict(FromImpl{}, detail::map_leaves(
      *impl_, [&](const torch::Tensor& t) { return t.to(device, non_blocking); }, device));
}

inline TensorDict TensorDict::to(torch::Dtype dtype) const {
  return TensorDict(FromImpl{}, detail::map_leaves(
      *impl_, [&](const torch::Tensor& t) { return t.to(dtype); }, impl_->device));
}

namespace detail {

inline std::shared_ptr<Impl> apply_impl(const Impl& src, const std::vector<std::string>& prefix,
                                        const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  auto out = make_impl(src.batch_size, src.device);
  out->entries.reserve(src.entries.size());
  for (const auto& kv : src.entries) {
    std::vector<std::string> parts = prefix;
    parts.push_back(kv.first);
    if (kv.second.is_tensor()) {
      const NestedKey key(parts);
      torch::Tensor t = with_key("TensorDict.apply", key, [&] { return fn(kv.second.tensor()); });
      check_leaf(*out, key, t, "TensorDict.apply");
      out->entries.emplace_back(kv.first, TensorDict::Value(std::move(t)));
    } else {
      out->entries.emplace_back(kv.first, Impl::value_of(apply_impl(*Impl::sub(kv.second), parts, fn)));
    }
  }
  return out;
}

}  // namespace detail

inline TensorDict TensorDict::apply(
    const std::function<torch::Tensor(const torch::Tensor&)>& fn) const {
  return TensorDict(FromImpl{}, detail::apply_impl(*impl_, {}, fn));
}

inline TensorDict& TensorDict::zero_() {
  constexpr const char* where = "TensorDict.zero_";
  const auto leaves = items(true, true);
  // Check every leaf before zeroing any, so that a failure leaves them all untouched.
  for (const auto& item : leaves) {
    detail::check_writable(where, item.first, item.second.tensor_, /*no_overlap=*/false);
  }
  for (const auto& item : leaves) item.second.tensor_.zero_();
  return *this;
}

// -- structure --------------------------------------------------------------------------------

inline TensorDict TensorDict::select(const std::vector<NestedKey>& keys, bool strict) const {
  auto out = detail::make_impl(impl_->batch_size, impl_->device);
  for (const auto& key : keys) {
    const Value* v = detail::lookup(impl_.get(), key);
    if (v == nullptr) {
      TORCH_CHECK(!strict, "TensorDict.select: key \"", key.str(), "\" not found; keys present: ",
                  detail::keys_str(this->keys(/*include_nested=*/true)));
      continue;
    }
    // Walk source and result together so that created levels copy the source's batch size.
    const detail::Impl* src = impl_.get();
    detail::Impl* dst = out.get();
    const auto& parts = key.parts();
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const detail::Impl* src_sub = detail::Impl::sub(*src->find(parts[i]));
      TensorDict::Value* existing = dst->find(parts[i]);
      if (existing == nullptr) {
        dst->entries.emplace_back(parts[i], detail::Impl::value_of(
                                                detail::make_impl(src_sub->batch_size, src_sub->device)));
        existing = &dst->entries.back().second;
      }
      src = src_sub;
      dst = detail::Impl::sub(*existing);
    }
    dst->put(key.leaf(), v->is_tensor() ? *v : Value(TensorDict(FromImpl{}, v->td_).copy()));
  }
  return TensorDict(FromImpl{}, std::move(out));
}

inline TensorDict TensorDict::exclude(const std::vector<NestedKey>& keys) const {
  TensorDict out = copy();
  for (const auto& key : keys) {
    if (out.contains(key)) out.erase(key);
  }
  return out;
}

namespace detail {

/// Copies of the entry lists a multi-level change (`update`) edits, swapped in only once every
/// check has passed: until `commit()` the TensorDicts themselves are untouched.
class Staging {
 public:
  using Entries = std::vector<std::pair<std::string, TensorDict::Value>>;

  /// The staged copy of `impl`'s entries (made on first use; stable address).
  Entries& entries(Impl* impl) {
    auto it = staged_.find(impl);
    if (it == staged_.end()) it = staged_.emplace(impl, impl->entries).first;
    return it->second;
  }
  /// Swaps every staged copy in.
  void commit() noexcept {
    for (auto& kv : staged_) kv.first->entries.swap(kv.second);
  }

 private:
  std::unordered_map<Impl*, Entries> staged_;
};

inline void put_in(Staging::Entries* entries, const std::string& key, TensorDict::Value value) {
  for (auto& kv : *entries) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  entries->emplace_back(key, std::move(value));
}

/// Stages `dst.update(src)` (`dst` is at `prefix` in the TensorDict being updated). Reads only
/// the live `src`, so `src` may alias (part of) `dst`.
inline void stage_update(Staging* staging, Impl* dst, const Impl& src,
                         const std::vector<std::string>& prefix, const char* where) {
  for (const auto& kv : src.entries) {
    std::vector<std::string> parts = prefix;
    parts.push_back(kv.first);
    const NestedKey key(parts);
    Staging::Entries& entries = staging->entries(dst);
    if (kv.second.is_tensor()) {
      check_leaf(*dst, key, kv.second.tensor(), where);
      put_in(&entries, kv.first, kv.second);
      continue;
    }
    const Impl& sub = *Impl::sub(kv.second);
    Impl* mine = nullptr;
    for (auto& e : entries) {
      if (e.first == kv.first && e.second.is_tensordict()) mine = Impl::sub(e.second);
    }
    if (mine != nullptr) {
      stage_update(staging, mine, sub, parts, where);
    } else {
      check_sub(*dst, key, sub.batch_size, sub.device, where);
      put_in(&entries, kv.first, Impl::value_of(copy_impl(sub)));
    }
  }
}

}  // namespace detail

inline TensorDict& TensorDict::update(const TensorDict& other) {
  detail::Staging staging;
  detail::stage_update(&staging, impl_.get(), *other.impl_, {}, "TensorDict.update");
  staging.commit();
  return *this;
}

inline TensorDict TensorDict::flatten_keys(const std::string& sep) const {
  constexpr const char* where = "TensorDict.flatten_keys";
  TensorDict out(impl_->batch_size, impl_->device);
  std::unordered_map<std::string, NestedKey> seen;
  for (auto& item : items(/*include_nested=*/true, /*leaves_only=*/true)) {
    // A part holding the separator would come back from unflatten_keys as a nested key.
    for (const auto& part : item.first.parts()) {
      TORCH_CHECK_VALUE(sep.empty() || part.find(sep) == std::string::npos, where, ": key ",
                        detail::key_repr(item.first), " holds the separator \"", sep,
                        "\", so its flattened key could not be told from a nested one (unflatten_keys would nest it); "
                        "pass another separator");
    }
    std::string flat = item.first.str(sep);
    auto inserted = seen.emplace(flat, item.first);
    TORCH_CHECK_VALUE(inserted.second, where, ": keys ", detail::key_repr(inserted.first->second),
                      " and ", detail::key_repr(item.first), " both flatten to \"", flat,
                      "\" with separator \"", sep, "\"; rename one of them");
    out.impl_->entries.emplace_back(std::move(flat), std::move(item.second));
  }
  return out;
}

namespace detail {

/// `unflatten_keys` in two passes: a tree of the split keys (where every collision is found),
/// then the TensorDicts. Nothing is built before the tree is known to be consistent.
class Unflattener {
 public:
  Unflattener(const Impl& src, std::string sep) : sep_(std::move(sep)) {
    Node root;
    root.explicit_td = true;
    root.batch = src.batch_size;
    root.device = src.device;
    nodes_.push_back(std::move(root));
    walk(src, {}, {});
  }

  std::shared_ptr<Impl> build() const { return build(0, nodes_[0].batch, nodes_[0].device); }

 private:
  static constexpr const char* where = "TensorDict.unflatten_keys";
  static constexpr size_t npos = static_cast<size_t>(-1);

  struct Node {
    std::vector<std::string> path;    // the key in the result
    std::vector<std::string> origin;  // the source key that put it there (for messages)
    bool is_leaf = false;
    torch::Tensor tensor;
    bool explicit_td = false;  // a TensorDict of the source maps here: keep its batch & device
    TensorDict::BatchSize batch;
    std::optional<torch::Device> device;
    std::vector<size_t> children;
  };

  void walk(const Impl& level, const std::vector<std::string>& src_prefix,
            const std::vector<std::string>& out_prefix) {
    for (const auto& kv : level.entries) {
      std::vector<std::string> origin = src_prefix;
      origin.push_back(kv.first);
      std::vector<std::string> out = out_prefix;
      size_t start = 0;
      for (size_t pos; (pos = kv.first.find(sep_, start)) != std::string::npos;
           start = pos + sep_.size()) {
        out.push_back(kv.first.substr(start, pos - start));
      }
      out.push_back(kv.first.substr(start));
      for (size_t i = out_prefix.size(); i < out.size(); ++i) {
        TORCH_CHECK_VALUE(!out[i].empty(), where, ": key ", key_repr(NestedKey(origin)),
                          " has an empty part when split on \"", sep_, "\"");
      }
      if (kv.second.is_tensor()) {
        add(out, origin, &kv.second.tensor(), nullptr);
      } else {
        const Impl* sub = Impl::sub(kv.second);
        add(out, origin, nullptr, sub);
        walk(*sub, origin, out);
      }
    }
  }

  size_t child(size_t parent, const std::string& name) const {
    for (size_t c : nodes_[parent].children) {
      if (nodes_[c].path.back() == name) return c;
    }
    return npos;
  }

  /// Adds a leaf (`tensor`) or a TensorDict (`sub`) of the source at `out`.
  void add(const std::vector<std::string>& out, const std::vector<std::string>& origin,
           const torch::Tensor* tensor, const Impl* sub) {
    size_t cur = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      const bool last = i + 1 == out.size();
      const std::vector<std::string> path(out.begin(), out.begin() + i + 1);
      size_t c = child(cur, out[i]);
      if (c == npos) {
        Node n;
        n.path = path;
        n.origin = origin;
        if (last && tensor != nullptr) {
          n.is_leaf = true;
          n.tensor = *tensor;
        } else if (last) {
          n.explicit_td = true;
          n.batch = sub->batch_size;
          n.device = sub->device;
        }
        nodes_.push_back(std::move(n));
        c = nodes_.size() - 1;
        nodes_[cur].children.push_back(c);
        cur = c;
        continue;
      }
      Node& n = nodes_[c];
      const bool new_is_tensor = last && tensor != nullptr;
      if (n.is_leaf || new_is_tensor) {
        const std::string a = key_repr(NestedKey(n.origin));
        const std::string b = key_repr(NestedKey(origin));
        const std::string target = key_repr(NestedKey(path));
        TORCH_CHECK_VALUE(!(n.is_leaf && new_is_tensor), where, ": keys ", a, " and ", b,
                          " both unflatten to the tensor ", target, " (separator \"", sep_,
                          "\")");
        // One of them is a tensor there, the other needs a TensorDict there.
        TORCH_CHECK_VALUE(false, where, ": cannot unflatten keys ", a, " and ", b, ": ",
                          n.is_leaf ? a : b, " unflattens to the tensor ", target, ", but ",
                          n.is_leaf ? b : a, " needs ", target, " to be a TensorDict (separator \"",
                          sep_, "\")");
      }
      if (last) {  // two TensorDicts merge here
        if (n.explicit_td) {
          TORCH_CHECK_VALUE(n.batch == sub->batch_size && n.device == sub->device, where,
                            ": keys ", key_repr(NestedKey(n.origin)), " and ",
                            key_repr(NestedKey(origin)), " both unflatten to the TensorDict ",
                            key_repr(NestedKey(path)), " but with batch_size ",
                            shape_str(n.batch), " and ", shape_str(sub->batch_size), ", device ",
                            n.device ? n.device->str() : std::string("None"), " and ",
                            sub->device ? sub->device->str() : std::string("None"));
        } else {
          n.explicit_td = true;
          n.batch = sub->batch_size;
          n.device = sub->device;
          n.origin = origin;
        }
      }
      cur = c;
    }
  }

  std::shared_ptr<Impl> build(size_t idx, const TensorDict::BatchSize& batch,
                              const std::optional<torch::Device>& device) const {
    auto out = make_impl(batch, device, where);
    out->entries.reserve(nodes_[idx].children.size());
    for (size_t c : nodes_[idx].children) {
      const Node& n = nodes_[c];
      const NestedKey key(n.path);
      if (n.is_leaf) {
        check_leaf(*out, key, n.tensor, where);
        out->entries.emplace_back(n.path.back(), TensorDict::Value(n.tensor));
      } else if (n.explicit_td) {
        check_sub(*out, key, n.batch, n.device, where);
        out->entries.emplace_back(n.path.back(), Impl::value_of(build(c, n.batch, n.device)));
      } else {  // a level created by the split: the parent's batch size and device
        out->entries.emplace_back(n.path.back(),
                                  Impl::value_of(build(c, out->batch_size, out->device)));
      }
    }
    return out;
  }

  std::string sep_;
  std::vector<Node> nodes_;
};

}  // namespace detail

inline TensorDict TensorDict::unflatten_keys(const std::string& sep) const {
  TORCH_CHECK_VALUE(!sep.empty(), "TensorDict.unflatten_keys: empty separator");
  return TensorDict(FromImpl{}, detail::Unflattener(*impl_, sep).build());
}

// -- batch dims -------------------------------------------------------------------------------

inline TensorDict TensorDict::index(at::ArrayRef<at::indexing::TensorIndex> indices) const {
  constexpr const char* where = "TensorDict.index";
  const BatchSize new_batch = detail::indexed_batch(impl_->batch_size, indices, where);
  const size_t old_dims = impl_->batch_size.size();
  return TensorDict(FromImpl{}, detail::map_batch(
      *impl_,
      [&](const BatchSize& level) {
        BatchSize b = new_batch;
        b.insert(b.end(), level.begin() + old_dims, level.end());
        return b;
      },
      [&](const torch::Tensor& t) { return t.index(indices); }, where));
}

inline TensorDict& TensorDict::index_put_(at::ArrayRef<at::indexing::TensorIndex> indices,
                                          const TensorDict& src) {
  constexpr const char* where = "TensorDict.index_put_";
  const auto keys = detail::leaf_keys(*impl_);
  {
    auto mine = keys;
    auto theirs = detail::leaf_keys(*src.impl_);
    std::sort(mine.begin(), mine.end());
    std::sort(theirs.begin(), theirs.end());
    if (mine != theirs) {
      std::vector<NestedKey> missing;
      std::vector<NestedKey> extra;
      std::set_difference(mine.begin(), mine.end(), theirs.begin(), theirs.end(),
                          std::back_inserter(missing));
      std::set_difference(theirs.begin(), theirs.end(), mine.begin(), mine.end(),
                          std::back_inserter(extra));
      TORCH_CHECK_VALUE(false, where, ": the source has keys ", detail::keys_str(theirs),
                        " but the destination has keys ", detail::keys_str(mine),
                        " (missing from the source: ", detail::keys_str(missing),
                        "; not in the destination: ", detail::keys_str(extra), ")");
    }
  }
  // Check everything before writing anything: the index, then every entry.
  const BatchSize new_batch = detail::indexed_batch(impl_->batch_size, indices, where);
  const size_t old_dims = impl_->batch_size.size();
  std::vector<std::pair<torch::Tensor, torch::Tensor>> writes;  // (destination, value)
  writes.reserve(keys.size());
  for (const auto& key : keys) {
    const torch::Tensor& dst = *find(key);
    const torch::Tensor& value = *src.find(key);
    BatchSize expected = new_batch;
    expected.insert(expected.end(), dst.sizes().begin() + old_dims, dst.sizes().end());
    TORCH_CHECK_VALUE(value.sizes() == c10::IntArrayRef(expected), where, ": entry \"",
                      key.str(), "\" has shape ", detail::shape_str(value.sizes()),
                      " in the source but the indexed destination has shape ",
                      detail::shape_str(expected), " (index_put_ does not broadcast)");
    TORCH_CHECK_TYPE(value.scalar_type() == dst.scalar_type(), where, ": entry \"", key.str(),
                     "\" has dtype ", detail::dtype_str(value.scalar_type()),
                     " in the source but ", detail::dtype_str(dst.scalar_type()),
                     " in the destination");
    TORCH_CHECK_VALUE(value.device() == dst.device(), where, ": entry \"", key.str(),
                      "\" is on ", value.device().str(), " in the source but on ",
                      dst.device().str(), " in the destination");
    detail::check_writable(where, key, dst, /*no_overlap=*/true);
    writes.emplace_back(dst, value);
  }
  TORCH_CHECK_VALUE(src.batch_size() == new_batch, where, ": the source has batch_size ",
                    detail::shape_str(src.batch_size()),
                    " but the indexed destination has batch_size ", detail::shape_str(new_batch));
  // A value sharing memory with any destination would change under an earlier write (or trip
  // torch's overlap check): copy it first, so that every write sees `src` as it was.
  for (auto& w : writes) {
    if (!w.second.has_storage()) continue;
    for (const auto& other : writes) {
      if (other.first.has_storage() && w.second.is_alias_of(other.first)) {
        w.second = w.second.clone();
        break;
      }
    }
  }
  for (size_t i = 0; i < writes.size(); ++i) {
    detail::with_key(where, keys[i],
                     [&] { return writes[i].first.index_put_(indices, writes[i].second); });
  }
  return *this;
}

inline TensorDict TensorDict::unsqueeze(int64_t dim) const {
  const int64_t d = detail::normalize_dim("TensorDict.unsqueeze", dim, batch_dims() + 1);
  return TensorDict(FromImpl{}, detail::map_batch(
      *impl_,
      [&](const BatchSize& level) {
        BatchSize b = level;
        b.insert(b.begin() + d, 1);
        return b;
      },
      [&](const torch::Tensor& t) { return t.unsqueeze(d); }, "TensorDict.unsqueeze"));
}

inline TensorDict TensorDict::squeeze(int64_t dim) const {
  const int64_t d = detail::normalize_dim("TensorDict.squeeze", dim, batch_dims());
  TORCH_CHECK(impl_->batch_size[d] == 1, "TensorDict.squeeze: batch dim ", dim, " of batch_size ",
              detail::shape_str(impl_->batch_size), " has size ", impl_->batch_size[d],
              ", expected 1");
  return TensorDict(FromImpl{}, detail::map_batch(
      *impl_,
      [&](const BatchSize& level) {
        BatchSize b = level;
        b.erase(b.begin() + d);
        return b;
      },
      [&](const torch::Tensor& t) { return t.squeeze(d); }, "TensorDict.squeeze"));
}

namespace detail {

inline TensorDict::BatchSize infer_batch(const char* where, const TensorDict::BatchSize& from,
                                         TensorDict::BatchSize to) {
  int64_t numel = 0;
  checked_product(from, &numel);  // cannot fail: `from` is a TensorDict's batch size
  int64_t infer_at = -1;
  TensorDict::BatchSize known_dims;
  known_dims.reserve(to.size());
  for (size_t i = 0; i < to.size(); ++i) {
    if (to[i] == -1) {
      TORCH_CHECK_VALUE(infer_at < 0, where, ": only one -1 allowed in ", shape_str(to));
      infer_at = static_cast<int64_t>(i);
    } else {
      TORCH_CHECK_VALUE(to[i] >= 0, where, ": batch_size ", shape_str(to),
                        " has a negative dimension (", to[i], "); only -1, to infer a dim, is "
                        "allowed");
      known_dims.push_back(to[i]);
    }
  }
  int64_t known = 0;
  TORCH_CHECK_VALUE(checked_product(known_dims, &known), where, ": batch_size ", shape_str(to),
                    " has too many elements: the product of its dims overflows int64");
  if (infer_at >= 0) {
    TORCH_CHECK_VALUE(known > 0 && numel % known == 0, where, ": cannot reshape batch_size ",
                      shape_str(from), " into ", shape_str(to));
    to[infer_at] = numel / known;
    known = numel;
  }
  TORCH_CHECK_VALUE(known == numel, where, ": cannot reshape batch_size ", shape_str(from),
                    " into ", shape_str(to));
  return to;
}

template <bool kView>
TensorDict reshape_batch(const Impl& impl, TensorDict::BatchSize shape) {
  const char* where = kView ? "TensorDict.view" : "TensorDict.reshape";
  const auto new_batch = infer_batch(where, impl.batch_size, std::move(shape));
  const size_t old_dims = impl.batch_size.size();
  auto level_batch = [&](c10::IntArrayRef level) {
    TensorDict::BatchSize b = new_batch;
    b.insert(b.end(), level.begin() + old_dims, level.end());
    return b;
  };
  return Impl::wrap(map_batch(
      impl, [&](const TensorDict::BatchSize& level) { return level_batch(level); },
      [&](const torch::Tensor& t) {
        auto s = level_batch(t.sizes());
        return kView ? t.view(s) : t.reshape(s);
      },
      where));
}

}  // namespace detail

inline TensorDict TensorDict::reshape(BatchSize batch_size) const {
  return detail::reshape_batch<false>(*impl_, std::move(batch_size));
}

inline TensorDict TensorDict::view(BatchSize batch_size) const {
  return detail::reshape_batch<true>(*impl_, std::move(batch_size));
}

inline std::vector<TensorDict> TensorDict::unbind(int64_t dim) const {
  const int64_t d = detail::normalize_dim("TensorDict.unbind", dim, batch_dims());
  // A dim this long only exists over empty data (a leaf's numel is its batch numel times the
  // rest): refuse it rather than spend minutes and gigabytes making empty TensorDicts.
  constexpr int64_t kMaxUnbind = int64_t{1} << 24;
  TORCH_CHECK_VALUE(impl_->batch_size[d] <= kMaxUnbind, "TensorDict.unbind: dim ", dim, " has size ",
                    impl_->batch_size[d], "; unbind makes at most ", kMaxUnbind, " TensorDicts");
  std::vector<TensorDict> out;
  out.reserve(impl_->batch_size[d]);
  std::vector<at::indexing::TensorIndex> idx(d, at::indexing::Slice());
  idx.emplace_back(0);
  for (int64_t i = 0; i < impl_->batch_size[d]; ++i) {
    idx.back() = at::indexing::TensorIndex(i);
    out.push_back(index(idx));
  }
  return out;
}

namespace detail {

/// The inputs' structure has been checked by `check_combinable`.
template <typename Combine>
std::shared_ptr<Impl> combine(const std::vector<const Impl*>& srcs,
                              const std::vector<std::string>& prefix,
                              const std::function<TensorDict::BatchSize(const Impl&)>& batch_of,
                              const Combine& combine_leaves,
                              const std::optional<torch::Device>& device, const char* where) {
  const Impl& first = *srcs.front();
  auto out = make_impl(batch_of(first), device, where);
  out->entries.reserve(first.entries.size());
  std::vector<torch::Tensor> leaves(srcs.size());
  std::vector<const Impl*> subs(srcs.size());
  for (const auto& kv : first.entries) {
    std::vector<std::string> parts = prefix;
    parts.push_back(kv.first);
    const NestedKey key(parts);
    if (kv.second.is_tensor()) {
      for (size_t i = 0; i < srcs.size(); ++i) leaves[i] = srcs[i]->find(kv.first)->tensor();
      out->entries.emplace_back(
          kv.first, TensorDict::Value(with_key(where, key, [&] { return combine_leaves(leaves); })));
    } else {
      for (size_t i = 0; i < srcs.size(); ++i) subs[i] = Impl::sub(*srcs[i]->find(kv.first));
      out->entries.emplace_back(
          kv.first, Impl::value_of(combine(subs, parts, batch_of, combine_leaves, device, where)));
    }
  }
  return out;
}

inline std::optional<torch::Device> common_device(const std::vector<TensorDict>& tds) {
  auto d = tds.front().device();
  for (const auto& td : tds) {
    if (td.device() != d) return std::nullopt;
  }
  return d;
}

}  // namespace detail

inline TensorDict TensorDict::stack(const std::vector<TensorDict>& tds, int64_t dim) {
  constexpr const char* where = "TensorDict.stack";
  TORCH_CHECK_VALUE(!tds.empty(), where, ": expected at least one TensorDict");
  const auto& first = tds.front();
  const int64_t d = detail::normalize_dim(where, dim, first.batch_dims() + 1);
  auto keys = detail::nested_keys(*first.impl_, /*leaves_only=*/false);
  std::sort(keys.begin(), keys.end());
  std::vector<const detail::Impl*> srcs;
  srcs.reserve(tds.size());
  for (size_t i = 0; i < tds.size(); ++i) {
    TORCH_CHECK_VALUE(tds[i].batch_size() == first.batch_size(), where, ": TensorDict ", i,
                      " has batch_size ", detail::shape_str(tds[i].batch_size()),
                      " but the first one has ", detail::shape_str(first.batch_size()));
    if (i > 0) detail::check_same_keys(keys, *tds[i].impl_, where, i);
    srcs.push_back(tds[i].impl_.get());
  }
  const auto n = static_cast<int64_t>(tds.size());
  const std::function<BatchSize(const detail::Impl&)> batch_of = [&](const detail::Impl& level) {
    BatchSize b = level.batch_size;
    b.insert(b.begin() + d, n);
    return b;
  };
  detail::check_combinable(srcs, {}, /*cat_dim=*/-1, batch_of, where);
  return TensorDict(FromImpl{}, detail::combine(
      srcs, {}, batch_of, [&](const std::vector<torch::Tensor>& ts) { return at::stack(ts, d); },
      detail::common_device(tds), where));
}

inline TensorDict TensorDict::cat(const std::vector<TensorDict>& tds, int64_t dim) {
  constexpr const char* where = "TensorDict.cat";
  TORCH_CHECK_VALUE(!tds.empty(), where, ": expected at least one TensorDict");
  const auto& first = tds.front();
  TORCH_CHECK_VALUE(first.batch_dims() > 0, where,
                    ": cannot concatenate TensorDicts with batch_size []");
  const int64_t d = detail::normalize_dim(where, dim, first.batch_dims());
  auto keys = detail::nested_keys(*first.impl_, /*leaves_only=*/false);
  std::sort(keys.begin(), keys.end());
  std::vector<const detail::Impl*> srcs;
  srcs.reserve(tds.size());
  int64_t total = 0;
  for (size_t i = 0; i < tds.size(); ++i) {
    const auto& b = tds[i].batch_size();
    TORCH_CHECK_VALUE(detail::same_except(b, first.batch_size(), d), where, ": TensorDict ", i,
                      " has batch_size ", detail::shape_str(b),
                      ", incompatible with the first one's ",
                      detail::shape_str(first.batch_size()), " along dim ", d);
    TORCH_CHECK_VALUE(b[d] <= std::numeric_limits<int64_t>::max() - total, where,
                      ": the concatenated batch dim ", d, " overflows int64 (adding TensorDict ",
                      i, "'s batch_size ", detail::shape_str(b), " to ", total, " rows)");
    total += b[d];
    if (i > 0) detail::check_same_keys(keys, *tds[i].impl_, where, i);
    srcs.push_back(tds[i].impl_.get());
  }
  const std::function<BatchSize(const detail::Impl&)> batch_of = [&](const detail::Impl& level) {
    BatchSize b = level.batch_size;
    b[d] = total;
    return b;
  };
  detail::check_combinable(srcs, {}, /*cat_dim=*/d, batch_of, where);
  return TensorDict(FromImpl{}, detail::combine(
      srcs, {}, batch_of, [&](const std::vector<torch::Tensor>& ts) { return at::cat(ts, d); },
      detail::common_device(tds), where));
}

inline std::string TensorDict::repr() const { return detail::repr(*impl_, 0); }

}  // namespace rlobj

/// \cond FMT_FORMATTERS
/// `fmt::format("{}", key)` prints a NestedKey dotted.
template <>
struct fmt::formatter<rlobj::NestedKey> : fmt::formatter<std::string> {
  template <typename FormatContext>
  auto format(const rlobj::NestedKey& key, FormatContext& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<std::string>::format(key.str(), ctx);
  }
};
/// \endcond

/// \cond FMT_FORMATTERS
/// `fmt::format("{}", td)` prints the TorchRL-like listing of a TensorDict.
template <>
struct fmt::formatter<rlobj::TensorDict> : fmt::formatter<std::string> {
  template <typename FormatContext>
  auto format(const rlobj::TensorDict& td, FormatContext& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<std::string>::format(td.repr(), ctx);
  }
};
/// \endcond
