#pragma once

/// \file
/// `rlobj::data::ReplayBuffer`: TorchRL's `ReplayBuffer(storage=LazyTensorStorage(capacity),
/// sampler=RandomSampler())` — a ring buffer of transitions allocated on the first `extend`,
/// sampled uniformly with replacement.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/serialize.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace data {

/// Options of `ReplayBuffer`.
struct ReplayBufferOptions {
  /// Options of a buffer holding `capacity` transitions.
  explicit ReplayBufferOptions(int64_t capacity = 1000000) : capacity_(capacity) {}
  /// Number of transitions kept; older ones are overwritten (TorchRL's `max_size`).
  TORCH_ARG(int64_t, capacity);
  /// Default `sample()` size (0: `sample()` needs an explicit size).
  TORCH_ARG(int64_t, batch_size) = 0;
  /// Seed of the sampler's generator.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Where the storage lives (default: the device of the first data written).
  TORCH_ARG(std::optional<torch::Device>, device) = std::nullopt;
};

/// A replay buffer of TensorDict transitions.
///
/// The storage is allocated on the first `extend`, from that data's keys, dtypes and
/// feature shapes; later data must match them (a clear error names the entry that does not).
/// Entries are packed by dtype into one `[capacity, K]` tensor each, so `sample` costs one
/// gather per dtype however many keys there are, and the sampled entries are views of it.
///
/// ```
/// rlobj::data::ReplayBuffer rb(rlobj::data::ReplayBufferOptions(100000).seed(0));
/// rb.extend(rollout);                 // batch dims are flattened into transitions
/// rlobj::TensorDict batch = rb.sample(256);  // batch_size [256]
/// ```
class ReplayBuffer {
 public:
  /// An empty buffer (storage is allocated on the first `extend`); throws `c10::ValueError` if
  /// the capacity is not positive or the batch size is negative.
  explicit ReplayBuffer(ReplayBufferOptions options = ReplayBufferOptions())
      : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(options.seed())) {
    TORCH_CHECK_VALUE(options_.capacity() > 0, "ReplayBuffer: capacity must be positive, got ", options_.capacity());
    TORCH_CHECK_VALUE(options_.batch_size() >= 0, "ReplayBuffer: batch_size must be >= 0, got ", options_.batch_size());
  }

  /// Appends every transition of `td` (all its batch dims are flattened), overwriting the
  /// oldest ones once the buffer is full.
  void extend(const TensorDict& td) {
    TORCH_CHECK(td.batch_dims() >= 1, "ReplayBuffer.extend: expected a TensorDict with at least one batch dim, "
                "got batch_size ", rlobj::detail::shape_str(td.batch_size()));
    const int64_t n_total = td.numel();
    if (n_total == 0 && layout_.empty()) return;  // nothing to store, nothing to learn the layout from
    if (layout_.empty()) allocate(td);
    const auto items = td.items(/*include_nested=*/true, /*leaves_only=*/true);
    check_compatible(td, items);  // an empty TensorDict is checked too
    if (n_total == 0) return;

    // Only the last `capacity` transitions can survive; skip the others (TorchRL's
    // round-robin writer ends in the same state).
    int64_t skip = std::max<int64_t>(0, n_total - options_.capacity());
    if (skip > 0) cursor_ = (cursor_ + skip) % options_.capacity();
    const int64_t n = n_total - skip;
    const int64_t first = std::min(n, options_.capacity() - cursor_);
    for (const auto& item : items) {
      const Slot& slot = slot_of(item.first);
      if (copy_rows_cpu(item.second.tensor(), slot, skip, n)) continue;
      // detach(): the storage holds data, never autograd history.
      auto src = item.second.tensor().detach().reshape({n_total, slot.numel}).narrow(0, skip, n);
      if (src.device() != storage_[slot.buffer].device()) src = src.to(storage_[slot.buffer].device());
      auto dst = storage_[slot.buffer].narrow(1, slot.offset, slot.numel);
      dst.narrow(0, cursor_, first).copy_(src.narrow(0, 0, first));
      if (first < n) dst.narrow(0, 0, n - first).copy_(src.narrow(0, first, n - first));
    }
    cursor_ = (cursor_ + n) % options_.capacity();
    size_ = std::min(size_ + n, options_.capacity());
  }

  /// `batch_size` transitions drawn uniformly with replacement (batch_size `[batch_size]`).
  TensorDict sample(int64_t batch_size) {
    TORCH_CHECK_VALUE(batch_size > 0, "ReplayBuffer.sample: batch_size must be positive, got ", batch_size);
    TORCH_CHECK(size_ > 0, "ReplayBuffer.sample: the buffer is empty; extend it first");
    auto index = torch::randint(0, size_, {batch_size}, generator_, torch::TensorOptions().dtype(torch::kLong));
    return gather_rows(index);
  }
  /// `sample(options.batch_size())`.
  TensorDict sample() {
    TORCH_CHECK_VALUE(options_.batch_size() > 0, "ReplayBuffer.sample: no default batch_size; pass one or set "
                      "ReplayBufferOptions::batch_size");
    return sample(options_.batch_size());
  }

  /// The transitions at `index`: a 1-D int64 tensor of positions in `[0, size())` (storage
  /// rows, not insertion order). Positions never written are an error, not stale rows.
  TensorDict gather(const torch::Tensor& index) {
    TORCH_CHECK_VALUE(index.defined() && index.dim() == 1 && index.scalar_type() == torch::kLong,
                      "ReplayBuffer.gather: index must be a 1-D int64 tensor, got ",
                      index.defined() ? rlobj::detail::dtype_str(index.scalar_type()) + " " +
                                            rlobj::detail::shape_str(index.sizes())
                                      : std::string("an undefined tensor"));
    TORCH_CHECK_INDEX(size_ > 0 || index.numel() == 0, "ReplayBuffer.gather: the buffer is empty");
    if (index.numel() > 0) {
      const int64_t lo = index.min().item<int64_t>(), hi = index.max().item<int64_t>();
      TORCH_CHECK_INDEX(lo >= 0 && hi < size_, "ReplayBuffer.gather: positions must be in [0, ", size_,
                        ") (the rows written so far), got ", lo, " .. ", hi);
    }
    return gather_rows(index);
  }

  /// Every stored transition, oldest first once the buffer has wrapped (a copy).
  TensorDict storage() {
    if (size_ == 0) return TensorDict({0});
    auto order = size_ < options_.capacity() ? torch::arange(size_, torch::kLong)
                                             : (torch::arange(size_, torch::kLong) + cursor_) % options_.capacity();
    return gather_rows(order);
  }

  /// Replaces the contents with `rows` (one batch dim of n rows, at most `capacity()`) at the
  /// storage positions 0 to n - 1, the next write at `cursor` (n unless the buffer is full): a
  /// buffer written elsewhere, position for position (`load_torchrl_buffer`). The layout is that
  /// of `rows`.
  /// All or nothing: on an error the buffer is left as it was.
  void assign(const TensorDict& rows, int64_t cursor) {
    TORCH_CHECK_VALUE(rows.batch_dims() == 1, "ReplayBuffer.assign: expected rows with one batch dim, got batch_size ",
                      rlobj::detail::shape_str(rows.batch_size()));
    const int64_t n = rows.batch_size()[0];
    TORCH_CHECK_VALUE(n <= options_.capacity() && cursor >= 0 && cursor < options_.capacity() &&
                          (n == options_.capacity() || cursor == n),
                      "ReplayBuffer.assign: ", n, " rows with the next write at ", cursor, " do not fit capacity ",
                      options_.capacity());
    ReplayBuffer fresh(options_);
    fresh.extend(rows);
    layout_ = std::move(fresh.layout_);
    storage_ = std::move(fresh.storage_);
    example_ = std::move(fresh.example_);
    cursor_ = cursor;
    size_ = n;
  }

  /// Number of transitions stored (at most `capacity()`).
  int64_t size() const noexcept { return size_; }
  /// True when no transition is stored.
  bool empty() const noexcept { return size_ == 0; }
  /// Most transitions kept; older ones are overwritten beyond it.
  int64_t capacity() const noexcept { return options_.capacity(); }
  /// Position of the next write.
  int64_t cursor() const noexcept { return cursor_; }
  /// The sampler's generator.
  at::Generator& generator() noexcept { return generator_; }
  /// The options the buffer was built with.
  const ReplayBufferOptions& options() const noexcept { return options_; }

  /// Writes the filled rows of the storage, cursor, size and sampler state into `archive`.
  void save(torch::serialize::OutputArchive& archive) const {
    write_format(archive, "rlobj.ReplayBuffer");
    archive.write("counters", torch::tensor({cursor_, size_, options_.capacity()}, torch::kInt64));
    archive.write("generator", generator_.get_state());
    for (size_t b = 0; b < storage_.size(); ++b) {
      // Only the filled rows, as a copy: a view would serialize its whole storage (a 1M-capacity
      // buffer holding 1,500 transitions would write all 1M rows).
      archive.write("storage_" + std::to_string(b), storage_[b].narrow(0, 0, size_).clone());
    }
    if (!layout_.empty()) {
      torch::serialize::OutputArchive example;
      save_tensordict(example_, example);
      archive.write("example", example);
    }
  }

  /// Restores what `save` wrote (the capacity must match). Everything is read and checked
  /// before anything changes: on any error the buffer is left as it was.
  void load(torch::serialize::InputArchive& archive) {
    check_format(archive, "rlobj.ReplayBuffer", "ReplayBuffer.load");
    torch::Tensor counters, gen_state;
    archive.read("counters", counters);
    TORCH_CHECK_VALUE(counters.scalar_type() == torch::kLong && counters.numel() == 3,
                      "ReplayBuffer.load: corrupt counters");
    counters = counters.cpu();
    const int64_t cursor = counters[0].item<int64_t>(), size = counters[1].item<int64_t>();
    TORCH_CHECK_VALUE(counters[2].item<int64_t>() == options_.capacity(), "ReplayBuffer.load: the checkpoint has capacity ",
                      counters[2].item<int64_t>(), " but this buffer has ", options_.capacity());
    TORCH_CHECK_VALUE(size >= 0 && size <= options_.capacity() && cursor >= 0 && cursor < options_.capacity() &&
                          (size == options_.capacity() || cursor == size),
                      "ReplayBuffer.load: inconsistent counters (cursor ", cursor, ", size ", size, ", capacity ",
                      options_.capacity(), ")");
    archive.read("generator", gen_state);
    at::Generator generator = detail::scratch_generator(generator_);
    generator.set_state(gen_state.cpu());

    // A fresh buffer receives everything, then takes this one's place.
    ReplayBuffer fresh(options_);
    torch::serialize::InputArchive example;
    if (archive.try_read("example", example)) {
      TensorDict ex = load_tensordict(example);
      if (options_.device()) ex = ex.to(*options_.device());
      fresh.allocate(ex);
      for (size_t b = 0; b < fresh.storage_.size(); ++b) {
        torch::Tensor rows;
        archive.read("storage_" + std::to_string(b), rows);
        auto& dst = fresh.storage_[b];
        TORCH_CHECK_VALUE(rows.dim() == 2 && rows.size(0) == size && rows.size(1) == dst.size(1) &&
                              rows.scalar_type() == dst.scalar_type(),
                          "ReplayBuffer.load: stored rows ", b, " are ", rlobj::detail::dtype_str(rows.scalar_type()),
                          " ", rlobj::detail::shape_str(rows.sizes()), ", expected ",
                          rlobj::detail::dtype_str(dst.scalar_type()), " [", size, ", ", dst.size(1), "]");
        dst.narrow(0, 0, size).copy_(rows);
      }
    } else {
      TORCH_CHECK_VALUE(size == 0, "ReplayBuffer.load: the checkpoint holds ", size, " transitions but no layout");
    }
    layout_ = std::move(fresh.layout_);
    storage_ = std::move(fresh.storage_);
    example_ = std::move(fresh.example_);
    cursor_ = cursor;
    size_ = size;
    generator_ = std::move(generator);
  }

  /// `save` to a file, atomically (see `save_atomic`).
  void save(const std::string& path) const {
    torch::serialize::OutputArchive archive;
    save(archive);
    save_atomic(archive, path);
  }
  /// `load` from a file, verified record by record (see `load_archive`); `map_location` puts
  /// the loaded tensors on that device first. The storage then lives on
  /// `ReplayBufferOptions::device` if set, else where the checkpoint's data lands.
  void load(const std::string& path, std::optional<torch::Device> map_location = std::nullopt) {
    torch::serialize::InputArchive archive;
    load_archive(archive, path, map_location);
    load(archive);
  }

 private:
  struct Slot {
    NestedKey key;
    torch::Dtype dtype;
    std::vector<int64_t> shape;  // feature shape (after the batch dims)
    int64_t numel;
    size_t buffer;
    int64_t offset;
  };

  // The fast path of `extend` on the CPU (a few transitions per call, as a collector of one
  // step gives: per entry, row copies instead of five tensor ops): rows `skip ..
  // skip + n` of `src` into the ring from `cursor_`. The same bytes `copy_` writes; false (and
  // nothing written) where it does not apply (another device or dtype, strided input).
  bool copy_rows_cpu(const torch::Tensor& src, const Slot& slot, int64_t skip, int64_t n) {
    torch::Tensor& buf = storage_[slot.buffer];
    if (!buf.is_cpu() || !src.is_cpu() || src.scalar_type() != buf.scalar_type() || !src.is_contiguous() ||
        buf.stride(1) != 1) {
      return false;
    }
    if (slot.numel == 0) return true;  // a zero-size entry: nothing to write
    const auto elem = static_cast<int64_t>(buf.element_size());
    const auto row_bytes = static_cast<size_t>(slot.numel * elem);
    const char* from = static_cast<const char*>(src.data_ptr()) + skip * slot.numel * elem;
    char* base = static_cast<char*>(buf.data_ptr()) + slot.offset * elem;
    const int64_t capacity = options_.capacity();
    for (int64_t r = 0; r < n; ++r) {
      const int64_t row = (cursor_ + r) % capacity;
      std::memcpy(base + row * buf.stride(0) * elem, from + r * slot.numel * elem, row_bytes);
    }
    return true;
  }

  const Slot& slot_of(const NestedKey& key) const {
    for (const auto& s : layout_) {
      if (s.key == key) return s;
    }
    TORCH_CHECK(false, "ReplayBuffer: no storage for \"", key.str(), "\"");
  }

  // The rows at `index`, which the caller guarantees are in [0, size_).
  TensorDict gather_rows(const torch::Tensor& index) {
    std::vector<torch::Tensor> packed(storage_.size());
    for (size_t b = 0; b < storage_.size(); ++b) {
      const auto& idx = index.device() == storage_[b].device() ? index : index.to(storage_[b].device());
      packed[b] = storage_[b].index_select(0, idx);
    }
    const int64_t n = index.numel();
    TensorDict out({n}, options_.device());
    for (const auto& slot : layout_) {
      std::vector<int64_t> shape{n};
      shape.insert(shape.end(), slot.shape.begin(), slot.shape.end());
      out.set(slot.key, packed[slot.buffer].narrow(1, slot.offset, slot.numel).view(shape));
    }
    return out;
  }

  // Builds the layout and storage for `td`'s entries; changes nothing if it throws.
  void allocate(const TensorDict& td) {
    const auto bd = td.batch_dims();
    std::vector<torch::Dtype> dtypes;
    std::vector<int64_t> widths;
    std::optional<torch::Device> device = options_.device();
    std::vector<Slot> layout;
    for (const auto& item : td.items(true, true)) {
      const auto& t = item.second.tensor();
      if (!device) device = t.device();
      Slot s{item.first, t.scalar_type(), t.sizes().slice(bd).vec(), 1, 0, 0};
      for (auto d : s.shape) s.numel *= d;
      auto it = std::find(dtypes.begin(), dtypes.end(), s.dtype);
      s.buffer = static_cast<size_t>(it - dtypes.begin());
      if (it == dtypes.end()) {
        dtypes.push_back(s.dtype);
        widths.push_back(0);
      }
      s.offset = widths[s.buffer];
      widths[s.buffer] += s.numel;
      layout.push_back(std::move(s));
    }
    TORCH_CHECK_VALUE(!layout.empty(), "ReplayBuffer.extend: the TensorDict has no entry");
    std::vector<torch::Tensor> storage;
    for (size_t b = 0; b < dtypes.size(); ++b) {
      storage.push_back(torch::empty({options_.capacity(), widths[b]},
                                     torch::TensorOptions().dtype(dtypes[b]).device(*device)));
    }
    // One zero-filled transition remembers the structure for save/load.
    auto example = td.index({0}).apply([](const torch::Tensor& t) { return torch::zeros_like(t); }).unsqueeze(0);
    layout_ = std::move(layout);
    storage_ = std::move(storage);
    example_ = std::move(example);
  }

  void check_compatible(const TensorDict& td, const std::vector<TensorDict::Item>& items) const {
    const auto bd = td.batch_dims();
    TORCH_CHECK(items.size() == layout_.size(), "ReplayBuffer.extend: the data has keys ",
                rlobj::detail::keys_str(td.keys(true, true)), " but the storage holds ", stored_keys());
    for (const auto& item : items) {
      const Slot* slot = nullptr;
      for (const auto& s : layout_) {
        if (s.key == item.first) slot = &s;
      }
      TORCH_CHECK(slot != nullptr, "ReplayBuffer.extend: entry \"", item.first.str(),
                  "\" is not in the storage, which holds ", stored_keys());
      const auto& t = item.second.tensor();
      const auto feature = t.sizes().slice(bd);
      TORCH_CHECK(t.scalar_type() == slot->dtype && feature.vec() == slot->shape, "ReplayBuffer.extend: entry \"",
                  item.first.str(), "\" is ", rlobj::detail::dtype_str(t.scalar_type()), " with feature shape ",
                  rlobj::detail::shape_str(feature), " but the storage holds ", rlobj::detail::dtype_str(slot->dtype),
                  " ", rlobj::detail::shape_str(slot->shape));
    }
  }

  std::string stored_keys() const {
    std::vector<NestedKey> keys;
    for (const auto& s : layout_) keys.push_back(s.key);
    return rlobj::detail::keys_str(keys);
  }

  ReplayBufferOptions options_;
  at::Generator generator_;
  std::vector<Slot> layout_;
  std::vector<torch::Tensor> storage_;
  TensorDict example_;
  int64_t cursor_ = 0;
  int64_t size_ = 0;
};

}  // namespace data
}  // namespace rlobj
