"""Writes DIR/layer_norm_stamped.cu: src/cuda/kernels/layer_norm.cu with clock64 stamps in the
register kernel's block 0, thread 0 (entry, after the dependency wait, once the thread's sum of
its part of the row is done (its loads arrived), after the statistics (their reductions), after
rsqrt, after the write), summed into g_ph / g_cnt, which layer_norm_phases.cu defines. Anchored
on source lines: it fails loudly when they change.
Usage: stamp_layer_norm.py OUT_DIR [SOURCE] (SOURCE: a variant of layer_norm.cu to stamp instead)."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
src = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "src/cuda/kernels/layer_norm.cu"
lines = src.read_text().split("\n")


def after(pattern, text, start=0):
    for i in range(start, len(lines)):
        if pattern in lines[i]:
            lines.insert(i + 1, text)
            return i + 1
    sys.exit(f"stamp_layer_norm.py: no line with {pattern!r} after line {start}")


i = after("layer_norm_reg(RowParams p, int tpr) {",
          "  const bool st_ = blockIdx.x == 0 && threadIdx.x == 0; unsigned long long c_[6] = {};"
          " if (st_) c_[0] = clk();")
i = after("wait_then_allow_dependents();", "  if (st_) c_[1] = clk();", i)
i = after("if constexpr (kOneReduction) s2 = fmaf", "", i)  # in the first pass's inner loop
while i < len(lines) and lines[i] != "      }":  # the first pass's outer loop closes
    i += 1
if i == len(lines):
    sys.exit("stamp_layer_norm.py: the first pass's loop end not found")
# The first call only (a rescued row calls stats again). The empty asm names s: in the builds
# read so far the clock read came after the adds that make it.
lines.insert(i + 1, "      if (st_ && !c_[2]) { asm volatile(\"\" :: \"f\"(s)); c_[2] = clk(); }")
i = after("    stats(m, mc, var);", "    if (st_) c_[3] = clk();", i)  # the first call: the statistics
i = after("const float r = rsqrtf(var + eps)", "    if (st_) c_[4] = clk();", i)
i = after("store<T, V>(vec_ptr<V>(yr, c, p.out.col_stride), pack<T, V>(y));", "", i)
while i < len(lines) and lines[i] != "}":  # the kernel's closing brace
    i += 1
if i == len(lines):
    sys.exit("stamp_layer_norm.py: the kernel's closing brace not found")
lines.insert(i, "  if (st_) { c_[5] = clk(); for (int q_ = 0; q_ < 5; ++q_) atomicAdd(&g_ph[q_], c_[q_ + 1] - c_[q_]);"
                " atomicAdd(&g_cnt, 1ull); }")
out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
out.mkdir(parents=True, exist_ok=True)
(out / "layer_norm_stamped.cu").write_text("\n".join(lines))
print(f"wrote {out / 'layer_norm_stamped.cu'}")
