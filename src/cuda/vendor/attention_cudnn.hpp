// cuDNN's fused attention (SDPA) as loraops' vendor attention on CUDA; compiled only when the
// build found cuDNN and the cuDNN frontend headers (LORAOPS_WITH_CUDNN).
#pragma once

#include "core/params.hpp"

namespace loraops::cuda {

// Runs cuDNN's SDPA; throws Error(Unsupported) naming why for shapes it does not take.
void attention_vendor(const detail::AttentionParams& p, void* stream);
// Whether attention_vendor takes these parameters (building and caching the plan to find out).
bool attention_cudnn_supports(const detail::AttentionParams& p);

}  // namespace loraops::cuda
