/* Test firmware for QEMU's mps2-an386 board (a Cortex-M4F): runs a generated model named `model`
 * on the images of the generated fw_images.c and reports over Arm semihosting.
 *
 * Bare metal, no libc: its own vector table, reset handler and semihosting calls
 * (bench/mps2_an386.ld places them). Two passes over the images: a timed one (APB timer 0 of the
 * board; under `qemu-system-arm -icount shift=0` virtual time advances 1 ns per instruction, so
 * ticks count instructions), then one that prints each class and its logits. Output, one line
 * each, numbers as 8 hex digits (float logits as their bit patterns):
 *     image CLASS LOGIT0 ... LOGIT(K-1)
 *     ticks TICKS      (timer ticks of the timed pass)
 *     stack BYTES      (stack high-water mark of the whole run: the stack is painted at reset)
 *     done
 * then exits through SYS_EXIT: status 0, or 1 if a class was negative or the passes differed. */
#include <stddef.h>
#include <stdint.h>

#include "model.h"

extern const uint32_t fw_count;
extern const float fw_images[];

/* from the linker script */
extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_bottom[], __stack_top[];

#define SYS_WRITE0 0x04u
#define SYS_EXIT 0x18u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUN_TIME_ERROR 0x20023u
#define STACK_PAINT 0xdeadbeefu

/* CMSDK APB timer 0 of the AN386: a 32-bit down counter at the 25 MHz peripheral clock. */
#define TIMER0 ((volatile uint32_t *)0x40000000u) /* CTRL, VALUE, RELOAD, INTSTATUS */
#define SCB_CPACR (*(volatile uint32_t *)0xe000ed88u)

/* GCC may call memcpy and memset even from freestanding code (a copy or fill loop of the model
 * becomes a call), and there is no libc here: byte loops (this file is built without the loop
 * patterns that would turn them back into calls). Unused, --gc-sections drops them. */
void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

static uint32_t semihost(uint32_t op, uintptr_t arg) {
    register uint32_t r0 __asm__("r0") = op;
    register uintptr_t r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void put(const char *s) { semihost(SYS_WRITE0, (uintptr_t)s); }

static __attribute__((noreturn)) void quit(int failed) {
    semihost(SYS_EXIT, failed ? ADP_STOPPED_RUN_TIME_ERROR : ADP_STOPPED_APPLICATION_EXIT);
    for (;;) {
    }
}

/* Eight hex digits and a separator: the same instructions for every value. */
static char *hex(char *p, uint32_t v, char end) {
    for (int shift = 28; shift >= 0; shift -= 4) *p++ = "0123456789abcdef"[(v >> shift) & 15u];
    *p++ = end;
    return p;
}

static void put_word(const char *name, uint32_t v) {
    char line[24], *p = line;
    while (*name) *p++ = *name++;
    *p++ = ' ';
    p = hex(p, v, '\n');
    *p = 0;
    put(line);
}

static int run(void) {
    static float logits[MODEL_NUM_CLASSES];
    static char line[8 + 9 * (MODEL_NUM_CLASSES + 1)];
    uint32_t sum = 0;
    TIMER0[0] = 0;
    TIMER0[2] = 0xffffffffu;
    TIMER0[1] = 0xffffffffu;
    TIMER0[0] = 1u; /* enable */
    const uint32_t t0 = TIMER0[1];
    for (uint32_t i = 0; i < fw_count; i++)
        sum += (uint32_t)model_predict(fw_images + (size_t)i * MODEL_INPUT_SIZE, logits);
    const uint32_t ticks = t0 - TIMER0[1];
    int failed = 0;
    for (uint32_t i = 0; i < fw_count; i++) {
        const int cls = model_predict(fw_images + (size_t)i * MODEL_INPUT_SIZE, logits);
        char *p = line;
        failed |= cls < 0;
        sum -= (uint32_t)cls;
        for (const char *s = "image "; *s;) *p++ = *s++;
        p = hex(p, (uint32_t)cls, ' ');
        for (size_t j = 0; j < MODEL_NUM_CLASSES; j++) {
            union {
                float f;
                uint32_t u;
            } bits = {logits[j]};
            p = hex(p, bits.u, j + 1 < MODEL_NUM_CLASSES ? ' ' : '\n');
        }
        *p = 0;
        put(line);
    }
    put_word("ticks", ticks);
    const uint32_t *s = __stack_bottom;
    while (s < __stack_top && *s == STACK_PAINT) s++;
    put_word("stack", (uint32_t)((uintptr_t)__stack_top - (uintptr_t)s));
    put("done\n");
    return failed || sum != 0;
}

void reset_handler(void);
static void fault_handler(void);

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, reset_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, fault_handler, 0, 0, 0, 0, fault_handler, fault_handler, 0, fault_handler,
    fault_handler,
};

static void fault_handler(void) {
    put("fault\n");
    quit(1);
}

/* No float instruction may run before the FPU is enabled: run() is a separate function. */
__attribute__((noreturn)) void reset_handler(void) {
    SCB_CPACR |= 0xfu << 20; /* CP10, CP11: full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (uint32_t *d = __data_start, *s = __data_load; d < __data_end;) *d++ = *s++;
    for (uint32_t *d = __bss_start; d < __bss_end;) *d++ = 0;
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *d = __stack_bottom; d < sp - 16;) *d++ = STACK_PAINT;
    quit(run());
}
