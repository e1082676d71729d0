// matmul: every implementation (vendor, custom, auto) and dtype against the reference, over
// awkward sizes, transposes, alpha/beta with c, batches and strided views; the reference itself
// on a hand-computed case; bad arguments.
#include <vector>

#include "linalg_test_util.hpp"

namespace loraops::test {
namespace {

struct MatmulCase {
  const char* name;
  int64_t batch;  // 0: 2-D
  int64_t m, n, k;
  bool ta = false, tb = false;
  double alpha = 1.0, beta = 0.0;
  bool with_c = false;
  Layout la = Layout::Contig, lb = Layout::Contig, lc = Layout::Contig;
  bool broadcast_b = false;  // b's batch stride 0
};

const MatmulCase kMatmulCases[] = {
    {"1x1x1", 0, 1, 1, 1},
    {"31x33x129", 0, 31, 33, 129},
    {"33x31x1", 0, 33, 31, 1},
    {"129x65x33 trans_a", 0, 129, 65, 33, true, false},
    {"65x129x31 trans_b alpha", 0, 65, 129, 31, false, true, 0.5},
    {"both trans alpha beta c", 0, 33, 17, 65, true, true, -1.5, 0.75, true},
    {"c given, beta 0", 0, 7, 9, 5, false, false, 1.0, 0.0, true},
    {"200x40x300 (row blocks, depth blocks)", 0, 200, 40, 300},
    {"257x129x257", 0, 257, 129, 257},
    {"batched beta c", 3, 31, 33, 17, false, false, 1.0, -2.0, true},
    {"batched trans_b", 2, 17, 33, 65, false, true},
    {"batched broadcast b", 4, 9, 16, 16, false, false, 1.0, 0.0, false, Layout::Contig,
     Layout::Contig, Layout::Contig, true},
    {"few rows, trans_b (dot path), beta c", 0, 3, 65, 129, false, true, 2.0, 0.5, true},
    {"16 rows, padded b.T", 0, 16, 33, 70, false, true, 1.0, 0.0, false, Layout::Contig,
     Layout::Padded},
    {"k=0 beta c", 0, 5, 7, 0, false, false, 1.0, 0.5, true},
    {"k=0 trans_b", 0, 5, 7, 0, false, true},
    {"k=0", 0, 5, 7, 0},
    {"batched k=0", 2, 3, 4, 0},
    {"column slices", 0, 33, 31, 40, false, false, 1.0, 1.0, true, Layout::Padded, Layout::Padded,
     Layout::Padded},
    {"transposed storage", 0, 31, 33, 65, false, false, 1.0, 0.0, false, Layout::Transposed,
     Layout::Transposed},
    {"transposed storage + trans flags", 0, 33, 31, 65, true, true, 1.0, 1.0, true,
     Layout::Transposed, Layout::Transposed, Layout::Transposed},
    {"negative strides", 2, 31, 17, 33, false, true, 1.0, 1.0, true, Layout::Flipped,
     Layout::Flipped, Layout::Flipped},
    {"gappy batched", 2, 17, 31, 33, true, false, 1.0, 0.0, false, Layout::Gappy, Layout::Gappy},
};

std::vector<int64_t> dims(int64_t batch, int64_t r, int64_t c) {
  return batch ? std::vector<int64_t>{batch, r, c} : std::vector<int64_t>{r, c};
}

TEST(Matmul, MatchesReference) {
  for (const MatmulCase& mc : kMatmulCases)
    for (DType t : kAllDTypes) {
      Operand a =
          make_operand(t, mc.ta ? dims(mc.batch, mc.k, mc.m) : dims(mc.batch, mc.m, mc.k), mc.la);
      Operand b =
          make_operand(t, mc.tb ? dims(mc.batch, mc.n, mc.k) : dims(mc.batch, mc.k, mc.n), mc.lb);
      if (mc.broadcast_b) {
        b = make_operand(t, mc.tb ? dims(0, mc.n, mc.k) : dims(0, mc.k, mc.n), mc.lb);
        Tensor v = b.view;
        v.ndim = 3;
        v.shape = {mc.batch, b.view.shape[0], b.view.shape[1]};
        v.strides = {0, b.view.strides[0], b.view.strides[1]};
        b.view = v;
      }
      Operand c = make_operand(t, dims(mc.batch, mc.m, mc.n), mc.lc);
      MatmulOptions opt;
      opt.trans_a = mc.ta, opt.trans_b = mc.tb, opt.alpha = mc.alpha, opt.beta = mc.beta;
      if (mc.with_c) opt.c = &c.view;
      HostTensor ref = poisoned(t, dims(mc.batch, mc.m, mc.n));
      matmul(a.view, b.view, opt, ref.view(), {.impl = Impl::Reference});
      const Tol tol = tol_for(t, double(mc.k), std::fabs(mc.alpha) + std::fabs(mc.beta));
      for (Impl impl : impls_under_test()) {
        SCOPED_TRACE(trace(mc.name, t, impl));
        HostTensor out = poisoned(t, dims(mc.batch, mc.m, mc.n));
        matmul(a.view, b.view, opt, out.view(), {.impl = impl});
        EXPECT_TRUE(matches(out, ref, tol));
      }
    }
}

// The oracle is not checked against itself only: small products worked out by hand.
TEST(Matmul, ReferenceByHand) {
  HostTensor a(DType::Float32, {2, 2}), b(DType::Float32, {2, 2}), c(DType::Float32, {2, 2});
  const float av[] = {1, 2, 3, 4}, bv[] = {5, 6, 7, 8};
  for (int i = 0; i < 4; ++i) a.set(i, av[i]), b.set(i, bv[i]), c.set(i, 1.f);
  auto run = [&](bool ta, double alpha, double beta, bool with_c) {
    MatmulOptions opt;
    opt.trans_a = ta, opt.alpha = alpha, opt.beta = beta;
    Tensor cv = c.view();
    if (with_c) opt.c = &cv;
    HostTensor out = poisoned(DType::Float32, {2, 2});
    matmul(a.view(), b.view(), opt, out.view(), {.impl = Impl::Reference});
    return std::vector<float>{out.get(0), out.get(1), out.get(2), out.get(3)};
  };
  EXPECT_EQ(run(false, 1, 0, false), (std::vector<float>{19, 22, 43, 50}));
  EXPECT_EQ(run(false, 2, 1, true), (std::vector<float>{39, 45, 87, 101}));
  EXPECT_EQ(run(true, 1, 0, false), (std::vector<float>{26, 30, 38, 44}));
}

TEST(Matmul, BadArguments) {
  const DType f = DType::Float32;
  Operand a = make_operand(f, {4, 5}), b = make_operand(f, {5, 6}), b_bad = make_operand(f, {4, 6});
  Operand b_half = make_operand(DType::Float16, {5, 6});
  HostTensor out = poisoned(f, {4, 6}), wrong = poisoned(f, {6, 4});
  expect_error([&] { matmul(a.view, b_bad.view, {}, out.view()); }, ErrorKind::Value, "b");
  expect_error([&] { matmul(a.view, b_half.view, {}, out.view()); }, ErrorKind::Type, "b");
  MatmulOptions beta_no_c;
  beta_no_c.beta = 1.0;
  expect_error([&] { matmul(a.view, b.view, beta_no_c, out.view()); }, ErrorKind::Value, "c");
  expect_error([&] { matmul(a.view, b.view, {}, wrong.view()); }, ErrorKind::Value, "out");
  Operand a3 = make_operand(f, {2, 4, 5}), b3 = make_operand(f, {3, 5, 6});
  HostTensor out3 = poisoned(f, {2, 4, 6});
  expect_error([&] { matmul(a3.view, b3.view, {}, out3.view()); }, ErrorKind::Value, "b");
}

}  // namespace
}  // namespace loraops::test
