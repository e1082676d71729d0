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
// cuDNN is loaded at run time (the frontend's dynamic loading: dlopen of libcudnn.so.9 at the
// first call), not linked: the library builds and links without it, a process that already
// loaded cuDNN (PyTorch's) shares that copy, and where none can be loaded `vendor` says so. The
// Python extension builds against its environment's cuDNN wheel when there is one (CMakeLists).
#include "cuda/vendor/attention_cudnn.hpp"

#if LORAOPS_WITH_CUDNN

#ifndef LORAOPS_CUDNN_LIBRARY_DIR  // CMakeLists sets it: the directory of the headers' library
#define LORAOPS_CUDNN_LIBRARY_DIR ""
#endif

#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#include <cudnn.h>
#include <cudnn_frontend.h>
#include <dlfcn.h>

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

namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;  // the frontend's handle on libcudnn (dynamic loading)
}  // namespace cudnn_frontend

namespace loraops::cuda {

namespace fe = cudnn_frontend;

namespace {

constexpr int64_t kQ = 1, kK = 2, kV = 3, kO = 4;  // tensor uids in the graph
constexpr size_t kMaxPlans = 256;                  // cached plans per device

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

struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN refused the shape (why: `error`)
  std::string error;
  int64_t workspace = 0;
};

std::vector<int64_t> vec(const std::array<int64_t, 4>& a) { return {a[0], a[1], a[2], a[3]}; }

std::shared_ptr<fe::graph::Tensor_attributes> tensor(fe::graph::Graph& g, const char* name,
                                                     int64_t uid, std::vector<int64_t> dims,
                                                     std::vector<int64_t> strides) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(strides));
}

Plan build_graph(const detail::AttentionParams& p, cudnnHandle_t handle);

// A failure to build (cuDNN's or the frontend's exceptions, e.g. a symbol the loaded libcudnn
// lacks) is a refusal with its reason, never an exception out of `auto`'s chooser.
Plan build(const detail::AttentionParams& p, cudnnHandle_t handle) {
  try {
    return build_graph(p, handle);
  } catch (const std::exception& e) {
    Plan plan;
    plan.error = e.what();
    return plan;
  }
}

Plan build_graph(const detail::AttentionParams& p, cudnnHandle_t handle) {
  Plan plan;
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
  auto step = [&](fe::error_t e, const char* what) {
    if (e.is_bad() && plan.error.empty()) plan.error = std::string(what) + ": " + e.get_message();
    return e.is_good();
  };
  if (step(g->validate(), "validate") && step(g->build_operation_graph(handle), "operation graph") &&
      step(g->create_execution_plans({fe::HeurMode_t::A}), "heuristics") &&
      step(g->check_support(handle), "support") && step(g->build_plans(handle), "plan") &&
      step(g->get_workspace_size(plan.workspace), "workspace"))
    plan.graph = std::move(g);
  return plan;
}

struct DeviceState {
  std::mutex mu;  // guards the handle's stream and the cache
  cudnnHandle_t handle = nullptr;
  std::map<Key, std::shared_ptr<const Plan>> plans;
};

DeviceState& state(int device) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<DeviceState>> states;  // never freed: process lifetime
  std::lock_guard<std::mutex> lock(mu);
  auto& s = states[device];
  if (!s) s = std::make_unique<DeviceState>();
  return *s;
}

// libcudnn, opened once for the process; "" when loaded, else why not.
const std::string& load_cudnn() {
  static const std::string why = [] {
    // The frontend is built against one cuDNN's headers: another minor version in the process
    // (PyTorch 2.11 carries 9.19 where the build saw 9.14) crashed inside the frontend's graph
    // validation on the H200 (2026-11-29), and a matching library preloaded ran. So a library of
    // another major.minor is never used.
    using GetVersion = size_t (*)();
    auto mismatch = [](void* h) -> std::string {
      const auto get_version = reinterpret_cast<GetVersion>(dlsym(h, "cudnnGetVersion"));
      const size_t version = get_version ? get_version() : 0;
      if (version / 100 == size_t(CUDNN_VERSION) / 100) return std::string();
      return "cuDNN " + std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) +
             " is loaded in this process, and loraops' cuDNN path was built against " +
             std::to_string(CUDNN_MAJOR) + "." + std::to_string(CUDNN_MINOR) +
             " (the frontend needs the version it was built for)";
    };
    // A copy already loaded (PyTorch's) is the only candidate: a second one beside it would not
    // be the one PyTorch uses.
    if (void* h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_NOLOAD)) {
      std::string why_not = mismatch(h);
      if (why_not.empty()) cudnn_frontend::cudnn_dlhandle = h;
      return why_not;
    }
    // Else the library beside the build's headers (a wheel's, the toolkit's), then the system's.
    // One of another version is closed again (RTLD_LOCAL until it matches), so that a later
    // `import torch` does not find it under libcudnn.so.9.
    const std::string own_dir = LORAOPS_CUDNN_LIBRARY_DIR;
    const std::string own = own_dir.empty() ? std::string() : own_dir + "/libcudnn.so.9";
    std::string tried;
    for (const std::string& lib : {own, std::string("libcudnn.so.9"), std::string("libcudnn.so")}) {
      if (lib.empty()) continue;
      void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        const char* e = dlerror();
        tried += "; " + lib + ": " + (e ? e : "not found");
        continue;
      }
      const std::string why_not = mismatch(h);
      if (!why_not.empty()) {
        tried += "; " + lib + ": " + why_not;
        dlclose(h);
        continue;
      }
      dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);  // now global, as cuDNN expects
      cudnn_frontend::cudnn_dlhandle = h;
      return std::string();
    }
    return "no usable libcudnn.so.9 could be loaded" + tried;
  }();
  return why;
}

std::shared_ptr<const Plan> plan_for(const detail::AttentionParams& p, DeviceState& s) {
  if (!s.handle) {
    const cudnnStatus_t st = fe::detail::create_handle(&s.handle);
    if (st != CUDNN_STATUS_SUCCESS) {
      s.handle = nullptr;
      throw Error(ErrorKind::Runtime, "attention", "cudnn", "cudnnCreate to succeed",
                  fe::detail::get_error_string(st));
    }
  }
  const Key key = key_of(p);
  auto it = s.plans.find(key);
  if (it == s.plans.end()) {
    // Every new shape costs a plan (heuristics, perhaps a runtime compile): a serving loop whose
    // lengths keep changing would grow the cache without end, so it is bounded.
    if (s.plans.size() >= kMaxPlans) s.plans.clear();
    it = s.plans.emplace(key, std::make_shared<const Plan>(build(p, s.handle))).first;
  }
  return it->second;
}

}  // namespace

bool attention_cudnn_supports(const detail::AttentionParams& p) {
  if (!refusal(p).empty() || !load_cudnn().empty()) return false;
  try {
    DeviceGuard guard(p.device_index);
    DeviceState& s = state(p.device_index);
    std::lock_guard<std::mutex> lock(s.mu);
    return plan_for(p, s)->graph != nullptr;
  } catch (const std::exception&) {  // no handle, say: `auto` runs our kernel instead
    return false;
  }
}

void attention_vendor(const detail::AttentionParams& p, void* stream_ptr) {
  if (p.batch == 0 || p.hq == 0 || p.sq == 0 || p.d == 0) return;
  const std::string why = refusal(p);
  if (!why.empty()) unsupported(why);
  if (!load_cudnn().empty()) unsupported(load_cudnn());
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(p.device_index);
  DeviceState& s = state(p.device_index);
  std::lock_guard<std::mutex> lock(s.mu);  // the handle is set to this call's stream
  const std::shared_ptr<const Plan> plan = plan_for(p, s);
  if (!plan->graph) unsupported("cuDNN refused the shape (" + plan->error + ")");
  const Scratch ws = stream_scratch(p.device_index, stream, size_t(plan->workspace), "attention", "q");
  const cudnnStatus_t st = fe::detail::set_stream(s.handle, stream);
  if (st != CUDNN_STATUS_SUCCESS)
    throw Error(ErrorKind::Runtime, "attention", "cudnn", "cudnnSetStream to succeed",
                fe::detail::get_error_string(st));
  std::unordered_map<int64_t, void*> pack = {{kQ, const_cast<void*>(p.q)}, {kK, const_cast<void*>(p.k)},
                                             {kV, const_cast<void*>(p.v)}, {kO, p.out}};
  fe::error_t e = plan->graph->execute(s.handle, pack, ws.get());
  if (e.is_bad())
    throw Error(ErrorKind::Runtime, "attention", "cudnn", "the SDPA graph to execute", e.get_message());
}

}  // namespace loraops::cuda

#endif  // LORAOPS_WITH_CUDNN
