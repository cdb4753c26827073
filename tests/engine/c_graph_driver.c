/* Test driver for the C export of an engine graph: runs a generated model (named `model`) on
 * images from stdin. stdin: uint32 n, then n images of MODEL_INPUT_SIZE float32. stdout: n int32
 * classes, then n * MODEL_NUM_CLASSES float32 logits. Native byte order on both sides. */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int main(void) {
    uint32_t n;
    if (fread(&n, sizeof n, 1, stdin) != 1) return 2;
    float *in = malloc((size_t)n * MODEL_INPUT_SIZE * sizeof(float) + 1);
    float *logits = calloc((size_t)n * MODEL_NUM_CLASSES + 1, sizeof(float));
    int *classes = malloc((size_t)n * sizeof(int) + 1);
    int32_t *out = malloc((size_t)n * sizeof(int32_t) + 1);
    if (!in || !logits || !classes || !out) return 3;
    if (fread(in, MODEL_INPUT_SIZE * sizeof(float), n, stdin) != n) return 3;
    size_t refused = model_predict_batch(in, n, logits, classes), seen = 0;
    for (uint32_t i = 0; i < n; i++) seen += classes[i] < 0;
    if (seen != refused) return 4;
    for (uint32_t i = 0; i < n; i++) out[i] = classes[i];
    if (fwrite(out, sizeof(int32_t), n, stdout) != n) return 5;
    if (fwrite(logits, sizeof(float) * MODEL_NUM_CLASSES, n, stdout) != n) return 5;
    free(in);
    free(logits);
    free(classes);
    free(out);
    return 0;
}
