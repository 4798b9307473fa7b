#pragma once

// LibTorch's default generators in the examples' checkpoints: the CPU one (network redraws,
// TD3's noise, SAC's and PPO's samples, DQN's warm-up) and, on an accelerator, the device's.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

namespace rlobj_examples {

/// Writes the default CPU generator's state as `torch_generator` and, on an accelerator, the
/// device's as `device_generator`.
inline void save_generators(torch::serialize::OutputArchive& archive, const torch::Device& device) {
  archive.write("torch_generator", at::detail::getDefaultCPUGenerator().get_state());
  if (!device.is_cpu()) archive.write("device_generator", at::globalContext().defaultGenerator(device).get_state());
}

/// Restores what `save_generators` wrote. With `cpu_required` false, a checkpoint without a CPU
/// state (older ddpg_pendulum ones: DDPG draws nothing from it) is accepted; otherwise its
/// absence is the archive's error.
inline void load_generators(torch::serialize::InputArchive& archive, const torch::Device& device,
                            bool cpu_required = true) {
  torch::Tensor state;
  bool found = true;
  if (cpu_required) {
    archive.read("torch_generator", state);
  } else {
    found = archive.try_read("torch_generator", state);
  }
  if (found) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle on the default one
    generator.set_state(state);
  }
  if (!device.is_cpu() && archive.try_read("device_generator", state)) {
    at::Generator generator = at::globalContext().defaultGenerator(device);
    generator.set_state(state);
  }
}

}  // namespace rlobj_examples
