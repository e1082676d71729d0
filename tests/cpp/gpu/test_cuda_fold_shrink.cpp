// The fold's shrink kernel, called directly: out = scale * X @ A^T and X @ A^T (out_unscaled) for
// X [m, k] and A [r, k] (kernels.hpp: fold_shrink_product), against an fp64 reference of the same
// half inputs. (The LoRA tests reach it through the fold too, forward and backward.)
//
// Tolerance per element: u * |value| (the one rounding to the dtype) + 2^-24 * sqrt(k) * Σ|x·a|
// (fp32 sums; the products of halves are exact in fp32). Inputs are uniform in [-1, 1], so a
// value is ~sqrt(k / 9): a dropped 64-wide k tile, a wrong row or column, a missing scale or a
// partial summed twice moves it by far more than that.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels.hpp"
#include "gpu_util.hpp"

namespace loraops::test {
namespace {

struct ShrinkCase {
  int64_t m, k, r;
  int64_t x_pad = 0, a_pad = 0;  // elements past k in each row (multiples of 8: rows stay 16-byte aligned)
  float scale = 0.75f;
};

// Runs the kernel twice on one case (poisoned outputs, the second time without out_unscaled) and
// checks both outputs, the bits of the second run and the bytes past the outputs.
void check_shrink(DType t, const ShrinkCase& c) {
  SCOPED_TRACE(std::string(dtype_name(t)) + " m=" + std::to_string(c.m) + " k=" + std::to_string(c.k) +
               " r=" + std::to_string(c.r));
  const int64_t x_rs = c.k + c.x_pad, a_rs = c.k + c.a_pad;
  HostTensor x = random_tensor(t, {std::max<int64_t>(c.m, 1), std::max<int64_t>(x_rs, 1)});
  HostTensor a = random_tensor(t, {c.r, std::max<int64_t>(a_rs, 1)});
  // 64 elements past [m, r] hold 0x3F bytes (not 0: the kernel's rows past m and columns past r
  // compute to 0, so a store past the end would leave zeros there and show)
  constexpr int64_t kTail = 64;
  constexpr unsigned char kTailByte = 0x3F;
  const int64_t n_out = c.m * c.r;
  HostTensor scaled(t, {n_out + kTail}), unscaled(t, {n_out + kTail});
  DeviceTensor dx(x), da(a), ds(scaled), du(unscaled);
  CUDA_OK(cudaMemset(ds.ptr, kTailByte, ds.bytes));
  CUDA_OK(cudaMemset(du.ptr, kTailByte, du.bytes));
  CUDA_OK(cudaMemset(ds.ptr, 0xFF, size_t(n_out) * dtype_size(t)));
  CUDA_OK(cudaMemset(du.ptr, 0xFF, size_t(n_out) * dtype_size(t)));
  cuda::FoldShrinkArgs s{dx.ptr, x_rs, c.m, c.k, da.ptr, a_rs, c.r, ds.ptr, c.scale, du.ptr};
  cuda::fold_shrink_product(t, s, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  ds.to_host();
  du.to_host();
  const double u = unit_roundoff_of(t), u32 = std::ldexp(1.0, -24);
  int bad = 0;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.r; ++j) {
      double ref = 0, mag = 0;
      for (int64_t l = 0; l < c.k; ++l) {
        const double p = double(x.get(i * x_rs + l)) * double(a.get(j * a_rs + l));
        ref += p, mag += std::fabs(p);
      }
      const double acc = u32 * std::sqrt(double(c.k)) * mag;
      const double got_u = unscaled.get(i * c.r + j), got_s = scaled.get(i * c.r + j);
      const double want_s = double(c.scale) * ref;
      const bool ok = std::fabs(got_u - ref) <= u * std::fabs(ref) + acc &&
                      std::fabs(got_s - want_s) <= u * std::fabs(want_s) + std::fabs(c.scale) * acc;
      if (!ok && ++bad <= 5)
        ADD_FAILURE() << "(" << i << ", " << j << "): got " << got_s << " / " << got_u << ", want " << want_s
                      << " / " << ref;
    }
  EXPECT_EQ(bad, 0);
  const size_t out_bytes = size_t(n_out) * dtype_size(t);
  for (size_t i = out_bytes; i < scaled.bytes.size(); ++i) {
    ASSERT_EQ(scaled.bytes[i], kTailByte) << "write past the end at byte " << i;
    ASSERT_EQ(unscaled.bytes[i], kTailByte) << "write past the end at byte " << i;
  }
  // Again without out_unscaled: the scaled product keeps its bits (the same fp32 sums, added in
  // the same order for a given shape and device).
  HostTensor first = scaled;
  CUDA_OK(cudaMemset(ds.ptr, 0xFF, size_t(n_out) * dtype_size(t)));
  s.out_unscaled = nullptr;
  cuda::fold_shrink_product(t, s, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  ds.to_host();
  EXPECT_EQ(std::memcmp(first.bytes.data(), scaled.bytes.data(), first.bytes.size()), 0)
      << "scale * X @ A^T changed bits between runs";
}

// m across the 64-row blocks and the cluster sizes (on a 132-SM H200: 16 ranks up to 8 row
// blocks (m = 512), 8 up to 16, 4 up to 33 (2049 rows), 2 at 4099 rows; fewer where k has fewer
// 64-wide tiles, and a rank without a tile at k = 520), m a multiple of 64 (512, the fold's
// shape), k with tails inside a 64-wide tile and k = 0, r across the 16-wide column pairs (1, 8,
// 17, 33, 64), padded rows.
const ShrinkCase kShrinkCases[] = {
    {1, 64, 16},          {31, 40, 8},          {33, 72, 17, 8, 16}, {65, 1000, 64},     {257, 4104, 33, 0, 8},
    {1023, 8, 1},         {300, 520, 24, 8, 0}, {2049, 4096, 16},    {4099, 264, 64, 8}, {5, 0, 8},
    {130, 4096, 16, 0, 0, -0.5f}, {512, 4096, 16},
};

TEST(CudaFoldShrink, MatchesReference) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : {DType::BFloat16, DType::Float16})
    for (const ShrinkCase& c : kShrinkCases) check_shrink(t, c);
}

TEST(CudaFoldShrink, NoRowsIsANoOp) {
  LORAOPS_REQUIRE_GPU();
  cuda::FoldShrinkArgs s{nullptr, 64, 0, 64, nullptr, 64, 16, nullptr, 1.f, nullptr};
  cuda::fold_shrink_product(DType::BFloat16, s, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
}

TEST(CudaFoldShrink, RefusesRanksPast64) {
  LORAOPS_REQUIRE_GPU();
  cuda::FoldShrinkArgs s{nullptr, 64, 8, 64, nullptr, 64, 72, nullptr, 1.f, nullptr};
  EXPECT_THROW(cuda::fold_shrink_product(DType::BFloat16, s, nullptr), Error);
}

}  // namespace
}  // namespace loraops::test
