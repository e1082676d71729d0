// loraops_cutlass_probe (session 11 WIP, not yet run on a GPU): the ConcatKMainloop GEMM against
// a cuBLAS reference, and its time against cuBLAS's base GEMM alone (issue 4's training target:
// LoRA <= 1.05x the base GEMM). bf16, K = N = 4096, r = 16, M = 512 / 2048 / 8192. Exits 1 on a
// failed launch or a result outside tolerance.
//   usage: loraops_cutlass_probe [--no-timing]   (--no-timing: the check only, e.g. under memcheck)
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/kernels/concat_k_mainloop.cuh"

using namespace cute;

using EA = cutlass::bfloat16_t;
using TileShape = Shape<_128, _256, _64>;
using ClusterShape = Shape<_2, _1, _1>;
using Epi = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, EA, cutlass::layout::RowMajor, 8, EA,
    cutlass::layout::RowMajor, 8, cutlass::epilogue::TmaWarpSpecializedCooperative>::CollectiveOp;
using MainBase = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, EA, cutlass::layout::RowMajor, 8, EA,
    cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
using Main = loraops::cuda::fold::ConcatKMainloop<MainBase>;
using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Main, Epi>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

// y[M,N] = x[M,K] W[N,K]^T + t[M,R] B[N,R]^T (row-major, leading dims given): the GEMM set up
// (TMA descriptors encoded) once, so that timing g.run() counts the device work only.
int prepare_lora_concat_gemm(Gemm& g, const EA* x, int ldx, const EA* w, int ldw, const EA* t, int ldt, const EA* b,
                             int ldb, EA* y, int m, int n, int k, int r, void* workspace, cudaStream_t s) {
  constexpr int BK = Main::kBlkK;
  const int kk = (k + BK - 1) / BK * BK + (r + BK - 1) / BK * BK;
  using SA = typename Kernel::StrideA;
  using SB = typename Kernel::StrideB;
  SA sa{int64_t(ldx), cute::Int<1>{}, int64_t(0)}, sa2{int64_t(ldt), cute::Int<1>{}, int64_t(0)};
  SB sb{int64_t(ldw), cute::Int<1>{}, int64_t(0)}, sb2{int64_t(ldb), cute::Int<1>{}, int64_t(0)};
  auto sd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {m, n, 1});
  typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm, {m, n, kk, 1},
                                {x, sa, w, sb, t, sa2, b, sb2, k, r}, {{1.f, 0.f}, y, sd, y, sd}};
  if (g.can_implement(args) != cutlass::Status::kSuccess) return 1;
  if (Gemm::get_workspace_size(args) > (size_t(64) << 20)) return 2;
  if (g.initialize(args, workspace, s) != cutlass::Status::kSuccess) return 3;
  return 0;
}

#define CHECK(x)                                                                             \
  do {                                                                                       \
    auto e_ = (x);                                                                           \
    if (e_ != 0) {                                                                           \
      std::printf("%s:%d %s -> %d\n", __FILE__, __LINE__, #x, int(e_));                     \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

__global__ void fill(__nv_bfloat16* p, size_t n, unsigned seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed * 2246822519u;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = __float2bfloat16(lo + (hi - lo) * float(h & 0xffffff) / float(0x1000000));
  }
}

int main(int argc, char** argv) {
  const bool timing = !(argc > 1 && std::string(argv[1]) == "--no-timing");
  int failures = 0;
  const int n = 4096, k = 4096, r = 16, rp = 16;  // rp: t's and B's row stride (16-byte rows)
  cublasHandle_t h;
  CHECK(cublasCreate(&h));
  void* ws = nullptr;
  CHECK(cudaMalloc(&ws, size_t(64) << 20));
  for (int m : {512, 2048, 8192}) {
    __nv_bfloat16 *x, *w, *t, *b, *y, *yb;
    float* yref;
    CHECK(cudaMalloc(&x, size_t(m) * k * 2));
    CHECK(cudaMalloc(&w, size_t(n) * k * 2));
    CHECK(cudaMalloc(&t, size_t(m) * rp * 2));
    CHECK(cudaMalloc(&b, size_t(n) * rp * 2));
    CHECK(cudaMalloc(&y, size_t(m) * n * 2));
    CHECK(cudaMalloc(&yb, size_t(m) * n * 2));
    CHECK(cudaMalloc(&yref, size_t(m) * n * 4));
    fill<<<1024, 256>>>(x, size_t(m) * k, 1, -1.f, 1.f);
    fill<<<1024, 256>>>(w, size_t(n) * k, 2, -0.05f, 0.05f);
    fill<<<1024, 256>>>(t, size_t(m) * rp, 3, -1.f, 1.f);
    fill<<<1024, 256>>>(b, size_t(n) * rp, 4, -0.5f, 0.5f);
    CHECK(cudaMemset(y, 0xFF, size_t(m) * n * 2));
    // Reference, fp32 out: yref = x W^T + t B^T (column-major view: yref^T = W x^T + B t^T).
    const float one = 1.f, zero = 0.f;
    CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k, &zero, yref,
                       CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, r, &one, b, CUDA_R_16BF, rp, t, CUDA_R_16BF, rp, &one, yref,
                       CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    Gemm g;
    const int rc = prepare_lora_concat_gemm(g, reinterpret_cast<const EA*>(x), k, reinterpret_cast<const EA*>(w), k,
                                            reinterpret_cast<const EA*>(t), rp, reinterpret_cast<const EA*>(b), rp,
                                            reinterpret_cast<EA*>(y), m, n, k, r, ws, nullptr);
    if (rc || g.run(nullptr) != cutlass::Status::kSuccess) {
      std::printf("m=%d: the concat-K GEMM failed to set up (%d) or launch\n", m, rc);
      ++failures;
      continue;
    }
    CHECK(cudaDeviceSynchronize());
    std::vector<__nv_bfloat16> got(size_t(m) * n);
    std::vector<float> ref(size_t(m) * n);
    CHECK(cudaMemcpy(got.data(), y, got.size() * 2, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(ref.data(), yref, ref.size() * 4, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double g = __bfloat162float(got[i]), e = ref[i], d = std::fabs(g - e);
      if (!(d <= 1e-3 + 8e-3 * std::fabs(e))) ++bad;  // bf16 output rounding (2^-9) with room
      if (d > worst || std::isnan(g)) worst = std::isnan(g) ? INFINITY : d;
    }
    std::printf("m=%d: %zu of %zu outside tolerance, worst |diff| %.3g\n", m, bad, got.size(), worst);
    failures += bad != 0;
    // Timing: the fold against cuBLAS's base GEMM alone (bf16 out), 20 calls each, best of 3.
    if (timing) {
      cudaEvent_t e0, e1;
      CHECK(cudaEventCreate(&e0));
      CHECK(cudaEventCreate(&e1));
      auto time = [&](auto&& fn) {
        float best = 1e30f;
        for (int rep = 0; rep < 3; ++rep) {
          CHECK(cudaEventRecord(e0));
          for (int i = 0; i < 20; ++i) fn();
          CHECK(cudaEventRecord(e1));
          CHECK(cudaEventSynchronize(e1));
          float ms;
          CHECK(cudaEventElapsedTime(&ms, e0, e1));
          best = ms < best ? ms : best;
        }
        return best * 1e3f / 20;
      };
      const float fold = time([&] { g.run(nullptr); });
      const float base = time([&] {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k, &zero, yb,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      });
      std::printf("m=%d: fold %.1f us, cuBLAS base GEMM %.1f us, ratio %.3f (%.0f TFLOP/s base)\n", m, fold, base,
                  fold / base, 2.0 * m * n * k / base * 1e-6);
      CHECK(cudaEventDestroy(e0));
      CHECK(cudaEventDestroy(e1));
    }
    for (void* p : {(void*)x, (void*)w, (void*)t, (void*)b, (void*)y, (void*)yb, (void*)yref}) cudaFree(p);
  }
  return failures ? 1 : 0;
}
