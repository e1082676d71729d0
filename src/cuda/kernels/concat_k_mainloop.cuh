// ConcatKMainloop: a CUTLASS sm90 mainloop for y = [x | t] @ [W | B]^T, the LoRA forward's
// low-rank term folded into the base GEMM's K loop (issue 4), and for grad_x = [g | s g B] @ [W ; A]
// in the backward (issue 5). Headers from PyPI's nvidia-cutlass (build/deps/cutlass, never copied).
#pragma once
// The kernels wait for the grid before them (griddepcontrol.wait) in their load warps, before any
// global read, and let the grid after them launch from their last tile: a launch with
// programmatic stream serialization (FoldGemm::run) then overlaps the GEMM's prologue with the
// previous kernel's tail. Without that launch attribute the instructions are no-ops.
#ifndef CUTLASS_ENABLE_GDC_FOR_SM90
#define CUTLASS_ENABLE_GDC_FOR_SM90 1
#endif
#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/util/packed_stride.hpp"

namespace loraops::cuda::fold {

using namespace cute;  // inside this namespace only: the class below is written in CuTe's terms

// A CUTLASS sm90 TMA warp-specialized mainloop whose K dimension is two operand pairs end to end:
// k tiles [0, k1_tiles) come from (A, B) over K1 columns, the rest from (A2, B2) over K2 columns.
// Each part's last tile is zero-filled past its width by TMA, so the problem's K is
// round_up(K1, BLK_K) + round_up(K2, BLK_K). Only the producer (load) differs from the base.
template <class Base>
struct ConcatKMainloop : Base {
  using typename Base::ElementA;
  using typename Base::ElementB;
  using typename Base::StrideA;
  using typename Base::StrideB;
  using typename Base::TileShape;
  using typename Base::MainloopPipeline;
  using typename Base::PipelineState;
  using typename Base::TensorStorage;
  using typename Base::InternalElementA;
  using typename Base::InternalElementB;
  using typename Base::SmemLayoutA;
  using typename Base::SmemLayoutB;
  using typename Base::GmemTiledCopyA;
  using typename Base::GmemTiledCopyB;
  using typename Base::DispatchPolicy;
  static constexpr int kBlkK = size<2>(TileShape{});

  struct Arguments {
    ElementA const* ptr_A;
    StrideA dA;
    ElementB const* ptr_B;
    StrideB dB;
    ElementA const* ptr_A2;
    StrideA dA2;
    ElementB const* ptr_B2;
    StrideB dB2;
    int k1, k2;  // the two parts' widths
    uint32_t mma_promotion_interval = 4;
  };

  struct Params : Base::Params {
    typename Base::Params::TMA_A tma_load_a2;
    typename Base::Params::TMA_B tma_load_b2;
    int k1, k2, k1_tiles;
  };

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& problem_shape, Arguments const& args, void*) {
    auto [M, N, K, L] = append<4>(problem_shape, 1);
    (void)K;
    auto tma_a = [&](ElementA const* p, StrideA s, int k) {
      return make_tma_copy_A_sm90(GmemTiledCopyA{},
                                  make_tensor(reinterpret_cast<InternalElementA const*>(p), make_layout(make_shape(M, k, L), s)),
                                  SmemLayoutA{}(_, _, cute::Int<0>{}), TileShape{}, typename DispatchPolicy::ClusterShape{});
    };
    auto tma_b = [&](ElementB const* p, StrideB s, int k) {
      return make_tma_copy_B_sm90(GmemTiledCopyB{},
                                  make_tensor(reinterpret_cast<InternalElementB const*>(p), make_layout(make_shape(N, k, L), s)),
                                  SmemLayoutB{}(_, _, cute::Int<0>{}), TileShape{}, typename DispatchPolicy::ClusterShape{});
    };
    Params p;
    p.tma_load_a = tma_a(args.ptr_A, args.dA, args.k1);
    p.tma_load_b = tma_b(args.ptr_B, args.dB, args.k1);
    p.tma_transaction_bytes = Base::TmaTransactionBytes;
    p.tma_transaction_bytes_mk = Base::TmaTransactionBytesMK;
    p.tma_transaction_bytes_nk = Base::TmaTransactionBytesNK;
    p.tma_load_a2 = tma_a(args.ptr_A2, args.dA2, args.k2);
    p.tma_load_b2 = tma_b(args.ptr_B2, args.dB2, args.k2);
    p.k1 = args.k1;
    p.k2 = args.k2;
    p.k1_tiles = (args.k1 + kBlkK - 1) / kBlkK;
    return p;
  }

  template <class ProblemShape>
  static bool can_implement(ProblemShape const& problem_shape, Arguments const& args) {
    auto [M, N, K, L] = append<4>(problem_shape, 1);
    const int tiles = (args.k1 + kBlkK - 1) / kBlkK + (args.k2 + kBlkK - 1) / kBlkK;
    constexpr int al_a = 128 / cutlass::sizeof_bits<ElementA>::value, al_b = 128 / cutlass::sizeof_bits<ElementB>::value;
    using cutlass::detail::check_alignment;
    return K == tiles * kBlkK && check_alignment<al_a>(make_shape(M, args.k1, L), args.dA) &&
           check_alignment<al_b>(make_shape(N, args.k1, L), args.dB) &&
           check_alignment<al_a>(make_shape(M, args.k2, L), args.dA2) &&
           check_alignment<al_b>(make_shape(N, args.k2, L), args.dB2);
  }

  CUTLASS_DEVICE static void prefetch_tma_descriptors(Params const& p) {
    Base::prefetch_tma_descriptors(p);
    cute::prefetch_tma_descriptor(p.tma_load_a2.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_load_b2.get_tma_descriptor());
  }

  // (gA, gB) over the whole concatenated K (the kernel takes its k-tile count from them), then each
  // part's own tiled tensors.
  template <class ProblemShape_MNKL>
  CUTLASS_DEVICE auto load_init(ProblemShape_MNKL const& problem_shape_MNKL, Params const& p) const {
    using X = Underscore;
    auto [M, N, K, L] = problem_shape_MNKL;
    auto tile_a = [&](auto const& tma, int k) {
      return local_tile(tma.get_tma_tensor(make_shape(M, k, L)), TileShape{}, make_coord(_, _, _), Step<_1, X, _1>{});
    };
    auto tile_b = [&](auto const& tma, int k) {
      return local_tile(tma.get_tma_tensor(make_shape(N, k, L)), TileShape{}, make_coord(_, _, _), Step<X, _1, _1>{});
    };
    return cute::make_tuple(tile_a(p.tma_load_a, K), tile_b(p.tma_load_b, K), tile_a(p.tma_load_a, p.k1),
                            tile_b(p.tma_load_b, p.k1), tile_a(p.tma_load_a2, p.k2), tile_b(p.tma_load_b2, p.k2));
  }

  template <class LoadInputs, class KTileIterator, class BlockCoord>
  CUTLASS_DEVICE void load(Params const& p, MainloopPipeline pipeline, PipelineState smem_pipe_write,
                           LoadInputs const& load_inputs, BlockCoord const& blk_coord, KTileIterator k_tile_iter,
                           int k_tile_count, int, uint32_t block_rank_in_cluster, TensorStorage& shared_tensors) {
    if (!cute::elect_one_sync()) return;
    auto sA = make_tensor(make_smem_ptr(shared_tensors.smem_A.data()), SmemLayoutA{});
    auto sB = make_tensor(make_smem_ptr(shared_tensors.smem_B.data()), SmemLayoutB{});
    using ClusterShape = typename DispatchPolicy::ClusterShape;
    constexpr uint32_t cluster_x = get<0>(ClusterShape{});
    const uint2 cid = {block_rank_in_cluster % cluster_x, block_rank_in_cluster / cluster_x};
    auto [m_coord, n_coord, k_coord, l_coord] = blk_coord;
    (void)k_coord;
    // Each part: its TMA slice for this block, source (gmem) and destination (smem) partitions.
    auto part = [&](auto const& tma_a, auto const& tma_b, auto const& gA_mkl, auto const& gB_nkl) {
      auto ba = tma_a.get_slice(cid.y);
      auto bb = tma_b.get_slice(cid.x);
      return cute::make_tuple(ba.partition_S(gA_mkl(_, _, m_coord, _, l_coord)), ba.partition_D(sA),
                              bb.partition_S(gB_nkl(_, _, n_coord, _, l_coord)), bb.partition_D(sB));
    };
    auto p1 = part(p.tma_load_a, p.tma_load_b, get<2>(load_inputs), get<3>(load_inputs));
    auto p2 = part(p.tma_load_a2, p.tma_load_b2, get<4>(load_inputs), get<5>(load_inputs));
    uint16_t mcast_a = 0, mcast_b = 0;
    if constexpr (cute::is_same_v<GmemTiledCopyA, SM90_TMA_LOAD_MULTICAST>) {
      auto layout = Layout<ClusterShape>{};
      for (int n = 0; n < size<1>(layout); ++n) mcast_a |= uint16_t(1) << layout(cid.x, n, Int<0>{});
    }
    if constexpr (cute::is_same_v<GmemTiledCopyB, SM90_TMA_LOAD_MULTICAST>) {
      auto layout = Layout<ClusterShape>{};
      for (int m = 0; m < size<0>(layout); ++m) mcast_b |= uint16_t(1) << layout(m, cid.y, Int<0>{});
    }
    CUTLASS_PRAGMA_NO_UNROLL
    for (; k_tile_count > 0; --k_tile_count, ++k_tile_iter, ++smem_pipe_write) {
      pipeline.producer_acquire(smem_pipe_write);
      auto* bar = pipeline.producer_get_barrier(smem_pipe_write);
      const int stage = smem_pipe_write.index();
      const int k = *k_tile_iter;
      if (k < p.k1_tiles) {
        copy(p.tma_load_a.with(*bar, mcast_a), get<0>(p1)(_, _, _, k), get<1>(p1)(_, _, _, stage));
        copy(p.tma_load_b.with(*bar, mcast_b), get<2>(p1)(_, _, _, k), get<3>(p1)(_, _, _, stage));
      } else {
        copy(p.tma_load_a2.with(*bar, mcast_a), get<0>(p2)(_, _, _, k - p.k1_tiles), get<1>(p2)(_, _, _, stage));
        copy(p.tma_load_b2.with(*bar, mcast_b), get<2>(p2)(_, _, _, k - p.k1_tiles), get<3>(p2)(_, _, _, stage));
      }
    }
  }
};

}  // namespace loraops::cuda::fold
