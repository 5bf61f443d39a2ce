/* kiln board support for RISC-V (RV32 and RV64, machine mode).
 *
 * Sets the stack pointer, points mtvec at a handler that reports the trap (cause, pc, value)
 * over semihosting and exits with status 99, turns on the FPU when the target has one, then enters the C start-up.
 * The global pointer is not used: the boards link with --no-relax.
 */
    .section .text.kiln_reset, "ax", @progbits
    .globl kiln_reset
kiln_reset:
    .option push
    .option norelax
    la sp, __stack_top
    .option pop
    la t0, kiln_trap
    csrw mtvec, t0
#if defined(__riscv_flen)
    li t0, 0x2000          /* mstatus.FS = Initial */
    csrs mstatus, t0
    csrwi fcsr, 0
#endif
    call kiln_board_start
1:  j 1b

    .balign 4
kiln_trap:
    la sp, __stack_top
    csrr a0, mcause
    csrr a1, mepc
    csrr a2, mtval
    call kiln_riscv_trap
2:  j 2b
