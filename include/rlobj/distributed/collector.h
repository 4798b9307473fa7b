#pragma once

/// \file
/// `rlobj::distributed::DistributedCollector`: TorchRL's `DistributedDataCollector` pattern on
/// a `ProcessGroup`. Collector ranks step their own environments and `send` each batch of
/// transitions to the learner rank; the learner's `receive` returns one batch from every
/// collector, concatenated in rank order; the learner pushes its policy weights to the
/// collectors with `push_weights` (they call `pull_weights` at the same point of their loop).
///
/// ```
/// rlobj::distributed::DistributedCollector channel(pg);   // rank 0 learns, the others collect
/// if (channel.is_learner()) {
///   for (int64_t round = 0; round < rounds; ++round) {
///     rb.extend(channel.receive());                      // [collectors * batch rows, ...]
///     ... updates ...
///     if ((round + 1) % weights_every == 0) channel.push_weights(actor->parameters());
///   }
/// } else {
///   for (int64_t round = 0; round < rounds; ++round) {
///     channel.send(*collector.next());
///     if ((round + 1) % weights_every == 0) channel.pull_weights(actor->parameters());
///   }
/// }
/// ```
///
/// Every batch carries its sender's rank and sequence number; the learner checks that each
/// collector's batches arrive once each, in order, with the layout of its first batch (keys,
/// dtypes, shapes: sent once, as a header), and throws a `c10::Error` naming the rank otherwise.

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/detail/format.h"
#include "rlobj/distributed/process_group.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace distributed {

/// Options of a `DistributedCollector`.
struct DistributedCollectorOptions {
  /// The rank that receives the batches and owns the weights; every other rank collects.
  TORCH_ARG(int64_t, learner_rank) = 0;
};

/// Distributed collection (TorchRL's `DistributedDataCollector` pattern) over a Gloo
/// `ProcessGroup`: collector ranks `send` their batches and `pull_weights`; the learner rank
/// `receive`s one batch from every collector and `push_weights`.
class DistributedCollector {
 public:
  /// Keeps a reference to `group`, which must outlive it. Throws `c10::ValueError` unless
  /// `group` uses Gloo, has at least two ranks and `options.learner_rank()` is one of them.
  explicit DistributedCollector(ProcessGroup& group, DistributedCollectorOptions options = {})
      : group_(&group), options_(options) {
    TORCH_CHECK_VALUE(group.backend_type() == BackendType::Gloo,
                      "DistributedCollector: batches travel as CPU messages: build the ProcessGroup with the Gloo "
                      "backend (a learner on CUDA moves each received batch itself)");
    TORCH_CHECK_VALUE(group.world_size() >= 2, "DistributedCollector: needs a learner and at least one collector "
                      "(WORLD_SIZE >= 2), got WORLD_SIZE=", group.world_size());
    TORCH_CHECK_VALUE(options.learner_rank() >= 0 && options.learner_rank() < group.world_size(),
                      "DistributedCollector: learner_rank ", options.learner_rank(), " is outside [0, ",
                      group.world_size(), ")");
    layouts_.resize(group.world_size());
    sequence_.assign(group.world_size(), 0);
  }

  /// True on the learner rank.
  bool is_learner() const { return group_->rank() == options_.learner_rank(); }
  /// Number of collector ranks (`WORLD_SIZE - 1`).
  int64_t num_collectors() const { return group_->world_size() - 1; }
  /// The collector ranks, in the order `receive` concatenates their batches.
  std::vector<int64_t> collector_ranks() const {
    std::vector<int64_t> ranks;
    for (int64_t r = 0; r < group_->world_size(); ++r) {
      if (r != options_.learner_rank()) ranks.push_back(r);
    }
    return ranks;
  }
  /// Batches sent (collector) or received from each collector (learner).
  int64_t batches() const { return is_learner() ? sequence_[collector_ranks()[0]] : sequence_[group_->rank()]; }

  /// Collector side: ships `batch`'s leaves (CPU, any dtype) to the learner. The first batch's
  /// layout (keys, dtypes, shapes) is every later batch's.
  void send(const TensorDict& batch) {
    TORCH_CHECK(!is_learner(), "DistributedCollector::send: rank ", group_->rank(), " is the learner");
    const int64_t me = group_->rank();
    std::string layout = layout_of(batch);
    if (sequence_[me] == 0) {
      layouts_[me] = layout;
      torch::Tensor length = torch::tensor({static_cast<int64_t>(layout.size())}, torch::kInt64);
      group_->send(length, options_.learner_rank(), kHeaderTag, "batch layout length");
      torch::Tensor text = torch::empty({static_cast<int64_t>(layout.size())}, torch::kUInt8);
      std::memcpy(text.data_ptr(), layout.data(), layout.size());
      group_->send(text, options_.learner_rank(), kHeaderTag, "batch layout");
    } else {
      TORCH_CHECK_VALUE(layout == layouts_[me], "DistributedCollector::send: batch ", sequence_[me],
                        " has the layout ", layout, " but the first batch had ", layouts_[me]);
    }
    // [rank, sequence] as two int64, then every leaf's bytes in layout order.
    const auto leaves = batch.keys(/*include_nested=*/true, /*leaves_only=*/true);
    int64_t bytes = 2 * sizeof(int64_t);
    std::vector<torch::Tensor> parts;
    for (const auto& key : leaves) {
      torch::Tensor t = batch.get(key);
      TORCH_CHECK_VALUE(t.device().is_cpu(), "DistributedCollector::send: \"", key.str(), "\" is on ", t.device(),
                        "; send CPU batches");
      parts.push_back(t.contiguous());
      bytes += static_cast<int64_t>(parts.back().nbytes());
    }
    torch::Tensor buffer = torch::empty({bytes}, torch::kUInt8);
    auto* out = static_cast<uint8_t*>(buffer.data_ptr());
    const int64_t header[2] = {me, sequence_[me]};
    std::memcpy(out, header, sizeof(header));
    out += sizeof(header);
    for (const auto& p : parts) {
      if (p.nbytes() > 0) std::memcpy(out, p.data_ptr(), p.nbytes());
      out += p.nbytes();
    }
    group_->send(buffer, options_.learner_rank(), kBatchTag, "batch " + std::to_string(sequence_[me]));
    ++sequence_[me];
  }

  /// Learner side: the next batch of every collector, concatenated along dim 0 in rank order.
  TensorDict receive() {
    TORCH_CHECK(is_learner(), "DistributedCollector::receive: rank ", group_->rank(), " is a collector");
    std::vector<TensorDict> batches;
    for (int64_t r : collector_ranks()) {
      if (sequence_[r] == 0) {
        torch::Tensor length = torch::empty({1}, torch::kInt64);
        group_->recv_(length, r, kHeaderTag, "batch layout length");
        const int64_t n = length.item<int64_t>();
        TORCH_CHECK(n > 0 && n < (int64_t{1} << 24), "DistributedCollector: rank ", r, " sent a layout of ", n,
                    " bytes");
        torch::Tensor text = torch::empty({n}, torch::kUInt8);
        group_->recv_(text, r, kHeaderTag, "batch layout");
        layouts_[r] = std::string(static_cast<const char*>(text.data_ptr()), static_cast<size_t>(n));
        const int64_t first = collector_ranks()[0];
        TORCH_CHECK(r == first || layouts_[r] == layouts_[first], "DistributedCollector: rank ", r,
                    " sends batches laid out as ", layouts_[r], " but rank ", first, " as ", layouts_[first]);
        templates_[r] = parse(layouts_[r], r);
      }
      const Template& t = templates_[r];
      torch::Tensor buffer = torch::empty({t.bytes}, torch::kUInt8);
      group_->recv_(buffer, r, kBatchTag, "batch " + std::to_string(sequence_[r]));
      const auto* in = static_cast<const uint8_t*>(buffer.data_ptr());
      int64_t header[2];
      std::memcpy(header, in, sizeof(header));
      in += sizeof(header);
      TORCH_CHECK(header[0] == r && header[1] == sequence_[r], "DistributedCollector: from rank ", r,
                  " expected batch ", sequence_[r], " of rank ", r, " but got batch ", header[1], " of rank ",
                  header[0], " (a batch lost or delivered twice)");
      TensorDict td(t.batch_size);
      for (const auto& leaf : t.leaves) {
        torch::Tensor value = torch::empty(leaf.shape, leaf.dtype);
        if (value.nbytes() > 0) std::memcpy(value.data_ptr(), in, value.nbytes());
        in += value.nbytes();
        td.set(leaf.key, value);
      }
      ++sequence_[r];
      batches.push_back(std::move(td));
    }
    return batches.size() == 1 ? batches[0] : TensorDict::cat(batches, 0);
  }

  /// Learner side: sends `params` (the policy's, in the order the collectors pass theirs) to
  /// every collector: one broadcast of a flat buffer.
  void push_weights(const std::vector<torch::Tensor>& params) {
    TORCH_CHECK(is_learner(), "DistributedCollector::push_weights: rank ", group_->rank(), " is a collector");
    exchange(params);
  }

  /// Collector side: overwrites `params` with the learner's (see `push_weights`).
  void pull_weights(const std::vector<torch::Tensor>& params) {
    TORCH_CHECK(!is_learner(), "DistributedCollector::pull_weights: rank ", group_->rank(), " is the learner");
    exchange(params);
  }

  /// The process group it communicates over.
  ProcessGroup& process_group() { return *group_; }

 private:
  static constexpr int kHeaderTag = 71;
  static constexpr int kBatchTag = 72;

  struct Leaf {
    NestedKey key;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  struct Template {
    std::vector<int64_t> batch_size;
    std::vector<Leaf> leaves;
    int64_t bytes = 0;
  };

  static std::string join(c10::IntArrayRef shape) { return fmt::format("{}", fmt::join(shape, ",")); }

  /// "b0,b1|key/parts:dtype:d0,d1;..." (keys joined by '/').
  static std::string layout_of(const TensorDict& batch) {
    std::string s = join(batch.batch_size()) + "|";
    for (const auto& key : batch.keys(/*include_nested=*/true, /*leaves_only=*/true)) {
      const torch::Tensor t = batch.get(key);
      s += key.str("/") + ":" + c10::toString(t.scalar_type()) + ":" + join(t.sizes()) + ";";
    }
    return s;
  }

  static std::vector<int64_t> numbers(const std::string& s) {
    std::vector<int64_t> v;
    std::stringstream in(s);
    for (std::string n; std::getline(in, n, ',');) v.push_back(std::stoll(n));
    return v;
  }

  static Template parse(const std::string& layout, int64_t rank) {
    static const torch::ScalarType kTypes[] = {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16,
                                               torch::kInt64,   torch::kInt32,   torch::kInt16,   torch::kInt8,
                                               torch::kUInt8,   torch::kBool};
    Template t;
    t.bytes = 2 * sizeof(int64_t);
    try {
      const auto bar = layout.find('|');
      TORCH_CHECK(bar != std::string::npos, "no batch size");
      t.batch_size = numbers(layout.substr(0, bar));
      std::stringstream entries(layout.substr(bar + 1));
      for (std::string entry; std::getline(entries, entry, ';');) {
        const auto c1 = entry.find(':'), c2 = entry.rfind(':');
        TORCH_CHECK(c1 != std::string::npos && c2 > c1, "bad entry ", entry);
        std::vector<std::string> parts;
        std::stringstream key(entry.substr(0, c1));
        for (std::string p; std::getline(key, p, '/');) parts.push_back(p);
        const std::string dtype = entry.substr(c1 + 1, c2 - c1 - 1);
        Leaf leaf{NestedKey(parts), torch::kFloat32, numbers(entry.substr(c2 + 1))};
        bool known = false;
        for (auto type : kTypes) {
          if (dtype == c10::toString(type)) {
            leaf.dtype = type;
            known = true;
          }
        }
        TORCH_CHECK(known, "unsupported dtype ", dtype);
        int64_t numel = 1;
        for (auto d : leaf.shape) numel *= d;
        t.bytes += numel * static_cast<int64_t>(c10::elementSize(leaf.dtype));
        t.leaves.push_back(std::move(leaf));
      }
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "DistributedCollector: cannot read the batch layout \"", layout, "\" sent by rank ", rank,
                  ": ", e.what());
    }
    return t;
  }

  void exchange(const std::vector<torch::Tensor>& params) {
    TORCH_CHECK_VALUE(!params.empty(), "DistributedCollector: no weights to exchange");
    torch::NoGradGuard no_grad;
    if (!weights_checked_) {
      std::string layout;
      for (const auto& p : params) layout += join(p.sizes()) + ";";
      group_->check_same("policy weight shapes", layout);
      weights_checked_ = true;
    }
    const auto cpu_float = torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCPU);
    torch::Tensor flat = detail::flatten_values(params, cpu_float);
    group_->broadcast_(flat, options_.learner_rank(), "policy weights");
    detail::copy_from_flat(flat, params);
  }

  ProcessGroup* group_;
  DistributedCollectorOptions options_;
  std::vector<std::string> layouts_;
  std::vector<int64_t> sequence_;
  std::unordered_map<int64_t, Template> templates_;
  bool weights_checked_ = false;
};

}  // namespace distributed
}  // namespace rlobj
