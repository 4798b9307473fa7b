// libFuzzer target over the restricted unpickler that reads Python's torch.save files
// (rlobj/detail/pickle.h, behind rlobj::read_state_dict): the fuzz bytes are a `data.pkl`.
// Storages are served as zero tensors of the size the pickle asks for (up to 2^16 elements;
// more is refused, as a real archive's record would be too short). Bad input must come back as
// a c10::Error; anything else (a crash, another exception type, a sanitizer report, a leak, a
// hang) is a finding. A pickle that parses is flattened into a StateDict as read_state_dict does.
//
//   scripts/sanitize.sh                        # builds it with ASan + UBSan and runs it
//   build/sanitize-debian/fuzz/rlobj_fuzz_state_dict -max_total_time=60 fuzz/corpus/state_dict
#include <rlobj/interop.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto load_storage = [](const std::string& key, c10::ScalarType dtype, int64_t numel) {
    TORCH_CHECK(numel <= (int64_t{1} << 16), "fuzz: storage \"", key, "\" of ", numel, " elements");
    return torch::zeros({numel}, torch::TensorOptions().dtype(dtype));
  };
  try {
    rlobj::detail::pickle::Unpickler unpickler(reinterpret_cast<const char*>(data), size, "fuzz", load_storage);
    const auto root = unpickler.parse();
    if (root->kind == rlobj::detail::pickle::Object::Kind::Dict) {
      rlobj::StateDict sd("state dict entry");
      rlobj::detail::flatten_state_dict(*root, "", sd, "fuzz");
      for (const auto& item : sd) {
        if (!item.value().defined()) std::abort();  // every value is a tensor
        // ... and lies inside its storage (read it all, unless zero strides make it huge)
        if (item.value().numel() <= (int64_t{1} << 20)) (void)item.value().sum();
      }
    }
  } catch (const c10::Error&) {
    // bad input, reported as it should be
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: an exception that is not a c10::Error: %s\n", e.what());
    std::abort();
  }
  return 0;
}
