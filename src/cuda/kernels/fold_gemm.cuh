// The folded GEMM's CUTLASS kernels (fold_gemm.hpp says what it computes): CUTLASS 4.2's sm90 TMA
// warp-specialized GEMM (cooperative, or pingpong) with ConcatKMainloop's producer, the bias as a
// per-column epilogue (a null bias adds nothing). Included by fold_gemm_{fwd,bwd}_{bf16,fp16}.cu
// only: each instantiation costs ~70-90 s of nvcc here.
#pragma once

#include "cuda/common.cuh"
#include "cuda/kernels/concat_k_mainloop.cuh"
#include "cuda/kernels/fold_gemm.hpp"

// FoldGemm::run launches every kernel as a programmatic dependent: safe only with CUTLASS's
// grid-dependency waits compiled in (concat_k_mainloop.cuh defines CUTLASS_ENABLE_GDC_FOR_SM90,
// which takes effect only before the first CUTLASS header of the translation unit).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL) && !defined(CUTLASS_GDC_ENABLED)
#error "the folded GEMM's kernels would launch early without waiting for the grid before them"
#endif

namespace loraops::cuda::fold {

// Tile (M x N x K), cluster, and B's layout: ColumnMajor is K-major (B as [n, k] rows), RowMajor
// N-major (B as [k, n] rows); the kernel's and the epilogue's schedules (cooperative: both
// consumer warpgroups on one tile; pingpong: each on a tile of its own, one's epilogue under the
// other's mainloop).
template <class E, class Tile, class Cluster, class LayoutB,
          class KernelSchedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative,
          class EpilogueSchedule = cutlass::epilogue::TmaWarpSpecializedCooperative>
struct FoldGemm {
  // D = acc + bias[n] (alpha 1, beta 0: C is never read)
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBias<E, float, E, E, float>;
  using Epi = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster, cutlass::epilogue::collective::EpilogueTileAuto,
      float, float, E, cutlass::layout::RowMajor, 8, E, cutlass::layout::RowMajor, 8,
      EpilogueSchedule, Fusion>::CollectiveOp;
  using MainBase = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, E, cutlass::layout::RowMajor, 8, E, LayoutB, 8, float, Tile,
      Cluster, cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
      KernelSchedule>::CollectiveOp;
  using Main = ConcatKMainloop<MainBase>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Main, Epi>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  static constexpr bool kKMajorB = cute::is_same_v<LayoutB, cutlass::layout::ColumnMajor>;

  static typename Gemm::Arguments arguments(const FoldGemmArgs& a) {
    using SA = typename Kernel::StrideA;
    using SB = typename Kernel::StrideB;
    constexpr int64_t blk_k = Main::kBlkK;
    const SA sa{a.lda, cute::Int<1>{}, int64_t(0)}, sa2{a.lda2, cute::Int<1>{}, int64_t(0)};
    SB sb, sb2;
    if constexpr (kKMajorB) {
      sb = SB{a.ldb, cute::Int<1>{}, int64_t(0)}, sb2 = SB{a.ldb2, cute::Int<1>{}, int64_t(0)};
    } else {
      sb = SB{cute::Int<1>{}, a.ldb, int64_t(0)}, sb2 = SB{cute::Int<1>{}, a.ldb2, int64_t(0)};
    }
    const int kk = int(round_up(a.k1, blk_k) + round_up(a.k2, blk_k));
    const auto sd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {int(a.m), int(a.n), 1});
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {int(a.m), int(a.n), kk, 1},
                                  {static_cast<const E*>(a.a), sa, static_cast<const E*>(a.b), sb,
                                   static_cast<const E*>(a.a2), sa2, static_cast<const E*>(a.b2), sb2, int(a.k1),
                                   int(a.k2)},
                                  {{}, static_cast<E*>(a.d), sd, static_cast<E*>(a.d), sd}};
    args.epilogue.thread.alpha = 1.f;
    args.epilogue.thread.beta = 0.f;
    args.epilogue.thread.bias_ptr = static_cast<const E*>(a.bias);
    args.hw_info.device_id = a.device;
    args.hw_info.sm_count = a.sm_count;
    return args;
  }

  static size_t workspace(const FoldGemmArgs& a) { return Gemm::get_workspace_size(arguments(a)); }

  static void run(const FoldGemmArgs& a, void* ws, cudaStream_t stream) {
    const auto args = arguments(a);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess ||
        gemm.initialize(args, ws, stream) != cutlass::Status::kSuccess ||
        gemm.run(stream, nullptr, /*launch_with_pdl=*/true) != cutlass::Status::kSuccess)
      throw Error(ErrorKind::Runtime, "lora", "x", "the folded GEMM (CUTLASS) to launch",
                  "can_implement, initialize or run failed");
    LORAOPS_CUDA_CHECK_LAUNCH("lora (folded GEMM)");
  }
};

// The forward's (K-major B) kernels: the 128x128 cooperative tile for small m, and the pingpong
// kernel (128x128 tiles a warpgroup, a cluster of 2 along m); the backward's (N-major B): the
// pingpong kernel.
template <class E>
using NarrowK = FoldGemm<E, cute::Shape<cute::_128, cute::_128, cute::_64>, cute::Shape<cute::_1, cute::_1, cute::_1>,
                         cutlass::layout::ColumnMajor>;
template <class E, class LayoutB>
using Ping = FoldGemm<E, cute::Shape<cute::_128, cute::_128, cute::_64>, cute::Shape<cute::_2, cute::_1, cute::_1>,
                      LayoutB, cutlass::gemm::KernelTmaWarpSpecializedPingpong, cutlass::epilogue::TmaWarpSpecialized>;
template <class E>
using PingK = Ping<E, cutlass::layout::ColumnMajor>;
template <class E>
using PingN = Ping<E, cutlass::layout::RowMajor>;

// tile: Narrow or Pingpong (fold_gemm.cpp resolved Auto).
template <class E>
size_t forward_workspace(const FoldGemmArgs& a, FoldTile tile) {
  return tile == FoldTile::Narrow ? NarrowK<E>::workspace(a) : PingK<E>::workspace(a);
}

template <class E>
void forward_run(const FoldGemmArgs& a, FoldTile tile, void* ws, cudaStream_t stream) {
  if (tile == FoldTile::Narrow) NarrowK<E>::run(a, ws, stream);
  else PingK<E>::run(a, ws, stream);
}

}  // namespace loraops::cuda::fold
