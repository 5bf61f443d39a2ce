/* RISC-V semihosting: the trap is an ebreak between two marker instructions, uncompressed and
 * 16-byte aligned so that the debugger (here QEMU) can recognise the sequence. */
#include "kiln_board.h"

uintptr_t kiln_semihost(uintptr_t op, const void *arg) {
    register uintptr_t a0 __asm__("a0") = op;
    register const void *a1 __asm__("a1") = arg;
    __asm__ volatile(".option push\n\t"
                     ".option norvc\n\t"
                     ".balign 16\n\t"
                     "slli x0, x0, 0x1f\n\t"
                     "ebreak\n\t"
                     "srai x0, x0, 7\n\t"
                     ".option pop"
                     : "+r"(a0)
                     : "r"(a1)
                     : "memory");
    return a0;
}
