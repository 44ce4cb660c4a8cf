/*
 * call_floor: what a malloc/free pair costs through the C entry points when the
 * allocator itself does almost nothing — the floor under any LD_PRELOAD
 * library's pair loop. A two-list thread cache (pops take 'head', frees push
 * onto 'freed', swapped when 'head' runs empty, as hz3's bins do) of one
 * 64-byte class, initial-exec TLS, no checks. Two builds of this file:
 *
 *   gcc -O2 -fPIC -shared -ftls-model=initial-exec -DCALL_FLOOR_LIBRARY \
 *       -o libcall_floor.so call_floor.c      # malloc/free symbols: run pair_loop under it
 *   gcc -O2 -o call_floor call_floor.c        # the same functions inlined into the pair loop
 *
 * Only for the pair loop: blocks come from a fixed 1 MiB pool, never returned.
 * scripts/preload-floor.sh builds both and compares them with hz3.
 */
#include <stddef.h>

static __thread void *floor_head, *floor_freed;
static __thread char *floor_bump;
static char floor_pool[1 << 20] __attribute__((aligned(64)));

static inline void *floor_malloc(size_t n) {
    (void)n;
    void *p = floor_head;
    if (__builtin_expect(p == 0, 0)) {
        p = floor_freed;
        floor_freed = 0;
        if (!p) { /* carve a batch of 64 blocks into 'head' */
            if (!floor_bump) floor_bump = floor_pool;
            if (floor_bump + 64 * 64 > floor_pool + sizeof floor_pool) return 0;
            for (int i = 0; i < 64; i++) {
                *(void **)floor_bump = p;
                p = floor_bump;
                floor_bump += 64;
            }
        }
    }
    floor_head = *(void **)p;
    return p;
}

static inline void floor_free(void *p) {
    if (!p) return;
    *(void **)p = floor_freed;
    floor_freed = p;
}

#ifdef CALL_FLOOR_LIBRARY
void *malloc(size_t n) { return floor_malloc(n); }
void free(void *p) { floor_free(p); }
void *calloc(size_t a, size_t b) {
    char *p = floor_malloc(a * b);
    for (size_t i = 0; p && i < a * b; i++) p[i] = 0;
    return p;
}
void *realloc(void *p, size_t n) {
    char *q = floor_malloc(n);
    for (size_t i = 0; p && q && i < n && i < 64; i++) q[i] = ((char *)p)[i];
    return q;
}
#else
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The same loop as pair_loop.c; the compiler barrier keeps the TLS loads and
 * stores of every iteration (nothing is held in registers across pairs). */
int main(int argc, char **argv) {
    long pairs = argc > 1 ? atol(argv[1]) : 50000000L;
    for (long i = 0; i < 100000; i++) {
        volatile char *p = floor_malloc(64);
        p[0] = (char)i;
        floor_free((void *)p);
    }
    double t0 = now();
    for (long i = 0; i < pairs; i++) {
        volatile char *p = floor_malloc(64);
        if (!p) return 1;
        p[0] = (char)i;
        __asm__ volatile("" ::: "memory");
        floor_free((void *)p);
        __asm__ volatile("" ::: "memory");
    }
    double t1 = now();
    printf("call_floor (inlined): size=64 pairs=%ld ns_per_pair=%.2f\n", pairs, (t1 - t0) * 1e9 / (double)pairs);
    return 0;
}
#endif
