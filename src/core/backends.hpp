// The backends' registration entry points, called once by Registry::get().
#pragma once

#include "core/registry.hpp"

namespace loraops::cpu {
void register_kernels(detail::Registry& reg);
}

#if LORAOPS_WITH_CUDA
namespace loraops::cuda {
void register_kernels(detail::Registry& reg);
}
#endif
