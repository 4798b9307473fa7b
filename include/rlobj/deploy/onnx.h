#pragma once

/// \file
/// `rlobj::deploy::export_onnx`: a policy as an ONNX model, written from C++ with the ONNX
/// library's own protobuf definitions (`onnx/onnx_pb.h`; link `rlobj::onnx`), no Python. For
/// ONNX Runtime, TensorRT, OpenVINO and every runtime that reads ONNX.
///
/// ```
/// auto program = rlobj::deploy::lower_policy(actor, torch::zeros({1, 3}));
/// rlobj::deploy::export_onnx(program, "policy.onnx");
/// ```
///
/// The model takes `observation` `[batch, N]` (the batch dimension is dynamic) and returns
/// `action` `[batch, M]` (float, or int64 for an index `[batch]` or one-hot action), with
/// `Gemm`, the activations' own operators, `LayerNormalization`, `Slice`, element-wise
/// arithmetic, `Max`/`Min`, `ArgMax` and `ReduceMax`/`Equal`/`Cast`. Metadata: rlobj's version,
/// the keys, the sizes and the action's kind, and whatever the options add.

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <c10/util/Exception.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <rlobj/deploy/program.h>
#include <rlobj/serialize.h>
#include <rlobj/version.h>

namespace rlobj {
namespace deploy {

/// Options of `export_onnx`.
struct OnnxExportOptions {
  /// Key-value pairs.
  using Metadata = std::map<std::string, std::string>;
  /// The opset of the default domain, 13 to 21 (LayerNormalization needs 17).
  TORCH_ARG(int64_t, opset) = 17;
  /// Extra `metadata_props` (e.g. the observation and action specs); keys starting with
  /// `rlobj.` are rlobj's own and may not be given.
  TORCH_ARG(Metadata, metadata) = {};
  /// The graph's name.
  TORCH_ARG(std::string, graph_name) = "rlobj_policy";
};

namespace detail {

/// The IR version ONNX pairs with `opset` (onnx/helper.py's VERSION_TABLE).
inline int64_t onnx_ir_version(int64_t opset) {
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

/// Builds the graph of a `PolicyProgram`.
class OnnxWriter {
 public:
  OnnxWriter(onnx::GraphProto& graph, int64_t opset, int32_t float_type) : g_(graph), opset_(opset), ft_(float_type) {}

  std::string initializer(const torch::Tensor& t, const std::string& name) {
    auto* init = g_.add_initializer();
    init->set_name(name);
    for (auto d : t.sizes()) init->add_dims(d);
    const torch::Tensor c = t.contiguous();
    if (c.scalar_type() == torch::kLong) {
      init->set_data_type(onnx::TensorProto::INT64);
      init->set_raw_data(std::string(static_cast<const char*>(c.data_ptr()), c.numel() * 8));
    } else {
      const torch::Tensor f = c.to(ft_ == onnx::TensorProto::DOUBLE ? torch::kFloat64 : torch::kFloat32).contiguous();
      init->set_data_type(ft_);
      init->set_raw_data(std::string(static_cast<const char*>(f.data_ptr()), f.numel() * f.element_size()));
    }
    return name;
  }
  std::string ints(const std::vector<int64_t>& v, const std::string& name) {
    return initializer(torch::tensor(v, torch::kLong), name);
  }

  onnx::NodeProto* node(const std::string& type, std::vector<std::string> inputs, const std::string& output,
                        const std::string& doc) {
    auto* n = g_.add_node();
    n->set_op_type(type);
    n->set_name(output + "/" + type);
    for (auto& i : inputs) n->add_input(i);
    n->add_output(output);
    if (!doc.empty()) n->set_doc_string(doc);
    return n;
  }
  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }

  /// One program operation; `x` and `y` are value names, `tag` a unique prefix for helpers.
  void op(const Op& op, const std::string& x, const std::string& y, const std::string& tag) {
    switch (op.kind) {
      case OpKind::Linear: {
        std::vector<std::string> in{x, initializer(op.weight, tag + ".weight")};
        if (op.bias.defined()) in.push_back(initializer(op.bias, tag + ".bias"));
        attr(node("Gemm", in, y, op.origin), "transB", int64_t{1});
        break;
      }
      case OpKind::Activation: activation(op, x, y, tag); break;
      case OpKind::LayerNorm: {
        TORCH_CHECK_VALUE(opset_ >= 17, "export_onnx: ", op.origin, " needs LayerNormalization, opset >= 17 (got ",
                          opset_, ")");
        auto* n = node("LayerNormalization", {x, initializer(op.weight, tag + ".scale"), initializer(op.bias, tag + ".bias")},
                       y, op.origin);
        attr(n, "axis", int64_t{-1});
        attr(n, "epsilon", static_cast<float>(op.eps));
        break;
      }
      case OpKind::Slice:
        node("Slice", {x, ints({op.begin}, tag + ".starts"), ints({op.end}, tag + ".ends"), ints({1}, tag + ".axes")}, y,
             op.origin);
        break;
      case OpKind::Mul: node("Mul", {x, initializer(op.weight, tag + ".c")}, y, op.origin); break;
      case OpKind::Add: node("Add", {x, initializer(op.weight, tag + ".c")}, y, op.origin); break;
      case OpKind::Sub: node("Sub", {x, initializer(op.weight, tag + ".c")}, y, op.origin); break;
      case OpKind::Div: node("Div", {x, initializer(op.weight, tag + ".c")}, y, op.origin); break;
      case OpKind::Clamp:
        node("Max", {x, initializer(op.weight, tag + ".low")}, tag + ".max", op.origin);
        node("Min", {tag + ".max", initializer(op.bias, tag + ".high")}, y, op.origin);
        break;
      case OpKind::ArgMax: {
        auto* n = node("ArgMax", {x}, y, op.origin);
        attr(n, "axis", int64_t{1});
        attr(n, "keepdims", int64_t{0});
        break;
      }
      case OpKind::OneHotMax: {
        onnx::NodeProto* n = nullptr;
        if (opset_ >= 18) {
          n = node("ReduceMax", {x, ints({1}, tag + ".axes")}, tag + ".max", op.origin);
        } else {
          n = node("ReduceMax", {x}, tag + ".max", op.origin);
          attr(n, "axes", std::vector<int64_t>{1});
        }
        attr(n, "keepdims", int64_t{1});
        node("Equal", {x, tag + ".max"}, tag + ".eq", op.origin);
        attr(node("Cast", {tag + ".eq"}, y, op.origin), "to", int64_t{onnx::TensorProto::INT64});
        break;
      }
    }
  }

 private:
  void activation(const Op& op, const std::string& x, const std::string& y, const std::string& tag) {
    using modules::Activation;
    switch (op.activation) {
      case Activation::Tanh: node("Tanh", {x}, y, op.origin); break;
      case Activation::ReLU: node("Relu", {x}, y, op.origin); break;
      case Activation::Sigmoid: node("Sigmoid", {x}, y, op.origin); break;
      case Activation::ELU: attr(node("Elu", {x}, y, op.origin), "alpha", 1.0f); break;
      case Activation::LeakyReLU:
        attr(node("LeakyRelu", {x}, y, op.origin), "alpha", static_cast<float>(op.negative_slope));
        break;
      case Activation::SiLU:
        node("Sigmoid", {x}, tag + ".sigmoid", op.origin);
        node("Mul", {x, tag + ".sigmoid"}, y, op.origin);
        break;
      case Activation::GELU:
        if (opset_ >= 20) {
          node("Gelu", {x}, y, op.origin);
        } else {  // x * 0.5 * (1 + erf(x / sqrt(2))), as ATen's exact GELU
          const auto f64 = torch::kFloat64;  // rounded once, to the model's float type
          node("Mul", {x, initializer(torch::full({}, M_SQRT1_2, f64), tag + ".rsqrt2")}, tag + ".z", op.origin);
          node("Erf", {tag + ".z"}, tag + ".erf", op.origin);
          node("Add", {tag + ".erf", initializer(torch::full({}, 1.0, f64), tag + ".one")}, tag + ".cdf2", op.origin);
          node("Mul", {x, initializer(torch::full({}, 0.5, f64), tag + ".half")}, tag + ".xhalf", op.origin);
          node("Mul", {tag + ".xhalf", tag + ".cdf2"}, y, op.origin);
        }
        break;
      case Activation::Identity: node("Identity", {x}, y, op.origin); break;
    }
  }

  onnx::GraphProto& g_;
  int64_t opset_;
  int32_t ft_;
};

inline void onnx_value_info(onnx::ValueInfoProto* v, const std::string& name, int32_t elem_type, int64_t features) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(elem_type);
  auto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  if (features >= 0) shape->add_dim()->set_dim_value(features);
}

}  // namespace detail

/// The ONNX model of `program` (see the file's comment); `export_onnx` writes it.
inline onnx::ModelProto onnx_model(const PolicyProgram& program, const OnnxExportOptions& options = {}) {
  TORCH_CHECK_VALUE(options.opset() >= 13 && options.opset() <= 21, "export_onnx: opset must be 13 to 21, got ",
                    options.opset());
  TORCH_CHECK_VALUE(program.dtype == torch::kFloat32 || program.dtype == torch::kFloat64, "export_onnx: the program is ",
                    rlobj::detail::dtype_str(program.dtype), "; ONNX export takes float32 or float64");
  for (const auto& item : options.metadata()) {
    TORCH_CHECK_VALUE(item.first.rfind("rlobj.", 0) != 0, "export_onnx: metadata key \"", item.first,
                      "\" is reserved (keys starting with \"rlobj.\" are rlobj's own)");
  }
  const int32_t ft = program.dtype == torch::kFloat64 ? onnx::TensorProto::DOUBLE : onnx::TensorProto::FLOAT;
  onnx::ModelProto model;
  model.set_ir_version(detail::onnx_ir_version(options.opset()));
  model.set_producer_name("rlobj");
  model.set_producer_version(RLOBJ_VERSION_STRING);
  model.set_doc_string("A deterministic policy exported by rlobj::deploy::export_onnx");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset());
  onnx::GraphProto& g = *model.mutable_graph();
  g.set_name(options.graph_name());
  const Value& act = program.action();
  detail::onnx_value_info(g.add_input(), program.in_key, ft, program.in_size());
  detail::onnx_value_info(g.add_output(), program.out_key, act.integer ? int32_t{onnx::TensorProto::INT64} : ft,
                          act.scalar ? -1 : act.size);
  TORCH_CHECK_VALUE(program.in_key != program.out_key, "export_onnx: the observation and the action share the name \"",
                    program.in_key, "\"");
  detail::OnnxWriter w(g, options.opset(), ft);
  auto name = [&](int v) { return v == 0 ? program.in_key : v == program.output ? program.out_key : "v" + std::to_string(v); };
  int index = 0;
  for (const auto& op : program.ops) w.op(op, name(op.input), name(op.output), "op" + std::to_string(index++));
  auto meta = [&](const std::string& k, const std::string& v) {
    auto* p = model.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  };
  meta("rlobj.version", RLOBJ_VERSION_STRING);
  meta("rlobj.in_key", program.in_key);
  meta("rlobj.out_key", program.out_key);
  meta("rlobj.observation_size", std::to_string(program.in_size()));
  meta("rlobj.action_size", std::to_string(act.scalar ? 1 : act.size));
  meta("rlobj.action_kind", act.integer ? (act.scalar ? "index" : "one_hot") : "continuous");
  meta("rlobj.dtype", rlobj::detail::dtype_str(program.dtype));
  for (const auto& item : options.metadata()) meta(item.first, item.second);
  return model;
}

/// Writes `program` as an ONNX model to `path` (atomically).
inline void export_onnx(const PolicyProgram& program, const std::string& path, const OnnxExportOptions& options = {}) {
  const onnx::ModelProto model = onnx_model(program, options);
  std::string bytes;
  TORCH_CHECK(model.SerializeToString(&bytes), "export_onnx: protobuf could not serialise the model");
  write_file_atomic(bytes, path);
}

/// Runs the ONNX library's checker on the model at `path` (operators, types, shapes, opset);
/// throws a `c10::Error` with its message if the model is invalid.
inline void check_onnx(const std::string& path) {
  try {
    onnx::checker::check_model(path);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "check_onnx: \"", path, "\" is not a valid ONNX model: ", e.what());
  }
}

/// `lower_policy` then `export_onnx`: the signature TorchScript users know from `export_policy`.
template <typename Actor>
PolicyProgram export_onnx(const Actor& actor, const torch::Tensor& example_observation, const std::string& path,
                          const OnnxExportOptions& options = {}, const LowerOptions& lower = {}) {
  PolicyProgram program = lower_policy(actor, example_observation, lower);
  export_onnx(program, path, options);
  return program;
}

}  // namespace deploy
}  // namespace rlobj
