#pragma once

/// \file
/// `rlobj::deploy::export_c`: a policy as plain C99 — a header and a source file with the
/// weights as `static const` arrays and one `forward` function that allocates nothing and calls
/// nothing but `tanhf`, `expf` and (for layer norms) `sqrtf`. For microcontrollers and any
/// program without C++, Python or a runtime. Optionally int8 weights (one float step per output
/// row), with the error they add bounded by `PolicyProgram::error_bound` (`ErrorModel().int8(true)`).
///
/// ```
/// auto program = rlobj::deploy::lower_policy(actor, torch::zeros({1, 3}));
/// auto info = rlobj::deploy::export_c(program, "out/pendulum_policy",
///                                     rlobj::deploy::CExportOptions().prefix("pendulum"));
/// // out/pendulum_policy.h: void pendulum_forward(const float observation[3], float action[1]);
/// ```

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <rlobj/deploy/program.h>
#include <rlobj/serialize.h>
#include <rlobj/version.h>

namespace rlobj {
namespace deploy {

/// Options of `export_c`.
struct CExportOptions {
  /// The prefix of every C name (`<prefix>_forward`, `<PREFIX>_OBSERVATION_SIZE`); a C identifier.
  TORCH_ARG(std::string, prefix) = "policy";
  /// Store the Linear weights as int8 with one float step per output row (a quarter of the
  /// memory; the error it adds is bounded by `error_bound` with `ErrorModel().int8(true)`).
  TORCH_ARG(bool, int8) = false;
};

/// What `export_c` wrote.
struct CExportInfo {
  /// `<stem>.h`.
  std::string header_path;
  /// `<stem>.c`.
  std::string source_path;
  /// Bytes of the constant arrays (weights, biases, steps, constants): read-only memory.
  int64_t constant_bytes = 0;
  /// Bytes of the `forward` function's local arrays (its intermediate values): stack.
  int64_t stack_bytes = 0;
};

namespace detail {

/// `x` as a C float literal that reads back exactly (9 significant digits).
inline std::string c_float(float x) {
  TORCH_CHECK_VALUE(std::isfinite(x), "export_c: a non-finite constant");
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(x));
  std::string s(buf);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s + "f";
}

/// `static const <type> name[n] = {...};`, eight numbers a line.
inline std::string c_array(const std::string& type, const std::string& name, const torch::Tensor& t) {
  const torch::Tensor flat = t.contiguous().reshape({-1});
  std::ostringstream out;
  out << "static const " << type << " " << name << "[" << flat.numel() << "] = {";
  for (int64_t i = 0; i < flat.numel(); ++i) {
    out << (i % 8 == 0 ? "\n    " : " ");
    if (flat.scalar_type() == torch::kInt8) {
      out << static_cast<int>(flat[i].item<int8_t>());
    } else {
      out << c_float(flat[i].item<float>());
    }
    out << (i + 1 < flat.numel() ? "," : "");
  }
  out << "\n};\n";
  return out.str();
}

/// `s` safe inside a C comment (no `*/`, no line breaks).
inline std::string c_comment(std::string s) {
  for (size_t at = s.find("*/"); at != std::string::npos; at = s.find("*/", at)) s.replace(at, 2, "* /");
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

inline bool c_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

inline std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace detail

/// Writes `<stem>.h` and `<stem>.c` (each atomically) for `program` (a float32 program: lower the
/// policy with a float32 example observation). The header declares
///
///     void <prefix>_forward(const float observation[N], float action[M]);
///     void <prefix>_forward_batch(const float* observations, float* actions, long n);
///
/// (an index action is one `int64_t`, a one-hot action `int64_t[M]`), with `<PREFIX>_OBSERVATION_SIZE`
/// and `<PREFIX>_ACTION_SIZE`. The source compiles with `-std=c99 -Wall -Wextra -Werror -pedantic`
/// and links with `-lm`. Throws a `c10::Error` for a program it cannot write (a GELU: C99's libm
/// subset used here has no `erf`).
inline CExportInfo export_c(const PolicyProgram& program, const std::string& stem, const CExportOptions& options = {}) {
  const std::string& px = options.prefix();
  TORCH_CHECK_VALUE(detail::c_identifier(px), "export_c: prefix \"", px, "\" is not a C identifier");
  TORCH_CHECK_VALUE(program.dtype == torch::kFloat32, "export_c: the program is ",
                    rlobj::detail::dtype_str(program.dtype), "; the C export is float32 (lower the policy with a "
                    "float32 example observation)");
  TORCH_CHECK_VALUE(!stem.empty(), "export_c: the output stem is empty");
  const std::string PX = detail::upper(px);
  const Value& act = program.action();
  const std::string act_type = act.integer ? "int64_t" : "float";
  const int64_t act_size = act.scalar ? 1 : act.size;

  CExportInfo info;
  info.header_path = stem + ".h";
  info.source_path = stem + ".c";
  std::string header_name = info.header_path;
  if (const auto slash = header_name.find_last_of('/'); slash != std::string::npos) header_name = header_name.substr(slash + 1);

  std::ostringstream consts, body;
  auto val = [&](int v) { return v == 0 ? std::string("observation") : "v" + std::to_string(v); };
  // Local arrays for every value but the observation.
  for (size_t v = 1; v < program.values.size(); ++v) {
    const Value& value = program.values[v];
    if (static_cast<int>(v) == program.output) continue;
    body << "  " << (value.integer ? "int64_t " : "float ") << val(static_cast<int>(v)) << "[" << value.size << "];\n";
    info.stack_bytes += value.size * (value.integer ? 8 : 4);
  }
  body << "  long i, o;\n";
  auto constant = [&](const torch::Tensor& c, const std::string& name) -> std::string {
    // A scalar inline, a vector as an array indexed by i.
    if (c.dim() == 0) return detail::c_float(c.item<float>());
    consts << detail::c_array("float", name, c);
    info.constant_bytes += c.numel() * 4;
    return name + "[i]";
  };
  int index = 0;
  for (const auto& op : program.ops) {
    const std::string x = val(op.input);
    const std::string y = op.output == program.output ? std::string("action") : val(op.output);
    const int64_t n = program.values[static_cast<size_t>(op.input)].size;
    const int64_t m = program.values[static_cast<size_t>(op.output)].size;
    const std::string tag = px + "_" + std::to_string(index++);
    body << "  /* " << op_name(op.kind) << ": " << detail::c_comment(op.origin) << " */\n";
    switch (op.kind) {
      case OpKind::Linear: {
        const bool bias = op.bias.defined();
        if (bias) {
          consts << detail::c_array("float", tag + "_b", op.bias);
          info.constant_bytes += op.bias.numel() * 4;
        }
        // Weights stored input-major ([in][out]) and summed as y[o] += w[i][o] * x[i]: each
        // output's sum runs in input order from its bias, as written, and the inner loop over
        // the outputs has no dependency, so a compiler vectorises it at -O2 without reordering
        // any sum.
        if (options.int8()) {
          auto [q, step] = detail::int8_quantize(op.weight);
          consts << detail::c_array("int8_t", tag + "_q", q.t()) << detail::c_array("float", tag + "_step", step);
          info.constant_bytes += q.numel() + step.numel() * 4;
          body << "  for (o = 0; o < " << m << "; ++o) " << y << "[o] = 0.0f;\n"
               << "  for (i = 0; i < " << n << "; ++i) {\n    const int8_t* w = " << tag << "_q + i * " << m
               << ";\n    const float xi = " << x << "[i];\n    for (o = 0; o < " << m << "; ++o) " << y
               << "[o] += (float)w[o] * xi;\n  }\n"
               << "  for (o = 0; o < " << m << "; ++o) " << y << "[o] = " << y << "[o] * " << tag << "_step[o]"
               << (bias ? " + " + tag + "_b[o]" : "") << ";\n";
        } else {
          consts << detail::c_array("float", tag + "_w", op.weight.t());
          info.constant_bytes += op.weight.numel() * 4;
          body << "  for (o = 0; o < " << m << "; ++o) " << y << "[o] = " << (bias ? tag + "_b[o]" : "0.0f") << ";\n"
               << "  for (i = 0; i < " << n << "; ++i) {\n    const float* w = " << tag << "_w + i * " << m
               << ";\n    const float xi = " << x << "[i];\n    for (o = 0; o < " << m << "; ++o) " << y
               << "[o] += w[o] * xi;\n  }\n";
        }
        break;
      }
      case OpKind::Activation: {
        std::string f;
        const std::string xi = x + "[i]";
        switch (op.activation) {
          case modules::Activation::Tanh: f = "tanhf(" + xi + ")"; break;
          case modules::Activation::ReLU: f = xi + " < 0.0f ? 0.0f : " + xi; break;  // NaN stays NaN, as ATen's
          case modules::Activation::LeakyReLU:
            f = xi + " > 0.0f ? " + xi + " : " + xi + " * " + detail::c_float(static_cast<float>(op.negative_slope));
            break;
          case modules::Activation::Sigmoid: f = "1.0f / (1.0f + expf(-" + xi + "))"; break;
          case modules::Activation::SiLU: f = xi + " / (1.0f + expf(-" + xi + "))"; break;
          case modules::Activation::ELU:
            // expm1(x) = 2 t / (1 - t) with t = tanh(x / 2): accurate near 0, where expf(x) - 1 is not.
            body << "  for (i = 0; i < " << n << "; ++i) {\n    const float t = tanhf(0.5f * " << xi << ");\n    " << y
                 << "[i] = " << xi << " > 0.0f ? " << xi << " : 2.0f * t / (1.0f - t);\n  }\n";
            break;
          case modules::Activation::GELU:
            TORCH_CHECK_VALUE(false, "export_c: ", op.origin, " is a GELU, which needs erf (not among the C export's "
                              "libm functions); use ReLU, Tanh, ELU, SiLU or export to ONNX");
          case modules::Activation::Identity: f = xi; break;
        }
        if (!f.empty()) body << "  for (i = 0; i < " << n << "; ++i) " << y << "[i] = " << f << ";\n";
        break;
      }
      case OpKind::LayerNorm: {
        consts << detail::c_array("float", tag + "_g", op.weight) << detail::c_array("float", tag + "_b", op.bias);
        info.constant_bytes += (op.weight.numel() + op.bias.numel()) * 4;
        body << "  {\n    float mean = 0.0f, var = 0.0f, r;\n    for (i = 0; i < " << n << "; ++i) mean += " << x
             << "[i];\n    mean /= " << n << ".0f;\n    for (i = 0; i < " << n << "; ++i) var += (" << x
             << "[i] - mean) * (" << x << "[i] - mean);\n    var /= " << n << ".0f;\n    r = 1.0f / sqrtf(var + "
             << detail::c_float(static_cast<float>(op.eps)) << ");\n    for (i = 0; i < " << n << "; ++i) " << y
             << "[i] = (" << x << "[i] - mean) * r * " << tag << "_g[i] + " << tag << "_b[i];\n  }\n";
        break;
      }
      case OpKind::Slice:
        body << "  for (i = 0; i < " << m << "; ++i) " << y << "[i] = " << x << "[i + " << op.begin << "];\n";
        break;
      case OpKind::Mul:
      case OpKind::Add:
      case OpKind::Sub:
      case OpKind::Div: {
        const char* sign = op.kind == OpKind::Mul ? " * " : op.kind == OpKind::Add ? " + " : op.kind == OpKind::Sub ? " - " : " / ";
        const std::string c = constant(op.weight, tag + "_c");
        body << "  for (i = 0; i < " << n << "; ++i) " << y << "[i] = " << x << "[i]" << sign << c << ";\n";
        break;
      }
      case OpKind::Clamp: {
        const std::string lo = constant(op.weight, tag + "_lo"), hi = constant(op.bias, tag + "_hi");
        body << "  for (i = 0; i < " << n << "; ++i) {\n    const float t = " << x << "[i] < " << lo << " ? " << lo
             << " : " << x << "[i];\n    " << y << "[i] = t > " << hi << " ? " << hi << " : t;\n  }\n";
        break;
      }
      case OpKind::ArgMax:
      case OpKind::OneHotMax: {
        // The first largest element, a NaN counting as the largest (ATen's argmax and max); a
        // NaN maximum gives a one-hot row of zeros, as ATen's `x == max(x)`.
        const std::string xi = x + "[i]", xo = x + "[o]";
        body << "  o = 0;\n  for (i = 1; i < " << n << "; ++i) if (" << xo << " == " << xo << " && !(" << xi
             << " <= " << xo << ")) o = i;\n";
        if (op.kind == OpKind::ArgMax) {
          body << "  " << y << "[0] = (int64_t)o;\n";
        } else {
          body << "  for (i = 0; i < " << n << "; ++i) " << y << "[i] = " << xi << " == " << xo << " ? 1 : 0;\n";
        }
        break;
      }
    }
  }

  std::ostringstream h;
  const std::string guard = detail::upper(px) + "_POLICY_H";
  h << "/* Generated by rlobj " << RLOBJ_VERSION_STRING << " (rlobj::deploy::export_c)" << (options.int8() ? ", int8 weights" : "")
    << ". Reads \"" << detail::c_comment(program.in_key) << "\", writes \"" << detail::c_comment(program.out_key)
    << "\". */\n"
    << "#ifndef " << guard << "\n#define " << guard << "\n\n#include <stdint.h>\n\n"
    << "#define " << PX << "_OBSERVATION_SIZE " << program.in_size() << "\n"
    << "#define " << PX << "_ACTION_SIZE " << act_size << "\n"
    << "/* Read-only constants: " << info.constant_bytes << " bytes; stack of one call: " << info.stack_bytes
    << " bytes. */\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
    << "/* The action" << (act.integer ? (act.scalar ? " (an index)" : " (one-hot)") : "")
    << " for one observation. The observation and the action must not overlap. */\n"
    << "void " << px << "_forward(const float observation[" << PX << "_OBSERVATION_SIZE], " << act_type << " action["
    << PX << "_ACTION_SIZE]);\n"
    << "/* n observations (row after row) to n actions, in separate buffers. */\n"
    << "void " << px << "_forward_batch(const float* observations, " << act_type << "* actions, long n);\n\n"
    << "#ifdef __cplusplus\n}\n#endif\n\n#endif\n";

  std::ostringstream c;
  c << "/* Generated by rlobj " << RLOBJ_VERSION_STRING << " (rlobj::deploy::export_c). */\n#include \"" << header_name
    << "\"\n\n#include <math.h>\n\n"
    << consts.str() << "\nvoid " << px << "_forward(const float observation[" << PX << "_OBSERVATION_SIZE], " << act_type
    << " action[" << PX << "_ACTION_SIZE]) {\n"
    << body.str() << "  (void)i;\n  (void)o;\n}\n\n"
    << "void " << px << "_forward_batch(const float* observations, " << act_type << "* actions, long n) {\n"
    << "  long k;\n  for (k = 0; k < n; ++k) " << px << "_forward(observations + k * " << PX << "_OBSERVATION_SIZE, actions + k * "
    << PX << "_ACTION_SIZE);\n}\n";

  write_file_atomic(h.str(), info.header_path);
  write_file_atomic(c.str(), info.source_path);
  return info;
}

}  // namespace deploy
}  // namespace rlobj
