// The reference matmul, LoRA and attention: the oracle every test compares against. Plain
// loops in the order the contract writes the formulas, every element read through its strides,
// fp64 accumulation and fp64 math throughout; each result is rounded once, when stored.
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/common.hpp"
#include "cpu/kernels.hpp"

namespace loraops::cpu {

namespace {

double mat_at(const MatView& v, DType t, int64_t i, int64_t j) {
  return ldd(v.p, t, i * v.rs + j * v.cs);
}

// Row offsets of a RowsView, computed once (row_offset walks the leading dims).
std::vector<int64_t> row_offsets(const RowsView& v) {
  std::vector<int64_t> off(size_t(v.rows));
  for (int64_t i = 0; i < v.rows; ++i) off[size_t(i)] = v.row_offset(i);
  return off;
}

void store(void* out, DType t, int64_t i, double v) { st(out, t, i, float(v)); }

}  // namespace

void matmul_reference(const MatmulParams& p, void*) {
  const DType t = p.dtype;
  for (int64_t b = 0; b < p.batch; ++b) {
    const MatView a{at(p.a.p, t, b * p.a_bs), p.a.rs, p.a.cs};
    const MatView bm{at(p.b.p, t, b * p.b_bs), p.b.rs, p.b.cs};
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) {
        double acc = 0.0;
        for (int64_t l = 0; l < p.k; ++l) acc += mat_at(a, t, i, l) * mat_at(bm, t, l, j);
        double v = double(p.alpha) * acc;
        if (p.beta != 0.f) {
          const MatView c{at(p.c.p, t, b * p.c_bs), p.c.rs, p.c.cs};
          v += double(p.beta) * mat_at(c, t, i, j);
        }
        store(p.out, t, (b * p.m + i) * p.n + j, v);
      }
  }
}

// y = x@W.T + bias + scale*(x@A.T)@B.T, with t = x@A.T kept in fp64.
void lora_forward_reference(const LoraForwardParams& p, void*) {
  const DType t = p.dtype;
  const std::vector<int64_t> xo = row_offsets(p.x);
  auto x = [&](int64_t i, int64_t l) { return ldd(p.x.p, t, xo[size_t(i)] + l * p.x.col_stride); };
  std::vector<double> tr(size_t(p.r));
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t s = 0; s < p.r; ++s) {
      double acc = 0.0;
      for (int64_t l = 0; l < p.k; ++l) acc += x(i, l) * mat_at(p.lora_a, t, s, l);
      tr[size_t(s)] = acc;
      if (p.xa_out) store(p.xa_out, t, i * p.r + s, acc);
    }
    for (int64_t j = 0; j < p.n; ++j) {
      double base = 0.0;
      for (int64_t l = 0; l < p.k; ++l) base += x(i, l) * mat_at(p.weight, t, j, l);
      double lora = 0.0;
      for (int64_t s = 0; s < p.r; ++s) lora += tr[size_t(s)] * mat_at(p.lora_b, t, j, s);
      double v = base + double(p.scale) * lora;
      if (p.bias) v += ldd(p.bias, t, j * p.bias_stride);
      store(p.out, t, i * p.n + j, v);
    }
  }
}

// With g = grad_y: gB = g@B and t = x@A.T in fp64 (t = the given xa when there is one), then
// grad_x = g@W + scale*gB@A, grad_a = scale*gB.T@x, grad_b = scale*g.T@t.
void lora_backward_reference(const LoraBackwardParams& p, void*) {
  const DType t = p.dtype;
  const int64_t m = p.m, k = p.k, n = p.n, r = p.r;
  const double scale = p.scale;
  const std::vector<int64_t> go = row_offsets(p.grad_y), xo = row_offsets(p.x);
  auto g = [&](int64_t i, int64_t j) {
    return ldd(p.grad_y.p, t, go[size_t(i)] + j * p.grad_y.col_stride);
  };
  auto x = [&](int64_t i, int64_t l) { return ldd(p.x.p, t, xo[size_t(i)] + l * p.x.col_stride); };
  std::vector<double> gb(size_t(m * r)), tx(size_t(m * r));
  const std::vector<int64_t> ao = p.xa.p ? row_offsets(p.xa) : std::vector<int64_t>{};
  for (int64_t i = 0; i < m; ++i)
    for (int64_t s = 0; s < r; ++s) {
      double a = 0.0, b = 0.0;
      for (int64_t j = 0; j < n; ++j) a += g(i, j) * mat_at(p.lora_b, t, j, s);
      if (p.xa.p)  // the forward's x@A.T, as given (rounded to the dtype)
        b = ldd(p.xa.p, t, ao[size_t(i)] + s * p.xa.col_stride);
      else
        for (int64_t l = 0; l < k; ++l) b += x(i, l) * mat_at(p.lora_a, t, s, l);
      gb[size_t(i * r + s)] = a;
      tx[size_t(i * r + s)] = b;
    }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < k; ++l) {
      double base = 0.0, lora = 0.0;
      for (int64_t j = 0; j < n; ++j) base += g(i, j) * mat_at(p.weight, t, j, l);
      for (int64_t s = 0; s < r; ++s) lora += gb[size_t(i * r + s)] * mat_at(p.lora_a, t, s, l);
      store(p.grad_x, t, i * k + l, base + scale * lora);
    }
  for (int64_t s = 0; s < r; ++s)
    for (int64_t l = 0; l < k; ++l) {
      double acc = 0.0;
      for (int64_t i = 0; i < m; ++i) acc += gb[size_t(i * r + s)] * x(i, l);
      store(p.grad_a, t, s * k + l, scale * acc);
    }
  for (int64_t j = 0; j < n; ++j)
    for (int64_t s = 0; s < r; ++s) {
      double acc = 0.0;
      for (int64_t i = 0; i < m; ++i) acc += g(i, j) * tx[size_t(i * r + s)];
      store(p.grad_b, t, j * r + s, scale * acc);
    }
}

// Per query row: softmax over the visible keys (j <= i + sk - sq when causal), then the
// weighted sum of v. A row that sees no key gives 0.
void attention_reference(const AttentionParams& p, void*) {
  const DType t = p.dtype;
  const int64_t group = p.hkv > 0 ? p.hq / p.hkv : 1;
  const auto& qs = p.q_strides;
  const auto& ks = p.k_strides;
  const auto& vs = p.v_strides;
  std::vector<double> w(size_t(p.sk));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.hq; ++h) {
      const int64_t hk = h / group;
      const int64_t q0 = b * qs[0] + h * qs[1], k0 = b * ks[0] + hk * ks[1],
                    v0 = b * vs[0] + hk * vs[1];
      for (int64_t i = 0; i < p.sq; ++i) {
        const int64_t visible =
            p.causal ? std::min(p.sk, std::max<int64_t>(0, i + p.sk - p.sq + 1)) : p.sk;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < visible; ++j) {
          double s = 0.0;
          for (int64_t d = 0; d < p.d; ++d)
            s += ldd(p.q, t, q0 + i * qs[2] + d * qs[3]) * ldd(p.k, t, k0 + j * ks[2] + d * ks[3]);
          w[size_t(j)] = s * double(p.scale);
          mx = std::max(mx, w[size_t(j)]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < visible; ++j) sum += (w[size_t(j)] = std::exp(w[size_t(j)] - mx));
        const int64_t o = ((b * p.hq + h) * p.sq + i) * p.d;
        for (int64_t d = 0; d < p.d; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j < visible; ++j)
            acc += w[size_t(j)] * ldd(p.v, t, v0 + j * vs[2] + d * vs[3]);
          store(p.out, t, o + d, visible > 0 ? acc / sum : 0.0);
        }
      }
    }
}

}  // namespace loraops::cpu
