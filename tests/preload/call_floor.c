/*
 * call_floor: what a malloc/free pair costs through the C entry points when the
 * allocator itself does almost nothing — the floor under any LD_PRELOAD
 * library's pair loop. A two-list thread cache (pops take 'head', frees push
 * onto 'freed', swapped when 'head' runs empty, as hz3's bins do) of one
 * 64-byte class, initial-exec TLS, no checks. Two uses:
 *
 *   gcc -O2 -fPIC -shared -ftls-model=initial-exec -DCALL_FLOOR_LIBRARY \
 *       -o libcall_floor.so call_floor.c      # malloc/free symbols: run pair_loop under it
 *   gcc -O2 -DCALL_FLOOR_INLINE -o call_floor pair_loop.c
 *                                             # the same functions inlined into the pair loop
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
#endif
