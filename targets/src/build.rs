//! Cross-compiling a generated program and its harness for a board, against the board support
//! in `runtime/boards/` (embedded in the kiln binary, so an installed kiln needs no source tree).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::board::{Arch, Board, Region, Target};
use crate::elf::{read_elf, SectionSizes};
use crate::error::TargetError;

const BOARD_HEADER: &str = include_str!("../../runtime/boards/common/kiln_board.h");
const BOARD_C: &str = include_str!("../../runtime/boards/common/kiln_board.c");
const SECTIONS_LD: &str = include_str!("../../runtime/boards/common/sections.ld");
const CORTEX_M_STARTUP: &str = include_str!("../../runtime/boards/cortex-m/startup.c");
const RISCV_STARTUP: &str = include_str!("../../runtime/boards/riscv/startup.S");
const RISCV_SEMIHOST: &str = include_str!("../../runtime/boards/riscv/semihost.c");
const LINUX_BOARD_C: &str = include_str!("../../runtime/boards/linux/kiln_board.c");

/// Flags for every file: the model's code is built as a firmware team would, at -O2 with
/// per-function sections so that the linker drops what is unused.
const COMMON_FLAGS: &[&str] = &["-std=c99", "-O2", "-ffunction-sections", "-fdata-sections"];
/// Bare-metal boards: picolibc's libc and libm, kiln's own start-up and linker script.
const BARE_METAL_FLAGS: &[&str] = &[
    "--specs=picolibc.specs",
    "-nostartfiles",
    "-Wl,--gc-sections",
];
/// Linux user mode: a static executable against the cross glibc.
const USER_MODE_FLAGS: &[&str] = &["-static", "-Wl,--gc-sections"];

pub fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kiln-board-{}-{n}", std::process::id()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), TargetError> {
    std::fs::write(dir.join(name), text)
        .map_err(|e| TargetError::Io(format!("writing {}: {e}", dir.join(name).display())))
}

/// Whether `tool` can be run (it is on PATH).
pub fn have_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The linker script: the board's MEMORY, then the shared section layout.
fn linker_script(board: &Board, flash: Region, ram: Region) -> String {
    let mut s = format!("/* {}: {} */\nMEMORY\n{{\n", board.name, board.description);
    let line = |s: &mut String, name: &str, attrs: &str, r: Region| {
        let _ = writeln!(
            s,
            "    {name} ({attrs}) : ORIGIN = {:#x}, LENGTH = {:#x}",
            r.origin, r.length
        );
    };
    if let Some(boot) = board.boot {
        line(&mut s, "BOOT", "rx", boot);
    }
    line(&mut s, "FLASH", "rx", flash);
    line(&mut s, "RAM", "rwx", ram);
    s.push_str("}\n");
    if board.boot.is_none() {
        s.push_str("REGION_ALIAS(\"BOOT\", FLASH);\n");
    }
    let _ = writeln!(s, "KILN_STACK_MIN = {};", board.stack_min);
    s.push_str(SECTIONS_LD);
    s
}

/// Writes the sources and links `prog.elf`; a program too large for the board is an error that
/// says how much it needs. `files` are the backend's output (C sources or an object, and the
/// header); `model` names the one to compile or link (`PREFIX.c` or `PREFIX.o`).
pub fn build(
    dir: &Path,
    files: &[(String, Vec<u8>)],
    harness: &str,
    model: &str,
    target: &Target,
    board: &Board,
    options: &crate::BoardOptions,
) -> Result<PathBuf, TargetError> {
    let compiler = target.arch.compiler();
    if !have_tool(compiler) {
        return Err(TargetError::MissingTool {
            tool: compiler.into(),
            packages: target.arch.packages().into(),
        });
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| TargetError::Io(format!("creating {}: {e}", dir.display())))?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| TargetError::Io(format!("writing {}: {e}", dir.join(name).display())))?;
    }
    write(dir, "harness.c", harness)?;
    write(dir, "kiln_board.h", BOARD_HEADER)?;
    write(
        dir,
        "kiln_board.c",
        if board.user_mode {
            LINUX_BOARD_C
        } else {
            BOARD_C
        },
    )?;
    let mut sources = vec![model.to_string(), "harness.c".into(), "kiln_board.c".into()];
    // Other C files of the generated code (a Cranelift object's `PREFIX_math.c`).
    sources.extend(
        files
            .iter()
            .map(|(name, _)| name)
            .filter(|name| name.ends_with(".c") && name.as_str() != model)
            .cloned(),
    );
    if board.user_mode {
        // Compile the model on its own first: its object's sections are what gets reported.
        if let Some(stem) = model.strip_suffix(".c") {
            let object = format!("{stem}.o");
            let out = Command::new(compiler)
                .current_dir(dir)
                .args(target.cpu_flags)
                .args(COMMON_FLAGS)
                .args(&options.cflags)
                .args(["-I", ".", "-c", model, "-o", &object])
                .output()
                .map_err(|e| TargetError::Io(format!("running {compiler}: {e}")))?;
            if !out.status.success() {
                return Err(TargetError::Build {
                    target: target.name.into(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            sources[0] = object;
        }
        let elf = dir.join("prog.elf");
        let out = link(dir, &sources, None, &elf, target, options)?;
        if !out.status.success() {
            return Err(TargetError::Build {
                target: target.name.into(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        return Ok(elf);
    }
    match target.arch {
        Arch::CortexM => {
            write(dir, "startup.c", CORTEX_M_STARTUP)?;
            sources.push("startup.c".into());
        }
        Arch::Aarch64Linux | Arch::X86_64Linux | Arch::Riscv64Linux => {}
        Arch::Riscv32 | Arch::Riscv64 => {
            write(dir, "startup.S", RISCV_STARTUP)?;
            write(dir, "semihost.c", RISCV_SEMIHOST)?;
            sources.extend(["startup.S".into(), "semihost.c".into()]);
        }
    }
    write(
        dir,
        "board.ld",
        &linker_script(board, board.flash, board.ram),
    )?;
    let elf = dir.join("prog.elf");
    let link = link(dir, &sources, Some("board.ld"), &elf, target, options)?;
    if link.status.success() {
        return Ok(elf);
    }
    let stderr = String::from_utf8_lossy(&link.stderr).into_owned();
    if stderr.contains("overflowed") || stderr.contains("KILN_STACK_MIN") {
        return Err(does_not_fit(dir, &sources, target, board, options));
    }
    Err(TargetError::Build {
        target: target.name.into(),
        stderr,
    })
}

/// Compiles and links; `script` is the bare-metal linker script (none in user mode).
fn link(
    dir: &Path,
    sources: &[String],
    script: Option<&str>,
    elf: &Path,
    target: &Target,
    options: &crate::BoardOptions,
) -> Result<std::process::Output, TargetError> {
    let compiler = target.arch.compiler();
    let mut cmd = Command::new(compiler);
    cmd.current_dir(dir)
        .args(target.cpu_flags)
        .args(COMMON_FLAGS)
        .args(["-I", "."]);
    match script {
        Some(script) => {
            cmd.args(BARE_METAL_FLAGS).args(["-L", ".", "-T", script]);
        }
        None => {
            cmd.args(USER_MODE_FLAGS);
        }
    }
    if matches!(target.arch, Arch::Riscv32 | Arch::Riscv64) {
        // No linker relaxation: the start-up code does not set up the global pointer.
        cmd.arg("-mno-relax");
    }
    cmd.args(&options.cflags)
        .args(sources)
        .arg("-lm")
        .arg("-o")
        .arg(elf);
    cmd.output()
        .map_err(|e| TargetError::Io(format!("running {compiler}: {e}")))
}

/// Relinks with regions large enough for anything, to measure what the program needs, and
/// explains the shortfall.
fn does_not_fit(
    dir: &Path,
    sources: &[String],
    target: &Target,
    board: &Board,
    options: &crate::BoardOptions,
) -> TargetError {
    const ROOMY: u64 = 256 << 20;
    let flash = Region {
        origin: board.flash.origin,
        length: ROOMY,
    };
    let ram = Region {
        origin: board.flash.origin + ROOMY,
        length: ROOMY,
    };
    let measured = write(dir, "measure.ld", &linker_script(board, flash, ram)).and_then(|()| {
        let elf = dir.join("measure.elf");
        let out = link(dir, sources, Some("measure.ld"), &elf, target, options)?;
        if !out.status.success() {
            return Err(TargetError::Build {
                target: target.name.into(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let bytes = std::fs::read(&elf)
            .map_err(|e| TargetError::Io(format!("reading {}: {e}", elf.display())))?;
        Ok(read_elf(&bytes, target.arch == Arch::CortexM)?.sizes)
    });
    let detail = match measured {
        Ok(sizes) => fit_detail(&sizes, board),
        Err(e) => format!("the linker reports an overflow, and measuring it failed: {e}"),
    };
    TargetError::DoesNotFit {
        board: board.name.into(),
        detail,
    }
}

fn fit_detail(sizes: &SectionSizes, board: &Board) -> String {
    let flash_need = sizes.flash_bytes() + sizes.testdata;
    let ram_need = sizes.static_ram_bytes() + board.stack_min;
    let mut parts = Vec::new();
    if flash_need > board.flash.length {
        parts.push(format!(
            "it needs {} of flash (code {}, constants {}, data image {}, test inputs {}) and the board has {}",
            human(flash_need),
            human(sizes.text),
            human(sizes.rodata),
            human(sizes.data),
            human(sizes.testdata),
            human(board.flash.length)
        ));
    }
    if ram_need > board.ram.length {
        parts.push(format!(
            "it needs {} of RAM (data {}, bss with the arena {}, stack reserve {}) and the board has {}",
            human(ram_need),
            human(sizes.data),
            human(sizes.bss),
            human(board.stack_min),
            human(board.ram.length)
        ));
    }
    if parts.is_empty() {
        parts.push(format!(
            "the linker reports an overflow (flash {} of {}, RAM {} of {})",
            human(flash_need),
            human(board.flash.length),
            human(ram_need),
            human(board.ram.length)
        ));
    }
    parts.join("; ")
}

/// `123456 bytes (120.6 KiB)`.
fn human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({:.1} KiB)", bytes as f64 / 1024.0)
    }
}
