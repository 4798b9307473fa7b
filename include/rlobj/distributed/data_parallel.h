#pragma once

/// \file
/// `rlobj::distributed::DataParallel`: data-parallel learners. Each rank computes gradients on
/// its own data; `average_gradients` all-reduces each parameter group as one flat buffer (one
/// collective per network) before the optimizer step, so every rank takes the same step and
/// the parameters stay identical, bit for bit.
///
/// ```
/// rlobj::distributed::DataParallel dp(pg);
/// dp.add_group("actor", loss->parameters_of("actor_network"));
/// dp.add_group("critic", loss->parameters_of("qvalue_network"));
/// dp.broadcast_parameters();            // rank 0's initial weights everywhere
/// ...
/// loss_value.backward();
/// dp.average_gradients("critic");       // before optim_critic.step()
/// optim_critic.step();
/// ```

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/distributed/process_group.h"

namespace rlobj {
namespace distributed {

/// Named groups of parameters kept identical across the ranks of a `ProcessGroup`.
class DataParallel {
 public:
  /// Keeps a reference to `group`, which must outlive it; register parameters with `add_group`.
  explicit DataParallel(ProcessGroup& group) : group_(&group) {}

  /// Registers `params` (float32, on the CPU with Gloo or on one CUDA device with NCCL; the same
  /// shapes and order on every rank, checked when first broadcast or averaged) under `name`.
  void add_group(const std::string& name, std::vector<torch::Tensor> params) {
    TORCH_CHECK_VALUE(!name.empty(), "DataParallel::add_group: the name is empty");
    for (const auto& g : groups_) {
      TORCH_CHECK_VALUE(g.name != name, "DataParallel::add_group: a group named '", name, "' exists already");
    }
    TORCH_CHECK_VALUE(!params.empty(), "DataParallel::add_group('", name, "'): no parameters");
    std::string layout;
    for (size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      const bool cuda = group_->backend_type() == BackendType::Nccl;
      TORCH_CHECK_VALUE(p.defined() && p.scalar_type() == torch::kFloat32 &&
                            (cuda ? p.device() == params[0].device() && p.device().is_cuda() : p.device().is_cpu()),
                        "DataParallel::add_group('", name, "'): parameter ", i, " must be a defined float32 ",
                        cuda ? "CUDA tensor on the group's device (NCCL)" : "CPU tensor (Gloo)",
                        p.defined() ? std::string(", got ") + c10::toString(p.scalar_type()) + " on " + p.device().str()
                                    : std::string());
      layout += std::to_string(p.numel()) + ",";
    }
    groups_.push_back(Group{name, std::move(params), layout, false});
  }

  /// Copies `root`'s parameters of every group to every rank (one broadcast per group).
  void broadcast_parameters(int64_t root = 0) {
    if (group_->world_size() == 1) return;
    torch::NoGradGuard no_grad;
    for (auto& g : groups_) {
      check_layout(g);
      torch::Tensor flat = detail::flatten_values(g.params, g.params[0].options());
      group_->broadcast_(flat, root, g.name + " parameters");
      detail::copy_from_flat(flat, g.params);
    }
  }

  /// Replaces the gradients of group `name` by their mean over the ranks: one all-reduce of a
  /// flat buffer. A gradient that is undefined on every rank stays undefined (as the optimizer
  /// then skips it); one undefined on some ranks only is an error.
  void average_gradients(const std::string& name) { average({&find(name)}); }

  /// `average_gradients` for every group at once: one all-reduce for all of them (a loss whose
  /// networks share one backward, as DDPG's and SAC's, pays the collective's latency once).
  void average_gradients() {
    std::vector<Group*> all;
    for (auto& g : groups_) all.push_back(&g);
    average(all);
  }

  /// True when every rank holds bit-identical parameters in every group (an all-gather of each
  /// flat buffer); for tests and debugging, as it moves world_size copies of the parameters.
  bool parameters_identical() {
    torch::NoGradGuard no_grad;
    bool same = true;
    for (auto& g : groups_) {
      torch::Tensor flat = detail::flatten_values(g.params, g.params[0].options());
      for (const auto& other : group_->all_gather(flat, g.name + " parameters")) same = same && torch::equal(other, flat);
    }
    return same;
  }

  /// The process group it communicates over.
  ProcessGroup& process_group() { return *group_; }

 private:
  struct Group {
    std::string name;
    std::vector<torch::Tensor> params;
    std::string layout;
    bool checked;
  };

  Group& find(const std::string& name) {
    for (auto& g : groups_) {
      if (g.name == name) return g;
    }
    TORCH_CHECK_VALUE(false, "DataParallel: no parameter group named '", name, "'");
  }

  void check_layout(Group& g) {
    if (g.checked) return;
    group_->check_same("layout of parameter group '" + g.name + "'",
                       std::string(c10::toString(g.params[0].scalar_type())) + ":" + g.layout);
    g.checked = true;
  }

  void average(const std::vector<Group*>& groups) {
    if (groups.empty() || group_->world_size() == 1) return;  // the mean of one is itself
    for (Group* g : groups) check_layout(*g);
    torch::NoGradGuard no_grad;
    // Every parameter's gradient (zeros where undefined), then one flag per parameter (1:
    // defined here), in one buffer.
    std::vector<torch::Tensor> parts;
    std::vector<torch::Tensor*> params;
    std::vector<float> flags;
    std::string names;
    for (Group* g : groups) {
      for (auto& p : g->params) {
        const auto& grad = p.grad();
        parts.push_back(grad.defined() ? grad.reshape({-1}) : torch::zeros({p.numel()}, p.options()));
        flags.push_back(grad.defined() ? 1.0F : 0.0F);
        params.push_back(&p);
      }
      if (!names.empty()) names += '+';
      names += g->name;
    }
    const auto n = static_cast<int64_t>(flags.size());
    parts.push_back(torch::tensor(flags).to(parts[0].device()));
    torch::Tensor buffer = torch::cat(parts);
    group_->allreduce_sum_(buffer, names + " gradients");
    const int64_t grads = buffer.numel() - n;
    const torch::Tensor counts_cpu = buffer.narrow(0, grads, n).to(torch::kCPU).contiguous();
    const auto* counts = counts_cpu.data_ptr<float>();
    const auto world = static_cast<float>(group_->world_size());
    torch::Tensor mean = buffer.narrow(0, 0, grads).div_(world);
    int64_t offset = 0;
    for (int64_t i = 0; i < n; ++i) {
      auto& p = *params[i];
      TORCH_CHECK(counts[i] == 0 || counts[i] == world, "DataParallel: the gradient of parameter ", i, " of '", names,
                  "' is defined on ", counts[i], " of ", world, " ranks (every rank must run the same backward)");
      if (counts[i] == world) {
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        p.mutable_grad().copy_(mean.narrow(0, offset, p.numel()).view(p.sizes()));
      }
      offset += p.numel();
    }
  }

  ProcessGroup* group_;
  std::vector<Group> groups_;
};

}  // namespace distributed
}  // namespace rlobj
