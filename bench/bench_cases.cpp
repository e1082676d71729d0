// loraops_bench: times the cases of a cases file (written by `loraops bench --emit-cases FILE`, so
// the suites stay defined once, in python/loraops/bench/suites.py) from C++, without Python in
// the way, through the public API only. For each case and each implementation that exists
// (loraops::has_impl): one warm-up call, then batches of back-to-back calls; the median, min, max
// and quartiles of the batches' per-call times. CPU: std::chrono, batches of ~10 ms. CUDA (a
// build with the CUDA backend and a device present): cudaEvents on a stream of its own, batches
// of ~5 ms, inputs rotated among copies when the case is smaller than 2 x L2 (as the Python
// bench does), and cases under 30 us also in CUDA-graph replay (hot inputs, on purpose).
// Prints a table and writes results.json rows in the loraops-bench/1 format ("source": "cpp"),
// which `loraops bench --compare A.json --against B.json` reads. Formats: docs/bench-schema.md.
//
//   usage: loraops_bench CASES_FILE [--device cpu|cuda] [--repeats N] [--out results.json]
#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <sys/utsname.h>

#include "loraops/loraops.hpp"

#if LORAOPS_WITH_CUDA
#include <cuda_runtime.h>
#endif

#ifndef LORAOPS_VERSION
#define LORAOPS_VERSION "unknown"
#endif

namespace {

using Clock = std::chrono::steady_clock;

// ---- constants shared with the Python bench (python/loraops/bench/) --------------------------
constexpr const char* kCasesFormat = "loraops-cases/1";  // cases_file.FORMAT
constexpr const char* kSchema = "loraops-bench/1";       // run.SCHEMA
constexpr double kCpuTargetS = 0.010;                    // timing.CPU_TARGET_S
constexpr double kCudaTargetS = 0.005;                   // timing.CUDA_TARGET_S
constexpr int64_t kMaxBatch = 100000;                    // timing.MAX_BATCH
constexpr double kCaseBudgetS = 3.0;                     // timing.CASE_BUDGET_S
constexpr int kMinRepeats = 3;                           // timing.MIN_REPEATS
constexpr double kSlowCallS = 0.05;                      // timing.SLOW_CALL_S
constexpr int kDefaultRepeats = 20;                      // run.DEFAULT_REPEATS
constexpr double kGraphBelowUs = 30.0;                   // run.GRAPH_BELOW_US
constexpr double kRotateL2Factor = 2.0;                  // run.ROTATE_L2_FACTOR
constexpr int kMaxInputCopies = 1024;                    // run.MAX_INPUT_COPIES
constexpr double kReferenceMaxFlops = 2e9;               // suites.REFERENCE_MAX_FLOPS
constexpr double kReferenceMaxBytes = 256.0 * (1 << 20);  // suites.REFERENCE_MAX_BYTES
const loraops::Impl kImpls[] = {loraops::Impl::Reference, loraops::Impl::Vendor,
                                loraops::Impl::Custom, loraops::Impl::Auto};  // run.IMPLS

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "loraops_bench: %s\n", msg.c_str());
  std::exit(2);
}

// ---- a case ----------------------------------------------------------------------------------
struct Case {
  std::string suite, op, dtype_name, kind;
  loraops::DType dtype = loraops::DType::Float32;
  std::vector<int64_t> x;
  int64_t n = 0, r = 0;
  int64_t sk = 0, hkv = 0;  // attention: x is q [B, Hq, Sq, D]; k, v are [B, hkv, sk, D]
  bool causal = false;
  double scale = 0, eps = 0;
  int dim = -1;
  std::string line;  // as read, for the input seed

  int64_t m() const {
    int64_t p = 1;
    for (size_t i = 0; i + 1 < x.size(); ++i) p *= x[i];
    return p;
  }
  int64_t k() const { return x.back(); }
  int64_t numel_x() const { return m() * k(); }
  std::string label() const { return kind.empty() ? op : kind; }
  bool is_row_op() const {
    return op == "softmax" || op == "rms_norm" || op == "layer_norm" || op == "activation";
  }
  bool is_lora() const { return op == "lora_forward" || op == "lora_backward"; }
  bool is_attention() const { return op == "attention"; }
  // suites.Case.is_decode
  bool is_decode() const {
    if (is_attention()) return x[2] == 1;
    return (op == "matmul" || is_lora()) && m() <= 16;
  }
  // suites.Case.visible_pairs: (query, key) pairs per head, bottom-right causal
  int64_t visible_pairs() const {
    const int64_t sq = x[2];
    if (!causal) return sq * sk;
    int64_t n_pairs = 0;
    for (int64_t i = 0; i < sq; ++i) n_pairs += std::min(sk, std::max<int64_t>(0, i + sk - sq + 1));
    return n_pairs;
  }
  int64_t itemsize() const { return loraops::dtype_size(dtype); }

  // suites.Case.shape_text: the `shape` key --compare matches rows on, so it must be the same text.
  std::string shape_text() const {
    std::string dims;
    for (size_t i = 0; i < x.size(); ++i) {
      if (i) dims += ',';
      dims += std::to_string(x[i]);
    }
    if (is_attention())
      return "q[" + dims + "] kv[" + std::to_string(hkv) + "," + std::to_string(sk) + "]" +
             (causal ? " causal" : "");
    if (is_row_op()) return "[" + dims + "]";
    if (op == "matmul") return "[" + dims + "]@[" + std::to_string(n) + "," + std::to_string(k()) + "].T";
    return "x[" + dims + "] N=" + std::to_string(n) + " r=" + std::to_string(r);
  }
  // suites.Case.weight_bytes (attention: the keys and values)
  int64_t weight_bytes() const {
    if (is_attention()) return 2 * x[0] * hkv * sk * x[3] * itemsize();
    return (n * k() + r * k() + n * r) * itemsize();
  }
  // suites.Case.bytes: bytes read plus written by an ideal implementation (each tensor once).
  int64_t bytes() const {
    const int64_t e = itemsize(), M = m(), K = k(), N = n, R = r;
    if (is_attention()) return 2 * numel_x() * e + weight_bytes();  // q, out; k, v
    if (is_row_op()) {
      const int64_t params = (op == "rms_norm" ? 1 : op == "layer_norm" ? 2 : 0) * K;
      return (2 * numel_x() + params) * e;
    }
    if (op == "matmul") return (M * K + N * K + M * N) * e;
    if (op == "lora_forward") return (M * K + M * N) * e + weight_bytes();
    // lora_backward: reads g, x, W, A, B; writes grad_x, grad_a, grad_b
    return (M * N + 2 * M * K + N * K + 2 * (R * K + N * R)) * e;
  }
  // suites.Case.flops: multiply-adds x 2 of the math as written; -1 (None) for the row ops.
  int64_t flops() const {
    const int64_t M = m(), K = k(), N = n, R = r;
    if (is_attention()) return 4 * x[0] * x[1] * x[3] * visible_pairs();
    if (is_row_op()) return -1;
    if (op == "matmul") return 2 * M * N * K;
    if (op == "lora_forward") return 2 * M * N * K + 2 * M * R * (K + N);
    // g@W, g@B, (g@B)@A, (g@B).T@x, x@A.T, g.T@(x@A.T)
    return 2 * M * N * K + 4 * M * N * R + 6 * M * R * K;
  }
  // suites.Case.reference_too_big
  bool reference_too_big() const {
    return double(std::max<int64_t>(flops(), 0)) > kReferenceMaxFlops ||
           double(bytes()) > kReferenceMaxBytes;
  }
};

loraops::DType parse_dtype(const std::string& s) {
  if (s == "float32") return loraops::DType::Float32;
  if (s == "float16") return loraops::DType::Float16;
  if (s == "bfloat16") return loraops::DType::BFloat16;
  throw std::runtime_error("unknown dtype '" + s + "'");
}

std::map<std::string, std::string> parse_fields(const std::string& line) {
  std::map<std::string, std::string> f;
  std::istringstream in(line);
  std::string tok;
  while (in >> tok) {
    const size_t eq = tok.find('=');
    if (eq == std::string::npos) throw std::runtime_error("not key=value: '" + tok + "'");
    f[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
  return f;
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += char(std::strtol(s.substr(i + 1, 2).c_str(), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

int64_t to_int(const std::string& key, const std::string& v) {
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) throw std::runtime_error(key + "=" + v + ": not an integer");
  return n;
}

double to_double(const std::string& key, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) throw std::runtime_error(key + "=" + v + ": not a number");
  return d;
}

struct CasesFile {
  std::map<std::string, std::string> header;  // suite, device, match
  std::vector<Case> cases;
};

// docs/bench-schema.md, "Cases file"; written by python/loraops/bench/cases_file.py.
CasesFile read_cases(const std::string& path) {
  std::ifstream in(path);
  if (!in) die("cannot read cases file '" + path + "'");
  CasesFile cf;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (lineno == 1) {
      std::istringstream h(line);
      std::string hash, format, rest;
      h >> hash >> format;
      if (hash != "#" || format != kCasesFormat)
        die(path + ": not a cases file (the first line must start with '# " + kCasesFormat +
            "'; write one with `loraops bench --emit-cases FILE`)");
      std::getline(h, rest);
      try {
        cf.header = parse_fields(rest);
      } catch (const std::exception& e) {
        die(path + ":1: " + e.what());
      }
      continue;
    }
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    try {
      auto f = parse_fields(line);
      for (const char* key : {"suite", "op", "dtype", "x"})
        if (!f.count(key)) throw std::runtime_error(std::string("missing key '") + key + "'");
      Case c;
      c.line = line;
      c.suite = f["suite"];
      c.op = f["op"];
      c.dtype_name = f["dtype"];
      c.dtype = parse_dtype(c.dtype_name);
      c.kind = f["kind"];
      std::istringstream xs(f["x"]);
      std::string d;
      while (std::getline(xs, d, ',')) c.x.push_back(to_int("x", d));
      if (c.x.empty()) throw std::runtime_error("x is empty");
      if (f.count("n")) c.n = to_int("n", f["n"]);
      if (f.count("r")) c.r = to_int("r", f["r"]);
      if (f.count("scale")) c.scale = to_double("scale", f["scale"]);
      if (f.count("eps")) c.eps = to_double("eps", f["eps"]);
      if (f.count("dim")) c.dim = int(to_int("dim", f["dim"]));
      if (f.count("sk")) c.sk = to_int("sk", f["sk"]);
      if (f.count("hkv")) c.hkv = to_int("hkv", f["hkv"]);
      if (f.count("causal")) c.causal = to_int("causal", f["causal"]) != 0;
      const bool known = c.is_row_op() || c.is_lora() || c.op == "matmul" || c.is_attention();
      if (c.is_attention() && (c.x.size() != 4 || c.hkv <= 0))
        throw std::runtime_error("attention needs x = B,Hq,Sq,D and hkv >= 1");
      if (!known) throw std::runtime_error("unknown op '" + c.op + "'");
      if (c.op == "activation") loraops::parse_activation(c.kind);  // throws on a bad kind
      cf.cases.push_back(std::move(c));
    } catch (const std::exception& e) {
      die(path + ":" + std::to_string(lineno) + ": " + e.what());
    }
  }
  if (lineno == 0) die(path + ": empty file");
  return cf;
}

// ---- memory: host (aligned) or CUDA --------------------------------------------------------
#if LORAOPS_WITH_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#endif

struct Buffer {
  void* p = nullptr;
  size_t bytes = 0;
  bool cuda = false;
  Buffer(size_t n, bool on_cuda) : bytes(n), cuda(on_cuda) {
    const size_t alloc = std::max<size_t>(64, (n + 63) / 64 * 64);
#if LORAOPS_WITH_CUDA
    if (cuda) {
      cuda_check(cudaMalloc(&p, alloc), "cudaMalloc");
      return;
    }
#endif
    p = std::aligned_alloc(64, alloc);
    if (!p) throw std::runtime_error("out of host memory");
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
#if LORAOPS_WITH_CUDA
    if (cuda) {
      cudaFree(p);
      return;
    }
#endif
    std::free(p);
  }
  void upload(const void* host) {
#if LORAOPS_WITH_CUDA
    if (cuda) {
      cuda_check(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
      return;
    }
#endif
    std::memcpy(p, host, bytes);
  }
  void copy_from(const Buffer& o) {
#if LORAOPS_WITH_CUDA
    if (cuda) {
      cuda_check(cudaMemcpy(p, o.p, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy");
      return;
    }
#endif
    std::memcpy(p, o.p, bytes);
  }
  std::vector<float> to_floats(loraops::DType t) const {  // for the sanity check
    std::vector<unsigned char> host(bytes);
#if LORAOPS_WITH_CUDA
    if (cuda) cuda_check(cudaMemcpy(host.data(), p, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
    else
#endif
      std::memcpy(host.data(), p, bytes);
    std::vector<float> out(size_t(bytes / size_t(loraops::dtype_size(t))));
    for (size_t i = 0; i < out.size(); ++i) out[i] = loraops::load_as_float(host.data(), t, int64_t(i));
    return out;
  }
};

// Deterministic pseudo-random normals: splitmix64 and Box-Muller, seeded from the case's line.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double(next() >> 11) + 0.5) * 0x1p-53; }  // in (0, 1)
  float normal() {
    const double u = uniform(), v = uniform();
    return float(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
  }
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// One input: its shape and how frameworks._specs scales it (like a trained layer's values, so
// half precision neither overflows nor flushes to zero).
struct InputSpec {
  std::string name;
  std::vector<int64_t> shape;
  double scale, offset;
};

// frameworks._specs
std::vector<InputSpec> input_specs(const Case& c) {
  const int64_t M = c.m(), K = c.k(), N = c.n, R = c.r;
  const std::vector<int64_t> mk{M, K};
  if (c.op == "softmax" || c.op == "activation") return {{"x", c.x, 1.0, 0.0}};
  if (c.is_attention()) {
    const std::vector<int64_t> kv{c.x[0], c.hkv, c.sk, c.x[3]};
    return {{"q", c.x, 1.0, 0.0}, {"k", kv, 1.0, 0.0}, {"v", kv, 1.0, 0.0}};
  }
  if (c.op == "rms_norm") return {{"x", c.x, 1.0, 0.0}, {"weight", {K}, 0.1, 1.0}};
  if (c.op == "layer_norm")
    return {{"x", c.x, 1.0, 0.0}, {"weight", {K}, 0.1, 1.0}, {"bias", {K}, 0.1, 0.0}};
  const InputSpec w{"weight", {N, K}, 1.0 / std::sqrt(double(K)), 0.0};
  const InputSpec a{"lora_a", {R, K}, 1.0 / std::sqrt(double(K)), 0.0};
  const InputSpec b{"lora_b", {N, R}, 1.0 / std::sqrt(double(std::max<int64_t>(R, 1))), 0.0};
  if (c.op == "matmul") return {{"x", mk, 1.0, 0.0}, w};  // x as [M, K]
  if (c.op == "lora_forward") return {{"x", c.x, 1.0, 0.0}, w, a, b};
  return {{"grad_y", {M, N}, 1.0, 0.0}, {"x", mk, 1.0, 0.0}, w, a, b};  // lora_backward
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t p = 1;
  for (int64_t d : shape) p *= d;
  return p;
}

struct Tensors {  // one copy of a case's inputs
  std::vector<std::unique_ptr<Buffer>> bufs;
  std::vector<loraops::Tensor> t;
};

struct CaseData {
  const Case* c = nullptr;
  loraops::Device dev{};
  std::vector<Tensors> copies;  // copies[0] is the original; more only when rotating
  std::vector<std::unique_ptr<Buffer>> out_bufs;
  std::vector<loraops::Tensor> outs;
  int64_t input_bytes = 0;
  std::string rotation_note;
};

loraops::Tensor view(void* p, loraops::DType t, const std::vector<int64_t>& shape, loraops::Device dev) {
  return loraops::Tensor::contiguous(p, t, int(shape.size()), shape.data(), dev);
}

std::vector<int64_t> dims_of(const loraops::Shape& s) {
  return std::vector<int64_t>(s.dims.begin(), s.dims.begin() + s.ndim);
}

void make_inputs(CaseData& d, const Case& c, bool cuda) {
  d.c = &c;
  d.dev = cuda ? loraops::Device{loraops::DeviceType::CUDA, 0} : loraops::Device{};
  Tensors in;
  const auto specs = input_specs(c);
  uint64_t seed = fnv1a(c.line);
  for (const auto& s : specs) {
    const int64_t count = numel(s.shape);
    std::vector<unsigned char> host(size_t(count * c.itemsize()));
    Rng rng(seed++);
    for (int64_t i = 0; i < count; ++i)
      loraops::store_from_float(host.data(), c.dtype, i, float(rng.normal() * s.scale + s.offset));
    auto buf = std::make_unique<Buffer>(host.size(), cuda);
    buf->upload(host.data());
    in.t.push_back(view(buf->p, c.dtype, s.shape, d.dev));
    d.input_bytes += int64_t(host.size());
    in.bufs.push_back(std::move(buf));
  }
  // Outputs sized by the API's own shape functions.
  std::vector<std::vector<int64_t>> out_shapes;
  const auto& t = in.t;
  if (c.op == "softmax") out_shapes.push_back(dims_of(loraops::softmax_shape(t[0], c.dim)));
  else if (c.op == "rms_norm") out_shapes.push_back(dims_of(loraops::rms_norm_shape(t[0], &t[1])));
  else if (c.op == "layer_norm") out_shapes.push_back(dims_of(loraops::layer_norm_shape(t[0], &t[1], &t[2])));
  else if (c.op == "activation") out_shapes.push_back(dims_of(loraops::activation_shape(t[0])));
  else if (c.op == "matmul") {
    loraops::MatmulOptions opt;
    opt.trans_b = true;
    out_shapes.push_back(dims_of(loraops::matmul_shape(t[0], t[1], opt)));
  } else if (c.op == "lora_forward") {
    out_shapes.push_back(dims_of(loraops::lora_forward_shape(t[0], t[1], t[2], t[3])));
  } else if (c.is_attention()) {
    out_shapes.push_back(dims_of(loraops::attention_shape(t[0], t[1], t[2])));
  } else {
    const auto s = loraops::lora_backward_shapes(t[0], t[1], t[2], t[3], t[4]);
    out_shapes = {dims_of(s.grad_x), dims_of(s.grad_a), dims_of(s.grad_b)};
  }
  for (const auto& s : out_shapes) {
    auto buf = std::make_unique<Buffer>(size_t(numel(s) * c.itemsize()), cuda);
    d.outs.push_back(view(buf->p, c.dtype, s, d.dev));
    d.out_bufs.push_back(std::move(buf));
  }
  d.copies.push_back(std::move(in));
}

// frameworks.copies_needed
int copies_needed(int64_t case_bytes, int64_t in_bytes, double limit_bytes, int cap) {
  if (limit_bytes <= 0 || double(case_bytes) >= limit_bytes || in_bytes <= 0) return 1;
  return std::max(2, std::min(cap, int(limit_bytes / double(in_bytes)) + 1));
}

void add_copies(CaseData& d, int want) {
  while (int(d.copies.size()) < want) {
    try {
      Tensors t;
      for (size_t i = 0; i < d.copies[0].bufs.size(); ++i) {
        const Buffer& src = *d.copies[0].bufs[i];
        auto buf = std::make_unique<Buffer>(src.bytes, src.cuda);
        buf->copy_from(src);
        loraops::Tensor v = d.copies[0].t[i];
        v.data = buf->p;
        t.t.push_back(v);
        t.bufs.push_back(std::move(buf));
      }
      d.copies.push_back(std::move(t));
    } catch (const std::exception& e) {  // out of memory, say: rotate among what there is
#if LORAOPS_WITH_CUDA
      cudaGetLastError();
#endif
      d.rotation_note = "input rotation stopped at " + std::to_string(d.copies.size()) + " of " +
                        std::to_string(want) + " copies: " + e.what();
      return;
    }
  }
}

// One call of `impl` of the case's op on input copy `i` (frameworks.loraops_call).
void call(const CaseData& d, int i, const loraops::Exec& ex) {
  const Case& c = *d.c;
  const auto& t = d.copies[size_t(i)].t;
  const auto& o = d.outs;
  if (c.op == "softmax") loraops::softmax(t[0], c.dim, o[0], ex);
  else if (c.op == "rms_norm") loraops::rms_norm(t[0], &t[1], c.eps, o[0], ex);
  else if (c.op == "layer_norm") loraops::layer_norm(t[0], &t[1], &t[2], c.eps, o[0], ex);
  else if (c.op == "activation") loraops::activation(t[0], loraops::parse_activation(c.kind), o[0], ex);
  else if (c.op == "matmul") {
    loraops::MatmulOptions opt;
    opt.trans_b = true;
    loraops::matmul(t[0], t[1], opt, o[0], ex);
  } else if (c.op == "lora_forward") {
    loraops::lora_forward(t[0], t[1], t[2], t[3], c.scale, nullptr, o[0], ex);
  } else if (c.is_attention()) {
    loraops::attention(t[0], t[1], t[2], c.causal, std::nullopt, o[0], ex);
  } else {
    loraops::lora_backward(t[0], t[1], t[2], t[3], t[4], c.scale, o[0], o[1], o[2], ex);
  }
}

// ---- timing ----------------------------------------------------------------------------------
struct Timing {
  double median = 0, min = 0, max = 0, q1 = 0, q3 = 0;
  int repeats = 0;
  int64_t batch = 0;
};

// timing.plan: (batch, repeats) for calls of about call_s seconds each.
std::pair<int64_t, int> plan(double call_s, int repeats, double target_s) {
  const double c = std::max(call_s, 1e-9);
  const int64_t batch = std::max<int64_t>(1, std::min<int64_t>(kMaxBatch, std::llround(target_s / c)));
  const double affordable = std::floor(kCaseBudgetS / std::max(double(batch) * call_s, 1e-9));
  const int afford = int(std::min<double>(affordable, 1e9));
  return {batch, std::max(std::min(repeats, kMinRepeats), std::min(repeats, afford))};
}

// The median and statistics.quantiles(n=4) (the "exclusive" method) of the samples.
Timing summarize(std::vector<double> s, int64_t batch) {
  std::sort(s.begin(), s.end());
  Timing t;
  const size_t n = s.size();
  t.median = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  t.min = s.front();
  t.max = s.back();
  if (n < 2) {
    t.q1 = t.q3 = s[0];
  } else {
    auto q = [&](int i) {
      const int64_t m = int64_t(n) + 1;
      int64_t j = i * m / 4;
      j = std::clamp<int64_t>(j, 1, int64_t(n) - 1);
      const int64_t delta = i * m - j * 4;
      return (s[size_t(j - 1)] * double(4 - delta) + s[size_t(j)] * double(delta)) / 4;
    };
    t.q1 = q(1);
    t.q3 = q(3);
  }
  t.repeats = int(n);
  t.batch = batch;
  return t;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// timing.time_cpu. The warm-up call is timed: one that slow is already a fair estimate.
Timing time_cpu(const std::function<void()>& fn, int repeats) {
  auto t0 = Clock::now();
  fn();
  double call_s = seconds_since(t0);
  if (call_s < kSlowCallS) {
    t0 = Clock::now();
    fn();
    call_s = seconds_since(t0);
  }
  const auto [batch, reps] = plan(call_s, repeats, kCpuTargetS);
  if (double(batch) * call_s < 0.2)  // one untimed batch settles clocks and caches
    for (int64_t i = 0; i < batch; ++i) fn();
  std::vector<double> samples;
  for (int r = 0; r < reps; ++r) {
    t0 = Clock::now();
    for (int64_t i = 0; i < batch; ++i) fn();
    samples.push_back(seconds_since(t0) * 1e6 / double(batch));
  }
  return summarize(samples, batch);
}

#if LORAOPS_WITH_CUDA
struct Events {
  cudaEvent_t a = nullptr, b = nullptr;
  Events() {
    cuda_check(cudaEventCreate(&a), "cudaEventCreate");
    cuda_check(cudaEventCreate(&b), "cudaEventCreate");
  }
  ~Events() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  double elapsed_us() {
    cuda_check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    return double(ms) * 1e3;
  }
};

// timing.time_cuda: events on the stream around back-to-back calls; fn(i) runs on input copy i,
// and the copies are cycled through across batches.
Timing time_cuda(const std::function<void(int)>& fn, int copies, int repeats, cudaStream_t s) {
  Events ev;
  fn(0);  // warm-up
  cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  cuda_check(cudaEventRecord(ev.a, s), "cudaEventRecord");
  fn(0);
  cuda_check(cudaEventRecord(ev.b, s), "cudaEventRecord");
  const double call_s = ev.elapsed_us() * 1e-6;
  const auto [batch, reps] = plan(call_s, repeats, kCudaTargetS);
  int next = 0;
  auto run_batch = [&, batch = batch] {
    for (int64_t i = 0; i < batch; ++i) {
      fn(next);
      next = next + 1 == copies ? 0 : next + 1;
    }
  };
  run_batch();  // untimed
  std::vector<double> samples;
  for (int r = 0; r < reps; ++r) {
    cuda_check(cudaEventRecord(ev.a, s), "cudaEventRecord");
    run_batch();
    cuda_check(cudaEventRecord(ev.b, s), "cudaEventRecord");
    samples.push_back(ev.elapsed_us() / double(batch));
  }
  return summarize(samples, batch);
}

// timing.time_cuda_graph: `calls` calls on input copy 0 captured in one graph, replayed `repeats`
// times; the median per-call µs. Hot inputs on purpose (a decode step under CUDA graphs).
double time_cuda_graph(const std::function<void(int)>& fn, cudaStream_t s, int calls = 20,
                       int repeats = 20) {
  cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  cuda_check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  try {
    for (int i = 0; i < calls; ++i) fn(0);
  } catch (...) {
    cudaStreamEndCapture(s, &g);  // leave capture mode whatever happened
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    throw;
  }
  cuda_check(cudaStreamEndCapture(s, &g), "cudaStreamEndCapture");
  struct Cleanup {
    cudaGraph_t& g;
    cudaGraphExec_t& ge;
    ~Cleanup() {
      if (ge) cudaGraphExecDestroy(ge);
      if (g) cudaGraphDestroy(g);
    }
  } cleanup{g, ge};
  cuda_check(cudaGraphInstantiate(&ge, g, 0), "cudaGraphInstantiate");
  cuda_check(cudaGraphLaunch(ge, s), "cudaGraphLaunch");
  cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  Events ev;
  std::vector<double> us;
  for (int r = 0; r < repeats; ++r) {
    cuda_check(cudaEventRecord(ev.a, s), "cudaEventRecord");
    cuda_check(cudaGraphLaunch(ge, s), "cudaGraphLaunch");
    cuda_check(cudaEventRecord(ev.b, s), "cudaEventRecord");
    us.push_back(ev.elapsed_us() / calls);
  }
  return summarize(us, calls).median;
}
#endif

// ---- the sanity check (check.compare) ------------------------------------------------------
double tolerance(loraops::DType t) {  // check.TOLERANCE
  return t == loraops::DType::Float32 ? 1e-3 : t == loraops::DType::Float16 ? 1e-2 : 3e-2;
}

// Largest |a - b| over the largest |b| (NaN when either has one).
double rel_err(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double worst = 0;
  for (size_t p = 0; p < a.size(); ++p) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < a[p].size(); ++i) {
      const double d = std::fabs(double(a[p][i]) - double(b[p][i]));
      if (std::isnan(d)) return NAN;
      diff = std::max(diff, d);
      scale = std::max(scale, std::fabs(double(b[p][i])));
    }
    worst = std::max(worst, scale > 0 ? diff / scale : diff);
  }
  return worst;
}

// ---- rows ------------------------------------------------------------------------------------
struct Row {
  const Case* c = nullptr;
  std::string impl, status, note, unit, checked_against;
  Timing t;
  bool timed = false;
  double value = NAN, weight_gbps = NAN, max_rel_err = NAN, us_graph = NAN;
  int input_copies = 1;
  void add_note(const std::string& s) { note = note.empty() ? s : note + "; " + s; }
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Python's f"{v:,.0f}": no decimals, thousands separated by commas.
std::string grouped(double v) {
  std::string s = fmt("%.0f", v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

// report.fmt_us
std::string fmt_us(double us) {
  if (std::isnan(us)) return "-";
  if (us < 10) return fmt("%.2f", us);
  if (us < 1000) return fmt("%.1f", us);
  return grouped(us);
}

// run._fill_timing: the rate at the median, with the same bytes/flops as suites.Case.
void fill_timing(Row& row, const Timing& t, bool cuda) {
  row.t = t;
  row.timed = true;
  row.status = "ok";
  if (!(t.median > 0)) return;  // below the clock's resolution: no rate
  const double per_s = 1e6 / t.median;
  const Case& c = *row.c;
  if (row.unit == "GB/s") row.value = double(c.bytes()) * per_s / 1e9;
  else row.value = double(c.flops()) * per_s / (cuda ? 1e12 : 1e9);
  if (c.is_decode()) {
    row.weight_gbps = double(c.weight_bytes()) * per_s / 1e9;
    row.add_note("weights " + fmt("%.1f", row.weight_gbps) + " GB/s");
  }
}

std::string error_text(const std::exception& e) {
  std::string s = e.what();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s.size() <= 400 ? s : s.substr(0, 397) + "...";
}

struct Bench {
  bool cuda = false;
  int repeats = kDefaultRepeats;
  double rotate_below = 0;  // bytes; 0: no rotation (the CPU)
#if LORAOPS_WITH_CUDA
  cudaStream_t stream = nullptr;
#endif

  // index: the progress count of the case's first row (1-based), total: of all rows.
  std::vector<Row> run_case(const Case& c, int index, int total) {
    std::vector<Row> rows;
    CaseData d;
    std::string setup_error;
    try {
      make_inputs(d, c, cuda);
      if (cuda && rotate_below > 0)
        add_copies(d, copies_needed(c.bytes(), d.input_bytes, rotate_below, kMaxInputCopies));
#if LORAOPS_WITH_CUDA
      // cudaMemcpy from pageable memory (and device to device) may return before the copy lands,
      // and the legacy stream it ran on does not order our non-blocking stream: wait here.
      if (cuda) cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#endif
    } catch (const std::exception& e) {
      setup_error = error_text(e);
    }
    std::vector<std::vector<float>> baseline;
    std::string baseline_impl;
    for (loraops::Impl impl : kImpls) {
      Row row;
      row.c = &c;
      row.impl = loraops::impl_name(impl);
      row.unit = c.is_row_op() ? "GB/s" : cuda ? "TFLOP/s" : "GFLOP/s";
      std::fprintf(stderr, "[%d/%d] %s %s %s %s ... ", index++, total, c.label().c_str(),
                   c.shape_text().c_str(), c.dtype_name.c_str(), row.impl.c_str());
      measure(row, c, impl, d, setup_error, baseline, baseline_impl);
      if (row.status == "ok") std::fprintf(stderr, "%s us\n", fmt_us(row.t.median).c_str());
      else std::fprintf(stderr, "%s: %s\n", row.status.c_str(), row.note.c_str());
      rows.push_back(std::move(row));
    }
    return rows;
  }

  void measure(Row& row, const Case& c, loraops::Impl impl, CaseData& d,
               const std::string& setup_error, std::vector<std::vector<float>>& baseline,
               std::string& baseline_impl) {
    const auto devtype = cuda ? loraops::DeviceType::CUDA : loraops::DeviceType::CPU;
    std::string why;
    if (!loraops::has_impl(c.op, devtype, impl, c.dtype, &why)) {
      row.status = "absent";
      row.note = why.empty() ? "has_impl is False" : why;
      return;
    }
    if (impl == loraops::Impl::Reference && c.reference_too_big()) {
      row.status = "skipped";
      row.note = "reference too slow at this size";
      return;
    }
    if (!setup_error.empty()) {
      row.status = "error";
      row.note = "inputs: " + setup_error;
      return;
    }
    loraops::Exec ex{.impl = impl};
    try {
      Timing t;
      if (!cuda) {
        t = time_cpu([&] { call(d, 0, ex); }, repeats);
      } else {
#if LORAOPS_WITH_CUDA
        ex.stream = stream;
        t = time_cuda([&](int i) { call(d, i, ex); }, int(d.copies.size()), repeats, stream);
        cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
#endif
      }
      fill_timing(row, t, cuda);
      row.input_copies = int(d.copies.size());
      if (row.input_copies > 1) row.add_note("inputs rotated x" + std::to_string(row.input_copies));
      if (!d.rotation_note.empty()) row.add_note(d.rotation_note);
      // Every copy holds the same values, so the outputs are those of the case's inputs.
      std::vector<std::vector<float>> out;
      for (const auto& b : d.out_bufs) out.push_back(b->to_floats(c.dtype));
      if (baseline_impl.empty()) {
        baseline = std::move(out);
        baseline_impl = row.impl;
      } else {
        row.max_rel_err = rel_err(out, baseline);
        row.checked_against = baseline_impl;
        if (!(row.max_rel_err <= tolerance(c.dtype))) {
          const std::string mm = "MISMATCH: max error " + fmt("%.2g", row.max_rel_err) +
                                 " of the largest value vs " + baseline_impl;
          row.note = row.note.empty() ? mm : mm + "; " + row.note;
        }
      }
#if LORAOPS_WITH_CUDA
      if (cuda && t.median < kGraphBelowUs) {
        try {
          row.us_graph = time_cuda_graph([&](int i) { call(d, i, ex); }, stream);
          row.add_note("graph " + fmt_us(row.us_graph) + " us");
        } catch (const std::exception& e) {
          row.add_note("graph capture failed: " + error_text(e));
        }
      }
#endif
    } catch (const loraops::Error& e) {
      row.timed = false;
      row.status = e.kind() == loraops::ErrorKind::Unsupported ? "absent" : "error";
      row.note = error_text(e);
    } catch (const std::exception& e) {
      row.timed = false;
      row.status = "error";
      row.note = error_text(e);
    }
#if LORAOPS_WITH_CUDA
    if (cuda && row.status != "ok") cudaGetLastError();  // do not let one row's error stick
#endif
  }
};

// ---- output: table and JSON -------------------------------------------------------------------
// report.fmt_value
std::string fmt_value(const Row& r) {
  if (std::isnan(r.value)) return "-";
  return (r.value < 100 ? fmt("%.3g", r.value) : grouped(r.value)) + " " + r.unit;
}

void print_table(const std::vector<Row>& rows) {
  struct Line {
    std::string cells[7];
    bool gap = false;
  };
  std::vector<Line> lines;
  lines.push_back({{"op", "shape", "dtype", "impl", "us", "rate", "note"}});
  const Case* prev = nullptr;
  for (const auto& r : rows) {
    if (prev && prev != r.c) lines.push_back({{}, true});
    prev = r.c;
    const double us = r.timed ? r.t.median : NAN;
    lines.push_back({{r.c->label(), r.c->shape_text(), r.c->dtype_name, r.impl, fmt_us(us), fmt_value(r),
                      r.status == "ok" ? r.note : r.status + ": " + r.note}});
  }
  size_t w[6] = {};
  for (const auto& l : lines)
    for (int i = 0; i < 6; ++i) w[i] = std::max(w[i], l.cells[i].size());
  auto print = [&](const Line& l) {
    std::string s;
    for (int i = 0; i < 6; ++i) {
      const std::string& c = l.cells[i];
      const std::string pad(w[i] - c.size(), ' ');
      s += i == 4 ? pad + c : c + pad;
      s += "  ";
    }
    s += l.cells[6];
    while (!s.empty() && s.back() == ' ') s.pop_back();
    std::printf("%s\n", s.c_str());
  };
  print(lines[0]);
  std::string dash;
  for (int i = 0; i < 6; ++i) dash += std::string(w[i], '-') + "  ";
  std::printf("%s----\n", dash.c_str());
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].gap) std::printf("\n");
    else print(lines[i]);
  }
}

std::string jstr(const std::string& s) {
  std::string o = "\"";
  for (unsigned char ch : s) {
    if (ch == '"') o += "\\\"";
    else if (ch == '\\') o += "\\\\";
    else if (ch == '\n') o += "\\n";
    else if (ch < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", unsigned(ch));
      o += b;
    } else {
      o += char(ch);
    }
  }
  return o + "\"";
}

std::string jnum(double v) {  // JSON has no NaN: null
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

std::string jint(int64_t v) { return std::to_string(v); }
std::string jbool(bool b) { return b ? "true" : "false"; }

// suites.Case.args
std::string args_json(const Case& c) {
  std::string x = "[";
  for (size_t i = 0; i < c.x.size(); ++i) {
    if (i) x += ", ";
    x += jint(c.x[i]);
  }
  std::string s = "{\"x\": " + x + "]";
  if (c.is_attention())
    return s + ", \"b\": " + jint(c.x[0]) + ", \"hq\": " + jint(c.x[1]) + ", \"hkv\": " +
           jint(c.hkv) + ", \"sq\": " + jint(c.x[2]) + ", \"sk\": " + jint(c.sk) + ", \"d\": " +
           jint(c.x[3]) + ", \"causal\": " + jbool(c.causal) + "}";
  if (!c.is_row_op()) s += ", \"m\": " + jint(c.m()) + ", \"k\": " + jint(c.k()) + ", \"n\": " + jint(c.n);
  if (c.is_lora()) s += ", \"r\": " + jint(c.r) + ", \"scale\": " + jnum(c.scale);
  if (!c.kind.empty()) s += ", \"kind\": " + jstr(c.kind);
  if (c.op == "matmul") s += ", \"trans_b\": true";
  return s + "}";
}

std::string row_json(const Row& r) {
  const Case& c = *r.c;
  const bool ok = r.timed;
  auto t = [&](double v) { return ok ? jnum(v) : "null"; };
  std::string s = "  {";
  s += "\"suite\": " + jstr(c.suite) + ", \"op\": " + jstr(c.op) + ", \"label\": " + jstr(c.label());
  s += ", \"shape\": " + jstr(c.shape_text()) + ", \"args\": " + args_json(c);
  s += ", \"dtype\": " + jstr(c.dtype_name) + ", \"impl\": " + jstr(r.impl);
  s += ", \"status\": " + jstr(r.status) + ", \"note\": " + jstr(r.note);
  s += ", \"us_median\": " + t(r.t.median) + ", \"us_min\": " + t(r.t.min) +
       ", \"us_max\": " + t(r.t.max) + ", \"us_q1\": " + t(r.t.q1) + ", \"us_q3\": " + t(r.t.q3);
  s += ", \"repeats\": " + jint(ok ? r.t.repeats : 0) + ", \"batch\": " + jint(ok ? r.t.batch : 0);
  s += ", \"unit\": " + jstr(r.unit) + ", \"value\": " + jnum(r.value);
  s += ", \"bytes\": " + jint(c.bytes()) + ", \"flops\": " + (c.flops() < 0 ? "null" : jint(c.flops()));
  s += ", \"weight_gbps\": " + jnum(r.weight_gbps) + ", \"max_rel_err\": " + jnum(r.max_rel_err);
  s += ", \"checked_against\": " + (r.checked_against.empty() ? "null" : jstr(r.checked_against));
  s += ", \"us_graph\": " + jnum(r.us_graph) + ", \"frac_of_ceiling\": null";
  s += ", \"input_copies\": " + jint(r.input_copies) + ", \"rotated\": " + jbool(r.input_copies > 1);
  s += ", \"compile_s\": null, \"source\": \"cpp\"}";
  return s;
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      std::string v = colon == std::string::npos ? "" : line.substr(colon + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return "";
}

std::string device_json(bool cuda, double l2_bytes) {
  std::string cpu = cpu_name();
  utsname u{};
  std::string platform = uname(&u) == 0 ? std::string(u.sysname) + "-" + u.release + "-" + u.machine : "";
  cpu_set_t set;
  CPU_ZERO(&set);
  const int usable = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  std::string env = "{";
  for (const char* k : {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND",
                        "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"})
    if (const char* v = std::getenv(k)) env += (env.size() > 1 ? ", " : "") + jstr(k) + ": " + jstr(v);
  env += "}";
  std::string s = "{\"type\": " + jstr(cuda ? "cuda" : "cpu");
  std::string name = cpu.empty() ? "null" : jstr(cpu);
#if LORAOPS_WITH_CUDA
  if (cuda) {
    cudaDeviceProp p{};
    int dev_count = 0, rt = 0;
    cudaGetDeviceCount(&dev_count);
    cudaRuntimeGetVersion(&rt);
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) {
      name = jstr(p.name);
      s += ", \"capability\": " + jstr(std::to_string(p.major) + "." + std::to_string(p.minor));
      s += ", \"memory_gib\": " + jnum(double(p.totalGlobalMem) / double(1ull << 30));
      s += ", \"sm_count\": " + jint(p.multiProcessorCount);
    }
    s += ", \"cuda_runtime\": " + jstr(std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10));
    s += ", \"gpu_count\": " + jint(dev_count);
    s += ", \"l2_cache_bytes\": " + (l2_bytes > 0 ? jint(int64_t(l2_bytes)) : "null");
    s += ", \"l2_cache_assumed\": false";
  }
#else
  (void)l2_bytes;
#endif
  s += ", \"name\": " + name + ", \"platform\": " + jstr(platform) + ", \"python\": null";
  s += ", \"numpy\": null, \"cpu\": " + (cpu.empty() ? "null" : jstr(cpu));
  s += ", \"cpu_count\": " + jint(int64_t(std::thread::hardware_concurrency()));
  s += ", \"usable_cores\": " + (usable > 0 ? jint(usable) : "null");
  s += ", \"thread_env\": " + env + "}";
  return s;
}

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[40];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
  return b;
}

void write_json(const std::string& path, const CasesFile& cf, const std::vector<Row>& rows,
                bool cuda, int repeats, double l2_bytes, double rotate_below) {
  std::ofstream f(path);
  if (!f) die("cannot write --out '" + path + "'");
  const auto h = [&](const char* k) {
    auto it = cf.header.find(k);
    return it == cf.header.end() ? std::string() : it->second;
  };
  const std::string match = percent_decode(h("match"));
  f << "{\n\"schema\": " << jstr(kSchema) << ",\n\"source\": \"cpp\",\n";
  f << "\"created\": " << jstr(now_iso()) << ",\n";
  f << "\"device\": " << device_json(cuda, l2_bytes) << ",\n";
  f << "\"loraops\": {\"version\": " << jstr(LORAOPS_VERSION) << ", \"built_with_cuda\": "
    << jbool(loraops::built_with_cuda()) << ", \"built_with_blas\": " << jbool(loraops::built_with_blas())
    << "},\n";
  f << "\"torch\": null,\n\"mlx\": null,\n";
  f << "\"ceilings\": {\"error\": \"not measured by loraops_bench\"},\n";
  f << "\"suite\": " << (h("suite").empty() ? "null" : jstr(h("suite"))) << ",\n";
  f << "\"impls\": [\"reference\", \"vendor\", \"custom\", \"auto\"],\n";
  f << "\"options\": {\"repeats\": " << repeats << ", \"quick\": false, \"match\": "
    << (match.empty() ? "null" : jstr(match)) << ", \"torch_compile\": false, \"rotate_below_bytes\": "
    << (rotate_below > 0 ? jint(int64_t(rotate_below)) : "null") << "},\n";
  f << "\"interrupted\": false,\n\"results\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) f << row_json(rows[i]) << (i + 1 < rows.size() ? ",\n" : "\n");
  f << "],\n\"repeat_rows\": [],\n\"noise\": []\n}\n";
  if (!f) die("error writing '" + path + "'");
}

[[noreturn]] void usage(int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: loraops_bench CASES_FILE [--device cpu|cuda] [--repeats N] [--out results.json]\n"
               "  CASES_FILE: from `loraops bench --emit-cases FILE [--suite S] [--device D] [--match T]`\n"
               "  --device: default the cases file's device; cuda needs a CUDA build and a device\n"
               "  --repeats: timed batches per case (default %d)\n"
               "  --out: write the rows in the loraops-bench/1 format (docs/bench-schema.md)\n",
               kDefaultRepeats);
  std::exit(rc);
}

}  // namespace

int main(int argc, char** argv) {
  std::string cases_path, device, out;
  int repeats = kDefaultRepeats;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (a == "-h" || a == "--help") usage(0);
    else if (a == "--device") device = value();
    else if (a == "--repeats") {
      const std::string v = value();
      char* end = nullptr;
      repeats = int(std::strtol(v.c_str(), &end, 10));
      if (v.empty() || *end || repeats < 1) die("--repeats must be an integer of at least 1, got '" + v + "'");
    } else if (a == "--out") out = value();
    else if (!a.empty() && a[0] == '-') usage(2);
    else if (cases_path.empty()) cases_path = a;
    else usage(2);
  }
  if (cases_path.empty()) usage(2);
  const CasesFile cf = read_cases(cases_path);
  if (device.empty()) {
    auto it = cf.header.find("device");
    device = it != cf.header.end() && it->second == "cuda" ? "cuda" : "cpu";
  }
  if (device != "cpu" && device != "cuda") die("--device must be cpu or cuda, got '" + device + "'");

  Bench bench;
  bench.repeats = repeats;
  double l2_bytes = 0;
  if (device == "cuda") {
#if LORAOPS_WITH_CUDA
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      std::printf("loraops_bench: no CUDA device here (%s): the CUDA cases are skipped, nothing "
                  "timed\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
      return 0;
    }
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) l2_bytes = double(p.l2CacheSize);
    if (cudaStreamCreateWithFlags(&bench.stream, cudaStreamNonBlocking) != cudaSuccess)
      die("cannot create a CUDA stream");
    bench.cuda = true;
    bench.rotate_below = kRotateL2Factor * l2_bytes;
#else
    std::printf("loraops_bench: built without the CUDA backend: the CUDA cases are skipped, "
                "nothing timed\n");
    return 0;
#endif
  }
  std::fprintf(stderr, "loraops_bench: %zu cases x 4 implementations on %s, %d repeats\n",
               cf.cases.size(), device.c_str(), repeats);
  std::vector<Row> rows;
  const int total = int(cf.cases.size()) * 4;
  for (size_t i = 0; i < cf.cases.size(); ++i) {
    auto case_rows = bench.run_case(cf.cases[i], int(i) * 4 + 1, total);
    for (auto& r : case_rows) rows.push_back(std::move(r));
  }
  print_table(rows);
  if (!out.empty()) {
    write_json(out, cf, rows, bench.cuda, repeats, l2_bytes, bench.rotate_below);
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  }
#if LORAOPS_WITH_CUDA
  if (bench.stream) cudaStreamDestroy(bench.stream);
#endif
  return 0;
}
