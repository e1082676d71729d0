// rms_norm, layer_norm and the activations on CUDA through cuDNN's graph API, as loraops' vendor
// path for them; compiled only when the build found cuDNN and the frontend (LORAOPS_WITH_CUDNN).
// softmax has no such path: the graph API of the cuDNN this build uses (9.14/9.19) has no softmax
// operation of its own (only inside its fused attention; later versions add one), so vendor
// softmax is a registered absence.
#pragma once

#include "core/params.hpp"

namespace loraops::cuda {

// Each throws Error(Unsupported) naming why for inputs it does not take (rows_cudnn.cpp).
void rms_norm_vendor(const detail::RowParams& p, void* stream);
void layer_norm_vendor(const detail::RowParams& p, void* stream);
void activation_vendor(const detail::RowParams& p, void* stream);

}  // namespace loraops::cuda
