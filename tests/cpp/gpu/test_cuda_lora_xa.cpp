// The x@A.T hand-off on CUDA: lora_forward's xa_out (custom decode kernels, the cuBLASLt
// composition, auto) against fp64 x@A.T, with y still right; lora_backward given xa (contiguous,
// and padded rows that must be packed) equal to the backward that recomputes it, and a wrong xa
// showing in grad_b alone.
//
// Tolerances, per element, from the magnitudes of the terms:
//   xa:  u·|xa| + 8·u32·K·Σ_l|x_l·A_sl|     (one rounding to the dtype; fp32 sums over K)
//   y:   4·u·S + 8·u32·K·S,  S = Σ_l|x_l·W_jl| + |scale|·Σ_s|t_s|·|B_js| + |bias_j|
// (u the dtype's unit roundoff, u32 = 2^-24): loose next to the O(1) error of a wrong term, as the
// data keeps x@W.T, x@A.T and t@B.T all O(1).
#include <algorithm>
#include <cmath>
#include <vector>

#include "gpu_util.hpp"
#include "linalg_test_util.hpp"

namespace loraops::test {
namespace {

struct XaCase {
  const char* name;
  int64_t m, k, n, r;
  double scale;
};

// clang-format off
const XaCase kCases[] = {
    {"decode m=1", 1, 512, 256, 16, 2.0},
    {"decode m=16", 16, 512, 256, 16, -0.5},
    {"m=100 (custom: the fold)", 100, 512, 256, 16, 2.0},
    {"m=100 r=72 (custom: the fold, cuBLASLt's shrink)", 100, 512, 256, 72, 0.3},
    {"scale 0 still fills xa", 4, 512, 256, 16, 0.0},
    {"scale 0 at one token still fills xa", 1, 512, 256, 16, 0.0},
    {"odd K (unvectorised)", 3, 2049, 65, 8, 1.0},
    {"n=0", 5, 64, 0, 8, 1.0},
    {"k=0", 5, 0, 32, 8, 1.0},
};
// clang-format on

const Impl kImpls[] = {Impl::Custom, Impl::Vendor, Impl::Auto};

struct Data {
  Operand x, w, a, b, bias;
};

Data make_data(const XaCase& c, DType t) {
  seed_rng_for(c.name, t);
  const float rw = 3.f / float(std::sqrt(double(std::max<int64_t>(c.k, 1))));
  const float rb = float(std::sqrt(3.0 / double(std::max<int64_t>(c.r, 1))));
  return {make_operand(t, {c.m, c.k}, Layout::Contig, -1.f, 1.f),
          make_operand(t, {c.n, c.k}, Layout::Contig, -rw, rw),
          make_operand(t, {c.r, c.k}, Layout::Contig, -rw, rw),
          make_operand(t, {c.n, c.r}, Layout::Contig, -rb, rb), make_vector(t, c.n)};
}

// a[i, s] = Σ_l x[i, l]·A[s, l] and its absolute sum, in fp64.
void products(const std::vector<double>& x, const std::vector<double>& a, int64_t m, int64_t k,
              int64_t r, std::vector<double>& val, std::vector<double>& abs) {
  val.assign(size_t(m * r), 0.0), abs.assign(size_t(m * r), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t s = 0; s < r; ++s)
      for (int64_t l = 0; l < k; ++l) {
        const double p = x[size_t(i * k + l)] * a[size_t(s * k + l)];
        val[size_t(i * r + s)] += p;
        abs[size_t(i * r + s)] += std::fabs(p);
      }
}

TEST(CudaLoraXa, ForwardKeepsXaBesideARightY) {
  LORAOPS_REQUIRE_GPU();
  const double u32 = std::ldexp(1.0, -24);
  for (const XaCase& c : kCases)
    for (DType t : kAllDTypes) {
      SCOPED_TRACE(std::string(c.name) + " " + dtype_name(t));
      Data d = make_data(c, t);
      const std::vector<double> x = dense_rows(d.x.view), w = dense_rows(d.w.view),
                                a = dense_rows(d.a.view), b = dense_rows(d.b.view),
                                bias = dense_rows(d.bias.view);
      std::vector<double> xa, xa_abs, xw, xw_abs;
      products(x, a, c.m, c.k, c.r, xa, xa_abs);
      products(x, w, c.m, c.k, c.n, xw, xw_abs);
      const double u = unit_roundoff_of(t), acc = 8 * u32 * double(std::max<int64_t>(c.k, 1));
      HostTensor xa_ref(t, {c.m, c.r}), y_ref(t, {c.m, c.n});
      std::vector<double> xa_tol(size_t(c.m * c.r)), y_tol(size_t(c.m * c.n));
      for (int64_t e = 0; e < c.m * c.r; ++e) {
        xa_ref.set(e, float(xa[size_t(e)]));
        xa_tol[size_t(e)] = u * std::fabs(xa[size_t(e)]) + acc * xa_abs[size_t(e)] + 1e-30;
      }
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) {
          double lo = 0, lo_abs = 0;
          for (int64_t s = 0; s < c.r; ++s) {
            lo += xa[size_t(i * c.r + s)] * b[size_t(j * c.r + s)];
            lo_abs += std::fabs(xa[size_t(i * c.r + s)] * b[size_t(j * c.r + s)]);
          }
          const size_t e = size_t(i * c.n + j);
          y_ref.set(int64_t(e), float(xw[e] + c.scale * lo + bias[size_t(j)]));
          const double s_abs = xw_abs[e] + std::fabs(c.scale) * lo_abs + std::fabs(bias[size_t(j)]);
          y_tol[e] = 4 * u * s_abs + acc * s_abs + 1e-30;
        }
      DeviceOperand dx(d.x), dw(d.w), da(d.a), db(d.b), dbias(d.bias);
      DeviceOut y(t, {c.m, c.n}), xa_out(t, {c.m, c.r});
      for (Impl impl : kImpls) {
        SCOPED_TRACE(impl_name(impl));
        y.poison(), xa_out.poison();
        Tensor xv = xa_out.view();
        lora_forward(dx.view, dw.view, da.view, db.view, c.scale, &dbias.view, y.view(),
                     {.impl = impl}, &xv);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_TRUE(within_tol(xa_out.fetch(), xa_ref, xa_tol, c.r)) << "xa";
        EXPECT_TRUE(within_tol(y.fetch(), y_ref, y_tol, c.n)) << "y";
        // keeping xa changes nothing in y: the same bits as a call without it
        const HostTensor with_xa = y.fetch();
        y.poison();
        lora_forward(dx.view, dw.view, da.view, db.view, c.scale, &dbias.view, y.view(),
                     {.impl = impl});
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_TRUE(matches(y.fetch(), with_xa, Tol{0, 0})) << "y without xa_out";
      }
    }
}

TEST(CudaLoraXa, BackwardUsesTheGivenXa) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes)
    for (Impl impl : {Impl::Vendor, Impl::Custom, Impl::Auto}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " " + impl_name(impl));
      const XaCase c{"backward xa", 96, 512, 256, 16, 1.5};
      Data d = make_data(c, t);
      Operand g = make_operand(t, {c.m, c.n}, Layout::Contig, -1.f, 1.f);
      DeviceOperand dx(d.x), dw(d.w), da(d.a), db(d.b), dbias(d.bias), dg(g);
      // xa from the forward, then copies with padded rows: r + 5 (not 16-byte rows: packed) and
      // r + 8 (16-byte rows: read in place, also by the custom path's pass over g)
      DeviceOut y(t, {c.m, c.n}), xa(t, {c.m, c.r});
      Tensor xav = xa.view();
      lora_forward(dx.view, dw.view, da.view, db.view, c.scale, nullptr, y.view(), {.impl = impl},
                   &xav);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const HostTensor xa_host = xa.fetch();
      auto copy_of_xa = [&](Layout layout) {
        Operand o = make_operand(t, {c.m, c.r}, layout);
        const int64_t off = (static_cast<const uint8_t*>(o.view.data) - o.storage.bytes.data()) / dtype_size(t);
        for (int64_t i = 0; i < c.m; ++i)
          for (int64_t s = 0; s < c.r; ++s) o.storage.set(off + i * o.view.strides[0] + s, xa_host.get(i * c.r + s));
        return o;
      };
      Operand padded = copy_of_xa(Layout::Padded), rowpad = copy_of_xa(Layout::RowPad);
      DeviceOperand dpadded(padded), drowpad(rowpad);
      HostTensor zeros(t, {c.m, c.r});
      DeviceTensor dzeros(zeros);
      Tensor zv = dzeros.view();

      auto backward = [&](const Tensor* given) {
        DeviceOut gx(t, {c.m, c.k}), ga(t, {c.r, c.k}), gb(t, {c.n, c.r});
        lora_backward(dg.view, dx.view, dw.view, da.view, db.view, c.scale, gx.view(), ga.view(),
                      gb.view(), {.impl = impl}, given);
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        return std::vector<HostTensor>{gx.fetch(), ga.fetch(), gb.fetch()};
      };
      const auto want = backward(nullptr);
      for (const Tensor* given : {&xav, &dpadded.view, &drowpad.view}) {
        const auto got = backward(given);
        SCOPED_TRACE(given == &xav ? "contiguous xa" : given == &dpadded.view ? "padded xa" : "16-byte padded xa");
        // grad_x and grad_a do not read t: the same GEMMs, the same bits
        EXPECT_TRUE(matches(got[0], want[0], Tol{0, 0})) << "grad_x";
        EXPECT_TRUE(matches(got[1], want[1], Tol{0, 0})) << "grad_a";
        // grad_b: the forward's t and the backward's own are the same product, rounded the same
        EXPECT_TRUE(matches(got[2], want[2], tol_for(t, double(c.m), c.scale * 4))) << "grad_b";
      }
      const auto wrong = backward(&zv);  // a zero xa: grad_b = 0 exactly, the others unchanged
      EXPECT_TRUE(matches(wrong[0], want[0], Tol{0, 0})) << "grad_x with a zero xa";
      for (int64_t e = 0; e < wrong[2].numel(); ++e) ASSERT_EQ(wrong[2].get(e), 0.f) << e;
    }
}

}  // namespace
}  // namespace loraops::test
