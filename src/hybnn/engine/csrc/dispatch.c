/* Runtime CPU dispatch: the best ISA this CPU supports, or the one forced by set_isa. */
#include "engine.h"

/* Read by every kernel call, possibly from threads running with the GIL released, while
 * set_isa may write it: atomic (relaxed is enough, any ISA gives the same results). */
static int g_isa = -1;

int hyb_isa_supported(int isa) {
    switch (isa) {
    case HYB_ISA_SCALAR:
        return 1;
#if HYB_X86
    case HYB_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    case HYB_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif
#if HYB_ARM64
    case HYB_ISA_NEON:
        return 1;
#endif
    default:
        return 0;
    }
}

int hyb_detect_isa(void) {
    for (int isa = HYB_ISA_COUNT - 1; isa > 0; isa--)
        if (hyb_isa_supported(isa)) return isa;
    return HYB_ISA_SCALAR;
}

int hyb_get_isa(void) {
    int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
    if (isa < 0) { /* first use: keep what a concurrent set_isa stored, if anything */
        int expected = -1;
        isa = hyb_detect_isa();
        if (!__atomic_compare_exchange_n(&g_isa, &expected, isa, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            isa = expected;
    }
    return isa;
}

int hyb_set_isa(int isa) {
    if (isa < 0 || isa >= HYB_ISA_COUNT || !hyb_isa_supported(isa)) return -1;
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    return 0;
}

const char *hyb_isa_name(int isa) {
    static const char *names[HYB_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};
    return (isa >= 0 && isa < HYB_ISA_COUNT) ? names[isa] : "?";
}

const hyb_kernels *hyb_active(void) {
#if HYB_X86
    switch (hyb_get_isa()) {
    case HYB_ISA_AVX512:
        return &hyb_kernels_avx512;
    case HYB_ISA_AVX2:
        return &hyb_kernels_avx2;
    default:
        break;
    }
#endif
#if HYB_ARM64
    if (hyb_get_isa() == HYB_ISA_NEON) return &hyb_kernels_neon;
#endif
    return &hyb_kernels_scalar;
}
