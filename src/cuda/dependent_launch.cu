// The switch behind row_ops_pdl (common.cuh), for loraops_latency (kernels.hpp).
#include "cuda/common.cuh"
#include "cuda/kernels.hpp"

namespace loraops::cuda {

void set_dependent_launch(bool on) { row_ops_pdl().store(on); }

}  // namespace loraops::cuda
