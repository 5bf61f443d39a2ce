//! kiln's embedded targets: takes a graph all the way to a program running on an emulated
//! board. [`run_on_board`] emits C, writes a harness that embeds the inputs, cross-compiles with
//! the Debian toolchain against the board support in `runtime/boards/`, checks that the program
//! fits the board, runs it under QEMU with a time limit, and returns the outputs with the flash,
//! RAM and executed-instruction figures.

pub mod board;
mod build;
pub mod compare;
pub mod elf;
pub mod error;
pub mod harness;
mod qemu;

use std::path::PathBuf;
use std::time::Duration;

use kiln_backends::c::{emit_c, ArenaMode, COptions};
use kiln_backends::cranelift::{emit_object, CraneliftOptions};
use kiln_ir::{Graph, Tensor};

pub use board::{find_board, find_target, Arch, Board, Target, BOARDS, TARGETS};
pub use elf::SectionSizes;
pub use error::TargetError;

/// Which backend produces the model's code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CodeBackend {
    /// The C backend, compiled by the target's cross gcc.
    #[default]
    C,
    /// The Cranelift backend's object file (targets with a Cranelift ISA only).
    Cranelift {
        simd: bool,
        fma: bool,
        explicit_padding: bool,
    },
}

/// How to build and run.
#[derive(Clone, Debug)]
pub struct BoardOptions {
    pub backend: CodeBackend,
    /// Extra compiler flags, after kiln's own (`-O2`, CPU flags).
    pub cflags: Vec<String>,
    /// Time limit for the emulator.
    pub timeout: Duration,
    /// Keep the build directory here instead of a temporary one.
    pub keep_dir: Option<PathBuf>,
}

impl Default for BoardOptions {
    fn default() -> Self {
        BoardOptions {
            backend: CodeBackend::C,
            cflags: Vec::new(),
            timeout: Duration::from_secs(300),
            keep_dir: None,
        }
    }
}

/// What one run on a board produced and measured.
#[derive(Clone, Debug)]
pub struct BoardRun {
    pub target: &'static Target,
    pub board: &'static Board,
    pub outputs: Vec<Tensor>,
    pub sizes: SectionSizes,
    /// Deepest stack use during the run.
    pub stack_bytes: u64,
    /// The arena kiln planned (inside `sizes.bss`).
    pub arena_bytes: u64,
    /// Instructions executed by one inference (`PREFIX_run`, from call to return).
    pub instructions: u64,
    /// A profiling build (`COptions::profile_layers`, C backend): the count from the start of
    /// the inference at each layer marker (one before the first layer, one after each layer);
    /// empty otherwise.
    pub layer_marks: Vec<u64>,
    /// The linked program's sized symbols (functions and data, e.g. each layer's function and
    /// weight arrays).
    pub symbols: Vec<elf::SymbolSize>,
}

impl BoardRun {
    pub fn flash_bytes(&self) -> u64 {
        self.sizes.flash_bytes()
    }

    /// Static data plus the measured stack.
    pub fn ram_bytes(&self) -> u64 {
        self.sizes.static_ram_bytes() + self.stack_bytes
    }
}

/// Resolves `--target` and `--board` names.
pub fn resolve(
    target: &str,
    board: Option<&str>,
) -> Result<(&'static Target, &'static Board), TargetError> {
    let t = find_target(target).ok_or_else(|| TargetError::UnknownTarget {
        name: target.to_string(),
        known: TARGETS
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let board_name = board.unwrap_or(t.boards[0]);
    let b = t
        .boards
        .contains(&board_name)
        .then(|| find_board(board_name))
        .flatten()
        .ok_or_else(|| TargetError::UnknownBoard {
            target: t.name.to_string(),
            board: board_name.to_string(),
            known: t.boards.join(", "),
        })?;
    Ok((t, b))
}

/// Compiles `graph` with `c`, runs one inference on `inputs` on the board, and measures it.
pub fn run_on_board(
    graph: &Graph,
    inputs: &[Tensor],
    c: &COptions,
    target: &'static Target,
    board: &'static Board,
    options: &BoardOptions,
) -> Result<BoardRun, TargetError> {
    if graph.outputs().len() > 10 {
        return Err(TargetError::Harness(
            "the board harness prints at most 10 outputs".into(),
        ));
    }
    let (files, model, arena_bytes) = match options.backend {
        CodeBackend::C => {
            let c = &COptions {
                isa: c.isa.or(Some(target.isa)),
                ..c.clone()
            };
            let program = emit_c(graph, c)?;
            let files = program
                .files
                .into_iter()
                .map(|(n, t)| (n, t.into_bytes()))
                .collect::<Vec<_>>();
            (files, format!("{}.c", c.name), program.plan.arena_bytes)
        }
        CodeBackend::Cranelift {
            simd,
            fma,
            explicit_padding,
        } => {
            let Some(isa) = target.cranelift else {
                return Err(TargetError::NoCranelift {
                    target: target.name.into(),
                });
            };
            let opts = CraneliftOptions {
                name: c.name.clone(),
                target: isa,
                arena: c.arena,
                simd,
                fma,
                explicit_padding,
                no_libm: c.no_libm,
                schedule: CraneliftOptions::native_schedule(c.schedule),
                alignment: c.alignment,
                ..CraneliftOptions::default()
            };
            let program = emit_object(graph, &opts)?;
            (
                program.files,
                format!("{}.o", c.name),
                program.plan.arena_bytes,
            )
        }
    };
    let mut harness = harness::harness_source(graph, &c.name, inputs, c.arena == ArenaMode::Static);
    if c.profile_layers {
        harness.push_str(harness::LAYER_MARK_SOURCE);
    }
    // Absolute: the compilers run in the build directory, so a relative path would be
    // resolved twice (`--keep-dir out` linked `out/out/prog.elf`).
    let dir = match &options.keep_dir {
        Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
        None => build::unique_dir(),
    };
    let result = (|| {
        let elf = build::build(&dir, &files, &harness, &model, target, board, options)?;
        let bytes = std::fs::read(&elf)
            .map_err(|e| TargetError::Io(format!("reading {}: {e}", elf.display())))?;
        let mut facts = elf::read_elf(&bytes, target.arch == Arch::CortexM)?;
        if board.user_mode {
            let object = dir.join(model.replace(".c", ".o"));
            let object = std::fs::read(&object)
                .map_err(|e| TargetError::Io(format!("reading {}: {e}", object.display())))?;
            facts.sizes = elf::object_sizes(&object)?;
            if c.arena == ArenaMode::Caller {
                // The caller's arena is the model's RAM too.
                facts.sizes.bss += arena_bytes as u64;
            }
        }
        let ran = qemu::run(&dir, &elf, &facts, target, board, options.timeout)?;
        let parsed = harness::parse_output(&ran.stdout, graph.outputs().len())?;
        let outputs = harness::output_tensors(graph, &parsed.outputs)?;
        Ok(BoardRun {
            target,
            board,
            outputs,
            sizes: facts.sizes,
            stack_bytes: parsed.stack_peak,
            arena_bytes: arena_bytes as u64,
            instructions: ran.instructions,
            layer_marks: ran.marks,
            symbols: facts.symbols,
        })
    })();
    if options.keep_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
