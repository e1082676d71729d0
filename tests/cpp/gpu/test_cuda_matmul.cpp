// matmul on CUDA (cuBLASLt, impl=vendor and auto) against the CPU reference: every dtype, sizes
// 1..1023, transposes, alpha/beta with a differently strided c, batches with broadcasts, column
// slices, misaligned and no-unit-stride views (packing), negative strides, k = 0; true fp32 by
// default (TF32 only when allowed); the wrapper's bias epilogue, forced packing and a D with
// padded rows; the caller's stream and CUDA-graph capture.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "cuda/vendor/cublaslt.hpp"
#include "gpu_util.hpp"
#include "linalg_test_util.hpp"

namespace loraops::test {
namespace {

namespace lt = loraops::cuda::lt;

// Layouts beyond linalg_test_util's: Stepped is every other column of a matrix twice as wide (no
// unit stride at all: cuBLASLt cannot take it, the wrapper packs it); Odd has rows of C+3
// elements and starts one element in (an odd ld and a pointer aligned only to the element).
enum class Lay { Contig, Padded, Transposed, Flipped, Gappy, Stepped, Odd };

Operand make(DType t, const std::vector<int64_t>& shape, Lay lay) {
  switch (lay) {
    case Lay::Contig: return make_operand(t, shape, Layout::Contig);
    case Lay::Padded: return make_operand(t, shape, Layout::Padded);
    case Lay::Transposed: return make_operand(t, shape, Layout::Transposed);
    case Lay::Flipped: return make_operand(t, shape, Layout::Flipped);
    case Lay::Gappy: return make_operand(t, shape, Layout::Gappy);
    case Lay::Stepped:
    case Lay::Odd: break;
  }
  const size_t last = shape.size() - 1;
  std::vector<int64_t> st = shape;
  if (lay == Lay::Stepped) st[last] *= 2;
  else st[last] += 3;
  Operand o{random_tensor(t, st), {}};
  Tensor v = o.storage.view();
  for (size_t d = 0; d < shape.size(); ++d) v.shape[d] = shape[d];
  if (lay == Lay::Stepped) v.strides[last] = 2;
  else v.data = static_cast<uint8_t*>(v.data) + dtype_size(t);
  o.view = v;
  return o;
}

std::vector<int64_t> dims(int64_t batch, int64_t r, int64_t c) {
  return batch ? std::vector<int64_t>{batch, r, c} : std::vector<int64_t>{r, c};
}

// A rank-3 view of a 2-D operand with batch stride 0.
void broadcast(Operand& o, int64_t batch) {
  Tensor v = o.view;
  v.ndim = 3;
  v.shape = {batch, o.view.shape[0], o.view.shape[1]};
  v.strides = {0, o.view.strides[0], o.view.strides[1]};
  o.view = v;
}

// Which way the wrapper went, when cuBLASLt made it leave the direct path (informational: the
// results are checked either way, but a fallback costs copies).
void report_route(const std::string& what, const lt::RouteCounts& before) {
  const lt::RouteCounts now = lt::route_counts();
  if (now.pack_all == before.pack_all && now.bias_fallback == before.bias_fallback &&
      now.no_workspace == before.no_workspace)
    return;
  std::printf("[ route    ] %s: %llu pack-all, %llu bias fallback, %llu without workspace\n",
              what.c_str(), (unsigned long long)(now.pack_all - before.pack_all),
              (unsigned long long)(now.bias_fallback - before.bias_fallback),
              (unsigned long long)(now.no_workspace - before.no_workspace));
}

struct MatmulCase {
  const char* name;
  int64_t batch;  // 0: 2-D
  int64_t m, n, k;
  bool ta = false, tb = false;
  double alpha = 1.0, beta = 0.0;
  bool with_c = false;
  Lay la = Lay::Contig, lb = Lay::Contig, lc = Lay::Contig;
  bool broadcast_b = false, broadcast_c = false;  // batch stride 0
};

using L = Lay;
const MatmulCase kCases[] = {
    {"1x1x1", 0, 1, 1, 1},
    {"31x33x129", 0, 31, 33, 129},
    {"33x31x1", 0, 33, 31, 1},
    {"31x33x1023", 0, 31, 33, 1023},
    {"129x1023x33", 0, 129, 1023, 33},
    {"1023x129x31 trans_a", 0, 1023, 129, 31, true, false},
    {"33x1023x129 trans_b alpha", 0, 33, 1023, 129, false, true, 0.5},
    {"1x129x33 (one row) trans_b", 0, 1, 129, 33, false, true},
    {"129x1x33 (one column)", 0, 129, 1, 33},
    {"both trans, alpha beta, c transposed storage", 0, 33, 17, 65, true, true, -1.5, 0.75, true,
     L::Contig, L::Contig, L::Transposed},
    {"beta 1, c a column slice (ldc != ldd)", 0, 31, 33, 129, false, false, 1.0, 1.0, true,
     L::Contig, L::Contig, L::Padded},
    {"c given, beta 0", 0, 7, 9, 5, false, false, 1.0, 0.0, true},
    {"batched beta c", 3, 31, 33, 17, false, false, 1.0, -2.0, true},
    {"batched trans_b", 2, 17, 33, 65, false, true},
    {"batched broadcast b", 4, 9, 16, 16, false, false, 1.0, 0.0, false, L::Contig, L::Contig,
     L::Contig, true},
    {"batched broadcast b trans_b, broadcast c", 3, 33, 31, 17, false, true, 1.0, 0.5, true,
     L::Contig, L::Contig, L::Contig, true, true},
    {"column slices", 0, 33, 31, 40, false, false, 1.0, 1.0, true, L::Padded, L::Padded, L::Padded},
    {"odd ld, element-aligned pointers", 0, 33, 31, 41, false, false, 1.0, 1.0, true, L::Odd,
     L::Odd, L::Odd},
    {"odd ld, batched trans", 2, 31, 17, 33, true, true, 1.0, 0.0, false, L::Odd, L::Odd},
    {"transposed storage", 0, 31, 33, 65, false, false, 1.0, 0.0, false, L::Transposed,
     L::Transposed},
    {"transposed storage + trans flags", 0, 33, 31, 65, true, true, 1.0, 1.0, true, L::Transposed,
     L::Transposed, L::Transposed},
    {"negative strides", 2, 31, 17, 33, false, true, 1.0, 1.0, true, L::Flipped, L::Flipped,
     L::Flipped},
    {"gappy batched", 2, 17, 31, 33, true, false, 1.0, 0.0, false, L::Gappy, L::Gappy},
    {"no unit stride: a", 0, 33, 31, 65, false, false, 1.0, 0.0, false, L::Stepped},
    {"no unit stride: b, c, batched", 2, 31, 33, 17, false, true, 1.0, 0.5, true, L::Contig,
     L::Stepped, L::Stepped},
    {"k=0", 0, 5, 7, 0},
    {"k=0 beta c", 0, 5, 7, 0, false, false, 1.0, 0.5, true},
    {"k=0 trans_b, c no unit stride", 0, 5, 7, 0, false, true, 1.0, -1.0, true, L::Contig,
     L::Contig, L::Stepped},
    {"batched k=0", 2, 3, 4, 0},
};

void check_case(const MatmulCase& mc, DType t, cudaStream_t stream) {
  Operand a = make(t, mc.ta ? dims(mc.batch, mc.k, mc.m) : dims(mc.batch, mc.m, mc.k), mc.la);
  Operand b = make(t, mc.tb ? dims(mc.batch, mc.n, mc.k) : dims(mc.batch, mc.k, mc.n), mc.lb);
  if (mc.broadcast_b) {
    b = make(t, mc.tb ? dims(0, mc.n, mc.k) : dims(0, mc.k, mc.n), mc.lb);
    broadcast(b, mc.batch);
  }
  Operand c = make(t, dims(mc.batch, mc.m, mc.n), mc.lc);
  if (mc.broadcast_c) {
    c = make(t, dims(0, mc.m, mc.n), mc.lc);
    broadcast(c, mc.batch);
  }
  MatmulOptions opt;
  opt.trans_a = mc.ta, opt.trans_b = mc.tb, opt.alpha = mc.alpha, opt.beta = mc.beta;
  if (mc.with_c) opt.c = &c.view;
  HostTensor ref = poisoned(t, dims(mc.batch, mc.m, mc.n));
  matmul(a.view, b.view, opt, ref.view(), {.impl = Impl::Reference});

  DeviceOperand da(a), db(b), dc(c);
  MatmulOptions dopt = opt;
  if (mc.with_c) dopt.c = &dc.view;
  const Tol tol = tol_for(t, double(mc.k), std::fabs(mc.alpha) + std::fabs(mc.beta));
  const lt::RouteCounts before = lt::route_counts();
  for (Impl impl : {Impl::Vendor, Impl::Auto}) {
    SCOPED_TRACE(trace(mc.name, t, impl));
    DeviceOut out(t, dims(mc.batch, mc.m, mc.n));
    matmul(da.view, db.view, dopt, out.view(), {.impl = impl, .stream = stream});
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_TRUE(matches(out.fetch(), ref, tol));
  }
  report_route(std::string(mc.name) + " " + dtype_name(t), before);
}

TEST(CudaMatmul, MatchesReference) {
  LORAOPS_REQUIRE_GPU();
  for (const MatmulCase& mc : kCases)
    for (DType t : kAllDTypes) check_case(mc, t, nullptr);
}

TEST(CudaMatmul, RegisteredForEveryDtype) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes) {
    std::string why;
    EXPECT_TRUE(has_impl("matmul", DeviceType::CUDA, Impl::Vendor, t, &why)) << why;
  }
}

// 1024x1024x4096 against fp64 on a sample of rows: true fp32 stays within 1e-5 of the result's
// scale (TF32's 10-bit mantissa would give ~5e-4); with allow_tf32 the answer is still close.
TEST(CudaMatmul, Fp32IsTrueFp32UnlessTf32IsAllowed) {
  LORAOPS_REQUIRE_GPU();
  constexpr int64_t M = 1024, N = 1024, K = 4096;
  HostTensor a = random_tensor(DType::Float32, {M, K}), b = random_tensor(DType::Float32, {K, N});
  const float* ah = reinterpret_cast<const float*>(a.data());
  const float* bh = reinterpret_cast<const float*>(b.data());
  const int64_t rows[] = {0, 1, 2, 255, 256, 511, 512, 513, 777, 1000, 1021, 1022, 1023};
  std::vector<double> ref(std::size(rows) * size_t(N), 0.0);
  double sum_sq = 0;
  for (size_t r = 0; r < std::size(rows); ++r) {
    double* acc = &ref[r * size_t(N)];
    for (int64_t l = 0; l < K; ++l) {
      const double x = ah[rows[r] * K + l];
      for (int64_t j = 0; j < N; ++j) acc[j] += x * double(bh[l * N + j]);
    }
    for (int64_t j = 0; j < N; ++j) sum_sq += acc[j] * acc[j];
  }
  const double scale = std::sqrt(sum_sq / double(ref.size()));

  DeviceTensor da(a), db(b);
  DeviceOut out(DType::Float32, {M, N});
  auto rel_error = [&](bool tf32) {
    out.poison();
    MatmulOptions opt;
    opt.allow_tf32 = tf32;
    matmul(da.view(), db.view(), opt, out.view(), {.impl = Impl::Vendor});
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const HostTensor& got = out.fetch();
    double worst = 0;
    for (size_t r = 0; r < std::size(rows); ++r)
      for (int64_t j = 0; j < N; ++j) {
        const double e = std::fabs(double(got.get(rows[r] * N + j)) - ref[r * size_t(N) + size_t(j)]);
        worst = std::isnan(e) ? INFINITY : std::max(worst, e);
      }
    return worst / scale;
  };
  const double fp32 = rel_error(false), tf32 = rel_error(true);
  EXPECT_LT(fp32, 1e-5) << "default float32 matmul is not true fp32";
  EXPECT_LT(tf32, 1e-2) << "allow_tf32 result too far off";
  std::printf("[          ] 1024x1024x4096 max error / rms: fp32 %.3g, allow_tf32 %.3g\n", fp32, tf32);
}

// ---- the wrapper directly: the bias epilogue, forced packing, a D with padded rows ------------

struct WrapperCase {
  const char* name;
  int64_t batch, m, n, k;
  bool ta = false, tb = false;
  float alpha = 1.f, beta = 0.f;
  bool bias = true;
  int64_t bias_stride = 1, bias_offset = 0;
  int64_t ldd_pad = 0;
  bool broadcast_b = false;
  bool force_pack = false;
};

const WrapperCase kWrapperCases[] = {
    {"bias", 1, 33, 65, 31},
    {"bias, alpha, beta 1 (LoRA's accumulate)", 1, 31, 129, 33, false, false, 0.5f, 1.f},
    {"bias, batched, broadcast b, trans_b", 3, 17, 33, 65, false, true, 1.f, 0.f, true, 1, 0, 0,
     true},
    {"bias with stride 2 (packed)", 1, 9, 17, 8, false, false, 1.f, 0.f, true, 2},
    {"bias one element in (misaligned, packed)", 1, 16, 24, 32, false, false, 1.f, 0.f, true, 1, 1},
    {"D rows padded", 1, 33, 31, 17, false, false, 1.f, 0.f, false, 1, 0, 5},
    {"D rows padded, bias, beta, batched", 2, 31, 33, 17, true, false, 1.f, 0.5f, true, 1, 0, 3},
    {"forced packing: all operands and D", 2, 31, 33, 17, true, true, 1.f, 0.5f, true, 1, 0, 3,
     false, true},
    {"forced packing, no bias", 1, 65, 33, 129, false, false, 2.f, 0.f, false, 1, 0, 0, false,
     true},
    {"forced packing, broadcast b", 3, 17, 9, 33, false, true, 1.f, 0.f, false, 1, 0, 1, true,
     true},
    {"k=0 with bias and c", 2, 5, 7, 0, false, false, 1.f, 0.5f, true, 1, 0, 2},
};

void check_wrapper(const WrapperCase& w, DType t) {
  const int64_t B = w.batch, m = w.m, n = w.n, k = w.k, es = dtype_size(t);
  const int64_t ldc = n + 3, ldd = n + w.ldd_pad, nb = w.broadcast_b ? 1 : B;
  HostTensor a = random_tensor(t, {B * m * k}), b = random_tensor(t, {nb * k * n});
  HostTensor c = random_tensor(t, {B * m * ldc});
  HostTensor bias = random_tensor(t, {w.bias_offset + n * w.bias_stride});
  lt::GemmDesc g;
  g.op = "test";
  g.dtype = t;
  g.batch = B, g.m = m, g.n = n, g.k = k;
  g.a_rs = w.ta ? 1 : k, g.a_cs = w.ta ? m : 1, g.a_bs = m * k;
  g.b_rs = w.tb ? 1 : n, g.b_cs = w.tb ? k : 1, g.b_bs = w.broadcast_b ? 0 : k * n;
  g.c_rs = ldc, g.c_cs = 1, g.c_bs = m * ldc;
  g.ldd = ldd, g.d_bs = m * ldd;
  g.alpha = w.alpha, g.beta = w.beta;
  g.bias_stride = w.bias_stride;
  g.force_pack = w.force_pack;

  // The fp64 answer, rounded once to the dtype, and the size of the terms it sums
  // (|alpha|·Σ|a·b| + |beta·c| + |bias|): cuBLASLt's bias epilogue for float16/bfloat16 rounds
  // the product to the output type before the bias is added (seen on the H200, cuBLASLt 13.0:
  // errors of up to an ulp of the product on rows where bias and product cancel), so a half
  // result is held to an ulp of that size, not of the (possibly cancelled) result.
  HostTensor ref(t, {B, m, n});
  std::vector<double> terms(size_t(B * m * n));
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0, mag = 0;
        for (int64_t l = 0; l < k; ++l) {
          const double p = double(a.get(bi * g.a_bs + i * g.a_rs + l * g.a_cs)) *
                           double(b.get(bi * g.b_bs + l * g.b_rs + j * g.b_cs));
          acc += p;
          mag += std::fabs(p);
        }
        double v = double(w.alpha) * acc;
        mag *= std::fabs(double(w.alpha));
        if (w.beta != 0.f) {
          const double cv = double(w.beta) * c.get(bi * g.c_bs + i * ldc + j);
          v += cv;
          mag += std::fabs(cv);
        }
        if (w.bias) {
          const double bv = bias.get(w.bias_offset + j * w.bias_stride);
          v += bv;
          mag += std::fabs(bv);
        }
        ref.set((bi * m + i) * n + j, float(v));
        terms[size_t((bi * m + i) * n + j)] = mag;
      }

  DeviceTensor da(a), db(b), dc(c), dbias(bias);
  HostTensor d(t, {B * m * ldd});
  DeviceTensor dd(d);
  dd.poison();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  g.a = da.ptr, g.b = db.ptr, g.d = dd.ptr;
  if (w.beta != 0.f) g.c = dc.ptr;
  if (w.bias) g.bias = static_cast<uint8_t*>(dbias.ptr) + w.bias_offset * es;
  const lt::RouteCounts before = lt::route_counts();
  lt::gemm(g, nullptr, 0);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (!w.force_pack) report_route(std::string(w.name) + " " + dtype_name(t), before);
  dd.to_host();

  HostTensor got(t, {B, m, n});
  bool padding_intact = true;
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) got.set((bi * m + i) * n + j, d.get((bi * m + i) * ldd + j));
      const uint8_t* pad = d.bytes.data() + ((bi * m + i) * ldd + n) * es;
      for (int64_t x = 0; x < (ldd - n) * es; ++x) padding_intact &= pad[x] == 0xFF;
    }
  const Tol tol = tol_for(t, double(k), std::fabs(w.alpha) + std::fabs(w.beta) + 1.0);
  EXPECT_TRUE(padding_intact) << "wrote into D's row padding";
  if (t == DType::Float32) {
    EXPECT_TRUE(all_close(got, ref, tol.atol, tol.rtol));
    return;
  }
  int bad = 0;
  for (int64_t e = 0; e < got.numel(); ++e) {
    const double g0 = got.get(e), r0 = ref.get(e);
    const double bound = tol.atol + tol.rtol * std::fabs(r0) + eps_of(t) * terms[size_t(e)];
    if (!(std::fabs(g0 - r0) <= bound) && bad++ < 5)
      ADD_FAILURE() << "[" << e << "] got " << g0 << " want " << r0 << " (bound " << bound << ")";
  }
  EXPECT_EQ(bad, 0);
}

TEST(CudaMatmul, WrapperBiasEpiloguePackingAndPaddedD) {
  LORAOPS_REQUIRE_GPU();
  for (const WrapperCase& w : kWrapperCases)
    for (DType t : kAllDTypes) {
      SCOPED_TRACE(std::string(w.name) + " " + dtype_name(t));
      check_wrapper(w, t);
    }
}

// Checked before any device work, so it runs without a GPU too.
TEST(CudaMatmul, WrapperRejectsSizesBeyondInt32) {
  static char dummy[64];
  lt::GemmDesc g;
  g.m = int64_t(1) << 31, g.n = 4, g.k = 4;
  g.a = g.b = dummy;
  g.d = dummy;
  g.ldd = 4;
  expect_error([&] { lt::gemm(g, nullptr, 0); }, ErrorKind::Unsupported, "a");
  g.m = 4, g.n = int64_t(1) << 31, g.ldd = g.n;
  expect_error([&] { lt::gemm(g, nullptr, 0); }, ErrorKind::Unsupported, "b");
  g.n = 4, g.k = int64_t(3) << 31;
  expect_error([&] { lt::gemm(g, nullptr, 0); }, ErrorKind::Unsupported, "a");
}

// ---- streams and graphs ----------------------------------------------------------------------

struct GraphRun {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~GraphRun() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

TEST(CudaMatmul, RunsOnTheCallersStreamAndUnderGraphCapture) {
  LORAOPS_REQUIRE_GPU();
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (const MatmulCase& mc : kCases)
    if (std::string(mc.name) == "batched beta c" || std::string(mc.name) == "no unit stride: a")
      for (DType t : kAllDTypes) check_case(mc, t, s);

  // Warm once (allocates the workspace and the packing scratch, caches the plan), then capture
  // the same call, packing included, and replay it into a poisoned output.
  const DType t = DType::Float16;
  Operand a = make(t, {3, 33, 65}, Lay::Stepped), b = make(t, {3, 65, 31}, Lay::Contig);
  Operand c = make(t, {3, 33, 31}, Lay::Padded);
  MatmulOptions opt;
  opt.alpha = 0.5, opt.beta = 1.0, opt.c = &c.view;
  HostTensor ref = poisoned(t, {3, 33, 31});
  matmul(a.view, b.view, opt, ref.view(), {.impl = Impl::Reference});
  DeviceOperand da(a), db(b), dc(c);
  opt.c = &dc.view;
  const Tol tol = tol_for(t, 65, 1.5);
  DeviceOut out(t, {3, 33, 31});
  matmul(da.view, db.view, opt, out.view(), {.impl = Impl::Vendor, .stream = s});
  CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_TRUE(matches(out.fetch(), ref, tol)) << "warm-up call";
  out.poison();
  {
    GraphRun g;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    matmul(da.view, db.view, opt, out.view(), {.impl = Impl::Vendor, .stream = s});
    CUDA_OK(cudaStreamEndCapture(s, &g.graph));
    CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
    CUDA_OK(cudaGraphLaunch(g.exec, s));
    CUDA_OK(cudaStreamSynchronize(s));
    EXPECT_TRUE(matches(out.fetch(), ref, tol)) << "graph replay";
    out.poison();
    CUDA_OK(cudaGraphLaunch(g.exec, s));
    CUDA_OK(cudaStreamSynchronize(s));
    EXPECT_TRUE(matches(out.fetch(), ref, tol)) << "second graph replay";
  }

  // First use of a stream inside a capture: nothing may be allocated, so it runs without a
  // workspace (and still right).
  cudaStream_t fresh;
  CUDA_OK(cudaStreamCreateWithFlags(&fresh, cudaStreamNonBlocking));
  Operand a2 = make(DType::Float32, {65, 129}, Lay::Contig);
  Operand b2 = make(DType::Float32, {129, 33}, Lay::Transposed);
  HostTensor ref2 = poisoned(DType::Float32, {65, 33});
  matmul(a2.view, b2.view, {}, ref2.view(), {.impl = Impl::Reference});
  DeviceOperand da2(a2), db2(b2);
  DeviceOut out2(DType::Float32, {65, 33});
  {
    GraphRun g;
    CUDA_OK(cudaStreamBeginCapture(fresh, cudaStreamCaptureModeThreadLocal));
    matmul(da2.view, db2.view, {}, out2.view(), {.impl = Impl::Vendor, .stream = fresh});
    CUDA_OK(cudaStreamEndCapture(fresh, &g.graph));
    CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
    CUDA_OK(cudaGraphLaunch(g.exec, fresh));
    CUDA_OK(cudaStreamSynchronize(fresh));
    EXPECT_TRUE(matches(out2.fetch(), ref2, tol_for(DType::Float32, 129))) << "cold capture";
  }

  // A call that needs packing scratch the (fresh) stream does not have yet: a clear error, not an
  // allocation inside the capture; the capture itself stays valid.
  {
    GraphRun g;
    CUDA_OK(cudaStreamBeginCapture(fresh, cudaStreamCaptureModeThreadLocal));
    expect_error(
        [&] { matmul(da.view, db.view, opt, out.view(), {.impl = Impl::Vendor, .stream = fresh}); },
        ErrorKind::Unsupported, "a");
    CUDA_OK(cudaStreamEndCapture(fresh, &g.graph));
  }
  CUDA_OK(cudaStreamDestroy(fresh));
  CUDA_OK(cudaStreamDestroy(s));
}

TEST(CudaMatmul, RouteSummary) {
  LORAOPS_REQUIRE_GPU();
  const lt::RouteCounts c = lt::route_counts();
  std::printf("[ route    ] so far: %llu cuBLASLt calls, %llu operands packed, %llu pack-all, "
              "%llu bias fallback, %llu without workspace\n",
              (unsigned long long)c.calls, (unsigned long long)c.packed_operands,
              (unsigned long long)c.pack_all, (unsigned long long)c.bias_fallback,
              (unsigned long long)c.no_workspace);
}

}  // namespace
}  // namespace loraops::test
