// LoRA on CUDA, custom, at GEMM sizes: the low-rank term folded into the base GEMM's K loop
// (fold_gemm.hpp), so that the output is written once.
//   forward (m > kLoraDecodeMaxM):  s*t = s * x @ A.T, then y = [x | s*t] @ [W | B]^T + bias
//   backward, grad_x:               s*gB = s * g @ B (gB itself is kept for grad_a), then
//                                   grad_x = [g | s*gB] @ [W ; A]
// The shrinks run in our kernel (fold_shrink_product: r <= 64, the factor's rows 16-byte aligned
// with a unit column stride), which stores the scaled product and the unscaled one (xa_out, gB)
// from one fp32 sum: y has the same bits whether or not the caller keeps xa. Where it does not
// apply or loses (shrink_is_ours), cuBLASLt's unscaled product and a scaled copy of the small
// factor (B: [n, r], A: [r, k]) instead. The backward's g@B at r <= 16 comes with grad_b from
// one pass over g (fold_g_pass.cu) where g and t have 16-byte rows.
// Taken for float16/bfloat16 with K, N and r multiples of 8 and 16-byte-aligned rows of every
// operand the GEMM reads or writes (TMA); else the vendor composition. Builds without CUTLASS's
// headers (PyPI's nvidia-cutlass, scripts/setup.sh) never take it.
#include <atomic>

#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/kernels/fold_gemm.hpp"
#include "cuda/kernels/strided_copy.hpp"
#include "cuda/stream_scratch.hpp"
#include "cuda/vendor/cublaslt.hpp"

namespace loraops::cuda {

namespace {

// dst[i][j] = scale * src[i*rs + j*cs] for a rows x cols matrix, dst rows of `cols` (fp32 math,
// one rounding to E).
template <class E>
__global__ void scale_copy_kernel(const E* __restrict__ src, int64_t rs, int64_t cs, int64_t rows, int64_t cols,
                                  float scale, E* __restrict__ dst) {
  const int64_t total = rows * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, j = e - i * cols;
    dst[e] = from_float<E>(scale * to_float(src[i * rs + j * cs]));
  }
}

// dst (rows of `cols`) = scale * src; a plain layout copy (scale 1) is strided_copy's.
void scale_copy(DType t, const detail::MatView& src, int64_t rows, int64_t cols, float scale, void* dst,
                cudaStream_t stream, int device) {
  if (scale == 1.f)
    return strided_copy(2, 1, rows, cols, StridedMat{src.p, 0, src.rs, src.cs}, dst, 0, cols, 1, stream, device);
  const int64_t total = rows * cols;
  const int grid = int(std::min<int64_t>((total + 255) / 256, 4096));
  if (t == DType::BFloat16)
    scale_copy_kernel<<<grid, 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(src.p), src.rs, src.cs, rows, cols,
                                                scale, static_cast<__nv_bfloat16*>(dst));
  else
    scale_copy_kernel<<<grid, 256, 0, stream>>>(static_cast<const __half*>(src.p), src.rs, src.cs, rows, cols, scale,
                                                static_cast<__half*>(dst));
  LORAOPS_CUDA_CHECK_LAUNCH("lora (scaled factor copy)");
}

// The factor as the GEMM reads it: in place when the scale is 1 and its rows are whole 16-byte
// vectors of at least `cols`, else scale * factor in `copy` (rows of `cols`).
const void* scaled_factor(DType t, const detail::MatView& f, int64_t rows, int64_t cols, float scale, void* copy,
                          int64_t* ld, cudaStream_t stream, int device) {
  if (scale == 1.f && f.cs == 1 && f.rs >= cols && rows16(f.p, f.rs, 2)) {
    *ld = f.rs;
    return f.p;
  }
  scale_copy(t, f, rows, cols, scale, copy, stream, device);
  *ld = cols;
  return copy;
}

bool fold_dtype(DType t) { return LORAOPS_WITH_CUTLASS && (t == DType::BFloat16 || t == DType::Float16); }

constexpr int64_t kI32 = INT32_MAX - 256;  // CUTLASS's problem shape is int

std::atomic<FoldShrinkBy>& forced_shrink() {
  static std::atomic<FoldShrinkBy> s{FoldShrinkBy::Auto};
  return s;
}

// Who computes a shrink over `rows` rows (x or g) into r columns; `ours`: the operands suit
// fold_shrink_product. Ours stores the scaled product beside the unscaled one, which spares the
// fold a scaled copy of its small factor; cuBLASLt's was faster from 2048 rows at r = 64 (H200,
// K = 4096, graph replay: 9.3 against 13.8 µs at m = 2048, 21.9 against 33.5 at 8192; ours from
// 5.1 against 6.9 at m = 512 r = 16, 7.1 against 7.0 at m = 512 r = 64; NOTES.md, 2026-11-30).
bool shrink_is_ours(bool ours, int64_t rows, int64_t r) {
  switch (forced_shrink().load(std::memory_order_relaxed)) {
    case FoldShrinkBy::Ours: return ours;
    case FoldShrinkBy::CublasLt: return false;
    case FoldShrinkBy::Auto: break;
  }
  return ours && (r <= 16 || rows <= 1024);
}

}  // namespace

void set_fold_shrink(FoldShrinkBy s) { forced_shrink().store(s, std::memory_order_relaxed); }

bool lora_fold_supported(const detail::LoraForwardParams& p) {
  if (!fold_dtype(p.dtype)) return false;
  if (p.r <= 0 || p.scale == 0.f || p.m <= 0 || p.n <= 0 || p.k <= 0) return false;
  // CUTLASS's TMA operands want the contiguous extents in whole 16-byte vectors too (its
  // can_implement; t's and B's width is r).
  if (p.k % 8 != 0 || p.r % 8 != 0 || p.n % 8 != 0) return false;
  if (p.m >= kI32 || p.n >= kI32 || p.k + p.r >= kI32) return false;
  int64_t x_rs = 0;
  const int64_t es = 2;
  if (!p.x.uniform(&x_rs) || p.x.col_stride != 1 || !rows16(p.x.p, x_rs, es) || x_rs < p.k) return false;
  if (p.weight.cs != 1 || !rows16(p.weight.p, p.weight.rs, es) || p.weight.rs < p.k) return false;
  if (!aligned16(p.out)) return false;  // y: contiguous [m, n], stored by TMA
  if (p.bias && (p.bias_stride != 1 || !aligned16(p.bias))) return false;
  return true;
}

void lora_forward_fold(const detail::LoraForwardParams& p, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(p.device_index);
  constexpr int64_t es = 2;
  int64_t x_rs = 0;
  p.x.uniform(&x_rs);
  FoldGemmArgs g;
  g.m = p.m, g.n = p.n, g.k1 = p.k, g.k2 = p.r;
  g.a = p.x.p, g.lda = x_rs, g.lda2 = p.r;
  g.b = p.weight.p, g.ldb = p.weight.rs;
  g.bias = p.bias, g.d = p.out;
  // Two ways to the second K part:
  //   ours:     our kernel (shrink_is_ours) stores scale*t (for the GEMM) and t (xa_out) from one
  //             fp32 sum; B is read in place (copied only when its rows do not suit TMA); y has
  //             the same bits with or without xa_out;
  //   cuBLASLt: t = x@A.T (unscaled) into scratch, copied to xa_out when kept (into xa_out
  //             itself, cuBLASLt could pick another algorithm by D's alignment and round t
  //             differently), the scale on a copy of B.
  const bool ours = shrink_is_ours(
      p.lora_a.cs == 1 && fold_shrink_supported(p.dtype, p.x.p, x_rs, p.k, p.lora_a.p, p.lora_a.rs, p.r), p.m, p.r);
  // Scratch: [t][B copy][GEMM workspace], each 256-byte aligned; held until the GEMM is enqueued.
  const int64_t t_bytes = round_up(p.m * p.r * es, 256), b_bytes = round_up(p.n * p.r * es, 256);
  g.a2 = g.b2 = p.x.p;  // placeholders for the workspace query (TMA descriptors are not built there)
  const int64_t ws_bytes = round_up(int64_t(fold_gemm_workspace(p.dtype, g)), 256);
  const Scratch lease =
      stream_scratch(p.device_index, stream, size_t(t_bytes + b_bytes + ws_bytes), "lora_forward", "x");
  char* scratch = lease.get();
  void* t = scratch;
  if (ours) {
    fold_shrink_product(p.dtype, {p.x.p, x_rs, p.m, p.k, p.lora_a.p, p.lora_a.rs, p.r, t, p.scale, p.xa_out}, stream);
  } else {
    lt::GemmDesc shrink;
    shrink.op = "lora_forward";
    shrink.dtype = p.dtype;
    shrink.m = p.m, shrink.n = p.r, shrink.k = p.k;
    shrink.a = p.x.p, shrink.a_rs = x_rs, shrink.a_cs = 1;
    shrink.b = p.lora_a.p, shrink.b_rs = p.lora_a.cs, shrink.b_cs = p.lora_a.rs;  // A.T
    shrink.d = t, shrink.ldd = p.r;
    lt::gemm(shrink, stream, p.device_index);
    if (p.xa_out)
      LORAOPS_CUDA_CHECK(cudaMemcpyAsync(p.xa_out, t, size_t(p.m * p.r * es), cudaMemcpyDeviceToDevice, stream));
  }
  g.a2 = t;
  g.b2 = scaled_factor(p.dtype, p.lora_b, p.n, p.r, ours ? 1.f : p.scale, scratch + t_bytes, &g.ldb2, stream, p.device_index);
  fold_gemm(p.dtype, g, scratch + t_bytes + b_bytes, stream);
}

bool lora_backward_fold_supported(const detail::LoraBackwardParams& p) {
  if (!fold_dtype(p.dtype)) return false;
  if (p.r <= 0 || p.scale == 0.f || p.m <= 0 || p.n <= 0 || p.k <= 0) return false;
  if (p.k % 8 != 0 || p.r % 8 != 0 || p.n % 8 != 0) return false;
  if (p.m >= kI32 || p.k >= kI32 || p.n + p.r >= kI32) return false;
  // W as the N-major B operand: rows of k, 16-byte aligned
  if (p.weight.cs != 1 || !rows16(p.weight.p, p.weight.rs, 2) || p.weight.rs < p.k) return false;
  return aligned16(p.grad_x);  // contiguous [m, k], stored by TMA
}

// The backward's scratch: [scale*A: r x k][B.T (the shrink's) or B packed (the pass's): r x n]
// [scale*gB: m x r][GEMM workspace][the pass over g's partials (r <= kFoldGPassMaxR)], each
// 256-byte aligned.
namespace {
struct BackwardScratch {  // byte offsets
  int64_t scaled_a, b_copy, sgb, gemm_ws, partials, end;
};
BackwardScratch backward_scratch(const detail::LoraBackwardParams& p) {
  FoldGemmArgs a;
  a.m = p.m, a.n = p.k, a.k1 = p.n, a.k2 = p.r;
  a.a = a.a2 = a.b = a.b2 = p.weight.p;  // placeholders: the workspace depends on the shape only
  a.lda = p.n, a.lda2 = p.r, a.ldb = p.weight.rs, a.ldb2 = p.k, a.b_k_major = false;
  a.d = p.grad_x;
  BackwardScratch s;
  s.scaled_a = 0;
  s.b_copy = s.scaled_a + round_up(p.r * p.k * 2, 256);
  s.sgb = s.b_copy + round_up(p.r * p.n * 2, 256);
  s.gemm_ws = s.sgb + round_up(p.m * p.r * 2, 256);
  s.partials = s.gemm_ws + round_up(int64_t(fold_gemm_workspace(p.dtype, a)), 256);
  s.end = s.partials + (p.r <= kFoldGPassMaxR ? round_up(int64_t(fold_g_pass_scratch(p.m, p.n)), 256) : 0);
  return s;
}

// The pass over g's arguments (its sum kernels need only p and the scratch).
FoldGPassArgs g_pass_args(const detail::LoraBackwardParams& p, const void* g, int64_t g_rs, const void* b,
                          int64_t b_rs, const void* t, int64_t t_rs, void* gb, int64_t ld_gb, void* scratch) {
  const BackwardScratch at = backward_scratch(p);
  char* const sc = static_cast<char*>(scratch);
  return {g, g_rs, p.m, p.n, b, b_rs, t, t_rs, p.r, p.scale, gb, ld_gb, sc + at.sgb, p.grad_b, sc + at.partials};
}

std::atomic<bool>& g_pass_on() {
  static std::atomic<bool> on{true};
  return on;
}
}  // namespace

void set_fold_g_pass(bool on) { g_pass_on().store(on, std::memory_order_relaxed); }

int64_t lora_backward_fold_scratch(const detail::LoraBackwardParams& p) {
  return backward_scratch(p).end;
}

FoldGb lora_backward_fold_gb(const detail::LoraBackwardParams& p, const void* g, int64_t g_rs, void* gb,
                             int64_t ld_gb, const void* t, int64_t t_rs, void* scratch, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const BackwardScratch at = backward_scratch(p);
  char* const sc = static_cast<char*>(scratch);
  // one pass over g for gB and grad_b where it applies, else our shrink for gB alone
  const bool pass = g_pass_on().load(std::memory_order_relaxed) && t != nullptr &&
                    fold_g_pass_supported(p.dtype, g, g_rs, p.m, p.n, t, t_rs, p.r);
  if (!pass &&
      !shrink_is_ours(ld_gb == p.r && fold_shrink_supported(p.dtype, g, g_rs, p.n, sc + at.b_copy, p.n, p.r), p.m, p.r))
    return FoldGb::None;
  DeviceGuard guard(p.device_index);
  if (pass) {  // B read in place where its rows suit the pass (else packed)
    int64_t b_rs = 0;
    const void* b = scaled_factor(p.dtype, p.lora_b, p.n, p.r, 1.f, sc + at.b_copy, &b_rs, stream, p.device_index);
    fold_g_pass(p.dtype, g_pass_args(p, g, g_rs, b, b_rs, t, t_rs, gb, ld_gb, scratch), stream);
    return FoldGb::GbAndGradB;
  }
  // B.T: [r, n], contiguous (a small copy), the shrink's "A"
  scale_copy(p.dtype, detail::MatView{p.lora_b.p, p.lora_b.cs, p.lora_b.rs}, p.r, p.n, 1.f, sc + at.b_copy, stream,
             p.device_index);
  fold_shrink_product(p.dtype, {g, g_rs, p.m, p.n, sc + at.b_copy, p.n, p.r, sc + at.sgb, p.scale, gb}, stream);
  return FoldGb::Gb;
}

void lora_backward_fold_grad_b(const detail::LoraBackwardParams& p, void* scratch, void* stream) {
  DeviceGuard guard(p.device_index);
  fold_g_pass_grad_b(p.dtype, g_pass_args(p, nullptr, 0, nullptr, 0, nullptr, 0, nullptr, 0, scratch), stream);
}

void lora_backward_fold_grad_x(const detail::LoraBackwardParams& p, const void* g, int64_t g_rs, const void* gb,
                               int64_t ld_gb, bool scaled_gb, void* scratch, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(p.device_index);
  const BackwardScratch at = backward_scratch(p);
  char* const sc = static_cast<char*>(scratch);
  FoldGemmArgs a;
  a.m = p.m, a.n = p.k, a.k1 = p.n, a.k2 = p.r;
  a.a = g, a.lda = g_rs;
  a.b = p.weight.p, a.ldb = p.weight.rs, a.b_k_major = false;
  a.d = p.grad_x;
  if (scaled_gb) {  // [g | scale*gB] @ [W ; A]
    a.a2 = sc + at.sgb, a.lda2 = p.r;
    a.b2 = scaled_factor(p.dtype, p.lora_a, p.r, p.k, 1.f, sc + at.scaled_a, &a.ldb2, stream, p.device_index);
  } else {  // [g | gB] @ [W ; scale*A]
    a.a2 = gb, a.lda2 = ld_gb;
    a.b2 = scaled_factor(p.dtype, p.lora_a, p.r, p.k, p.scale, sc + at.scaled_a, &a.ldb2, stream, p.device_index);
  }
  fold_gemm(p.dtype, a, sc + at.gemm_ws, stream);
}

}  // namespace loraops::cuda
