//! The build-system fragments `kiln compile --emit c` writes beside the C (`PREFIX.cmake`,
//! `PREFIX.mk`): two models in one firmware project (`tests/build_systems/`), built from a clean
//! directory with `-Wall -Wextra -Werror` by CMake and by Make for a Cortex-M4, run under QEMU
//! and on the host, each output checked against `kiln run`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_ir::Tensor;

/// The models the fixture's `main.c` includes: (prefix, directory under `tests/models`, extra
/// `kiln compile` flags). `kws` calls libm (its Softmax); `digits` is compiled `--no-libm`.
const MODELS: [(&str, &str, &[&str]); 2] = [
    ("kws", "kws_dscnn", &[]),
    ("digits", "digits_mlp", &["--no-libm"]),
];

fn fixture() -> PathBuf {
    common::repo_root().join("tests/build_systems")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-bs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn kiln(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_kiln")).args(args))
}

fn compile(model_dir: &str, prefix: &str, flags: &[&str], out: &Path) {
    let model = common::repo_root().join(format!("tests/models/{model_dir}/model.onnx"));
    let mut args = vec![
        "compile".to_string(),
        model.to_string_lossy().into_owned(),
        "--emit".into(),
        "c".into(),
        "-o".into(),
        out.to_string_lossy().into_owned(),
        "--name".into(),
        prefix.into(),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    kiln(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Compiles both models into `root/out/PREFIX`, then moves `root/out` to `root/models` (the
/// fragments name paths relative to themselves, so the output may move) and returns the latter.
fn compile_models(root: &Path) -> PathBuf {
    for (prefix, dir, flags) in MODELS {
        compile(dir, prefix, flags, &root.join("out").join(prefix));
    }
    let models = root.join("models");
    std::fs::rename(root.join("out"), &models).expect("moving the output directory");
    models
}

/// The input `main.c`'s `fill` writes, for a tensor of `shape`.
fn pattern(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
        .collect();
    Tensor::from_f32(shape.to_vec(), v).expect("input")
}

/// Each model's output for the pattern input, from the reference interpreter (`kiln run`).
fn expected(root: &Path) -> Vec<(&'static str, Vec<f32>)> {
    MODELS
        .iter()
        .map(|&(prefix, dir, _)| {
            let model_dir = common::repo_root().join("tests/models").join(dir);
            let shape = common::read_npy(&model_dir.join("input_0.npy"))
                .shape()
                .to_vec();
            let input = root.join(format!("{prefix}_input.npy"));
            std::fs::write(&input, kiln_ir::npy::write(&pattern(&shape))).expect("input");
            let out_dir = root.join(format!("{prefix}_reference"));
            let out = kiln(&[
                "run",
                &model_dir.join("model.onnx").to_string_lossy(),
                "--input",
                &input.to_string_lossy(),
                "--output-dir",
                &out_dir.to_string_lossy(),
                "--json",
            ]);
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let file = doc["outputs"][0]["file"].as_str().expect("output file");
            let t = common::read_npy(Path::new(file));
            (prefix, t.as_f32().expect("f32 output").to_vec())
        })
        .collect()
}

/// Checks the program's printout ("PREFIX INDEX BITS" lines) against the reference outputs, to
/// the tolerance of the other C tests (libm and FMA contraction differ from the interpreter).
fn check_printout(what: &str, stdout: &[u8], want: &[(&str, Vec<f32>)]) {
    let text = String::from_utf8_lossy(stdout);
    for (prefix, values) in want {
        let got: Vec<f32> = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
            .map(|l| {
                let bits = l.split(' ').nth(1).expect("bits");
                f32::from_bits(u32::from_str_radix(bits, 16).expect("hex"))
            })
            .collect();
        assert_eq!(
            got.len(),
            values.len(),
            "{what}: {prefix} outputs in\n{text}"
        );
        let mag = values.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(values).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * mag,
                "{what}: {prefix} output {i} is {g}, `kiln run` gives {w}"
            );
        }
    }
}

/// Asserts that `path` is a 32-bit Arm ELF executable.
fn assert_arm_elf(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 20 && bytes.starts_with(b"\x7fELF\x01\x01"),
        "{} is no 32-bit little-endian ELF",
        path.display()
    );
    let (e_type, e_machine) = (
        u16::from_le_bytes([bytes[16], bytes[17]]),
        u16::from_le_bytes([bytes[18], bytes[19]]),
    );
    assert_eq!(
        (e_type, e_machine),
        (2, 40),
        "an Arm executable (ET_EXEC, EM_ARM)"
    );
}

/// Runs a Cortex-M4 program on QEMU's mps2-an386 board (semihosting output on stdout).
fn run_on_mps2_an386(elf: &Path) -> Output {
    run(Command::new("timeout")
        .args(["60", "qemu-system-arm", "-M", "mps2-an386"])
        .args(["-display", "none", "-monitor", "none", "-serial", "none"])
        .args(["-chardev", "stdio,id=sh0"])
        .args(["-semihosting-config", "enable=on,target=native,chardev=sh0"])
        .arg("-kernel")
        .arg(elf))
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn cmake_project_builds_two_models_for_cortex_m4() {
    if !have("cmake") {
        println!("SKIPPED: cmake is not installed (scripts/setup-toolchains.sh installs it)");
        return;
    }
    let root = temp_dir("cmake");
    let models = compile_models(&root);
    let build = root.join("build");
    run(Command::new("cmake")
        .arg("-S")
        .arg(fixture())
        .arg("-B")
        .arg(&build)
        .arg(format!("-DMODELS={}", models.display()))
        .arg(format!(
            "-DCMAKE_TOOLCHAIN_FILE={}",
            fixture().join("cortex-m4.cmake").display()
        ))
        .args([
            "-DCMAKE_BUILD_TYPE=MinSizeRel",
            "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
        ]));
    run(Command::new("cmake")
        .arg("--build")
        .arg(&build)
        .args(["--parallel", "2"]));
    let elf = build.join("app.elf");
    assert_arm_elf(&elf);

    // The targets carry what the fragments promise: C99 for the models' sources (built with the
    // project's strict warnings), both include directories for the firmware, libm at the link.
    let commands: serde_json::Value = serde_json::from_slice(
        &std::fs::read(build.join("compile_commands.json")).expect("compile_commands.json"),
    )
    .expect("json");
    let command_for = |file: &str| {
        commands
            .as_array()
            .expect("commands")
            .iter()
            .find(|c| c["file"].as_str().is_some_and(|f| f.ends_with(file)))
            .and_then(|c| c["command"].as_str())
            .unwrap_or_else(|| panic!("no compile command for {file}"))
            .to_string()
    };
    for prefix in ["kws", "digits"] {
        let command = command_for(&format!("{prefix}.c"));
        assert!(
            command.contains("-std=c99") && command.contains("-Werror"),
            "{command}"
        );
        let include = format!("-I{}", models.join(prefix).display());
        assert!(command_for("main.c").contains(&include), "{include}");
    }
    let link = std::fs::read_to_string(build.join("CMakeFiles/app.dir/link.txt")).expect("link");
    assert!(link.contains(" -lm"), "{link}");

    let out = run_on_mps2_an386(&elf);
    check_printout("CMake, cortex-m4", &out.stdout, &expected(&root));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn make_project_builds_two_models_for_cortex_m4_and_the_host() {
    let root = temp_dir("make");
    compile_models(&root);
    let make = |out: &str, target: &[&str]| {
        // From the build root, with relative paths, so the fragments' own paths are relative.
        run(Command::new("make")
            .current_dir(&root)
            .arg("-f")
            .arg(fixture().join("Makefile"))
            .args(["-j2", "MODELS=models", &format!("OUT={out}")])
            .args(target));
        root.join(out).join("app.elf")
    };
    let elf = make("cortex-m4", &["TARGET=cortex-m4"]);
    assert_arm_elf(&elf);
    let want = expected(&root);
    check_printout("Make, cortex-m4", &run_on_mps2_an386(&elf).stdout, &want);
    let host = make("host", &[]);
    check_printout("Make, host", &run(&mut Command::new(&host)).stdout, &want);
    let _ = std::fs::remove_dir_all(&root);
}

/// The fragments are byte-identical for the same model and flags, and link libm exactly when the
/// code calls it.
#[test]
fn fragments_are_deterministic_and_link_libm_only_when_called() {
    let root = temp_dir("fragments");
    let read = |dir: &str, ext: &str| {
        std::fs::read_to_string(root.join(dir).join(format!("kws.{ext}"))).expect("fragment")
    };
    for dir in ["a", "b"] {
        compile("kws_dscnn", "kws", &[], &root.join(dir));
    }
    compile("kws_dscnn", "kws", &["--no-libm"], &root.join("no-libm"));
    for ext in ["cmake", "mk"] {
        assert_eq!(read("a", ext), read("b", ext), "kws.{ext}");
    }
    assert!(read("a", "cmake").contains("target_link_libraries(kws PRIVATE m)"));
    assert!(read("a", "mk").contains("\nKWS_LDLIBS := -lm\n"));
    assert!(!read("no-libm", "cmake").contains("PRIVATE m)"));
    assert!(read("no-libm", "mk").contains("\nKWS_LDLIBS :=\n"));
    let _ = std::fs::remove_dir_all(&root);
}
