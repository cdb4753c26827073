/* bench/embedded.py's host driver for a generated model named `model`.
 * stdin: uint32 n, then n samples of MODEL_INPUT_SIZE float32.
 * `run`: stdout gets n int32 classes, then n * MODEL_CLASSES float32 logits.
 * `time R`: R passes of model_predict over the n samples; stdout gets the median seconds per
 * sample over the passes. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    uint32_t n;
    if (argc < 2 || fread(&n, sizeof n, 1, stdin) != 1 || n == 0) return 2;
    float *x = malloc((size_t)n * MODEL_INPUT_SIZE * sizeof(float));
    float *logits = malloc((size_t)n * MODEL_CLASSES * sizeof(float));
    int32_t *classes = malloc((size_t)n * sizeof(int32_t));
    if (!x || !logits || !classes) return 3;
    if (fread(x, sizeof(float) * MODEL_INPUT_SIZE, n, stdin) != n) return 3;
    if (strcmp(argv[1], "run") == 0) {
        for (uint32_t i = 0; i < n; i++)
            classes[i] = model_predict(x + (size_t)i * MODEL_INPUT_SIZE, logits + (size_t)i * MODEL_CLASSES);
        fwrite(classes, sizeof(int32_t), n, stdout);
        fwrite(logits, sizeof(float) * MODEL_CLASSES, n, stdout);
        return 0;
    }
    const int reps = argc > 2 ? atoi(argv[2]) : 5;
    double *t = malloc((size_t)(reps > 0 ? reps : 1) * sizeof(double));
    volatile int sink = 0;
    if (!t || reps < 1) return 2;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        for (uint32_t i = 0; i < n; i++) sink += model_predict(x + (size_t)i * MODEL_INPUT_SIZE, logits);
        t[r] = (now() - t0) / n;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp);
    printf("%.9g\n", t[reps / 2]);
    return sink == -12345;
}
