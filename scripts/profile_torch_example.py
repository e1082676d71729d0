"""Where the example's time goes: one training step and one batch-1 decode step of
examples/finetune_llama_lora.py's model, with PEFT's LoRA layers and patched through loraops,
under torch.profiler. Prints ms per step and the top operators by self CPU and by self device
time, so a gap between the two runs can be traced to host overhead or to kernels.

    python scripts/profile_torch_example.py [--layers 4] [--steps 5] [example args...]
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import finetune_llama_lora as ex  # noqa: E402

import loraops.torch as lt  # noqa: E402

ROWS = 12


def timed(fn, device, steps):
    for _ in range(2):
        fn()
    ex.sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    ex.sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


def profile(fn, device, title):
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        fn()
        ex.sync(device)
    avg = prof.key_averages()
    print(f"\n--- {title}: top by self CPU time")
    print(avg.table(sort_by="self_cpu_time_total", row_limit=ROWS, max_name_column_width=56))
    if device.type == "cuda":
        print(f"--- {title}: top by self device time")
        print(avg.table(sort_by="self_device_time_total", row_limit=ROWS,
                        max_name_column_width=56))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    steps = 5
    if "--steps" in argv:
        i = argv.index("--steps")
        steps = int(argv[i + 1])
        del argv[i:i + 2]
    args = ex.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = ex.build(args, device, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)

    def train_step():
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    name = ex.cache_name()
    prompt = torch.randint(0, args.vocab, (1, args.prompt), device=device)
    state = {}

    def decode_step():
        out = model(input_ids=state["tok"], use_cache=True, **{name: state["past"]})
        state["tok"] = out.logits[:, -1:].argmax(-1)

    def warm_decode():  # every KV length the timed steps reach, seen once (cuDNN attention plans)
        reset_decode()
        with torch.no_grad():
            for _ in range(2 + 4 * steps + 1):
                decode_step()

    def reset_decode():
        with torch.no_grad():
            out = model(input_ids=prompt, use_cache=True)
        state["past"], state["tok"] = getattr(out, name), out.logits[:, -1:].argmax(-1)

    for label, patch in (("PEFT", False), ("loraops", True)):
        if patch:
            print(lt.patch_peft(model, impl=args.impl))
        model.train()
        ms = timed(train_step, device, steps)
        print(f"\n=== {label}: training step (batch {args.batch} x seq {args.seq}) {ms:.2f} ms")
        profile(train_step, device, f"{label} training step")
        model.eval()
        warm_decode()
        for grad in (False, True):
            reset_decode()
            with torch.set_grad_enabled(grad):
                ms = timed(decode_step, device, 4 * steps)
                print(f"\n=== {label}: decode step, grad {'on' if grad else 'off'}: {ms:.2f} ms")
                if not grad:
                    profile(decode_step, device, f"{label} decode step")
    print("fallbacks:", lt.fallback_counts())
    return 0


if __name__ == "__main__":
    sys.exit(main())
