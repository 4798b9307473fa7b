#pragma once

/// \file
/// A restricted unpickler for the files Python's `torch.save` writes: the `data.pkl` record of
/// its zip archive, evaluated with only the operations a saved state dict needs (plain
/// containers, numbers, strings, `collections.OrderedDict`, tensors rebuilt from the archive's
/// storages). It is the C++ counterpart of `torch.load(weights_only=True)`: any other global
/// (a class to instantiate, a function to call) is refused before anything runs.
///
/// Why not LibTorch's own `torch::jit::Unpickler`: the one in LibTorch 1.13 turns
/// `collections.OrderedDict` (the type of every `module.state_dict()`) into None, so reading
/// such a file fails with "Expected GenericDict but got None"; newer releases map it to a dict
/// but still fail on the `_metadata` attribute some versions restore with BUILD, and neither
/// restricts what a file may call. The archive itself is read with LibTorch's
/// `caffe2::serialize::PyTorchStreamReader`.
///
/// Internal: use `rlobj::read_state_dict` / `rlobj::load_state_dict` (rlobj/interop.h).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/types.h>

namespace rlobj {
namespace detail {
namespace pickle {

/// One Python object of the subset a state dict holds. Containers are shared (`ObjectPtr`), so
/// that the memo and in-place opcodes (SETITEMS, APPENDS) see the same object, as in Python.
struct Object;
using ObjectPtr = std::shared_ptr<Object>;
struct Object {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Tensor, Storage, Global, Mark };
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                         ///< Str, Bytes; Global: "module.name"
  std::vector<ObjectPtr> items;                          ///< Tuple, List
  std::vector<std::pair<ObjectPtr, ObjectPtr>> entries;  ///< Dict, in insertion order
  std::unordered_map<std::string, size_t> str_keys;      ///< Dict: string key -> its entry
  torch::Tensor tensor;                                  ///< Tensor; Storage: its elements, 1-D

  static ObjectPtr make(Kind k) {
    auto o = std::make_shared<Object>();
    o->kind = k;
    return o;
  }
};

/// A Python-ish name of an object's kind, for messages.
inline const char* kind_name(Object::Kind k) {
  switch (k) {
    case Object::Kind::None: return "None";
    case Object::Kind::Bool: return "bool";
    case Object::Kind::Int: return "int";
    case Object::Kind::Float: return "float";
    case Object::Kind::Str: return "str";
    case Object::Kind::Bytes: return "bytes";
    case Object::Kind::Tuple: return "tuple";
    case Object::Kind::List: return "list";
    case Object::Kind::Dict: return "dict";
    case Object::Kind::Tensor: return "Tensor";
    case Object::Kind::Storage: return "storage";
    case Object::Kind::Global: return "global";
    case Object::Kind::Mark: return "mark";
  }
  return "?";
}

/// The dtype of a legacy storage class name (`"FloatStorage"`), as `torch.save` pickles it.
inline bool storage_dtype(const std::string& name, c10::ScalarType& out) {
  static const std::map<std::string, c10::ScalarType> table = {
      {"FloatStorage", c10::kFloat},          {"DoubleStorage", c10::kDouble},
      {"HalfStorage", c10::kHalf},            {"BFloat16Storage", c10::kBFloat16},
      {"LongStorage", c10::kLong},            {"IntStorage", c10::kInt},
      {"ShortStorage", c10::kShort},          {"CharStorage", c10::kChar},
      {"ByteStorage", c10::kByte},            {"BoolStorage", c10::kBool},
      {"ComplexFloatStorage", c10::kComplexFloat}, {"ComplexDoubleStorage", c10::kComplexDouble},
  };
  auto it = table.find(name);
  if (it == table.end()) return false;
  out = it->second;
  return true;
}

/// Evaluates one pickle. `load_storage(key, dtype, numel)` returns the archive's storage
/// `data/<key>` as a 1-D tensor of `numel` elements (it checks the record's size). Every
/// failure is a `c10::Error` starting with `what` and giving the pickle offset.
class Unpickler {
 public:
  using StorageLoader = std::function<torch::Tensor(const std::string& key, c10::ScalarType dtype, int64_t numel)>;

  Unpickler(const char* data, size_t size, std::string what, StorageLoader load_storage)
      : data_(data), size_(size), what_(std::move(what)), load_storage_(std::move(load_storage)) {}
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;
  /// A pickle can make a container hold itself (through the memo), which shared pointers would
  /// never free: the containers this unpickler made are emptied here. Read what `parse()`
  /// returned before the unpickler goes.
  ~Unpickler() {
    for (auto& o : containers_) {
      o->items.clear();
      o->entries.clear();
      o->str_keys.clear();
    }
  }

  ObjectPtr parse() {
    while (true) {
      op_at_ = pos_;
      const auto op = static_cast<unsigned char>(take(1)[0]);
      switch (op) {
        case 0x80: {  // PROTO
          const auto v = static_cast<unsigned char>(take(1)[0]);
          if (v > 5) fail("pickle protocol " + std::to_string(v) + " (this reader knows 2 to 5)");
          break;
        }
        case 0x95: take(8); break;  // FRAME: a length hint
        case '.': {                 // STOP
          auto result = pop();
          if (!stack_.empty()) fail("objects left on the stack at STOP");
          return result;
        }
        case '(': push(Object::make(Object::Kind::Mark)); break;
        case 'N': push(Object::make(Object::Kind::None)); break;
        case 0x88:
        case 0x89: {  // NEWTRUE, NEWFALSE
          auto o = Object::make(Object::Kind::Bool);
          o->b = op == 0x88;
          push(o);
          break;
        }
        case 'J': push_int(static_cast<int32_t>(le(4))); break;  // BININT
        case 'K': push_int(static_cast<int64_t>(le(1))); break;  // BININT1
        case 'M': push_int(static_cast<int64_t>(le(2))); break;  // BININT2
        case 0x8a: {                                              // LONG1
          const auto n = static_cast<size_t>(le(1));
          if (n > 8) fail("an integer of " + std::to_string(n) + " bytes (more than 64 bits)");
          uint64_t v = n == 0 ? 0 : le(n);
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1u) v |= ~uint64_t{0} << (8 * n);  // sign-extend
          push_int(static_cast<int64_t>(v));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          const std::string b = take(8);
          uint64_t bits = 0;
          for (char c : b) bits = (bits << 8) | static_cast<unsigned char>(c);
          auto o = Object::make(Object::Kind::Float);
          std::memcpy(&o->f, &bits, sizeof bits);
          push(o);
          break;
        }
        case 'X': push_str(Object::Kind::Str, le(4)); break;     // BINUNICODE
        case 0x8c: push_str(Object::Kind::Str, le(1)); break;    // SHORT_BINUNICODE
        case 0x8d: push_str(Object::Kind::Str, le(8)); break;    // BINUNICODE8
        case 'U': push_str(Object::Kind::Str, le(1)); break;     // SHORT_BINSTRING
        case 'T': push_str(Object::Kind::Str, le(4)); break;     // BINSTRING
        case 'C': push_str(Object::Kind::Bytes, le(1)); break;   // SHORT_BINBYTES
        case 'B': push_str(Object::Kind::Bytes, le(4)); break;   // BINBYTES
        case ')': push(Object::make(Object::Kind::Tuple)); break;  // EMPTY_TUPLE
        case 't': {                                                // TUPLE
          auto o = Object::make(Object::Kind::Tuple);
          o->items = pop_to_mark();
          push(o);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
          const size_t n = op - 0x84u;
          if (stack_.size() < n) fail("stack underflow");
          auto o = Object::make(Object::Kind::Tuple);
          o->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          for (const auto& x : o->items) no_mark(x);
          push(o);
          break;
        }
        case ']': push(Object::make(Object::Kind::List)); break;  // EMPTY_LIST
        case 'l': {                                               // LIST
          auto o = Object::make(Object::Kind::List);
          o->items = pop_to_mark();
          push(o);
          break;
        }
        case 'a': {  // APPEND
          auto v = pop();
          expect(top(), Object::Kind::List, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          auto vs = pop_to_mark();
          auto& list = expect(top(), Object::Kind::List, "APPENDS")->items;
          list.insert(list.end(), vs.begin(), vs.end());
          break;
        }
        case '}': push(Object::make(Object::Kind::Dict)); break;  // EMPTY_DICT
        case 'd': {                                               // DICT
          auto vs = pop_to_mark();
          auto o = Object::make(Object::Kind::Dict);
          set_items(*o, vs);
          push(o);
          break;
        }
        case 's': {  // SETITEM
          auto v = pop();
          auto k = pop();
          set_items(*expect(top(), Object::Kind::Dict, "SETITEM"), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          auto vs = pop_to_mark();
          set_items(*expect(top(), Object::Kind::Dict, "SETITEMS"), vs);
          break;
        }
        case 'q': memo_put(le(1)); break;           // BINPUT
        case 'r': memo_put(le(4)); break;           // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;   // MEMOIZE
        case 'h': memo_get(le(1)); break;           // BINGET
        case 'j': memo_get(le(4)); break;           // LONG_BINGET
        case 'c': {                                 // GLOBAL
          const std::string module = line();
          const std::string name = line();
          push(global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          if (module->kind != Object::Kind::Str || name->kind != Object::Kind::Str) fail("STACK_GLOBAL of non-strings");
          push(global(module->s, name->s));
          break;
        }
        case 'Q': {  // BINPERSID: a storage of the archive
          push(storage(pop()));
          break;
        }
        case 'R': {  // REDUCE
          auto args = pop();
          auto callable = pop();
          push(call(callable, args));
          break;
        }
        case 'b': {  // BUILD: the state of an object
          auto state = pop();
          const auto& obj = top();
          // An OrderedDict's state is its attributes: `_metadata` (the modules' versions), which a
          // state dict's values do not depend on; a Parameter's is its Python attributes.
          // A tuple state on a tensor would be `set_(...)` in Python, another tensor: refused.
          const bool known = (obj->kind == Object::Kind::Dict || obj->kind == Object::Kind::Tensor) &&
                             (state->kind == Object::Kind::Dict || state->kind == Object::Kind::None);
          if (!known) {
            fail(std::string("BUILD of a ") + kind_name(obj->kind) + " with a " + kind_name(state->kind) + " state");
          }
          break;
        }
        default: {
          static const char* hex = "0123456789abcdef";
          std::string code = "0x";
          code += hex[op >> 4];
          code += hex[op & 15u];
          fail("pickle opcode " + code + ", which a state dict never uses (a pickle of some other object, or a "
               "corrupt file)");
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    C10_THROW_ERROR(Error, what_ + ": " + msg + " (data.pkl offset " + std::to_string(op_at_) + ")");
  }
  std::string take(size_t n) {
    if (n > size_ - pos_) fail("the pickle ends in the middle of an object (truncated or corrupt)");
    std::string out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  uint64_t le(size_t n) {
    const std::string b = take(n);
    uint64_t v = 0;
    for (size_t k = n; k-- > 0;) v = (v << 8) | static_cast<unsigned char>(b[k]);
    return v;
  }
  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (nl == nullptr) fail("a GLOBAL name without its end of line (truncated or corrupt)");
    const size_t n = static_cast<size_t>(static_cast<const char*>(nl) - (data_ + pos_));
    std::string out(data_ + pos_, n);
    pos_ += n + 1;
    return out;
  }
  void push(ObjectPtr o) {
    if (o->kind == Object::Kind::Tuple || o->kind == Object::Kind::List || o->kind == Object::Kind::Dict) {
      containers_.push_back(o);
    }
    stack_.push_back(std::move(o));
  }
  void push_int(int64_t v) {
    auto o = Object::make(Object::Kind::Int);
    o->i = v;
    push(o);
  }
  void push_str(Object::Kind kind, uint64_t n) {
    if (n > size_ - pos_) fail("a string longer than the rest of the pickle (truncated or corrupt)");
    auto o = Object::make(kind);
    o->s = take(static_cast<size_t>(n));
    push(o);
  }
  void no_mark(const ObjectPtr& o) const {
    if (o->kind == Object::Kind::Mark) fail("a MARK where an object was expected");
  }
  ObjectPtr pop() {
    if (stack_.empty()) fail("stack underflow (corrupt pickle)");
    auto o = std::move(stack_.back());
    stack_.pop_back();
    no_mark(o);
    return o;
  }
  const ObjectPtr& top() const {
    if (stack_.empty()) fail("stack underflow (corrupt pickle)");
    no_mark(stack_.back());
    return stack_.back();
  }
  std::vector<ObjectPtr> pop_to_mark() {
    size_t k = stack_.size();
    while (k > 0 && stack_[k - 1]->kind != Object::Kind::Mark) --k;
    if (k == 0) fail("no MARK on the stack (corrupt pickle)");
    std::vector<ObjectPtr> out(stack_.begin() + static_cast<std::ptrdiff_t>(k), stack_.end());
    stack_.resize(k - 1);
    return out;
  }
  const ObjectPtr& expect(const ObjectPtr& o, Object::Kind kind, const char* op) const {
    if (o->kind != kind) fail(std::string(op) + " on a " + kind_name(o->kind) + ", expected a " + kind_name(kind));
    return o;
  }
  void set_items(Object& dict, const std::vector<ObjectPtr>& kv) {
    if (kv.size() % 2 != 0) fail("a dict with an odd number of keys and values");
    for (size_t k = 0; k < kv.size(); k += 2) {
      const auto& key = kv[k];
      if (key->kind == Object::Kind::Str) {  // a repeated key replaces the value, as in Python
        const auto found = dict.str_keys.emplace(key->s, dict.entries.size());
        if (!found.second) {
          dict.entries[found.first->second].second = kv[k + 1];
          continue;
        }
      }
      dict.entries.emplace_back(key, kv[k + 1]);
    }
  }
  void memo_put(uint64_t index) { memo_[index] = top(); }
  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("a memo reference (" + std::to_string(index) + ") to nothing (corrupt pickle)");
    push(it->second);
  }

  /// Only what a state dict refers to; anything else would run code in Python.
  ObjectPtr global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    c10::ScalarType dtype;
    const bool allowed = full == "collections.OrderedDict" || full == "torch._utils._rebuild_tensor_v2" ||
                         full == "torch._utils._rebuild_parameter" ||
                         full == "torch._utils._rebuild_parameter_with_state" ||
                         full == "torch._tensor._rebuild_from_type_v2" || full == "torch.Tensor" ||
                         full == "torch.nn.parameter.Parameter" ||
                         (module == "torch" && storage_dtype(name, dtype));
    if (!allowed) {
      fail("the file refers to " + full + ", which is not part of a state dict of tensors; like Python's "
           "torch.load(weights_only=True), only tensors, numbers, strings and plain or ordered dicts, lists and "
           "tuples are read (a pickled module or TorchScript file? save module.state_dict() instead)");
    }
    auto o = Object::make(Object::Kind::Global);
    o->s = full;
    return o;
  }

  /// ('storage', torch.FloatStorage, key, location, numel) -> the storage's elements.
  ObjectPtr storage(const ObjectPtr& pid) {
    const auto& t = pid->items;
    if (pid->kind != Object::Kind::Tuple || t.size() != 5 || t[0]->kind != Object::Kind::Str ||
        t[0]->s != "storage" || t[1]->kind != Object::Kind::Global || t[2]->kind != Object::Kind::Str ||
        t[4]->kind != Object::Kind::Int) {
      fail("a persistent id that is not ('storage', type, key, location, numel)");
    }
    c10::ScalarType dtype;
    const std::string type = t[1]->s.rfind("torch.", 0) == 0 ? t[1]->s.substr(6) : t[1]->s;
    if (!storage_dtype(type, dtype)) fail("a storage of type " + t[1]->s);
    if (t[4]->i < 0) fail("a storage of negative size");
    auto it = storages_.find(t[2]->s);
    if (it == storages_.end()) {
      torch::Tensor data = load_storage_(t[2]->s, dtype, t[4]->i);
      it = storages_.emplace(t[2]->s, data).first;
    }
    if (it->second.scalar_type() != dtype || it->second.numel() != t[4]->i) {
      fail("storage \"" + t[2]->s + "\" is referred to with two types or sizes");
    }
    auto o = Object::make(Object::Kind::Storage);
    o->tensor = it->second;
    return o;
  }

  static std::vector<int64_t> ints(const ObjectPtr& tuple, const Unpickler& self, const char* what) {
    if (tuple->kind != Object::Kind::Tuple) self.fail(std::string("a tensor's ") + what + " that is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : tuple->items) {
      if (x->kind != Object::Kind::Int) self.fail(std::string("a tensor's ") + what + " holding a non-integer");
      out.push_back(x->i);
    }
    return out;
  }

  /// _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]): a
  /// view of the storage, checked to lie inside it.
  ObjectPtr rebuild_tensor(const std::vector<ObjectPtr>& a) {
    if (a.size() < 6 || a[0]->kind != Object::Kind::Storage || a[1]->kind != Object::Kind::Int) {
      fail("_rebuild_tensor_v2 with unexpected arguments");
    }
    const auto sizes = ints(a[2], *this, "size");
    const auto strides = ints(a[3], *this, "stride");
    const int64_t offset = a[1]->i;
    if (sizes.size() != strides.size()) fail("a tensor whose size and stride have different lengths");
    const int64_t numel = a[0]->tensor.numel();
    if (offset < 0) fail("a tensor with a negative storage offset");
    bool empty = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] < 0 || strides[d] < 0) fail("a tensor with a negative size or stride");
      empty |= sizes[d] == 0;
    }
    if (!empty) {
      // The last element's index, without overflow: each step is checked against the room left.
      const char* past_end = "a tensor that reaches past the end of its storage (corrupt file)";
      if (offset >= numel) fail(past_end);
      int64_t last = offset;
      for (size_t d = 0; d < sizes.size(); ++d) {
        if (sizes[d] <= 1 || strides[d] == 0) continue;
        if (sizes[d] - 1 > (numel - 1 - last) / strides[d]) fail(past_end);
        last += (sizes[d] - 1) * strides[d];
      }
    }
    auto o = Object::make(Object::Kind::Tensor);
    o->tensor = a[0]->tensor.as_strided(sizes, strides, offset);
    return o;
  }

  ObjectPtr call(const ObjectPtr& callable, const ObjectPtr& args) {
    if (callable->kind != Object::Kind::Global) fail(std::string("REDUCE of a ") + kind_name(callable->kind));
    if (args->kind != Object::Kind::Tuple) fail("REDUCE with arguments that are not a tuple");
    const auto& a = args->items;
    const std::string& f = callable->s;
    if (f == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict(...) with arguments");
      return Object::make(Object::Kind::Dict);
    }
    if (f == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(a);
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Object::Kind::Tensor) fail(f + " without a tensor");
      return a[0];
    }
    if (f == "torch._tensor._rebuild_from_type_v2") {
      // (func, type, args, state): a Tensor subclass; its data is func(*args), one of the tensor
      // rebuilds (never this function again: a chain of them would recurse as deep as the file).
      if (a.size() < 3 || a[0]->kind != Object::Kind::Global ||
          (a[0]->s != "torch._utils._rebuild_tensor_v2" && a[0]->s != "torch._utils._rebuild_parameter" &&
           a[0]->s != "torch._utils._rebuild_parameter_with_state")) {
        fail(f + " with unexpected arguments");
      }
      auto out = call(a[0], a[2]);
      if (out->kind != Object::Kind::Tensor) fail(f + " that does not rebuild a tensor");
      return out;
    }
    fail("a call of " + f);
  }

  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_at_ = 0;
  std::string what_;
  StorageLoader load_storage_;
  std::vector<ObjectPtr> stack_;
  std::map<uint64_t, ObjectPtr> memo_;
  std::map<std::string, torch::Tensor> storages_;
  std::vector<ObjectPtr> containers_;  ///< every container pushed, to break cycles at the end
};

/// The legacy storage class name of a dtype (`"FloatStorage"`), or empty.
inline std::string storage_class(c10::ScalarType dtype) {
  for (const char* name : {"FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
                           "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
                           "ComplexFloatStorage", "ComplexDoubleStorage"}) {
    c10::ScalarType t;
    if (storage_dtype(name, t) && t == dtype) return name;
  }
  return {};
}

/// The `data.pkl` Python's `torch.save(dict_of_tensors)` would write (protocol 2) for `names`:
/// a dict whose value `i` is `torch._utils._rebuild_tensor_v2` over the persistent storage
/// ``('storage', torch.<T>Storage, '<i>', 'cpu', numel)`` (the archive's record `data/<i>`),
/// contiguous, not requiring grad. It uses only globals that Python's
/// `torch.load(weights_only=True)` (the default since PyTorch 2.6) accepts; LibTorch's
/// `pickle_save` tags the dict with `torch.jit._pickle.restore_type_tag`, which it refuses.
inline std::string dump_tensor_dict(const std::vector<std::pair<std::string, torch::Tensor>>& entries) {
  std::string out = "\x80\x02}";  // PROTO 2, EMPTY_DICT
  const auto u32 = [&](uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out += static_cast<char>((v >> (8 * k)) & 0xFFu);
  };
  const auto str = [&](const std::string& s) {
    TORCH_CHECK_VALUE(s.size() < (uint64_t{1} << 32), "write_state_dict: a key of ", s.size(), " bytes");
    out += 'X';  // BINUNICODE
    u32(s.size(), 4);
    out += s;
  };
  const auto integer = [&](int64_t v) {
    if (v >= 0 && v < 256) {
      out += 'K';  // BININT1
      u32(static_cast<uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      out += 'M';  // BININT2
      u32(static_cast<uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out += 'J';  // BININT
      u32(static_cast<uint64_t>(static_cast<uint32_t>(static_cast<int32_t>(v))), 4);
    } else {
      out += "\x8a\x08";  // LONG1, 8 bytes
      u32(static_cast<uint64_t>(v), 8);
    }
  };
  const auto ints = [&](c10::IntArrayRef xs) {
    out += '(';
    for (int64_t x : xs) integer(x);
    out += 't';  // TUPLE
  };
  if (!entries.empty()) out += '(';  // MARK
  for (size_t i = 0; i < entries.size(); ++i) {
    const torch::Tensor& t = entries[i].second;
    const std::string storage = storage_class(t.scalar_type());
    TORCH_CHECK_VALUE(!storage.empty(), "write_state_dict: \"", entries[i].first, "\" has dtype ",
                      c10::toString(t.scalar_type()), ", which a torch.save file cannot hold");
    TORCH_CHECK(t.is_contiguous() && t.storage_offset() == 0, "write_state_dict: internal: \"", entries[i].first,
                "\" is not a contiguous tensor of its own");
    str(entries[i].first);
    out += "ctorch._utils\n_rebuild_tensor_v2\n(";
    out += "(";  // the persistent id
    str("storage");
    out += "ctorch\n" + storage + "\n";
    str(std::to_string(i));
    str("cpu");
    integer(t.numel());
    out += "tQ";  // TUPLE, BINPERSID
    integer(0);   // storage offset
    ints(t.sizes());
    ints(t.strides());
    out += "\x89";                         // requires_grad = False
    out += "ccollections\nOrderedDict\n)R";  // backward hooks: OrderedDict()
    out += "tR";                           // TUPLE, REDUCE
  }
  if (!entries.empty()) out += 'u';  // SETITEMS
  out += '.';
  return out;
}

}  // namespace pickle
}  // namespace detail
}  // namespace rlobj
