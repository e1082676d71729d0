// Our CPU attention: flash-style, fp32. A work item is a block of query positions of one batch
// entry and one kv head, with the query heads that share that kv head (GQA/MQA) stacked as extra
// rows, so each K/V block serves all of them. For each block of BK keys:
//   S = (scale*Q) @ K_blk.T  on the GEMM micro-kernel (custom_gemm.hpp), K packed transposed;
//                            with a few rows (decode) as dot products against K rows in place,
//   an online-softmax step per row (running max and sum, rescaling the row's accumulator),
//   O += P @ V_blk           on the micro-kernel again, V read in place when it is fp32 with
//                            unit stride along D (else packed),
// and O / sum is stored at the end. Key blocks past the last key any row of the item may see
// (causal) are never touched. Items run in parallel, heaviest (latest causal rows) first; when
// there are too few of them (decode), the heads of a group are split across items.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/common.hpp"
#include "cpu/custom_gemm.hpp"
#include "cpu/fast_exp.hpp"
#include "cpu/kernels.hpp"

namespace loraops::cpu {

namespace {

using gemm::ceil_div;
using gemm::MR;
using gemm::NR;

constexpr int64_t BK = 64;            // keys per block (a multiple of NR)
constexpr int64_t kRowsPerItem = 64;  // query rows (positions x heads) an item aims for
constexpr int64_t kDotRows = 8;       // up to this many rows per item: scores as dot products
constexpr float kInf = std::numeric_limits<float>::infinity();

// One key block's online-softmax step. Row i of s holds the scaled scores of bk keys, of which
// it may see the first valid[i] (<= 0: none). s becomes the unnormalised probabilities
// exp(s - max) (0 for unseen keys); the running max m and sum l are updated and the row's
// accumulator o (d wide) rescaled when the max grows.
LORAOPS_INLINE void softmax_step_any(int64_t rows, int64_t bk, float* s, int64_t lds,
                                     const int64_t* valid, float* m, float* l, float* o,
                                     int64_t ldo, int64_t d) {
  for (int64_t i = 0; i < rows; ++i) {
    float* si = s + i * lds;
    const int64_t nv = std::clamp<int64_t>(valid[i], 0, bk);
    if (nv == 0) {
      for (int64_t j = 0; j < bk; ++j) si[j] = 0.f;
      continue;
    }
    // The reductions are declared to OpenMP as simd reductions: GCC may then reorder them into
    // vector lanes (it may not on its own, float addition not being associative).
    float mx = -kInf;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < nv; ++j) mx = pick(si[j] > mx, si[j], mx);
    const float mnew = m[i] > mx ? m[i] : mx;
    const float alpha = exp_le0(m[i] - mnew);  // 0 on the first block (m = -inf)
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < nv; ++j) {
      const float e = exp_le0(si[j] - mnew);
      si[j] = e;
      sum += e;
    }
    for (int64_t j = nv; j < bk; ++j) si[j] = 0.f;
    l[i] = l[i] * alpha + sum;
    m[i] = mnew;
    if (alpha != 1.f) {
      float* oi = o + i * ldo;
      for (int64_t c = 0; c < d; ++c) oi[c] *= alpha;
    }
  }
}

void softmax_step_base(int64_t rows, int64_t bk, float* s, int64_t lds, const int64_t* valid,
                       float* m, float* l, float* o, int64_t ldo, int64_t d) {
  softmax_step_any(rows, bk, s, lds, valid, m, l, o, ldo, d);
}
#if LORAOPS_AVX2_CLONE
LORAOPS_TARGET_AVX2 void softmax_step_avx2(int64_t rows, int64_t bk, float* s, int64_t lds,
                                           const int64_t* valid, float* m, float* l, float* o,
                                           int64_t ldo, int64_t d) {
  softmax_step_any(rows, bk, s, lds, valid, m, l, o, ldo, d);
}
#endif

void softmax_step(int64_t rows, int64_t bk, float* s, int64_t lds, const int64_t* valid, float* m,
                  float* l, float* o, int64_t ldo, int64_t d) {
#if LORAOPS_AVX2_CLONE
  if (gemm::use_avx2()) return softmax_step_avx2(rows, bk, s, lds, valid, m, l, o, ldo, d);
#endif
  softmax_step_base(rows, bk, s, lds, valid, m, l, o, ldo, d);
}

struct Item {
  int64_t b, hk, h0, nh, i0, nq;  // batch, kv head, first query head and count, positions
};

void run_item(const AttentionParams& p, const Item& it) {
  const DType t = p.dtype;
  const int64_t D = p.d, Dp = ceil_div(D, NR) * NR, rows = it.nh * it.nq;
  const int64_t nmp = ceil_div(rows, MR), rows_p = nmp * MR;
  auto mr = [&](int64_t u) { return int(std::min<int64_t>(MR, rows - u * MR)); };
  const auto& qs = p.q_strides;
  const auto& ks = p.k_strides;
  const auto& vs = p.v_strides;

  // Keys each row sees; rows are ordered head-major: row = hh*nq + (i - i0).
  std::vector<int64_t> visible(static_cast<size_t>(rows)), valid(static_cast<size_t>(rows));
  int64_t kend = 0;
  for (int64_t rr = 0; rr < rows; ++rr) {
    const int64_t i = it.i0 + rr % it.nq;
    visible[size_t(rr)] = p.causal ? std::clamp<int64_t>(i + p.sk - p.sq + 1, 0, p.sk) : p.sk;
    kend = std::max(kend, visible[size_t(rr)]);
  }

  std::vector<float> o(size_t(rows_p * Dp), 0.f), lsum(size_t(rows), 0.f),
      mrow(size_t(rows), -kInf);
  if (kend > 0) {
    // Q rows of the item as a RowsView over (head, position): scale folded in while packing.
    RowsView qv;
    qv.p = const_cast<void*>(at(p.q, t, it.b * qs[0] + it.h0 * qs[1] + it.i0 * qs[2]));
    qv.rows = rows, qv.cols = D, qv.col_stride = qs[3];
    qv.nlead = 2;
    qv.lead_shape = {it.nh, it.nq};
    qv.lead_stride = {qs[1], qs[2]};
    if (it.nh == 1 || it.nq == 1) {  // one level: evenly spaced rows, the cheap case
      qv.nlead = 1;
      qv.lead_shape = {rows};
      qv.lead_stride = {it.nh == 1 ? qs[2] : qs[1]};
    }
    const gemm::Src qsrc = gemm::rows(qv, t);
    // K as the B operand of Q@K.T: element (d, key); V as the B operand of P@V: (key, d).
    const gemm::Src ksrc{t, at(p.k, t, it.b * ks[0] + it.hk * ks[1]), ks[3], ks[2]};
    const gemm::Src vsrc{t, at(p.v, t, it.b * vs[0] + it.hk * vs[1]), vs[2], vs[3]};
    // fp32 rows with unit stride along D are used where they lie.
    const bool k_in_place = t == DType::Float32 && ks[3] == 1;
    const bool v_in_place = t == DType::Float32 && vs[3] == 1;
    // A few query rows (decode): scores as dot products of q with K rows (in place, or
    // converted row by row), instead of packing K transposed for the micro-kernel.
    const bool few = rows <= kDotRows;
    const int64_t ndp = Dp / NR;
    std::vector<float> qp(size_t(rows_p * D)), kp(size_t(BK * D)), vp(size_t(BK * NR)),
        s(size_t(rows_p * BK)), pp(size_t(rows_p * BK));
    if (few) {
      for (int64_t rr = 0; rr < rows; ++rr) {
        float* qr = qp.data() + rr * D;
        gemm::load_row(qsrc, rr, D, qr);
        for (int64_t c = 0; c < D; ++c) qr[c] *= p.scale;
      }
    } else {
      for (int64_t u = 0; u < nmp; ++u)
        gemm::pack_a(qsrc, u * MR, mr(u), 0, D, qp.data() + u * D * MR, p.scale);
    }
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
      const int64_t bk = std::min(BK, kend - j0), nkp = ceil_div(bk, NR);
      if (few) {
        for (int64_t jj = 0; jj < bk; jj += 4) {
          const int nw = int(std::min<int64_t>(4, bk - jj));
          const float* w[4];
          for (int u = 0; u < nw; ++u) {
            const int64_t j = j0 + jj + u;
            if (k_in_place) {
              w[u] = static_cast<const float*>(ksrc.p) + j * ks[2];
            } else {
              gemm::load_col(ksrc, j, D, kp.data() + (jj + u) * D);
              w[u] = kp.data() + (jj + u) * D;
            }
          }
          gemm::dots(int(rows), nw, D, qp.data(), D, w, s.data() + jj, BK);
        }
      } else {
        for (int64_t pj = 0; pj < nkp; ++pj)
          gemm::pack_b(ksrc, 0, D, j0 + pj * NR, int(std::min<int64_t>(NR, bk - pj * NR)),
                       kp.data() + pj * D * NR);
        for (int64_t pj = 0; pj < nkp; ++pj)
          for (int64_t u = 0; u < nmp; ++u)
            gemm::micro(mr(u), D, qp.data() + u * D * MR, kp.data() + pj * D * NR,
                        s.data() + u * MR * BK + pj * NR, BK, false);
      }
      for (int64_t rr = 0; rr < rows; ++rr) valid[size_t(rr)] = visible[size_t(rr)] - j0;
      softmax_step(rows, bk, s.data(), BK, valid.data(), mrow.data(), lsum.data(), o.data(), Dp, D);
      for (int64_t u = 0; u < nmp; ++u)
        gemm::pack_a(gemm::floats(s.data() + u * MR * BK, BK, 1), 0, mr(u), 0, bk,
                     pp.data() + u * BK * MR);
      for (int64_t pd = 0; pd < ndp; ++pd) {
        const float* vb;
        int64_t ldb = NR;
        if (v_in_place && (pd + 1) * NR <= D) {
          vb = static_cast<const float*>(vsrc.p) + j0 * vs[2] + pd * NR;
          ldb = vs[2];
        } else {
          gemm::pack_b(vsrc, j0, bk, pd * NR, int(std::min<int64_t>(NR, D - pd * NR)), vp.data());
          vb = vp.data();
        }
        for (int64_t u = 0; u < nmp; ++u)
          gemm::micro(mr(u), bk, pp.data() + u * BK * MR, vb, ldb, o.data() + u * MR * Dp + pd * NR,
                      Dp, true);
      }
    }
  }
  for (int64_t rr = 0; rr < rows; ++rr) {
    const int64_t h = it.h0 + rr / it.nq, i = it.i0 + rr % it.nq;
    const float inv = lsum[size_t(rr)] > 0.f ? 1.f / lsum[size_t(rr)] : 0.f;
    const float* orow = o.data() + rr * Dp;
    const int64_t base = ((it.b * p.hq + h) * p.sq + i) * D;
    if (t == DType::Float32) {
      float* out = static_cast<float*>(p.out) + base;
      for (int64_t c = 0; c < D; ++c) out[c] = orow[c] * inv;
    } else {
      for (int64_t c = 0; c < D; ++c) st(p.out, t, base + c, orow[c] * inv);
    }
  }
}

}  // namespace

void attention_custom(const AttentionParams& p, void*) {
  if (p.hkv == 0) return;  // then Hq == 0 too: nothing to compute
  const int64_t group = p.hq / p.hkv;
  const int64_t bq = std::min(p.sq, std::max<int64_t>(1, ceil_div(kRowsPerItem, group)));
  const int64_t nqb = ceil_div(p.sq, bq);
  const int64_t base_items = p.batch * p.hkv * nqb;
#if defined(_OPENMP)
  const int64_t threads = omp_get_max_threads();
#else
  const int64_t threads = 1;
#endif
  // Too few items for the threads (decode, few kv heads): split each group's heads.
  int64_t gc = group;
  if (base_items < 2 * threads)
    gc = ceil_div(group, std::min(group, ceil_div(2 * threads, base_items)));
  const int64_t hchunks = ceil_div(group, gc);
  const int64_t items = base_items * hchunks;
  const int64_t work =
      p.batch * p.hq * p.sq * std::max<int64_t>(p.sk, 1) * std::max<int64_t>(p.d, 1);
  gemm::parallel_items(items, work >= (int64_t(1) << 16), [&](int64_t idx) {
    // Query blocks run latest first: under causal masking they have the most keys.
    const int64_t qb = nqb - 1 - idx % nqb;
    int64_t rest = idx / nqb;
    const int64_t hc = rest % hchunks;
    rest /= hchunks;
    const int64_t hk = rest % p.hkv, b = rest / p.hkv;
    Item it;
    it.b = b, it.hk = hk;
    it.h0 = hk * group + hc * gc;
    it.nh = std::min(gc, group - hc * gc);
    it.i0 = qb * bq;
    it.nq = std::min(bq, p.sq - it.i0);
    run_item(p, it);
  });
}

}  // namespace loraops::cpu
