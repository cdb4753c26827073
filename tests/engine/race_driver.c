/* Data-race driver for ThreadSanitizer (test_engine_threads.py): threads that pack codes for the
 * first time and switch the ISA while others run kernels. Exit 0 when every result is right;
 * TSan exits 66 on any race it sees. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

#define ROWS 4
#define BITS 200

static uint8_t codes[ROWS][(BITS + 7) / 8];
static int failed;

static void *packer(void *arg) {
    (void)arg;
    for (int it = 0; it < 100; it++) {
        uint64_t out[ROWS][4];
        hyb_pack_bytes(&codes[0][0], ROWS, BITS, &out[0][0]);
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < BITS; j++) {
                const int plus = (codes[r][j / 8] >> (7 - j % 8)) & 1; /* packbits: 1 = +1 */
                const int neg = (int)((out[r][j / 64] >> (j % 64)) & 1); /* engine: 1 = -1 */
                if (plus == neg) __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
            }
    }
    return NULL;
}

static void *switcher(void *arg) {
    (void)arg;
    for (int it = 0; it < 1000; it++) hyb_set_isa(it % 2 ? HYB_ISA_SCALAR : hyb_detect_isa());
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    for (int it = 0; it < 1000; it++)
        if (!hyb_active()->name) __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
    return NULL;
}

int main(void) {
    for (int r = 0; r < ROWS; r++)
        for (size_t b = 0; b < sizeof codes[r]; b++) codes[r][b] = (uint8_t)(37 * r + 11 * b + 5);
    pthread_t t[5];
    void *(*fns[5])(void *) = {packer, packer, packer, switcher, reader};
    for (int i = 0; i < 5; i++) pthread_create(&t[i], NULL, fns[i], NULL);
    for (int i = 0; i < 5; i++) pthread_join(t[i], NULL);
    puts(failed ? "wrong results" : "ok");
    return failed;
}
