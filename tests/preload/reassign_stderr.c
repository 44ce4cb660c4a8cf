/* A program that closes stderr and opens a file of its own, which gets
 * descriptor 2 (as daemons and `cmd 2>&-` scripts do), then allocates and
 * exits. Run under an hz3 preload library: the allocator's exit lines must not
 * end up in this file.
 *
 *   reassign_stderr FILE     prints "pid=N" on stdout; FILE holds one line */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    void *keep[64];
    for (int i = 0; i < 64; i++) {
        keep[i] = malloc(32 + (size_t)i * 16);
        if (!keep[i]) return 3;
        memset(keep[i], i, 32);
    }
    close(2);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd != 2) return 4;
    const char line[] = "program's own line\n";
    if (write(2, line, sizeof line - 1) != (ssize_t)(sizeof line - 1)) return 5;
    for (int i = 0; i < 64; i++) free(keep[i]);
    printf("pid=%d\n", (int)getpid());
    return 0;
}
