// attention on CUDA, custom: softmax(q @ k.T * scale + mask) @ v per batch and query head,
// grouped-query heads (query head h reads key/value head h / (Hq / Hkv)), causal bottom-right
// aligned (query i sees keys j <= i + Sk - Sq), zeros for a query that sees no key.
//
// attention_flash (float16/bfloat16, D = 64 or 128, unit-stride rows 16-byte aligned): the
// FlashAttention-2 forward on tensor cores. A block owns 64 or 128 query rows of one head (4
// warps, 1 or 2 16-row tiles each; flash_kernel_for picks); it walks the keys in tiles of 64, K and V tiles brought into shared memory by
// cp.async (K of the next tile streams while this tile's softmax and P@V run, V of the next while
// its scores do), S = Q K^T and O += P V with mma.m16n8k16 (fp32 accumulators), an online softmax
// in registers (the probabilities are rounded to the input dtype for P V, as FlashAttention does;
// their sum stays fp32; the running maximum moves only when a row grows past it by 2^8, which
// skips most tiles' output rescales). The scale must be positive (zero and negative ones take
// the general kernel). Tiles are XOR-swizzled by 16-byte chunk so ldmatrix reads are free of
// bank conflicts. Causal blocks stop at the last key their last row can see.
//
// attention_flash_wgmma (attention_flash_wgmma.cu): the same math on Hopper's warpgroup MMAs,
// 128-row blocks of two warpgroups; taken at D = 128 where Sq > 64 (flash_kernel_for).
//
// One query row (Sq = 1): the split-K decode kernels of attention_decode.cu, taken first.
//
// attention_rows (everything else: float32, other D, any strides): one warp per query row, keys
// in chunks of 32 (a lane per key for the scores, a lane per output dim for the sum), fp32
// throughout. Correct for any shape; not fast.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/kernels/attention_tiles.cuh"

namespace loraops::cuda {

namespace {

using attn::AttnArgs;
using attn::args_of;
using attn::flash_block;
using attn::FlashBlock;
using attn::kBN;
using attn::kRescaleSlack;
using attn::swz;

// ---- the flash kernel -------------------------------------------------------------------------

constexpr int kFlashThreads = 128;  // 4 warps

// Shared memory of a block: its Q rows, one K tile, one V tile.
template <class T, int D, int kMT>
constexpr size_t flash_smem_bytes() {
  return size_t(64 * kMT + 2 * kBN) * D * sizeof(T);
}

// (One tile at D = 128 and two at D = 64: capped at 168 registers, 3 blocks per SM, for a 16- and
// a 36-byte spill; uncapped they take 174 and 208 and fit 2. Nsight Compute on the uncapped D = 64
// two-tile kernel: 12.5% occupancy, 3.8 cycles per issued instruction, 49% of compute: latency-
// bound. Two tiles at D = 128 are left to the compiler: a cap spilled more.)
// kMT 16-row query tiles per warp, 64 * kMT rows per block. With kMT = 2 each K and V fragment a
// warp reads from shared memory feeds two row tiles, halving those reads per query row (as
// FlashAttention-2's 128-row blocks of 4 warps do); Q fragments are then re-read from shared
// memory at each step rather than held (the registers go to 2 x D/2 output accumulators).
template <class T, int D, int kMT>
__global__ void __launch_bounds__(kFlashThreads, (kMT == 1 && D == 128) || (kMT == 2 && D == 64) ? 3 : 1) attention_flash(AttnArgs a) {
  constexpr int kBM = 64 * kMT;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* const sq_tile = reinterpret_cast<T*>(smem_raw);
  T* const sk_tile = sq_tile + kBM * D;
  T* const sv_tile = sk_tile + kBN * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, tq = lane & 3;  // accumulator rows g and g + 8, columns 2 tq, 2 tq + 1
  // Row and key indices fit 32 bits (attention_flash_eligible); offsets are formed in 64.
  const FlashBlock fb = flash_block(a);
  const int64_t b = fb.b, h = fb.h;
  const int mb = fb.mb;
  const int m0 = mb * kBM, sq = int(a.sq), sk = int(a.sk);
  const int64_t hk = h / (a.hq / a.hkv);
  const T* q = static_cast<const T*>(a.q) + b * a.qs[0] + h * a.qs[1] + m0 * a.qs[2];
  const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + hk * a.ks[1];
  const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + hk * a.vs[1];
  const int shift = sk - sq;  // causal: row i sees keys j <= i + shift
  const int kend = a.causal ? min(sk, max(0, m0 + kBM + shift)) : sk;
  const int ntiles = int((kend + kBN - 1) / kBN);

  float o[kMT][D / 8][4] = {};
  float mrow[kMT][2], lrow[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
    mrow[mt][0] = mrow[mt][1] = -INFINITY, lrow[mt][0] = lrow[mt][1] = 0.f;
  if (ntiles > 0) {
    attn::load_tile<T, D, kBM, kFlashThreads>(sq_tile, q, a.qs[2], sq - m0);
    attn::load_tile<T, D, kBN, kFlashThreads>(sk_tile, k, a.ks[2], sk);
    cp_async_commit();  // group: Q and K of tile 0
    attn::load_tile<T, D, kBN, kFlashThreads>(sv_tile, v, a.vs[2], sk);
    cp_async_commit();  // group: V of tile 0
  }
  // Row tile mt of this warp: block rows (warp * kMT + mt) * 16 + [0, 16); this thread's rows in
  // it are i0 + mt * 16 and i0 + mt * 16 + 8.
  const int i0 = m0 + warp * kMT * 16 + g;
  uint32_t qf[kMT == 1 ? D / 16 : 1][4];  // kMT = 1: Q's fragments held in registers
  for (int t = 0; t < ntiles; ++t) {
    const int n0 = t * kBN;
    cp_async_wait<1>();  // K of this tile (and Q) landed; V may still be in flight
    __syncthreads();
    if constexpr (kMT == 1) {
      if (t == 0) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
          ldmatrix_x4(qf[kk], sq_tile + swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
      }
    }
    float s[kMT][kBN / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        if constexpr (kMT == 1) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[mt][e] = qf[kk][e];
        } else {
          ldmatrix_x4(qa[mt], sq_tile + swz<D>((warp * kMT + mt) * 16 + (lane & 15),
                                               kk * 2 + (lane >> 4)));
        }
      }
#pragma unroll
      for (int nt = 0; nt < kBN / 8; nt += 2) {
        uint32_t kb[4];  // B fragments of key tiles nt and nt + 1
        ldmatrix_x4(kb, sk_tile + swz<D>(nt * 8 + (lane >> 4) * 8 + (lane & 7),
                                         kk * 2 + ((lane >> 3) & 1)));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma16816<T>(s[mt][nt], qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], kb[0], kb[1]);
          mma16816<T>(s[mt][nt + 1], qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], kb[2], kb[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this K tile: the next one may overwrite it
    if (t + 1 < ntiles)
      attn::load_tile<T, D, kBN, kFlashThreads>(sk_tile, k + int64_t(n0 + kBN) * a.ks[2], a.ks[2], sk - n0 - kBN);
    cp_async_commit();

    // mask, then the online softmax (base 2). Only a tile past the end of the keys or crossing
    // the causal diagonal of this block's first row needs the mask (uniform over the block);
    // the per-element index tests cost more issue slots than the tile's MMAs. The scores stay
    // unscaled: the row maximum of s times c = scale_log2 > 0 is c times the maximum of s, and
    // the scale joins the exponent's subtraction in one FMA.
    const bool masked = n0 + kBN > sk || (a.causal && n0 + kBN - 1 > m0 + shift);
    uint32_t pf[kMT][kBN / 16][4];  // P as the A operand of P V (the S accumulators' own layout)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {  // one row tile at a time: its scores die as P is packed
      if (masked) {
#pragma unroll
        for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = n0 + nt * 8 + tq * 2 + (e & 1);
            const int i = i0 + mt * 16 + (e >> 1) * 8;
            if (j >= sk || (a.causal && j > i + shift)) s[mt][nt][e] = -INFINITY;
          }
      }
      float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) tmax[e >> 1] = fmaxf(tmax[e >> 1], s[mt][nt][e]);
      bool grow = false;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 1));
        tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 2));
        tmax[r] *= a.scale_log2;  // -inf stays -inf (c > 0)
        grow |= tmax[r] > mrow[mt][r] + kRescaleSlack;
      }
      // The running maximum moves only when some row of the warp's tile grew past it by more
      // than the slack (FlashAttention-4's lazy rescale): otherwise the probabilities are taken
      // against the old maximum (at most 2^slack: far from overflow in fp32 and either half
      // type, and their rounding is relative) and the tile's D / 4 output rescales per thread
      // are skipped. With keys in random order that is nearly every tile after the first few.
      if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float mnew = fmaxf(mrow[mt][r], tmax[r]);
          const float corr = fast_exp2(mrow[mt][r] - (mnew == -INFINITY ? 0.f : mnew));
          mrow[mt][r] = mnew;
          lrow[mt][r] *= corr;
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) o[mt][dt][2 * r] *= corr, o[mt][dt][2 * r + 1] *= corr;
        }
      }
      float nbase[2];  // minus the maximum the probabilities are taken against; no key yet: p = 0
#pragma unroll
      for (int r = 0; r < 2; ++r) nbase[r] = mrow[mt][r] == -INFINITY ? 0.f : -mrow[mt][r];
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) {
        const float p0 = fast_exp2(fmaf(s[mt][nt][0], a.scale_log2, nbase[0]));
        const float p1 = fast_exp2(fmaf(s[mt][nt][1], a.scale_log2, nbase[0]));
        const float p2 = fast_exp2(fmaf(s[mt][nt][2], a.scale_log2, nbase[1]));
        const float p3 = fast_exp2(fmaf(s[mt][nt][3], a.scale_log2, nbase[1]));
        lrow[mt][0] += p0 + p1;
        lrow[mt][1] += p2 + p3;
        pf[mt][nt / 2][(nt % 2) * 2] = pack2<T>(p0, p1);
        pf[mt][nt / 2][(nt % 2) * 2 + 1] = pack2<T>(p2, p3);
      }
    }

    cp_async_wait<1>();  // V of this tile landed (the next K may still be in flight)
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk)
#pragma unroll
      for (int dt = 0; dt < D / 8; dt += 2) {
        uint32_t vb[4];  // B fragments of output column tiles dt and dt + 1
        ldmatrix_x4_trans(vb, sv_tile + swz<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                               dt + (lane >> 4)));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma16816<T>(o[mt][dt], pf[mt][kk][0], pf[mt][kk][1], pf[mt][kk][2], pf[mt][kk][3], vb[0],
                      vb[1]);
          mma16816<T>(o[mt][dt + 1], pf[mt][kk][0], pf[mt][kk][1], pf[mt][kk][2], pf[mt][kk][3],
                      vb[2], vb[3]);
        }
      }
    __syncthreads();  // every warp is done with this V tile
    if (t + 1 < ntiles)
      attn::load_tile<T, D, kBN, kFlashThreads>(sv_tile, v + int64_t(n0 + kBN) * a.vs[2], a.vs[2], sk - n0 - kBN);
    cp_async_commit();
  }

  T* out = static_cast<T*>(a.out) + ((b * a.hq + h) * a.sq) * D;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = lrow[mt][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;  // a row that saw no key: zeros
      const int i = i0 + mt * 16 + r * 8;
      if (i >= sq) continue;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<uint32_t*>(out + int64_t(i) * D + dt * 8 + tq * 2) =
            pack2<T>(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
    }
}

// ---- the general kernel -----------------------------------------------------------------------

constexpr int kRowWarps = 4;

template <class T>
__global__ void __launch_bounds__(kRowWarps * 32) attention_rows(AttnArgs a, int64_t rows) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* const qv = smem + warp * (2 * a.d + 32);  // q * scale * log2(e)
  float* const ov = qv + a.d;                      // the running output
  float* const pw = ov + a.d;                      // this chunk's 32 probabilities
  const T* const Q = static_cast<const T*>(a.q);
  const T* const K = static_cast<const T*>(a.k);
  const T* const V = static_cast<const T*>(a.v);
  T* const out = static_cast<T*>(a.out);
  const int64_t shift = a.sk - a.sq;
  for (int64_t row = int64_t(blockIdx.x) * kRowWarps + warp; row < rows;
       row += int64_t(gridDim.x) * kRowWarps) {
    const int64_t i = row % a.sq, h = (row / a.sq) % a.hq, b = row / (a.sq * a.hq);
    const int64_t hk = h / (a.hq / a.hkv);
    const T* q = Q + b * a.qs[0] + h * a.qs[1] + i * a.qs[2];
    const T* k = K + b * a.ks[0] + hk * a.ks[1];
    const T* v = V + b * a.vs[0] + hk * a.vs[1];
    for (int64_t d = lane; d < a.d; d += 32) {
      qv[d] = to_float(q[d * a.qs[3]]) * a.scale_log2;
      ov[d] = 0.f;
    }
    __syncwarp();
    const int64_t kend = a.causal ? min(a.sk, max(int64_t(0), i + shift + 1)) : a.sk;
    float m = -INFINITY, l = 0.f;
    for (int64_t j0 = 0; j0 < kend; j0 += 32) {
      const int64_t j = j0 + lane;
      float sc = -INFINITY;
      if (j < kend) {
        const T* kr = k + j * a.ks[2];
        float acc = 0.f;
        for (int64_t d = 0; d < a.d; ++d) acc = fmaf(qv[d], to_float(kr[d * a.ks[3]]), acc);
        sc = acc;
      }
      float mx = sc;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float mnew = fmaxf(m, mx);
      const float base = mnew == -INFINITY ? 0.f : mnew;
      const float corr = exp2f(m - base);
      const float p = j < kend ? exp2f(sc - base) : 0.f;
      float ps = p;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
      l = l * corr + ps;
      m = mnew;
      pw[lane] = p;
      __syncwarp();
      const int count = int(min(int64_t(32), kend - j0));
      for (int64_t d = lane; d < a.d; d += 32) {
        float acc = ov[d] * corr;
        const T* vc = v + j0 * a.vs[2] + d * a.vs[3];
        for (int u = 0; u < count; ++u) acc = fmaf(pw[u], to_float(vc[u * a.vs[2]]), acc);
        ov[d] = acc;
      }
      __syncwarp();
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    T* o = out + ((b * a.hq + h) * a.sq + i) * a.d;
    for (int64_t d = lane; d < a.d; d += 32) o[d] = from_float<T>(ov[d] * inv);
    __syncwarp();
  }
}

template <class T, int D, int kMT>
void launch_flash(AttnArgs a, int64_t batch, int device, cudaStream_t stream, int64_t head_group) {
  constexpr size_t smem = flash_smem_bytes<T, D, kMT>();
  const auto kernel = attention_flash<T, D, kMT>;
  if constexpr (smem > 48 * 1024) attn::allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const dim3 grid(unsigned((a.sq + 64 * kMT - 1) / (64 * kMT)), unsigned(a.hq), unsigned(batch));
  attn::set_pair_groups(a, batch, device, head_group);
  kernel<<<grid, kFlashThreads, smem, stream>>>(a);
  LORAOPS_CUDA_CHECK_LAUNCH("attention_flash");
}

// 128-row blocks where the queries fill them; 64-row blocks for short query runs (decode-like
// prefill chunks), where half of a 128-row block would idle. D = 128 on warpgroup MMAs (H200,
// 2026-12-02, B4 H32 S4096 causal: 411-424 TF/s against mma.sync's 325-328; 452-476 against
// 337-340 without the mask); D = 64 on mma.sync (B16 H32 S1024 causal: 240 against wgmma's
// 184-199: one block an SM, whose loads and first scores nothing overlaps, on short key runs).
FlashKernel flash_kernel_for(const detail::AttentionParams& p) {
  if (p.sq <= 64) return FlashKernel::Mma64;
  return p.d == 128 ? FlashKernel::Wgmma : FlashKernel::Mma128;
}

template <class T>
void run_flash(const AttnArgs& a, const detail::AttentionParams& p, FlashKernel kernel, cudaStream_t stream,
               int64_t head_group = 0) {
  if (kernel == FlashKernel::Auto) kernel = flash_kernel_for(p);
  if (kernel == FlashKernel::Wgmma)
    return attn::launch_flash_wgmma(a, p.dtype, p.batch, p.device_index, stream, head_group);
  const bool two = kernel == FlashKernel::Mma128;
  if (p.d == 64) {
    if (two) return launch_flash<T, 64, 2>(a, p.batch, p.device_index, stream, head_group);
    return launch_flash<T, 64, 1>(a, p.batch, p.device_index, stream, head_group);
  }
  if (two) return launch_flash<T, 128, 2>(a, p.batch, p.device_index, stream, head_group);
  return launch_flash<T, 128, 1>(a, p.batch, p.device_index, stream, head_group);
}

template <class T>
void run(const detail::AttentionParams& p, cudaStream_t stream) {
  const AttnArgs a = args_of(p);
  if constexpr (!std::is_same_v<T, float>) {
    if (attention_flash_eligible(p)) return run_flash<T>(a, p, FlashKernel::Auto, stream);
  }
  const int64_t rows = p.batch * p.hq * p.sq;
  const size_t smem = size_t(kRowWarps) * size_t(2 * p.d + 32) * sizeof(float);
  if (smem > 48 * 1024) {
    int device = 0, max_optin = 0;
    LORAOPS_CUDA_CHECK(cudaGetDevice(&device));
    LORAOPS_CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (smem > size_t(max_optin))
      throw Error(ErrorKind::Unsupported, "attention", "q",
                  "a head dim whose row state fits shared memory (D <= " +
                      std::to_string((max_optin / kRowWarps / 4 - 32) / 2) + ")",
                  "D = " + std::to_string(p.d));
    attn::allow_dynamic_smem(reinterpret_cast<const void*>(attention_rows<T>), smem);
  }
  const int64_t blocks = std::min<int64_t>((rows + kRowWarps - 1) / kRowWarps,
                                           int64_t(sm_count(p.device_index)) * 16);
  attention_rows<T><<<unsigned(blocks), kRowWarps * 32, smem, stream>>>(a, rows);
  LORAOPS_CUDA_CHECK_LAUNCH("attention_rows");
}

}  // namespace

bool attention_flash_eligible(const detail::AttentionParams& p) {
  if (p.dtype == DType::Float32 || (p.d != 64 && p.d != 128)) return false;
  if (p.hq > 65535 || p.batch > 65535) return false;  // grid y and z
  if (p.sq > (int64_t(1) << 30) || p.sk > (int64_t(1) << 30)) return false;  // 32-bit row indices
  // The online softmax takes row maxima of unscaled scores: a positive, normal scale (zero or a
  // negative one, which no model uses, takes the general kernel).
  const float c = p.scale * attn::kLog2e;
  if (!(c >= FLT_MIN && c <= FLT_MAX)) return false;
  return attn::rows_aligned16(p.q, p.q_strides, p.dtype) && attn::rows_aligned16(p.k, p.k_strides, p.dtype) &&
         attn::rows_aligned16(p.v, p.v_strides, p.dtype) && aligned16(p.out);
}

void attention_flash_with(const detail::AttentionParams& p, void* stream, FlashKernel kernel, int64_t head_group) {
  if (p.hkv <= 0 || p.hq % p.hkv != 0 || !attention_flash_eligible(p))
    throw Error(ErrorKind::Unsupported, "attention", "q",
                "a shape the flash kernel takes (attention_flash_eligible, Hkv dividing Hq)",
                "another shape");
  if (p.batch == 0 || p.hq == 0 || p.sq == 0) return;
  DeviceGuard guard(p.device_index);
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::BFloat16) return run_flash<__nv_bfloat16>(args_of(p), p, kernel, s, head_group);
  run_flash<__half>(args_of(p), p, kernel, s, head_group);
}

void attention_custom(const detail::AttentionParams& p, void* stream) {
  if (p.batch == 0 || p.hq == 0 || p.sq == 0 || p.d == 0) return;
  if (attention_decode_eligible(p)) return attention_decode_with(p, stream, DecodeKernel::Auto);
  DeviceGuard guard(p.device_index);
  dispatch_dtype(p.dtype, [&](auto tag) { run<decltype(tag)>(p, static_cast<cudaStream_t>(stream)); });
}

}  // namespace loraops::cuda
