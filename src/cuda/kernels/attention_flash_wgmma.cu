// attention_flash_wgmma: the flash forward on Hopper's warpgroup MMAs (float16/bfloat16, D = 64 or
// 128, the operands attention_flash_eligible admits). The math is the mma.sync kernel's
// (attention.cu): an online softmax in base 2 with a lazy rescale, probabilities rounded to the
// input dtype for P V, fp32 sums, causal bottom-right, zeros for a row that sees no key.
//
// A block is two warpgroups (256 threads) over 128 query rows of one (head, batch), 64 rows each.
// Keys go in tiles of 128: S = Q K^T is one m64n128k16 MMA per 16 columns of D with both
// operands in shared memory; the scores become P in registers (the accumulator layout is the A
// operand's), and O += P V is one m64nDk16 MMA per 16 keys with P from registers and V from
// shared memory read transposed. The MMAs read shared memory themselves: no ldmatrix, and a
// warp's issue slots go to the softmax. Q, K and V sit in 128-byte-swizzled tiles ([D/64][rows][64],
// wgmma.cuh); K and V are double-buffered, copied by cp.async a step ahead of their use, each
// step behind one block barrier. Taken at D = 128 where Sq > 64 (flash_kernel_for); D = 64 is
// correct, not fast (one block an SM: on short key runs nothing overlaps a block's loads and
// first scores). At D = 128 it holds 255 registers with no spill and no slack: check -Xptxas -v
// after any change that adds state.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/kernels/attention_tiles.cuh"
#include "cuda/wgmma.cuh"

namespace loraops::cuda::attn {

namespace {

constexpr int kThreads = 256;  // two warpgroups
constexpr int kBM = 128;       // query rows per block, 64 per warpgroup
constexpr int kWBN = 128;      // keys per K/V tile

// Shared memory: Q, two K tiles, two V tiles, and 1024 bytes to align the first to 1024 (the
// swizzle atoms are addressed absolutely). Every operand the MMAs read then starts on a 1024-byte
// atom (a warpgroup's Q rows, the column blocks, the stages, V's 16-key steps) or 32 j bytes into
// one (the k-steps of Q and K), as the descriptors' zero base offset asks.
static_assert((64 * 128) % 1024 == 0 && (kBM * 128) % 1024 == 0 && (kWBN * 128) % 1024 == 0 &&
                  (16 * 128) % 1024 == 0,
              "operand tiles on 1024-byte swizzle atoms");
template <int D>
constexpr size_t wgmma_smem_bytes() {
  return size_t(kBM + 4 * kWBN) * D * 2 + 1024;
}

// Rows [0, ROWS) of a [rows][D] matrix at g (row stride rs elements) into a swizzled [D/64][ROWS][64]
// tile by the block's threads, rows at or past rows_left zero-filled. A thread copies one 16-byte
// chunk column c of rows r0, r0 + P, ... (P = 256 / (D / 8), a multiple of 8: the swizzle of its
// chunk is the same in every row it copies).
template <class T, int D, int ROWS>
__device__ __forceinline__ void load_sw128_tile(T* tile, const T* g, int64_t rs, int64_t rows_left) {
  constexpr int kChunks = D / 8, kPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && kPass % 8 == 0 && ROWS % kPass == 0, "whole passes");
  const int c = int(threadIdx.x) % kChunks, r0 = int(threadIdx.x) / kChunks;
  T* const dst = tile + (c >> 3) * ROWS * 64 + r0 * 64 + (((c & 7) ^ (r0 & 7)) << 3);
  const T* const src = g + r0 * rs + c * 8;
  const int64_t step = kPass * rs;
  if (rows_left >= ROWS) {
    const uint32_t d0 = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
#pragma unroll
    for (int j = 0; j < ROWS / kPass; ++j)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d0 + uint32_t(j * kPass * 64 * sizeof(T))),
                   "l"(src + j * step));
  } else {
#pragma unroll
    for (int j = 0; j < ROWS / kPass; ++j) {
      const bool ok = r0 + j * kPass < rows_left;
      cp_async16(dst + j * kPass * 64, ok ? src + j * step : g, ok);
    }
  }
}

// S = Q K^T for this warpgroup's 64 rows against one K stage, issued and committed (not waited):
// D / 16 steps of 16; step kk reads column block kk / 4 at byte 32 (kk % 4) of each 128-byte row.
template <class T, int D>
__device__ __forceinline__ void issue_scores(float (&s)[kWBN / 2], uint32_t q_addr, uint32_t k_stage) {
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint64_t da = wgmma::desc_sw128(q_addr + uint32_t((kk >> 2) * kBM * 128 + (kk & 3) * 32), 16, 1024);
    const uint64_t db = wgmma::desc_sw128(k_stage + uint32_t((kk >> 2) * kWBN * 128 + (kk & 3) * 32), 16, 1024);
    wgmma::mma_ss<T, kWBN>(s, da, db, kk > 0);
  }
  wgmma::commit();
}

// O += P V against one V stage, issued and committed: kWBN / 16 steps of 16 keys (2048 bytes of
// the stage each); V is MN-major, its 64-wide column blocks kWBN * 128 bytes apart.
template <class T, int D>
__device__ __forceinline__ void issue_pv(float (&o)[D / 2], const uint32_t (&pf)[kWBN / 16][4], uint32_t v_stage) {
  wgmma::fence_operands(o);
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < kWBN / 16; ++kk)
    wgmma::mma_rs_bt<T, D>(o, pf[kk], wgmma::desc_sw128(v_stage + uint32_t(kk * 16 * 128), kWBN * 128, 1024), 1);
  wgmma::commit();
}

// A row state's online softmax over one tile of scores (attention.cu's, for a warp's 16 rows; a
// thread's rows are i0 and i0 + 8): masks where `masked` (keys at or past sk, causal keys past
// the diagonal), moves the running maximum when a row of the warp grew past it by more than the
// slack (the factor the output must be multiplied by goes to corr; false: no rescale), adds the
// probabilities to the running sums and packs them as P V's A operand.
struct RowState {
  float m[2], l[2];
};
template <class T>
__device__ __forceinline__ bool softmax_tile(float (&s)[kWBN / 2], uint32_t (&pf)[kWBN / 16][4], RowState& rs,
                                             float (&corr)[2], const AttnArgs& a, bool masked, int n0, int i0,
                                             int tq, int sk, int shift) {
  if (masked) {
#pragma unroll
    for (int nt = 0; nt < kWBN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = n0 + nt * 8 + tq * 2 + (e & 1);
        const int i = i0 + (e >> 1) * 8;
        if (j >= sk || (a.causal && j > i + shift)) s[nt * 4 + e] = -INFINITY;
      }
  }
  float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < kWBN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) tmax[e >> 1] = fmaxf(tmax[e >> 1], s[nt * 4 + e]);
  bool grow = false;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 1));
    tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 2));
    tmax[r] *= a.scale_log2;  // -inf stays -inf (c > 0)
    grow |= tmax[r] > rs.m[r] + kRescaleSlack;
  }
  const bool rescale = __any_sync(0xffffffffu, grow);
  if (rescale) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float mnew = fmaxf(rs.m[r], tmax[r]);
      corr[r] = fast_exp2(rs.m[r] - (mnew == -INFINITY ? 0.f : mnew));
      rs.m[r] = mnew;
      rs.l[r] *= corr[r];
    }
  }
  float nbase[2];  // minus the maximum the probabilities are taken against; no key yet: p = 0
#pragma unroll
  for (int r = 0; r < 2; ++r) nbase[r] = rs.m[r] == -INFINITY ? 0.f : -rs.m[r];
#pragma unroll
  for (int nt = 0; nt < kWBN / 8; ++nt) {
    const float p0 = fast_exp2(fmaf(s[nt * 4 + 0], a.scale_log2, nbase[0]));
    const float p1 = fast_exp2(fmaf(s[nt * 4 + 1], a.scale_log2, nbase[0]));
    const float p2 = fast_exp2(fmaf(s[nt * 4 + 2], a.scale_log2, nbase[1]));
    const float p3 = fast_exp2(fmaf(s[nt * 4 + 3], a.scale_log2, nbase[1]));
    rs.l[0] += p0 + p1;
    rs.l[1] += p2 + p3;
    pf[nt / 2][(nt % 2) * 2] = pack2<T>(p0, p1);
    pf[nt / 2][(nt % 2) * 2 + 1] = pack2<T>(p2, p3);
  }
  return rescale;
}

template <int D>
__device__ __forceinline__ void rescale_output(float (&o)[D / 2], const float (&corr)[2]) {
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dt * 4 + e] *= corr[e >> 1];
}

// Keeps P's registers live until the MMA reading them was waited for (ptxas's own analysis of the
// wgmma's register operands does the rest).
__device__ __forceinline__ void hold(uint32_t (&pf)[kWBN / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < kWBN / 16; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(pf[kk][e])::"memory");
}

// The scores of tile t + 1 are computed, and their softmax taken, while P V of tile t runs on the
// tensor cores (FlashAttention-3's intra-warpgroup pipelining: two P buffers; the output's rescale
// waits for P V). H200, B4 H32 S4096 D128 causal: 389 TF/s with each tile's S, softmax and P V one
// after the other, 417 so (same run). (One warpgroup a block, 64-row blocks: at D = 64 two
// blocks an SM, 232 TF/s causal S1024 against two warpgroups' 184-199 and mma.sync's 240; at
// D = 128 the shared memory fits one block, 316.)
template <class T, int D>
__global__ void __launch_bounds__(kThreads, 1) attention_flash_wgmma(AttnArgs a) {
  extern __shared__ unsigned char smem_raw[];
  T* const sq_tile = reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  T* const sk_tile = sq_tile + kBM * D;  // two stages of kWBN x D
  T* const sv_tile = sk_tile + 2 * kWBN * D;
  const int wg = int(threadIdx.x) >> 7, warp = (int(threadIdx.x) >> 5) & 3, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;  // accumulator rows g and g + 8, columns 2 tq, 2 tq + 1
  const FlashBlock fb = flash_block(a);
  const int64_t b = fb.b, h = fb.h;
  const int m0 = fb.mb * kBM, sq = int(a.sq), sk = int(a.sk);
  const int64_t hk = h / (a.hq / a.hkv);
  const T* q = static_cast<const T*>(a.q) + b * a.qs[0] + h * a.qs[1] + m0 * a.qs[2];
  const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + hk * a.ks[1];
  const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + hk * a.vs[1];
  const int shift = sk - sq;  // causal: row i sees keys j <= i + shift
  const int kend = a.causal ? min(sk, max(0, m0 + kBM + shift)) : sk;
  const int ntiles = (kend + kWBN - 1) / kWBN;

  constexpr int kStage = kWBN * D;  // elements of one K or V stage
  constexpr uint32_t kStageBytes = uint32_t(kStage) * 2;
  const uint32_t q_addr = static_cast<uint32_t>(__cvta_generic_to_shared(sq_tile)) + uint32_t(wg * 64 * 128);
  const uint32_t k_addr = static_cast<uint32_t>(__cvta_generic_to_shared(sk_tile));
  const uint32_t v_addr = static_cast<uint32_t>(__cvta_generic_to_shared(sv_tile));
  auto load_k = [&](int t) {  // key tile t into stage t % 2
    load_sw128_tile<T, D, kWBN>(sk_tile + (t & 1) * kStage, k + int64_t(t) * kWBN * a.ks[2], a.ks[2], sk - t * kWBN);
  };
  auto load_v = [&](int t) {
    load_sw128_tile<T, D, kWBN>(sv_tile + (t & 1) * kStage, v + int64_t(t) * kWBN * a.vs[2], a.vs[2], sk - t * kWBN);
  };
  // Each thread's copies landed, made visible to the MMAs, and (the barrier) every thread's.
  auto copies_landed = [] {
    cp_async_wait<0>();
    wgmma::fence_proxy_async_smem();
    __syncthreads();
  };

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  RowState rs{{-INFINITY, -INFINITY}, {0.f, 0.f}};
  const int r_lo = m0 + wg * 64 + warp * 16;  // this warp's first row; a thread's are r_lo + g (+ 8)
  const int i0 = r_lo + g;
  // Only a tile past the keys' end or crossing the causal diagonal of the warp's first row needs
  // the mask.
  auto masked = [&](int t) { return (t + 1) * kWBN > sk || (a.causal && (t + 1) * kWBN - 1 > r_lo + shift); };
  float s[kWBN / 2];
  float corr[2];

  if (ntiles > 0) {
    // Prologue: Q, K 0 and 1, V 0; the scores of tile 0 and their softmax.
    load_sw128_tile<T, D, kBM>(sq_tile, q, a.qs[2], sq - m0);
    load_k(0);
    cp_async_commit();
    if (ntiles > 1) load_k(1);
    load_v(0);
    cp_async_commit();
    cp_async_wait<1>();  // Q and K 0 (K 1 and V 0 may still be in flight while the first scores run)
    wgmma::fence_proxy_async_smem();
    __syncthreads();
    uint32_t pa[kWBN / 16][4], pb[kWBN / 16][4];
    issue_scores<T, D>(s, q_addr, k_addr);
    wgmma::wait<0>();
    wgmma::fence_operands(s);
    softmax_tile<T>(s, pa, rs, corr, a, masked(0), 0, i0, tq, sk, shift);  // o is 0: no rescale
    // Step t: P V of tile t (P in pc) beside the scores of tile t + 1 and their softmax (into pn).
    // Entering it, K t + 1 and V t were copied at step t - 1 (the prologue); every warp is done
    // with K t (its scores waited for before step t) and V t - 1, whose stages take K t + 2 and
    // V t + 1.
    // (Two kinds of step, with and without a next tile, rather than one with a test around the
    // scores: ptxas serialized every MMA of a step whose wait it could not match to its MMAs.)
    auto step = [&](int t, uint32_t(&pc)[kWBN / 16][4], uint32_t(&pn)[kWBN / 16][4]) {
      copies_landed();
      issue_scores<T, D>(s, q_addr, k_addr + ((t + 1) & 1) * kStageBytes);
      issue_pv<T, D>(o, pc, v_addr + (t & 1) * kStageBytes);
      // the next copies behind the MMAs' issue (into the stages they do not read), so the tensor
      // cores start a little earlier: D128 456 -> 476 TF/s, causal 410-417 -> 410-422 (same run)
      if (t + 2 < ntiles) load_k(t + 2);
      load_v(t + 1);
      cp_async_commit();
      wgmma::wait<1>();  // the scores (committed first) are done; P V may still run
      wgmma::fence_operands(s);
      const bool rescale = softmax_tile<T>(s, pn, rs, corr, a, masked(t + 1), (t + 1) * kWBN, i0, tq, sk, shift);
      wgmma::wait<0>();
      hold(pc);
      wgmma::fence_operands(o);
      if (rescale) rescale_output<D>(o, corr);
    };
    auto last_step = [&](int t, uint32_t(&pc)[kWBN / 16][4]) {
      copies_landed();
      issue_pv<T, D>(o, pc, v_addr + (t & 1) * kStageBytes);
      wgmma::wait<0>();
      hold(pc);
      wgmma::fence_operands(o);
    };
    int t = 0;
    for (; t + 2 < ntiles; t += 2) {
      step(t, pa, pb);
      step(t + 1, pb, pa);
    }
    if (ntiles - t == 2) {
      step(t, pa, pb);
      last_step(t + 1, pb);
    } else {
      last_step(t, pa);
    }
  }

  T* out = static_cast<T*>(a.out) + ((b * a.hq + h) * a.sq) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = rs.l[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;  // a row that saw no key: zeros
    const int i = i0 + r * 8;
    if (i >= sq) continue;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<uint32_t*>(out + int64_t(i) * D + dt * 8 + tq * 2) =
          pack2<T>(o[dt * 4 + 2 * r] * inv, o[dt * 4 + 2 * r + 1] * inv);
  }
}

template <class T, int D>
void launch(AttnArgs a, int64_t batch, int device, cudaStream_t stream, int64_t head_group) {
  constexpr size_t smem = wgmma_smem_bytes<D>();
  const auto kernel = attention_flash_wgmma<T, D>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const dim3 grid(unsigned((a.sq + kBM - 1) / kBM), unsigned(a.hq), unsigned(batch));
  set_pair_groups(a, batch, device, head_group);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  LORAOPS_CUDA_CHECK_LAUNCH("attention_flash_wgmma");
}

}  // namespace

void launch_flash_wgmma(const AttnArgs& a, DType dtype, int64_t batch, int device, cudaStream_t stream,
                        int64_t head_group) {
  const bool bf16 = dtype == DType::BFloat16;
  if (a.d == 64) {
    if (bf16) return launch<__nv_bfloat16, 64>(a, batch, device, stream, head_group);
    return launch<__half, 64>(a, batch, device, stream, head_group);
  }
  if (bf16) return launch<__nv_bfloat16, 128>(a, batch, device, stream, head_group);
  launch<__half, 128>(a, batch, device, stream, head_group);
}

}  // namespace loraops::cuda::attn
