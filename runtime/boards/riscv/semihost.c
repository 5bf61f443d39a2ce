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

static void put_hex(char *out, uintptr_t v) {
    static const char digits[] = "0123456789abcdef";
    for (int i = (int)sizeof v * 2 - 1; i >= 0; i--) {
        out[i] = digits[v & 15u];
        v >>= 4;
    }
}

/* The trap handler's report: "kiln: trap cause=... pc=... value=...", then exit status 99. */
void kiln_riscv_trap(uintptr_t cause, uintptr_t pc, uintptr_t value) __attribute__((noreturn));
void kiln_riscv_trap(uintptr_t cause, uintptr_t pc, uintptr_t value) {
    enum { W = sizeof(uintptr_t) * 2 };
    char line[64 + 3 * W];
    const char *parts[3] = {"kiln: trap cause=", " pc=", " value="};
    uintptr_t values[3] = {cause, pc, value};
    unsigned k = 0;
    for (int i = 0; i < 3; i++) {
        for (const char *p = parts[i]; *p; p++) {
            line[k++] = *p;
        }
        put_hex(line + k, values[i]);
        k += W;
    }
    line[k++] = '\n';
    line[k] = 0;
    kiln_board_write(line);
    kiln_board_exit(99);
}
