// The CUDA vendor row ops (cuDNN's graph API: rms_norm, layer_norm, the six activations) against
// the CPU reference, where the build has them: every dtype; the seed shape [4,16,1024] and
// 1024x4096, which cuDNN must take; awkward shapes (1x1, 3x31, 33x65, 7x4099), which it may refuse
// with its reason; weight and bias present and absent; eps (in the plan's key), a row stride other
// than the row length, an activation in place; the caller's stream and CUDA-graph capture; and
// the refusals loraops makes itself (misaligned, strided columns, a norm in place, uneven rows, a
// strided weight, in place with other row strides, softmax).
// Outputs are poisoned (NaN) before each call.
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "gpu_util.hpp"

namespace loraops::test {
namespace {

enum class Op { RmsNorm, LayerNorm, Activation };

struct Call {
  Op op;
  bool weight = false, bias = false;
  Activation kind = Activation::Relu;
};

std::string name_of(const Call& c) {
  if (c.op == Op::Activation) return activation_name(c.kind);
  return std::string(c.op == Op::RmsNorm ? "rms_norm" : "layer_norm") + (c.weight ? " weight" : "") +
         (c.bias ? " bias" : "");
}

std::vector<Call> all_calls() {
  std::vector<Call> calls = {{Op::RmsNorm, true}, {Op::RmsNorm, false}, {Op::LayerNorm, true, true},
                             {Op::LayerNorm, true, false}, {Op::LayerNorm, false, false}};
  for (Activation k : {Activation::Relu, Activation::Sigmoid, Activation::Tanh, Activation::Gelu,
                       Activation::GeluTanh, Activation::Silu})
    calls.push_back({Op::Activation, false, false, k});
  return calls;
}

void run(const Call& c, const Tensor& x, const Tensor* w, const Tensor* b, const Tensor& out, const Exec& ex) {
  switch (c.op) {
    case Op::RmsNorm: return rms_norm(x, c.weight ? w : nullptr, 1e-5, out, ex);
    case Op::LayerNorm: return layer_norm(x, c.weight ? w : nullptr, c.bias ? b : nullptr, 1e-5, out, ex);
    case Op::Activation: return activation(x, c.kind, out, ex);
  }
}

// cuDNN's math is fp32 (its own order of sums, perhaps approximate exp, tanh and rsqrt): fp32
// norms within 1e-4 relative, activations 1e-3 (tanh.approx is ~5e-4; the first H200 run,
// 2026-11-29, passed at these bounds; measuring cuDNN's actual errors to tighten them is still to
// do); halves one rounding of that, two ulps.
::testing::AssertionResult close(const HostTensor& got, const HostTensor& ref, bool activation) {
  if (got.dtype == DType::Float32) return all_close(got, ref, 1e-5, activation ? 1e-3 : 1e-4);
  return all_close(got, ref, 2 * eps_of(got.dtype), 2 * eps_of(got.dtype));
}

bool have_vendor() { return has_impl("rms_norm", DeviceType::CUDA, Impl::Vendor, DType::Float32); }

// Runs c on x (host copy and device copy) with vendor and the reference. Returns "" when it ran
// and matched, else the refusal's message (a mismatch is a test failure).
std::string check(const Call& c, DType t, std::vector<int64_t> shape, cudaStream_t s = nullptr) {
  const int64_t cols = shape.back();
  HostTensor x = random_tensor(t, shape, c.op == Op::LayerNorm ? 1.f : -3.f, 3.f);
  HostTensor w = random_tensor(t, {cols}, 0.5f, 1.5f), b = random_tensor(t, {cols}, -0.5f, 0.5f);
  DeviceTensor dx(x), dw(w), db(b);
  HostTensor ref(t, shape), got(t, shape);
  const Tensor wv = w.view(), bv = b.view(), dwv = dw.view(), dbv = db.view();
  run(c, x.view(), &wv, &bv, ref.view(), {.impl = Impl::Reference});
  DeviceTensor out(got);
  out.poison();
  // the pageable uploads and the poison (legacy stream) before the call on s (non-blocking)
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  try {
    run(c, dx.view(), &dwv, &dbv, out.view(), {.impl = Impl::Vendor, .stream = s});
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
    return e.what();
  }
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  out.to_host();
  EXPECT_TRUE(close(got, ref, c.op == Op::Activation)) << name_of(c) << " " << dtype_name(t);
  return "";
}

TEST(CudaRowsVendor, MatchTheReferenceOrRefuseSayingWhy) {
  LORAOPS_REQUIRE_GPU();
  if (!have_vendor()) GTEST_SKIP() << "this build has no cuDNN vendor row ops";
  const std::vector<std::vector<int64_t>> must_run = {{4, 16, 1024}, {1024, 4096}};
  const std::vector<std::vector<int64_t>> may_refuse = {{1, 1}, {3, 31}, {33, 65}, {7, 4099}};
  for (DType t : kAllDTypes)
    for (const Call& c : all_calls()) {
      SCOPED_TRACE(name_of(c) + " " + dtype_name(t));
      for (const auto& shape : must_run) {
        const std::string why = check(c, t, shape);
        EXPECT_EQ(why, "") << "cuDNN must take the shape " << shape.front() << "x" << shape.back();
        if (!why.empty()) return;  // one report, not one per shape (a load failure, say)
      }
      for (const auto& shape : may_refuse) {
        const std::string why = check(c, t, shape);
        if (why.empty()) continue;
        EXPECT_NE(why.find("cuDNN refused"), std::string::npos) << why;
        std::printf("[ vendor refused ] %s %s %lldx%lld: %s\n", name_of(c).c_str(), dtype_name(t),
                    (long long)shape.front(), (long long)shape.back(), why.c_str());
      }
    }
}

TEST(CudaRowsVendor, RunsOnTheCallersStreamAndUnderGraphCapture) {
  LORAOPS_REQUIRE_GPU();
  if (!have_vendor()) GTEST_SKIP() << "this build has no cuDNN vendor row ops";
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (const Call& c : {Call{Op::RmsNorm, true}, Call{Op::Activation, false, false, Activation::Silu}}) {
    SCOPED_TRACE(name_of(c));
    EXPECT_EQ(check(c, DType::BFloat16, {4, 16, 1024}, s), "");  // on s; builds the plan
    HostTensor x = random_tensor(DType::BFloat16, {4, 16, 1024}, -3.f, 3.f);
    HostTensor w = random_tensor(DType::BFloat16, {1024}, 0.5f, 1.5f);
    DeviceTensor dx(x), dw(w);
    HostTensor ref(x.dtype, x.shape), got(x.dtype, x.shape);
    const Tensor wv = w.view(), dwv = dw.view();
    run(c, x.view(), &wv, nullptr, ref.view(), {.impl = Impl::Reference});
    DeviceTensor out(got);
    out.poison();
    CUDA_OK(cudaDeviceSynchronize());
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    run(c, dx.view(), &dwv, nullptr, out.view(), {.impl = Impl::Vendor, .stream = s});
    CUDA_OK(cudaStreamEndCapture(s, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphLaunch(exec, s));
    CUDA_OK(cudaStreamSynchronize(s));
    out.to_host();
    EXPECT_TRUE(close(got, ref, c.op == Op::Activation));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(s);
}

// What loraops refuses before cuDNN sees it, and softmax, which cuDNN's graph API lacks.
TEST(CudaRowsVendor, RefusalsSayWhy) {
  LORAOPS_REQUIRE_GPU();
  HostTensor x = random_tensor(DType::Float32, {8, 64}), o63(DType::Float32, {8, 63});
  DeviceTensor dx(x), dout(x), dout63(o63);
  auto refuses = [](const std::function<void()>& f, const std::string& words) {
    try {
      f();
      ADD_FAILURE() << "ran; expected a refusal saying '" << words << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  const Exec vendor{.impl = Impl::Vendor};
  refuses([&] { softmax(dx.view(), -1, dout.view(), vendor); }, "no softmax");
  if (!have_vendor()) return;
  // (out contiguous, as the core requires: the bad operand is x)
  Tensor mis = dx.view();
  mis.shape = {8, 63};
  mis.data = static_cast<float*>(dx.ptr) + 1;
  refuses([&] { activation(mis, Activation::Relu, dout63.view(), vendor); }, "16-byte");
  Tensor out_t = dout.view();  // [64, 8] contiguous, for x transposed
  out_t.shape = {64, 8};
  out_t.strides = {8, 1};
  refuses([&] { activation(dx.view().transposed(0, 1), Activation::Relu, out_t, vendor); }, "column stride");
  refuses([&] { rms_norm(dx.view(), nullptr, 1e-6, dx.view(), vendor); }, "in place");
  HostTensor bias = random_tensor(DType::Float32, {64});
  DeviceTensor dbias(bias);
  const Tensor bv = dbias.view();
  refuses([&] { layer_norm(dx.view(), nullptr, &bv, 1e-5, dout.view(), vendor); }, "bias without a weight");
  Tensor w2 = dx.view();  // 64 weights two floats apart
  w2.ndim = 1;
  w2.shape = {64};
  w2.strides = {2};
  refuses([&] { rms_norm(dx.view(), &w2, 1e-6, dout.view(), vendor); }, "weight or bias stride");
  Tensor gappy = dx.view();  // [2, 3, 64] with a gap after every 3 rows: not one row stride
  gappy.ndim = 3;
  gappy.shape = {2, 3, 64};
  gappy.strides = {256, 64, 1};
  Tensor out3 = dout.view();
  out3.ndim = 3;
  out3.shape = {2, 3, 64};
  out3.strides = {192, 64, 1};
  refuses([&] { activation(gappy, Activation::Relu, out3, vendor); }, "not evenly spaced");
  Tensor every_other = dx.view();  // rows 0, 2, 4, 6, written back packed at the same address
  every_other.shape = {4, 64};
  every_other.strides = {128, 1};
  Tensor packed = dx.view();
  packed.shape = {4, 64};
  packed.strides = {64, 1};
  refuses([&] { activation(every_other, Activation::Relu, packed, vendor); }, "different row strides");
}

// eps reaches cuDNN and is part of the plan's key: rows of variance ~1e-3 normalised with eps
// 1e-5, then 0.5 (which then dominates the denominator), on the same shape. A row stride other
// than the row length (a column slice of a wider buffer). An activation in place.
TEST(CudaRowsVendor, EpsRowStridesAndInPlace) {
  LORAOPS_REQUIRE_GPU();
  if (!have_vendor()) GTEST_SKIP() << "this build has no cuDNN vendor row ops";
  const Exec vendor{.impl = Impl::Vendor}, reference{.impl = Impl::Reference};
  for (DType t : kAllDTypes) {
    SCOPED_TRACE(dtype_name(t));
    HostTensor x = random_tensor(t, {8, 128}, -0.05f, 0.05f), w = random_tensor(t, {64}, 0.5f, 1.5f);
    DeviceTensor dx(x), dw(w);
    const Tensor wv = w.view(), dwv = dw.view();
    for (bool strided : {false, true})  // [8, 64] of the [8, 128] buffer, packed or every row's half
      for (bool layer : {false, true})
        for (double eps : {1e-5, 0.5}) {
          SCOPED_TRACE(std::string(layer ? "layer_norm" : "rms_norm") + " eps " + std::to_string(eps) +
                       (strided ? " row stride 128" : ""));
          Tensor hx = x.view(), dxv = dx.view();
          hx.shape = dxv.shape = {8, 64};
          if (!strided) hx.strides = dxv.strides = {64, 1};
          HostTensor ref(t, {8, 64}), got(t, {8, 64});
          DeviceTensor out(got);
          out.poison();
          CUDA_OK(cudaDeviceSynchronize());
          try {
            if (layer) {
              layer_norm(hx, &wv, nullptr, eps, ref.view(), reference);
              layer_norm(dxv, &dwv, nullptr, eps, out.view(), vendor);
            } else {
              rms_norm(hx, &wv, eps, ref.view(), reference);
              rms_norm(dxv, &dwv, eps, out.view(), vendor);
            }
          } catch (const Error& e) {  // cuDNN may refuse strided rows (a correct answer): say so
            const std::string why = e.what();
            if (strided && e.kind() == ErrorKind::Unsupported && why.find("cuDNN refused") != std::string::npos)
              std::printf("[ vendor refused ] %s\n", why.c_str());
            else
              ADD_FAILURE() << why;
            continue;
          }
          CUDA_OK(cudaDeviceSynchronize());
          out.to_host();
          EXPECT_TRUE(close(got, ref, false));
        }
    // silu in place over the whole [8, 128] buffer
    HostTensor ref(t, {8, 128});
    activation(x.view(), Activation::Silu, ref.view(), reference);
    try {
      activation(dx.view(), Activation::Silu, dx.view(), vendor);
    } catch (const Error& e) {
      ADD_FAILURE() << e.what();
      continue;
    }
    CUDA_OK(cudaDeviceSynchronize());
    dx.to_host();  // the result, into x's host copy
    EXPECT_TRUE(close(x, ref, true));
  }
}

}  // namespace
}  // namespace loraops::test
