"""Threaded allocation churn for tests/preload/run.sh.

8 threads build and discard dicts, lists, strings and byte buffers; each
thread's checksum must equal the one computed single-threaded first. Run
with PYTHONMALLOC=malloc so that every object goes through malloc. If
HZ3_EXPECT_LIB is set, the preloaded library must be mapped in this process.
Prints "OK <checksum>" on success; exits 1 otherwise.
"""
import os
import sys
import threading

THREADS = 8
ROUNDS = int(os.environ.get("ALLOC_HEAVY_ROUNDS", "12"))
MOD = (1 << 61) - 1


def work(tid, rounds):
    acc = tid
    keep = []  # objects that outlive a round, freed later (and by other rounds)
    for r in range(rounds):
        d = {"k%d_%d" % (tid, i): [i, str(i) * (i % 7 + 1), {"x": i, "y": (i, r)}] for i in range(3000)}
        s = "".join(v[1] for v in d.values())
        blobs = [bytes(range(i % 256)) * (1 + i % 9) for i in range(400)]
        big = bytearray(50000 + 1000 * r)
        big[::997] = b"\x01" * len(big[::997])
        lst = sorted((v[2]["x"] * 7919) % 10007 for v in d.values())
        acc = (acc * 1000003 + len(s) + sum(map(len, blobs)) + sum(big) + lst[len(lst) // 2] + len(d)) % MOD
        keep.append(s[r::3])
        if len(keep) > 4:
            acc = (acc + len(keep.pop(0))) % MOD
        del d, s, blobs, big, lst
    return (acc + sum(map(len, keep))) % MOD


def main():
    want_lib = os.environ.get("HZ3_EXPECT_LIB")
    if want_lib:
        with open("/proc/self/maps") as maps:
            if want_lib not in maps.read():
                print("FAIL: %s is not mapped in this process" % want_lib)
                return 1
    expected = [work(t, ROUNDS) for t in range(THREADS)]
    results = [None] * THREADS

    def run(t):
        results[t] = work(t, ROUNDS)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if results != expected:
        print("FAIL: checksums differ: %r != %r" % (results, expected))
        return 1
    total = 0
    for v in expected:
        total = (total * 31 + v) % MOD
    print("OK %d" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
