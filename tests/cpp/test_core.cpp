// The core: tensor views, half conversions, errors, impl/kind parsing, the registry's answers.
#include <cmath>
#include <limits>

#include "core/validate.hpp"
#include "test_util.hpp"

namespace loraops::test {
namespace {

TEST(Half, Fp16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_float(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(f))));
      continue;
    }
    ASSERT_EQ(float_to_fp16(f), uint16_t(h)) << h;
  }
}

TEST(Half, Bf16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_float(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(float_to_bf16(f), uint16_t(h)) << h;
  }
}

TEST(Half, RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between fp16 1.0 and 1 + 2^-10: ties to the even (1.0).
  EXPECT_EQ(fp16_to_float(float_to_fp16(1.f + 0x1p-11f)), 1.f);
  EXPECT_EQ(fp16_to_float(float_to_fp16(1.f + 0x1p-11f + 0x1p-20f)), 1.f + 0x1p-10f);
  EXPECT_EQ(fp16_to_float(float_to_fp16(65504.f)), 65504.f);
  EXPECT_TRUE(std::isinf(fp16_to_float(float_to_fp16(65520.f))));
  EXPECT_EQ(fp16_to_float(float_to_fp16(65519.f)), 65504.f);
  EXPECT_EQ(fp16_to_float(float_to_fp16(0x1p-24f)), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(fp16_to_float(float_to_fp16(0x1p-25f)), 0.f);       // tie to even: zero
  EXPECT_EQ(fp16_to_float(float_to_fp16(0x1.8p-25f)), 0x1p-24f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.f + 0x1p-8f)), 1.f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.f + 0x1p-8f + 0x1p-20f)), 1.f + 0x1p-7f);
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity()))));
}

TEST(TensorView, ContiguityAndTranspose) {
  float buf[24];
  Tensor t = Tensor::contiguous(buf, DType::Float32, {2, 3, 4});
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.stride(-1), 1);
  EXPECT_EQ(t.stride(0), 12);
  Tensor tr = t.transposed(0, 2);
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.size(0), 4);
  EXPECT_EQ(tr.stride(0), 1);
  EXPECT_EQ(shape_str(tr), "[4, 3, 2]");
}

TEST(RowsView, CollapsesLeadingDimsWhereStridesAllow) {
  float buf[2 * 3 * 8];
  Tensor t = Tensor::contiguous(buf, DType::Float32, {2, 3, 8});
  detail::RowsView v = detail::rows_view(t);
  EXPECT_EQ(v.rows, 6);
  EXPECT_EQ(v.cols, 8);
  EXPECT_EQ(v.nlead, 1);
  int64_t rs = 0;
  EXPECT_TRUE(v.uniform(&rs));
  EXPECT_EQ(rs, 8);
  // Columns 0..3 of each row: rows still evenly spaced.
  Tensor sl = t;
  sl.shape[2] = 4;
  v = detail::rows_view(sl);
  EXPECT_EQ(v.nlead, 1);
  // dim 1 moved last: leading dims (2, 8) with strides (24, 1) do not merge.
  v = detail::rows_view(detail::move_dim_last(t, 1));
  EXPECT_EQ(v.nlead, 2);
  EXPECT_EQ(v.row_offset(9), 24 + 1);  // row 9 = (1, 1)
}

TEST(Errors, NameTheOpArgumentExpectedAndGot) {
  float x[8], o[8];
  Tensor xt = Tensor::contiguous(x, DType::Float32, {2, 4});
  Tensor ot = Tensor::contiguous(o, DType::Float32, {4, 2});
  try {
    softmax(xt, -1, ot);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Value);
    EXPECT_EQ(e.op(), "softmax");
    EXPECT_EQ(e.argument(), "out");
    EXPECT_EQ(e.expected(), "shape [2, 4]");
    EXPECT_EQ(e.got(), "shape [4, 2]");
    EXPECT_STREQ(e.what(), "softmax: argument 'out': expected shape [2, 4], got shape [4, 2]");
  }
}

TEST(Errors, NullAndMisalignedPointers) {
  float buf[9];
  Tensor x = Tensor::contiguous(nullptr, DType::Float32, {2, 4});
  Tensor o = Tensor::contiguous(buf, DType::Float32, {2, 4});
  try {
    rms_norm(x, nullptr, 1e-6, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "x");
    EXPECT_EQ(e.got(), "null");
  }
  x.data = reinterpret_cast<char*>(buf) + 1;
  try {
    rms_norm(x, nullptr, 1e-6, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "x");
    EXPECT_EQ(e.got(), "a misaligned pointer");
  }
}

TEST(Errors, MixedDtypesAreTypeErrors) {
  float x[8], o[8];
  uint16_t w[4];
  Tensor xt = Tensor::contiguous(x, DType::Float32, {2, 4});
  Tensor wt = Tensor::contiguous(w, DType::Float16, {4});
  Tensor ot = Tensor::contiguous(o, DType::Float32, {2, 4});
  try {
    rms_norm(xt, &wt, 1e-6, ot);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Type);
    EXPECT_EQ(e.argument(), "weight");
  }
}

TEST(Errors, CudaTensorsWithoutACudaBackendOrKernel) {
  float x[8], o[8];
  Tensor xt = Tensor::contiguous(x, DType::Float32, {8}, Device{DeviceType::CUDA, 0});
  Tensor ot = Tensor::contiguous(o, DType::Float32, {8}, Device{DeviceType::CUDA, 0});
  // No vendor softmax on CUDA (or no CUDA backend): Unsupported before anything runs.
  try {
    softmax(xt, -1, ot, {.impl = Impl::Vendor});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
    EXPECT_EQ(e.argument(), "impl");
  }
  Tensor oc = Tensor::contiguous(o, DType::Float32, {8});
  try {
    activation(xt, Activation::Relu, oc);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "out");
  }
}

TEST(Parse, ImplAndActivationNames) {
  EXPECT_EQ(parse_impl("auto"), Impl::Auto);
  EXPECT_EQ(parse_impl("reference"), Impl::Reference);
  EXPECT_EQ(parse_activation("gelu_tanh"), Activation::GeluTanh);
  try {
    parse_impl("fast");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "impl");
  }
  try {
    parse_activation("swish");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "kind");
  }
}

TEST(Registry, EveryOpHasAReferenceAndCustomOnTheCpu) {
  for (const char* op : {"matmul", "softmax", "rms_norm", "layer_norm", "activation",
                         "lora_forward", "lora_backward", "attention"})
    for (DType t : kAllDTypes) {
      EXPECT_TRUE(has_impl(op, DeviceType::CPU, Impl::Reference, t)) << op;
      EXPECT_TRUE(has_impl(op, DeviceType::CPU, Impl::Custom, t)) << op;
    }
  std::string why;
  EXPECT_FALSE(has_impl("softmax", DeviceType::CPU, Impl::Vendor, DType::Float32, &why));
  EXPECT_NE(why.find("BLAS"), std::string::npos);
  EXPECT_EQ(has_impl("matmul", DeviceType::CPU, Impl::Vendor, DType::Float32), built_with_blas());
  EXPECT_FALSE(has_impl("no_such_op", DeviceType::CPU, Impl::Auto, DType::Float32, &why));
}

}  // namespace
}  // namespace loraops::test
