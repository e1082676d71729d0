// Hopper warpgroup MMA (wgmma, sm_90a) for the flash attention kernel: shared-memory matrix
// descriptors in the 128-byte-swizzle layout, the async MMA with both operands in shared memory
// (S = Q K^T) and with A in registers (O += P V), and the fences and group waits around them.
//
// A warpgroup is 4 consecutive warps (128 threads, the first a multiple of 4). An m64nNk16 MMA
// computes 64 rows: warp w of the group owns rows 16 w .. 16 w + 15, and its accumulators are laid
// out exactly as mma.m16n8k16's, one 8-column tile after another: d[4 j + e] is row
// 16 w + g + 8 (e / 2), column 8 j + 2 tq + e % 2 (g = lane / 4, tq = lane % 4). An A operand in
// registers is the m16n8k16 A fragment of the warp's 16 rows. So a score tile S converts to the A
// operand P of the next MMA in registers, as in FlashAttention.
//
// The asm bodies are long operand lists (one "+f" per accumulator), written out per shape (the
// shapes the flash kernel uses: S N = 128; P V N = D, 64 or 128) and stamped per type by a macro.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace loraops::cuda::wgmma {

// The 128-byte-swizzle tile both operands use: rows of 64 16-bit elements (128 bytes); 8-row atoms
// of 1024 bytes, each starting 1024-byte aligned; 16-byte chunk c of row r stored at chunk
// c ^ (r % 8) of that row.
//
// The descriptor of a 128-byte-swizzled operand at shared address `addr`. Its base offset is left
// 0: every operand must start in a 1024-byte-aligned atom, or at +32 j bytes into one (k-steps).
// K-major (the reduction index runs along the 128-byte rows; Q and K): lbo unused (16), sbo =
// 1024, the step between 8-row groups; the MMA's 16 k-elements of a row are 32 bytes, so k-step
// j of a 64-wide tile starts at addr + 32 j (the hardware swizzles the absolute address).
// MN-major (rows run along k, the output index along the 128-byte rows; V as P V's B): sbo =
// 1024 between groups of 8 k-rows, lbo = the bytes between one 64-wide column block and the next.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
}

// Before the first MMA of a group that reads registers written by ordinary instructions
// (accumulators, the A operand).
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Waits until at most N committed groups of this warpgroup are in flight.
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of accumulators across a fence or wait: each
// register is "rewritten" in place by an empty asm.
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// Writes to shared memory by ordinary instructions (cp.async included) made visible to the MMAs,
// which read shared memory through the async proxy. Each writing thread, after its writes
// completed and before the barrier the readers wait at.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

template <class T, int N>
__device__ __forceinline__ void mma_ss(float (&d)[N / 2], uint64_t a, uint64_t b, int accumulate);
template <class T, int N>
__device__ __forceinline__ void mma_rs_bt(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, int accumulate);

// d (+)= a * b: a, b from shared memory (descriptors), both K-major; N = 128. CT: the C++ type,
// TY: its PTX name.
#define LORAOPS_WGMMA_SS_N128(CT, TY) \
  template <> \
  __device__ __forceinline__ void mma_ss<CT, 128>(float (&d)[64], uint64_t a, uint64_t b, int accumulate) { \
    asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, " \
      "%64, %65, p, 1, 1, 0, 0;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "l"(a), "l"(b), "r"(accumulate)); \
  }

// d += a * b: a from registers (the m16n8k16 A fragment of this warp's 16 rows), b from shared
// memory, MN-major (transposed); N = 64.
#define LORAOPS_WGMMA_RS_BT_N64(CT, TY) \
  template <> \
  __device__ __forceinline__ void mma_rs_bt<CT, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int accumulate) { \
    asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, " \
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate)); \
  }

// d += a * b: a from registers (the m16n8k16 A fragment of this warp's 16 rows), b from shared
// memory, MN-major (transposed); N = 128.
#define LORAOPS_WGMMA_RS_BT_N128(CT, TY) \
  template <> \
  __device__ __forceinline__ void mma_rs_bt<CT, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t b, int accumulate) { \
    asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, " \
      "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate)); \
  }

LORAOPS_WGMMA_SS_N128(__nv_bfloat16, "bf16")
LORAOPS_WGMMA_SS_N128(__half, "f16")
LORAOPS_WGMMA_RS_BT_N64(__nv_bfloat16, "bf16")
LORAOPS_WGMMA_RS_BT_N64(__half, "f16")
LORAOPS_WGMMA_RS_BT_N128(__nv_bfloat16, "bf16")
LORAOPS_WGMMA_RS_BT_N128(__half, "f16")
#undef LORAOPS_WGMMA_SS_N128
#undef LORAOPS_WGMMA_RS_BT_N64
#undef LORAOPS_WGMMA_RS_BT_N128

}  // namespace loraops::cuda::wgmma
