// libFuzzer target over the saved state of rlobj's samplers (rlobj/data/samplers.h): the fuzz
// bytes decide the fields of a `SamplerWithoutReplacement` / `MiniBatches` archive (counters,
// order, generator state: each well formed, corrupted or left out), which is loaded, then used:
// draws from the sampler and whole epochs of minibatches over a small TensorDict, started in
// an order the bytes pick (an epoch begun inside another included). Bad input must come back as
// a c10::Error; anything else (a crash, another exception type, a sanitizer report, a hang) is a
// finding, and so is a broken invariant: an index outside the storage, a pass that draws an
// index twice, a minibatch whose rows are not rows of the data.
//
//   scripts/sanitize.sh                        # builds it with ASan + UBSan and runs it
//   build/sanitize-debian/fuzz/rlobj_fuzz_sampler -max_total_time=60 fuzz/corpus/sampler
#include <rlobj/data/samplers.h>
#include <rlobj/serialize.h>
#include <rlobj/tensordict.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <set>
#include <sstream>
#include <vector>

namespace {

/// Reads the fuzz bytes; past the end it yields zeros.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  /// A count in [-2, 13], now and then a huge one.
  int64_t count() {
    const uint8_t b = byte();
    if (b == 255) return int64_t{1} << 40;
    return static_cast<int64_t>(b % 16) - 2;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

void finding(const char* what) {
  std::fprintf(stderr, "finding: %s\n", what);
  std::abort();
}

/// An archive as `SamplerWithoutReplacement::save` writes it, its fields from the bytes.
std::string sampler_archive(Bytes& in) {
  torch::serialize::OutputArchive out;
  const uint8_t layout = in.byte();
  if (layout % 7 != 0) rlobj::write_format(out, layout % 11 == 0 ? "rlobj.ReplayBuffer" : "rlobj.SamplerWithoutReplacement");
  const int64_t storage = in.count(), position = in.count(), ran_out = in.count() % 3;
  if (layout % 5 != 0) {
    out.write("counters", layout % 13 == 0 ? torch::tensor({storage, position}, torch::kLong)
                                          : torch::tensor({storage, position, ran_out}, torch::kLong));
  }
  if (layout % 3 != 0) {
    out.write("generator", at::make_generator<at::CPUGeneratorImpl>(in.byte()).get_state());
  } else if (layout % 2 == 0) {
    out.write("generator", torch::zeros({static_cast<int64_t>(in.byte() % 8)}, torch::kUInt8));  // corrupt
  }
  // The order: a permutation of [0, storage) now and then bent (a repeat, a value outside).
  const int64_t n = std::max<int64_t>(0, std::min<int64_t>(storage, 64));
  torch::Tensor order = torch::randperm(n, at::make_generator<at::CPUGeneratorImpl>(in.byte()), torch::kLong);
  if (n > 0 && in.byte() % 4 == 0) order[in.byte() % n] = in.count();
  if (in.byte() % 9 == 0) order = order.to(torch::kInt);
  if (layout % 17 != 0) out.write("order", order);
  std::ostringstream bytes;
  out.save_to(bytes);
  return bytes.str();
}

void check_indices(const torch::Tensor& index, int64_t storage, std::set<int64_t>* seen) {
  if (index.scalar_type() != torch::kLong || index.dim() != 1) finding("a sample that is not a 1-D int64 index");
  const int64_t* p = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < index.numel(); ++i) {
    if (p[i] < 0 || p[i] >= storage) finding("an index outside the storage");
    if (seen != nullptr && !seen->insert(p[i]).second) finding("a pass that draws an index twice");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  try {
    const std::string archive = sampler_archive(in);
    // The sampler alone: load, then draws of the pass it left off and of the next ones.
    rlobj::data::SamplerWithoutReplacement sampler(rlobj::data::SamplerWithoutReplacementOptions().seed(1));
    {
      torch::serialize::InputArchive reader;
      std::istringstream stream(archive);
      reader.load_from(stream);
      sampler.load(reader);
    }
    const int64_t storage = std::max<int64_t>(1, std::min<int64_t>(in.count(), 64));
    for (int draw = 0; draw < 6; ++draw) {
      check_indices(sampler.sample(storage, std::max<int64_t>(1, in.count())), storage, nullptr);
    }
    // MiniBatches from the same archive, epochs over a small TensorDict whose rows carry ids.
    rlobj::data::MiniBatches minibatches(rlobj::data::MiniBatchesOptions(std::max<int64_t>(1, in.count() % 5))
                                             .drop_last(in.byte() % 2 == 0));
    {
      torch::serialize::InputArchive reader;
      std::istringstream stream(archive);
      reader.load_from(stream);
      minibatches.load(reader);
    }
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(in.count(), 64));
    rlobj::TensorDict td({rows});
    td.set("id", torch::arange(rows, torch::kLong));
    auto first = minibatches.epoch(td);
    auto it = first.begin();
    std::set<int64_t> ids;
    for (int step = 0; step < 8 && it != first.end(); ++step) {
      check_indices(it->get("id"), rows, &ids);
      if (in.byte() % 5 == 0) {
        // Another epoch, whole, in the middle of this one: the next step of this one must throw.
        std::set<int64_t> other;
        for (const rlobj::TensorDict& mb : minibatches.epoch(td)) check_indices(mb.get("id"), rows, &other);
      }
      ++it;
    }
  } catch (const c10::Error&) {
    // bad input, reported as it should be
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: an exception that is not a c10::Error: %s\n", e.what());
    std::abort();
  }
  return 0;
}
