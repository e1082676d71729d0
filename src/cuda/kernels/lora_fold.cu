// lora_forward on CUDA, custom, above the decode sizes (m > kLoraDecodeMaxM): the low-rank term
// folded into the base GEMM's K loop, y = [x | t] @ [W | B]^T + bias, one GEMM that writes y once
// (CUTLASS's sm90 TMA warp-specialized GEMM with concat_k_mainloop.cuh's producer, the bias in
// its epilogue). Before it, cuBLASLt's shrink t = scale * x @ A.T into scratch, in the input
// dtype (the one rounding the vendor path makes too: it rounds x @ A.T and scales in fp32).
// Taken for float16/bfloat16 with K and r multiples of 8 and 16-byte-aligned rows of x, W and y
// (TMA), a unit-stride bias, a nonzero term, and no x@A.T kept for the caller (xa_out: that wants
// t unscaled; the vendor path serves it). lora_b is read in place when its rows are 16-byte
// aligned, else copied.
// Built where CUTLASS's headers are (PyPI's nvidia-cutlass, scripts/setup.sh): LORAOPS_WITH_CUTLASS.
#include "cuda/kernels.hpp"

#if LORAOPS_WITH_CUTLASS
#include "cuda/common.cuh"
#include "cuda/kernels/concat_k_mainloop.cuh"
#include "cuda/kernels/strided_copy.hpp"
#include "cuda/stream_scratch.hpp"
#include "cuda/vendor/cublaslt.hpp"
#endif

namespace loraops::cuda {

#if LORAOPS_WITH_CUTLASS
namespace {

using namespace cute;

template <class E>
struct FoldGemm {
  using TileShape = cute::Shape<_128, _256, _64>;
  using ClusterShape = cute::Shape<_2, _1, _1>;
  // D = acc + bias[n] (alpha 1, beta 0: C is never read)
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBias<E, float, E, E, float>;
  using Epi = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, E, cutlass::layout::RowMajor, 8, E,
      cutlass::layout::RowMajor, 8, cutlass::epilogue::TmaWarpSpecializedCooperative, Fusion>::CollectiveOp;
  using MainBase = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, E, cutlass::layout::RowMajor, 8, E,
      cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
  using Main = fold::ConcatKMainloop<MainBase>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Main, Epi>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

bool rows16(const void* p, int64_t row_stride, int64_t es) { return aligned16(p) && (row_stride * es) % 16 == 0; }

template <class E>
void run_fold(const detail::LoraForwardParams& p, cudaStream_t stream) {
  using G = FoldGemm<E>;
  using Gemm = typename G::Gemm;
  using Kernel = typename G::Kernel;
  constexpr int64_t es = 2, kBlkK = G::Main::kBlkK;
  int64_t x_rs = 0;
  p.x.uniform(&x_rs);
  const int64_t ld_t = round_up(p.r, 8);  // 16-byte rows of t (and of a copied B)
  const bool copy_b = !(p.lora_b.cs == 1 && p.lora_b.rs >= p.r && rows16(p.lora_b.p, p.lora_b.rs, es));
  const int64_t ld_b = copy_b ? ld_t : p.lora_b.rs;
  const int64_t kk = round_up(p.k, kBlkK) + round_up(p.r, kBlkK);

  using SA = typename Kernel::StrideA;
  using SB = typename Kernel::StrideB;
  const SA sa{x_rs, cute::Int<1>{}, int64_t(0)}, sa2{ld_t, cute::Int<1>{}, int64_t(0)};
  const SB sb{p.weight.rs, cute::Int<1>{}, int64_t(0)}, sb2{ld_b, cute::Int<1>{}, int64_t(0)};
  const auto sd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {int(p.m), int(p.n), 1});
  typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                {int(p.m), int(p.n), int(kk), 1},
                                {static_cast<const E*>(p.x.p), sa, static_cast<const E*>(p.weight.p), sb, nullptr, sa2,
                                 nullptr, sb2, int(p.k), int(p.r)},
                                {{}, static_cast<E*>(p.out), sd, static_cast<E*>(p.out), sd}};
  args.epilogue.thread.alpha = 1.f;
  args.epilogue.thread.beta = 0.f;
  args.epilogue.thread.bias_ptr = static_cast<const E*>(p.bias);

  // Scratch: [t][B copy][GEMM workspace], each 256-byte aligned; held until the GEMM is enqueued.
  const int64_t t_bytes = round_up(p.m * ld_t * es, 256), b_bytes = copy_b ? round_up(p.n * ld_t * es, 256) : 0;
  const int64_t ws_bytes = round_up(int64_t(Gemm::get_workspace_size(args)), 256);
  const Scratch lease = stream_scratch(p.device_index, stream, size_t(t_bytes + b_bytes + ws_bytes), "lora_forward", "x");
  char* scratch = lease.get();
  E* t = reinterpret_cast<E*>(scratch);
  E* b = copy_b ? reinterpret_cast<E*>(scratch + t_bytes) : static_cast<E*>(const_cast<void*>(p.lora_b.p));
  void* ws = scratch + t_bytes + b_bytes;

  lt::GemmDesc shrink;  // t = scale * x @ A.T, [m, r] with rows of ld_t
  shrink.op = "lora_forward";
  shrink.dtype = p.dtype;
  shrink.m = p.m, shrink.n = p.r, shrink.k = p.k;
  shrink.a = p.x.p, shrink.a_rs = x_rs, shrink.a_cs = 1;
  shrink.b = p.lora_a.p, shrink.b_rs = p.lora_a.cs, shrink.b_cs = p.lora_a.rs;  // A.T
  shrink.d = t, shrink.ldd = ld_t;
  shrink.alpha = p.scale;
  lt::gemm(shrink, stream, p.device_index);
  if (copy_b)  // B's [n, r] into rows of ld_t (the padding is never read: TMA stops at r)
    strided_copy(es, 1, p.n, p.r, StridedMat{p.lora_b.p, 0, p.lora_b.rs, p.lora_b.cs}, b, 0, ld_t, 1, stream,
                 p.device_index);
  args.mainloop.ptr_A2 = t;
  args.mainloop.ptr_B2 = b;

  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess ||
      gemm.initialize(args, ws, stream) != cutlass::Status::kSuccess || gemm.run(stream) != cutlass::Status::kSuccess)
    throw Error(ErrorKind::Runtime, "lora_forward", "x", "the folded GEMM (CUTLASS) to launch",
                "can_implement, initialize or run failed");
  LORAOPS_CUDA_CHECK_LAUNCH("lora_forward (folded GEMM)");
}

}  // namespace

bool lora_fold_supported(const detail::LoraForwardParams& p) {
  if (p.dtype != DType::BFloat16 && p.dtype != DType::Float16) return false;
  if (p.r <= 0 || p.scale == 0.f || p.xa_out != nullptr || p.m <= 0 || p.n <= 0 || p.k <= 0) return false;
  // CUTLASS's TMA operands want the contiguous extents in whole 16-byte vectors too (its
  // can_implement; t's and B's width is r).
  if (p.k % 8 != 0 || p.r % 8 != 0) return false;
  if (p.m >= INT32_MAX || p.n >= INT32_MAX || p.k + p.r + 256 >= INT32_MAX) return false;
  int64_t x_rs = 0;
  const int64_t es = 2;
  if (!p.x.uniform(&x_rs) || p.x.col_stride != 1 || !rows16(p.x.p, x_rs, es) || x_rs < p.k) return false;
  if (p.weight.cs != 1 || !rows16(p.weight.p, p.weight.rs, es) || p.weight.rs < p.k) return false;
  if (!rows16(p.out, p.n, es)) return false;  // y: contiguous [m, n], stored by TMA
  if (p.bias && (p.bias_stride != 1 || !aligned16(p.bias))) return false;
  return true;
}

void lora_forward_fold(const detail::LoraForwardParams& p, void* stream) {
  DeviceGuard guard(p.device_index);
  if (p.dtype == DType::BFloat16) run_fold<cutlass::bfloat16_t>(p, static_cast<cudaStream_t>(stream));
  else run_fold<cutlass::half_t>(p, static_cast<cudaStream_t>(stream));
}

#else  // no CUTLASS headers in this build: the vendor composition serves every shape

bool lora_fold_supported(const detail::LoraForwardParams&) { return false; }
void lora_forward_fold(const detail::LoraForwardParams& p, void* stream) { lora_forward_vendor(p, stream); }

#endif

}  // namespace loraops::cuda
