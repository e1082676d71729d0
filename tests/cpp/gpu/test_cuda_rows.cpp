// The CUDA row kernels (softmax, rms_norm, layer_norm; impl=custom) against the CPU reference:
// every dtype; row lengths from 1 to 262144+5 (every launch configuration: a thread, a few
// threads, a warp, several warps, a block per row in registers, and the looped kernel); row counts
// from 1 to 300000 (more row groups than resident blocks; blocks walking several row groups under
// a capped grid); strided, misaligned, transposed and permuted views; softmax over every dim;
// weight and bias present, absent, strided and misaligned; special rows (-inf, NaN, +inf, huge,
// tiny with eps 0, constant, far from zero); in place; the caller's stream and CUDA-graph capture
// (one launch per op). Outputs are poisoned (NaN) before each call.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cuda/kernels.hpp"
#include "gpu_util.hpp"
#include "ordered_run.hpp"

namespace loraops::test {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

enum class Op { Softmax, RmsNorm, LayerNorm };
constexpr Op kOps[] = {Op::Softmax, Op::RmsNorm, Op::LayerNorm};

const char* op_name(Op op) {
  switch (op) {
    case Op::Softmax: return "softmax";
    case Op::RmsNorm: return "rms_norm";
    case Op::LayerNorm: return "layer_norm";
  }
  return "?";
}

// What an op gets besides x and out.
struct Args {
  int dim = -1;                    // softmax
  const Tensor* weight = nullptr;  // norms
  const Tensor* bias = nullptr;    // layer_norm
  double eps = 1e-5;
};

void call(Op op, const Tensor& x, const Args& a, const Tensor& out, const Exec& ex) {
  switch (op) {
    case Op::Softmax: return softmax(x, a.dim, out, ex);
    case Op::RmsNorm: return rms_norm(x, a.weight, a.eps, out, ex);
    case Op::LayerNorm: return layer_norm(x, a.weight, a.bias, a.eps, out, ex);
  }
}

// As the CPU tests: fp32 a few units in the 5th digit (fp32 sums vs fp64); halves an ulp or so of
// the dtype (both sides round the result once).
::testing::AssertionResult close(const HostTensor& got, const HostTensor& ref) {
  const DType t = got.dtype;
  if (t == DType::Float32) return all_close(got, ref, 10 * eps_of(t), 1e-5);
  return all_close(got, ref, eps_of(t), 2 * eps_of(t));
}

// Inputs in a range that exercises each op (layer_norm sees a non-zero mean).
HostTensor input_for(Op op, DType t, std::vector<int64_t> shape) {
  switch (op) {
    case Op::Softmax: return random_tensor(t, std::move(shape), -4.f, 4.f);
    case Op::RmsNorm: return random_tensor(t, std::move(shape), -2.f, 2.f);
    case Op::LayerNorm: return random_tensor(t, std::move(shape), 1.f, 3.f);
  }
  return {};
}

std::vector<int64_t> shape_of_view(const Tensor& v) {
  return std::vector<int64_t>(v.shape.begin(), v.shape.begin() + v.ndim);
}

// Host storage with its copy on the device; a view of the host storage moves to the same offset
// and strides in the device copy.
struct Mirror {
  HostTensor host;
  DeviceTensor dev;
  explicit Mirror(HostTensor h) : host(std::move(h)), dev(host) {
    // The upload from pageable memory may still be in flight: order it before any stream's work.
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;
  Tensor on_device(Tensor hv) const {
    const auto offset = static_cast<const uint8_t*>(hv.data) - host.bytes.data();
    hv.data = static_cast<uint8_t*>(dev.ptr) + offset;
    hv.device = Device{DeviceType::CUDA, 0};
    return hv;
  }
};

// A weight or bias of `cols` values: contiguous, or a strided / misaligned view of a longer array.
enum class Affine { Contiguous, Stride2, Reversed2, Misaligned };

struct AffineArg {
  std::unique_ptr<Mirror> m;
  Tensor host_view, dev_view;
};

AffineArg make_affine(DType t, int64_t cols, float lo, float hi, Affine kind) {
  AffineArg a;
  const int64_t n = kind == Affine::Contiguous ? cols : kind == Affine::Misaligned ? cols + 1 : 2 * cols;
  a.m = std::make_unique<Mirror>(random_tensor(t, {n}, lo, hi));
  Tensor v = Tensor::contiguous(a.m->host.data(), t, {cols});
  char* base = static_cast<char*>(a.m->host.data());
  const int64_t es = dtype_size(t);
  if (kind == Affine::Stride2) v.strides[0] = 2;
  if (kind == Affine::Reversed2) v.data = base + (2 * cols - 1) * es, v.strides[0] = -2;
  if (kind == Affine::Misaligned) v.data = base + es;
  a.host_view = v;
  a.dev_view = a.m->on_device(v);
  return a;
}

// Runs op on the device view of x (output poisoned first) and on the host view with the
// reference, and compares. `weight`/`bias` apply to the norms only.
void check(Op op, const Mirror& x, const Tensor& xv, const AffineArg* weight = nullptr,
           const AffineArg* bias = nullptr, int dim = -1, double eps = 1e-5,
           cudaStream_t stream = nullptr) {
  Args host_args, dev_args;
  host_args.dim = dev_args.dim = dim;
  host_args.eps = dev_args.eps = eps;
  if (op != Op::Softmax && weight) host_args.weight = &weight->host_view, dev_args.weight = &weight->dev_view;
  if (op == Op::LayerNorm && bias) host_args.bias = &bias->host_view, dev_args.bias = &bias->dev_view;
  HostTensor ref(xv.dtype, shape_of_view(xv)), got(xv.dtype, shape_of_view(xv));
  call(op, xv, host_args, ref.view(), {.impl = Impl::Reference});
  DeviceTensor out(got);
  out.poison();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  call(op, x.on_device(xv), dev_args, out.view(), {.impl = Impl::Custom, .stream = stream});
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  out.to_host();
  EXPECT_TRUE(close(got, ref)) << op_name(op) << " " << dtype_name(xv.dtype) << " shape "
                               << shape_str(xv) << (weight ? " weight" : "") << (bias ? " bias" : "");
}

// Contiguous x of `shape`, with weight and bias (norms) and, when `bare`, without them too.
void check_shape(Op op, DType t, std::vector<int64_t> shape, bool bare) {
  Mirror x(input_for(op, t, shape));
  const int64_t cols = shape.back();
  const AffineArg w = make_affine(t, cols, 0.5f, 1.5f, Affine::Contiguous);
  const AffineArg b = make_affine(t, cols, -0.5f, 0.5f, Affine::Contiguous);
  check(op, x, x.host.view(), &w, &b);
  if (bare && op != Op::Softmax) {
    check(op, x, x.host.view());
    if (op == Op::LayerNorm) check(op, x, x.host.view(), nullptr, &b);
  }
}

TEST(CudaRows, RowLengthsAndCounts) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes)
    for (Op op : kOps) {
      // 2..32 also give 1, 2 and 4 vectors per thread with a thread per row.
      // 2048: a block of 2 warps per row (halves) or of 4 warps (float32). 256 and 512: float32
      // groups of 16 and 32 threads in equal parts (layer_norm's pairwise statistics).
      for (int64_t cols : {1, 2, 7, 8, 16, 31, 32, 33, 256, 512, 1023, 1024, 2048, 2049, 4096, 4099})
        for (int64_t rows : {1, 3, 17}) check_shape(op, t, {rows, cols}, rows <= 3);
      for (int64_t cols : {7, 33, 1024}) check_shape(op, t, {1000, cols}, false);
      check_shape(op, t, {3, 32768}, true);   // a block per row (bf16) or 8 vectors per thread
      check_shape(op, t, {1, 262149}, true);  // the looped kernel (element by element: odd length)
      check_shape(op, t, {2, 131072}, false); // the looped kernel with 16-byte vectors
      check_shape(op, t, {4, 16, 1024}, false);  // the seed shape
    }
}

TEST(CudaRows, MoreRowsThanBlocksFitOnTheDevice) {
  LORAOPS_REQUIRE_GPU();
  // 300000 rows of 1: 128 rows per block, 2344 blocks, more than are resident at once (H200).
  for (DType t : kAllDTypes)
    for (Op op : kOps) check_shape(op, t, {300000, 1}, false);
  // 5000 rows of 1100 float32: 96 threads per row, a block per row, more blocks than resident.
  for (Op op : kOps) check_shape(op, DType::Float32, {5000, 1100}, false);
  // 20000 rows of 1024, every dtype: more row groups than resident blocks, where layer_norm loads
  // weight and bias at the write instead of holding them (fewer rows take the holding kernel).
  for (DType t : kAllDTypes)
    for (Op op : kOps) check_shape(op, t, {20000, 1024}, false);
}

// Every kernel's walk over several row groups per block (RowWalk::next in row_common.cuh; the
// looped kernels' grid stride): the grid capped at 1 and 7 blocks, where it otherwise has a block
// per row group up to 2^31 - 1. A thread a row (1000 x 1), 2-16 threads a row (32, 128 and 33
// columns), a warp or more, 8 vectors a thread and the looped kernel; few rows (layer_norm holding
// weight and bias in registers, loaded with each row) and more row groups than fit on the device
// (loaded at the write).
// A skipped row stays NaN (poisoned); a step too short would rewrite rows with the same values and
// pass.
TEST(CudaRows, BlocksWalkSeveralRowGroups) {
  LORAOPS_REQUIRE_GPU();
  struct Reset {
    ~Reset() { cuda::set_row_grid_limit(0); }
  } reset;
  for (unsigned blocks : {1u, 7u}) {
    cuda::set_row_grid_limit(blocks);
    for (DType t : kAllDTypes)
      for (Op op : kOps) {
        for (std::vector<int64_t> shape : std::vector<std::vector<int64_t>>{
                 {1000, 1}, {1000, 32}, {1000, 128}, {300, 33}, {1000, 1024}, {40, 4096}, {3, 32768},
                 {2, 131072}})
          check_shape(op, t, shape, shape[0] == 300);
        if (blocks == 7) check_shape(op, t, {20000, 1024}, false);
      }
  }
}

// Strided views of x: each is read through the general row addressing, with 16-byte vectors where
// the view still allows them.
TEST(CudaRows, StridedViews) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes)
    for (Op op : kOps) {
      const int64_t es = dtype_size(t);
      auto with_affine = [&](const Mirror& x, const Tensor& v) {
        const AffineArg w = make_affine(t, v.shape[size_t(v.ndim - 1)], 0.5f, 1.5f, Affine::Contiguous);
        const AffineArg b = make_affine(t, v.shape[size_t(v.ndim - 1)], -0.5f, 0.5f, Affine::Contiguous);
        check(op, x, v, &w, &b);
      };
      {  // columns 1..1025 of rows of 1030: row stride > cols, base one element in (no vectors)
        Mirror x(input_for(op, t, {17, 1030}));
        Tensor v = x.host.view();
        v.shape[1] = 1024;
        v.data = static_cast<char*>(v.data) + es;
        with_affine(x, v);
      }
      {  // columns 0..1024 of rows of 1032: aligned, vectors with a row stride > cols
        Mirror x(input_for(op, t, {17, 1032}));
        Tensor v = x.host.view();
        v.shape[1] = 1024;
        with_affine(x, v);
      }
      {  // a transpose: column stride 33
        Mirror x(input_for(op, t, {70, 33}));
        with_affine(x, x.host.view().transposed(0, 1));
      }
      {  // leading dims swapped: rows not evenly spaced (divisions per row), still vectors
        Mirror x(input_for(op, t, {5, 3, 64}));
        with_affine(x, x.host.view().transposed(0, 1));
      }
      {  // each row back to front
        Mirror x(input_for(op, t, {9, 100}));
        Tensor v = x.host.view();
        v.data = static_cast<char*>(v.data) + 99 * es;
        v.strides[1] = -1;
        with_affine(x, v);
      }
      {  // one row broadcast down the rows (row stride 0)
        Mirror x(input_for(op, t, {1, 96}));
        Tensor v = x.host.view();
        v.shape[0] = 6;
        v.strides[0] = 0;
        with_affine(x, v);
      }
      {  // a long row with column stride 2: the looped kernel, element by element
        Mirror x(input_for(op, t, {70001, 2}));
        with_affine(x, x.host.view().transposed(0, 1));
      }
    }
}

TEST(CudaRows, SoftmaxOverEveryDim) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes) {
    Mirror x(input_for(Op::Softmax, t, {5, 6, 7}));
    for (int dim : {0, 1, 2, -1, -2, -3}) check(Op::Softmax, x, x.host.view(), nullptr, nullptr, dim);
    Mirror y(input_for(Op::Softmax, t, {3000, 4}));  // long strided rows over dim 0
    check(Op::Softmax, y, y.host.view(), nullptr, nullptr, 0);
  }
}

TEST(CudaRows, NormWeightAndBiasLayouts) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes)
    for (Op op : {Op::RmsNorm, Op::LayerNorm})
      for (int64_t cols : {65, 1024})
        for (Affine kind : {Affine::Stride2, Affine::Reversed2, Affine::Misaligned}) {
          Mirror x(input_for(op, t, {4, cols}));
          const AffineArg w = make_affine(t, cols, 0.5f, 1.5f, kind);
          const AffineArg b = make_affine(t, cols, -0.5f, 0.5f, kind);
          const AffineArg wc = make_affine(t, cols, 0.5f, 1.5f, Affine::Contiguous);
          check(op, x, x.host.view(), &w, &b);
          check(op, x, x.host.view(), &wc, &b);  // only the bias odd
          check(op, x, x.host.view(), &w, nullptr);
        }
}

// Rows of `cols` made of `pattern` repeated, with random values where the pattern has NaN
// stand-ins (kFill).
constexpr float kFill = 12345.f;

HostTensor rows_of(DType t, const std::vector<std::vector<float>>& patterns, int64_t cols, float lo,
                   float hi) {
  HostTensor x = random_tensor(t, {int64_t(patterns.size()), cols}, lo, hi);
  for (size_t r = 0; r < patterns.size(); ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const float v = patterns[r][size_t(j) % patterns[r].size()];
      if (v != kFill) x.set(int64_t(r) * cols + j, v);
    }
  return x;
}

TEST(CudaRows, SoftmaxSpecialRows) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes) {
    const float big = t == DType::Float16 ? 60000.f : 1e30f;
    const std::vector<std::vector<float>> patterns = {
        {-kInf},                            // no mass anywhere: zeros, not NaN
        {-kInf, kFill, -kInf, kFill},       // -inf entries get 0
        {kFill, kFill, kFill, kNaN},        // NaN in, NaN row out
        {-kInf, kNaN, -kInf, -kInf},
        {kFill, kInf, kFill, -kInf},        // +inf: inf - inf, a NaN row as PyTorch
        {big, 0.f, -big, big},              // no overflow from exp
        {-big},
        {kFill},
    };
    // A thread per row (4), a warp (1000: NaN and inf land mid-row) and the looped kernel.
    for (int64_t cols : {4, 1000, 66000}) {
      Mirror x(rows_of(t, patterns, cols, -4.f, 4.f));
      check(Op::Softmax, x, x.host.view());
    }
  }
}

TEST(CudaRows, NormSpecialRows) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes) {
    // Squares of `big` overflow fp32 (not for float16, whose largest value is 65504).
    const float big = t == DType::Float16 ? 60000.f : 1e30f;
    const std::vector<std::vector<float>> patterns = {
        {kFill, kFill, kNaN, kFill},
        {kInf, kFill, kFill, kFill},        // first element: layer_norm's shift point
        {kFill, kFill, -kInf, kFill},
        {big, kFill, -big, kFill},          // rescaled rows
        {big, big * 0.5f, big, -big},
        {3.f},                              // a constant row: layer_norm gives exactly the bias
        {1e4f, kFill},                      // far from zero
        {0.f},
    };
    // 16384: 8 vectors a thread (the row kept packed), 1000: 4 (layer_norm's fp32 copy), 1024:
    // 4 in equal parts (float32 layer_norm's pairwise statistics), 66000: the looped kernel.
    for (int64_t cols : {4, 1000, 1024, 16384, 66000})
      for (Op op : {Op::RmsNorm, Op::LayerNorm}) {
        Mirror x(rows_of(t, patterns, cols, -1.f, 1.f));
        const AffineArg w = make_affine(t, cols, 0.5f, 1.5f, Affine::Contiguous);
        const AffineArg b = make_affine(t, cols, -0.5f, 0.5f, Affine::Contiguous);
        check(op, x, x.host.view(), &w, &b);
        check(op, x, x.host.view());
      }
  }
}

TEST(CudaRows, NormTinyRowsWithEpsZero) {
  LORAOPS_REQUIRE_GPU();
  // Squares of 1e-25 underflow fp32; with eps = 0 nothing else sets the scale, so the kernels
  // rescale the row. (float16 cannot hold such values.)
  for (DType t : {DType::Float32, DType::BFloat16})
    for (int64_t cols : {4, 1000, 1024, 100000})
      for (Op op : {Op::RmsNorm, Op::LayerNorm}) {
        HostTensor h = random_tensor(t, {3, cols}, 0.5f, 1.5f);
        for (int64_t i = 0; i < h.numel(); ++i) h.set(i, h.get(i) * 1e-25f);
        Mirror x(std::move(h));
        check(op, x, x.host.view(), nullptr, nullptr, -1, 0.0);
      }
}

// layer_norm shifts each row by its first element x0 (the sums stay small where the mean is far
// from zero), and its 16-bit rows kept packed (8 vectors a thread: past 8192 elements) take
// E[u^2] - E[u]^2 of the shifted row only while x0 is within 4 standard deviations of the mean;
// farther, the exact two-pass statistics. Rows of [1, 3] (mean 2, sd 0.577) with x0 at 3.9 and 4.2
// sd (either method is accurate there: the results only), and x0 far out (60; -1e4, which dominates
// the variance), at 1000 / 1024 / 4096 / 16384 / 65528 / 100000 columns (fp32 runs 1024 and 4096 on
// the pairwise statistics, 65528 and 100000 on the looped kernel): float32 used to lose digits
// there (x - x0 and the mean of it rounded at 2^-24 of |x - x0| and |mean - x0|: errors of 3e-6
// against 2.2e-6 allowed at x0 = 60, H200 2026-11-30). Then 32 half rows of 65528 with x0 far out,
// where E[u^2] - E[u]^2 without the guard misses the tolerance in about half the rows' draws
// (float16 the most: a CPU emulation of the kernel's summation order, 2026-11-30), so that dropping
// the guard fails.
TEST(CudaRows, LayerNormShiftPointFarFromTheMean) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : kAllDTypes)
    for (int64_t cols : {1000, 1024, 4096, 16384, 65528, 100000}) {
      SCOPED_TRACE(cols);
      HostTensor h = random_tensor(t, {5, cols}, 1.f, 3.f);
      const float sd = 0.57735f;
      for (auto [row, x0] : {std::pair{0, 2.f + 3.9f * sd}, std::pair{1, 2.f - 3.9f * sd}, std::pair{2, 2.f + 4.2f * sd},
                             std::pair{3, 60.f}, std::pair{4, -1e4f}})
        h.set(int64_t(row) * cols, x0);
      Mirror x(std::move(h));
      const AffineArg w = make_affine(t, cols, 0.5f, 1.5f, Affine::Contiguous);
      const AffineArg b = make_affine(t, cols, -0.5f, 0.5f, Affine::Contiguous);
      check(Op::LayerNorm, x, x.host.view(), &w, &b);
      check(Op::LayerNorm, x, x.host.view());
    }
  for (DType t : {DType::Float16, DType::BFloat16}) {
    constexpr int64_t kRows = 32, kCols = 65528;
    HostTensor h = random_tensor(t, {kRows, kCols}, 1.f, 3.f);
    for (int64_t row = 0; row < kRows; ++row) h.set(row * kCols, row % 2 ? 6e4f : -1e4f);
    Mirror x(std::move(h));
    check(Op::LayerNorm, x, x.host.view());
  }
}

TEST(CudaRows, FarFromZeroKeepsItsDigits) {
  LORAOPS_REQUIRE_GPU();
  // 1e4 + noise of unit size: a mean rounded to a float near 1e4 would be off by 5e-4.
  for (int64_t cols : {4099, 4096, 100000}) {
    HostTensor h = random_tensor(DType::Float32, {8, cols}, -1.f, 1.f);
    for (int64_t i = 0; i < h.numel(); ++i) h.set(i, 1e4f + h.get(i));
    Mirror x(std::move(h));
    check(Op::LayerNorm, x, x.host.view());
  }
}

TEST(CudaRows, InPlace) {
  LORAOPS_REQUIRE_GPU();
  // out may be x itself: every element is read before the thread that reads it writes it.
  auto in_place = [](Op op, HostTensor h, const std::string& what) {
    HostTensor ref(h.dtype, h.shape);
    call(op, h.view(), {}, ref.view(), {.impl = Impl::Reference});
    Mirror x(std::move(h));
    const Tensor v = x.on_device(x.host.view());
    call(op, v, {}, v, {.impl = Impl::Custom});
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    x.dev.to_host();
    EXPECT_TRUE(close(x.host, ref)) << op_name(op) << " " << dtype_name(x.host.dtype) << " " << what;
  };
  for (DType t : kAllDTypes)
    for (Op op : kOps)
      for (std::vector<int64_t> shape : {std::vector<int64_t>{9, 1023}, {4, 4096}, {1, 100000}})
        in_place(op, input_for(op, t, shape), std::to_string(shape[1]));
  // Rows the norms rescue (squares overflow fp32), in place: layer_norm reads such a row again
  // from memory after its first statistics, which must still find x, not y.
  for (DType t : {DType::Float32, DType::BFloat16})
    for (int64_t cols : {1023, 4096, 16384})
      for (Op op : {Op::RmsNorm, Op::LayerNorm})
        in_place(op, rows_of(t, {{1e30f, kFill, -1e30f, kFill}, {kFill}}, cols, -1.f, 1.f),
                 "rescued " + std::to_string(cols));
}

// The row ops and activations launch as programmatic dependents of the kernel before them: they
// may start while it runs, and wait for it before touching memory. A chain of ops back to back
// on one stream, no sync between, each reading the previous output and writing what the one
// before read, must give bit for bit what the same chain gives with a sync after every op (the
// kernels are deterministic; a kernel that read early would see poison or stale values). 16 ops
// compound fp32 roundings past any fixed tolerance, so the reference only bounds them loosely.
TEST(CudaRows, BackToBackOpsKeepStreamOrder) {
  LORAOPS_REQUIRE_GPU();
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (std::vector<int64_t> shape : {std::vector<int64_t>{64, 1024}, {4096, 1024}, {8, 33}}) {
    const DType t = DType::Float32;
    const int64_t cols = shape.back();
    const AffineArg w = make_affine(t, cols, 0.5f, 1.5f, Affine::Contiguous);
    const AffineArg bias = make_affine(t, cols, -0.5f, 0.5f, Affine::Contiguous);
    HostTensor ha = random_tensor(t, shape, -2.f, 2.f), hb(t, shape);
    auto chain = [&](const Tensor& ta, const Tensor& tb, const Tensor* tw, const Tensor* tbias, const Exec& ex,
                     bool sync_each) {
      auto step = [&] {
        if (sync_each) CUDA_OK(cudaStreamSynchronize(s));
      };
      for (int i = 0; i < 4; ++i) {
        softmax(ta, -1, tb, ex), step();
        rms_norm(tb, tw, 1e-6, ta, ex), step();
        layer_norm(ta, tw, tbias, 1e-5, tb, ex), step();
        activation(tb, Activation::Silu, ta, ex), step();
      }
    };
    // ASSERTs return void: the result comes back through `out`.
    auto on_device = [&](bool sync_each, HostTensor& out) {
      Mirror a{HostTensor(ha)};
      HostTensor got_b(t, shape);
      DeviceTensor b(got_b);
      b.poison();
      CUDA_OK(cudaDeviceSynchronize());
      chain(a.on_device(a.host.view()), b.view(), &w.dev_view, &bias.dev_view, {.impl = Impl::Custom, .stream = s},
            sync_each);
      CUDA_OK(cudaStreamSynchronize(s));
      a.dev.to_host();
      out = std::move(a.host);
    };
    HostTensor serial(t, shape), back_to_back(t, shape);
    on_device(true, serial);
    on_device(false, back_to_back);
    chain(ha.view(), hb.view(), &w.host_view, &bias.host_view, {.impl = Impl::Reference}, false);
    EXPECT_TRUE(all_close(back_to_back, serial, 0, 0)) << "rows " << shape[0] << " cols " << cols;
    EXPECT_TRUE(all_close(serial, ha, 1e-2, 1e-2)) << "rows " << shape[0] << " cols " << cols;
  }
  CUDA_OK(cudaStreamDestroy(s));
}

// The same, deterministically: before each op, a kernel that lets its dependents start at once
// and only ~50 µs later writes x, weight and bias (one buffer, one copy) or snapshots y. An op that
// read any of them before its wait would compute from the old values; one that wrote y before its
// wait would show in the snapshot. Eagerly (behind a gate the host opens once everything is
// enqueued, so a slow host cannot let the copy finish first) and in a captured graph, for the
// three row ops and an activation, on each kernel shape: a thread per row, up to 4 and 8 vectors
// a thread, and the looped kernel (rows past 8192 vectors).
TEST(CudaRows, DependentLaunchWaitsBeforeReadingAndWriting) {
  LORAOPS_REQUIRE_GPU();
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const DType t = DType::Float32;
  const Device gpu{DeviceType::CUDA, 0};
  enum class K { Softmax, RmsNorm, LayerNorm, Silu };
  auto run = [](K k, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Exec& ex) {
    switch (k) {
      case K::Softmax: return softmax(x, -1, y, ex);
      case K::RmsNorm: return rms_norm(x, &w, 1e-6, y, ex);
      case K::LayerNorm: return layer_norm(x, &w, &b, 1e-5, y, ex);
      case K::Silu: return activation(x, Activation::Silu, y, ex);
    }
  };
  for (std::vector<int64_t> shape :
       {std::vector<int64_t>{4, 16, 1024}, {3, 33}, {64, 4096}, {2, 16384}, {2, 40000}, {40, 4}})
    for (K k : {K::Softmax, K::RmsNorm, K::LayerNorm, K::Silu})
      for (bool graph : {true, false}) {  // the graph first: its instantiation loads the kernels
        SCOPED_TRACE("op " + std::to_string(int(k)) + " cols " + std::to_string(shape.back()) +
                     (graph ? " graph" : " eager"));
        const int64_t cols = shape.back(), n = [&] {
          int64_t e = 1;
          for (int64_t d : shape) e *= d;
          return e;
        }();
        // [x | weight | bias] as the copy leaves them (fresh) and as they are before it (old).
        HostTensor fresh = random_tensor(t, {n + 2 * cols}, 1.f, 3.f), old = random_tensor(t, {n + 2 * cols}, -3.f, -1.f);
        auto part = [&](void* base, int64_t at, std::initializer_list<int64_t> dims, Device d) {
          return Tensor::contiguous(static_cast<float*>(base) + at, t, dims, d);
        };
        const Tensor fx = Tensor::contiguous(fresh.bytes.data(), t, int(shape.size()), shape.data());
        HostTensor ref(t, shape), got(t, shape), before = random_tensor(t, shape, 5.f, 6.f), snap_h(t, shape);
        run(k, fx, part(fresh.bytes.data(), n, {cols}, {}), part(fresh.bytes.data(), n + cols, {cols}, {}), ref.view(),
            {.impl = Impl::Reference});
        DeviceTensor src(fresh), buf(old), y(got), y2(before), snap(snap_h);
        y.poison();
        CUDA_OK(cudaDeviceSynchronize());
        const Exec ex{.impl = Impl::Custom, .stream = s};
        const Tensor xv = Tensor::contiguous(buf.ptr, t, int(shape.size()), shape.data(), gpu);
        const Tensor wv = part(buf.ptr, n, {cols}, gpu), bv = part(buf.ptr, n + cols, {cols}, gpu);
        auto sequence = [&] {
          ASSERT_EQ(late_copy(buf.ptr, src.ptr, buf.bytes, 50, s), cudaSuccess);
          run(k, xv, wv, bv, y.view(), ex);                                  // reads x, w, b
          ASSERT_EQ(late_copy(snap.ptr, y2.ptr, y2.bytes, 50, s), cudaSuccess);
          run(k, xv, wv, bv, y2.view(), ex);                                 // writes y2
        };
        run_ordered(s, graph, sequence);
        y.to_host();
        snap.to_host();
        EXPECT_TRUE(close(got, ref)) << "the op read x, weight or bias before the kernel before it wrote them";
        EXPECT_TRUE(snap_h.bytes == before.bytes) << "the op wrote y while the kernel before it read it";
      }
  CUDA_OK(cudaStreamDestroy(s));
}

TEST(CudaRows, OneLaunchOnTheCallersStreamAndUnderGraphCapture) {
  LORAOPS_REQUIRE_GPU();
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (DType t : kAllDTypes)
    for (Op op : kOps)
      for (std::vector<int64_t> shape : {std::vector<int64_t>{4, 16, 1024}, {2, 100000}}) {
        SCOPED_TRACE(std::string(op_name(op)) + " " + dtype_name(t) + " " + std::to_string(shape.back()));
        Mirror x(input_for(op, t, shape));
        const int64_t cols = shape.back();
        const AffineArg w = make_affine(t, cols, 0.5f, 1.5f, Affine::Contiguous);
        const AffineArg b = make_affine(t, cols, -0.5f, 0.5f, Affine::Contiguous);
        check(op, x, x.host.view(), &w, &b, -1, 1e-5, s);  // eager, on the caller's stream

        Args host_args, dev_args;
        if (op != Op::Softmax) host_args.weight = &w.host_view, dev_args.weight = &w.dev_view;
        if (op == Op::LayerNorm) host_args.bias = &b.host_view, dev_args.bias = &b.dev_view;
        HostTensor ref(t, shape), got(t, shape);
        call(op, x.host.view(), host_args, ref.view(), {.impl = Impl::Reference});
        DeviceTensor out(got);
        out.poison();
        CUDA_OK(cudaDeviceSynchronize());
        // Global mode: any call the op makes that is unsafe during capture fails here.
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        call(op, x.on_device(x.host.view()), dev_args, out.view(), {.impl = Impl::Custom, .stream = s});
        CUDA_OK(cudaStreamEndCapture(s, &graph));
        size_t nodes = 0;
        CUDA_OK(cudaGraphGetNodes(graph, nullptr, &nodes));
        EXPECT_EQ(nodes, 1u);  // one kernel, nothing else
        CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
        CUDA_OK(cudaGraphLaunch(exec, s));
        CUDA_OK(cudaGraphLaunch(exec, s));  // a replay gives the same
        CUDA_OK(cudaStreamSynchronize(s));
        out.to_host();
        EXPECT_TRUE(close(got, ref));
        cudaGraphExecDestroy(exec);
        cudaGraphDestroy(graph);
      }
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace loraops::test
