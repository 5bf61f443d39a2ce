/* kiln board support: the architecture-neutral part of start-up and the harness services. */
#include "kiln_board.h"

extern uint32_t __data_start[], __data_end[], __data_load[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[];
extern uint32_t __tls_base[], __tdata_end[], __tdata_load[];

/* picolibc's thread-pointer set-up; weak so that the boards also link without picolibc. */
void _set_tls(void *tls) __attribute__((weak));

int main(void);

#define SEMIHOST_SYS_WRITE0 0x04u
#define SEMIHOST_SYS_EXIT_EXTENDED 0x20u
#define SEMIHOST_APPLICATION_EXIT 0x20026u
#define STACK_PAINT 0x6b696c6eu /* "kiln" */
/* Words just below the current frame that painting leaves alone. */
#define STACK_PAINT_MARGIN_WORDS 64u

void kiln_board_write(const char *text) {
    kiln_semihost(SEMIHOST_SYS_WRITE0, text);
}

void kiln_board_exit(int status) {
    /* SYS_EXIT_EXTENDED takes a block of two pointer-sized words: reason and status. */
    uintptr_t block[2];
    block[0] = SEMIHOST_APPLICATION_EXIT;
    block[1] = (uintptr_t)(intptr_t)status;
    kiln_semihost(SEMIHOST_SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

/* noinline + an empty asm keep each marker a real function with its own address. */
__attribute__((noinline)) void kiln_count_begin(void) {
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void kiln_count_end(void) {
    __asm__ volatile("" ::: "memory");
}

void kiln_stack_paint(void) {
    /* The start-up code painted the whole free stack before main. */
}

size_t kiln_stack_peak(void) {
    const volatile uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == STACK_PAINT) {
        p++;
    }
    return (size_t)((const char *)__stack_top - (const char *)p);
}

/* Fills the unused stack below this function's frame with the paint pattern. */
__attribute__((noinline)) static void paint_stack(void) {
    volatile uint32_t *p = __stack_limit;
    const uint32_t *end = (const uint32_t *)__builtin_frame_address(0) - STACK_PAINT_MARGIN_WORDS;
    while (p < end) {
        *p++ = STACK_PAINT;
    }
}

/* Word copy; volatile so that no compiler turns it into a call to memcpy before the C library
 * may run. */
static void copy_words(volatile uint32_t *dst, const volatile uint32_t *src, const uint32_t *end) {
    while (dst < end) {
        *dst++ = *src++;
    }
}

void kiln_board_start(void) {
    copy_words(__data_start, __data_load, __data_end);
    copy_words(__tls_base, __tdata_load, __tdata_end);
    for (volatile uint32_t *dst = __bss_start; dst < __bss_end; dst++) {
        *dst = 0;
    }
    if (_set_tls) {
        _set_tls(__tls_base);
    }
    paint_stack();
    kiln_board_exit(main());
}
