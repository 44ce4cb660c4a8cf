/*
 * capi_test: edge cases of every C allocation symbol an hz3 preset exports,
 * run under LD_PRELOAD=libhz3_<preset>.so by tests/preload/run.sh.
 *
 * Build: gcc -O1 -fno-builtin -pthread -o capi_test capi_test.c -ldl
 * (-fno-builtin keeps gcc from folding or deleting malloc/free calls.)
 * If CAPI_EXPECT_LIB is set, malloc must resolve into a shared object whose
 * path contains that string (proves the preload is in effect).
 * Prints "capi_test: N passed, M failed"; exit status 0 only when M == 0.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The failure paths below use a block after a failed realloc on purpose. */
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wuse-after-free"

static int passed, failed;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (cond) {                                               \
            passed++;                                             \
        } else {                                                  \
            failed++;                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __func__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                         \
            fputc('\n', stderr);                                  \
        }                                                         \
    } while (0)

/* Keep the optimiser from reasoning about allocator results. */
static void *volatile sink;

/* Hide huge constants from gcc's -Walloc-size-larger-than= (on purpose here). */
static size_t opaque(size_t v) {
    volatile size_t x = v;
    return x;
}

static int aligned_to(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* Fill n bytes with a pattern derived from seed; check it. */
static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31u + seed);
}
static int check_fill(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31u + seed)) return 0;
    return 1;
}

/* Write the first and last byte of every page of [p, p+n): writable? */
static void touch(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)i;
    if (n) p[n - 1] = 0xA5;
}

static void test_preloaded(void) {
    const char *want = getenv("CAPI_EXPECT_LIB");
    if (!want || !*want) return;
    Dl_info info;
    int ok = dladdr((void *)&malloc, &info) != 0 && info.dli_fname && strstr(info.dli_fname, want);
    CHECK(ok, "malloc resolves to %s, expected a path containing %s",
          ok || !info.dli_fname ? "?" : info.dli_fname, want);
}

static void test_malloc_basic(void) {
    /* malloc(0): non-null and unique */
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b, "malloc(0) gave %p %p", a, b);
    free(a);
    free(b);
    free(NULL);
    passed++; /* free(NULL) did not crash */

    /* 16-byte alignment and usable size >= request for many sizes */
    static const size_t extra[] = {4095, 4096, 4097, 8191, 65535, 65536, 65537, 131072,
                                   262145, 1 << 20, (1 << 20) + 1, 4 << 20, 33 << 20};
    int bad_align = 0, bad_usable = 0, bad_write = 0;
    for (size_t s = 1; s <= 70000; s += (s < 2100 ? 1 : 61)) {
        unsigned char *p = malloc(s);
        if (!p) { bad_write++; continue; }
        if (!aligned_to(p, 16)) bad_align++;
        size_t u = malloc_usable_size(p);
        if (u < s) bad_usable++;
        memset(p, 0x5A, u); /* the whole usable size is writable */
        free(p);
    }
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
        unsigned char *p = malloc(extra[i]);
        if (!p) { bad_write++; continue; }
        if (!aligned_to(p, 16)) bad_align++;
        size_t u = malloc_usable_size(p);
        if (u < extra[i]) bad_usable++;
        touch(p, u);
        free(p);
    }
    CHECK(bad_align == 0, "%d blocks not 16-aligned", bad_align);
    CHECK(bad_usable == 0, "%d blocks with usable size < request", bad_usable);
    CHECK(bad_write == 0, "%d allocations failed", bad_write);
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) != 0");

    /* many live blocks: distinct, content intact */
    enum { N = 20000 };
    static unsigned char *live[N];
    int corrupt = 0;
    for (int i = 0; i < N; i++) {
        size_t s = 1 + (size_t)(i * 37) % 3000;
        live[i] = malloc(s);
        if (live[i]) fill(live[i], s, (unsigned)i);
    }
    for (int i = 0; i < N; i++) {
        size_t s = 1 + (size_t)(i * 37) % 3000;
        if (!live[i] || !check_fill(live[i], s, (unsigned)i)) corrupt++;
        free(live[i]);
    }
    CHECK(corrupt == 0, "%d of %d live blocks corrupted or missing", corrupt, N);
}

static void test_calloc(void) {
    static const size_t sizes[] = {1, 16, 100, 2048, 4000, 4096, 40000, 70000, 300000, 5 << 20};
    int dirty = 0, failed_alloc = 0;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            /* dirty a block of the same size first so calloc may reuse it */
            unsigned char *d = malloc(sizes[i]);
            if (d) memset(d, 0xFF, sizes[i]);
            free(d);
            unsigned char *p = calloc(1, sizes[i]);
            if (!p) { failed_alloc++; continue; }
            for (size_t j = 0; j < sizes[i]; j++)
                if (p[j]) { dirty++; break; }
            free(p);
            p = calloc(sizes[i], 1);
            if (!p) { failed_alloc++; continue; }
            for (size_t j = 0; j < sizes[i]; j++)
                if (p[j]) { dirty++; break; }
            free(p);
        }
    }
    CHECK(dirty == 0, "%d calloc blocks not zeroed", dirty);
    CHECK(failed_alloc == 0, "%d callocs failed", failed_alloc);
    void *z = calloc(0, 0);
    CHECK(z != NULL, "calloc(0,0) returned NULL");
    free(z);
}

static void test_errno(void) {
    void *p;
    errno = 0;
    p = malloc(opaque(SIZE_MAX / 2));
    CHECK(p == NULL && errno == ENOMEM, "malloc(SIZE_MAX/2) = %p errno %d", p, errno);
    errno = 0;
    p = malloc(opaque(SIZE_MAX));
    CHECK(p == NULL && errno == ENOMEM, "malloc(opaque(SIZE_MAX)) = %p errno %d", p, errno);
    errno = 0;
    p = malloc(opaque(SIZE_MAX - 4095));
    CHECK(p == NULL && errno == ENOMEM, "malloc(SIZE_MAX-4095) = %p errno %d", p, errno);
    errno = 0;
    p = calloc(opaque(SIZE_MAX / 2), 4);
    CHECK(p == NULL && errno == ENOMEM, "calloc overflow = %p errno %d", p, errno);
    errno = 0;
    p = calloc(opaque((size_t)1 << 33), opaque((size_t)1 << 33));
    CHECK(p == NULL && errno == ENOMEM, "calloc 2^33*2^33 = %p errno %d", p, errno);
    errno = 0;
    p = calloc(1, opaque(SIZE_MAX / 2));
    CHECK(p == NULL && errno == ENOMEM, "calloc(1, SIZE_MAX/2) = %p errno %d", p, errno);
    errno = 0;
    p = reallocarray(NULL, opaque(SIZE_MAX / 2), 4);
    CHECK(p == NULL && errno == ENOMEM, "reallocarray(NULL) overflow = %p errno %d", p, errno);

    /* reallocarray overflow leaves the block alone */
    unsigned char *q = malloc(100);
    fill(q, 100, 7);
    errno = 0;
    p = reallocarray(q, opaque(SIZE_MAX / 8), 16);
    CHECK(p == NULL && errno == ENOMEM, "reallocarray(q) overflow = %p errno %d", p, errno);
    CHECK(check_fill(q, 100, 7), "reallocarray failure damaged the block");
    /* reallocarray success */
    p = reallocarray(q, 50, 20);
    CHECK(p && check_fill(p, 100, 7) && malloc_usable_size(p) >= 1000, "reallocarray(q,50,20)");
    free(p);

    /* realloc failure leaves the block alone */
    q = malloc(200);
    fill(q, 200, 9);
    errno = 0;
    p = realloc(q, opaque(SIZE_MAX / 2));
    CHECK(p == NULL && errno == ENOMEM, "realloc(q, SIZE_MAX/2) = %p errno %d", p, errno);
    CHECK(check_fill(q, 200, 9), "realloc failure damaged the block");
    free(q);

    /* aligned variants fail with ENOMEM too */
    errno = 0;
    p = aligned_alloc(64, opaque(SIZE_MAX / 2));
    CHECK(p == NULL && errno == ENOMEM, "aligned_alloc(64, huge) = %p errno %d", p, errno);
    errno = 0;
    p = memalign(4096, opaque(SIZE_MAX - 100));
    CHECK(p == NULL && errno == ENOMEM, "memalign(4096, huge) = %p errno %d", p, errno);
    errno = 0;
    p = pvalloc(opaque(SIZE_MAX - 100));
    CHECK(p == NULL && errno == ENOMEM, "pvalloc(huge) = %p errno %d", p, errno);
    errno = 0;
    p = valloc(opaque(SIZE_MAX / 2));
    CHECK(p == NULL && errno == ENOMEM, "valloc(huge) = %p errno %d", p, errno);

    /* posix_memalign: return codes, errno untouched, *out untouched on error */
    void *out = (void *)0x1234;
    errno = 4242;
    int r = posix_memalign(&out, 24, 100);
    CHECK(r == EINVAL && out == (void *)0x1234 && errno == 4242, "posix_memalign(24): r=%d out=%p errno=%d", r, out, errno);
    r = posix_memalign(&out, 0, 100);
    CHECK(r == EINVAL && out == (void *)0x1234 && errno == 4242, "posix_memalign(0): r=%d out=%p errno=%d", r, out, errno);
    r = posix_memalign(&out, 4, 100);
    CHECK(r == EINVAL && out == (void *)0x1234 && errno == 4242, "posix_memalign(4): r=%d out=%p errno=%d", r, out, errno);
    r = posix_memalign(&out, 3, 100);
    CHECK(r == EINVAL && out == (void *)0x1234 && errno == 4242, "posix_memalign(3): r=%d out=%p errno=%d", r, out, errno);
    r = posix_memalign(&out, 64, opaque(SIZE_MAX / 2));
    CHECK(r == ENOMEM && out == (void *)0x1234 && errno == 4242, "posix_memalign(64, huge): r=%d out=%p errno=%d", r, out, errno);
    r = posix_memalign(&out, 8, 100);
    CHECK(r == 0 && out && aligned_to(out, 16) && errno == 4242, "posix_memalign(8): r=%d out=%p errno=%d", r, out, errno);
    free(out);
    out = NULL;
    r = posix_memalign(&out, 64, 0);
    CHECK(r == 0 && out && aligned_to(out, 64), "posix_memalign(64, 0): r=%d out=%p", r, out);
    free(out);

    /* free leaves errno alone (POSIX 2024, glibc >= 2.33), small and large blocks */
    void *small = malloc(40), *large = malloc(8 << 20);
    errno = 777;
    free(small);
    free(large);
    free(NULL);
    CHECK(errno == 777, "free changed errno to %d", errno);

    /* aligned_alloc: EINVAL for a non-power-of-two alignment */
    errno = 0;
    p = aligned_alloc(3, 64);
    CHECK(p == NULL && errno == EINVAL, "aligned_alloc(3) = %p errno %d", p, errno);
    errno = 0;
    p = aligned_alloc(24, 48);
    CHECK(p == NULL && errno == EINVAL, "aligned_alloc(24) = %p errno %d", p, errno);
    errno = 0;
    p = aligned_alloc(0, 48);
    CHECK(p == NULL && errno == EINVAL, "aligned_alloc(0) = %p errno %d", p, errno);
    p = aligned_alloc(64, 10); /* size not a multiple of the alignment: glibc accepts */
    CHECK(p && aligned_to(p, 64), "aligned_alloc(64, 10) = %p", p);
    free(p);
    p = aligned_alloc(8, 10);
    CHECK(p && aligned_to(p, 16), "aligned_alloc(8, 10) = %p", p);
    free(p);
}

static void test_alignment_sweep(void) {
    int bad = 0, nulls = 0;
    for (size_t a = 16; a <= (1 << 20); a <<= 1) {
        static const size_t sizes[] = {1, 8, 16, 24, 100, 1000, 4096, 5000, 70000};
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t s = sizes[i];
            void *p1 = NULL, *p2, *p3;
            if (posix_memalign(&p1, a, s) != 0) p1 = NULL;
            p2 = aligned_alloc(a, s);
            p3 = memalign(a, s);
            void *ps[3] = {p1, p2, p3};
            for (int k = 0; k < 3; k++) {
                if (!ps[k]) { nulls++; continue; }
                if (!aligned_to(ps[k], a)) bad++;
                if (malloc_usable_size(ps[k]) < s) bad++;
                touch(ps[k], s);
                fill(ps[k], s, (unsigned)(a + s));
            }
            for (int k = 0; k < 3; k++) {
                if (ps[k] && !check_fill(ps[k], s, (unsigned)(a + s))) bad++;
                free(ps[k]);
            }
        }
    }
    CHECK(bad == 0, "%d misaligned / short / overlapping aligned blocks", bad);
    CHECK(nulls == 0, "%d aligned allocations failed", nulls);

    /* memalign rounds odd alignments up; tiny ones give at least 16 */
    void *p = memalign(48, 100);
    CHECK(p && aligned_to(p, 64), "memalign(48) = %p", p);
    free(p);
    p = memalign(1000, 10);
    CHECK(p && aligned_to(p, 1024), "memalign(1000) = %p", p);
    free(p);
    p = memalign(0, 10);
    CHECK(p && aligned_to(p, 16), "memalign(0) = %p", p);
    free(p);
    p = memalign(4, 10);
    CHECK(p && aligned_to(p, 16), "memalign(4) = %p", p);
    free(p);
    errno = 0;
    p = memalign(opaque(SIZE_MAX / 2 + 2), 10);
    CHECK(p == NULL && errno == EINVAL, "memalign(SIZE_MAX/2+2) = %p errno %d", p, errno);

    /* aligned blocks realloc like any other */
    unsigned char *q = aligned_alloc(4096, 3000);
    fill(q, 3000, 3);
    q = realloc(q, 100000);
    CHECK(q && check_fill(q, 3000, 3), "realloc of an aligned block lost content");
    free(q);
}

static void test_pages(void) {
    long page = sysconf(_SC_PAGESIZE);
    static const size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 100000, 3 << 20};
    int bad = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *v = valloc(sizes[i]);
        if (!v || !aligned_to(v, (size_t)page) || malloc_usable_size(v) < sizes[i]) bad++;
        if (v) touch(v, sizes[i]);
        free(v);
        void *pv = pvalloc(sizes[i]);
        size_t want = sizes[i] ? (sizes[i] + page - 1) / page * page : (size_t)page;
        if (!pv || !aligned_to(pv, (size_t)page) || malloc_usable_size(pv) < want) bad++;
        if (pv) touch(pv, want);
        free(pv);
    }
    CHECK(bad == 0, "%d valloc/pvalloc results not page aligned or too short", bad);
}

static void test_realloc(void) {
    /* realloc(NULL, n) is malloc(n) */
    unsigned char *p = realloc(NULL, 40);
    CHECK(p && aligned_to(p, 16) && malloc_usable_size(p) >= 40, "realloc(NULL, 40) = %p", (void *)p);
    /* realloc(p, 0) frees and returns NULL (glibc) */
    void *z = realloc(p, 0);
    CHECK(z == NULL, "realloc(p, 0) = %p", z);

    /* grow and shrink through every size range, content kept */
    static const size_t chain[] = {1, 7, 16, 17, 100, 1000, 2048, 2049, 4000, 4096, 5000, 60000,
                                   65536, 70000, 200000, 3 << 20, 20 << 20, 1 << 20, 100000,
                                   9000, 3000, 500, 33, 16, 3, 1, 64000, 10};
    size_t n = sizeof chain / sizeof *chain;
    int lost = 0;
    for (unsigned seed = 0; seed < 4; seed++) {
        p = malloc(chain[0]);
        fill(p, chain[0], seed);
        size_t cur = chain[0];
        for (size_t i = 1; i < n; i++) {
            unsigned char *q = realloc(p, chain[i]);
            if (!q) { lost++; break; }
            size_t keep = cur < chain[i] ? cur : chain[i];
            if (!check_fill(q, keep, seed)) lost++;
            fill(q, chain[i], seed);
            p = q;
            cur = chain[i];
        }
        free(p);
    }
    CHECK(lost == 0, "%d realloc steps lost content or failed", lost);

    /* in-place growth within the usable size keeps the pointer valid */
    p = malloc(20);
    size_t u = malloc_usable_size(p);
    fill(p, u, 11);
    unsigned char *q = realloc(p, u);
    CHECK(q && check_fill(q, u, 11), "realloc to the usable size lost content");
    free(q);
}

/* Blocks from the allocator behind the preloaded one (glibc's own malloc):
 * free, realloc and malloc_usable_size must hand them over, not crash. */
static void test_foreign(void) {
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    void *(*next_malloc)(size_t) = libc ? (void *(*)(size_t))dlsym(libc, "malloc") : NULL;
    if (!next_malloc || next_malloc == &malloc) {
        printf("capi_test: foreign-pointer test skipped (malloc is libc's)\n");
        return;
    }
    unsigned char *p = next_malloc(100);
    CHECK(p != NULL, "libc malloc failed");
    if (!p) return;
    fill(p, 100, 5);
    CHECK(malloc_usable_size(p) >= 100, "usable size of a foreign block: %zu", malloc_usable_size(p));
    unsigned char *q = realloc(p, 5000);
    CHECK(q && check_fill(q, 100, 5), "realloc of a foreign block lost content");
    free(q);
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
        void *f = next_malloc(16 + (size_t)i * 3);
        if (!f) { ok = 0; break; }
        free(f);
    }
    CHECK(ok, "foreign free loop");
    p = next_malloc(64);
    fill(p, 64, 1);
    q = realloc(p, 32); /* shrinking moves it too */
    CHECK(q && check_fill(q, 32, 1), "shrinking realloc of a foreign block");
    free(q);
    dlclose(libc);
}

/* -------- threads -------- */

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    enum { SLOTS = 256 };
    unsigned char *slot[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    int bad = 0;
    for (int it = 0; it < 20000; it++) {
        seed = seed * 1103515245u + 12345u;
        int k = (seed >> 8) % SLOTS;
        if (slot[k]) {
            if (slot[k][0] != (unsigned char)k || slot[k][size[k] - 1] != (unsigned char)k) bad++;
            free(slot[k]);
            slot[k] = NULL;
        } else {
            size_t s = 1 + (seed >> 12) % ((seed & 7) ? 512 : 40000);
            slot[k] = malloc(s);
            if (!slot[k]) { bad++; continue; }
            size[k] = s;
            slot[k][0] = slot[k][s - 1] = (unsigned char)k;
        }
    }
    for (int k = 0; k < SLOTS; k++) free(slot[k]);
    return (void *)(uintptr_t)bad;
}

static volatile int stop_busy;
static void *busy(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *keep[64] = {0};
    while (!stop_busy) {
        seed = seed * 1103515245u + 12345u;
        int k = (seed >> 8) & 63;
        free(keep[k]);
        keep[k] = malloc(1 + (seed >> 12) % 5000);
        if (keep[k]) *(volatile char *)keep[k] = 1;
    }
    for (int k = 0; k < 64; k++) free(keep[k]);
    return NULL;
}

static void test_fork(void) {
    pthread_t t[4];
    stop_busy = 0;
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, busy, (void *)(uintptr_t)(i + 1));
    usleep(20000);
    int ok_children = 0, forks = 20;
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* child: only this thread exists; allocate, free, spawn a thread */
            alarm(20);
            uintptr_t bad = (uintptr_t)churn((void *)(uintptr_t)(f + 100));
            pthread_t c;
            void *res = (void *)1;
            if (pthread_create(&c, NULL, churn, (void *)7) == 0) pthread_join(c, &res);
            exit(bad == 0 && res == NULL ? 0 : 3);
        }
        if (pid < 0) continue;
        int st = 0;
        if (waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0) ok_children++;
        else fprintf(stderr, "fork child %d: status 0x%x\n", f, st);
        usleep(1000);
    }
    stop_busy = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    CHECK(ok_children == forks, "%d of %d forked children succeeded", ok_children, forks);
}

/* blocks handed between threads: allocated here, freed there and back */
static void *remote_free(void *arg) {
    void **blocks = arg;
    for (int i = 0; i < 1000; i++) free(blocks[i]);
    for (int i = 0; i < 1000; i++) blocks[i] = malloc(16 + (size_t)i * 7);
    return NULL;
}

static void test_threads(void) {
    enum { T = 100 };
    pthread_t t[T];
    int created = 0, bad = 0;
    for (int i = 0; i < T; i++) {
        if (pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i * 7919 + 1)) == 0) created++;
        else t[i] = 0;
    }
    for (int i = 0; i < T; i++) {
        void *r = NULL;
        if (t[i] && pthread_join(t[i], &r) == 0 && r != NULL) bad++;
    }
    CHECK(created == T, "only %d of %d threads created", created, T);
    CHECK(bad == 0, "%d threads saw corrupted blocks", bad);

    /* 100 threads created and exited one after another, each allocating */
    int serial_bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_t one;
        void *r = (void *)1;
        if (pthread_create(&one, NULL, churn, (void *)(uintptr_t)(i + 5)) != 0 || pthread_join(one, &r) != 0 || r)
            serial_bad++;
    }
    CHECK(serial_bad == 0, "%d serial threads failed", serial_bad);

    /* remote frees in both directions, including after the other thread exited */
    static void *blocks[1000];
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 1000; i++) blocks[i] = malloc(16 + (size_t)(i * 13 + round) % 70000);
        pthread_t r;
        pthread_create(&r, NULL, remote_free, blocks);
        pthread_join(r, NULL);
        for (int i = 0; i < 1000; i++) free(blocks[i]);
    }
    passed++;
}

int main(void) {
    alarm(300); /* a deadlock fails the test instead of hanging it */
    setvbuf(stdout, NULL, _IONBF, 0);
    test_preloaded();
    test_malloc_basic();
    test_calloc();
    test_errno();
    test_alignment_sweep();
    test_pages();
    test_realloc();
    test_foreign();
    test_threads();
    test_fork();
    printf("capi_test: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
