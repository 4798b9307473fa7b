// libFuzzer target over rlobj::TensorDict: the fuzz bytes are a little program of operations
// (construct, set, nest, get, erase, index, index_put_, stack, cat, flatten, reshape, clone,
// repr, ...) on a pool of TensorDicts and tensors. Bad input must come back as a c10::Error;
// anything else (a crash, another exception type, a sanitizer report, a hang, a broken
// invariant) is a finding.
//
//   scripts/sanitize.sh                        # builds it with ASan + UBSan and runs it
//   build/sanitize-debian/fuzz/rlobj_fuzz_tensordict -max_total_time=60 fuzz/corpus/tensordict
//
// After every operation each TensorDict in the pool is checked: every leaf's shape starts with
// the batch size of the TensorDict holding it, the batch size's product is numel(), keys are
// unique, and flatten_keys / unflatten_keys keep the leaves' count.
#include <rlobj/tensordict.h>

#include <ATen/Parallel.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

namespace {

using rlobj::NestedKey;
using rlobj::TensorDict;

/// Reads the fuzz bytes; past the end it yields zeros, so every program is complete.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  /// A value in [0, n).
  size_t pick(size_t n) { return n == 0 ? 0 : byte() % n; }
  /// A small signed int in [-4, 5], now and then an extreme one.
  int64_t small_int() {
    const uint8_t b = byte();
    if (b == 0xff) return INT64_MAX;
    if (b == 0xfe) return INT64_MIN;
    if (b == 0xfd) return int64_t{1} << 40;
    return static_cast<int64_t>(b % 10) - 4;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "rlobj fuzz finding: %s\n", what);
  std::abort();
}

/// Keys from a small alphabet, so that the same key recurs, including the awkward ones: a
/// part holding the flatten separator, an empty part (rejected by NestedKey).
NestedKey make_key(Bytes& in) {
  static const char* const parts[] = {"a", "b", "c", "a.b", "x/y", ""};
  const size_t depth = 1 + in.pick(3);
  std::vector<std::string> key;
  for (size_t i = 0; i < depth; ++i) key.emplace_back(parts[in.pick(6)]);
  return NestedKey(std::move(key));
}

TensorDict::BatchSize make_batch(Bytes& in) {
  TensorDict::BatchSize batch(in.pick(4));
  for (auto& d : batch) d = in.small_int();
  return batch;
}

/// A tensor whose shape is `td`'s batch size plus up to two dims (when that is small), or
/// any small shape (which is usually a shape error).
torch::Tensor make_tensor(Bytes& in, const TensorDict& td) {
  std::vector<int64_t> shape;
  const bool fits = in.pick(4) != 0;
  if (fits) {
    int64_t n = 1;
    for (auto d : td.batch_size()) {
      if (d < 0 || d > 8 || (n *= std::max<int64_t>(d, 1)) > 4096) return torch::zeros({1});
    }
    shape = td.batch_size();
  }
  const size_t extra = in.pick(3);
  for (size_t i = 0; i < extra; ++i) shape.push_back(static_cast<int64_t>(in.pick(4)));
  static const torch::Dtype dtypes[] = {torch::kFloat32, torch::kFloat64, torch::kInt64,
                                        torch::kBool};
  return torch::ones(shape, torch::TensorOptions().dtype(dtypes[in.pick(4)]));
}

/// An index into the leading batch dims: an int, a slice, None, Ellipsis, a bool or long tensor.
std::vector<at::indexing::TensorIndex> make_index(Bytes& in, const TensorDict& td) {
  using namespace torch::indexing;  // NOLINT(build/namespaces)
  std::vector<at::indexing::TensorIndex> index;
  const size_t count = 1 + in.pick(2);
  for (size_t i = 0; i < count; ++i) {
    switch (in.pick(6)) {
      case 0: index.emplace_back(in.small_int()); break;
      case 1: index.emplace_back(Slice(in.small_int(), in.small_int(), 1 + in.pick(2))); break;
      case 2: index.emplace_back(None); break;
      case 3: index.emplace_back(Ellipsis); break;
      case 4: {
        const int64_t n = td.batch_dims() > 0 ? td.batch_size()[0] : 1;
        const int64_t len = (n >= 0 && n <= 8 && in.pick(2)) ? n : static_cast<int64_t>(in.pick(4));
        std::vector<uint8_t> mask(static_cast<size_t>(len));
        for (auto& m : mask) m = in.pick(2);
        index.emplace_back(torch::tensor(std::vector<int64_t>(mask.begin(), mask.end())).to(torch::kBool));
        break;
      }
      default: {
        const size_t len = in.pick(4);
        std::vector<int64_t> rows(len);
        for (auto& r : rows) r = in.small_int();
        index.emplace_back(torch::tensor(rows, torch::kLong));
      }
    }
  }
  return index;
}

/// The invariants every TensorDict keeps, whatever was done to it.
void check_invariants(const TensorDict& td) {
  // The product, where a 0 anywhere makes it 0 (huge dims beside a 0 are legal).
  int64_t n = 1;
  bool zero = false, overflow = false;
  for (auto d : td.batch_size()) {
    if (d < 0) finding("negative batch dim");
    zero = zero || d == 0;
    overflow = overflow || __builtin_mul_overflow(n, d, &n);
  }
  if (zero) n = 0;
  if (overflow && !zero) finding("a batch size whose product overflows int64");
  if (n != td.numel()) finding("numel() is not the product of the batch size");
  std::set<std::string> seen;
  for (const auto& item : td.items(/*include_nested=*/false)) {
    if (!seen.insert(item.first.str("\x1f")).second) finding("duplicate key");
    const auto& batch = td.batch_size();
    if (item.second.is_tensordict()) {
      const auto& inner = item.second.tensordict().batch_size();
      if (inner.size() < batch.size() || !std::equal(batch.begin(), batch.end(), inner.begin())) {
        finding("nested TensorDict's batch size does not start with its parent's");
      }
      check_invariants(item.second.tensordict());
    } else {
      const auto shape = item.second.tensor().sizes();
      if (shape.size() < batch.size() || !std::equal(batch.begin(), batch.end(), shape.begin())) {
        finding("leaf shape does not start with the batch size");
      }
    }
  }
}

size_t leaves(const TensorDict& td) { return td.keys(/*include_nested=*/true, /*leaves_only=*/true).size(); }

void run(Bytes& in) {
  std::vector<TensorDict> pool{TensorDict(), TensorDict({2}), TensorDict({2, 3})};
  auto pick_td = [&]() -> TensorDict& { return pool[in.pick(pool.size())]; };
  constexpr size_t kMaxPool = 6;
  auto add = [&](TensorDict td) {
    if (pool.size() < kMaxPool) {
      pool.push_back(std::move(td));
    } else {
      pool[in.pick(pool.size())] = std::move(td);
    }
  };

  static const bool trace = std::getenv("RLOBJ_FUZZ_TRACE") != nullptr;
  for (int step = 0; step < 48 && !in.done(); ++step) {
    const size_t op = in.pick(20);
    if (trace) std::fprintf(stderr, "op %zu\n", op);
    try {
      switch (op) {
        case 0: add(TensorDict(make_batch(in))); break;
        case 1: {
          auto& td = pick_td();
          auto key = make_key(in);
          td.set(key, make_tensor(in, td));
          break;
        }
        case 2: {  // nesting, cycles included
          auto& td = pick_td();
          auto key = make_key(in);
          td.set(key, pick_td());
          break;
        }
        case 3: {
          const auto& td = pick_td();
          auto key = make_key(in);
          if (td.find(key) && !td.contains(key)) finding("find() without contains()");
          if (td.find(key) && !td.get(key).is_same(*td.find(key))) finding("get != find");
          break;
        }
        case 4: pick_td().erase(make_key(in)); break;
        case 5: pick_td().pop(make_key(in)); break;
        case 6: add(pick_td().clone()); break;
        case 7: add(pick_td().copy()); break;
        case 8: add(pick_td().to(in.pick(2) ? torch::kFloat64 : torch::kFloat32)); break;
        case 9: {
          const auto& td = pick_td();
          std::vector<NestedKey> keys;
          const size_t count = in.pick(3);
          for (size_t i = 0; i < count; ++i) keys.push_back(make_key(in));
          add(in.pick(2) ? td.select(keys, in.pick(2) != 0) : td.exclude(keys));
          break;
        }
        case 10: pick_td().update(pick_td()); break;
        case 11: {
          const auto& td = pick_td();
          const std::string sep = in.pick(2) ? "." : "/";
          auto flat = td.flatten_keys(sep);
          if (leaves(flat) != leaves(td)) finding("flatten_keys changed the number of leaves");
          add(in.pick(2) ? flat : flat.unflatten_keys(sep));
          break;
        }
        case 12: {
          const auto& td = pick_td();
          add(td.index(make_index(in, td)));
          break;
        }
        case 13: {
          auto& dst = pick_td();
          const auto& src = pick_td();
          const auto before = dst.clone();
          try {
            dst.index_put_(make_index(in, dst), src);
          } catch (const c10::Error&) {
            // A failed index_put_ changes nothing: every leaf as it was.
            for (const auto& key : before.keys(true, true)) {
              const auto* now = dst.find(key);
              if (!now || !torch::equal(*now, before.get(key))) finding("failed index_put_ wrote");
            }
            throw;
          }
          break;
        }
        case 14: {
          auto& td = pick_td();
          switch (in.pick(4)) {
            case 0: add(td.unsqueeze(in.small_int())); break;
            case 1: add(td.squeeze(in.small_int())); break;
            case 2: add(td.reshape(make_batch(in))); break;
            default: add(td.view(make_batch(in)));
          }
          break;
        }
        case 15: {
          auto parts = pick_td().unbind(in.small_int());
          if (!parts.empty()) add(parts[in.pick(parts.size())]);
          break;
        }
        case 16: {
          std::vector<TensorDict> tds;
          const size_t count = in.pick(4);
          for (size_t i = 0; i < count; ++i) tds.push_back(pick_td());
          add(in.pick(2) ? TensorDict::stack(tds, in.small_int()) : TensorDict::cat(tds, in.small_int()));
          break;
        }
        case 17: {
          const auto text = pick_td().repr();
          if (text.empty()) finding("empty repr");
          break;
        }
        case 18: pick_td().zero_(); break;
        default: {
          std::vector<TensorDict::Item> source;
          const size_t count = in.pick(3);
          const TensorDict shape(make_batch(in));
          for (size_t i = 0; i < count; ++i) source.emplace_back(make_key(in), make_tensor(in, shape));
          add(TensorDict(std::move(source), shape.batch_size()));
        }
      }
    } catch (const c10::Error&) {
      // the expected answer to bad input
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rlobj fuzz finding: %s instead of c10::Error: %s\n", typeid(e).name(),
                   e.what());
      std::abort();
    }
    for (const auto& td : pool) check_invariants(td);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  run(in);
  return 0;
}
