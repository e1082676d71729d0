// The CPU vendor path: the matrix work of matmul, LoRA and attention through the BLAS's
// cblas_sgemm (OpenBLAS when found), with only what sgemm cannot do written here (masked
// softmax, bias, dtype conversion).
//
// An fp32 operand with a unit stride in one dim and a positive leading stride goes to sgemm
// where it lies (NoTrans or Trans picked from the strides); anything else (half dtypes, other
// strides, rows that are not evenly spaced) is first converted into a contiguous fp32 buffer.
// Half outputs are computed into an fp32 buffer and converted once.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu/common.hpp"
#include "cpu/fast_exp.hpp"
#include "cpu/kernels.hpp"
#include "loraops/error.hpp"

#if LORAOPS_WITH_BLAS

// Declared here rather than through cblas.h, whose location differs between BLAS packages.
extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);

namespace loraops::cpu {

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

int checked_int(int64_t v, const char* op) {
  if (v > INT_MAX)
    throw Error(ErrorKind::Unsupported, op, "impl",
                "sizes and strides up to 2^31-1 (the BLAS takes 32-bit ints)", std::to_string(v));
  return int(v);
}

// A [rows, cols] operand as sgemm takes it: data `p` with leading dim `ld`, read transposed when
// `trans`. Points into the caller's tensor when it can, else into the buffer `own` it was given.
struct Mat {
  const float* p = nullptr;
  int64_t ld = 1;
  bool trans = false;
  Mat t() const { return Mat{p, ld, !trans}; }  // the transpose, for free
  // Rows [i0, ...) of the matrix.
  Mat from_row(int64_t i0) const { return Mat{trans ? p + i0 : p + i0 * ld, ld, trans}; }
};

Mat dense(const float* p, int64_t cols) { return Mat{p, std::max<int64_t>(cols, 1), false}; }

// dst[i*cols + j] = element (i, j) as float, where row i starts at row_off(i) and columns are
// `cs` apart. The dtype is resolved once per call, not per element (a converted weight is tens
// of millions of elements). Serial, as everything around the sgemm calls here: OpenMP threads
// spinning after a parallel region slow the BLAS's own threads down badly.
template <class Off>
void to_float(const void* p, DType t, int64_t rows, int64_t cols, Off row_off, int64_t cs,
              float* dst) {
  auto run = [&](auto load) {
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t o = row_off(i);
      float* d = dst + i * cols;
      for (int64_t j = 0; j < cols; ++j) d[j] = load(o + j * cs);
    }
  };
  switch (t) {
    case DType::Float32:
      run([&](int64_t i) { return static_cast<const float*>(p)[i]; });
      break;
    case DType::Float16:
      run([&](int64_t i) { return fp16_to_float(static_cast<const uint16_t*>(p)[i]); });
      break;
    case DType::BFloat16:
      run([&](int64_t i) { return bf16_to_float(static_cast<const uint16_t*>(p)[i]); });
      break;
  }
}

void to_float(const MatView& v, DType t, int64_t rows, int64_t cols, float* dst) {
  to_float(
      v.p, t, rows, cols, [&](int64_t i) { return i * v.rs; }, v.cs, dst);
}

Mat operand(const MatView& v, DType t, int64_t rows, int64_t cols, std::vector<float>& own) {
  if (t == DType::Float32) {
    const float* p = static_cast<const float*>(v.p);
    // Row-major with unit column stride (one row: any row stride will do).
    if ((v.cs == 1 || cols <= 1) && (rows <= 1 || v.rs >= std::max<int64_t>(cols, 1)))
      return Mat{p, rows <= 1 ? std::max<int64_t>(cols, 1) : v.rs, false};
    // Column-major: the transpose of a row-major [cols, rows].
    if ((v.rs == 1 || rows <= 1) && (cols <= 1 || v.cs >= std::max<int64_t>(rows, 1)))
      return Mat{p, cols <= 1 ? std::max<int64_t>(rows, 1) : v.cs, true};
  }
  own.resize(size_t(rows * cols));
  to_float(v, t, rows, cols, own.data());
  return dense(own.data(), cols);
}

Mat operand(const RowsView& v, DType t, std::vector<float>& own) {
  int64_t rs = 0;
  if (v.uniform(&rs)) return operand(MatView{v.p, rs, v.col_stride}, t, v.rows, v.cols, own);
  own.resize(size_t(v.rows * v.cols));
  to_float(
      v.p, t, v.rows, v.cols, [&](int64_t i) { return v.row_offset(i); }, v.col_stride, own.data());
  return dense(own.data(), v.cols);
}

// c[m, n] (ldc) = alpha * op(a) @ op(b) + beta * c, where op(a) is [m, k] and op(b) is [k, n].
// Empty products are handled here (a BLAS may not touch c when k == 0).
void sgemm(const char* op, int64_t m, int64_t n, int64_t k, float alpha, const Mat& a, const Mat& b,
           float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.f ? 0.f : beta * c[i * ldc + j];
    return;
  }
  cblas_sgemm(kRowMajor, a.trans ? kTrans : kNoTrans, b.trans ? kTrans : kNoTrans,
              checked_int(m, op), checked_int(n, op), checked_int(k, op), alpha, a.p,
              checked_int(a.ld, op), b.p, checked_int(b.ld, op), beta, c,
              checked_int(std::max<int64_t>(ldc, 1), op));
}

// A contiguous [rows, cols] output of dtype t as fp32: the output itself for float32, else a
// buffer that finish() converts into it.
struct Output {
  float* p = nullptr;
  std::vector<float> own;
  void* dst = nullptr;
  DType t{};
  Output(void* out, DType dtype, int64_t n) : dst(out), t(dtype) {
    if (t == DType::Float32) {
      p = static_cast<float*>(out);
    } else {
      own.resize(size_t(n));
      p = own.data();
    }
  }
  void finish() {
    auto* d = static_cast<uint16_t*>(dst);
    if (t == DType::Float16)
      for (size_t i = 0; i < own.size(); ++i) d[i] = float_to_fp16(own[i]);
    else if (t == DType::BFloat16)
      for (size_t i = 0; i < own.size(); ++i) d[i] = float_to_bf16(own[i]);
  }
};

// Row x of n scores: softmax over its first nv entries (the keys it may see), zeros after.
// Vectorisable loops with our branch-free exp (libm's expf per element would dominate).
void softmax_prefix(float* x, int64_t nv, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < nv; ++j) mx = pick(x[j] > mx, x[j], mx);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < nv; ++j) {
    const float e = exp_le0(x[j] - mx);
    x[j] = e;
    sum += e;
  }
  const float inv = nv > 0 ? 1.f / sum : 0.f;
  for (int64_t j = 0; j < nv; ++j) x[j] *= inv;
  for (int64_t j = nv; j < n; ++j) x[j] = 0.f;
}

}  // namespace

void matmul_vendor(const MatmulParams& p, void*) {
  const DType t = p.dtype;
  for (int64_t b = 0; b < p.batch; ++b) {
    const MatView av{at(p.a.p, t, b * p.a_bs), p.a.rs, p.a.cs};
    const MatView bv{at(p.b.p, t, b * p.b_bs), p.b.rs, p.b.cs};
    std::vector<float> abuf, bbuf;
    const Mat a = operand(av, t, p.m, p.k, abuf), bo = operand(bv, t, p.k, p.n, bbuf);
    Output out(at(p.out, t, b * p.m * p.n), t, p.m * p.n);
    if (p.beta != 0.f) {
      const MatView cv{at(p.c.p, t, b * p.c_bs), p.c.rs, p.c.cs};
      to_float(cv, t, p.m, p.n, out.p);
    }
    sgemm("matmul", p.m, p.n, p.k, p.alpha, a, bo, p.beta, out.p, p.n);
    out.finish();
  }
}

// What a vendor-only design can do: y = bias (or 0); y += x@W.T; t = x@A.T; y += scale*t@B.T.
void lora_forward_vendor(const LoraForwardParams& p, void*) {
  const DType t = p.dtype;
  const char* op = "lora_forward";
  std::vector<float> xbuf, wbuf, abuf, bbuf;
  const Mat x = operand(p.x, t, xbuf);
  const Mat w = operand(p.weight, t, p.n, p.k, wbuf), a = operand(p.lora_a, t, p.r, p.k, abuf),
            bb = operand(p.lora_b, t, p.n, p.r, bbuf);
  Output y(p.out, t, p.m * p.n);
  float beta = 0.f;
  if (p.bias) {
    std::vector<float> bias(size_t(p.n));
    for (int64_t j = 0; j < p.n; ++j) bias[size_t(j)] = ld(p.bias, t, j * p.bias_stride);
    for (int64_t i = 0; i < p.m; ++i) std::memcpy(y.p + i * p.n, bias.data(), size_t(p.n) * 4);
    beta = 1.f;
  }
  sgemm(op, p.m, p.n, p.k, 1.f, x, w.t(), beta, y.p, p.n);
  std::vector<float> tb(size_t(p.m * p.r));  // x@A.T (zeros when k == 0)
  if (p.r > 0 && p.k > 0) {
    sgemm(op, p.m, p.r, p.k, 1.f, x, a.t(), 0.f, tb.data(), p.r);
    sgemm(op, p.m, p.n, p.r, p.scale, dense(tb.data(), p.r), bb.t(), 1.f, y.p, p.n);
  }
  y.finish();
  if (p.xa_out && !tb.empty()) {
    Output xa(p.xa_out, t, p.m * p.r);
    std::memcpy(xa.p, tb.data(), tb.size() * sizeof(float));
    xa.finish();
  }
}

// gB = g@B; grad_x = g@W + scale*gB@A; grad_a = scale*gB.T@x; t = x@A.T (or the given xa);
// grad_b = scale*g.T@t.
void lora_backward_vendor(const LoraBackwardParams& p, void*) {
  const DType t = p.dtype;
  const char* op = "lora_backward";
  const int64_t m = p.m, k = p.k, n = p.n, r = p.r;
  std::vector<float> gbuf, xbuf, wbuf, abuf, bbuf;
  const Mat g = operand(p.grad_y, t, gbuf), x = operand(p.x, t, xbuf);
  const Mat w = operand(p.weight, t, n, k, wbuf), a = operand(p.lora_a, t, r, k, abuf),
            bb = operand(p.lora_b, t, n, r, bbuf);
  std::vector<float> gbv(size_t(m * r)), txv, xabuf;
  const Mat gb = dense(gbv.data(), r);
  sgemm(op, m, r, n, 1.f, g, bb, 0.f, gbv.data(), r);
  Mat tx;  // the forward's x@A.T, or computed here
  if (p.xa.p) {
    tx = operand(p.xa, t, xabuf);
  } else {
    txv.resize(size_t(m * r));
    sgemm(op, m, r, k, 1.f, x, a.t(), 0.f, txv.data(), r);
    tx = dense(txv.data(), r);
  }

  Output gx(p.grad_x, t, m * k), ga(p.grad_a, t, r * k), gbo(p.grad_b, t, n * r);
  sgemm(op, m, k, n, 1.f, g, w, 0.f, gx.p, k);
  sgemm(op, m, k, r, p.scale, gb, a, 1.f, gx.p, k);
  sgemm(op, r, k, m, p.scale, gb.t(), x, 0.f, ga.p, k);
  sgemm(op, n, r, m, p.scale, g.t(), tx, 0.f, gbo.p, r);
  gx.finish();
  ga.finish();
  gbo.finish();
}

// Per (batch, head) and block of query rows: S = scale*Q@K.T (only the keys some row of the
// block may see), a masked softmax here, O = P@V.
void attention_vendor(const AttentionParams& p, void*) {
  const DType t = p.dtype;
  const char* op = "attention";
  if (p.hkv == 0) return;
  const int64_t group = p.hq / p.hkv, D = p.d;
  constexpr int64_t kRowBlock = 256;  // bounds S at 256 x Sk floats
  const auto& qs = p.q_strides;
  const auto& ks = p.k_strides;
  const auto& vs = p.v_strides;
  std::vector<float> s;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t hk = 0; hk < p.hkv; ++hk) {
      // K and V of this kv head serve its whole group of query heads: converted once.
      std::vector<float> kbuf, vbuf, qbuf;
      const Mat kv =
          operand(MatView{at(p.k, t, b * ks[0] + hk * ks[1]), ks[2], ks[3]}, t, p.sk, D, kbuf);
      const Mat vv =
          operand(MatView{at(p.v, t, b * vs[0] + hk * vs[1]), vs[2], vs[3]}, t, p.sk, D, vbuf);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const Mat q =
            operand(MatView{at(p.q, t, b * qs[0] + h * qs[1]), qs[2], qs[3]}, t, p.sq, D, qbuf);
        Output out(at(p.out, t, (b * p.hq + h) * p.sq * D), t, p.sq * D);
        for (int64_t i0 = 0; i0 < p.sq; i0 += kRowBlock) {
          const int64_t rows = std::min(kRowBlock, p.sq - i0);
          auto visible = [&](int64_t i) {
            return p.causal ? std::clamp<int64_t>(i + p.sk - p.sq + 1, 0, p.sk) : p.sk;
          };
          const int64_t kend = visible(i0 + rows - 1);
          float* o = out.p + i0 * D;
          if (kend == 0) {
            std::fill(o, o + rows * D, 0.f);
            continue;
          }
          s.resize(size_t(rows * kend));
          sgemm(op, rows, kend, D, p.scale, q.from_row(i0), kv.t(), 0.f, s.data(), kend);
          // Serial on purpose: OpenMP threads left spinning after a parallel region would compete
          // with the BLAS's own threads in the next sgemm.
          for (int64_t r = 0; r < rows; ++r)
            softmax_prefix(s.data() + r * kend, visible(i0 + r), kend);
          sgemm(op, rows, D, kend, 1.f, dense(s.data(), kend), vv, 0.f, o, D);
        }
        out.finish();
      }
    }
}

}  // namespace loraops::cpu

#endif  // LORAOPS_WITH_BLAS
