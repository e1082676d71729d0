// The op bindings of loraops._ext, one function per source file. Every op takes its tensors as
// plain Python objects (converted in convert.cpp, so a wrong one gets loraops' own message), then
// impl, alloc, stream and bf16 (see Call in convert.hpp); the public signatures live in Python.
#pragma once

#include <nanobind/nanobind.h>

// The trailing arguments every binding takes, after its own (see Call).
#define LORAOPS_CALL_ARGS                                                               \
  nanobind::arg("impl").none(), nanobind::arg("alloc"), nanobind::arg("stream"),        \
      nanobind::arg("bf16").none()

namespace loraops::py {
void bind_rows(nanobind::module_& m);    // softmax, rms_norm, layer_norm, activation
void bind_linalg(nanobind::module_& m);  // matmul, lora_forward, lora_backward, attention
}  // namespace loraops::py
