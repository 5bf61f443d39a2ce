/* kiln board support for Cortex-M (ARMv6-M, ARMv7-M, ARMv8-M, ARMv8.1-M).
 *
 * The core loads the initial stack pointer and the reset handler from the vector table at its
 * reset VTOR (the BOOT region of the linker script). Every exception other than reset reports
 * a fault over semihosting and exits with status 99, so a crash ends the run at once instead
 * of hanging QEMU.
 */
#include "kiln_board.h"

#define SEMIHOST_EXIT_ON_FAULT 99
/* Coprocessor Access Control Register: CP10 and CP11 (the FPU and MVE) full access. */
#define CPACR (*(volatile uint32_t *)0xE000ED88u)
#define CPACR_CP10_CP11_FULL (0xFu << 20)

extern uint32_t __stack_top[];

void kiln_reset(void) __attribute__((noreturn, section(".text.kiln_reset")));
static void kiln_fault(void);

uintptr_t kiln_semihost(uintptr_t op, const void *arg) {
    register uintptr_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void kiln_fault(void) {
    kiln_board_write("kiln: fault exception\n");
    kiln_board_exit(SEMIHOST_EXIT_ON_FAULT);
}

/* 16 system exceptions; the boards' peripherals raise no interrupts here. */
__attribute__((section(".vectors"), used)) static void (*const kiln_vectors[16])(void) = {
    (void (*)(void))__stack_top,
    kiln_reset,
    kiln_fault, kiln_fault, kiln_fault, kiln_fault, kiln_fault, kiln_fault,
    kiln_fault, kiln_fault, kiln_fault, kiln_fault, kiln_fault, kiln_fault,
    kiln_fault, kiln_fault,
};

void kiln_reset(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* First, before any code the compiler may have vectorized or given FP instructions. */
    CPACR |= CPACR_CP10_CP11_FULL;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    kiln_board_start();
}
