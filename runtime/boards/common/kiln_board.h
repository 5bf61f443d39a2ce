/* kiln board support: what a test harness may call on every board.
 *
 * The boards run bare metal under QEMU. Output and exit go through semihosting, so a harness
 * prints with kiln_board_write() and returns its exit status from main(); QEMU exits with it.
 */
#ifndef KILN_BOARD_H
#define KILN_BOARD_H

#include <stddef.h>
#include <stdint.h>

/* Writes a NUL-terminated string to the host's standard output. */
void kiln_board_write(const char *text);

/* Ends the emulation; QEMU exits with `status`. */
void kiln_board_exit(int status) __attribute__((noreturn));

/* Empty markers around the code whose instructions are counted: the instruction-counting QEMU
 * plugin is given their addresses and counts what executes between the two. */
void kiln_count_begin(void);
void kiln_count_end(void);

/* Prepares stack measurement before the code under test runs (bare metal: done at start-up). */
void kiln_stack_paint(void);

/* Deepest stack use so far, in bytes: the startup code fills the free stack with a pattern and
 * this finds the lowest word that was overwritten. */
size_t kiln_stack_peak(void);

/* Called by the architecture's reset code, on the final stack, with interrupts off. */
void kiln_board_start(void) __attribute__((noreturn));

/* The architecture's semihosting trap: operation `op` with parameter block `arg`. */
uintptr_t kiln_semihost(uintptr_t op, const void *arg);

#endif /* KILN_BOARD_H */
