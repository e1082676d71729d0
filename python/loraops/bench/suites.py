"""The bench's cases: one data definition that the runner, the input maker and the report all read.

Shapes differ per device because a CPU cannot run GPU-sized problems in a reasonable time; the
seed suite is the exception (the shapes of the Apple-GPU study loraops grew from, kept identical so
numbers stay comparable across devices).
"""

from dataclasses import dataclass
from math import prod

SUITES = ("seed", "rowwise", "lora", "attention")
ROW_OPS = ("softmax", "rms_norm", "layer_norm", "activation")
LORA_SCALE = 2.0

# The reference (fp64 loops) would take minutes beyond these; it is skipped there, and said so.
REFERENCE_MAX_FLOPS = 2e9
REFERENCE_MAX_BYTES = 256 * 2**20

_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Case:
    suite: str
    op: str       # the loraops function name
    dtype: str    # "float32" | "float16" | "bfloat16"
    x: tuple      # x's shape: the tensor of a row op; [..., K] for matmul and LoRA
    n: int = 0    # output features (matmul, LoRA)
    r: int = 0    # LoRA rank
    kind: str = ""  # activation kind
    # attention: x is q's shape [B, Hq, Sq, D]; k and v are [B, hkv, sk, D]
    sk: int = 0
    hkv: int = 0
    causal: bool = False

    @property
    def label(self):
        """What the table calls the op: the activation's kind rather than "activation"."""
        return self.kind or self.op

    @property
    def m(self):
        return prod(self.x[:-1])

    @property
    def k(self):
        return self.x[-1]

    @property
    def is_row_op(self):
        return self.op in ROW_OPS

    @property
    def is_decode(self):
        """LoRA (and its base GEMM) at M <= 16 streams the weights, attention with one query row
        its keys and values: bandwidth, not flops, bounds them."""
        if self.op == "attention":
            return self.x[2] == 1
        return self.op in ("matmul", "lora_forward", "lora_backward") and self.m <= 16

    def visible_pairs(self):
        """(query, key) pairs an attention head computes: Sq*Sk, or under the bottom-right causal
        mask the sum over queries i of the keys j <= i + Sk - Sq."""
        sq, sk = self.x[2], self.sk
        if not self.causal:
            return sq * sk
        return sum(min(sk, max(0, i + sk - sq + 1)) for i in range(sq))

    def shape_text(self):
        dims = ",".join(map(str, self.x))
        if self.op == "attention":
            return (f"q[{dims}] kv[{self.hkv},{self.sk}]" + (" causal" if self.causal else ""))
        if self.is_row_op:
            return f"[{dims}]"
        if self.op == "matmul":
            return f"[{dims}]@[{self.n},{self.k}].T"
        return f"x[{dims}] N={self.n} r={self.r}"

    def args(self):
        """The case's parameters as plain JSON values."""
        a = {"x": list(self.x)}
        if self.op == "attention":
            b, hq, sq, d = self.x
            a.update(b=b, hq=hq, hkv=self.hkv, sq=sq, sk=self.sk, d=d, causal=self.causal)
            return a
        if not self.is_row_op:
            a.update(m=self.m, k=self.k, n=self.n)
        if self.op.startswith("lora"):
            a.update(r=self.r, scale=LORA_SCALE)
        if self.kind:
            a["kind"] = self.kind
        if self.op == "matmul":
            a["trans_b"] = True
        return a

    def weight_bytes(self):
        """Bytes of the frozen weight plus both adapters (what decode must stream; r = 0 for a
        plain matmul); for attention, of the keys and values."""
        if self.op == "attention":
            return 2 * self.x[0] * self.hkv * self.sk * self.x[3] * _ITEMSIZE[self.dtype]
        return (self.n * self.k + self.r * self.k + self.n * self.r) * _ITEMSIZE[self.dtype]

    def bytes(self):
        """Bytes read plus written by an ideal implementation (each tensor touched once)."""
        e = _ITEMSIZE[self.dtype]
        if self.op == "attention":  # q read and out written; k and v read
            return 2 * prod(self.x) * e + self.weight_bytes()
        m, k, n, r = self.m, self.k, self.n, self.r
        if self.is_row_op:
            params = {"rms_norm": 1, "layer_norm": 2}.get(self.op, 0) * self.x[-1]
            return (2 * prod(self.x) + params) * e
        if self.op == "matmul":
            return (m * k + n * k + m * n) * e
        if self.op == "lora_forward":
            return (m * k + m * n) * e + self.weight_bytes()
        if self.op == "lora_backward":  # reads g, x, W, A, B; writes grad_x, grad_a, grad_b
            return (m * n + 2 * m * k + n * k + 2 * (r * k + n * r)) * e
        raise ValueError(self.op)

    def flops(self):
        """Multiply-adds x 2 of the math as written; None for the row ops (bandwidth-bound)."""
        if self.op == "attention":  # q@k.T and p@v: 2 x 2*D per visible pair, as FlashAttention
            b, hq, _sq, d = self.x
            return 4 * b * hq * d * self.visible_pairs()
        m, k, n, r = self.m, self.k, self.n, self.r
        if self.is_row_op:
            return None
        if self.op == "matmul":
            return 2 * m * n * k
        if self.op == "lora_forward":
            return 2 * m * n * k + 2 * m * r * (k + n)
        # g@W, g@B, (g@B)@A, (g@B).T@x, x@A.T, g.T@(x@A.T)
        return 2 * m * n * k + 4 * m * n * r + 6 * m * r * k

    def reference_too_big(self):
        return (self.flops() or 0) > REFERENCE_MAX_FLOPS or self.bytes() > REFERENCE_MAX_BYTES


def _rows(suite, shape, dtype):
    return [Case(suite, op, dtype, shape) for op in ("softmax", "rms_norm", "layer_norm")]


def _seed(device, half_dtypes):
    cases = [Case("seed", "lora_forward", "float32", (1, 1, k), n=k, r=8)
             for k in (512, 1024, 2048)]
    cases += [Case("seed", "lora_forward", "float32", (1, 1, 1024), n=1024, r=r)
              for r in (4, 8, 16, 32, 64)]
    return cases + _rows("seed", (4, 16, 1024), "float32")


def _rowwise(device, half_dtypes):
    # bfloat16 on CUDA; on the CPU each half-precision entry becomes every half dtype we can make.
    def halves(dtypes):
        return [h for d in dtypes for h in ((d,) if d == "float32" else half_dtypes)]

    if device == "cuda":
        plan = [((16384, 4096), ("bfloat16", "float32")), ((4096, 32768), ("bfloat16",)),
                ((65536, 1024), ("bfloat16",))]
        act_shape = (16384, 4096)
    else:
        plan = [((1024, 4096), ("bfloat16", "float32")), ((256, 32768), ("bfloat16",)),
                ((4096, 1024), ("bfloat16",))]
        act_shape = (1024, 4096)
    cases = [c for shape, dtypes in plan for d in halves(dtypes)
             for c in _rows("rowwise", shape, d)]
    cases += [Case("rowwise", "activation", d, act_shape, kind=kind)
              for kind in ("silu", "gelu_tanh") for d in halves(("bfloat16",))]
    # The vendor GEMM beside the row ops: the rate the rest of the library is measured against.
    gemms = ([("bfloat16", 8192), ("float32", 4096)] if device == "cuda" else [("float32", 1024)])
    cases += [Case("rowwise", "matmul", d, (h, h), n=h) for d, h in gemms]
    return cases


def _lora(device, half_dtypes):
    if device == "cuda":
        dtype, hiddens, ms, ranks = "bfloat16", (4096, 8192), (1, 16, 512, 2048, 8192), (8, 16, 64)
        backward = Case("lora", "lora_backward", dtype, (8192, 4096), n=4096, r=16)
    else:
        dtype, hiddens, ms, ranks = "float32", (1024, 2048), (1, 16, 256), (8, 16, 64)
        backward = Case("lora", "lora_backward", dtype, (256, 1024), n=1024, r=16)
    cases = []
    for h in hiddens:
        for m in ms:
            # The base GEMM sits next to its LoRA cases, so the LoRA/GEMM ratio reads off the table.
            cases.append(Case("lora", "matmul", dtype, (m, h), n=h))
            cases += [Case("lora", "lora_forward", dtype, (m, h), n=h, r=r) for r in ranks]
    return cases + [backward]


def _attention(device, half_dtypes):
    # Causal cases keep Sq == Sk, where PyTorch's top-left is_causal and loraops' bottom-right
    # mask agree; decode (one query row) needs no mask.
    def attn(dtype, b, hq, hkv, s, d, causal=True, sq=None):
        return Case("attention", "attention", dtype, (b, hq, s if sq is None else sq, d), sk=s,
                    hkv=hkv, causal=causal)

    if device == "cuda":
        return [attn("bfloat16", 4, 32, 32, 4096, 128), attn("bfloat16", 16, 32, 32, 1024, 64),
                attn("bfloat16", 4, 32, 32, 4096, 128, causal=False),
                attn("bfloat16", 1, 32, 8, 4096, 128, causal=False, sq=1)]
    return [attn("float32", 1, 8, 8, 256, 64), attn("float32", 1, 8, 2, 512, 64, causal=False),
            attn("float32", 1, 8, 2, 2048, 64, causal=False, sq=1)]


_BUILDERS = {"seed": _seed, "rowwise": _rowwise, "lora": _lora, "attention": _attention}


def cases(suite, device, half_dtypes=("float16",)):
    """The cases of `suite` ("seed", "rowwise", "lora", "attention" or "all") on `device` ("cpu"/"cuda"), in
    order and without duplicates. half_dtypes: the half-precision dtypes the CPU can feed."""
    names = SUITES if suite == "all" else (suite,)
    out, seen = [], set()
    for name in names:
        for c in _BUILDERS[name](device, tuple(half_dtypes)):
            if c not in seen:
                seen.add(c)
                out.append(c)
    return out
