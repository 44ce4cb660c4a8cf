/*
 * pair_loop: ns per malloc/free pair of one thread, for comparing an
 * LD_PRELOAD allocator with the system one:
 *   gcc -O2 -fno-builtin -o pair_loop pair_loop.c
 *   ./pair_loop [pairs=50000000] [size=32]
 *   LD_PRELOAD=target/release/libhz3_scale.so ./pair_loop
 * Prints "pair_loop: size=S pairs=N ns_per_pair=X". Built with
 * -DCALL_FLOOR_INLINE it runs the minimal allocator of call_floor.c inlined
 * instead (scripts/preload-floor.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef CALL_FLOOR_INLINE /* the floor allocator inlined (see call_floor.c) */
#include "call_floor.c"
#define malloc floor_malloc
#define free floor_free
#define LOOP_NAME "call_floor (inlined)"
#else
#define LOOP_NAME "pair_loop"
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    long pairs = argc > 1 ? atol(argv[1]) : 50000000L;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
    if (pairs <= 0 || size == 0) {
        fprintf(stderr, "usage: pair_loop [pairs] [size]\n");
        return 2;
    }
    for (long i = 0; i < 100000; i++) { /* warm the thread cache */
        volatile char *p = malloc(size);
        p[0] = (char)i;
        free((void *)p);
    }
    double t0 = now();
    for (long i = 0; i < pairs; i++) {
        volatile char *p = malloc(size);
        if (!p) return 1;
        p[0] = (char)i; /* the volatile touch keeps the pair real */
        /* No value is kept in a register across the pair (what the calls of
         * the non-inlined build imply anyway). */
        __asm__ volatile("" ::: "memory");
        free((void *)p);
        __asm__ volatile("" ::: "memory");
    }
    double t1 = now();
    printf(LOOP_NAME ": size=%zu pairs=%ld ns_per_pair=%.2f\n", size, pairs, (t1 - t0) * 1e9 / (double)pairs);
    return 0;
}
