// Which implementation of which op exists on which device, and how `auto` chooses among them.
// Backends fill the table explicitly (cpu::register_kernels, cuda::register_kernels); a missing
// implementation is a registered absence with a reason, which becomes the Unsupported error.
#pragma once

#include <array>
#include <cstdint>

#include "core/params.hpp"

namespace loraops::detail {

enum class OpId : uint8_t {
  Matmul, Softmax, RmsNorm, LayerNorm, Activation, LoraForward, LoraBackward, Attention
};
inline constexpr int kNumOps = 8;
const char* op_name(OpId op);

template <class P> using KernelFn = void (*)(const P& params, void* stream);
// Picks Vendor, Custom or Reference for one call; only picks implementations that exist.
template <class P> using ChooserFn = Impl (*)(const P& params);

// Bit mask of dtypes an entry handles.
inline constexpr uint8_t dtype_bit(DType t) { return uint8_t(1u << unsigned(t)); }
inline constexpr uint8_t kAllDTypes = 0b111;

struct Entry {
  void* fn = nullptr;             // KernelFn<P> of the op's params type
  uint8_t dtypes = 0;             // which dtypes fn handles
  const char* absent = nullptr;   // why there is no fn (when fn is null)
};

class Registry {
 public:
  static Registry& get();  // filled on first use

  template <class P>
  void add(OpId op, DeviceType dev, Impl impl, KernelFn<P> fn, uint8_t dtypes = kAllDTypes) {
    Entry& e = at(op, dev, impl);
    e.fn = reinterpret_cast<void*>(fn);
    e.dtypes = dtypes;
    e.absent = nullptr;
  }
  void absent(OpId op, DeviceType dev, Impl impl, const char* why) {
    Entry& e = at(op, dev, impl);
    e.fn = nullptr;
    e.dtypes = 0;
    e.absent = why;
  }
  template <class P> void set_chooser(OpId op, DeviceType dev, ChooserFn<P> fn) {
    choosers_[size_t(op)][size_t(dev)] = reinterpret_cast<void*>(fn);
  }

  const Entry& find(OpId op, DeviceType dev, Impl impl) const {
    return table_[size_t(op)][size_t(dev)][size_t(impl)];
  }
  void* chooser(OpId op, DeviceType dev) const { return choosers_[size_t(op)][size_t(dev)]; }

 private:
  Entry& at(OpId op, DeviceType dev, Impl impl) { return table_[size_t(op)][size_t(dev)][size_t(impl)]; }
  std::array<std::array<std::array<Entry, kNumImpls>, kNumDeviceTypes>, kNumOps> table_{};
  std::array<std::array<void*, kNumDeviceTypes>, kNumOps> choosers_{};
};

[[noreturn]] void throw_unsupported(OpId op, Device device, DType dtype, Impl impl,
                                    const Entry& entry);

// The implementation a call runs: `asked`, or for Impl::Auto what the device's chooser picks.
template <class P>
Impl resolve_impl(OpId op, Device device, Impl asked, const P& params) {
  if (asked != Impl::Auto) return asked;
  void* c = Registry::get().chooser(op, device.type);
  return c ? reinterpret_cast<ChooserFn<P>>(c)(params) : Impl::Custom;
}

// Resolve exec.impl, check that the implementation exists for the dtype, run it (unless `run` is
// false: every output is empty). Throws Error(Unsupported) naming "impl" when the implementation
// does not exist: never a silent substitution, also for empty tensors.
template <class P>
void dispatch(OpId op, Device device, DType dtype, const Exec& exec, const P& params,
              bool run = true) {
  const Impl impl = resolve_impl(op, device, exec.impl, params);
  const Entry& e = Registry::get().find(op, device.type, impl);
  if (!e.fn || !(e.dtypes & dtype_bit(dtype))) throw_unsupported(op, device, dtype, impl, e);
  if (run) reinterpret_cast<KernelFn<P>>(e.fn)(params, exec.stream);
}

}  // namespace loraops::detail
