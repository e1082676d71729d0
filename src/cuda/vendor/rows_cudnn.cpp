// rms_norm, layer_norm and the activations on CUDA, vendor: cuDNN's graph API. The norms are its
// norm-forward operation in the inference phase (fp32 statistics, no mean or inverse variance
// written); the activations its pointwise modes (RELU_FWD, SIGMOID_FWD, TANH_FWD, GELU_FWD (erf),
// GELU_APPROX_TANH_FWD, SWISH_FWD with beta 1 for silu). float32, float16 and bfloat16, fp32
// compute. x is given as [rows, cols, 1, 1] with its row stride (cuDNN normalises over every dim
// but the first); weight and bias as [1, cols, 1, 1]. One graph per (op, kind, dtype, rows, cols,
// row strides, weight and bias presence, eps), built at the first call and cached per device
// beside the device's cuDNN handle (cudnn_runtime.hpp); the workspace comes from the stream's
// scratch.
//
// Refused (UnsupportedError): rows that are not evenly spaced, overlap or run backwards, a column
// stride other than 1, a pointer not 16-byte aligned (cuDNN's tensors assume it and find out
// otherwise only at execute), a weight or bias stride other than 1, a norm written in place
// (cuDNN does not promise a row is read before it is written), an activation in place with
// different row strides, layer_norm with a bias and no weight (cuDNN's norm takes a bias only
// beside a scale), no loadable libcudnn of the build's version, and what cuDNN's own support
// check rejects. The rows are part of a plan's key: each new row count builds a plan (a runtime
// compile for the activations), so this path suits fixed shapes; `auto` runs ours.
#include "cuda/vendor/rows_cudnn.hpp"

#if LORAOPS_WITH_CUDNN

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "cuda/common.cuh"
#include "cuda/stream_scratch.hpp"
#include "cuda/vendor/cudnn_runtime.hpp"

namespace loraops::cuda {

namespace {

namespace fe = cudnn_frontend;
using detail::RowParams;

enum class RowOp { RmsNorm, LayerNorm, Activation };

const char* name_of(RowOp op) {
  switch (op) {
    case RowOp::RmsNorm: return "rms_norm";
    case RowOp::LayerNorm: return "layer_norm";
    case RowOp::Activation: return "activation";
  }
  return "?";
}

constexpr int64_t kX = 1, kW = 2, kB = 3, kY = 4;  // tensor uids in the graphs

[[noreturn]] void unsupported(RowOp op, const std::string& why) {
  throw Error(ErrorKind::Unsupported, name_of(op), "impl", "inputs cuDNN's graph API takes", "vendor: " + why);
}

bool uses_weight(RowOp op, const RowParams& p) { return op != RowOp::Activation && p.weight; }
bool uses_bias(RowOp op, const RowParams& p) { return op == RowOp::LayerNorm && p.bias; }

// The row strides of x and out (rows == 1: a packed row, whatever the view says).
struct Strides {
  int64_t x = 0, out = 0;
};

// Why cuDNN cannot take these inputs (loraops' own rules), or "" when it may.
std::string refusal(RowOp op, const RowParams& p, Strides* s) {
  if (!p.x.uniform(&s->x) || !p.out.uniform(&s->out)) return "rows that are not evenly spaced";
  if (p.x.rows <= 1) s->x = s->out = p.x.cols;
  if (p.x.col_stride != 1 || p.out.col_stride != 1) return "a column stride other than 1";
  if (s->x < p.x.cols || s->out < p.x.cols) return "rows that overlap or run backwards";
  if (!aligned16(p.x.p) || !aligned16(p.out.p) || (uses_weight(op, p) && !aligned16(p.weight)) ||
      (uses_bias(op, p) && !aligned16(p.bias)))
    return "a pointer not 16-byte aligned";
  if ((uses_weight(op, p) && p.weight_stride != 1) || (uses_bias(op, p) && p.bias_stride != 1))
    return "a weight or bias stride other than 1";
  if (op != RowOp::Activation && p.x.p == p.out.p) return "a norm in place (x and out the same memory)";
  if (p.x.p == p.out.p && s->x != s->out) return "x and out overlapping with different row strides";
  if (op == RowOp::LayerNorm && p.bias && !p.weight) return "a bias without a weight";
  return "";
}

fe::DataType_t fe_type(DType t) {
  return t == DType::BFloat16 ? fe::DataType_t::BFLOAT16
         : t == DType::Float16 ? fe::DataType_t::HALF
                               : fe::DataType_t::FLOAT;
}

fe::PointwiseMode_t mode_of(Activation kind) {
  switch (kind) {
    case Activation::Relu: return fe::PointwiseMode_t::RELU_FWD;
    case Activation::Sigmoid: return fe::PointwiseMode_t::SIGMOID_FWD;
    case Activation::Tanh: return fe::PointwiseMode_t::TANH_FWD;
    case Activation::Gelu: return fe::PointwiseMode_t::GELU_FWD;
    case Activation::GeluTanh: return fe::PointwiseMode_t::GELU_APPROX_TANH_FWD;
    case Activation::Silu: return fe::PointwiseMode_t::SWISH_FWD;
  }
  return fe::PointwiseMode_t::RELU_FWD;
}

using Key = std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t, bool, bool, uint32_t>;

Key key_of(RowOp op, const RowParams& p, const Strides& s) {
  uint32_t eps_bits = 0;
  if (op != RowOp::Activation) std::memcpy(&eps_bits, &p.eps, sizeof eps_bits);
  return {int(op), op == RowOp::Activation ? int(p.kind) : -1, int(p.dtype), p.x.rows, p.x.cols, s.x, s.out,
          uses_weight(op, p), uses_bias(op, p), eps_bits};
}

using cudnn::Plan;

// [rows, cols, 1, 1] with row stride rs (the unit dims' strides as cuDNN's own samples give them).
fe::graph::Tensor_attributes rows_tensor(const char* name, int64_t uid, int64_t rows, int64_t cols, int64_t rs) {
  return fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim({rows, cols, 1, 1}).set_stride(
      {rs, 1, cols, cols});
}

Plan build(RowOp op, const RowParams& p, const Strides& s, cudnnHandle_t handle) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe_type(p.dtype))
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const int64_t rows = p.x.rows, cols = p.x.cols;
  auto x = g->tensor(rows_tensor("x", kX, rows, cols, s.x));
  std::shared_ptr<fe::graph::Tensor_attributes> y;
  if (op == RowOp::Activation) {
    auto attrs = fe::graph::Pointwise_attributes().set_name("activation").set_mode(mode_of(p.kind)).set_compute_data_type(
        fe::DataType_t::FLOAT);
    if (p.kind == Activation::Silu) attrs.set_swish_beta(1.f);
    y = g->pointwise(x, attrs);
  } else {
    std::shared_ptr<fe::graph::Tensor_attributes> w, b;
    if (uses_weight(op, p)) w = g->tensor(rows_tensor("weight", kW, 1, cols, cols));
    if (uses_bias(op, p)) b = g->tensor(rows_tensor("bias", kB, 1, cols, cols));
    auto eps = g->tensor(fe::graph::Tensor_attributes(p.eps));  // a scalar baked into the graph
    if (op == RowOp::RmsNorm) {
      auto attrs = fe::graph::Rmsnorm_attributes().set_name("rms_norm").set_forward_phase(
          fe::NormFwdPhase_t::INFERENCE);
      attrs.set_epsilon(eps);
      y = g->rmsnorm(x, w, attrs)[0];  // no weight: cuDNN's norm without a scale
    } else {
      auto attrs = fe::graph::Layernorm_attributes().set_name("layer_norm").set_forward_phase(
          fe::NormFwdPhase_t::INFERENCE);
      attrs.set_epsilon(eps);
      y = g->layernorm(x, w, b, attrs)[0];
    }
  }
  y->set_output(true).set_uid(kY).set_data_type(fe_type(p.dtype)).set_dim({rows, cols, 1, 1}).set_stride(
      {s.out, 1, cols, cols});
  return cudnn::finish(std::move(g), handle, {fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
}

void run(RowOp op, const RowParams& p, void* stream_ptr) {
  if (p.x.rows == 0 || p.x.cols == 0) return;
  Strides s;
  const std::string why = refusal(op, p, &s);
  if (!why.empty()) unsupported(op, why);
  if (!cudnn::load().empty()) unsupported(op, cudnn::load());
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(p.device_index);
  cudnn::Device& d = cudnn::device(p.device_index);
  std::lock_guard<std::mutex> lock(d.mu);  // the handle is set to this call's stream
  const cudnnHandle_t handle = cudnn::handle_on(d, stream, name_of(op));
  static auto& cache = *new cudnn::PlanCache<Key>;  // never destroyed (PlanCache says why)
  const std::shared_ptr<const Plan> plan =
      cache.get(p.device_index, key_of(op, p, s), [&] { return build(op, p, s, handle); });
  if (!plan->graph) unsupported(op, "cuDNN refused the shape (" + plan->error + ")");
  const Scratch ws = stream_scratch(p.device_index, stream, size_t(plan->workspace), name_of(op), "x");
  std::unordered_map<int64_t, void*> pack = {{kX, p.x.p}, {kY, p.out.p}};
  if (uses_weight(op, p)) pack[kW] = const_cast<void*>(p.weight);
  if (uses_bias(op, p)) pack[kB] = const_cast<void*>(p.bias);
  fe::error_t e = plan->graph->execute(handle, pack, ws.get());
  if (e.is_bad())
    throw Error(ErrorKind::Runtime, name_of(op), "cudnn", "the cuDNN graph to execute", e.get_message());
}

}  // namespace

void rms_norm_vendor(const RowParams& p, void* stream) { run(RowOp::RmsNorm, p, stream); }
void layer_norm_vendor(const RowParams& p, void* stream) { run(RowOp::LayerNorm, p, stream); }
void activation_vendor(const RowParams& p, void* stream) { run(RowOp::Activation, p, stream); }

}  // namespace loraops::cuda

#endif  // LORAOPS_WITH_CUDNN
