// The switches behind row_ops_pdl (for loraops_latency) and row_grid_limit (for the tests):
// common.cuh, kernels.hpp.
#include "cuda/common.cuh"
#include "cuda/kernels.hpp"

namespace loraops::cuda {

void set_dependent_launch(bool on) { row_ops_pdl().store(on); }
void set_row_grid_limit(unsigned blocks) { row_grid_limit().store(blocks); }

}  // namespace loraops::cuda
