// attention on CUDA, vendor: cuDNN's fused attention (SDPA) through the cuDNN frontend's graph
// API, for float16/bfloat16. One graph per shape (dims, strides, dtype, mask, scale), built once
// (operation graph, heuristics, plan) and cached per device; the workspace comes from the
// stream's scratch; one cuDNN handle per device, set to the caller's stream on each call.
//
// What cuDNN is given: Q [B, Hq, Sq, D], K and V [B, Hkv, Sk, D] with the caller's strides (GQA by
// Hkv < Hq), inference (no softmax statistics), the scale, and under `causal` the bottom-right
// aligned mask loraops defines. Refused (UnsupportedError, so `auto` runs our kernel): float32,
// D not a multiple of 8 or above 256, a last dim that is not contiguous, Sk = 0, and causal with
// Sq > Sk (its first queries see no key, and loraops defines their output as zeros), a scale
// that is not positive (cuDNN's output is NaN), and any shape cuDNN's own support check rejects.
//
// cuDNN is loaded at run time (cudnn_runtime.cpp: the frontend's dynamic loading, dlopen of
// libcudnn.so.9 at the first call), not linked: the library builds and links without it, a
// process that already loaded cuDNN (PyTorch's) shares that copy, and where none can be loaded
// `vendor` says so. The Python extension builds against its environment's cuDNN wheel when
// there is one (CMakeLists).
#include "cuda/vendor/attention_cudnn.hpp"

#if LORAOPS_WITH_CUDNN

#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "cuda/common.cuh"
#include "cuda/stream_scratch.hpp"
#include "cuda/vendor/cudnn_runtime.hpp"

namespace loraops::cuda {

namespace fe = cudnn_frontend;
using cudnn::load;

namespace {

constexpr int64_t kQ = 1, kK = 2, kV = 3, kO = 4;  // tensor uids in the graph

[[noreturn]] void unsupported(const std::string& why) {
  throw Error(ErrorKind::Unsupported, "attention", "impl",
              "a shape cuDNN's fused attention takes", "vendor: " + why);
}

// Why cuDNN's SDPA cannot take these parameters (loraops' own rules), or "" when it may.
std::string refusal(const detail::AttentionParams& p) {
  if (p.batch == 0 || p.hq == 0 || p.sq == 0 || p.d == 0) return "an empty output";
  if (p.dtype == DType::Float32) return "float32 (cuDNN's fused attention is half precision)";
  // the frontend's tensors assume 16-byte alignment; it finds out otherwise only at execute
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out))
    return "a pointer not 16-byte aligned";
  if (p.d % 8 != 0 || p.d > 256) return "head dim " + std::to_string(p.d) + " (needs a multiple of 8, at most 256)";
  if (p.q_strides[3] != 1 || p.k_strides[3] != 1 || p.v_strides[3] != 1)
    return "a head dim that is not contiguous";
  if (p.sk == 0) return "no keys (Sk = 0)";
  if (p.causal && p.sq > p.sk) return "causal with Sq > Sk (queries that see no key)";
  // cuDNN 9.14 returned NaN for every output at scale 0 and -0.5 (H200, 2026-11-29)
  if (!(p.scale > 0.f)) return "a scale that is not positive";
  return "";
}

using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       std::array<int64_t, 4>, std::array<int64_t, 4>, std::array<int64_t, 4>,
                       bool, uint32_t>;

Key key_of(const detail::AttentionParams& p) {
  uint32_t scale_bits;
  std::memcpy(&scale_bits, &p.scale, sizeof scale_bits);
  return {p.device_index, int(p.dtype), p.batch, p.hq, p.hkv, p.sq, p.sk, p.d,
          p.q_strides, p.k_strides, p.v_strides, p.causal, scale_bits};
}

using cudnn::Plan;

std::vector<int64_t> vec(const std::array<int64_t, 4>& a) { return {a[0], a[1], a[2], a[3]}; }

std::shared_ptr<fe::graph::Tensor_attributes> tensor(fe::graph::Graph& g, const char* name,
                                                     int64_t uid, std::vector<int64_t> dims,
                                                     std::vector<int64_t> strides) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(strides));
}

Plan build_graph(const detail::AttentionParams& p, cudnnHandle_t handle) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(p.dtype == DType::BFloat16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto q = tensor(*g, "Q", kQ, {p.batch, p.hq, p.sq, p.d}, vec(p.q_strides));
  auto k = tensor(*g, "K", kK, {p.batch, p.hkv, p.sk, p.d}, vec(p.k_strides));
  auto v = tensor(*g, "V", kV, {p.batch, p.hkv, p.sk, p.d}, vec(p.v_strides));
  auto opts = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(false).set_attn_scale(p.scale);
  // bottom-right with one query row sees every key: no mask (older cuDNN refuses it at Sq = 1)
  if (p.causal && p.sq > 1) opts.set_causal_mask_bottom_right(true);
  auto [o, stats] = g->sdpa(q, k, v, opts);
  (void)stats;  // inference: not produced
  o->set_output(true).set_uid(kO).set_dim({p.batch, p.hq, p.sq, p.d}).set_stride(
      {p.hq * p.sq * p.d, p.sq * p.d, p.d, 1});  // loraops' output: contiguous [B, Hq, Sq, D]
  return cudnn::finish(std::move(g), handle, {fe::HeurMode_t::A});
}

// The cached plan for p (built at the first call with it); the device's mutex held. A failure to
// build (cuDNN's or the frontend's exceptions, e.g. a symbol the loaded libcudnn lacks) is a
// refusal with its reason, never an exception out of `auto`'s chooser.
std::shared_ptr<const Plan> plan_for(const detail::AttentionParams& p, cudnnHandle_t handle) {
  static auto& cache = *new cudnn::PlanCache<Key>;  // never destroyed (PlanCache says why)
  return cache.get(p.device_index, key_of(p), [&] { return build_graph(p, handle); });
}

}  // namespace

bool attention_cudnn_supports(const detail::AttentionParams& p) {
  if (!refusal(p).empty() || !load().empty()) return false;
  try {
    DeviceGuard guard(p.device_index);
    cudnn::Device& d = cudnn::device(p.device_index);
    std::lock_guard<std::mutex> lock(d.mu);
    return plan_for(p, cudnn::handle_on(d, nullptr, "attention"))->graph != nullptr;
  } catch (const std::exception&) {  // no handle, say: `auto` runs our kernel instead
    return false;
  }
}

void attention_vendor(const detail::AttentionParams& p, void* stream_ptr) {
  if (p.batch == 0 || p.hq == 0 || p.sq == 0 || p.d == 0) return;
  const std::string why = refusal(p);
  if (!why.empty()) unsupported(why);
  if (!load().empty()) unsupported(load());
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(p.device_index);
  cudnn::Device& d = cudnn::device(p.device_index);
  std::lock_guard<std::mutex> lock(d.mu);  // the handle is set to this call's stream
  const cudnnHandle_t handle = cudnn::handle_on(d, stream, "attention");
  const std::shared_ptr<const Plan> plan = plan_for(p, handle);
  if (!plan->graph) unsupported("cuDNN refused the shape (" + plan->error + ")");
  const Scratch ws = stream_scratch(p.device_index, stream, size_t(plan->workspace), "attention", "q");
  std::unordered_map<int64_t, void*> pack = {{kQ, const_cast<void*>(p.q)}, {kK, const_cast<void*>(p.k)},
                                             {kV, const_cast<void*>(p.v)}, {kO, p.out}};
  fe::error_t e = plan->graph->execute(handle, pack, ws.get());
  if (e.is_bad())
    throw Error(ErrorKind::Runtime, "attention", "cudnn", "the SDPA graph to execute", e.get_message());
}

}  // namespace loraops::cuda

#endif  // LORAOPS_WITH_CUDNN
