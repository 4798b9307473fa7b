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
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/TensorIndexing.h>
#include <c10/util/Exception.h>
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
  using BatchSize = std::vector<int64_t>;

  /// An entry: a tensor or a nested TensorDict. Converts implicitly to `const torch::Tensor&`
  /// (throwing if it holds a TensorDict), so summing `items()` reads naturally.
  class Value {
   public:
    Value(torch::Tensor tensor) : tensor_(std::move(tensor)) {}  // NOLINT(runtime/explicit)
    Value(const TensorDict& td);                                 // NOLINT(runtime/explicit)

    bool is_tensor() const noexcept { return td_ == nullptr; }
    bool is_tensordict() const noexcept { return td_ != nullptr; }
    /// The tensor; throws if the entry is a TensorDict.
    const torch::Tensor& tensor() const {
      TORCH_CHECK(is_tensor(), "TensorDict entry is a TensorDict, not a tensor");
      return tensor_;
    }
    /// The nested TensorDict (aliased); throws if the entry is a tensor.
    TensorDict tensordict() const;
    operator const torch::Tensor&() const { return tensor(); }  // NOLINT(runtime/explicit)

   private:
    friend class TensorDict;
    friend struct detail::TensorDictImpl;
    torch::Tensor tensor_;
    std::shared_ptr<detail::TensorDictImpl> td_;
  };

  using Item = std::pair<NestedKey, Value>;

  /// An empty TensorDict with `batch_size` `[]` and no device.
  TensorDict();
  /// An empty TensorDict.
  explicit TensorDict(BatchSize batch_size, std::optional<torch::Device> device = std::nullopt);
  /// A TensorDict filled from `source` (TorchRL's `TensorDict(source, batch_size, device)`).
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
  /// this TensorDict's batch size and device. Throws if the tensor's leading dims differ from
  /// the batch size, or if it lives on another device than the TensorDict's.
  TensorDict& set(const NestedKey& key, torch::Tensor tensor);
  /// Sets (or replaces) a nested TensorDict entry; its batch size must start with ours.
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
  /// Removes an entry; throws if there is none.
  TensorDict& erase(const NestedKey& key);
  /// Removes an entry and returns its tensor; throws if there is none or it is a TensorDict.
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
  /// Zeroes every leaf in place.
  TensorDict& zero_();

  // -- structure --------------------------------------------------------------------------------

  /// Only `keys` (nested TensorDicts come whole). With `strict`, a missing key throws.
  TensorDict select(const std::vector<NestedKey>& keys, bool strict = true) const;
  /// Everything but `keys` (missing keys are ignored).
  TensorDict exclude(const std::vector<NestedKey>& keys) const;
  /// Sets every leaf of `other` into this TensorDict (nested entries merge).
  TensorDict& update(const TensorDict& other);
  /// All leaves at the root, nested keys joined with `sep` (`"next.reward"`).
  TensorDict flatten_keys(const std::string& sep = ".") const;
  /// The inverse of `flatten_keys`.
  TensorDict unflatten_keys(const std::string& sep = ".") const;

  // -- batch dims -------------------------------------------------------------------------------

  /// Indexes every entry along the batch dims: integers, slices, bool masks and index tensors
  /// (`at::indexing::TensorIndex`), at most `batch_dims()` dims consumed.
  TensorDict index(at::ArrayRef<at::indexing::TensorIndex> indices) const;
  /// Writes `src` into the indexed rows of every entry (TorchRL's `td[idx] = src`). `src` must
  /// have the same leaf keys.
  TensorDict& index_put_(at::ArrayRef<at::indexing::TensorIndex> indices, const TensorDict& src);
  /// A batch dim of size 1 inserted at `dim` (counted among the batch dims).
  TensorDict unsqueeze(int64_t dim) const;
  /// The batch dim `dim` (of size 1) removed.
  TensorDict squeeze(int64_t dim) const;
  /// Batch dims reshaped to `batch_size` (one `-1` allowed); entries keep their feature dims.
  TensorDict reshape(BatchSize batch_size) const;
  /// As `reshape`, but every entry must be viewable (no copy).
  TensorDict view(BatchSize batch_size) const;
  /// Splits along batch dim `dim`.
  std::vector<TensorDict> unbind(int64_t dim) const;

  /// Stacks TensorDicts with identical keys and batch sizes along a new batch dim.
  static TensorDict stack(const std::vector<TensorDict>& tds, int64_t dim = 0);
  /// Concatenates TensorDicts with identical keys along existing batch dim `dim`.
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

inline std::shared_ptr<TensorDictImpl> make_impl(TensorDict::BatchSize batch_size,
                                                 std::optional<torch::Device> device) {
  for (auto s : batch_size) {
    TORCH_CHECK_VALUE(s >= 0, "TensorDict: batch_size ", shape_str(batch_size),
                      " has a negative dimension");
  }
  auto impl = std::make_shared<TensorDictImpl>();
  impl->batch_size = std::move(batch_size);
  impl->device = device;
  return impl;
}

/// Runs a per-entry tensor op and, if it throws, rethrows with the entry's key in the message.
template <typename F>
auto with_key(const char* where, const NestedKey& key, F&& f) -> decltype(f()) {
  try {
    return f();
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

inline TensorDict::TensorDict(std::vector<Item> source, BatchSize batch_size,
                              std::optional<torch::Device> device)
    : impl_(detail::make_impl(std::move(batch_size), device)) {
  for (auto& item : source) {
    if (item.second.is_tensor()) {
      set(item.first, item.second.tensor_);
    } else {
      set(item.first, TensorDict(FromImpl{}, item.second.td_));
    }
  }
}

inline const TensorDict::BatchSize& TensorDict::batch_size() const noexcept {
  return impl_->batch_size;
}

inline int64_t TensorDict::numel() const noexcept {
  int64_t n = 1;
  for (auto s : impl_->batch_size) n *= s;
  return n;
}

inline const std::optional<torch::Device>& TensorDict::device() const noexcept {
  return impl_->device;
}

inline size_t TensorDict::size() const noexcept { return impl_->entries.size(); }


namespace detail {

using Impl = TensorDictImpl;

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

/// The TensorDict that holds (or would hold) `key`'s leaf: the existing parent, or, when
/// levels are missing, the deepest existing ancestor (whose batch size and device the missing
/// levels would inherit). Throws if the path goes through a tensor.
inline Impl* deepest_parent(Impl* root, const NestedKey& key, const char* where,
                            bool* complete) {
  Impl* node = root;
  const auto& parts = key.parts();
  *complete = true;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    TensorDict::Value* v = node->find(parts[i]);
    if (v == nullptr) {
      *complete = false;
      return node;
    }
    TORCH_CHECK(v->is_tensordict(), where, ": key \"", key.str(), "\" goes through \"",
                NestedKey(std::vector<std::string>(parts.begin(), parts.begin() + i + 1)).str(),
                "\", which is a tensor, not a TensorDict");
    node = Impl::sub(*v);
  }
  return node;
}

/// The parent of `key`'s leaf, creating missing levels with the ancestor's batch and device.
inline Impl* make_parent(Impl* root, const NestedKey& key, const char* where) {
  Impl* node = root;
  const auto& parts = key.parts();
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    TensorDict::Value* v = node->find(parts[i]);
    if (v == nullptr) {
      auto sub = make_impl(node->batch_size, node->device);
      Impl* raw = sub.get();
      node->entries.emplace_back(parts[i], Impl::value_of(std::move(sub)));
      node = raw;
      continue;
    }
    TORCH_CHECK(v->is_tensordict(), where, ": key \"", key.str(), "\" goes through \"",
                NestedKey(std::vector<std::string>(parts.begin(), parts.begin() + i + 1)).str(),
                "\", which is a tensor, not a TensorDict");
    node = Impl::sub(*v);
  }
  return node;
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

inline std::vector<NestedKey> leaf_keys(const Impl& node) {
  std::vector<TensorDict::Item> items;
  collect_keys(node, {}, true, true, &items);
  std::vector<NestedKey> keys;
  keys.reserve(items.size());
  for (auto& it : items) keys.push_back(std::move(it.first));
  return keys;
}

/// A new TensorDict with the same structure; each leaf mapped by `fn(key, tensor)`.
/// `batch_fn` maps each level's batch size; `device` is the new device of every level.
template <typename LeafFn, typename BatchFn>
std::shared_ptr<Impl> map_structure(const Impl& src, const std::vector<std::string>& prefix,
                                    const LeafFn& fn, const BatchFn& batch_fn,
                                    const std::optional<torch::Device>& device) {
  auto out = std::make_shared<Impl>();
  out->batch_size = batch_fn(src.batch_size);
  out->device = device;
  out->entries.reserve(src.entries.size());
  for (const auto& kv : src.entries) {
    std::vector<std::string> parts = prefix;
    parts.push_back(kv.first);
    if (kv.second.is_tensor()) {
      out->entries.emplace_back(kv.first, TensorDict::Value(fn(NestedKey(parts), kv.second.tensor())));
    } else {
      out->entries.emplace_back(
          kv.first, Impl::value_of(map_structure(*Impl::sub(kv.second), parts, fn, batch_fn, device)));
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

inline void check_leaf(const Impl& node, const NestedKey& key, const torch::Tensor& t,
                       const char* where) {
  TORCH_CHECK_VALUE(t.defined(), where, ": the tensor for \"", key.str(), "\" is undefined");
  TORCH_CHECK(starts_with(t.sizes(), node.batch_size), where, ": entry \"", key.str(),
              "\" has shape ", shape_str(t.sizes()),
              ", whose leading dims do not match the batch_size ", shape_str(node.batch_size));
  if (node.device) {
    TORCH_CHECK(t.device() == *node.device, where, ": entry \"", key.str(), "\" is on ",
                t.device().str(), " but the TensorDict's device is ", node.device->str(),
                "; move it with .to() first, or use a TensorDict without a device");
  }
}

inline void check_same_keys(const std::vector<NestedKey>& expected, const Impl& other,
                            const char* where, size_t position) {
  auto got = leaf_keys(other);
  auto a = expected;
  std::sort(a.begin(), a.end());
  std::sort(got.begin(), got.end());
  TORCH_CHECK(a == got, where, ": TensorDict ", position, " has keys ", keys_str(got),
              " but the first one has ", keys_str(a));
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
  // Apply the index to a zero-stride dummy of the batch shape: exactly torch's semantics for
  // the resulting batch dims, at the cost of a few bytes.
  std::vector<at::indexing::TensorIndex> cpu_indices;
  cpu_indices.reserve(indices.size());
  for (const auto& idx : indices) {
    if (idx.is_tensor() && !idx.tensor().device().is_cpu()) {
      cpu_indices.emplace_back(idx.tensor().to(torch::kCPU));
    } else {
      cpu_indices.push_back(idx);
    }
  }
  auto dummy = at::zeros({1}, at::TensorOptions().dtype(at::kByte)).expand(batch);
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
      new_batch_of, src.device);
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

// -- entries ----------------------------------------------------------------------------------

inline TensorDict& TensorDict::set(const NestedKey& key, torch::Tensor tensor) {
  constexpr const char* where = "TensorDict.set";
  bool complete = false;
  detail::Impl* node = detail::deepest_parent(impl_.get(), key, where, &complete);
  detail::check_leaf(*node, key, tensor, where);
  if (!complete) node = detail::make_parent(impl_.get(), key, where);
  node->put(key.leaf(), Value(std::move(tensor)));
  return *this;
}

inline TensorDict& TensorDict::set(const NestedKey& key, const TensorDict& td) {
  constexpr const char* where = "TensorDict.set";
  TORCH_CHECK(td.impl_ != impl_, where, ": cannot nest a TensorDict inside itself (\"",
              key.str(), "\")");
  bool complete = false;
  detail::Impl* node = detail::deepest_parent(impl_.get(), key, where, &complete);
  TORCH_CHECK(detail::starts_with(td.batch_size(), node->batch_size), where, ": nested TensorDict \"",
              key.str(), "\" has batch_size ", detail::shape_str(td.batch_size()),
              ", which does not start with the parent's batch_size ",
              detail::shape_str(node->batch_size));
  if (node->device) {
    TORCH_CHECK(td.device() == node->device, where, ": nested TensorDict \"", key.str(),
                "\" has device ", td.device() ? td.device()->str() : std::string("None"),
                " but the parent's device is ", node->device->str());
  }
  if (!complete) node = detail::make_parent(impl_.get(), key, where);
  node->put(key.leaf(), Value(td));
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
  bool complete = false;
  detail::Impl* node = detail::deepest_parent(impl_.get(), key, "TensorDict.erase", &complete);
  auto& entries = node->entries;
  auto it = std::find_if(entries.begin(), entries.end(),
                         [&](const auto& kv) { return kv.first == key.leaf(); });
  TORCH_CHECK(complete && it != entries.end(), "TensorDict.erase: key \"", key.str(),
              "\" not found; keys present: ", detail::keys_str(keys(/*include_nested=*/true)));
  entries.erase(it);
  return *this;
}

inline torch::Tensor TensorDict::pop(const NestedKey& key) {
  torch::Tensor t = get(key);
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

inline TensorDict TensorDict::copy() const {
  return TensorDict(FromImpl{},
      detail::map_leaves(*impl_, [](const torch::Tensor& t) { return t; }, impl_->device));
}

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
  for (const auto& item : items(true, true)) item.second.tensor_.zero_();
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

inline TensorDict& TensorDict::update(const TensorDict& other) {
  for (const auto& kv : other.impl_->entries) {
    if (kv.second.is_tensor()) {
      set(kv.first, kv.second.tensor_);
      continue;
    }
    Value* mine = impl_->find(kv.first);
    if (mine != nullptr && mine->is_tensordict()) {
      TensorDict(FromImpl{}, mine->td_).update(TensorDict(FromImpl{}, kv.second.td_));
    } else {
      set(kv.first, TensorDict(FromImpl{}, kv.second.td_).copy());
    }
  }
  return *this;
}

inline TensorDict TensorDict::flatten_keys(const std::string& sep) const {
  TensorDict out(impl_->batch_size, impl_->device);
  for (const auto& item : items(/*include_nested=*/true, /*leaves_only=*/true)) {
    out.impl_->put(item.first.str(sep), item.second);
  }
  return out;
}

inline TensorDict TensorDict::unflatten_keys(const std::string& sep) const {
  TORCH_CHECK_VALUE(!sep.empty(), "TensorDict.unflatten_keys: empty separator");
  TensorDict out(impl_->batch_size, impl_->device);
  for (const auto& kv : impl_->entries) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t pos; (pos = kv.first.find(sep, start)) != std::string::npos;
         start = pos + sep.size()) {
      parts.push_back(kv.first.substr(start, pos - start));
    }
    parts.push_back(kv.first.substr(start));
    if (kv.second.is_tensor()) {
      out.set(NestedKey(parts), kv.second.tensor_);
    } else {
      out.set(NestedKey(parts), TensorDict(FromImpl{}, kv.second.td_).unflatten_keys(sep));
    }
  }
  return out;
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
  detail::check_same_keys(keys, *src.impl_, where, 1);
  for (const auto& key : keys) {
    auto dst = get(key);
    auto value = src.get(key);
    detail::with_key(where, key, [&] { return dst.index_put_(indices, value); });
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
  int64_t numel = 1;
  for (auto s : from) numel *= s;
  int64_t known = 1;
  int64_t infer_at = -1;
  for (size_t i = 0; i < to.size(); ++i) {
    if (to[i] == -1) {
      TORCH_CHECK_VALUE(infer_at < 0, where, ": only one -1 allowed in ", shape_str(to));
      infer_at = static_cast<int64_t>(i);
    } else {
      TORCH_CHECK_VALUE(to[i] >= 0, where, ": invalid batch_size ", shape_str(to));
      known *= to[i];
    }
  }
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

template <typename Combine>
std::shared_ptr<Impl> combine(const std::vector<const Impl*>& srcs,
                              const std::vector<std::string>& prefix,
                              const std::function<TensorDict::BatchSize(const Impl&)>& batch_of,
                              const Combine& combine_leaves,
                              const std::optional<torch::Device>& device, const char* where) {
  const Impl& first = *srcs.front();
  auto out = std::make_shared<Impl>();
  out->batch_size = batch_of(first);
  out->device = device;
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
      for (size_t i = 0; i < srcs.size(); ++i) {
        const auto* v = srcs[i]->find(kv.first);
        TORCH_CHECK(v->is_tensordict(), where, ": entry \"", key.str(),
                    "\" is a TensorDict in the first input but a tensor in input ", i);
        subs[i] = Impl::sub(*v);
      }
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
  const auto keys = detail::leaf_keys(*first.impl_);
  std::vector<const detail::Impl*> srcs;
  srcs.reserve(tds.size());
  for (size_t i = 0; i < tds.size(); ++i) {
    TORCH_CHECK(tds[i].batch_size() == first.batch_size(), where, ": TensorDict ", i,
                " has batch_size ", detail::shape_str(tds[i].batch_size()),
                " but the first one has ", detail::shape_str(first.batch_size()));
    if (i > 0) detail::check_same_keys(keys, *tds[i].impl_, where, i);
    srcs.push_back(tds[i].impl_.get());
  }
  const auto n = static_cast<int64_t>(tds.size());
  return TensorDict(FromImpl{}, detail::combine(
      srcs, {},
      [&](const detail::Impl& level) {
        BatchSize b = level.batch_size;
        b.insert(b.begin() + d, n);
        return b;
      },
      [&](const std::vector<torch::Tensor>& ts) {
        for (size_t i = 1; i < ts.size(); ++i) {
          TORCH_CHECK(ts[i].sizes() == ts[0].sizes(), "shape ", detail::shape_str(ts[i].sizes()),
                      " in TensorDict ", i, " differs from ", detail::shape_str(ts[0].sizes()),
                      " in the first one");
        }
        return at::stack(ts, d);
      },
      detail::common_device(tds), where));
}

inline TensorDict TensorDict::cat(const std::vector<TensorDict>& tds, int64_t dim) {
  constexpr const char* where = "TensorDict.cat";
  TORCH_CHECK_VALUE(!tds.empty(), where, ": expected at least one TensorDict");
  const auto& first = tds.front();
  TORCH_CHECK(first.batch_dims() > 0, where, ": cannot concatenate TensorDicts with batch_size []");
  const int64_t d = detail::normalize_dim(where, dim, first.batch_dims());
  const auto keys = detail::leaf_keys(*first.impl_);
  std::vector<const detail::Impl*> srcs;
  int64_t total = 0;
  for (size_t i = 0; i < tds.size(); ++i) {
    auto a = tds[i].batch_size();
    auto b = first.batch_size();
    total += a.size() == b.size() ? a[d] : 0;
    if (a.size() == b.size()) a[d] = b[d] = 0;
    TORCH_CHECK(a == b, where, ": TensorDict ", i, " has batch_size ",
                detail::shape_str(tds[i].batch_size()), ", incompatible with the first one's ",
                detail::shape_str(first.batch_size()), " along dim ", d);
    if (i > 0) detail::check_same_keys(keys, *tds[i].impl_, where, i);
    srcs.push_back(tds[i].impl_.get());
  }
  return TensorDict(FromImpl{}, detail::combine(
      srcs, {},
      [&](const detail::Impl& level) {
        BatchSize b = level.batch_size;
        b[d] = total;
        return b;
      },
      [&](const std::vector<torch::Tensor>& ts) { return at::cat(ts, d); },
      detail::common_device(tds), where));
}

inline std::string TensorDict::repr() const { return detail::repr(*impl_, 0); }

}  // namespace rlobj

/// `fmt::format("{}", key)` prints a NestedKey dotted.
template <>
struct fmt::formatter<rlobj::NestedKey> : fmt::formatter<std::string> {
  template <typename FormatContext>
  auto format(const rlobj::NestedKey& key, FormatContext& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<std::string>::format(key.str(), ctx);
  }
};

/// `fmt::format("{}", td)` prints the TorchRL-like listing of a TensorDict.
template <>
struct fmt::formatter<rlobj::TensorDict> : fmt::formatter<std::string> {
  template <typename FormatContext>
  auto format(const rlobj::TensorDict& td, FormatContext& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<std::string>::format(td.repr(), ctx);
  }
};
