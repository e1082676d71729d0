// The switch behind launch_dependent, for loraops_latency (kernels.hpp).
#include "cuda/dependent_launch.cuh"
#include "cuda/kernels.hpp"

namespace loraops::cuda {

void set_dependent_launch(bool on) { dependent_launch_enabled().store(on); }

}  // namespace loraops::cuda
