// One call of an op from Python: turns each argument (a torch.Tensor, read directly, or any
// DLPack-capable object) into a loraops::Tensor view, allocates outputs (with torch.empty, or
// through the caller's allocator), and parses the string/stream arguments. All validation of shapes, dtypes and devices is left to the C++ core,
// which names the argument; this layer only rejects what cannot even be seen as a Tensor.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "loraops/loraops.hpp"

namespace loraops::py {

namespace nb = nanobind;

// Registers the torch objects the torch fast path needs (see register_torch in convert.cpp);
// called once by loraops._frameworks when it first sees torch, which the extension never imports.
void register_torch(nb::handle tensor, nb::handle parameter, nb::tuple dtypes, nb::handle strided,
                    nb::handle empty, nb::handle fallback);

class Call {
 public:
  // alloc: a torch.Tensor (outputs are torch.empty on its device), or a Python callable
  // alloc(shape: tuple[int, ...], dtype: str) -> new contiguous tensor.
  // bf16: names of the arguments that are bfloat16 data handed over as a uint16 view (numpy has
  // no bfloat16 of its own; ml_dtypes' arrays cannot be exported through DLPack), or None.
  Call(const char* op, nb::handle impl, nb::handle alloc, uintptr_t stream, nb::handle bf16);

  const Exec& exec() const { return exec_; }

  // A required tensor argument; anything that is not one raises TypeError naming `arg`.
  Tensor input(const char* arg, nb::handle obj);
  // None, or a tensor.
  bool optional_input(const char* arg, nb::handle obj, Tensor* out);

  // A new output of `shape` from the caller's allocator, like `like` (dtype); returns the Python
  // object and fills *t with its view. The core checks it is what it asked for.
  nb::object output(const char* arg, const Shape& shape, const Tensor& like, Tensor* t);

 private:
  Tensor to_tensor(const char* arg, nb::handle obj, bool writable, bool bf16);
  bool is_bf16_arg(const char* arg) const;

  const char* op_;
  Exec exec_;
  nb::handle alloc_;
  nb::handle bf16_;
  // Keeps every imported array (and so its DLPack capsule) alive until the op has run.
  std::vector<nb::ndarray<nb::ro>> keep_in_;
  std::vector<nb::ndarray<>> keep_out_;
};

// Parses an activation kind (a str), raising the core's error naming `kind`.
Activation activation_arg(nb::handle kind);

// Raises loraops::Error(Type) for `arg` of `op`: "expected <what>, got <type of obj>".
[[noreturn]] void type_error(const char* op, const char* arg, const char* what, nb::handle obj);

}  // namespace loraops::py
