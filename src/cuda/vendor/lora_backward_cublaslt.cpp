// lora_backward on CUDA, vendor: the cuBLASLt composition (W frozen), five GEMMs:
//   gB = g @ B                     [m, r]  (input dtype, in scratch; kept for grad_a)
//   grad_x = scale * gB @ A        [m, k]  then  grad_x = g @ W + 1 * grad_x  (the base GEMM
//                                          absorbs the low-rank term as its C operand)
//   t = x @ A.T                    [m, r]  (input dtype, in scratch; or the forward's xa when
//                                          the caller passes it: then this GEMM is skipped)
//   grad_a = scale * gB.T @ x      [r, k]  (the m rows are the depth)
//   grad_b = scale * g.T @ t       [n, r]
// Nothing of m x k or m x n is materialised but packed copies: g or x with rows that are not
// evenly spaced are packed into scratch first (our pass over g keeps fp32 partials of about
// (n/512) x m x 16: fold_g_pass.cu). A scale of 0 gives grad_a = grad_b = 0 and skips the
// low-rank term of grad_x. grad_a and grad_b run on a side stream beside grad_x's GEMMs from 512
// rows (the custom path: wherever it folds; side_stream.hpp).
// The custom path (register.cpp) is this composition with gB from our kernels: with
// grad_b in one pass over g (kernels/fold_g_pass.cu, r <= 16), or our shrink (kernels/
// fold_shrink.cu, where it wins), each beside scale*gB; grad_x's two GEMMs replaced by one
// folded GEMM (kernels/lora_fold.cu) where they apply.
#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/kernels/strided_copy.hpp"
#include "cuda/side_stream.hpp"
#include "cuda/stream_scratch.hpp"
#include "cuda/vendor/cublaslt.hpp"

namespace loraops::cuda {

namespace {

// Rows as (pointer, row stride, column stride): the caller's if evenly spaced, else packed.
struct Rows {
  const void* p;
  int64_t rs, cs;
};

}  // namespace

void lora_backward_vendor(const detail::LoraBackwardParams& p, void* stream) {
  lora_backward_composition(p, stream, false);
}

void lora_backward_composition(const detail::LoraBackwardParams& p, void* stream_ptr, bool fold) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(p.device_index);
  const int64_t es = dtype_size(p.dtype), m = p.m, k = p.k, n = p.n, r = p.r;

  const bool low_rank = r > 0 && p.scale != 0.f;
  int64_t g_rs = 0, x_rs = 0;
  const bool pack_g = !p.grad_y.uniform(&g_rs) && n > 0;
  const bool pack_x = !p.x.uniform(&x_rs) && k > 0 && low_rank;  // x is read for grad_a, t only
  fold = fold && low_rank && lora_backward_fold_supported(p);
  // The caller's xa as t: used in place when its rows are evenly spaced, else packed; packed too
  // where the fold's pass over g would read it and its rows are not 16-byte vectors, so that gB
  // (and grad_x with it) has the same bits whichever xa the caller gives, or none.
  int64_t xa_rs = 0;
  const bool have_xa = p.xa.p != nullptr && low_rank;
  const bool xa_uniform = have_xa && p.xa.uniform(&xa_rs);
  const bool pack_xa = have_xa && (!xa_uniform || (fold && r <= kFoldGPassMaxR &&
                                                   !(p.xa.col_stride == 1 && fold_g_pass_reads(p.xa.p, xa_rs, r))));
  // gB and t: [m, ld_r], rows 16-byte aligned (cuBLASLt's preferred layout).
  const int64_t ld_r = round_up(r, 16 / es);
  const int64_t g_bytes = pack_g ? round_up(m * n * es, 256) : 0;
  const int64_t x_bytes = pack_x ? round_up(m * k * es, 256) : 0;
  const int64_t r_bytes = low_rank ? round_up(m * ld_r * es, 256) : 0;
  const int64_t t_bytes = have_xa && !pack_xa ? 0 : r_bytes;
  const int64_t fold_bytes = fold ? lora_backward_fold_scratch(p) : 0;
  const Scratch lease = stream_scratch(p.device_index, stream,
                                       size_t(g_bytes + x_bytes + r_bytes + t_bytes + fold_bytes),
                                       "lora_backward", "grad_y");  // held until the last GEMM
  char* scratch = lease.get();
  Rows g{p.grad_y.p, g_rs, p.grad_y.col_stride}, x{p.x.p, x_rs, p.x.col_stride};
  if (pack_g) {
    pack_rows(p.grad_y, es, scratch, stream, p.device_index);
    g = {scratch, n, 1};
  }
  if (pack_x) {
    pack_rows(p.x, es, scratch + g_bytes, stream, p.device_index);
    x = {scratch + g_bytes, k, 1};
  }
  char* gb = low_rank ? scratch + g_bytes + x_bytes : nullptr;
  Rows t{low_rank ? gb + r_bytes : nullptr, ld_r, 1};
  if (have_xa && pack_xa) {
    pack_rows(p.xa, es, gb + r_bytes, stream, p.device_index);
    t.rs = r;
  } else if (have_xa) {
    t = {p.xa.p, xa_rs, p.xa.col_stride};
  }

  lt::GemmDesc d;
  d.op = "lora_backward";
  d.dtype = p.dtype;
  auto run = [&](lt::GemmDesc e) { lt::gemm(e, stream, p.device_index); };

  if (low_rank && !have_xa) {  // first: the fold's pass over g takes t for grad_b
    lt::GemmDesc e = d;  // t = x @ A.T
    e.m = m, e.n = r, e.k = k;
    e.a = x.p, e.a_rs = x.rs, e.a_cs = x.cs;
    e.b = p.lora_a.p, e.b_rs = p.lora_a.cs, e.b_cs = p.lora_a.rs;
    e.d = const_cast<void*>(t.p), e.ldd = ld_r;
    run(e);
  }

  // where g's rows suit the fold's kernels (TMA, 16-byte vectors; a packed g always does)
  const bool g_rows16 = g.cs == 1 && g.rs >= n && rows16(g.p, g.rs, es);
  char* fold_scratch = scratch + g_bytes + x_bytes + r_bytes + t_bytes;
  const FoldGb by_fold = fold && g_rows16 ? lora_backward_fold_gb(p, g.p, g.rs, gb, ld_r, t.cs == 1 ? t.p : nullptr,
                                                                  t.rs, fold_scratch, stream)
                                          : FoldGb::None;
  const bool scaled_gb = by_fold != FoldGb::None;
  if (low_rank && !scaled_gb) {
    lt::GemmDesc e = d;  // gB = g @ B
    e.m = m, e.n = r, e.k = n;
    e.a = g.p, e.a_rs = g.rs, e.a_cs = g.cs;
    e.b = p.lora_b.p, e.b_rs = p.lora_b.rs, e.b_cs = p.lora_b.cs;
    e.d = gb, e.ldd = ld_r;
    run(e);
  }

  // grad_a and grad_b need gB and t (or the pass's partials) only, all ready now: on the side
  // stream they run beside grad_x's GEMM(s), in the SMs its last wave leaves idle
  // (side_stream.hpp), not after it. The GEMM is enqueued first, so that its blocks are
  // dispatched first. The fold at any size; the vendor composition from the fold's sizes up
  // (where it was measured).
  const bool beside = low_rank && (fold || m >= kLoraFoldAutoMinM) && side_streams_on();
  SideStream side = beside ? side_stream(p.device_index, stream) : SideStream{};  // after lease: joins first
  if (side.side()) side.fork(stream);
  if (fold && g_rows16) {  // grad_x = [g | scale * gB] @ [W ; A] (or [g | gB] @ [W ; scale * A])
    lora_backward_fold_grad_x(p, g.p, g.rs, gb, ld_r, scaled_gb, fold_scratch, stream);
  } else {
    lt::GemmDesc base = d;  // grad_x = g @ W (+ scale * gB @ A)
    base.m = m, base.n = k, base.k = n;
    base.a = g.p, base.a_rs = g.rs, base.a_cs = g.cs;
    base.b = p.weight.p, base.b_rs = p.weight.rs, base.b_cs = p.weight.cs;
    base.d = p.grad_x, base.ldd = k;
    if (low_rank) {
      lt::GemmDesc e = base;
      e.k = r;
      e.a = gb, e.a_rs = ld_r, e.a_cs = 1;
      e.b = p.lora_a.p, e.b_rs = p.lora_a.rs, e.b_cs = p.lora_a.cs;
      e.alpha = p.scale;
      run(e);
      base.c = p.grad_x, base.c_rs = k, base.c_cs = 1, base.beta = 1.f;
    }
    run(base);
  }

  if (r == 0) return;  // grad_a and grad_b are empty
  if (!low_rank) {     // scale 0: both gradients are zero
    LORAOPS_CUDA_CHECK(cudaMemsetAsync(p.grad_a, 0, size_t(r * k * es), stream));
    LORAOPS_CUDA_CHECK(cudaMemsetAsync(p.grad_b, 0, size_t(n * r * es), stream));
    return;
  }
  const cudaStream_t aux = side.side() ? side.side() : stream;
  if (by_fold == FoldGb::GbAndGradB) lora_backward_fold_grad_b(p, fold_scratch, aux);  // adds the pass's partials
  {
    lt::GemmDesc e = d;  // grad_a = scale * gB.T @ x
    e.m = r, e.n = k, e.k = m;
    e.a = gb, e.a_rs = 1, e.a_cs = ld_r;
    e.b = x.p, e.b_rs = x.rs, e.b_cs = x.cs;
    e.d = p.grad_a, e.ldd = k;
    e.alpha = p.scale;
    lt::gemm(e, aux, p.device_index);
  }
  if (by_fold != FoldGb::GbAndGradB) {
    lt::GemmDesc e = d;  // grad_b = scale * g.T @ t
    e.m = n, e.n = r, e.k = m;
    e.a = g.p, e.a_rs = g.cs, e.a_cs = g.rs;
    e.b = t.p, e.b_rs = t.rs, e.b_cs = t.cs;
    e.d = p.grad_b, e.ldd = r;
    e.alpha = p.scale;
    lt::gemm(e, aux, p.device_index);
  }
  side.join();
}

}  // namespace loraops::cuda
