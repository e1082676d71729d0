// lt::gemm: the row-major GEMM mapped onto cuBLASLt's column-major one, with everything that is
// not per-call data cached.
//
// Mapping. Row-major D[m,n] is column-major D^T[n,m], so cuBLASLt computes D^T = op(b)^T @ op(a)^T:
// its "A" is our b seen as [n,k], its "B" our a seen as [k,m]. Each operand becomes op N or T
// according to which of its strides is 1; one that has no unit stride (or an ld cuBLASLt rejects:
// below the row count, negative, a negative batch stride) is packed into contiguous scratch by a
// strided-copy kernel on the stream. C has no op in cuBLASLt (TRANSC is N only): it must look like
// D or be packed. When cuBLASLt offers no algorithm for a layout (misalignment it cannot handle),
// the call falls back to packing every operand, D included, into 16-byte-aligned scratch; when
// none exists with the bias epilogue either, to D = beta*C + bias by a small kernel and the plain
// GEMM accumulating into it.
//
// Caches (all process-lifetime, never destroyed: static destructors would run after cuBLASLt and
// the CUDA context are gone):
// - one cublasLtHandle_t per device, created on first use;
// - per (device, stream): a 32 MiB workspace, cudaMalloc'd on first use outside capture (during
//   capture nothing may be allocated, so such a call runs with no workspace), and the packing
//   scratch, grown outside capture only;
// - plans, keyed by everything that shapes one (dtype, compute type, ops, m/n/k, lds, batch and
//   batch strides, epilogue, C's presence and aliasing, pointer alignment classes, workspace
//   size): the matmul descriptor, the four layouts and the algorithm cuBLASLt's heuristic chose.
// One mutex guards the maps; a per-stream mutex serialises calls sharing a stream's scratch; a
// per-plan mutex guards the one per-call attribute in a shared descriptor (the bias pointer).
#include "cuda/vendor/cublaslt.hpp"

#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/kernels/gemm_k0.hpp"
#include "cuda/kernels/strided_copy.hpp"
#include "cuda/per_stream.hpp"
#include "cuda/stream_scratch.hpp"
#include "loraops/error.hpp"

namespace loraops::cuda::lt {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper
constexpr size_t kScratchQuantum = size_t(1) << 20;
constexpr size_t kMaxPlans = 4096;  // past this the map is cleared (plans in use stay alive)
constexpr int kHeuristicCount = 8;

struct Counters {
  std::atomic<uint64_t> calls{0}, packed_operands{0}, pack_all{0}, bias_fallback{0},
      no_workspace{0};
};
Counters& counters() {
  static Counters* c = new Counters;
  return *c;
}

void check(cublasStatus_t st, const char* op, const char* call) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(ErrorKind::Runtime, op, call, "CUBLAS_STATUS_SUCCESS", cublasLtGetStatusName(st));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::Float16: return CUDA_R_16F;
    case DType::BFloat16: return CUDA_R_16BF;
    case DType::Float32: break;
  }
  return CUDA_R_32F;
}

// Largest power of two (at most 256, cuBLASLt's default assumption) dividing the address of
// every batch's matrix.
int64_t alignment(const void* p, int64_t bs, int64_t es, int64_t batch) {
  uint64_t v = uint64_t(reinterpret_cast<uintptr_t>(p));
  if (batch > 1) v |= uint64_t(bs) * uint64_t(es);
  int64_t a = 1;
  while (a < 256 && (v & uint64_t(a)) == 0) a <<= 1;
  return a;
}

// A P x Q matrix in cuBLASLt's column-major terms: element (p, q) of batch b is at
// p*sp + q*sq + b*bs.
struct View {
  const void* p = nullptr;
  int64_t P = 0, Q = 0, sp = 0, sq = 0, bs = 0;
};

// What cuBLASLt is given: op(stored), stored being rows x cols column-major with leading dim ld.
struct LtMat {
  const void* p = nullptr;
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t rows = 0, cols = 0, ld = 0, bs = 0;
};

// The view as an LtMat without copying, if cuBLASLt can take it. A stride along a dim of size 1 is
// never used, so it is free to be whatever makes the layout valid.
bool describe(const View& v, int64_t batch, bool allow_trans, LtMat* out) {
  const int64_t bs = batch > 1 ? v.bs : 0;
  if (bs < 0) return false;
  if ((v.sp == 1 || v.P == 1) && (v.sq >= v.P || v.Q == 1)) {
    *out = {v.p, CUBLAS_OP_N, v.P, v.Q, v.Q == 1 ? v.P : v.sq, bs};
    return true;
  }
  if (allow_trans && (v.sq == 1 || v.Q == 1) && (v.sp >= v.Q || v.P == 1)) {
    *out = {v.p, CUBLAS_OP_T, v.Q, v.P, v.P == 1 ? v.Q : v.sp, bs};
    return true;
  }
  return false;
}

// One matrix argument and how it reaches cuBLASLt.
struct Operand {
  const char* name = "";  // the argument it came from, for errors
  View v;                 // the caller's data
  LtMat lt;               // what cuBLASLt gets (the scratch copy's layout when packed)
  bool packed = false;
  int64_t batch_eff = 1;  // batches in the scratch copy (1 when the caller's broadcasts)
  size_t offset = 0;      // of the scratch copy
};

struct Config {
  Operand A, B, C, D;  // cuBLASLt's operands: A = op(b)^T [n,k], B = op(a)^T [k,m]; C, D [n,m]
  bool has_c = false;  // beta != 0
  bool c_is_d = false;  // C is given to cuBLASLt as D (unread, or the very same matrix)
  const void* bias = nullptr;
  bool bias_packed = false;
  size_t bias_offset = 0;
  size_t scratch_bytes = 0;
  const char* first_packed = nullptr;
};

Config configure(const GemmDesc& g, bool pack_all) {
  const int64_t es = dtype_size(g.dtype);
  Config cfg;
  cfg.A.name = "b";
  cfg.A.v = {g.b, g.n, g.k, g.b_cs, g.b_rs, g.b_bs};
  cfg.B.name = "a";
  cfg.B.v = {g.a, g.k, g.m, g.a_cs, g.a_rs, g.a_bs};
  cfg.has_c = g.beta != 0.f;
  cfg.C.name = "c";
  if (cfg.has_c) cfg.C.v = {g.c, g.n, g.m, g.c_cs, g.c_rs, g.c_bs};
  cfg.D.name = "out";
  cfg.D.v = {g.d, g.n, g.m, 1, g.ldd, g.d_bs};

  auto take = [&](const char* name, size_t bytes) {
    const size_t at = cfg.scratch_bytes;
    cfg.scratch_bytes += size_t(round_up(int64_t(bytes), 256));
    if (!cfg.first_packed) cfg.first_packed = name;
    return at;
  };
  // Packed: column-major with ld padded to 16 bytes, so the copy is as aligned as cuBLASLt likes.
  // A and B keep a batch broadcast (stride 0); C is materialised per batch, so the fallback never
  // depends on cuBLASLt accepting a broadcast C.
  auto setup = [&](Operand& o, bool allow_trans, bool keep_broadcast) {
    if (!pack_all && describe(o.v, g.batch, allow_trans, &o.lt)) return;
    o.packed = true;
    const int64_t ldp = round_up(o.v.P, 16 / es);
    const bool broadcast = keep_broadcast && g.batch > 1 && o.v.bs == 0;
    o.batch_eff = g.batch > 1 && !broadcast ? g.batch : 1;
    o.lt = {nullptr, CUBLAS_OP_N, o.v.P, o.v.Q, ldp, o.batch_eff > 1 ? ldp * o.v.Q : 0};
    o.offset = take(o.name, size_t(ldp * o.v.Q * es * o.batch_eff));
  };
  setup(cfg.B, true, true);
  setup(cfg.A, true, true);
  if (cfg.has_c) setup(cfg.C, false, false);
  if (g.bias) {
    cfg.bias = g.bias;
    cfg.bias_packed = pack_all || g.bias_stride != 1 || reinterpret_cast<uintptr_t>(g.bias) % 16;
    if (cfg.bias_packed) cfg.bias_offset = take("bias", size_t(g.n * es));
  }
  setup(cfg.D, false, false);
  return cfg;
}

void place(Config& cfg, char* scratch) {
  for (Operand* o : {&cfg.A, &cfg.B, &cfg.C, &cfg.D})
    if (o->packed) o->lt.p = scratch + o->offset;
  if (cfg.bias_packed) cfg.bias = scratch + cfg.bias_offset;
  const LtMat &c = cfg.C.lt, &d = cfg.D.lt;
  cfg.c_is_d = !cfg.has_c || (!cfg.C.packed && !cfg.D.packed && c.p == d.p && c.ld == d.ld &&
                              c.bs == d.bs);
}

struct Aligns {
  int64_t a, b, c, d, bias;
};

Aligns aligns_of(const Config& cfg, int64_t es, int64_t batch) {
  Aligns al;
  al.a = alignment(cfg.A.lt.p, cfg.A.lt.bs, es, batch);
  al.b = alignment(cfg.B.lt.p, cfg.B.lt.bs, es, batch);
  al.d = alignment(cfg.D.lt.p, cfg.D.lt.bs, es, batch);
  al.c = cfg.c_is_d ? al.d : alignment(cfg.C.lt.p, cfg.C.lt.bs, es, batch);
  al.bias = cfg.bias ? alignment(cfg.bias, 0, es, 1) : 0;
  return al;
}

cublasComputeType_t compute_type(const GemmDesc& g) {
  return g.dtype == DType::Float32 && g.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                   : CUBLAS_COMPUTE_32F;
}

// ---- plans -----------------------------------------------------------------------------------

struct PlanKey {
  std::array<int64_t, 26> v{};
  bool operator==(const PlanKey& o) const { return v == o.v; }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the words, then a final mix
    for (int64_t x : k.v) h = (h ^ uint64_t(x)) * 1099511628211ull;
    return size_t(h ^ (h >> 29));
  }
};

PlanKey make_key(const GemmDesc& g, const Config& cfg, const Aligns& al, int device,
                 size_t ws_bytes) {
  const LtMat &A = cfg.A.lt, &B = cfg.B.lt, &D = cfg.D.lt;
  const LtMat& C = cfg.c_is_d ? D : cfg.C.lt;
  PlanKey k;
  k.v = {device,     int64_t(g.dtype), int64_t(compute_type(g)), int64_t(A.op), int64_t(B.op),
         g.m,        g.n,              g.k,                      g.batch,       A.ld,
         B.ld,       C.ld,             D.ld,                     A.bs,          B.bs,
         C.bs,       D.bs,             cfg.bias != nullptr,      cfg.has_c,     cfg.c_is_d,
         al.a,       al.b,             al.c,                     al.d,          al.bias,
         int64_t(ws_bytes)};
  return k;
}

struct Plan {
  std::mutex mu;  // held while the bias pointer is set in `desc` and the matmul enqueued
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;  // c null: use d
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // false: cuBLASLt offered no algorithm for this configuration
  cublasStatus_t why = CUBLAS_STATUS_SUCCESS;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    for (cublasLtMatrixLayout_t l : {a, b, c, d})
      if (l) cublasLtMatrixLayoutDestroy(l);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

void make_layout(cublasLtMatrixLayout_t* out, cudaDataType_t t, const LtMat& m, int64_t batch,
                 const char* op) {
  check(cublasLtMatrixLayoutCreate(out, t, uint64_t(m.rows), uint64_t(m.cols), m.ld), op,
        "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    const int64_t stride = m.bs;
    check(cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                           sizeof count),
          op, "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
    check(cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                           &stride, sizeof stride),
          op, "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
  }
}

struct PrefDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};

// The heuristic's first algorithm that fits the workspace; false when there is none.
// `reduction_mask` 0 leaves cuBLASLt's default (every split-K reduction scheme).
bool choose_algo(cublasLtHandle_t h, Plan& p, const Aligns& al, size_t ws_bytes,
                 uint32_t reduction_mask, const char* op) {
  cublasLtMatmulPreference_t raw = nullptr;
  check(cublasLtMatmulPreferenceCreate(&raw), op, "cublasLtMatmulPreferenceCreate");
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PrefDeleter> pref(raw);
  auto set = [&](cublasLtMatmulPreferenceAttributes_t attr, const auto& value) {
    check(cublasLtMatmulPreferenceSetAttribute(raw, attr, &value, sizeof value), op,
          "cublasLtMatmulPreferenceSetAttribute");
  };
  set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(ws_bytes));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(al.a));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, uint32_t(al.b));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, uint32_t(al.c));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, uint32_t(al.d));
  if (reduction_mask) set(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, reduction_mask);

  std::array<cublasLtMatmulHeuristicResult_t, kHeuristicCount> results{};
  int returned = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.a, p.b, p.c ? p.c : p.d, p.d, raw,
                                     kHeuristicCount, results.data(), &returned);
  // NOT_SUPPORTED / INVALID_VALUE: nothing for this layout; the caller may repack and retry.
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
    p.why = st;
    return false;
  }
  check(st, op, "cublasLtMatmulAlgoGetHeuristic");
  for (int i = 0; i < returned; ++i)
    if (results[size_t(i)].state == CUBLAS_STATUS_SUCCESS &&
        results[size_t(i)].workspaceSize <= ws_bytes) {
      p.algo = results[size_t(i)].algo;
      return true;
    }
  p.why = CUBLAS_STATUS_NOT_SUPPORTED;
  return false;
}

std::shared_ptr<Plan> make_plan(cublasLtHandle_t h, const GemmDesc& g, const Config& cfg,
                                const Aligns& al, size_t ws_bytes) {
  const char* op = g.op;
  auto p = std::make_shared<Plan>();
  check(cublasLtMatmulDescCreate(&p->desc, compute_type(g), CUDA_R_32F), op,
        "cublasLtMatmulDescCreate");
  auto set = [&](cublasLtMatmulDescAttributes_t attr, const auto& value) {
    check(cublasLtMatmulDescSetAttribute(p->desc, attr, &value, sizeof value), op,
          "cublasLtMatmulDescSetAttribute");
  };
  set(CUBLASLT_MATMUL_DESC_TRANSA, int32_t(cfg.A.lt.op));
  set(CUBLASLT_MATMUL_DESC_TRANSB, int32_t(cfg.B.lt.op));
  if (cfg.bias) {
    set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BIAS));
    // The heuristic reads the pointer's alignment from it; each call sets its own.
    set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, cfg.bias);
  }
  const cudaDataType_t t = cuda_type(g.dtype);
  make_layout(&p->a, t, cfg.A.lt, g.batch, op);
  make_layout(&p->b, t, cfg.B.lt, g.batch, op);
  if (!cfg.c_is_d) make_layout(&p->c, t, cfg.C.lt, g.batch, op);
  make_layout(&p->d, t, cfg.D.lt, g.batch, op);
  // Half dtypes accumulate in fp32: split-K may only reduce in the compute type, not in place in
  // D's dtype or through an output-type buffer. If that leaves nothing, take cuBLASLt's default.
  const bool half = g.dtype != DType::Float32;
  p->ok = choose_algo(h, *p, al, ws_bytes, half ? uint32_t(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) : 0, op);
  if (!p->ok && half) p->ok = choose_algo(h, *p, al, ws_bytes, 0, op);
  return p;
}

// ---- per-device and per-stream resources --------------------------------------------------------

struct StreamState {
  std::mutex mu;  // held for a whole call: the scratch is shared by every call on the stream
  void* ws = nullptr;
  size_t ws_bytes = 0;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  bool scratch_in_graph = false;  // a captured graph holds its address: never free it
};

struct Caches {
  std::mutex mu;
  std::vector<cublasLtHandle_t> handles;  // by device index
  std::unordered_map<PlanKey, std::shared_ptr<Plan>, PlanKeyHash> plans;
};

Caches& caches() {
  static Caches* c = new Caches;  // never destroyed, on purpose (see the top of the file)
  return *c;
}

std::pair<cublasLtHandle_t, StreamState*> resources(int device, cudaStream_t stream,
                                                    const char* op) {
  Caches& cc = caches();
  std::lock_guard<std::mutex> lock(cc.mu);
  if (size_t(device) >= cc.handles.size()) cc.handles.resize(size_t(device) + 1, nullptr);
  cublasLtHandle_t& h = cc.handles[size_t(device)];
  if (!h) check(cublasLtCreate(&h), op, "cublasLtCreate");  // the current device is `device`
  static auto* streams = new PerStream<StreamState>;  // never destroyed, as caches()
  return {h, streams->get(device, stream, [] { return std::make_unique<StreamState>(); }, stream_identity(stream))};
}

std::shared_ptr<Plan> find_plan(const PlanKey& key, cublasLtHandle_t h, const GemmDesc& g,
                                const Config& cfg, const Aligns& al, size_t ws_bytes) {
  Caches& cc = caches();
  std::lock_guard<std::mutex> lock(cc.mu);
  auto it = cc.plans.find(key);
  if (it != cc.plans.end()) return it->second;
  std::shared_ptr<Plan> p = make_plan(h, g, cfg, al, ws_bytes);
  if (cc.plans.size() >= kMaxPlans) cc.plans.clear();
  cc.plans.emplace(key, p);
  return p;
}

struct Workspace {
  void* p = nullptr;
  size_t bytes = 0;
};

Workspace workspace(StreamState& ss, cudaStream_t stream) {
  if (!ss.ws) {
    if (stream_capturing(stream)) return {};  // first use inside a capture: run without a workspace
    void* p = nullptr;
    LORAOPS_CUDA_CHECK(cudaMalloc(&p, kWorkspaceBytes));
    ss.ws = p;
    ss.ws_bytes = kWorkspaceBytes;
  }
  return {ss.ws, ss.ws_bytes};
}

char* scratch(StreamState& ss, cudaStream_t stream, const GemmDesc& g, const Config& cfg) {
  const size_t need = cfg.scratch_bytes;
  if (need == 0) return nullptr;
  const bool in_capture = stream_capturing(stream);
  if (ss.scratch_bytes < need) {
    if (in_capture)
      throw Error(ErrorKind::Unsupported, g.op, cfg.first_packed,
                  "a view with a unit stride when called under CUDA-graph capture",
                  "a view that needs " + std::to_string(need) +
                      " bytes of packing scratch, more than this stream has (" +
                      std::to_string(ss.scratch_bytes) + "); run the call once before capturing");
    // cudaFree waits for the device, so work already enqueued with the old buffer finishes first.
    // A buffer a captured graph uses stays allocated for the graph's sake.
    const size_t grown = std::max(need, 2 * ss.scratch_bytes);
    const size_t bytes = (grown + kScratchQuantum - 1) / kScratchQuantum * kScratchQuantum;
    if (ss.scratch && !ss.scratch_in_graph) LORAOPS_CUDA_CHECK(cudaFree(ss.scratch));
    ss.scratch = nullptr;
    ss.scratch_bytes = 0;
    ss.scratch_in_graph = false;
    void* p = nullptr;
    LORAOPS_CUDA_CHECK(cudaMalloc(&p, bytes));
    ss.scratch = p;
    ss.scratch_bytes = bytes;
  }
  if (in_capture) ss.scratch_in_graph = true;
  return static_cast<char*>(ss.scratch);
}

// ---- the call ------------------------------------------------------------------------------

void validate(const GemmDesc& g) {
  auto fail = [&](ErrorKind kind, const char* arg, const std::string& expected,
                  const std::string& got) { throw Error(kind, g.op, arg, expected, got); };
  if (g.batch < 0 || g.m < 0 || g.n < 0 || g.k < 0)
    fail(ErrorKind::Value, "a", "non-negative sizes",
         "batch " + std::to_string(g.batch) + ", m " + std::to_string(g.m) + ", n " +
             std::to_string(g.n) + ", k " + std::to_string(g.k));
  auto too_big = [](int64_t x) { return x > int64_t(INT32_MAX); };
  if (too_big(g.m) || too_big(g.k) || too_big(g.batch))
    fail(ErrorKind::Unsupported, "a", "batch, m and k below 2^31 (cuBLASLt's int32 sizes)",
         "batch " + std::to_string(g.batch) + ", m " + std::to_string(g.m) + ", k " +
             std::to_string(g.k));
  if (too_big(g.n))
    fail(ErrorKind::Unsupported, "b", "n below 2^31 (cuBLASLt's int32 sizes)",
         "n " + std::to_string(g.n));
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (!g.d) fail(ErrorKind::Value, "out", "a device pointer", "null");
  if (g.m > 1 && g.ldd < g.n)
    fail(ErrorKind::Value, "out", "rows at least n = " + std::to_string(g.n) + " apart",
         "ldd " + std::to_string(g.ldd));
  if (g.batch > 1 && g.d_bs <= 0)
    fail(ErrorKind::Value, "out", "a positive batch stride", std::to_string(g.d_bs));
  if (g.k > 0 && (!g.a || !g.b)) fail(ErrorKind::Value, g.a ? "b" : "a", "a device pointer", "null");
  if (g.beta != 0.f && !g.c) fail(ErrorKind::Value, "c", "a device pointer when beta != 0", "null");
}

void pack(const Operand& o, int64_t es, cudaStream_t stream, int device) {
  // Destination column q (of the P x Q column-major copy) is row q of a row-major matrix.
  strided_copy(es, o.batch_eff, o.v.Q, o.v.P, StridedMat{o.v.p, o.v.bs, o.v.sq, o.v.sp},
               const_cast<void*>(o.lt.p), o.lt.bs, o.lt.ld, 1, stream, device);
}

void run(cublasLtHandle_t h, const GemmDesc& g, const Config& cfg, Plan& plan, Workspace ws,
         cudaStream_t stream, int device) {
  const int64_t es = dtype_size(g.dtype);
  for (const Operand* o : {&cfg.A, &cfg.B, &cfg.C})
    if (o->packed) pack(*o, es, stream, device);
  counters().packed_operands += uint64_t(cfg.A.packed) + cfg.B.packed + cfg.C.packed +
                                cfg.D.packed + cfg.bias_packed;
  if (cfg.bias_packed)
    strided_copy(es, 1, 1, g.n, StridedMat{g.bias, 0, 0, g.bias_stride}, const_cast<void*>(cfg.bias),
                 0, 0, 1, stream, device);
  const float beta = cfg.has_c ? g.beta : 0.f;
  const void* c = cfg.c_is_d ? cfg.D.lt.p : cfg.C.lt.p;
  {
    std::lock_guard<std::mutex> lock(plan.mu);
    if (cfg.bias)
      check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &cfg.bias,
                                           sizeof cfg.bias),
            g.op, "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    check(cublasLtMatmul(h, plan.desc, &g.alpha, cfg.A.lt.p, plan.a, cfg.B.lt.p, plan.b, &beta, c,
                         plan.c ? plan.c : plan.d, const_cast<void*>(cfg.D.lt.p), plan.d,
                         &plan.algo, ws.p, ws.bytes, stream),
          g.op, "cublasLtMatmul");
  }
  if (cfg.D.packed)  // back from the scratch copy: row i of D is column i of the copy
    strided_copy(es, g.batch, g.m, g.n, StridedMat{cfg.D.lt.p, cfg.D.lt.bs, cfg.D.lt.ld, 1}, g.d,
                 g.d_bs, g.ldd, 1, stream, device);
}

// The call as given, on its own layout, else with every operand packed. False when cuBLASLt has
// no algorithm for either (`why` says its status); nothing is enqueued then.
bool try_gemm(const GemmDesc& g, cublasLtHandle_t h, StreamState& ss, Workspace ws,
              cudaStream_t stream, int device, cublasStatus_t* why) {
  const int64_t es = dtype_size(g.dtype);
  for (bool pack_all = g.force_pack;; pack_all = true) {
    Config cfg = configure(g, pack_all);
    place(cfg, scratch(ss, stream, g, cfg));
    const Aligns al = aligns_of(cfg, es, g.batch);
    const std::shared_ptr<Plan> plan =
        find_plan(make_key(g, cfg, al, device, ws.bytes), h, g, cfg, al, ws.bytes);
    if (plan->ok) {
      run(h, g, cfg, *plan, ws, stream, device);
      return true;
    }
    if (pack_all) {
      *why = plan->why;
      return false;
    }
    ++counters().pack_all;
  }
}

}  // namespace

RouteCounts route_counts() {
  const Counters& c = counters();
  return {c.calls.load(), c.packed_operands.load(), c.pack_all.load(), c.bias_fallback.load(),
          c.no_workspace.load()};
}

void gemm(const GemmDesc& g, cudaStream_t stream, int device) {
  validate(g);
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  DeviceGuard guard(device);
  const int64_t d_bs = g.batch > 1 ? g.d_bs : 0;
  if (g.k == 0) {  // an empty sum: D = beta*C + bias
    gemm_k0(g.dtype, g.batch, g.m, g.n, g.beta, StridedMat{g.c, g.c_bs, g.c_rs, g.c_cs}, g.bias,
            g.bias_stride, g.d, g.ldd, d_bs, stream, device);
    return;
  }
  const auto [h, ss] = resources(device, stream, g.op);
  std::lock_guard<std::mutex> lock(ss->mu);
  const Workspace ws = workspace(*ss, stream);
  ++counters().calls;
  if (!ws.p) ++counters().no_workspace;
  cublasStatus_t why = CUBLAS_STATUS_SUCCESS;
  if (try_gemm(g, h, *ss, ws, stream, device, &why)) return;
  if (g.bias) {
    // No algorithm with the bias epilogue: D = beta*C + bias first, then the GEMM accumulates
    // into it (beta = 1, C = D). One rounding, as the epilogue's, when there is no C; with one,
    // beta*C + bias is rounded to the dtype before the product is added.
    ++counters().bias_fallback;
    gemm_k0(g.dtype, g.batch, g.m, g.n, g.beta, StridedMat{g.c, g.c_bs, g.c_rs, g.c_cs}, g.bias,
            g.bias_stride, g.d, g.ldd, d_bs, stream, device);
    GemmDesc acc = g;
    acc.bias = nullptr;
    acc.beta = 1.f;
    acc.c = g.d, acc.c_rs = g.ldd, acc.c_cs = 1, acc.c_bs = d_bs;
    if (try_gemm(acc, h, *ss, ws, stream, device, &why)) return;
  }
  throw Error(ErrorKind::Runtime, g.op, "cublasLtMatmulAlgoGetHeuristic",
              "an algorithm for " + std::string(dtype_name(g.dtype)) + " m=" +
                  std::to_string(g.m) + " n=" + std::to_string(g.n) + " k=" +
                  std::to_string(g.k) + " batch=" + std::to_string(g.batch),
              std::string("none (") + cublasLtGetStatusName(why) + ")");
}

}  // namespace loraops::cuda::lt
