// Front end of attention.
#include <cmath>
#include <string>

#include "core/registry.hpp"
#include "core/validate.hpp"

namespace loraops {

using namespace detail;

Shape attention_shape(const Tensor& q, const Tensor& k, const Tensor& v) {
  Checker c{"attention"};
  c.tensor(q, "q");
  c.rank(q, "q", 4, 4);
  c.input_like(k, "k", q, "q");
  c.rank(k, "k", 4, 4);
  c.input_like(v, "v", q, "q");
  c.rank(v, "v", 4, 4);
  const int64_t b = q.size(0), hq = q.size(1), d = q.size(3);
  const int64_t hkv = k.size(1), sk = k.size(2);
  const std::string want_k = "shape [" + std::to_string(b) + ", Hkv, Sk, " + std::to_string(d) +
                             "] (B and D as q)";
  c.size(k, "k", 0, b, want_k);
  c.size(k, "k", 3, d, want_k);
  if (hkv == 0 ? hq != 0 : hq % hkv != 0)
    c.fail(ErrorKind::Value, "k",
           "a head count Hkv that divides q's " + std::to_string(hq) + " heads",
           "shape " + shape_str(k));
  bool same = true;
  for (int i = 0; i < 4; ++i) same = same && v.shape[size_t(i)] == k.shape[size_t(i)];
  if (!same) c.fail(ErrorKind::Value, "v", "shape " + shape_str(k) + " (as k)", "shape " + shape_str(v));
  (void)sk;
  return shape_of(q);
}

AttentionParams detail::attention_params(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                         std::optional<double> scale, const Tensor& out) {
  AttentionParams p;
  p.dtype = q.dtype;
  p.device_index = q.device.index;
  p.batch = q.size(0);
  p.hq = q.size(1);
  p.sq = q.size(2);
  p.d = q.size(3);
  p.hkv = k.size(1);
  p.sk = k.size(2);
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  for (int i = 0; i < 4; ++i) {
    p.q_strides[size_t(i)] = q.strides[size_t(i)];
    p.k_strides[size_t(i)] = k.strides[size_t(i)];
    p.v_strides[size_t(i)] = v.strides[size_t(i)];
  }
  p.out = out.data;
  p.causal = causal;
  p.scale = float(scale ? *scale : (p.d > 0 ? 1.0 / std::sqrt(double(p.d)) : 1.0));
  return p;
}

void attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
               std::optional<double> scale, const Tensor& out, const Exec& exec) {
  Checker c{"attention"};
  const Shape s = attention_shape(q, k, v);
  if (scale && !std::isfinite(*scale))
    c.fail(ErrorKind::Value, "scale", "a finite scale or None", std::to_string(*scale));
  c.output(out, "out", s, q.dtype, q.device);
  dispatch(OpId::Attention, q.device, q.dtype, exec, attention_params(q, k, v, causal, scale, out),
           out.numel() > 0);
}

}  // namespace loraops
