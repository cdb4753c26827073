/* Test driver for the C export: runs a generated model (named `model`) on samples from stdin.
 *
 * stdin: uint32 n, then n samples: MODEL_INPUT_SIZE float32 ("floats", through
 * model_predict_batch) or MODEL_INPUT_WORDS uint64 ("words", through model_predict_words with
 * a work buffer of the driver's own). stdout: n int32 classes, then n * MODEL_CLASSES float32
 * logits. Native byte order on both sides. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

int main(int argc, char **argv) {
    uint32_t n;
    const int words = argc > 1 && strcmp(argv[1], "words") == 0;
    const size_t per = words ? MODEL_INPUT_WORDS * sizeof(uint64_t) : MODEL_INPUT_SIZE * sizeof(float);
    if (fread(&n, sizeof n, 1, stdin) != 1) return 2;
    void *in = malloc((size_t)n * per + 1);
    float *logits = malloc((size_t)n * MODEL_CLASSES * sizeof(float) + 1);
    int *classes = malloc((size_t)n * sizeof(int) + 1);
    int32_t *out = malloc((size_t)n * sizeof(int32_t) + 1);
    static uint64_t work[MODEL_WORK_WORDS];
    if (!in || !logits || !classes || !out || fread(in, per, n, stdin) != n) return 3;
    if (words) {
        for (uint32_t i = 0; i < n; i++)
            classes[i] = model_predict_words((const uint64_t *)in + (size_t)i * MODEL_INPUT_WORDS,
                                             logits + (size_t)i * MODEL_CLASSES, work);
    } else {
        size_t refused = model_predict_batch((const float *)in, n, logits, classes), seen = 0;
        for (uint32_t i = 0; i < n; i++) seen += classes[i] < 0;
        if (seen != refused) return 4;
    }
    for (uint32_t i = 0; i < n; i++) out[i] = classes[i];
    if (fwrite(out, sizeof(int32_t), n, stdout) != n) return 5;
    if (fwrite(logits, sizeof(float) * MODEL_CLASSES, n, stdout) != n) return 5;
    return 0;
}
