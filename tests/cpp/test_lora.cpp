// lora_forward and lora_backward: every implementation and dtype against the reference over
// decode and prefill row counts, ranks 0..64, bias on/off/strided, scale 0, 3-D and strided
// x / grad_y, odd K and N, empty dims; the reference by hand; bad arguments.
#include <vector>

#include "linalg_test_util.hpp"

namespace loraops::test {
namespace {

struct LoraCase {
  const char* name;
  std::vector<int64_t> lead;  // x's leading dims (x is lead + [K])
  int64_t k, n, r;
  double scale = 1.0;
  bool bias = true;
  Layout lx = Layout::Contig, lw = Layout::Contig, lg = Layout::Contig;
  int64_t bias_stride = 1;
};

// clang-format off
const LoraCase kLoraCases[] = {
    {"decode m=1", {1}, 33, 65, 8, 2.0},
    {"m=1 1-D x", {}, 65, 33, 16, 0.5},
    {"3-D x m=16", {2, 8}, 65, 33, 16, 1.0, false},
    {"m=31 r=1", {31}, 129, 31, 1, 1.5},
    {"m=33 r=64", {33}, 64, 129, 64, 0.5},
    {"decode m=4 r=64", {4}, 129, 70, 64, 0.5},
    {"decode, transposed weight", {2}, 33, 65, 8, 1.0, true, Layout::Contig, Layout::Transposed},
    {"m=129 r=8 no bias", {129}, 33, 65, 8, -1.0, false},
    {"m=200 (row blocks)", {200}, 129, 65, 16, 0.25},
    {"scale 0", {17}, 33, 31, 8, 0.0},
    {"r=0", {9}, 33, 17, 0, 1.0},
    {"k=0", {5}, 0, 7, 4, 1.0},
    {"k=0 no bias", {5}, 0, 7, 4, 1.0, false},
    {"padded x, strided bias", {31}, 33, 65, 8, 1.0, true, Layout::Padded, Layout::Contig,
     Layout::Padded, 3},
    {"transposed x and weight", {33}, 65, 31, 8, 1.0, true, Layout::Transposed,
     Layout::Transposed, Layout::Transposed},
    {"gappy 3-D x", {3, 7}, 33, 17, 8, 1.0, true, Layout::Gappy, Layout::Flipped, Layout::Gappy},
    {"flipped x", {40}, 33, 65, 16, 1.0, false, Layout::Flipped, Layout::Padded, Layout::Flipped},
    {"257 rows", {257}, 65, 33, 16, 0.5},
};
// clang-format on

struct LoraInputs {
  Operand x, w, a, b, bias, g;
};

LoraInputs make_inputs(const LoraCase& lc, DType t) {
  return {make_operand(t, with_last(lc.lead, lc.k), lc.lx),
          make_operand(t, {lc.n, lc.k}, lc.lw),
          make_operand(t, {lc.r, lc.k}),
          make_operand(t, {lc.n, lc.r}, lc.lw),
          make_vector(t, lc.n, lc.bias_stride),
          make_operand(t, with_last(lc.lead, lc.n), lc.lg)};
}

// y sums k products in the base term; the adapter term is about scale*sqrt(r) times as large.
Tol forward_tol(const LoraCase& lc, DType t) {
  return tol_for(t, double(lc.k), 1.0 + std::fabs(lc.scale) * std::sqrt(double(lc.r)));
}

TEST(LoraForward, MatchesReference) {
  for (const LoraCase& lc : kLoraCases)
    for (DType t : kAllDTypes) {
      LoraInputs in = make_inputs(lc, t);
      const Tensor* bias = lc.bias ? &in.bias.view : nullptr;
      const std::vector<int64_t> yshape = with_last(lc.lead, lc.n);
      HostTensor ref = poisoned(t, yshape);
      lora_forward(in.x.view, in.w.view, in.a.view, in.b.view, lc.scale, bias, ref.view(),
                   {.impl = Impl::Reference});
      const Tol tol = forward_tol(lc, t);
      for (Impl impl : impls_under_test()) {
        SCOPED_TRACE(trace(lc.name, t, impl));
        HostTensor out = poisoned(t, yshape);
        lora_forward(in.x.view, in.w.view, in.a.view, in.b.view, lc.scale, bias, out.view(),
                     {.impl = impl});
        EXPECT_TRUE(matches(out, ref, tol));
      }
    }
}

struct Grads {
  HostTensor gx, ga, gb;
};

Grads poisoned_grads(DType t, const LoraCase& lc) {
  return {poisoned(t, with_last(lc.lead, lc.k)), poisoned(t, {lc.r, lc.k}),
          poisoned(t, {lc.n, lc.r})};
}

void run_backward(LoraInputs& in, double scale, Grads& g, Impl impl) {
  lora_backward(in.g.view, in.x.view, in.w.view, in.a.view, in.b.view, scale, g.gx.view(),
                g.ga.view(), g.gb.view(), {.impl = impl});
}

// clang-format off
const LoraCase kBackwardCases[] = {
    {"decode m=1", {1}, 33, 65, 8, 2.0},
    {"3-D m=16", {2, 8}, 65, 33, 16},
    {"m=31 r=1", {31}, 129, 31, 1, 1.5},
    {"m=33 r=64", {33}, 64, 129, 64, 0.5},
    {"m=200 (row blocks)", {200}, 65, 33, 16, 0.25},
    {"m=0", {0}, 33, 17, 8},
    {"3-D m=0", {2, 0}, 33, 17, 8},
    {"k=0", {5}, 0, 7, 4},
    {"r=0", {9}, 33, 17, 0},
    {"scale 0", {17}, 33, 31, 8, 0.0},
    {"strided grad_y (column slice)", {31}, 33, 65, 8, 1.0, false, Layout::Contig, Layout::Contig,
     Layout::Padded},
    {"transposed grad_y and x", {33}, 65, 31, 16, 1.0, false, Layout::Transposed,
     Layout::Transposed, Layout::Transposed},
    {"gappy 3-D", {3, 7}, 33, 17, 8, 1.0, false, Layout::Gappy, Layout::Flipped, Layout::Gappy},
    {"flipped", {40}, 33, 65, 16, -1.0, false, Layout::Flipped, Layout::Padded, Layout::Flipped},
};
// clang-format on

TEST(LoraBackward, MatchesReference) {
  for (const LoraCase& lc : kBackwardCases)
    for (DType t : kAllDTypes) {
      LoraInputs in = make_inputs(lc, t);
      Grads ref = poisoned_grads(t, lc);
      run_backward(in, lc.scale, ref, Impl::Reference);
      int64_t m = 1;
      for (int64_t d : lc.lead) m *= d;
      const double s = std::fabs(lc.scale);
      // grad_x: n products, plus scale*gB@A with gB ~ sqrt(n); grad_a, grad_b: m products of
      // scale*gB resp. scale*t (~ sqrt(n), sqrt(k)) with x resp. g.
      const Tol tx = tol_for(t, double(lc.n), 1.0 + s * std::sqrt(double(lc.r)));
      const Tol ta = tol_for(t, double(m), s * std::sqrt(double(lc.n)) + 1e-3);
      const Tol tb = tol_for(t, double(m), s * std::sqrt(double(lc.k)) + 1e-3);
      for (Impl impl : impls_under_test()) {
        SCOPED_TRACE(trace(lc.name, t, impl));
        Grads got = poisoned_grads(t, lc);
        run_backward(in, lc.scale, got, impl);
        EXPECT_TRUE(matches(got.gx, ref.gx, tx)) << "grad_x";
        EXPECT_TRUE(matches(got.ga, ref.ga, ta)) << "grad_a";
        EXPECT_TRUE(matches(got.gb, ref.gb, tb)) << "grad_b";
      }
    }
}

// m = 0: no rows to reduce over, so both adapter gradients are exactly zero.
TEST(LoraBackward, NoRowsGivesZeroGradients) {
  for (DType t : kAllDTypes)
    for (Impl impl : {Impl::Reference, Impl::Custom, Impl::Auto, Impl::Vendor}) {
      if (impl == Impl::Vendor && !built_with_blas()) continue;
      SCOPED_TRACE(trace("m=0", t, impl));
      LoraCase lc{"m=0", {0}, 33, 17, 8};
      LoraInputs in = make_inputs(lc, t);
      Grads g = poisoned_grads(t, lc);
      run_backward(in, 1.0, g, impl);
      for (int64_t i = 0; i < g.ga.numel(); ++i) ASSERT_EQ(g.ga.get(i), 0.f);
      for (int64_t i = 0; i < g.gb.numel(); ++i) ASSERT_EQ(g.gb.get(i), 0.f);
    }
}

// The forward's xa_out: x@A.T (unscaled, in the dtype) beside an unchanged y, from every
// implementation; the backward given that xa matches the reference backward that recomputes it,
// also with xa as a strided view (rows padded to r + 3). Scale 0 still fills xa.
TEST(LoraForward, KeepsXaForTheBackward) {
  for (const LoraCase& lc : kLoraCases)
    for (DType t : kAllDTypes) {
      LoraInputs in = make_inputs(lc, t);
      const Tensor* bias = lc.bias ? &in.bias.view : nullptr;
      const std::vector<int64_t> yshape = with_last(lc.lead, lc.n), ashape = with_last(lc.lead, lc.r);
      HostTensor ref = poisoned(t, yshape), ref_xa = poisoned(t, ashape);
      lora_forward(in.x.view, in.w.view, in.a.view, in.b.view, lc.scale, bias, ref.view(),
                   {.impl = Impl::Reference});
      {  // the reference's own xa: fp64 products rounded once
        HostTensor y = poisoned(t, yshape);
        Tensor xa = ref_xa.view();
        lora_forward(in.x.view, in.w.view, in.a.view, in.b.view, lc.scale, bias, y.view(),
                     {.impl = Impl::Reference}, &xa);
        EXPECT_TRUE(matches(y, ref, Tol{0, 0})) << lc.name << ": xa_out changed the reference y";
      }
      int64_t m = 1;
      for (int64_t d : lc.lead) m *= d;
      Grads want = poisoned_grads(t, lc);
      run_backward(in, lc.scale, want, Impl::Reference);
      const double sc = std::fabs(lc.scale);
      const Tol tx = tol_for(t, double(lc.n), 1.0 + sc * std::sqrt(double(lc.r)));
      const Tol ta = tol_for(t, double(m), sc * std::sqrt(double(lc.n)) + 1e-3);
      // grad_b from xa rounded to the dtype: each t carries a rounding error of ~eps*|t| that
      // the reference's fp64 t has not; summed over m rows of g that is ~0.06*eps*sqrt(m*k) per
      // element (|x|, |A|, |g| uniform in [-1, 1]); allowed: eps*sqrt(m*k). A wrong xa moves
      // grad_b by ~0.2*sqrt(m*k).
      Tol tb = tol_for(t, double(m), sc * std::sqrt(double(lc.k)) + 1e-3);
      tb.atol += sc * eps_of(t) * std::sqrt(double(m) * double(lc.k));
      for (Impl impl : impls_under_test()) {
        SCOPED_TRACE(trace(lc.name, t, impl));
        HostTensor y = poisoned(t, yshape), xa = poisoned(t, ashape);
        Tensor xav = xa.view();
        lora_forward(in.x.view, in.w.view, in.a.view, in.b.view, lc.scale, bias, y.view(),
                     {.impl = impl}, &xav);
        EXPECT_TRUE(matches(y, ref, forward_tol(lc, t))) << "y";
        EXPECT_TRUE(matches(xa, ref_xa, tol_for(t, double(lc.k)))) << "xa";
        // the same xa as a strided view: rows of r + 3 elements
        HostTensor wide(t, {std::max<int64_t>(m, 1) * (lc.r + 3)});
        poison(wide);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < lc.r; ++j) wide.set(i * (lc.r + 3) + j, xa.get(i * lc.r + j));
        Tensor strided = xav;
        strided.data = wide.data();
        int64_t st = lc.r + 3;
        for (int d = strided.ndim - 2; d >= 0; --d) {
          strided.strides[size_t(d)] = st;
          st *= strided.shape[size_t(d)];
        }
        for (const Tensor* given : {&xav, &strided}) {
          Grads got = poisoned_grads(t, lc);
          lora_backward(in.g.view, in.x.view, in.w.view, in.a.view, in.b.view, lc.scale,
                        got.gx.view(), got.ga.view(), got.gb.view(), {.impl = impl}, given);
          const char* which = given == &xav ? "contiguous xa" : "strided xa";
          EXPECT_TRUE(matches(got.gx, want.gx, tx)) << which << ": grad_x";
          EXPECT_TRUE(matches(got.ga, want.ga, ta)) << which << ": grad_a";
          EXPECT_TRUE(matches(got.gb, want.gb, tb)) << which << ": grad_b";
        }
      }
    }
}

// The backward reads xa where given: a wrong xa must show in grad_b (and only there).
TEST(LoraBackward, UsesTheGivenXa) {
  for (DType t : kAllDTypes)
    for (Impl impl : impls_under_test()) {
      SCOPED_TRACE(trace("given xa", t, impl));
      LoraCase lc{"given xa", {7}, 33, 17, 4, 1.0};
      LoraInputs in = make_inputs(lc, t);
      Grads want = poisoned_grads(t, lc), got = poisoned_grads(t, lc);
      run_backward(in, lc.scale, want, impl);
      HostTensor zeros(t, {7, 4});  // zero-initialised
      Tensor xa = zeros.view();
      lora_backward(in.g.view, in.x.view, in.w.view, in.a.view, in.b.view, lc.scale,
                    got.gx.view(), got.ga.view(), got.gb.view(), {.impl = impl}, &xa);
      EXPECT_TRUE(matches(got.gx, want.gx, Tol{0, 0}));
      EXPECT_TRUE(matches(got.ga, want.ga, Tol{0, 0}));
      for (int64_t i = 0; i < got.gb.numel(); ++i) ASSERT_EQ(got.gb.get(i), 0.f) << i;
    }
}

// x = [1, 2], W = [[1,0],[0,1],[1,1]], A = [[1,1]], B = [[1],[2],[3]], bias = [1,2,3],
// scale = 0.5: x@W.T = [1,2,3], t = x@A.T = 3, scale*t*B.T = [1.5,3,4.5]; y = [3.5, 7, 10.5].
// Backward with g = [1,0,1]: gB = g@B = 4, grad_x = g@W + 0.5*4*A = [2,1] + [2,2] = [4,3],
// grad_a = 0.5*4*x = [2,4], grad_b = 0.5*g.T*t = [1.5, 0, 1.5].
TEST(Lora, ReferenceByHand) {
  const DType f = DType::Float32;
  auto filled = [&](std::vector<int64_t> shape, std::vector<float> v) {
    HostTensor h(f, std::move(shape));
    for (size_t i = 0; i < v.size(); ++i) h.set(int64_t(i), v[i]);
    return h;
  };
  HostTensor x = filled({1, 2}, {1, 2}), w = filled({3, 2}, {1, 0, 0, 1, 1, 1}),
             a = filled({1, 2}, {1, 1}), b = filled({3, 1}, {1, 2, 3}),
             bias = filled({3}, {1, 2, 3}), g = filled({1, 3}, {1, 0, 1});
  HostTensor y = poisoned(f, {1, 3});
  const Tensor bv = bias.view();
  lora_forward(x.view(), w.view(), a.view(), b.view(), 0.5, &bv, y.view(),
               {.impl = Impl::Reference});
  EXPECT_EQ(y.get(0), 3.5f);
  EXPECT_EQ(y.get(1), 7.f);
  EXPECT_EQ(y.get(2), 10.5f);
  HostTensor gx = poisoned(f, {1, 2}), ga = poisoned(f, {1, 2}), gb = poisoned(f, {3, 1});
  lora_backward(g.view(), x.view(), w.view(), a.view(), b.view(), 0.5, gx.view(), ga.view(),
                gb.view(), {.impl = Impl::Reference});
  EXPECT_EQ(gx.get(0), 4.f);
  EXPECT_EQ(gx.get(1), 3.f);
  EXPECT_EQ(ga.get(0), 2.f);
  EXPECT_EQ(ga.get(1), 4.f);
  EXPECT_EQ(gb.get(0), 1.5f);
  EXPECT_EQ(gb.get(1), 0.f);
  EXPECT_EQ(gb.get(2), 1.5f);
}

TEST(Lora, BadArguments) {
  const DType f = DType::Float32;
  Operand x = make_operand(f, {4, 8}), w = make_operand(f, {6, 8}), a = make_operand(f, {2, 8}),
          b = make_operand(f, {6, 2}), bias = make_vector(f, 6), g = make_operand(f, {4, 6});
  Operand w_k = make_operand(f, {6, 7}), a_k = make_operand(f, {2, 7}),
          b_n = make_operand(f, {5, 2}), b_r = make_operand(f, {6, 3}), bias_n = make_vector(f, 5),
          g_bad = make_operand(f, {4, 5}), g_rows = make_operand(f, {3, 6}),
          a_half = make_operand(DType::BFloat16, {2, 8});
  HostTensor y = poisoned(f, {4, 6}), y_bad = poisoned(f, {4, 7}),
             y_half = poisoned(DType::Float16, {4, 6});
  auto fwd = [&](const Operand& w_, const Operand& a_, const Operand& b_, const Tensor* bias_,
                 HostTensor& out) {
    return [&, bias_] { lora_forward(x.view, w_.view, a_.view, b_.view, 1.0, bias_, out.view()); };
  };
  expect_error(fwd(w_k, a, b, nullptr, y), ErrorKind::Value, "weight");
  expect_error(fwd(w, a_k, b, nullptr, y), ErrorKind::Value, "lora_a");
  expect_error(fwd(w, a, b_n, nullptr, y), ErrorKind::Value, "lora_b");
  expect_error(fwd(w, a, b_r, nullptr, y), ErrorKind::Value, "lora_b");
  expect_error(fwd(w, a, b, &bias_n.view, y), ErrorKind::Value, "bias");
  expect_error(fwd(w, a_half, b, nullptr, y), ErrorKind::Type, "lora_a");
  expect_error(fwd(w, a, b, &bias.view, y_bad), ErrorKind::Value, "out");
  expect_error(fwd(w, a, b, &bias.view, y_half), ErrorKind::Type, "out");

  HostTensor gx = poisoned(f, {4, 8}), ga = poisoned(f, {2, 8}), gb = poisoned(f, {6, 2}),
             ga_bad = poisoned(f, {8, 2});
  auto bwd = [&](const Operand& g_, const Operand& a_, HostTensor& ga_) {
    return [&] {
      lora_backward(g_.view, x.view, w.view, a_.view, b.view, 1.0, gx.view(), ga_.view(),
                    gb.view());
    };
  };
  expect_error(bwd(g_bad, a, ga), ErrorKind::Value, "grad_y");
  expect_error(bwd(g_rows, a, ga), ErrorKind::Value, "grad_y");
  expect_error(bwd(g, a_k, ga), ErrorKind::Value, "lora_a");
  expect_error(bwd(g, a, ga_bad), ErrorKind::Value, "grad_a");

  // xa_out / xa: shape [4, r=2] like x with r for K, x's dtype
  HostTensor xa_bad = poisoned(f, {4, 3}), xa_rows = poisoned(f, {3, 2}),
             xa_half = poisoned(DType::BFloat16, {4, 2}), xa_ok = poisoned(f, {4, 2});
  for (HostTensor* bad : {&xa_bad, &xa_rows, &xa_half}) {
    Tensor v = bad->view();
    const ErrorKind kind = bad == &xa_half ? ErrorKind::Type : ErrorKind::Value;
    expect_error([&] { lora_forward(x.view, w.view, a.view, b.view, 1.0, nullptr, y.view(), {}, &v); },
                 kind, "xa_out");
    expect_error([&] {
      lora_backward(g.view, x.view, w.view, a.view, b.view, 1.0, gx.view(), ga.view(), gb.view(),
                    {}, &v);
    }, kind, "xa");
  }
  Tensor ok = xa_ok.view();
  lora_forward(x.view, w.view, a.view, b.view, 1.0, nullptr, y.view(), {}, &ok);  // no throw
}

}  // namespace
}  // namespace loraops::test
