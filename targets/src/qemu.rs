//! Running a board program under QEMU: with a time limit, semihosting output on stdout, and the
//! project's instruction-counting plugin (`runtime/boards/qemu/insncount.c`), built on first
//! use with the host C compiler and cached next to the system's temporary files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::board::{qemu_binary, Board, Target};
use crate::build::have_tool;
use crate::elf::ElfFacts;
use crate::error::TargetError;

const PLUGIN_SOURCE: &str = include_str!("../../runtime/boards/qemu/insncount.c");

pub struct QemuRun {
    pub stdout: String,
    pub instructions: u64,
    /// In a profiling build, the count (from the begin marker) at each layer marker.
    pub marks: Vec<u64>,
}

/// A stable hash of the plugin source, so a changed plugin gets rebuilt.
fn source_hash(text: &str) -> u64 {
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The plugin's path, building it if needed. Built to a private name and renamed into place, so
/// concurrent runs never load a half-written file.
fn plugin() -> Result<PathBuf, TargetError> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "kiln-insncount-{:016x}.so",
        source_hash(PLUGIN_SOURCE)
    ));
    if path.exists() {
        return Ok(path);
    }
    let unique = crate::build::unique_dir();
    std::fs::create_dir_all(&unique)
        .map_err(|e| TargetError::Io(format!("creating {}: {e}", unique.display())))?;
    let source = unique.join("insncount.c");
    std::fs::write(&source, PLUGIN_SOURCE)
        .map_err(|e| TargetError::Io(format!("writing {}: {e}", source.display())))?;
    let built = unique.join("insncount.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .args(["-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-o"])
        .arg(&built)
        .arg(&source)
        .output()
        .map_err(|e| TargetError::Io(format!("running the host C compiler '{cc}': {e}")))?;
    if !out.status.success() {
        return Err(TargetError::Build {
            target: "the QEMU plugin".into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    std::fs::rename(&built, &path)
        .map_err(|e| TargetError::Io(format!("installing {}: {e}", path.display())))?;
    let _ = std::fs::remove_dir_all(&unique);
    Ok(path)
}

/// Runs `elf` on `board` and returns what it printed and the instruction count between the
/// harness's markers.
pub fn run(
    dir: &Path,
    elf: &Path,
    facts: &ElfFacts,
    target: &Target,
    board: &Board,
    timeout: Duration,
) -> Result<QemuRun, TargetError> {
    let qemu = qemu_binary(target, board);
    if !have_tool(qemu) {
        return Err(TargetError::MissingTool {
            tool: qemu.into(),
            packages: board.qemu_package().into(),
        });
    }
    let (Some(begin), Some(end)) = (facts.count_begin, facts.count_end) else {
        return Err(TargetError::Harness(
            "the program has no instruction-count markers".into(),
        ));
    };
    let count_file = dir.join("insns.txt");
    let _ = std::fs::remove_file(&count_file);
    let mut plugin_arg = format!(
        "{},out={},begin={begin:#x},end={end:#x}",
        plugin()?.display(),
        count_file.display()
    );
    if let Some(mark) = facts.layer_mark {
        plugin_arg.push_str(&format!(",mark={mark:#x}"));
    }
    let mut cmd = Command::new(qemu);
    if board.user_mode {
        // A fixed, empty environment: the guest's start-up work depends on it.
        cmd.env_clear().arg("-plugin").arg(plugin_arg).arg(elf);
    } else {
        cmd.args(["-M", board.name])
            .args(board.qemu_args)
            .args(["-display", "none", "-monitor", "none", "-serial", "none"])
            // Semihosting output to stdout rather than QEMU's stderr.
            .args(["-chardev", "stdio,id=kiln0"])
            .args([
                "-semihosting-config",
                "enable=on,target=native,chardev=kiln0",
            ])
            .arg("-kernel")
            .arg(elf)
            .arg("-plugin")
            .arg(plugin_arg);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TargetError::Io(format!("starting {qemu}: {e}")))?;
    // Drain both pipes on threads so that a chatty guest never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let mut bytes = Vec::new();
                let _ = p.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TargetError::Timeout {
                    board: board.name.into(),
                    seconds: timeout.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(TargetError::Io(format!("waiting for {qemu}: {e}"))),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(TargetError::Run {
            board: board.name.into(),
            status: status
                .code()
                .map_or_else(|| "killed by a signal".into(), |c| c.to_string()),
            output: format!("{stdout}{stderr}").trim_end().to_string(),
        });
    }
    let counts = std::fs::read_to_string(&count_file).map_err(|e| {
        TargetError::Harness(format!(
            "the instruction counter wrote nothing ({e}); QEMU said: {stderr}"
        ))
    })?;
    let instructions = counts
        .lines()
        .find_map(|l| l.strip_prefix("insns: "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| TargetError::Harness(format!("instruction count: '{}'", counts.trim())))?;
    let marks = match counts.lines().find_map(|l| l.strip_prefix("marks:")) {
        Some(list) => list
            .split_whitespace()
            .map(|n| n.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TargetError::Harness(format!("layer marks: '{}'", list.trim())))?,
        None => Vec::new(),
    };
    Ok(QemuRun {
        stdout,
        instructions,
        marks,
    })
}
