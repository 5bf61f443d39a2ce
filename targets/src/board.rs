//! The targets users name on the command line (`--target cortex-m4`) and the QEMU boards that
//! emulate them. Each target knows its compiler, CPU flags and default board; each board knows
//! its QEMU machine and the memory a program may use. Memory maps come from QEMU's own
//! (`info mtree -f`, hw/arm/mps2*.c, hw/riscv/*.c), as recorded in `../shared/toolchain-facts.md`.

use kiln_backends::c::Isa;

/// The instruction-set family, which picks the start-up code and the toolchain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    CortexM,
    Riscv32,
    Riscv64,
    /// AArch64 Linux, run under QEMU user mode (no bare-metal board).
    Aarch64Linux,
    /// x86_64 Linux, run under QEMU user mode (for deterministic instruction counts).
    X86_64Linux,
    /// RV64GC Linux, run under QEMU user mode.
    Riscv64Linux,
}

impl Arch {
    /// The bare-metal cross compiler, from Debian's packages.
    pub fn compiler(self) -> &'static str {
        match self {
            Arch::CortexM => "arm-none-eabi-gcc",
            Arch::Riscv32 | Arch::Riscv64 => "riscv64-unknown-elf-gcc",
            Arch::Aarch64Linux => "aarch64-linux-gnu-gcc",
            Arch::X86_64Linux => "gcc",
            Arch::Riscv64Linux => "riscv64-linux-gnu-gcc",
        }
    }

    /// The Debian packages that provide the compiler and its C library.
    pub fn packages(self) -> &'static str {
        match self {
            Arch::CortexM => "gcc-arm-none-eabi picolibc-arm-none-eabi",
            Arch::Riscv32 | Arch::Riscv64 => "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf",
            Arch::Aarch64Linux => "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
            Arch::X86_64Linux => "gcc libc6-dev",
            Arch::Riscv64Linux => "gcc-riscv64-linux-gnu libc6-dev-riscv64-cross",
        }
    }
}

/// A memory region: first address and size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub origin: u64,
    pub length: u64,
}

const fn region(origin: u64, length: u64) -> Region {
    Region { origin, length }
}

const K: u64 = 1024;
const M: u64 = 1024 * 1024;

/// An emulated board.
#[derive(Debug)]
pub struct Board {
    /// What users type after `--board`; also QEMU's `-M` machine name.
    pub name: &'static str,
    pub description: &'static str,
    /// The QEMU system emulator.
    pub qemu: &'static str,
    /// Extra QEMU options the board needs.
    pub qemu_args: &'static [&'static str],
    /// Where the CPU fetches its reset vector table, when that is not at the start of `flash`.
    pub boot: Option<Region>,
    /// Code and constant data (weights): read-only memory.
    pub flash: Region,
    /// Data, the arena and the stack.
    pub ram: Region,
    /// Stack reserved at link time; the harness reports what it really used.
    pub stack_min: u64,
    /// A Linux user-mode emulator (`qemu-aarch64`) rather than a system board: the program is
    /// a static Linux executable, and flash and RAM are the model's own sections.
    pub user_mode: bool,
}

impl Board {
    /// The Debian package that provides the board's emulator.
    pub fn qemu_package(&self) -> &'static str {
        match self.qemu {
            "qemu-system-arm" => "qemu-system-arm",
            _ if self.user_mode => "qemu-user",
            _ => "qemu-system-misc",
        }
    }
}

/// A compilation target: a CPU with its flags and the boards that emulate it.
#[derive(Debug)]
pub struct Target {
    /// What users type after `--target`.
    pub name: &'static str,
    pub description: &'static str,
    pub arch: Arch,
    /// Compiler flags that select the CPU, its FPU and ABI.
    pub cpu_flags: &'static [&'static str],
    /// Boards that run this target; the first is the default.
    pub boards: &'static [&'static str],
    /// The Cranelift backend's ISA for this target, if it has one (Cranelift has no 32-bit
    /// Arm or RISC-V backend).
    pub cranelift: Option<kiln_backends::cranelift::CraneliftTarget>,
    /// The instructions the C backend's int8 kernels use on this target (unless the caller
    /// chose one).
    pub isa: Isa,
}

pub const BOARDS: &[Board] = &[
    LINUX_USER,
    Board {
        name: "microbit",
        description: "BBC micro:bit (nRF51822, Cortex-M0): 256 KB flash, 16 KB RAM",
        qemu: "qemu-system-arm",
        qemu_args: &[],
        boot: None,
        flash: region(0x0000_0000, 256 * K),
        ram: region(0x2000_0000, 16 * K),
        stack_min: 1024,
        user_mode: false,
    },
    Board {
        name: "mps2-an385",
        description: "Arm MPS2 AN385 (Cortex-M3): 4 MB SSRAM1 as flash, 4 MB SSRAM2/3",
        qemu: "qemu-system-arm",
        qemu_args: &[],
        boot: None,
        flash: region(0x0000_0000, 4 * M),
        ram: region(0x2000_0000, 4 * M),
        stack_min: 4096,
        user_mode: false,
    },
    Board {
        name: "mps2-an386",
        description: "Arm MPS2 AN386 (Cortex-M4F): 4 MB SSRAM1 as flash, 4 MB SSRAM2/3",
        qemu: "qemu-system-arm",
        qemu_args: &[],
        boot: None,
        flash: region(0x0000_0000, 4 * M),
        ram: region(0x2000_0000, 4 * M),
        stack_min: 4096,
        user_mode: false,
    },
    Board {
        name: "mps2-an500",
        description: "Arm MPS2 AN500 (Cortex-M7): 4 MB SSRAM1 as flash, 4 MB SSRAM2/3",
        qemu: "qemu-system-arm",
        qemu_args: &[],
        boot: None,
        flash: region(0x0000_0000, 4 * M),
        ram: region(0x2000_0000, 4 * M),
        stack_min: 4096,
        user_mode: false,
    },
    Board {
        name: "mps2-an505",
        description: "Arm MPS2 AN505 (Cortex-M33, Secure): 4 MB SSRAM1 as flash, 4 MB SSRAM2/3",
        qemu: "qemu-system-arm",
        qemu_args: &[],
        boot: None,
        // The reset VTOR is 0x10000000: code linked at 0 locks up.
        flash: region(0x1000_0000, 4 * M),
        ram: region(0x3800_0000, 4 * M),
        stack_min: 4096,
        user_mode: false,
    },
    Board {
        name: "mps3-an547",
        description: "Arm MPS3 AN547 (Corstone-300, Cortex-M55): vectors in ITCM, 2 MB code SRAM as flash, 512 KB DTCM",
        qemu: "qemu-system-arm",
        qemu_args: &[],
        boot: Some(region(0x0000_0000, 512 * K)),
        flash: region(0x0100_0000, 2 * M),
        ram: region(0x2000_0000, 512 * K),
        stack_min: 4096,
        user_mode: false,
    },
    Board {
        name: "virt",
        description: "QEMU RISC-V virt: 4 MB of DRAM as flash, the next 4 MB as RAM",
        qemu: "",
        qemu_args: &["-bios", "none"],
        boot: None,
        flash: region(0x8000_0000, 4 * M),
        ram: region(0x8040_0000, 4 * M),
        stack_min: 4096,
        user_mode: false,
    },
    Board {
        name: "sifive_e",
        description: "SiFive HiFive1 (E31, RV32IMAC): 4 MB XIP flash, 16 KB DTIM RAM",
        qemu: "qemu-system-riscv32",
        qemu_args: &[],
        boot: None,
        flash: region(0x2040_0000, 4 * M),
        ram: region(0x8000_0000, 16 * K),
        stack_min: 1024,
        user_mode: false,
    },
];

const LINUX_USER: Board = Board {
    name: "linux-user",
    description: "QEMU user mode (static Linux executable); sizes are the model's own sections",
    // The emulator follows the target's architecture (see `qemu_binary`).
    qemu: "",
    qemu_args: &[],
    boot: None,
    flash: region(0, 1 << 30),
    ram: region(0, 1 << 30),
    stack_min: 0,
    user_mode: true,
};

pub const TARGETS: &[Target] = &[
    Target {
        name: "cortex-m0",
        description: "Arm Cortex-M0 (ARMv6-M, no FPU)",
        arch: Arch::CortexM,
        cpu_flags: &["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"],
        boards: &["microbit"],
        isa: Isa::Portable,
        cranelift: None,
    },
    Target {
        name: "cortex-m3",
        description: "Arm Cortex-M3 (ARMv7-M, no FPU)",
        arch: Arch::CortexM,
        cpu_flags: &["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
        boards: &["mps2-an385"],
        isa: Isa::Portable,
        cranelift: None,
    },
    Target {
        name: "cortex-m4",
        description: "Arm Cortex-M4F (ARMv7E-M, single-precision FPU, hard-float ABI)",
        arch: Arch::CortexM,
        cpu_flags: &[
            "-mcpu=cortex-m4",
            "-mthumb",
            "-mfpu=fpv4-sp-d16",
            "-mfloat-abi=hard",
        ],
        boards: &["mps2-an386"],
        isa: Isa::ArmDsp,
        cranelift: None,
    },
    Target {
        name: "cortex-m7",
        description: "Arm Cortex-M7 (ARMv7E-M, double-precision FPU, hard-float ABI)",
        arch: Arch::CortexM,
        cpu_flags: &[
            "-mcpu=cortex-m7",
            "-mthumb",
            "-mfpu=fpv5-d16",
            "-mfloat-abi=hard",
        ],
        boards: &["mps2-an500"],
        isa: Isa::ArmDsp,
        cranelift: None,
    },
    Target {
        name: "cortex-m33",
        description: "Arm Cortex-M33 (ARMv8-M Mainline, single-precision FPU, hard-float ABI)",
        arch: Arch::CortexM,
        cpu_flags: &[
            "-mcpu=cortex-m33",
            "-mthumb",
            "-mfpu=fpv5-sp-d16",
            "-mfloat-abi=hard",
        ],
        boards: &["mps2-an505"],
        isa: Isa::ArmDsp,
        cranelift: None,
    },
    Target {
        name: "cortex-m55",
        description: "Arm Cortex-M55 (ARMv8.1-M, FPU and MVE, hard-float ABI)",
        arch: Arch::CortexM,
        cpu_flags: &["-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"],
        boards: &["mps3-an547"],
        isa: Isa::ArmMve,
        cranelift: None,
    },
    Target {
        name: "rv32imac",
        description: "RISC-V RV32IMAC (no FPU, ilp32)",
        arch: Arch::Riscv32,
        // -misa-spec=2.2 keeps zicsr implied without changing the multilib GCC 12 picks.
        cpu_flags: &["-march=rv32imac", "-mabi=ilp32", "-misa-spec=2.2"],
        boards: &["virt", "sifive_e"],
        isa: Isa::Scalar,
        cranelift: None,
    },
    Target {
        name: "rv64gc",
        description: "RISC-V RV64GC (double-precision FPU, lp64d)",
        arch: Arch::Riscv64,
        cpu_flags: &["-march=rv64imafdc", "-mabi=lp64d", "-mcmodel=medany"],
        boards: &["virt"],
        isa: Isa::Scalar,
        cranelift: Some(kiln_backends::cranelift::CraneliftTarget::Riscv64),
    },
    Target {
        name: "aarch64",
        description: "AArch64 (Armv8-A) Linux, static executable under qemu-aarch64",
        arch: Arch::Aarch64Linux,
        cpu_flags: &[],
        boards: &["linux-user"],
        isa: Isa::Portable,
        cranelift: Some(kiln_backends::cranelift::CraneliftTarget::Aarch64),
    },
    Target {
        name: "riscv64",
        description: "RV64GC Linux, static executable under qemu-riscv64",
        arch: Arch::Riscv64Linux,
        cpu_flags: &[],
        boards: &["linux-user"],
        isa: Isa::Portable,
        cranelift: Some(kiln_backends::cranelift::CraneliftTarget::Riscv64),
    },
    Target {
        name: "x86_64",
        description: "x86_64 Linux, static executable under qemu-x86_64",
        arch: Arch::X86_64Linux,
        cpu_flags: &[],
        boards: &["linux-user"],
        isa: Isa::Portable,
        cranelift: Some(kiln_backends::cranelift::CraneliftTarget::X86_64),
    },
];

/// Looks a target up by name.
pub fn find_target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Looks a board up by name.
pub fn find_board(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}

/// The QEMU system emulator for `board` running `target` (the `virt` board exists for both
/// RISC-V widths).
pub fn qemu_binary(target: &Target, board: &Board) -> &'static str {
    match (board.qemu, target.arch) {
        ("", Arch::Aarch64Linux) => "qemu-aarch64",
        ("", Arch::X86_64Linux) => "qemu-x86_64",
        ("", Arch::Riscv64Linux) => "qemu-riscv64",
        ("", Arch::Riscv64) => "qemu-system-riscv64",
        ("", _) => "qemu-system-riscv32",
        (qemu, _) => qemu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_board_exists() {
        for t in TARGETS {
            assert!(!t.boards.is_empty(), "{}", t.name);
            for b in t.boards {
                assert!(
                    find_board(b).is_some(),
                    "{} names unknown board {b}",
                    t.name
                );
            }
        }
    }

    #[test]
    fn regions_do_not_overlap() {
        for b in BOARDS.iter().filter(|b| !b.user_mode) {
            let mut regions = vec![b.flash, b.ram];
            regions.extend(b.boot);
            for (i, x) in regions.iter().enumerate() {
                for y in &regions[i + 1..] {
                    let disjoint =
                        x.origin + x.length <= y.origin || y.origin + y.length <= x.origin;
                    assert!(disjoint, "{}: {x:?} overlaps {y:?}", b.name);
                }
            }
        }
    }
}
