#pragma once

/// \file
/// Moving policies between Python and C++:
///
/// * `read_state_dict` / `load_state_dict` read what Python's
///   `torch.save(module.state_dict(), path)` writes (a `collections.OrderedDict`, or a plain
///   `dict` from `torch.save(dict(...))`) into any LibTorch module by parameter and buffer name
///   (`"module.0.weight"`, TorchRL's names; rlobj's modules use the same). Strict by default:
///   missing or unexpected keys and shape or dtype mismatches are one error listing them all,
///   and the module is left untouched.
/// * `save_state_dict` writes a module's parameters and buffers as a file that Python's
///   `torch.load(path)` returns as a `dict` of name -> tensor, ready for
///   `module.load_state_dict(torch.load(path))` on the matching TorchRL module.
/// * `export_policy` traces an actor (observation tensor(s) -> action, deterministic) into a
///   TorchScript file that `torch::jit::load` (C++) and `torch.jit.load` (Python) run, with the
///   actor's parameters under the same names.
///
/// Reading never executes anything from the file: like Python's `torch.load(weights_only=True)`,
/// only tensors, numbers, strings and containers are accepted (rlobj/detail/pickle.h). Every
/// record of the file is checked against its zip CRC-32 first, so a damaged file is an error
/// naming the record, never a silently different model. Writes are atomic (`write_file_atomic`).

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <caffe2/serialize/in_memory_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/ordered_dict.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/detail/format.h"
#include "rlobj/detail/pickle.h"
#include "rlobj/modules/actor.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/tensordict_module.h"
#include "rlobj/serialize.h"
#include "rlobj/tensordict.h"

namespace rlobj {

/// Name -> tensor, in order: a module's parameters and buffers as PyTorch's `state_dict()`
/// lists them (each module's parameters, then its buffers, then its children's, depth first).
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

/// `module`'s parameters and buffers by their dotted names, in PyTorch's `state_dict()` order.
/// The tensors are the module's own (not copies): detach and clone them to keep a snapshot.
inline StateDict state_dict(const torch::nn::Module& module) {
  StateDict out("state dict entry");
  // Depth first, as torch.nn.Module._save_to_state_dict: own parameters, own buffers, children.
  std::vector<std::pair<std::string, const torch::nn::Module*>> todo{{"", &module}};
  while (!todo.empty()) {
    auto [prefix, m] = todo.back();
    todo.pop_back();
    for (const auto& p : m->named_parameters(/*recurse=*/false)) {
      if (p.value().defined()) out.insert(prefix + p.key(), p.value());
    }
    for (const auto& b : m->named_buffers(/*recurse=*/false)) {
      if (b.value().defined()) out.insert(prefix + b.key(), b.value());
    }
    const auto children = m->named_children();
    for (size_t i = children.size(); i-- > 0;) {
      todo.emplace_back(prefix + children[i].key() + ".", children[i].value().get());
    }
  }
  return out;
}

/// What `load_state_dict` could not load (all empty after a strict load, which throws instead).
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     ///< in the module, not in the state dict
  std::vector<std::string> unexpected_keys;  ///< in the state dict, not in the module
  std::vector<std::string> mismatched_keys;  ///< in both, with another shape or dtype (not loaded)
  /// True when every entry matched both ways.
  bool ok() const { return missing_keys.empty() && unexpected_keys.empty() && mismatched_keys.empty(); }
};

/// PyTorch's `consume_prefix_in_state_dict_if_present`: strips `prefix` from every key that
/// starts with it (an Actor's `"module.0.weight"` -> its MLP's `"0.weight"`).
inline StateDict consume_prefix(const StateDict& sd, const std::string& prefix) {
  StateDict out("state dict entry");
  for (const auto& item : sd) {
    const bool has = item.key().compare(0, prefix.size(), prefix) == 0;
    out.insert(has ? item.key().substr(prefix.size()) : item.key(), item.value());
  }
  return out;
}

namespace detail {

/// One state-dict entry of a module under rlobj 0.1's names: `legacy` (and, for a TanhModule
/// bound, `legacy_other`: the bound is `shift - scale` or `shift + scale`).
struct LegacyEntry {
  enum Kind { Same, Low, High } kind = Same;
  std::string current, legacy, legacy_other;  // legacy_other: "shift" for Low/High
};

inline void legacy_entries(const torch::nn::Module& m, const std::string& current, const std::string& legacy,
                           std::vector<LegacyEntry>& out) {
  if (const auto* s = dynamic_cast<const modules::TensorDictSequentialImpl*>(&m)) {
    for (size_t i = 0; i < s->size(); ++i) {
      legacy_entries(*(*s)[i], current + "module." + std::to_string(i) + ".", legacy + std::to_string(i) + ".", out);
    }
    return;
  }
  if (const auto* a = dynamic_cast<const modules::ProbabilisticActorImpl*>(&m)) {
    legacy_entries(*a->module(), current + "module.0.", legacy + "module.", out);
    return;
  }
  if (const auto* t = dynamic_cast<const modules::TanhModuleImpl*>(&m)) {
    for (size_t i = 0; i < t->out_keys().size(); ++i) {
      for (const bool high : {false, true}) {
        out.push_back({high ? LegacyEntry::High : LegacyEntry::Low,
                       current + modules::TanhModuleImpl::bound_name(t->out_keys()[i], high), legacy + "scale",
                       legacy + "shift"});
      }
    }
    return;
  }
  if (dynamic_cast<const modules::AddStateIndependentNormalScaleImpl*>(&m) != nullptr) {
    out.push_back({LegacyEntry::Same, current + "state_independent_scale", legacy + "scale", {}});
    return;
  }
  for (const auto& p : m.named_parameters(/*recurse=*/false)) out.push_back({LegacyEntry::Same, current + p.key(), legacy + p.key(), {}});
  for (const auto& b : m.named_buffers(/*recurse=*/false)) out.push_back({LegacyEntry::Same, current + b.key(), legacy + b.key(), {}});
  for (const auto& c : m.named_children()) {
    legacy_entries(*c.value(), current + c.key() + ".", legacy + c.key() + ".", out);
  }
}

}  // namespace detail

/// The named migration **rlobj-0.1**: a state dict of `module` written under rlobj 0.1's names
/// (`save_state_dict` or `state_dict` before 0.2) renamed to the current ones, TorchRL's: the
/// children `0` and `1` of a `TensorDictSequential` become `module.0` and `module.1`; the child
/// `module` of a `ProbabilisticActor` becomes `module.0`; the buffers `scale` and `shift` of a
/// `TanhModule` become the bounds `<key>_low` (shift - scale) and `<key>_high` (shift + scale),
/// exact for bounds such as 1 or 2 and to rounding otherwise; the parameter `scale` of an
/// `AddStateIndependentNormalScale` becomes `state_independent_scale`. Entries that are not 0.1 names of `module` pass unchanged.
/// `load_state_dict` applies it by itself when a state dict matches `module` only through it.
inline StateDict migrate_state_dict_from_0_1(const StateDict& sd, const torch::nn::Module& module) {
  std::vector<detail::LegacyEntry> entries;
  detail::legacy_entries(module, "", "", entries);
  StateDict out("state dict entry");
  std::set<std::string> used;
  for (const auto& e : entries) {
    const torch::Tensor* v = sd.find(e.legacy);
    if (v == nullptr || e.current == e.legacy) continue;
    if (e.kind == detail::LegacyEntry::Same) {
      out.insert(e.current, *v);
    } else {
      const torch::Tensor* shift = sd.find(e.legacy_other);
      if (shift == nullptr) continue;
      torch::NoGradGuard no_grad;
      out.insert(e.current, e.kind == detail::LegacyEntry::Low ? *shift - *v : *shift + *v);
      used.insert(e.legacy_other);
    }
    used.insert(e.legacy);
  }
  for (const auto& item : sd) {
    if (used.count(item.key()) == 0 && !out.contains(item.key())) out.insert(item.key(), item.value());
  }
  return out;
}

namespace detail {

/// "float32 [32, 3]".
inline std::string tensor_kind(const torch::Tensor& t) {
  return dtype_str(t.scalar_type()) + " " + shape_str(t.sizes());
}

inline std::string join_keys(const std::vector<std::string>& keys) {
  std::string out;
  for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", \"" : "\"") + keys[i] + "\"";
  return out;
}

/// Flattens a Python state dict (nested dicts of str -> Tensor, as `torch.save({"actor":
/// actor.state_dict(), ...})` gives) into dotted keys.
inline void flatten_state_dict(const pickle::Object& dict, const std::string& prefix, StateDict& out,
                               const std::string& what, int depth = 0,
                               std::shared_ptr<std::set<const pickle::Object*>> seen = nullptr) {
  TORCH_CHECK(depth < 64, what, ": dicts nested more than 64 deep");
  // Each dict once: a dict reached twice (a cycle, or one shared by several keys, which could
  // multiply the keys exponentially) is not a state dict torch.save writes.
  if (!seen) seen = std::make_shared<std::set<const pickle::Object*>>();
  TORCH_CHECK(seen->insert(&dict).second, what, ": the dict under \"", prefix, "\" appears twice in the file");
  for (const auto& [key, value] : dict.entries) {
    TORCH_CHECK(key->kind == pickle::Object::Kind::Str, what, ": a key of type ", pickle::kind_name(key->kind),
                " under \"", prefix, "\"; a state dict's keys are strings");
    const std::string name = prefix + key->s;
    if (value->kind == pickle::Object::Kind::Dict) {
      flatten_state_dict(*value, name + ".", out, what, depth + 1, seen);
      continue;
    }
    TORCH_CHECK(value->kind == pickle::Object::Kind::Tensor, what, ": \"", name, "\" is a ",
                pickle::kind_name(value->kind), ", not a tensor; a state dict maps names to tensors");
    TORCH_CHECK(!out.contains(name), what, ": the key \"", name, "\" appears twice (once nested)");
    out.insert(name, value->tensor);
  }
}

}  // namespace detail

/// \fn StateDict read_state_dict(const std::string& path)
/// Reads a state dict saved by Python's `torch.save` (`module.state_dict()`, a plain dict of
/// tensors, or dicts of those, flattened to dotted keys) or by `write_state_dict`. Tensors
/// come back on the CPU with their saved dtype. Never runs code from the file: any object other
/// than tensors, numbers, strings and containers is an error, as with Python's
/// `torch.load(weights_only=True)`. Errors name the file and what is wrong: not a zip archive,
/// a damaged record (CRC-32), a truncated file, the legacy pre-1.6 format, a pickle of
/// something else.
namespace detail {
inline StateDict read_state_dict_impl(const std::string& path, const std::string& what);
}  // namespace detail

inline StateDict read_state_dict(const std::string& path) {
  const std::string what = "read_state_dict: \"" + path + "\"";
  try {
    return detail::read_state_dict_impl(path, what);
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    // LibTorch's zip reader lets a few standard exceptions out (std::out_of_range from a version
    // record that does not fit, std::bad_alloc): bad input is a c10::Error like any other.
    C10_THROW_ERROR(Error, what + ": unreadable file (" + e.what() + ")");
  }
}

inline StateDict detail::read_state_dict_impl(const std::string& path, const std::string& what) {
  const std::string bytes = detail::read_file(path, "read_state_dict");
  // torch.save's format before PyTorch 1.6 (or with _use_new_zipfile_serialization=False): a
  // bare pickle starting with a magic number, not a zip archive.
  static const char kLegacyMagic[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
  TORCH_CHECK(bytes.size() < 14 || bytes.compare(0, 14, kLegacyMagic, 14) != 0, what,
              ": written in torch.save's legacy format (PyTorch < 1.6, or _use_new_zipfile_serialization=False); "
              "re-save it with torch.save(state_dict, path) from PyTorch >= 1.6");
  TORCH_CHECK(!bytes.empty(), what, ": the file is empty");
  verify_archive(bytes, what);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(
        std::make_shared<caffe2::serialize::MemoryReadAdapter>(bytes.data(), static_cast<off_t>(bytes.size())));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, what, ": not a readable torch.save archive: ", e.what_without_backtrace());
  }
  TORCH_CHECK(reader->hasRecord("data.pkl"), what, ": the archive has no data.pkl: not written by torch.save");
  if (reader->hasRecord("byteorder")) {
    at::DataPtr order;
    size_t n = 0;
    std::tie(order, n) = reader->getRecord("byteorder");
    const std::string byteorder(static_cast<const char*>(order.get()), n);
    TORCH_CHECK(byteorder == "little", what, ": saved on a ", byteorder, "-endian machine; only little-endian "
                "files are read");
  }
  at::DataPtr pkl;
  size_t pkl_size = 0;
  std::tie(pkl, pkl_size) = reader->getRecord("data.pkl");
  auto load_storage = [&](const std::string& key, c10::ScalarType dtype, int64_t numel) {
    const std::string record = "data/" + key;
    TORCH_CHECK(key.find('/') == std::string::npos && reader->hasRecord(record), what, ": the archive has no "
                "record \"", record, "\" for a tensor's storage (incomplete file)");
    at::DataPtr data;
    size_t n = 0;
    std::tie(data, n) = reader->getRecord(record);
    const size_t elem = c10::elementSize(dtype);
    TORCH_CHECK(static_cast<uint64_t>(numel) <= n / elem, what, ": record \"", record, "\" holds ", n,
                " bytes, too few for ", numel, " ", detail::dtype_str(dtype), " elements (corrupt file)");
    torch::Tensor out = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (numel > 0) std::memcpy(out.data_ptr(), data.get(), static_cast<size_t>(numel) * elem);
    return out;
  };
  detail::pickle::Unpickler unpickler(static_cast<const char*>(pkl.get()), pkl_size, what, load_storage);
  const auto root = unpickler.parse();
  TORCH_CHECK(root->kind == detail::pickle::Object::Kind::Dict, what, ": holds a ",
              detail::pickle::kind_name(root->kind), ", not a state dict (a dict of name -> tensor)");
  StateDict out("state dict entry");
  detail::flatten_state_dict(*root, "", out, what);
  return out;
}

/// Writes `sd` as a file Python's `torch.load(path)` returns as a `dict` of name -> tensor (a
/// zip archive as `torch.save` writes it: `data.pkl` plus one record per tensor, written with
/// LibTorch's `PyTorchStreamWriter`), atomically. Tensors are written from the CPU, contiguous,
/// detached, each with its own storage. The pickle uses only what Python's
/// `torch.load(weights_only=True)` (the default since PyTorch 2.6) accepts.
inline void write_state_dict(const StateDict& sd, const std::string& path) {
  std::vector<std::pair<std::string, torch::Tensor>> entries;
  for (const auto& item : sd) {
    const torch::Tensor& t = item.value();
    TORCH_CHECK_VALUE(t.defined(), "write_state_dict: \"", item.key(), "\" is an undefined tensor");
    TORCH_CHECK_VALUE(t.layout() == torch::kStrided && !t.is_quantized(), "write_state_dict: \"", item.key(),
                      "\" is a sparse or quantized tensor; only dense tensors are written");
    entries.emplace_back(item.key(), t.detach().to(torch::kCPU).clone(at::MemoryFormat::Contiguous));
  }
  const std::string pkl = detail::pickle::dump_tensor_dict(entries);
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t n) -> size_t {
      bytes.append(static_cast<const char*>(data), n);
      return n;
    });
    writer.writeRecord("data.pkl", pkl.data(), pkl.size());
    static const char kLittle[] = "little";
    writer.writeRecord("byteorder", kLittle, sizeof(kLittle) - 1);
    for (size_t i = 0; i < entries.size(); ++i) {
      const torch::Tensor& t = entries[i].second;
      writer.writeRecord("data/" + std::to_string(i), t.data_ptr(), t.numel() * t.element_size());
    }
    writer.writeEndOfFile();
  }
  write_file_atomic(bytes, path);
}

/// Loads `sd` into `module` by name (as PyTorch's `module.load_state_dict(sd, strict)`):
/// values are copied into the module's own tensors, on their device (views stay views, so
/// a loss's flat parameter groups see the new values). Unlike PyTorch, a dtype difference is a
/// mismatch (never a silent cast), and a non-strict load skips and returns shape or dtype
/// mismatches instead of raising on them. The old values are kept (one copy of the module's
/// tensors) until every copy succeeded.
///
/// A state dict written by rlobj 0.1 for the same module (its `TensorDictSequential`,
/// `ProbabilisticActor` and `TanhModule` names differed from TorchRL's) is renamed first
/// (`migrate_state_dict_from_0_1`) when that makes every key match.
///
/// Strict (default): any missing key, unexpected key or shape/dtype mismatch is one
/// `c10::Error` listing them all, and nothing is loaded. Not strict: what matches is loaded and
/// the rest returned. Either way the module is left as it was if anything fails midway.
inline LoadStateDictResult load_state_dict(torch::nn::Module& module, const StateDict& given, bool strict = true,
                                           const std::string& source = "the state dict") {
  const StateDict target = state_dict(module);
  // A state dict under rlobj 0.1's names is renamed (migration rlobj-0.1) when only the renamed
  // one matches every key of the module.
  const auto matches = [&target](const StateDict& d) {
    if (d.size() != target.size()) return false;
    for (const auto& item : target) {
      if (!d.contains(item.key())) return false;
    }
    return true;
  };
  StateDict migrated("state dict entry");
  if (!matches(given)) {
    migrated = migrate_state_dict_from_0_1(given, module);
    if (!matches(migrated)) migrated = StateDict("state dict entry");
  }
  const StateDict& sd = migrated.is_empty() ? given : migrated;
  LoadStateDictResult r;
  std::vector<std::string> mismatch_details;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (module tensor, value)
  for (const auto& item : target) {
    const torch::Tensor* value = sd.find(item.key());
    if (value == nullptr) {
      r.missing_keys.push_back(item.key());
      continue;
    }
    if (value->sizes() != item.value().sizes() || value->scalar_type() != item.value().scalar_type()) {
      r.mismatched_keys.push_back(item.key());
      mismatch_details.push_back("\"" + item.key() + "\": " + detail::tensor_kind(*value) + " in " + source +
                                 ", " + detail::tensor_kind(item.value()) + " in the module");
      continue;
    }
    copies.emplace_back(item.value(), *value);
  }
  for (const auto& item : sd) {
    if (!target.contains(item.key())) r.unexpected_keys.push_back(item.key());
  }
  if (strict && !r.ok()) {
    std::ostringstream msg;
    msg << "load_state_dict: " << source << " does not match the module (nothing was loaded):";
    if (!r.missing_keys.empty()) {
      msg << "\n  missing keys (in the module, not in " << source << "): " << detail::join_keys(r.missing_keys);
    }
    if (!r.unexpected_keys.empty()) {
      msg << "\n  unexpected keys (in " << source << ", not in the module): " << detail::join_keys(r.unexpected_keys);
    }
    for (const auto& m : mismatch_details) msg << "\n  mismatched: " << m;
    // A common slip: an Actor's state dict ("module.0.weight") into its MLP ("0.weight").
    for (const std::string prefix : {"module."}) {
      const bool file_has = !r.unexpected_keys.empty() &&
                            std::all_of(r.unexpected_keys.begin(), r.unexpected_keys.end(), [&](const std::string& k) {
                              return k.compare(0, prefix.size(), prefix) == 0 && target.contains(k.substr(prefix.size()));
                            });
      if (file_has) {
        msg << "\n  (the keys carry a \"" << prefix << "\" prefix the module's lack: load consume_prefix(sd, \""
            << prefix << "\"), or load into the module that wraps this one)";
      }
    }
    msg << "\n  pass strict=false to load the entries that match";
    TORCH_CHECK_VALUE(false, msg.str());
  }
  // Copy, keeping the old values until every copy succeeded (a device copy can fail midway).
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> before;
  before.reserve(copies.size());
  for (const auto& c : copies) before.push_back(c.first.detach().clone());
  size_t done = 0;
  try {
    for (; done < copies.size(); ++done) copies[done].first.detach().copy_(copies[done].second);
  } catch (...) {
    for (size_t k = 0; k < done; ++k) copies[k].first.detach().copy_(before[k]);
    throw;
  }
  return r;
}

/// `load_state_dict(module, read_state_dict(path), strict)`: a file from Python's
/// `torch.save(module.state_dict(), path)` (or `save_state_dict`). The module is unchanged
/// when the file is unreadable, damaged or (strict) does not match.
inline LoadStateDictResult load_state_dict(torch::nn::Module& module, const std::string& path, bool strict = true) {
  return load_state_dict(module, read_state_dict(path), strict, "\"" + path + "\"");
}

/// The same for a module holder (`rlobj::modules::Actor`, `torch::nn::Linear`, ...).
template <typename Impl>
LoadStateDictResult load_state_dict(const torch::nn::ModuleHolder<Impl>& module, const std::string& path,
                                    bool strict = true) {
  return load_state_dict(static_cast<torch::nn::Module&>(*module.ptr()), path, strict);
}
/// The same for a module holder, from a `StateDict`.
template <typename Impl>
LoadStateDictResult load_state_dict(const torch::nn::ModuleHolder<Impl>& module, const StateDict& sd,
                                    bool strict = true) {
  return load_state_dict(static_cast<torch::nn::Module&>(*module.ptr()), sd, strict);
}

/// Writes `module`'s parameters and buffers (`state_dict(module)`) to `path` for Python:
/// `torch_module.load_state_dict(torch.load(path))`. Atomic.
inline void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  write_state_dict(state_dict(module), path);
}
/// The same for a module holder.
template <typename Impl>
void save_state_dict(const torch::nn::ModuleHolder<Impl>& module, const std::string& path) {
  save_state_dict(static_cast<const torch::nn::Module&>(*module), path);
}

/// Options of `export_policy` / `trace_policy`.
struct ExportPolicyOptions {
  /// The keys the traced function's arguments fill, in order; empty: the actor's `in_keys()`.
  TORCH_ARG(std::vector<NestedKey>, in_keys) = {};
  /// The key whose tensor the traced function returns.
  TORCH_ARG(NestedKey, out_key) = NestedKey("action");
  /// The exploration type the actor is traced under (`Deterministic`: no noise, a
  /// distribution's mode).
  TORCH_ARG(modules::ExplorationType, exploration_type) = modules::ExplorationType::Deterministic;
};

namespace detail {

/// A TorchScript module mirroring `m`'s hierarchy: the same parameter, buffer and child names
/// (so `torch.jit.load(path).state_dict()` has the keys of `rlobj::state_dict(actor)`), holding
/// `m`'s own tensors, which the tracer then reads as attributes instead of constants.
inline torch::jit::Module script_mirror(const torch::nn::Module& m, const std::shared_ptr<torch::jit::CompilationUnit>& cu) {
  std::string type = m.name();
  const auto colon = type.rfind("::");
  if (colon != std::string::npos) type = type.substr(colon + 2);
  if (type.size() > 4 && type.compare(type.size() - 4, 4, "Impl") == 0) type.resize(type.size() - 4);
  for (char& c : type) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  }
  if (type.empty() || std::isdigit(static_cast<unsigned char>(type[0]))) type = "Module_" + type;
  torch::jit::Module out(c10::QualifiedName("__torch__.rlobj." + type), cu, /*shouldMangle=*/true);
  // What torch.jit.script gives every module: `.training`, read by train()/eval() in C++ and Python.
  out.register_attribute("training", c10::BoolType::get(), false);
  for (const auto& p : m.named_parameters(/*recurse=*/false)) {
    if (p.value().defined()) out.register_parameter(p.key(), p.value(), /*is_buffer=*/false);
  }
  for (const auto& b : m.named_buffers(/*recurse=*/false)) {
    if (b.value().defined()) out.register_buffer(b.key(), b.value());
  }
  for (const auto& c : m.named_children()) out.register_module(c.key(), script_mirror(*c.value(), cu));
  return out;
}

}  // namespace detail

/// Traces `actor` (a TensorDict module: rlobj's `Actor`, `ProbabilisticActor`,
/// `TensorDictSequential`, ...) into a TorchScript module whose `forward(observation...)`
/// returns the action, under `options.exploration_type()` (deterministic by default). The
/// module holds a copy of the actor's parameters and buffers under their state-dict names
/// (`module.0.weight`), on the actor's device; `.to(device)` moves them (a tensor the actor
/// uses without registering it becomes a constant of the trace and stays where it was).
///
/// Tracing records the operations one call runs: the result is checked against the actor on
/// `example_inputs` and on a batch of another size, and an actor whose computation depends on
/// the values or the batch size in a way a trace cannot hold is an error.
inline torch::jit::Module trace_policy(const modules::TensorDictModuleBase& actor,
                                       const std::vector<torch::Tensor>& example_inputs,
                                       const ExportPolicyOptions& options = {}) {
  const std::vector<NestedKey> in_keys = options.in_keys().empty() ? actor.in_keys() : options.in_keys();
  TORCH_CHECK_VALUE(example_inputs.size() == in_keys.size(), "export_policy: ", example_inputs.size(),
                    " example input(s) for ", in_keys.size(), " input key(s) (", fmt::format("{}", fmt::join(in_keys, ", ")),
                    ")");
  for (size_t i = 0; i < example_inputs.size(); ++i) {
    TORCH_CHECK_VALUE(example_inputs[i].defined(), "export_policy: the example input for \"", in_keys[i].str(),
                      "\" is undefined");
  }
  // A private copy, so that the caller's actor is never touched; its parameters need no
  // gradient (an inference graph).
  auto cloned = std::dynamic_pointer_cast<modules::TensorDictModuleBase>(actor.clone());
  TORCH_CHECK(cloned != nullptr, "export_policy: the actor's clone() did not return a TensorDict module");
  for (auto& p : cloned->parameters()) p.requires_grad_(false);
  cloned->eval();

  const auto run = [&](const std::vector<torch::Tensor>& inputs) {
    TensorDict td;
    for (size_t i = 0; i < inputs.size(); ++i) td.set(in_keys[i], inputs[i]);
    TensorDict out = cloned->forward(td);
    TORCH_CHECK_VALUE(out.contains(options.out_key()), "export_policy: the actor wrote no \"", options.out_key().str(),
                      "\" (it writes ", fmt::format("{}", fmt::join(cloned->out_keys(), ", ")), "); set out_key");
    return out.get(options.out_key());
  };

  modules::SetExplorationType mode(options.exploration_type());
  torch::NoGradGuard no_grad;
  run(example_inputs);  // bad keys or inputs fail here, with the actor's own message, before tracing
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module module = detail::script_mirror(*cloned, cu);
  torch::jit::Stack inputs;
  for (const auto& x : example_inputs) inputs.emplace_back(x);
  auto traced = torch::jit::tracer::trace(
      std::move(inputs),
      [&](torch::jit::Stack in) -> torch::jit::Stack {
        std::vector<torch::Tensor> xs;
        for (const auto& v : in) xs.push_back(v.toTensor());
        return {run(xs)};
      },
      [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/true, /*force_outplace=*/false,
      &module);
  auto fn = cu->create_function(c10::QualifiedName(*module.type()->name(), "forward"), traced.first->graph);
  module.type()->addMethod(fn);
  module.eval();

  // The trace must reproduce the actor, on the example and on a batch of another size.
  const auto check = [&](const std::vector<torch::Tensor>& xs, const char* which) {
    const torch::Tensor want = run(xs);
    std::vector<torch::jit::IValue> args(xs.begin(), xs.end());
    const torch::Tensor got = module.forward(args).toTensor();
    TORCH_CHECK(got.sizes() == want.sizes() && torch::allclose(got, want, 1e-5, 1e-6, /*equal_nan=*/true),
                "export_policy: the traced policy differs from the actor on ", which,
                ": the actor's computation depends on its inputs' values or batch size in a way a trace cannot "
                "record");
  };
  check(example_inputs, "the example inputs");
  if (example_inputs[0].dim() >= 1) {
    std::vector<torch::Tensor> doubled;
    for (const auto& x : example_inputs) doubled.push_back(x.dim() >= 1 ? torch::cat({x, x.flip(0)}, 0) : x);
    check(doubled, "a batch twice the example's size");
  }
  return module;
}

/// Traces `actor` (`trace_policy`) and writes the TorchScript module to `path`, atomically:
/// load it with `torch::jit::load(path)` in C++ or `torch.jit.load(path)` in Python, call it
/// with the observation(s) and get the action.
inline void export_policy(const modules::TensorDictModuleBase& actor, const std::vector<torch::Tensor>& example_inputs,
                          const std::string& path, const ExportPolicyOptions& options = {}) {
  torch::jit::Module module = trace_policy(actor, example_inputs, options);
  std::ostringstream bytes;
  module.save(bytes);
  TORCH_CHECK(bytes.good(), "export_policy: cannot serialize the traced policy for \"", path, "\"");
  write_file_atomic(bytes.str(), path);
}
/// One observation tensor.
inline void export_policy(const modules::TensorDictModuleBase& actor, const torch::Tensor& example_observation,
                          const std::string& path, const ExportPolicyOptions& options = {}) {
  export_policy(actor, std::vector<torch::Tensor>{example_observation}, path, options);
}
/// The same for a module holder (`rlobj::modules::Actor`, `ProbabilisticActor`, ...).
template <typename Impl, typename Inputs,
          typename = std::enable_if_t<std::is_base_of<modules::TensorDictModuleBase, Impl>::value>>
void export_policy(const torch::nn::ModuleHolder<Impl>& actor, const Inputs& example_inputs, const std::string& path,
                   const ExportPolicyOptions& options = {}) {
  export_policy(static_cast<const modules::TensorDictModuleBase&>(*actor), example_inputs, path, options);
}
/// The same for a module holder (`rlobj::modules::Actor`, `ProbabilisticActor`, ...).
template <typename Impl, typename = std::enable_if_t<std::is_base_of<modules::TensorDictModuleBase, Impl>::value>>
torch::jit::Module trace_policy(const torch::nn::ModuleHolder<Impl>& actor, const std::vector<torch::Tensor>& example_inputs,
                                const ExportPolicyOptions& options = {}) {
  return trace_policy(static_cast<const modules::TensorDictModuleBase&>(*actor), example_inputs, options);
}

}  // namespace rlobj
