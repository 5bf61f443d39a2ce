#!/usr/bin/env bash
# Installs the toolchains and emulators the tests and `kiln verify` use, from Debian's packages:
# clang; arm-none-eabi-gcc with newlib and picolibc (Cortex-M); riscv64-unknown-elf-gcc with
# picolibc (RV32/RV64 bare metal); QEMU system emulators for the Arm and RISC-V boards and QEMU
# user mode with aarch64/riscv64 Linux cross compilers (to link and run the Cranelift backend's
# objects); CMake and GNU Make (to build the generated build-system fragments). Idempotent and fast
# when everything is present.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang)
command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
[ -d /usr/lib/arm-none-eabi/newlib ] || [ -d /usr/lib/arm-none-eabi/lib ] || need+=(libnewlib-arm-none-eabi)
[ -f /usr/lib/picolibc/arm-none-eabi/picolibc.specs ] || need+=(picolibc-arm-none-eabi)
command -v riscv64-unknown-elf-gcc >/dev/null || need+=(gcc-riscv64-unknown-elf)
[ -f /usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs ] || need+=(picolibc-riscv64-unknown-elf)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
command -v qemu-system-riscv32 >/dev/null || need+=(qemu-system-misc)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v riscv64-linux-gnu-gcc >/dev/null || need+=(gcc-riscv64-linux-gnu libc6-dev-riscv64-cross)
command -v cmake >/dev/null || need+=(cmake)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
