// attention: every implementation and dtype against the reference for MHA, GQA and MQA, causal
// masking bottom-right aligned with Sq == Sk, Sq < Sk and Sq > Sk (fully masked rows give 0),
// Sk = 0, decode (Sq = 1), D in {1, 16, 64} and strided q/k/v; the reference by hand; bad
// arguments.
#include <cmath>
#include <optional>
#include <vector>

#include "linalg_test_util.hpp"

namespace loraops::test {
namespace {

// How q (or k and v) are stored behind the [B, H, S, D] view.
enum Qkv {
  BHSD,  // contiguous
  BSHD,  // [B, S, H, D] viewed transposed: what a fused projection gives
  BHDS,  // [B, H, D, S] viewed transposed: D not contiguous
};

struct AttnCase {
  const char* name;
  int64_t b, hq, hkv, sq, sk, d;
  bool causal = false;
  Qkv q_layout = BHSD, kv_layout = BHSD;
  std::optional<double> scale = std::nullopt;
};

const AttnCase kAttnCases[] = {
    {"MHA", 2, 2, 2, 33, 33, 16},
    {"MHA causal", 1, 2, 2, 33, 33, 16, true},
    {"GQA causal", 1, 4, 2, 31, 31, 64, true},
    {"MQA decode", 2, 4, 1, 1, 129, 64, true},
    {"MQA", 1, 4, 1, 17, 65, 16},
    {"causal Sq < Sk", 1, 2, 1, 17, 70, 16, true},
    {"causal Sq > Sk (masked rows)", 1, 2, 2, 70, 17, 16, true},
    {"Sk = 0", 1, 2, 1, 5, 0, 16},
    {"Sk = 0 causal", 1, 2, 2, 5, 0, 16, true},
    {"D = 1", 2, 3, 3, 9, 31, 1, true},
    {"D = 1 non-causal", 1, 2, 1, 9, 31, 1},
    {"decode Sq = 1, long Sk", 1, 2, 2, 1, 257, 64},
    {"GQA decode Sk = 1023 causal", 2, 8, 2, 1, 1023, 64, true},
    {"few rows, BSHD k/v", 1, 2, 1, 3, 70, 16, true, BHSD, BSHD},
    {"few rows, D-strided k/v", 1, 2, 1, 3, 70, 33, true, BSHD, BHDS},
    {"129 x 129 causal (key blocks)", 1, 2, 1, 129, 129, 64, true},
    {"strided q", 2, 4, 2, 33, 40, 16, true, BSHD},
    {"strided q, k, v", 1, 4, 4, 31, 33, 64, false, BSHD, BSHD},
    {"D-strided q, k, v", 1, 4, 2, 20, 70, 16, true, BHDS, BHDS},
    {"explicit scale", 1, 2, 2, 17, 17, 16, false, BHSD, BHSD, 0.7},
    {"D = 33", 1, 3, 1, 20, 45, 33, true},
};

Operand make_qkv(DType t, int64_t b, int64_t h, int64_t s, int64_t d, Qkv layout) {
  if (layout == BHSD) return make_operand(t, {b, h, s, d});
  Operand o = make_operand(
      t, layout == BSHD ? std::vector<int64_t>{b, s, h, d} : std::vector<int64_t>{b, h, d, s});
  o.view = layout == BSHD ? o.view.transposed(1, 2) : o.view.transposed(2, 3);
  return o;
}

TEST(Attention, MatchesReference) {
  for (const AttnCase& ac : kAttnCases)
    for (DType t : kAllDTypes) {
      // Inputs in [-2, 2] so the softmax is not nearly uniform.
      Operand q = make_qkv(t, ac.b, ac.hq, ac.sq, ac.d, ac.q_layout);
      Operand k = make_qkv(t, ac.b, ac.hkv, ac.sk, ac.d, ac.kv_layout);
      Operand v = make_qkv(t, ac.b, ac.hkv, ac.sk, ac.d, ac.kv_layout);
      for (int64_t i = 0; i < q.storage.numel(); ++i) q.storage.set(i, 2.f * q.storage.get(i));
      HostTensor ref = poisoned(t, {ac.b, ac.hq, ac.sq, ac.d});
      attention(q.view, k.view, v.view, ac.causal, ac.scale, ref.view(), {.impl = Impl::Reference});
      // The output is a convex combination of v rows (|v| <= 1); scores have depth d.
      const Tol tol = tol_for(t, double(ac.d));
      for (Impl impl : impls_under_test()) {
        SCOPED_TRACE(trace(ac.name, t, impl));
        HostTensor out = poisoned(t, {ac.b, ac.hq, ac.sq, ac.d});
        attention(q.view, k.view, v.view, ac.causal, ac.scale, out.view(), {.impl = impl});
        EXPECT_TRUE(matches(out, ref, tol));
      }
    }
}

// Rows that see no key (causal with Sq > Sk: the first Sq - Sk rows) are exactly 0.
TEST(Attention, FullyMaskedRowsAreZero) {
  const int64_t sq = 7, sk = 3, d = 5;
  for (DType t : kAllDTypes)
    for (Impl impl : {Impl::Reference, Impl::Custom, Impl::Auto, Impl::Vendor}) {
      if (impl == Impl::Vendor && !built_with_blas()) continue;
      SCOPED_TRACE(trace("masked rows", t, impl));
      Operand q = make_operand(t, {1, 2, sq, d}), k = make_operand(t, {1, 1, sk, d}),
              v = make_operand(t, {1, 1, sk, d});
      HostTensor out = poisoned(t, {1, 2, sq, d});
      attention(q.view, k.view, v.view, true, std::nullopt, out.view(), {.impl = impl});
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t i = 0; i < sq; ++i)
          for (int64_t c = 0; c < d; ++c) {
            const float o = out.get((h * sq + i) * d + c);
            if (i < sq - sk)
              EXPECT_EQ(o, 0.f) << "row " << i;
            else
              EXPECT_FALSE(std::isnan(o)) << "row " << i;
          }
    }
}

// q = [1, 1], k = [0, ln 3], v = [4, 8], scale 1: the weights are [1/4, 3/4], so a row that
// sees both keys gives 7 and a row that sees key 0 only gives 4. Bottom-right causal alignment:
// Sq = Sk = 2 -> [4, 7]; Sq = 1, Sk = 2 -> [7]; Sq = 2, Sk = 1 -> [0 (sees nothing), 4].
TEST(Attention, ReferenceByHand) {
  const DType f = DType::Float32;
  auto run = [&](int64_t sq, int64_t sk, bool causal) {
    HostTensor q(f, {1, 1, sq, 1}), k(f, {1, 1, sk, 1}), v(f, {1, 1, sk, 1});
    for (int64_t i = 0; i < sq; ++i) q.set(i, 1.f);
    const float kv[] = {0.f, float(std::log(3.0))}, vv[] = {4.f, 8.f};
    for (int64_t j = 0; j < sk; ++j) k.set(j, kv[j]), v.set(j, vv[j]);
    HostTensor out = poisoned(f, {1, 1, sq, 1});
    attention(q.view(), k.view(), v.view(), causal, 1.0, out.view(), {.impl = Impl::Reference});
    std::vector<float> r;
    for (int64_t i = 0; i < sq; ++i) r.push_back(out.get(i));
    return r;
  };
  auto near = [](std::vector<float> got, std::vector<float> want) {
    if (got.size() != want.size()) return false;
    for (size_t i = 0; i < got.size(); ++i)
      if (std::fabs(got[i] - want[i]) > 1e-5f) return false;
    return true;
  };
  EXPECT_TRUE(near(run(2, 2, false), {7, 7}));
  EXPECT_TRUE(near(run(2, 2, true), {4, 7}));
  EXPECT_TRUE(near(run(1, 2, true), {7}));
  EXPECT_TRUE(near(run(2, 1, true), {0, 4}));
  EXPECT_TRUE(near(run(2, 0, false), {0, 0}));
}

TEST(Attention, BadArguments) {
  const DType f = DType::Float32;
  Operand q = make_operand(f, {1, 4, 5, 8}), k = make_operand(f, {1, 2, 6, 8}),
          v = make_operand(f, {1, 2, 6, 8});
  Operand k3 = make_operand(f, {1, 3, 6, 8}), v3 = make_operand(f, {1, 3, 6, 8}),
          k_d = make_operand(f, {1, 2, 6, 7}), v_s = make_operand(f, {1, 2, 5, 8}),
          k_half = make_operand(DType::Float16, {1, 2, 6, 8}), q3 = make_operand(f, {4, 5, 8});
  HostTensor out = poisoned(f, {1, 4, 5, 8}), out_bad = poisoned(f, {1, 2, 5, 8});
  auto call = [&](const Operand& q_, const Operand& k_, const Operand& v_, HostTensor& o) {
    return [&] { attention(q_.view, k_.view, v_.view, false, std::nullopt, o.view()); };
  };
  expect_error(call(q, k3, v3, out), ErrorKind::Value, "k");
  expect_error(call(q, k_d, v, out), ErrorKind::Value, "k");
  expect_error(call(q, k, v_s, out), ErrorKind::Value, "v");
  expect_error(call(q, k_half, v, out), ErrorKind::Type, "k");
  expect_error(call(q3, k, v, out), ErrorKind::Value, "q");
  expect_error(call(q, k, v, out_bad), ErrorKind::Value, "out");
}

}  // namespace
}  // namespace loraops::test
