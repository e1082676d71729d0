// The operations of the contract (see docs/contract.md). Each op takes its inputs in the contract's
// order, then the output view(s) the caller allocated, then an Exec saying which implementation
// runs and on which stream. Outputs must be contiguous, of the inputs' dtype and device, and of the
// shape the matching *_shape() function returns. Every argument is checked once, here, before any
// backend runs; a bad one throws loraops::Error naming it.
#pragma once

#include <optional>
#include <string_view>

#include "loraops/error.hpp"
#include "loraops/tensor.hpp"

namespace loraops {

enum class Impl : uint8_t { Auto, Vendor, Custom, Reference };
inline constexpr int kNumImpls = 4;

const char* impl_name(Impl impl);
// "auto" / "vendor" / "custom" / "reference"; anything else throws Error(Value) naming "impl".
Impl parse_impl(std::string_view name);

struct Exec {
  Impl impl = Impl::Auto;
  void* stream = nullptr;  // cudaStream_t for CUDA tensors (nullptr: the legacy default stream)
};

enum class Activation : uint8_t { Relu, Sigmoid, Tanh, Gelu, GeluTanh, Silu };
inline constexpr int kNumActivations = 6;
const char* activation_name(Activation kind);
// "relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu"; anything else throws naming "kind".
Activation parse_activation(std::string_view name);

// Output shape of an op; rank at most kMaxDims.
struct Shape {
  int ndim = 0;
  std::array<int64_t, kMaxDims> dims{};
};

// ---- matmul: out = alpha * op(a) @ op(b) + beta * c --------------------------------------------
// a, b: 2-D, or 3-D with equal batch. op(a) is [M,K] (a is [K,M] when trans_a), op(b) is [K,N].
// c (optional) has the output's shape; it is read only when beta != 0, and beta != 0 needs c.
struct MatmulOptions {
  bool trans_a = false;
  bool trans_b = false;
  double alpha = 1.0;
  double beta = 0.0;
  const Tensor* c = nullptr;
  bool allow_tf32 = false;  // float32 is true fp32 unless the caller opts in
};
Shape matmul_shape(const Tensor& a, const Tensor& b, const MatmulOptions& opt = {});
void matmul(const Tensor& a, const Tensor& b, const MatmulOptions& opt, const Tensor& out,
            const Exec& exec = {});

// ---- row operations over a dim (softmax) or the last dim (the rest) ------------------------------
Shape softmax_shape(const Tensor& x, int dim = -1);
void softmax(const Tensor& x, int dim, const Tensor& out, const Exec& exec = {});

Shape rms_norm_shape(const Tensor& x, const Tensor* weight = nullptr);
void rms_norm(const Tensor& x, const Tensor* weight, double eps, const Tensor& out,
              const Exec& exec = {});

Shape layer_norm_shape(const Tensor& x, const Tensor* weight = nullptr,
                       const Tensor* bias = nullptr);
void layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, double eps,
                const Tensor& out, const Exec& exec = {});

Shape activation_shape(const Tensor& x);
void activation(const Tensor& x, Activation kind, const Tensor& out, const Exec& exec = {});

// ---- LoRA: y = x @ weight.T + bias + scale * (x @ lora_a.T) @ lora_b.T ----------------------
// x:[...,K] weight:[N,K] lora_a:[r,K] lora_b:[N,r] bias:[N] (optional) -> y:[...,N]
// xa_out (optional, [...,r] like x with r for K, x's dtype, contiguous): also receives x@lora_a.T,
// unscaled, the intermediate the forward computes anyway; pass it to lora_backward as `xa` to
// spare the backward that product (a pass over x).
Shape lora_forward_shape(const Tensor& x, const Tensor& weight, const Tensor& lora_a,
                         const Tensor& lora_b, const Tensor* bias = nullptr);
void lora_forward(const Tensor& x, const Tensor& weight, const Tensor& lora_a,
                  const Tensor& lora_b, double scale, const Tensor* bias, const Tensor& out,
                  const Exec& exec = {}, const Tensor* xa_out = nullptr);

// grad_x = g@weight + scale*(g@lora_b)@lora_a   (shape of x)
// grad_a = scale*(g@lora_b).T @ x               ([r,K])
// grad_b = scale*g.T @ (x@lora_a.T)             ([N,r])
// with g = grad_y:[...,N] flattened to [M,N] and x:[...,K] to [M,K].
struct LoraBackwardShapes {
  Shape grad_x, grad_a, grad_b;
};
LoraBackwardShapes lora_backward_shapes(const Tensor& grad_y, const Tensor& x,
                                        const Tensor& weight, const Tensor& lora_a,
                                        const Tensor& lora_b);
// xa (optional, [...,r], x's dtype, any row stride): x@lora_a.T as lora_forward's xa_out gave it;
// used for grad_b instead of recomputing it. It must be that product of this x and lora_a (it is
// not checked); x is still read for grad_a.
void lora_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                   const Tensor& lora_a, const Tensor& lora_b, double scale,
                   const Tensor& grad_x, const Tensor& grad_a, const Tensor& grad_b,
                   const Exec& exec = {}, const Tensor* xa = nullptr);

// ---- attention: q:[B,Hq,Sq,D] k,v:[B,Hkv,Sk,D] -> out:[B,Hq,Sq,D] ---------------------------
// Hq % Hkv == 0; causal is bottom-right aligned (query i sees keys j <= i + Sk - Sq); a fully
// masked row gives 0; scale defaults to 1/sqrt(D).
Shape attention_shape(const Tensor& q, const Tensor& k, const Tensor& v);
void attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
               std::optional<double> scale, const Tensor& out, const Exec& exec = {});

// ---- introspection ------------------------------------------------------------------------
// Whether `impl` of `op` ("matmul", "softmax", ...) exists on `device` for `dtype`; when it does
// not and `why` is given, the reason. Impl::Auto asks whether any implementation exists.
bool has_impl(std::string_view op, DeviceType device, Impl impl, DType dtype,
              std::string* why = nullptr);
// Whether this build has the CUDA backend / a BLAS for the CPU vendor path.
bool built_with_cuda();
bool built_with_blas();

}  // namespace loraops
