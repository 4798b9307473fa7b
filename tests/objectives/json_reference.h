#pragma once

// Helpers for the reference files whose batches and records are stored as JSON tensors
// (`{"shape": [...], "dtype": "...", "values": [...]}`): DQN and the on-policy losses.

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <rlobj/rlobj.h>
#include <torch/torch.h>

#include "objectives/parity.h"
#include "objectives/reference.h"

namespace rlobj_test {

/// A JSON tensor record as a float64 tensor of its shape.
inline torch::Tensor json_tensor(const nlohmann::json& rec) {
  std::vector<double> v;
  for (const auto& x : rec["values"]) v.push_back(x.is_boolean() ? (x.get<bool>() ? 1.0 : 0.0) : x.get<double>());
  std::vector<int64_t> shape = rec["shape"].get<std::vector<int64_t>>();
  return torch::tensor(v, torch::kFloat64).view(shape);
}

/// A JSON tensor record in its own dtype: int64, bool, float32 (float64 otherwise).
inline torch::Tensor json_tensor_typed(const nlohmann::json& rec) {
  const std::string dtype = rec["dtype"];
  const torch::Tensor t = json_tensor(rec);
  if (dtype == "int64") return t.to(torch::kLong);
  if (dtype == "bool") return t.to(torch::kBool);
  return dtype == "float32" ? t.to(torch::kFloat32) : t;
}

/// A JSON file, parsed (the test fails if it cannot be opened).
inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

/// "next.observation" -> {"next", "observation"}.
inline rlobj::NestedKey dotted_key(std::string key) {
  std::vector<std::string> parts;
  for (size_t dot; (dot = key.find('.')) != std::string::npos; key = key.substr(dot + 1)) parts.push_back(key.substr(0, dot));
  parts.push_back(key);
  return rlobj::NestedKey(parts);
}

/// The entries of `batch` (a reference file's "batch" object, or a scenario's "batch_extra")
/// set into `td` in their dtypes (floats converted to `dtype`), rows permuted along dim 0 by
/// `perm`.
inline void set_json_entries(rlobj::TensorDict& td, const nlohmann::json& batch, torch::Dtype dtype,
                             const torch::Tensor& perm) {
  for (const auto& item : batch.items()) {
    torch::Tensor t = json_tensor(item.value());
    const std::string type = item.value()["dtype"];
    if (type == "bool") {
      t = t.to(torch::kBool);
    } else if (type == "int64") {
      t = t.to(torch::kLong);
    } else {
      t = t.to(torch::kFloat32).to(dtype);
    }
    td.set(dotted_key(item.key()), t.index_select(0, perm));
  }
}

/// Every record of iteration `it` (`"iterations/<i>/..."`) except the diagnostics, the
/// crosschecks and the sampling notes, which describe TorchRL's internals.
inline std::map<std::string, const nlohmann::json*> iteration_records(const nlohmann::json& it, size_t i) {
  std::map<std::string, const nlohmann::json*> out;
  static const std::set<std::string> skip = {"diagnostics", "crosscheck", "checks", "sampling"};
  for (const auto& kv : it.items()) {
    if (skip.count(kv.key())) continue;
    const std::string prefix = "iterations/" + std::to_string(i) + "/" + kv.key();
    if (kv.value().is_number()) continue;  // total_loss and counters: compared by the caller
    parity::collect_records(kv.value(), prefix, out);
  }
  return out;
}

/// The scalar `total_loss` of every iteration, as a record map entry.
inline nlohmann::json scalar_record(double v) {
  nlohmann::json rec;
  rec["shape"] = nlohmann::json::array();
  rec["values"] = nlohmann::json::array({v});
  return rec;
}

/// Every record a scenario's iterations hold (see `iteration_records`), plus each iteration's
/// `total_loss` as a scalar record owned here.
struct ScenarioRecords {
  std::map<std::string, const nlohmann::json*> records;
  std::vector<nlohmann::json> totals;  // owned scalar records (records points into it)
};

inline ScenarioRecords scenario_records(const nlohmann::json& sc) {
  ScenarioRecords c;
  c.totals.reserve(sc["iterations"].size());
  for (size_t i = 0; i < sc["iterations"].size(); ++i) {
    for (const auto& [k, v] : iteration_records(sc["iterations"][i], i)) c.records[k] = v;
    c.totals.push_back(scalar_record(sc["iterations"][i]["total_loss"].get<double>()));
  }
  for (size_t i = 0; i < c.totals.size(); ++i) c.records["iterations/" + std::to_string(i) + "/total_loss"] = &c.totals[i];
  return c;
}

}  // namespace rlobj_test
