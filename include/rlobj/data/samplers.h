#pragma once

/// \file
/// Sampling without replacement, for the epochs of on-policy algorithms (PPO):
///
/// * `SamplerWithoutReplacement` — TorchRL's sampler of the same name: successive slices of a
///   seeded random permutation of `[0, storage_size)`, a new permutation once one is used up.
///   It hands out positions, so it works with a `ReplayBuffer` (`rb.gather(...)`) as well as
///   with any TensorDict (`td.index({...})`).
/// * `MiniBatches` — the PPO epoch on top of it: `for (TensorDict mb : minibatches.epoch(batch))`
///   visits every element of `batch` (its batch dims flattened) exactly once, in minibatches of
///   one size, in a new random order each epoch (TorchRL's PPO examples: a buffer with
///   `SamplerWithoutReplacement()` and `batch_size=mini_batch_size` over the `[N*T]` batch).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <utility>

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

/// Options of `SamplerWithoutReplacement`, with TorchRL's names and defaults.
struct SamplerWithoutReplacementOptions {
  /// Drop the tail of a permutation shorter than a batch (then every batch has the requested
  /// size, and the dropped elements differ from one pass to the next). Without it the last
  /// batch of a pass holds what is left.
  TORCH_ARG(bool, drop_last) = false;
  /// Draw a random permutation for each pass (else `0, 1, 2, ...`).
  TORCH_ARG(bool, shuffle) = true;
  /// Seed of the sampler's own generator.
  TORCH_ARG(uint64_t, seed) = 0;
};

/// TorchRL's `SamplerWithoutReplacement`: `sample(storage_size, batch_size)` returns the next
/// `batch_size` positions (a 1-D int64 CPU tensor) of a random permutation of
/// `[0, storage_size)`, drawn from the sampler's own seeded generator. A pass ends when the
/// permutation is used up (or, with `drop_last`, when less than a batch is left): `ran_out()`
/// then turns true, and the next `sample` starts a new permutation. A change of
/// `storage_size` also starts one.
///
/// ```
/// rlobj::data::SamplerWithoutReplacement sampler(rlobj::data::SamplerWithoutReplacementOptions().seed(0));
/// do {
///   rlobj::TensorDict mb = rb.gather(sampler.sample(rb.size(), /*batch_size=*/64));
///   ...
/// } while (!sampler.ran_out());
/// ```
class SamplerWithoutReplacement {
 public:
  /// A sampler whose generator is seeded with `options.seed()`.
  explicit SamplerWithoutReplacement(SamplerWithoutReplacementOptions options = {})
      : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(options.seed())) {}

  /// The next `batch_size` positions in `[0, storage_size)`; fewer only for the last batch of a
  /// pass without `drop_last` (the permutation's remainder).
  torch::Tensor sample(int64_t storage_size, int64_t batch_size) {
    TORCH_CHECK_VALUE(batch_size > 0, "SamplerWithoutReplacement.sample: batch_size must be positive, got ", batch_size);
    TORCH_CHECK_VALUE(storage_size > 0, "SamplerWithoutReplacement.sample: the storage is empty (storage_size ",
                      storage_size, "); extend it first");
    TORCH_CHECK_VALUE(!options_.drop_last() || storage_size >= batch_size, "SamplerWithoutReplacement.sample: "
                      "with drop_last, batch_size (", batch_size, ") must not exceed the storage size (",
                      storage_size, "): no full batch could be drawn");
    const int64_t left = remaining();
    if (storage_size != storage_size_ || left == 0 || (options_.drop_last() && left < batch_size)) {
      order_ = options_.shuffle() ? torch::randperm(storage_size, generator_, torch::TensorOptions().dtype(torch::kLong))
                                  : torch::arange(storage_size, torch::kLong);
      storage_size_ = storage_size;
      position_ = 0;
    }
    const int64_t n = std::min(batch_size, storage_size_ - position_);
    torch::Tensor index = order_.narrow(0, position_, n);
    position_ += n;
    const int64_t rest = remaining();
    ran_out_ = options_.drop_last() ? rest < batch_size : rest == 0;
    return index;
  }

  /// Whether the last `sample` ended a pass (TorchRL's `ran_out`).
  bool ran_out() const noexcept { return ran_out_; }
  /// Positions of the current pass not handed out yet.
  int64_t remaining() const noexcept { return storage_size_ - position_; }
  /// Forgets the current pass: the next `sample` starts a new permutation.
  void reset() noexcept {
    position_ = storage_size_;
    ran_out_ = false;
  }
  /// The sampler's generator.
  at::Generator& generator() noexcept { return generator_; }
  /// The options the sampler was built with.
  const SamplerWithoutReplacementOptions& options() const noexcept { return options_; }

  /// Writes the generator's state and the current pass into `archive`.
  void save(torch::serialize::OutputArchive& archive) const {
    write_format(archive, "rlobj.SamplerWithoutReplacement");
    archive.write("counters", torch::tensor({storage_size_, position_, int64_t{ran_out_}}, torch::kInt64));
    archive.write("generator", generator_.get_state());
    archive.write("order", order_.defined() ? order_ : torch::zeros({0}, torch::kLong));
  }
  /// Restores what `save` wrote; everything is checked before anything changes.
  void load(torch::serialize::InputArchive& archive) {
    check_format(archive, "rlobj.SamplerWithoutReplacement", "SamplerWithoutReplacement.load");
    torch::Tensor counters, gen_state, order;
    archive.read("counters", counters);
    archive.read("generator", gen_state);
    archive.read("order", order);
    TORCH_CHECK_VALUE(counters.scalar_type() == torch::kLong && counters.numel() == 3,
                      "SamplerWithoutReplacement.load: corrupt counters");
    counters = counters.cpu();
    const int64_t storage_size = counters[0].item<int64_t>(), position = counters[1].item<int64_t>();
    TORCH_CHECK_VALUE(storage_size >= 0 && position >= 0 && position <= storage_size &&
                          order.scalar_type() == torch::kLong && order.dim() == 1 &&
                          order.numel() == (storage_size > 0 ? storage_size : order.numel()),
                      "SamplerWithoutReplacement.load: inconsistent state (storage size ", storage_size,
                      ", position ", position, ", order ", rlobj::detail::shape_str(order.sizes()), ")");
    const int64_t ran_out = counters[2].item<int64_t>();
    TORCH_CHECK_VALUE(ran_out == 0 || ran_out == 1, "SamplerWithoutReplacement.load: corrupt counters (ran_out flag ",
                      ran_out, ", expected 0 or 1)");
    if (storage_size > 0) {
      // The order is a permutation of [0, storage size): each index once (a repeated or
      // out-of-range one would draw rows twice or read past the data).
      order = order.cpu();
      TORCH_CHECK_VALUE(torch::equal(std::get<0>(order.sort()), torch::arange(storage_size, torch::kLong)),
                        "SamplerWithoutReplacement.load: the order is not a permutation of [0, ", storage_size,
                        ") (a repeated or out-of-range index)");
    }
    at::Generator generator = detail::scratch_generator(generator_);
    generator.set_state(gen_state.cpu());
    generator_ = std::move(generator);
    storage_size_ = storage_size;
    position_ = position;
    ran_out_ = ran_out != 0;
    order_ = storage_size > 0 ? order : torch::Tensor();
  }

 private:
  SamplerWithoutReplacementOptions options_;
  at::Generator generator_;
  torch::Tensor order_;        // the current pass's permutation
  int64_t storage_size_ = 0;   // its length
  int64_t position_ = 0;       // positions handed out so far
  bool ran_out_ = false;
};

/// Options of `MiniBatches`.
struct MiniBatchesOptions {
  /// Options of minibatches of `batch_size` elements.
  explicit MiniBatchesOptions(int64_t batch_size) : batch_size_(batch_size) {}
  /// Elements per minibatch (TorchRL's PPO examples: `mini_batch_size`). Without `drop_last`
  /// it must divide the number of elements of each batch.
  TORCH_ARG(int64_t, batch_size);
  /// A new random order each epoch (else the elements' own order).
  TORCH_ARG(bool, shuffle) = true;
  /// Allow a batch size that does not divide the data: each epoch then leaves out the
  /// remainder (a different random subset each time).
  TORCH_ARG(bool, drop_last) = false;
  /// Seed of the sampler's generator.
  TORCH_ARG(uint64_t, seed) = 0;
};

/// Minibatches without replacement over a batch of data, one epoch at a time: each epoch
/// visits every element exactly once, in a new seeded random order, `batch_size` elements per
/// minibatch. The data's batch dims are flattened (a collector's `[N, T]` batch becomes
/// `N * T` elements). Built on `SamplerWithoutReplacement`.
///
/// ```
/// rlobj::data::MiniBatches minibatches(rlobj::data::MiniBatchesOptions(/*batch_size=*/64).seed(0));
/// for (int64_t epoch = 0; epoch < num_epochs; ++epoch) {
///   for (rlobj::TensorDict mb : minibatches.epoch(batch)) {  // batch_size [64]
///     ...
///   }
/// }
/// ```
///
/// A batch with no element, a batch size that is not positive, and (without `drop_last`) a
/// batch size that does not divide the number of elements are errors naming both numbers.
class MiniBatches {
 public:
  /// Minibatches of `options.batch_size()` elements; throws `c10::ValueError` if it is not positive.
  explicit MiniBatches(MiniBatchesOptions options)
      : options_(options),
        sampler_(SamplerWithoutReplacementOptions()
                     .drop_last(options.drop_last())
                     .shuffle(options.shuffle())
                     .seed(options.seed())) {
    TORCH_CHECK_VALUE(options_.batch_size() > 0, "MiniBatches: batch_size must be positive, got ",
                      options_.batch_size());
  }

  /// One epoch over `data` (an input range of minibatches; iterate it once).
  class Epoch {
   public:
    /// Input iterator over an epoch's minibatches.
    class iterator {
     public:
      /// An input iterator: each minibatch is gathered when the iterator advances.
      using iterator_category = std::input_iterator_tag;
      /// A minibatch (batch size `[batch_size]`).
      using value_type = TensorDict;
      /// Required by the iterator traits; not meaningful for an input iterator.
      using difference_type = std::ptrdiff_t;
      /// Pointer to the current minibatch.
      using pointer = const TensorDict*;
      /// Reference to the current minibatch.
      using reference = const TensorDict&;

      iterator() = default;
      /// Starts at the epoch's first minibatch.
      explicit iterator(Epoch* epoch) : epoch_(epoch) { current_ = epoch_->next(); }
      /// The current minibatch.
      reference operator*() const { return current_; }
      /// The current minibatch.
      pointer operator->() const { return &current_; }
      /// Gathers the next minibatch; the iterator becomes `end()` once the epoch has run out.
      iterator& operator++() {
        TORCH_CHECK(epoch_->generation_ == epoch_->owner_->generation_,
                    "MiniBatches: another epoch was started while this one was running (the epochs of one MiniBatches "
                    "share its sampler: finish one before beginning the next)");
        if (epoch_->owner_->sampler_.ran_out()) {
          epoch_ = nullptr;
        } else {
          current_ = epoch_->next();
        }
        return *this;
      }
      /// Equal when both are past the end, or both iterate the same epoch.
      bool operator==(const iterator& other) const { return epoch_ == other.epoch_; }
      /// The negation of `operator==`.
      bool operator!=(const iterator& other) const { return !(*this == other); }

     private:
      Epoch* epoch_ = nullptr;
      TensorDict current_;
    };

    /// Starts the epoch (draws its order); an epoch is iterated once.
    iterator begin() {
      TORCH_CHECK(!started_, "MiniBatches: an epoch is iterated once; call epoch() again for the next one");
      started_ = true;
      generation_ = ++owner_->generation_;
      owner_->sampler_.reset();
      return iterator(this);
    }
    /// The past-the-end iterator.
    iterator end() { return iterator(); }
    /// Minibatches in this epoch.
    int64_t size() const noexcept { return data_.numel() / owner_->options_.batch_size(); }

   private:
    friend class MiniBatches;
    Epoch(MiniBatches* owner, TensorDict data) : owner_(owner), data_(std::move(data)) {}
    TensorDict next() {
      torch::Tensor index = owner_->sampler_.sample(data_.numel(), owner_->options_.batch_size());
      if (data_.device() && !data_.device()->is_cpu()) index = index.to(*data_.device());
      return data_.index({index});
    }
    MiniBatches* owner_;
    TensorDict data_;
    bool started_ = false;
    uint64_t generation_ = 0;  // the owner's count of begun epochs when this one began
  };

  /// An epoch over `data`, whose batch dims are flattened first (the epoch shares `data`'s
  /// tensors; each minibatch is a copy of its rows).
  Epoch epoch(const TensorDict& data) {
    TORCH_CHECK_VALUE(data.batch_dims() >= 1, "MiniBatches: expected data with at least one batch dim, got batch_size ",
                      rlobj::detail::shape_str(data.batch_size()));
    const int64_t n = data.numel();
    check_size(n);
    return Epoch(this, data.batch_dims() == 1 ? data : data.reshape({n}));
  }

  /// Minibatches per epoch over `n` elements (checked as `epoch` checks them).
  int64_t num_batches(int64_t n) const {
    check_size(n);
    return n / options_.batch_size();
  }

  /// The options the minibatches were built with.
  const MiniBatchesOptions& options() const noexcept { return options_; }
  /// The sampler (its generator decides the order of every epoch).
  SamplerWithoutReplacement& sampler() noexcept { return sampler_; }

  /// Writes the sampler's state (see `SamplerWithoutReplacement::save`).
  void save(torch::serialize::OutputArchive& archive) const { sampler_.save(archive); }
  /// Restores what `save` wrote.
  void load(torch::serialize::InputArchive& archive) { sampler_.load(archive); }

 private:
  void check_size(int64_t n) const {
    const int64_t b = options_.batch_size();
    TORCH_CHECK_VALUE(n > 0, "MiniBatches: the data holds no element (batch_size [0]); nothing to iterate");
    if (options_.drop_last()) {
      TORCH_CHECK_VALUE(n >= b, "MiniBatches: batch_size (", b, ") exceeds the ", n,
                        " elements of the data: no full minibatch could be drawn");
    } else {
      TORCH_CHECK_VALUE(n % b == 0, "MiniBatches: batch_size (", b, ") does not divide the ", n,
                        " elements of the data; use a divisor of ", n,
                        " or MiniBatchesOptions::drop_last(true) to leave the remainder out of each epoch");
    }
  }

  MiniBatchesOptions options_;
  SamplerWithoutReplacement sampler_;
  uint64_t generation_ = 0;  // epochs begun
};

}  // namespace data
}  // namespace rlobj
