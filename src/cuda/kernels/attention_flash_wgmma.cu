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
// wgmma.cuh); K and V are double-buffered, tile t + 1 copied by cp.async while tile t is used.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/kernels/attention_tiles.cuh"
#include "cuda/wgmma.cuh"

namespace loraops::cuda::attn {

namespace {

constexpr int kWgThreads = 256;  // two warpgroups
constexpr int kWBM = 128;        // query rows per block, 64 per warpgroup
constexpr int kWBN = 128;        // keys per K/V tile

// Shared memory: Q, two K tiles, two V tiles, and 1024 bytes to align the first to 1024 (the
// swizzle atoms are addressed absolutely).
template <int D>
constexpr size_t wgmma_smem_bytes() {
  return size_t(kWBM + 4 * kWBN) * D * 2 + 1024;
}

// Rows [0, ROWS) of a [rows][D] matrix at g (row stride rs elements) into a swizzled [D/64][ROWS][64]
// tile by the block's threads, rows at or past rows_left zero-filled. A thread copies one 16-byte
// chunk column c of rows r0, r0 + P, ... (P = 256 / (D / 8), a multiple of 8: the swizzle of its
// chunk is the same in every row it copies).
template <class T, int D, int ROWS>
__device__ __forceinline__ void load_sw128_tile(T* tile, const T* g, int64_t rs, int64_t rows_left) {
  constexpr int kChunks = D / 8, kPass = kWgThreads / kChunks;
  static_assert(kWgThreads % kChunks == 0 && kPass % 8 == 0 && ROWS % kPass == 0, "whole passes");
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

template <class T, int D>
__global__ void __launch_bounds__(kWgThreads, 1) attention_flash_wgmma(AttnArgs a) {
  extern __shared__ unsigned char smem_raw[];
  T* const sq_tile = reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  T* const sk_tile = sq_tile + kWBM * D;  // two stages of kWBN x D
  T* const sv_tile = sk_tile + 2 * kWBN * D;
  const int wg = int(threadIdx.x) >> 7, warp = (int(threadIdx.x) >> 5) & 3, lane = int(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;  // accumulator rows g and g + 8, columns 2 tq, 2 tq + 1
  const FlashBlock fb = flash_block(a);
  const int64_t b = fb.b, h = fb.h;
  const int m0 = fb.mb * kWBM, sq = int(a.sq), sk = int(a.sk);
  const int64_t hk = h / (a.hq / a.hkv);
  const T* q = static_cast<const T*>(a.q) + b * a.qs[0] + h * a.qs[1] + m0 * a.qs[2];
  const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + hk * a.ks[1];
  const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + hk * a.vs[1];
  const int shift = sk - sq;  // causal: row i sees keys j <= i + shift
  const int kend = a.causal ? min(sk, max(0, m0 + kWBM + shift)) : sk;
  const int ntiles = (kend + kWBN - 1) / kWBN;

  constexpr int kStage = kWBN * D;  // elements of one K or V stage
  const uint32_t q_addr = static_cast<uint32_t>(__cvta_generic_to_shared(sq_tile)) + uint32_t(wg * 64 * 128);
  const uint32_t k_addr = static_cast<uint32_t>(__cvta_generic_to_shared(sk_tile));
  const uint32_t v_addr = static_cast<uint32_t>(__cvta_generic_to_shared(sv_tile));

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};
  if (ntiles > 0) {
    load_sw128_tile<T, D, kWBM>(sq_tile, q, a.qs[2], sq - m0);
    load_sw128_tile<T, D, kWBN>(sk_tile, k, a.ks[2], sk);
    load_sw128_tile<T, D, kWBN>(sv_tile, v, a.vs[2], sk);
    cp_async_commit();
  }
  const int r_lo = m0 + wg * 64 + warp * 16;  // this warp's first row; a thread's are r_lo + g (+ 8)
  const int i0 = r_lo + g;
  for (int t = 0; t < ntiles; ++t) {
    const int n0 = t * kWBN, st = t & 1;
    // Tile t's copies landed (each thread's own), made visible to the MMAs, and every warp is done
    // with tile t - 1, whose stage the next copies overwrite.
    cp_async_wait<0>();
    wgmma::fence_proxy_async_smem();
    __syncthreads();
    if (t + 1 < ntiles) {
      load_sw128_tile<T, D, kWBN>(sk_tile + (st ^ 1) * kStage, k + int64_t(n0 + kWBN) * a.ks[2], a.ks[2], sk - n0 - kWBN);
      load_sw128_tile<T, D, kWBN>(sv_tile + (st ^ 1) * kStage, v + int64_t(n0 + kWBN) * a.vs[2], a.vs[2], sk - n0 - kWBN);
    }
    cp_async_commit();

    // S = Q K^T: D / 16 steps of 16; step kk reads column block kk / 4 at byte 32 (kk % 4) of each
    // 128-byte row.
    float s[kWBN / 2];
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint64_t da = wgmma::desc_sw128(q_addr + uint32_t((kk >> 2) * kWBM * 128 + (kk & 3) * 32), 16, 1024);
      const uint64_t db = wgmma::desc_sw128(
          k_addr + uint32_t(st * kStage * 2 + (kk >> 2) * kWBN * 128 + (kk & 3) * 32), 16, 1024);
      wgmma::mma_ss<T, kWBN>(s, da, db, kk > 0);
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(s);

    // mask, then the online softmax (attention.cu's, for this warp's 16 rows): only a tile past
    // the keys' end or crossing the causal diagonal of the warp's first row needs the mask.
    if (n0 + kWBN > sk || (a.causal && n0 + kWBN - 1 > r_lo + shift)) {
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
      grow |= tmax[r] > mrow[r] + kRescaleSlack;
    }
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float mnew = fmaxf(mrow[r], tmax[r]);
        const float corr = fast_exp2(mrow[r] - (mnew == -INFINITY ? 0.f : mnew));
        mrow[r] = mnew;
        lrow[r] *= corr;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) o[dt * 4 + 2 * r] *= corr, o[dt * 4 + 2 * r + 1] *= corr;
      }
    }
    float nbase[2];  // minus the maximum the probabilities are taken against; no key yet: p = 0
#pragma unroll
    for (int r = 0; r < 2; ++r) nbase[r] = mrow[r] == -INFINITY ? 0.f : -mrow[r];
    uint32_t pf[kWBN / 16][4];  // P as the A operand of P V, 16 keys a step
#pragma unroll
    for (int nt = 0; nt < kWBN / 8; ++nt) {
      const float p0 = fast_exp2(fmaf(s[nt * 4 + 0], a.scale_log2, nbase[0]));
      const float p1 = fast_exp2(fmaf(s[nt * 4 + 1], a.scale_log2, nbase[0]));
      const float p2 = fast_exp2(fmaf(s[nt * 4 + 2], a.scale_log2, nbase[1]));
      const float p3 = fast_exp2(fmaf(s[nt * 4 + 3], a.scale_log2, nbase[1]));
      lrow[0] += p0 + p1;
      lrow[1] += p2 + p3;
      pf[nt / 2][(nt % 2) * 2] = pack2<T>(p0, p1);
      pf[nt / 2][(nt % 2) * 2 + 1] = pack2<T>(p2, p3);
    }

    // O += P V: kWBN / 16 steps of 16 keys (2048 bytes of the stage each); V is MN-major, its
    // 64-wide column blocks kWBN * 128 bytes apart.
    wgmma::fence_operands(o);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kWBN / 16; ++kk) {
      const uint64_t db = wgmma::desc_sw128(v_addr + uint32_t(st * kStage * 2 + kk * 16 * 128), kWBN * 128, 1024);
      wgmma::mma_rs_bt<T, D>(o, pf[kk], db, 1);
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(o);
  }

  T* out = static_cast<T*>(a.out) + ((b * a.hq + h) * a.sq) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = lrow[r];
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
  const dim3 grid(unsigned((a.sq + kWBM - 1) / kWBM), unsigned(a.hq), unsigned(batch));
  set_pair_groups(a, batch, device, head_group);
  kernel<<<grid, kWgThreads, smem, stream>>>(a);
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
