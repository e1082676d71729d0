// The CUDA activation kernel against the CPU reference: every kind and dtype, contiguous and
// strided, awkward sizes, misaligned pointers, the caller's stream and CUDA-graph capture.
#include <cmath>
#include <vector>

#include "gpu_util.hpp"

namespace loraops::test {
namespace {

constexpr Activation kKinds[] = {Activation::Relu, Activation::Sigmoid,  Activation::Tanh,
                                 Activation::Gelu, Activation::GeluTanh, Activation::Silu};

// Tolerance: fp32 math with fast exp on the GPU; halves are one rounding of the fp32 result.
double tol(DType t) { return t == DType::Float32 ? 2e-6 : eps_of(t); }

void check_against_reference(HostTensor& x, const Tensor& xdev, Activation kind, cudaStream_t s) {
  HostTensor ref(x.dtype, x.shape), got(x.dtype, x.shape);
  activation(x.view(), kind, ref.view(), {.impl = Impl::Reference});
  DeviceTensor out(got);
  out.poison();
  activation(xdev, kind, out.view(), {.impl = Impl::Custom, .stream = s});
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  out.to_host();
  EXPECT_TRUE(all_close(got, ref, tol(x.dtype), tol(x.dtype))) << activation_name(kind) << " "
                                                              << dtype_name(x.dtype);
}

TEST(CudaActivation, EveryKindDtypeAndAwkwardSize) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes)
    for (int64_t n : {1, 7, 31, 33, 1023, 2049, 4099, 1 << 20}) {
      HostTensor x = random_tensor(t, {n}, -6.f, 6.f);
      DeviceTensor dx(x);
      for (Activation k : kKinds) check_against_reference(x, dx.view(), k, nullptr);
    }
}

TEST(CudaActivation, SpecialValues) {
  LORAOPS_REQUIRE_GPU();
  const float vals[] = {0.f, -0.f, INFINITY, -INFINITY, NAN, 1000.f, -1000.f, 1e-30f, 20.f, -20.f};
  for (DType t : kAllDTypes) {
    HostTensor x(t, {int64_t(std::size(vals))});
    for (size_t i = 0; i < std::size(vals); ++i) x.set(int64_t(i), vals[i]);
    DeviceTensor dx(x);
    for (Activation k : kKinds) check_against_reference(x, dx.view(), k, nullptr);
  }
}

TEST(CudaActivation, StridedAndMisalignedViews) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes) {
    HostTensor base = random_tensor(t, {33, 70}, -4.f, 4.f);
    DeviceTensor db(base);
    // A column slice (row stride 70, 33x65) starting one element in: misaligned for vectors.
    Tensor slice = db.view();
    slice.shape = {33, 65};
    slice.data = static_cast<char*>(db.ptr) + dtype_size(t);
    HostTensor xs(t, {33, 65});
    for (int64_t i = 0; i < 33; ++i)
      for (int64_t j = 0; j < 65; ++j) xs.set(i * 65 + j, base.get(i * 70 + j + 1));
    for (Activation k : kKinds) check_against_reference(xs, slice, k, nullptr);
    // The transpose of the whole tensor.
    Tensor tr = db.view().transposed(0, 1);
    HostTensor xt(t, {70, 33});
    for (int64_t i = 0; i < 70; ++i)
      for (int64_t j = 0; j < 33; ++j) xt.set(i * 33 + j, base.get(j * 70 + i));
    for (Activation k : kKinds) check_against_reference(xt, tr, k, nullptr);
  }
}

TEST(CudaActivation, RunsOnTheCallersStreamAndUnderGraphCapture) {
  LORAOPS_REQUIRE_GPU();
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  HostTensor x = random_tensor(DType::Float32, {4, 16, 1024}, -3.f, 3.f);
  DeviceTensor dx(x);
  check_against_reference(x, dx.view(), Activation::Silu, s);

  HostTensor ref(x.dtype, x.shape), got(x.dtype, x.shape);
  activation(x.view(), Activation::Gelu, ref.view(), {.impl = Impl::Reference});
  DeviceTensor out(got);
  out.poison();
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  activation(dx.view(), Activation::Gelu, out.view(), {.impl = Impl::Custom, .stream = s});
  CUDA_OK(cudaStreamEndCapture(s, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaGraphLaunch(exec, s));
  CUDA_OK(cudaStreamSynchronize(s));
  out.to_host();
  EXPECT_TRUE(all_close(got, ref, tol(x.dtype), tol(x.dtype)));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

TEST(CudaActivation, OtherOpsAndImplsAreRegisteredAbsences) {
  LORAOPS_REQUIRE_GPU();
  HostTensor x = random_tensor(DType::Float32, {8});
  DeviceTensor dx(x);
  HostTensor o(DType::Float32, {8});
  DeviceTensor dout(o);
  // vendor softmax: cuDNN's graph API has none (vendor activation is cuDNN's where the build has
  // it: test_cuda_rows_vendor.cpp)
  try {
    softmax(dx.view(), -1, dout.view(), {.impl = Impl::Vendor});
    FAIL() << "vendor softmax on CUDA should not exist";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
    EXPECT_EQ(e.argument(), "impl");
  }
  HostTensor m(DType::Float32, {2, 4});
  DeviceTensor dm(m), dmo(m);
  Tensor mo = dmo.view();
  mo.shape = {2, 2};
  mo.strides = {2, 1};
  EXPECT_THROW(matmul(dm.view(), dm.view(), {.trans_b = true}, mo, {.impl = Impl::Custom}), Error);
}

}  // namespace
}  // namespace loraops::test
