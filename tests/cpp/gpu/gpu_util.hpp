// GPU test helpers: skip without a device, device buffers that mirror a HostTensor.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "test_util.hpp"

namespace loraops::test {

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define LORAOPS_REQUIRE_GPU() \
  if (!::loraops::test::have_gpu()) GTEST_SKIP() << "no CUDA device"

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// A device copy of a HostTensor (same dtype and shape), freed on scope exit.
struct DeviceTensor {
  HostTensor* host = nullptr;
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceTensor(HostTensor& h) : host(&h), bytes(h.bytes.size()) {
    EXPECT_EQ(cudaMalloc(&ptr, bytes), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, h.bytes.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceTensor() { cudaFree(ptr); }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  // 0xFF bytes: NaN in every float type, so an unwritten element fails the comparison.
  void poison() { EXPECT_EQ(cudaMemset(ptr, 0xFF, bytes), cudaSuccess); }
  Tensor view() {
    Tensor t = host->view();
    t.data = ptr;
    t.device = Device{DeviceType::CUDA, 0};
    return t;
  }
  void to_host() {
    EXPECT_EQ(cudaMemcpy(host->bytes.data(), ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

}  // namespace loraops::test
