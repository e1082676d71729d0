"""Model of the causal flash kernel's tail: blocks handed out in linear order to the first free
slot (the hardware's in-order dispatch), each lasting its key tiles + 1. Prints the makespan over
the ideal (total work / slots) for pair groups of a given size (flash_block in
src/cuda/kernels/attention.cu). A model only: it knows nothing of the L2, which is what bounds
the group size; the loraops_latency rows 'attn flash m2 group N' measure the real thing.

    python3 scripts/sim_block_order.py
"""
import heapq


def makespan(durations, slots):
    free = [0.0] * slots
    end = 0.0
    for d in durations:
        t = heapq.heappop(free) + d
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def order(row_blocks, pairs, max_group, block_rows=128, key_tile=64):
    """Durations in dispatch order: groups of nearly equal size, each heaviest first."""
    groups = -(-pairs // max_group)
    base, extra = divmod(pairs, groups)
    out = []
    for gi in range(groups):
        size = base + (gi < extra)
        for rank in range(row_blocks):
            out += [(row_blocks - rank) * block_rows / key_tile + 1] * size
    return out


if __name__ == "__main__":
    # name, row blocks per pair (128-row blocks), (head, batch) pairs, resident blocks on the H200
    for name, nb, pairs, slots in (("B4 H32 S4096 D128", 32, 128, 264), ("B16 H32 S1024 D64", 8, 512, 396),
                                   ("B1 H32 S4096 D128", 32, 32, 264)):
        ideal = sum(order(nb, pairs, 1)) / slots
        cells = [f"{g}: {makespan(order(nb, pairs, g), slots) / ideal:.3f}"
                 for g in (1, 4, 8, 12, 16, 32, 64, 128, 512) if g <= pairs]
        print(f"{name:20s} " + "  ".join(cells))
