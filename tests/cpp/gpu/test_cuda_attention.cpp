// attention on CUDA (custom; auto) against fp64 math on host copies of the same data: every
// dtype, D 64/128 (the tensor-core kernels) and 80/256 (the general one), Sq from 1 to 513 and
// Sk from 0 to 8201, with Sq > Sk and Sq < Sk under the causal mask (bottom-right: leading queries see no key),
// MHA/GQA/MQA, a [B, S, H, D] view permuted to [B, H, S, D], a misaligned view, Sk = 0.
//
// Tolerance per output element, FlashAttention's rule made explicit: the same math in the input
// dtype rounds each probability once (relative u) and the output once, so
//   tol = 2u·B + 2u·|o| + 32·u32·sqrt(Sk + D)·B + s·Σ_j |v_jd| / l,   B = Σ_j p_j·|v_jd|
// (p the fp64 softmax, l its normaliser (>= 1, the unnormalised p_j <= 1), u the dtype's unit
// roundoff, u32 = 2^-24 for the fp32 sums and exp2, s half the dtype's smallest subnormal: a
// probability below the normal range rounds by up to s, not relatively; fp16 at large scales).
// A wrong mask, head or scale moves o by O(|v|) = O(1) against tol = O(u).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cuda/arrival_slots.hpp"
#include "cuda/kernels.hpp"
#include "gpu_util.hpp"
#include "late_copy.hpp"
#include "linalg_test_util.hpp"
#include "ordered_run.hpp"

namespace loraops::test {
namespace {

enum class View { Contig, BSHD, Misaligned };

// The kernel a case is meant to exercise: the split-K decode kernels (any dtype), the tensor-core
// flash kernel (halves; float32 takes the general one), or the general one.
enum class Path { Decode, Flash, Rows };

struct AttnCase {
  const char* name;
  int64_t b, hq, hkv, sq, sk, d;
  bool causal;
  View view = View::Contig;
  Path path = Path::Rows;
  std::optional<double> scale = std::nullopt;  // the default: 1 / sqrt(D)
};

// clang-format off
const AttnCase kCases[] = {
    {"one query one key", 1, 2, 2, 1, 1, 64, false, View::Contig, Path::Decode},
    {"one query one key causal", 1, 2, 2, 1, 1, 64, true, View::Contig, Path::Decode},
    {"GQA Sq<Sk", 2, 4, 2, 17, 239, 128, false, View::Contig, Path::Flash},
    {"GQA Sq<Sk causal", 2, 4, 2, 17, 239, 128, true, View::Contig, Path::Flash},
    {"Sq>Sk causal (leading rows see nothing)", 1, 2, 1, 239, 17, 128, true, View::Contig, Path::Flash},
    {"square causal D=64", 1, 2, 2, 64, 64, 64, true, View::Contig, Path::Flash},
    {"MQA 130x300", 1, 3, 1, 130, 300, 128, false, View::Contig, Path::Flash},
    {"multi-tile causal", 1, 2, 2, 513, 513, 128, true, View::Contig, Path::Flash},
    // (interior tiles skip the mask: whole tiles left of the diagonal, a tail at Sk % 64 = 40)
    {"multi-tile causal Sq<Sk", 1, 2, 1, 100, 1000, 64, true, View::Contig, Path::Flash},
    // (a negative shift with whole tiles left of the diagonal: the 128-row block at 256)
    {"multi-tile causal Sq>Sk", 1, 2, 1, 300, 200, 128, true, View::Contig, Path::Flash},
    // 15 (head, batch) pairs of 3 row blocks: groups of 4 leave a last group of 3.
    {"many heads multi-tile causal", 3, 5, 5, 300, 300, 128, true, View::Contig, Path::Flash},
    {"D=80 (general kernel)", 1, 2, 2, 33, 65, 80, true},
    {"D=256 (general kernel)", 1, 2, 1, 9, 40, 256, false},
    {"Sk=0", 1, 1, 1, 5, 0, 64, false, View::Contig, Path::Flash},
    {"[B,S,H,D] view", 2, 4, 2, 70, 70, 64, true, View::BSHD, Path::Flash},
    {"misaligned view", 1, 2, 2, 20, 33, 64, true, View::Misaligned},
    {"decode GQA 32/8 Sk=4096", 2, 32, 8, 1, 4096, 128, false, View::Contig, Path::Decode},
    {"decode Sk=17 causal", 1, 4, 4, 1, 17, 64, true, View::Contig, Path::Decode},
    {"decode group 8 Sk=8201", 1, 16, 2, 1, 8201, 128, false, View::Contig, Path::Decode},
    {"decode [B,S,H,D] view", 2, 8, 2, 1, 300, 64, false, View::BSHD, Path::Decode},
    {"decode Sk=0", 1, 4, 2, 1, 0, 64, false, View::Contig, Path::Decode},
    // (groups above 16 take two head tiles on the tensor-core kernel; float32 above 8: general)
    {"MQA decode group 32", 1, 32, 1, 1, 300, 64, false, View::Contig, Path::Decode},
    {"decode group 12 Sk=1023 causal", 1, 24, 2, 1, 1023, 128, true, View::Contig, Path::Decode},
    // (two kv heads of two head tiles each, the second 8 heads: blockIdx.y = hk * tiles + ht;
    // at batch 2 too, where each (batch, head tile) has its own counter for the merge in the grid)
    {"decode group 24 Sk=700", 1, 48, 2, 1, 700, 128, false, View::Contig, Path::Decode},
    {"decode group 24 B2 Sk=700", 2, 48, 2, 1, 700, 128, false, View::Contig, Path::Decode},
    // (splits of several tiles through the 3-stage pipeline, the last tile partial)
    {"decode GQA 32/8 Sk=4000", 4, 32, 8, 1, 4000, 64, false, View::Contig, Path::Decode},
    {"decode misaligned view (SIMT kernel)", 1, 8, 2, 1, 77, 128, false, View::Misaligned, Path::Decode},
    // (scores spread over ~±40 in log2 units: a row's maximum moves past the flash kernel's lazy
    // rescale slack mid-row, so both its rescale and its skip run)
    {"large scale causal D=64", 1, 2, 1, 200, 700, 64, true, View::Contig, Path::Flash, 4.0},
    {"large scale D=128", 1, 2, 2, 130, 300, 128, false, View::Contig, Path::Flash, 3.0},
    // (the flash kernel takes a positive scale only)
    {"negative scale (general kernel)", 1, 2, 2, 70, 90, 64, true, View::Contig, Path::Rows, -0.5},
    {"zero scale (general kernel)", 1, 2, 1, 70, 90, 64, false, View::Contig, Path::Rows, 0.0},
    {"decode negative scale", 1, 8, 2, 1, 300, 128, false, View::Contig, Path::Decode, -0.7},
};
// clang-format on

struct Operand4 {
  HostTensor storage;
  Tensor view;  // [B, H, S, D]
};

Operand4 make4(DType t, int64_t b, int64_t h, int64_t s, int64_t d, View view) {
  Operand4 o;
  const int64_t extra = view == View::Misaligned ? 1 : 0;
  o.storage = HostTensor(t, {b * h * s * d + extra});
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int64_t i = 0; i < o.storage.numel(); ++i) o.storage.set(i, u(rng()));
  o.view = o.storage.view();
  o.view.ndim = 4;
  o.view.shape = {b, h, s, d};
  if (view == View::BSHD)  // stored [B, S, H, D], viewed [B, H, S, D]
    o.view.strides = {s * h * d, d, h * d, 1};
  else
    o.view.strides = {h * s * d, s * d, d, 1};
  o.view.data = static_cast<uint8_t*>(o.view.data) + extra * dtype_size(t);
  return o;
}

// Reads element [b, h, s, d] of a host view.
float at(const Tensor& v, int64_t b, int64_t h, int64_t s, int64_t d) {
  return load_as_float(v.data, v.dtype,
                       b * v.strides[0] + h * v.strides[1] + s * v.strides[2] + d * v.strides[3]);
}

// What the reference computes, or a deliberate bug in it (for the negative controls), or a model
// of the same math in the input dtype (each probability rounded to it before P@V, the output
// rounded once: what FlashAttention's kernels do).
enum class Ref { Exact, InputDtypeModel, TopLeftCausal, WrongKvHead, NoScale, DropLastKey };

struct Expected {
  HostTensor out;
  std::vector<double> tol;
};

struct Inputs4 {
  Operand4 q, k, v;
};

Inputs4 make_inputs(const AttnCase& c, DType t) {
  seed_rng_for(c.name, t);
  return {make4(t, c.b, c.hq, c.sq, c.d, c.view), make4(t, c.b, c.hkv, c.sk, c.d, c.view),
          make4(t, c.b, c.hkv, c.sk, c.d, c.view)};
}

Expected expected(const AttnCase& c, const Inputs4& in, DType t, Ref ref = Ref::Exact) {
  const double scale = ref == Ref::NoScale ? 1.0 : c.scale.value_or(1.0 / std::sqrt(double(c.d))),
               u = unit_roundoff_of(t), u32 = std::ldexp(1.0, -24), sub = half_subnormal_of(t);
  Expected e{HostTensor(t, {c.b, c.hq, c.sq, c.d}),
             std::vector<double>(static_cast<size_t>(c.b * c.hq * c.sq * c.d))};
  std::vector<double> p(size_t(std::max<int64_t>(c.sk, 1)));
  for (int64_t b = 0; b < c.b; ++b)
    for (int64_t h = 0; h < c.hq; ++h) {
      const int64_t hk = ref == Ref::WrongKvHead ? h % c.hkv : h / (c.hq / c.hkv);
      for (int64_t i = 0; i < c.sq; ++i) {
        const int64_t shift = ref == Ref::TopLeftCausal ? 0 : c.sk - c.sq;
        int64_t kend = c.causal ? std::clamp<int64_t>(i + shift + 1, 0, c.sk) : c.sk;
        if (ref == Ref::DropLastKey && kend > 1) --kend;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < kend; ++j) {
          double s = 0;
          for (int64_t d = 0; d < c.d; ++d)
            s += double(at(in.q.view, b, h, i, d)) * at(in.k.view, b, hk, j, d);
          p[size_t(j)] = s * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        for (int64_t j = 0; j < kend; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
        for (int64_t d = 0; d < c.d; ++d) {
          double o = 0, bound = 0, vsum = 0;
          for (int64_t j = 0; j < kend; ++j) {
            const double pr = ref == Ref::InputDtypeModel ? round_to_dtype(t, float(p[size_t(j)]))
                                                          : p[size_t(j)];
            const double vv = at(in.v.view, b, hk, j, d);
            o += pr / sum * vv;
            bound += p[size_t(j)] / sum * std::fabs(vv);
            vsum += std::fabs(vv);
          }
          const int64_t idx = ((b * c.hq + h) * c.sq + i) * c.d + d;
          e.out.set(idx, float(o));
          e.tol[size_t(idx)] = 2 * u * bound + 2 * u * std::fabs(o) +
                               32 * u32 * std::sqrt(double(c.sk + c.d)) * bound + (sum > 0 ? sub * vsum / sum : 0.0) + 1e-30;
        }
      }
    }
  return e;
}

void check_case(const AttnCase& c, DType t) {
  SCOPED_TRACE(std::string(c.name) + " " + dtype_name(t));
  Inputs4 in = make_inputs(c, t);  // mutable: DeviceOperand uploads the storage the views point into
  const Operand4 &q = in.q, &k = in.k, &v = in.v;
  const Expected want = expected(c, in, t);
  DeviceOperand dq(in.q), dk(in.k), dv(in.v);
  DeviceOut out(t, {c.b, c.hq, c.sq, c.d});
  // what the front end builds: the path the kernel takes
  const detail::AttentionParams params =
      detail::attention_params(dq.view, dk.view, dv.view, c.causal, c.scale, out.view());
  const Path path = cuda::attention_decode_eligible(params) ? Path::Decode
                    : cuda::attention_flash_eligible(params) ? Path::Flash
                                                             : Path::Rows;
  Path want_path = c.path;
  if (t == DType::Float32 && (c.path == Path::Flash || (c.path == Path::Decode && c.hq / c.hkv > 8)))
    want_path = Path::Rows;  // no float32 flash kernel; the SIMT decode kernel serves groups up to 8
  EXPECT_EQ(int(path), int(want_path)) << "the case does not take the kernel it is meant to test";
  // vendor (cuDNN, where the build has it): half precision; it may refuse a shape (the error says
  // why), except the plain contiguous ones cuDNN's fused attention is made for
  const bool vendor = has_impl("attention", DeviceType::CUDA, Impl::Vendor, t);
  const bool vendor_must_run = vendor && c.view != View::Misaligned && c.sk > 0 &&
                               !(c.causal && c.sq > c.sk) && (c.d == 64 || c.d == 128) &&
                               c.scale.value_or(1.0) > 0;
  // LORAOPS_TEST_CUSTOM_ONLY: our kernels only (racecheck: cuDNN's own kernels report hazards
  // of their own and take most of its time)
  const bool custom_only = std::getenv("LORAOPS_TEST_CUSTOM_ONLY") != nullptr;
  for (Impl impl : {Impl::Custom, Impl::Auto, Impl::Vendor}) {
    if ((impl == Impl::Vendor && !vendor) || (impl != Impl::Custom && custom_only)) continue;
    SCOPED_TRACE(impl_name(impl));
    out.poison();
    try {
      attention(dq.view, dk.view, dv.view, c.causal, c.scale, out.view(), {.impl = impl});
    } catch (const Error& e) {
      const std::string what = e.what();  // no libcudnn, or one of another version than the build's
      const bool no_cudnn = what.find("no usable libcudnn") != std::string::npos ||
                            what.find("built against") != std::string::npos;
      if (impl == Impl::Vendor && e.kind() == ErrorKind::Unsupported && (!vendor_must_run || no_cudnn))
        continue;
      ADD_FAILURE() << "attention threw: " << e.what();
      continue;
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(within_tol(out.fetch(), want.out, want.tol, c.d));
  }
  // Both decode kernels where they take the case (the tensor-core one for aligned halves, the
  // SIMT one up to 8 heads per group), whichever custom picks.
  if (path == Path::Decode) {
    // which kernels must take it: a regressed eligibility would otherwise skip its kernel quietly
    EXPECT_EQ(cuda::attention_decode_takes(params, cuda::DecodeKernel::TensorCore),
              t != DType::Float32 && c.view != View::Misaligned);
    EXPECT_EQ(cuda::attention_decode_takes(params, cuda::DecodeKernel::Simt), c.hq / c.hkv <= 8);
    for (auto kernel : {cuda::DecodeKernel::TensorCore, cuda::DecodeKernel::Simt}) {
      if (!cuda::attention_decode_takes(params, kernel)) continue;
      const bool tc = kernel == cuda::DecodeKernel::TensorCore;
      // the tensor-core kernel also at split lengths of its own choice, 2, 3 and 5 tiles: short
      // last splits and the 3-stage ring wrapping, whatever the GPU's SM count makes of auto;
      // its splits merged in its grid and by the combine kernel
      for (int tps : tc ? std::vector<int>{0, 2, 3, 5} : std::vector<int>{0})
        for (auto merge : {cuda::DecodeMerge::Auto, cuda::DecodeMerge::Kernel}) {
          if (!tc && merge == cuda::DecodeMerge::Kernel) continue;  // the SIMT kernel has only that
          SCOPED_TRACE(std::string(tc ? "tensor-core" : "SIMT") + " decode kernel, tiles per split " +
                       std::to_string(tps) + (merge == cuda::DecodeMerge::Kernel ? ", combine kernel" : ""));
          out.poison();
          cuda::attention_decode_with(params, nullptr, kernel, tps, merge);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          EXPECT_TRUE(within_tol(out.fetch(), want.out, want.tol, c.d));
        }
    }
  }
  // Every flash kernel (mma.sync with 64- and 128-row blocks, wgmma), whichever custom picks;
  // causal, the blocks' order over groups of (head, batch) pairs: per pair, 3 and 4 (the last
  // group smaller where they do not divide the pairs), all pairs at once, and the kernel's choice.
  if (path == Path::Flash) {
    using cuda::FlashKernel;
    for (FlashKernel kernel : {FlashKernel::Mma64, FlashKernel::Mma128, FlashKernel::Wgmma})
      for (int64_t group : c.causal ? std::vector<int64_t>{0, 1, 3, 4, 1000} : std::vector<int64_t>{0}) {
        SCOPED_TRACE("flash kernel " + std::to_string(int(kernel)) + " (1: mma 64 rows, 2: mma 128, 3: wgmma), head group " +
                     std::to_string(group));
        out.poison();
        cuda::attention_flash_with(params, nullptr, kernel, group);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_TRUE(within_tol(out.fetch(), want.out, want.tol, c.d));
      }
  }
}

TEST(CudaAttention, MatchesFp64WithinTheRoundingsOfItsDtype) {
  LORAOPS_REQUIRE_GPU();
  for (const AttnCase& c : kCases)
    for (DType t : kAllDTypes) check_case(c, t);
}

// No GPU needed: the tolerance admits the roundings the kernels are allowed (the same math in the
// input dtype) and rejects each of these bugs: top-left instead of bottom-right causal alignment,
// the wrong key/value head for a query head, no scale, one visible key dropped.
// NaN in, NaN out (softmax's rule in the contract). A NaN in one head's q makes every score of
// that head NaN, so each split's partial has max -inf and sum NaN: both decode kernels, at several
// split lengths, must give that head NaN everywhere and every other head finite values. The
// output is filled with finite bytes first, so a head left unwritten fails too.
TEST(CudaAttention, DecodeNaNQueryGivesANaNHead) {
  LORAOPS_REQUIRE_GPU();
  for (DType t : {DType::BFloat16, DType::Float32})
    for (int64_t d : {64, 128}) {
      const AttnCase c{"decode NaN query", 1, 8, 2, 1, 1000, d, false, View::Contig, Path::Decode};
      SCOPED_TRACE(std::string(dtype_name(t)) + " D " + std::to_string(d));
      Inputs4 in = make_inputs(c, t);
      const int64_t nan_head = 3;
      in.q.storage.set(nan_head * d + 5, NAN);  // q is [1, 8, 1, d], contiguous
      DeviceOperand dq(in.q), dk(in.k), dv(in.v);
      DeviceOut out(t, {c.b, c.hq, c.sq, d});
      const detail::AttentionParams params =
          detail::attention_params(dq.view, dk.view, dv.view, false, std::nullopt, out.view());
      for (auto kernel : {cuda::DecodeKernel::TensorCore, cuda::DecodeKernel::Simt}) {
        if (!cuda::attention_decode_takes(params, kernel)) continue;
        const bool tc = kernel == cuda::DecodeKernel::TensorCore;
        for (int tps : tc ? std::vector<int>{0, 2, 5, -2, -5} : std::vector<int>{0}) {
          // tps < 0: -tps tiles a split, merged by the combine kernel, not in the grid
          const auto merge = tps < 0 ? cuda::DecodeMerge::Kernel : cuda::DecodeMerge::Auto;
          SCOPED_TRACE(std::string(tc ? "tensor-core" : "SIMT") + " tiles per split " + std::to_string(tps));
          ASSERT_EQ(cudaMemset(out.mem.ptr, 0x3F, size_t(out.host.numel() * dtype_size(t))), cudaSuccess);
          cuda::attention_decode_with(params, nullptr, kernel, std::abs(tps), merge);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          const HostTensor& got = out.fetch();
          int64_t wrong = 0;
          for (int64_t e = 0; e < got.numel(); ++e) {
            const bool in_nan_head = e / d == nan_head;
            if (in_nan_head != std::isnan(got.get(e)) || (!in_nan_head && !std::isfinite(got.get(e)))) ++wrong;
          }
          EXPECT_EQ(wrong, 0) << "elements not NaN in head " << nan_head << " or not finite elsewhere";
        }
      }
    }
}

// The tensor-core decode kernel's last block of each head group merges the splits, counted on
// counters that must be 0 before and after every launch, and not shared by launches that run at
// once (arrival_slots.hpp). Four outputs, each of its own scale, so that a merge of another
// launch's partials (the scratch a stream reuses, a graph's reused allocation) is far from the
// expected output. Eagerly: two streams, each output on the first or the second by turns, round
// after round, with launches merged by the combine kernel between (a counter left off 0, or one
// shared by the streams, merges early, too late or never: a wrong or poisoned output). In graphs
// captured on fresh streams (global capture mode: any call unsafe during capture fails): two
// launches a graph, two graphs replayed at once on two streams, three rounds; each launch must be
// one kernel node (the merge in its grid, no combine kernel).
TEST(CudaAttention, DecodeMergesInItsGridOnConcurrentStreamsAndInGraphs) {
  LORAOPS_REQUIRE_GPU();
  const DType t = DType::BFloat16;
  AttnCase c{"decode merged in the grid", 2, 32, 8, 1, 2000, 128, false, View::Contig, Path::Decode};
  Inputs4 in = make_inputs(c, t);
  DeviceOperand dq(in.q), dk(in.k), dv(in.v);
  std::vector<std::unique_ptr<DeviceOut>> outs;
  std::vector<detail::AttentionParams> params;
  std::vector<Expected> want;
  const double sharpness[4] = {8, 0.25, 0.5, 4};  // a peaked or flat softmax: outputs far apart
  for (int i = 0; i < 4; ++i) {
    c.scale = sharpness[i] / std::sqrt(double(c.d));
    want.push_back(expected(c, in, t));
    outs.push_back(std::make_unique<DeviceOut>(t, std::vector<int64_t>{c.b, c.hq, c.sq, c.d}));
    params.push_back(detail::attention_params(dq.view, dk.view, dv.view, false, c.scale, outs.back()->view()));
  }
  ASSERT_TRUE(cuda::attention_decode_takes(params[0], cuda::DecodeKernel::TensorCore));
  cudaStream_t s[2];
  for (auto& st : s) CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const auto check_all = [&](const char* what, int round) {
    for (size_t i = 0; i < outs.size(); ++i)
      EXPECT_TRUE(within_tol(outs[i]->fetch(), want[i].out, want[i].tol, c.d))
          << what << ", output " << i << ", round " << round;
  };
  for (int round = 0; round < 6; ++round) {
    for (auto& o : outs) o->poison();
    for (int i = 0; i < 4; ++i) {  // round 0: outputs 0, 2 on the first stream, 1, 3 on the second
      const auto merge = (round % 3 == 1 && i < 2) ? cuda::DecodeMerge::Kernel : cuda::DecodeMerge::Auto;
      cuda::attention_decode_with(params[size_t(i)], s[(i + round) % 2], cuda::DecodeKernel::TensorCore, 2, merge);
    }
    CUDA_OK(cudaDeviceSynchronize());
    check_all("eager", round);
  }
  GraphRun g[2];
  for (int gi = 0; gi < 2; ++gi) {
    cudaStream_t cs;
    CUDA_OK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
    CUDA_OK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeGlobal));
    for (int i = gi; i < 4; i += 2) cuda::attention_decode_with(params[size_t(i)], cs, cuda::DecodeKernel::TensorCore, 2);
    const cudaError_t ended = cudaStreamEndCapture(cs, &g[gi].graph);
    CUDA_OK(cudaStreamDestroy(cs));
    ASSERT_EQ(ended, cudaSuccess) << cudaGetErrorString(ended);
    EXPECT_EQ(count_nodes(g[gi].graph, cudaGraphNodeTypeKernel), 2)
        << "a kernel node per launch: the splits merged in the decode grid";
    EXPECT_EQ(count_programmatic_edges(g[gi].graph), 1)
        << "the second launch a programmatic dependent of the first (no memory node between)";
    CUDA_OK(cudaGraphInstantiate(&g[gi].exec, g[gi].graph, 0));
  }
  for (int round = 0; round < 3; ++round) {
    for (auto& o : outs) o->poison();
    CUDA_OK(cudaGraphLaunch(g[0].exec, s[0]));
    CUDA_OK(cudaGraphLaunch(g[1].exec, s[1]));
    CUDA_OK(cudaDeviceSynchronize());
    check_all("graphs", round);
  }
  for (auto& st : s) CUDA_OK(cudaStreamDestroy(st));
}

// A captured decode holds a range of the partials pool (8 MiB, arrival_slots.hpp) while its graph
// lives and gives it back once the graph is gone. At batch 2, 32/8 heads, Sk 2000 in 16 splits a
// capture takes 533 KB: kept alive, some 15 captures spend the pool and the next one takes
// stream-ordered scratch (a memory node: so the check of the second part can fail); destroyed,
// the pool serves capture after capture. Third: a graph destroyed while its launch waits behind a
// ~20 ms kernel keeps its range until that launch is complete.
TEST(CudaAttention, DecodeGraphsGiveTheirPoolRangesBackWhenDestroyed) {
  LORAOPS_REQUIRE_GPU();
  const DType t = DType::BFloat16;
  const AttnCase c{"decode captured again and again", 2, 32, 8, 1, 2000, 128, false, View::Contig, Path::Decode};
  Inputs4 in = make_inputs(c, t);
  DeviceOperand dq(in.q), dk(in.k), dv(in.v);
  const Expected want = expected(c, in, t);
  DeviceOut out(t, {c.b, c.hq, c.sq, c.d});
  const detail::AttentionParams p = detail::attention_params(dq.view, dk.view, dv.view, false, c.scale, out.view());
  ASSERT_TRUE(cuda::attention_decode_takes(p, cuda::DecodeKernel::TensorCore));
  const int pool = cuda::kAttentionDecodePartials;
  // The destructors run on a CUDA thread some time after the last reference goes: wait for the
  // count to settle (earlier tests' graphs), or to reach `units`.
  const auto in_use_after_wait = [&](int64_t units) {
    int64_t now = cuda::arrival_slots_in_use(pool, 0), last = -1;
    for (int i = 0; i < 2000 && now != units && (units >= 0 || now != last); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(units >= 0 ? 1 : 50));
      last = now;
      now = cuda::arrival_slots_in_use(pool, 0);
    }
    return now;
  };
  CUDA_OK(cudaDeviceSynchronize());
  const int64_t base = in_use_after_wait(-1);
  const auto capture = [&](GraphRun& g) {
    cudaStream_t cs;
    CUDA_OK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
    CUDA_OK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeGlobal));
    cuda::attention_decode_with(p, cs, cuda::DecodeKernel::TensorCore, 2);
    const cudaError_t ended = cudaStreamEndCapture(cs, &g.graph);
    CUDA_OK(cudaStreamDestroy(cs));
    ASSERT_EQ(ended, cudaSuccess) << cudaGetErrorString(ended);
    CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
  };
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const auto replay_and_check = [&](GraphRun& g, const std::string& what) {
    out.poison();
    CUDA_OK(cudaGraphLaunch(g.exec, s));
    CUDA_OK(cudaStreamSynchronize(s));
    EXPECT_TRUE(within_tol(out.fetch(), want.out, want.tol, c.d)) << what;
  };

  // Kept alive: the pool runs out.
  int spent_at = -1;
  {
    std::vector<std::unique_ptr<GraphRun>> kept;
    for (int i = 0; i < 64 && spent_at < 0; ++i) {
      kept.push_back(std::make_unique<GraphRun>());
      ASSERT_NO_FATAL_FAILURE(capture(*kept.back()));
      if (count_nodes(kept.back()->graph, cudaGraphNodeTypeMemAlloc) > 0) spent_at = i;
    }
    ASSERT_GT(spent_at, 0) << "the pool never ran out: the checks below could not fail";
    replay_and_check(*kept[0], "the first graph kept");
    replay_and_check(*kept.back(), "the graph on stream-ordered scratch");
  }
  EXPECT_EQ(in_use_after_wait(base), base) << "graphs destroyed, their ranges not given back";

  // Destroyed after each replay: no capture finds the pool spent.
  for (int i = 0; i < 2 * spent_at + 2; ++i) {
    {
      GraphRun g;
      ASSERT_NO_FATAL_FAILURE(capture(g));
      EXPECT_EQ(count_nodes(g.graph, cudaGraphNodeTypeMemAlloc), 0)
          << "capture " << i << " (the pool ran out after " << spent_at << " kept): ranges not given back";
      replay_and_check(g, "capture " + std::to_string(i));
    }
    ASSERT_EQ(in_use_after_wait(base), base) << "capture " << i << "'s range not given back";
  }

  // Destroyed while its launch is queued: the range stays until the launch is complete.
  void *from = nullptr, *to = nullptr;
  CUDA_OK(cudaMalloc(&from, 4096));
  CUDA_OK(cudaMalloc(&to, 4096));
  {
    GraphRun g;
    ASSERT_NO_FATAL_FAILURE(capture(g));
    const int64_t held = cuda::arrival_slots_in_use(pool, 0);
    EXPECT_GT(held, base);
    out.poison();
    CUDA_OK(late_copy(to, from, 4096, 20000, s));
    CUDA_OK(cudaGraphLaunch(g.exec, s));
    CUDA_OK(cudaGraphExecDestroy(g.exec));
    CUDA_OK(cudaGraphDestroy(g.graph));
    g.exec = nullptr, g.graph = nullptr;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(cudaStreamQuery(s), cudaErrorNotReady) << "the 20 ms kernel ended early: nothing tested";
    (void)cudaGetLastError();  // (not-ready is not an error)
    EXPECT_EQ(cuda::arrival_slots_in_use(pool, 0), held) << "given back while a launch of the graph was queued";
    CUDA_OK(cudaStreamSynchronize(s));
    EXPECT_TRUE(within_tol(out.fetch(), want.out, want.tol, c.d)) << "the launch of the destroyed graph";
    EXPECT_EQ(in_use_after_wait(base), base) << "not given back after the launch";
  }
  CUDA_OK(cudaFree(from));
  CUDA_OK(cudaFree(to));
  CUDA_OK(cudaStreamDestroy(s));
}

// The tensor-core decode kernel is a programmatic dependent of the work before it. As
// CudaLora.DependentLaunchWaitsBeforeReadingAndWriting: before each call a kernel that lets its
// dependents start at once and only ~50 us later writes q, K and V (one buffer, one copy) or
// snapshots out2. A call that read q, K or V early computes from the old values (V's 2-3 against
// -1-1: outputs ~2.5 against ~0); one that wrote out2 early shows in the snapshot. Eagerly (behind
// a gate) and in a captured graph, with the splits merged in the grid and by the combine kernel.
TEST(CudaAttention, DecodeWaitsBeforeReadingAndWriting) {
  LORAOPS_REQUIRE_GPU();
  const DType t = DType::BFloat16;
  const int64_t b = 2, hq = 8, hkv = 2, sk = 1000, d = 128;
  const int64_t nq = b * hq * d, nkv = b * hkv * sk * d, total = nq + 2 * nkv;
  HostTensor fresh = random_tensor(t, {total}, -1.f, 1.f), old = random_tensor(t, {total}, 2.f, 3.f);
  const auto parts = [&](void* base, Device dev) {
    const size_t es = size_t(dtype_size(t));
    auto at = [&](int64_t off, std::initializer_list<int64_t> dims) {
      return Tensor::contiguous(static_cast<uint8_t*>(base) + size_t(off) * es, t, dims, dev);
    };
    return std::array<Tensor, 3>{at(0, {b, hq, 1, d}), at(nq, {b, hkv, sk, d}), at(nq + nkv, {b, hkv, sk, d})};
  };
  HostTensor ref(t, {b, hq, 1, d}), got(t, {b, hq, 1, d}), before = random_tensor(t, {b, hq, 1, d}, 5.f, 6.f),
      snap_h(t, {b, hq, 1, d});
  {
    const auto h = parts(fresh.bytes.data(), {});
    attention(h[0], h[1], h[2], false, std::nullopt, ref.view(), {.impl = Impl::Reference});
  }
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const Device gpu{DeviceType::CUDA, 0};
  for (const auto merge : {cuda::DecodeMerge::Auto, cuda::DecodeMerge::Kernel})
    for (bool graph : {true, false}) {  // the graph first: its instantiation loads the kernels
      SCOPED_TRACE(std::string(merge == cuda::DecodeMerge::Auto ? "merged in the grid" : "combine kernel") +
                   (graph ? ", graph" : ", eager"));
      DeviceTensor src(fresh), buf(old), y(got), y2(before), snap(snap_h);
      y.poison();
      CUDA_OK(cudaDeviceSynchronize());
      const auto dv = parts(buf.ptr, gpu);
      const auto p1 = detail::attention_params(dv[0], dv[1], dv[2], false, std::nullopt, y.view());
      const auto p2 = detail::attention_params(dv[0], dv[1], dv[2], false, std::nullopt, y2.view());
      ASSERT_TRUE(cuda::attention_decode_takes(p1, cuda::DecodeKernel::TensorCore));
      auto sequence = [&] {
        ASSERT_EQ(late_copy(buf.ptr, src.ptr, buf.bytes, 50, s), cudaSuccess);
        cuda::attention_decode_with(p1, s, cuda::DecodeKernel::TensorCore, 0, merge);  // reads q, K, V
        ASSERT_EQ(late_copy(snap.ptr, y2.ptr, y2.bytes, 50, s), cudaSuccess);
        cuda::attention_decode_with(p2, s, cuda::DecodeKernel::TensorCore, 0, merge);  // writes y2
      };
      run_ordered(s, graph, sequence);
      y.to_host();
      snap.to_host();
      EXPECT_TRUE(all_close(got, ref, 0.05, 2 * eps_of(t))) << "a read of q, K or V before the copy";
      EXPECT_TRUE(snap_h.bytes == before.bytes) << "out2 written while the kernel before it read it";
    }
  CUDA_OK(cudaStreamDestroy(s));
}

TEST(CudaAttention, ToleranceAdmitsTheInputDtypeAndCatchesBugs) {
  const auto named = [](std::string_view name) {
    return *std::find_if(std::begin(kCases), std::end(kCases), [&](const AttnCase& c) { return c.name == name; });
  };
  const AttnCase cases[] = {named("GQA Sq<Sk causal"), named("Sq>Sk causal (leading rows see nothing)"),
                            named("multi-tile causal"), named("large scale causal D=64")};
  for (const AttnCase& c : cases)
    for (DType t : {DType::BFloat16, DType::Float16, DType::Float32}) {
      SCOPED_TRACE(std::string(c.name) + " " + dtype_name(t));
      const Inputs4 in = make_inputs(c, t);
      const Expected want = expected(c, in, t);
      EXPECT_TRUE(within_tol(expected(c, in, t, Ref::InputDtypeModel).out, want.out, want.tol, c.d))
          << "the same math in the input dtype";
      for (Ref bug : {Ref::TopLeftCausal, Ref::WrongKvHead, Ref::NoScale, Ref::DropLastKey}) {
        if (bug == Ref::TopLeftCausal && (!c.causal || c.sq == c.sk)) continue;  // the same mask
        if (bug == Ref::WrongKvHead && (c.hkv == 1 || c.hkv == c.hq)) continue;  // the same head
        EXPECT_FALSE(within_tol(expected(c, in, t, bug).out, want.out, want.tol, c.d))
            << "bug " << int(bug) << " passes";
      }
    }
}

// vendor is cuDNN's fused attention where the build found cuDNN and the frontend headers, for
// half precision only; elsewhere a registered absence that says why.
TEST(CudaAttention, VendorIsCudnnOrADocumentedAbsence) {
  std::string why;
  if (has_impl("attention", DeviceType::CUDA, Impl::Vendor, DType::BFloat16, &why)) {
    EXPECT_FALSE(has_impl("attention", DeviceType::CUDA, Impl::Vendor, DType::Float32, &why));
  } else {
    EXPECT_NE(why.find("cuDNN"), std::string::npos) << why;
  }
  if (built_with_cuda()) {
    EXPECT_TRUE(has_impl("attention", DeviceType::CUDA, Impl::Custom, DType::BFloat16));
    EXPECT_TRUE(has_impl("attention", DeviceType::CUDA, Impl::Custom, DType::Float32));
  }
}

}  // namespace
}  // namespace loraops::test
