#!/usr/bin/env python3
"""Page-level map of a running process's glibc heap: where its anonymous resident memory is.

Usage (as root, or as the process's owner with ptrace allowed):
    benches/scripts/heap-map.py PID

For the main heap and each thread arena it walks malloc's chunks (reading /proc/PID/mem)
and prints the resident size (from /proc/PID/smaps), the bytes in use, the free top and the
largest free chunks. Then: resident heap pages by the fraction of them in use, the sizes of
the in-use chunks that hold pages less than a quarter used (what keeps sparse pages
resident), and the large mmapped blocks. Chunks in the per-thread cache count as in use.
Written for glibc 2.36 on x86-64 (Debian 12): 16-byte chunk alignment, 64 MiB thread heaps.
"""
import collections
import struct
import sys

PAGE = 4096
THREAD_HEAP = 64 << 20


def regions(pid):
    """(start, end, name, anonymous KiB) of every mapping."""
    out, cur = [], None
    for line in open(f"/proc/{pid}/smaps"):
        f = line.split()
        if ":" not in f[0] and "-" in f[0]:
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            cur = [lo, hi, f[5] if len(f) > 5 else "", 0]
            out.append(cur)
        elif f[0] == "Anonymous:":
            cur[3] = int(f[1])
    return out


def present(pagemap, lo, hi):
    """Per page: mapped to a page of its own (present, not the shared zero page)."""
    pagemap.seek(lo // PAGE * 8)
    raw = pagemap.read((hi - lo) // PAGE * 8)
    entries = struct.unpack(f"<{len(raw) // 8}Q", raw)
    zero = collections.Counter(e & ((1 << 55) - 1) for e in entries if e >> 63).most_common(1)
    zero_pfn = zero[0][0] if zero and zero[0][1] > 64 else None
    return [bool(e >> 63) and (e & ((1 << 55) - 1)) != zero_pfn for e in entries]


def chunks(buf, start, end):
    """(offset, size, prev_in_use) of the chunks from `start`, up to the first bad header."""
    out, off = [], start
    while off + 16 <= end:
        word = struct.unpack_from("<Q", buf, off + 8)[0]
        size = word & ~7
        if size < 32 or size % 16 or off + size > end:
            break
        out.append((off, size, word & 1))
        off += size
    return out


def main():
    pid = int(sys.argv[1])
    maps = regions(pid)
    mem = open(f"/proc/{pid}/mem", "rb", 0)
    pagemap = open(f"/proc/{pid}/pagemap", "rb", 0)
    heaps = [(lo, hi, anon, name) for lo, hi, name, anon in maps
             if name == "[heap]" or (name == "" and lo % THREAD_HEAP == 0 and hi - lo <= THREAD_HEAP)]
    residency = {lo: present(pagemap, lo, hi) for lo, hi, _, _ in heaps}
    by_fraction, sparse_sizes = collections.Counter(), collections.Counter()
    total_anon = total_used = 0
    for lo, hi, anon, name in heaps:
        mem.seek(lo)
        buf = mem.read(hi - lo)
        end = len(buf)
        if name != "[heap]":
            end = min(end, struct.unpack_from("<Q", buf, 16)[0])  # heap_info.size
        # The first chunk follows the heap's header (and the arena's state in its first heap).
        best, reach = [], 0
        for start in range(0, 4096, 16):
            walk = chunks(buf, start, end)
            stop = walk[-1][0] + walk[-1][1] if walk else 0
            if stop > reach:
                best, reach = walk, stop
            if reach + 32 >= end:
                break
        used = [(off, size) for (off, size, _), nxt in zip(best, best[1:]) if nxt[2]]
        top = best[-1][1] if best else 0
        free_big = sorted((size for (off, size, _), nxt in zip(best, best[1:]) if not nxt[2]),
                          reverse=True)[:3]
        per_page = [0] * len(residency[lo])
        holders = collections.defaultdict(list)
        for off, size in used:
            a, b = off + 16, off + size
            for p in range(a // PAGE, min((b - 1) // PAGE + 1, len(per_page))):
                per_page[p] += min(b, (p + 1) * PAGE) - max(a, p * PAGE)
                holders[p].append(size)
        in_use = sum(size for _, size in used)
        total_anon += anon
        total_used += in_use
        print(f"{name or 'arena':6} {lo:x}: resident {anon:>7} KiB, in use {in_use >> 10:>7} KiB, "
              f"free top {top >> 10} KiB, largest free {[f >> 10 for f in free_big]} KiB")
        for p, resident in enumerate(residency[lo]):
            if resident:
                fraction = per_page[p] / PAGE
                by_fraction[min(int(fraction * 10), 10)] += 1
                if fraction < 0.25:
                    sparse_sizes.update(holders[p])
    print(f"heaps: resident {total_anon} KiB, in use {total_used >> 10} KiB")
    print("resident heap pages by tenths in use:", dict(sorted(by_fraction.items())))
    print("in-use chunk sizes on pages < 25 % used:", sparse_sizes.most_common(12))
    for lo, hi, name, anon in maps:
        if name == "" and anon >= 1024 and lo % THREAD_HEAP != 0:
            print(f"mapped {lo:x}: {(hi - lo) >> 10} KiB, resident {anon} KiB")


if __name__ == "__main__":
    main()
