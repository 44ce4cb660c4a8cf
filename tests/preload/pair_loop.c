/*
 * pair_loop: ns per malloc/free pair of one thread, for comparing an
 * LD_PRELOAD allocator with the system one:
 *   gcc -O2 -fno-builtin -o pair_loop pair_loop.c
 *   ./pair_loop [pairs=50000000] [size=32]
 *   LD_PRELOAD=target/release/libhz3_scale.so ./pair_loop
 * Prints "pair_loop: size=S pairs=N ns_per_pair=X".
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
        free((void *)p);
    }
    double t1 = now();
    printf("pair_loop: size=%zu pairs=%ld ns_per_pair=%.2f\n", size, pairs, (t1 - t0) * 1e9 / (double)pairs);
    return 0;
}
