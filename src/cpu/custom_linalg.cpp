// Our CPU matmul and LoRA kernels, all built on the blocked float GEMM engine of custom_gemm.hpp
// (operands packed to float panels, AVX2/FMA micro-kernel, OpenMP over row/column blocks).
//
// - matmul: one engine call per batch entry; many small entries run one per thread instead.
// - lora_forward: a single fused pass, y = x@W.T + scale*(x@A.T)@B.T + bias. Per block of rows,
//   x is converted once and serves both x@A.T and x@W.T; scale*(x@A.T) is then appended as r
//   more columns of depth against B.T, and bias is added as each block of y is stored, so y is
//   written once. With up to MB (96) rows, i.e. every decode batch, W is read in one pass; with
//   up to 8 rows it is not even packed (dot products against the weight rows in place).
// - lora_backward: the same fused pass gives grad_x = g@W + scale*(g@B)@A and keeps gB = g@B
//   (m x r); t = x@A.T (m x r; or the forward's xa, read in place, when the caller kept it);
//   then grad_a = scale*gB.T@x and grad_b = scale*g.T@t as GEMMs whose depth is the m rows.
//   Nothing larger than m x r is materialised.
#include <algorithm>
#include <vector>

#include "cpu/common.hpp"
#include "cpu/custom_gemm.hpp"
#include "cpu/kernels.hpp"

namespace loraops::cpu {

namespace {

// Write value(i, j) to a contiguous [*, ld] output for the block's rows and columns.
template <class F>
void store_block(void* out, DType t, int64_t ld, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                 F&& value) {
  if (t == DType::Float32) {
    for (int64_t i = 0; i < rows; ++i) {
      float* o = static_cast<float*>(out) + (i0 + i) * ld + j0;
      for (int64_t j = 0; j < cols; ++j) o[j] = value(i, j);
    }
    return;
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) st(out, t, (i0 + i) * ld + j0 + j, value(i, j));
}

// t = x@A.T ([m, r], row-major floats) as its own GEMM.
void x_at_a(const RowsView& x, const MatView& a, DType t, int64_t m, int64_t k, int64_t r,
            float* out) {
  gemm::Chain tc;
  tc.m = m, tc.n = r, tc.k = k;
  tc.x = gemm::rows(x, t);
  tc.w = gemm::mat_t(a, t);  // [k, r]
  gemm::chain(
      tc, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const float* cb, int64_t ldc) {
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) out[(i0 + i) * r + j0 + j] = cb[i * ldc + j];
      });
}

}  // namespace

void matmul_custom(const MatmulParams& p, void*) {
  const DType t = p.dtype;
  auto one = [&](int64_t b, bool parallel) {
    gemm::Chain op;
    op.m = p.m, op.n = p.n, op.k = p.k;
    op.x = gemm::mat(p.a, t, b * p.a_bs);
    op.w = gemm::mat(p.b, t, b * p.b_bs);
    op.parallel = parallel;
    void* out = at(p.out, t, b * p.m * p.n);
    const void* c = p.beta != 0.f ? at(p.c.p, t, b * p.c_bs) : nullptr;
    const float alpha = p.alpha, beta = p.beta;
    gemm::chain(op, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const float* cb,
                        int64_t ldc) {
      if (c)
        store_block(out, t, p.n, i0, rows, j0, cols, [&](int64_t i, int64_t j) {
          return alpha * cb[i * ldc + j] + beta * ld(c, t, (i0 + i) * p.c.rs + (j0 + j) * p.c.cs);
        });
      else
        store_block(out, t, p.n, i0, rows, j0, cols,
                    [&](int64_t i, int64_t j) { return alpha * cb[i * ldc + j]; });
    });
  };
  // Small products: one per thread beats splitting each one.
  const int64_t work = p.m * p.n * std::max<int64_t>(p.k, 1);
  if (p.batch > 1 && work < (int64_t(1) << 21)) {
    gemm::parallel_items(p.batch, true, [&](int64_t b) { one(b, false); });
    return;
  }
  for (int64_t b = 0; b < p.batch; ++b) one(b, true);
}

void lora_forward_custom(const LoraForwardParams& p, void*) {
  const DType t = p.dtype;
  std::vector<float> bias(p.bias ? size_t(p.n) : 0);
  for (int64_t j = 0; j < int64_t(bias.size()); ++j)
    bias[size_t(j)] = ld(p.bias, t, j * p.bias_stride);
  gemm::Chain op;
  op.m = p.m, op.n = p.n, op.k = p.k, op.r = p.r;
  op.x = gemm::rows(p.x, t);
  op.w = gemm::mat_t(p.weight, t);  // [k, n]
  op.p = gemm::mat_t(p.lora_a, t);  // [k, r]
  op.q = gemm::mat_t(p.lora_b, t);  // [r, n]
  op.scale = p.scale;
  std::vector<float> xa(p.xa_out ? size_t(p.m * p.r) : 0);  // x@A.T, kept by the chain
  op.t_out = p.xa_out ? xa.data() : nullptr;
  const float* bp = bias.empty() ? nullptr : bias.data();
  gemm::chain(
      op, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const float* cb, int64_t ldc) {
        if (bp)
          store_block(p.out, t, p.n, i0, rows, j0, cols,
                      [&](int64_t i, int64_t j) { return cb[i * ldc + j] + bp[j0 + j]; });
        else
          store_block(p.out, t, p.n, i0, rows, j0, cols,
                      [&](int64_t i, int64_t j) { return cb[i * ldc + j]; });
      });
  if (p.xa_out) {
    if (p.n == 0) x_at_a(p.x, p.lora_a, t, p.m, p.k, p.r, xa.data());  // no chain ran
    store_block(p.xa_out, t, p.r, 0, p.m, 0, p.r,
                [&](int64_t i, int64_t j) { return xa[size_t(i * p.r + j)]; });
  }
}

void lora_backward_custom(const LoraBackwardParams& p, void*) {
  const DType t = p.dtype;
  const int64_t m = p.m, k = p.k, n = p.n, r = p.r;
  // Each of these is filled only where it is used (k > 0 resp. r > 0 and rows to reduce).
  std::vector<float> gb(size_t(m * r)), tx(p.xa.p ? 0 : size_t(m * r));
  auto scaled_store = [&](void* out, int64_t ld_out) {
    return [&, out, ld_out](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const float* cb,
                            int64_t ldc) {
      store_block(out, t, ld_out, i0, rows, j0, cols,
                  [&](int64_t i, int64_t j) { return p.scale * cb[i * ldc + j]; });
    };
  };

  // grad_x = g@W + scale*(g@B)@A, keeping gB = g@B.
  gemm::Chain gx;
  gx.m = m, gx.n = k, gx.k = n, gx.r = r;
  gx.x = gemm::rows(p.grad_y, t);
  gx.w = gemm::mat(p.weight, t);  // [n, k]
  gx.p = gemm::mat(p.lora_b, t);  // [n, r]
  gx.q = gemm::mat(p.lora_a, t);  // [r, k]
  gx.scale = p.scale;
  gx.t_out = gb.data();
  gemm::chain(
      gx, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const float* cb, int64_t ldc) {
        store_block(p.grad_x, t, k, i0, rows, j0, cols,
                    [&](int64_t i, int64_t j) { return cb[i * ldc + j]; });
      });

  // t = x@A.T, unless the forward's is given (read in place below)
  if (!p.xa.p) x_at_a(p.x, p.lora_a, t, m, k, r, tx.data());

  // grad_a = scale * gB.T @ x: [r, k], the m rows as depth. gB is only known when k > 0;
  // with k == 0 grad_a is empty anyway.
  gemm::Chain ga;
  ga.m = r, ga.n = k, ga.k = m;
  ga.x = gemm::floats(gb.data(), 1, r);  // gB.T
  ga.w = gemm::rows(p.x, t);
  gemm::chain(ga, scaled_store(p.grad_a, k));

  // grad_b = scale * g.T @ t: [n, r]
  gemm::Chain gbc;
  gbc.m = n, gbc.n = r, gbc.k = m;
  gbc.x = gemm::rows(p.grad_y, t, /*transpose=*/true);
  gbc.w = p.xa.p ? gemm::rows(p.xa, t) : gemm::floats(tx.data(), r, 1);
  gemm::chain(gbc, scaled_store(p.grad_b, r));
}

}  // namespace loraops::cpu
