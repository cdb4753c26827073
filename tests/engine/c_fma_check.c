/* Checks the C export's portable hyb_fmaf (no libm) against the C library's fmaf on random
 * operands and on products that fall exactly halfway between two floats, where rounding the
 * double sum a second time goes wrong. Prints "checked wrong"; exits 1 if any differ. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define HYB_C_ROWS 1
#define HYB_C_CONV 0
#define HYB_C_DENSE 0
#define HYB_C_PORTABLE 1
#include "forward.c"

static uint64_t state = 0x9e3779b97f4a7c15u;
static uint32_t next(void) { /* xorshift64* */
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return (uint32_t)((state * 0x2545f4914f6cdd1du) >> 32);
}

static float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static long checked, wrong;

static void check(float a, float b, float c) {
    const float want = fmaf(a, b, c), got = hyb_fmaf(a, b, c);
    uint32_t w, g;
    memcpy(&w, &want, 4), memcpy(&g, &got, 4);
    checked++;
    if (w != g && !(want != want && got != got)) {
        if (wrong++ < 10) printf("fma(%a, %a, %a): libm %a, hyb %a\n", a, b, c, want, got);
    }
}

int main(void) {
    /* random finite operands, exponents near each other so the terms interact */
    for (long i = 0; i < 1000000; i++) {
        const uint32_t ea = 100 + next() % 56, eb = 100 + next() % 56, ec = 60 + next() % 130;
        const float a = bits_to_float((next() & 0x807fffffu) | ea << 23);
        const float b = bits_to_float((next() & 0x807fffffu) | eb << 23);
        check(a, b, bits_to_float((next() & 0x807fffffu) | ec << 23));
        check(a, b, -(a * b)); /* cancellation */
    }
    /* (1 + u 2^-12)(1 + v 2^-12) has bits down to 2^-24: often exactly halfway between floats;
     * a tiny c then decides the rounding, which double-then-float rounding loses */
    for (uint32_t u = 1; u < 400; u++)
        for (uint32_t v = 1; v < 400; v += 3)
            for (int k = 26; k < 150; k += 7) {
                const float a = 1.0f + (float)u / 4096.0f, b = 1.0f + (float)v / 4096.0f;
                const float t = ldexpf(1.0f, -k);
                check(a, b, t), check(a, b, -t), check(-a, b, t), check(a * 0x1p-120f, b, t);
            }
    printf("%ld %ld\n", checked, wrong);
    return wrong != 0;
}
