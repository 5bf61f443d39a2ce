/* kiln board support for Linux user mode (static executables under qemu-aarch64 and the like).
 *
 * Implements kiln_board.h with write(2) and _exit(2). kiln_stack_paint(), called by the harness
 * just before the inference, paints a fixed span of stack below its caller's frame;
 * kiln_stack_peak() reports the deepest word overwritten since: what the inference used.
 */
#define _DEFAULT_SOURCE
#include <string.h>
#include <unistd.h>

#include "kiln_board.h"

#define STACK_PAINT 0x6b696c6eu /* "kiln" */
#define STACK_SPAN_WORDS (256u * 1024u / 4u)
/* This function's own frame, left unpainted. */
#define STACK_PAINT_MARGIN_WORDS 16u

static uint32_t *paint_low;
static uint32_t *paint_high;
/* Where the caller's stack use starts (this function's frame, about the caller's sp). */
static uint32_t *stack_base;

void kiln_board_write(const char *text) {
    size_t n = strlen(text);
    while (n > 0) {
        ssize_t done = write(1, text, n);
        if (done <= 0) {
            return;
        }
        text += done;
        n -= (size_t)done;
    }
}

void kiln_board_exit(int status) {
    _exit(status);
}

__attribute__((noinline)) void kiln_count_begin(void) {
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void kiln_count_end(void) {
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void kiln_stack_paint(void) {
    volatile uint32_t marker = 0;
    uint32_t *frame = (uint32_t *)(uintptr_t)&marker;
    stack_base = frame;
    paint_high = frame - STACK_PAINT_MARGIN_WORDS;
    paint_low = paint_high - STACK_SPAN_WORDS;
    for (volatile uint32_t *p = paint_low; p < paint_high; p++) {
        *p = STACK_PAINT;
    }
}

size_t kiln_stack_peak(void) {
    const volatile uint32_t *p = paint_low;
    while (p < paint_high && *p == STACK_PAINT) {
        p++;
    }
    if (p == paint_high) {
        return 0;
    }
    return (size_t)((const char *)stack_base - (const char *)p);
}

/* Unused in user mode; defined so that the header's contract holds everywhere. */
uintptr_t kiln_semihost(uintptr_t op, const void *arg) {
    (void)op;
    (void)arg;
    return 0;
}

void kiln_board_start(void) {
    _exit(1);
}
