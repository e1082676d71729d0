// The switches behind row_ops_pdl (common.cuh) and row_warp_per_row (row_common.cuh), for
// loraops_latency (kernels.hpp).
#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/kernels/row_common.cuh"

namespace loraops::cuda {

void set_dependent_launch(bool on) { row_ops_pdl().store(on); }
void set_row_warp_per_row(bool on) { rows::row_warp_per_row().store(on); }

}  // namespace loraops::cuda
