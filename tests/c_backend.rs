//! The C backend end to end: generated C matches the interpreter on every real model, compiles
//! warning-free on gcc, clang and arm-none-eabi-gcc, runs clean under ASan/UBSan, links only
//! allowed symbols, stays deterministic, and two models link into one program.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_backends::c::{emit_c, ArenaMode, COptions};
use kiln_backends::host::{run_c, HostOptions};
use kiln_backends::kernel::{LoopOrder, Schedule};
use kiln_ir::{Graph, Tensor};

const WARNINGS: &[&str] = &[
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Wshadow",
    "-Wcast-qual",
    "-Werror",
];
const LIBM: &[&str] = &[
    "expf", "logf", "sqrtf", "tanhf", "erff", "powf", "floorf", "ceilf", "rintf",
];
const MEM: &[&str] = &["memcpy", "memset"];
/// The Cortex-M4 flags the issue names (hard float, size-optimized).
const CORTEX_M4: &[&str] = &[
    "-mcpu=cortex-m4",
    "-mthumb",
    "-mfloat-abi=hard",
    "-mfpu=fpv4-sp-d16",
    "-Os",
];

struct Case {
    name: String,
    graph: Graph,
    inputs: Vec<Tensor>,
}

/// Every model under tests/models and tests/frontend_models, with its stored inputs.
fn cases() -> Vec<Case> {
    let root = common::repo_root();
    let mut out = Vec::new();
    for group in ["tests/models", "tests/frontend_models"] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(group))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("model.onnx").exists())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        for dir in dirs {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(dir.join("model.onnx")).expect("read model");
            let mut options = kiln_frontend::ImportOptions::default();
            if let Ok(args) = std::fs::read_to_string(dir.join("kiln_args")) {
                let args: Vec<&str> = args.lines().collect();
                for pair in args.windows(2).filter(|w| w[0] == "--input-shape") {
                    if let Some((n, dims)) = pair[1].split_once('=') {
                        let dims = dims.split(',').map(|d| d.parse().expect("dim")).collect();
                        options.input_shapes.insert(n.to_string(), dims);
                    }
                }
            }
            let graph = kiln_frontend::import_model(&bytes, &options)
                .expect("import")
                .graph;
            let inputs = (0..graph.inputs().len())
                .map(|i| common::read_npy(&dir.join(format!("input_{i}.npy"))))
                .collect();
            out.push(Case {
                name,
                graph,
                inputs,
            });
        }
    }
    assert!(out.len() >= 10);
    out
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-cb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn write_program(graph: &Graph, options: &COptions, dir: &Path) {
    let program = emit_c(graph, options).expect("emit C");
    for (name, text) in &program.files {
        std::fs::write(dir.join(name), text).expect("write");
    }
}

fn assert_close(case: &str, got: &[Tensor], want: &[Tensor]) {
    for (g, w) in got.iter().zip(want) {
        if g.dtype() == kiln_ir::DType::F32 {
            let (diff, mag) = common::max_abs_diff(g, w);
            assert!(
                diff <= 1e-4 * mag.max(1.0),
                "{case}: C differs from the interpreter by {diff} (magnitude {mag})"
            );
        } else {
            assert_eq!(g, w, "{case}");
        }
    }
}

#[test]
fn models_match_the_interpreter() {
    for case in cases() {
        let want = kiln_ir::interp::run(&case.graph, &case.inputs).expect("interp");
        // Schedule knobs change code, never results.
        let schedules = [
            Schedule::default(),
            Schedule {
                unroll_limit: 4,
                ..Schedule::default()
            },
            Schedule {
                oc_tile: 4,
                ..Schedule::default()
            },
            Schedule {
                loop_order: LoopOrder::PixelsOuter,
                oc_tile: 3,
                unroll_limit: 3,
                windowed_oc_tile: 0,
            },
            Schedule {
                oc_tile: 4,
                windowed_oc_tile: 8,
                ..Schedule::default()
            },
        ];
        for schedule in schedules {
            let options = COptions {
                schedule,
                ..COptions::default()
            };
            let got = run_c(&case.graph, &case.inputs, &options, &HostOptions::default())
                .unwrap_or_else(|e| panic!("{} ({schedule:?}): {e}", case.name));
            assert_close(&case.name, &got, &want);
        }
    }
}

#[test]
fn unrolling_removes_small_loops() {
    let graph = small_network();
    let count_loops = |limit| {
        let options = COptions {
            schedule: Schedule {
                unroll_limit: limit,
                ..Schedule::default()
            },
            ..COptions::default()
        };
        let program = emit_c(&graph, &options).expect("emit");
        program.files[1].1.matches("for (").count()
    };
    assert!(count_loops(3) < count_loops(0));
}

#[test]
fn sanitizers_report_nothing() {
    let host = HostOptions {
        cflags: [
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-g",
        ]
        .map(String::from)
        .to_vec(),
        keep_dir: None,
    };
    for case in cases() {
        let want = kiln_ir::interp::run(&case.graph, &case.inputs).expect("interp");
        let got = run_c(&case.graph, &case.inputs, &COptions::default(), &host)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_close(&case.name, &got, &want);
    }
}

fn compile_object(cc: &str, flags: &[&str], dir: &Path, source: &str) -> PathBuf {
    let obj = dir.join(format!(
        "{}-{}.o",
        source.trim_end_matches(".c"),
        cc.replace('/', "_")
    ));
    let out = Command::new(cc)
        .args(WARNINGS)
        .args(flags)
        .arg("-c")
        .arg(dir.join(source))
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap_or_else(|e| panic!("{cc} is not installed ({e}); run scripts/setup-toolchains.sh"));
    assert!(
        out.status.success(),
        "{cc} {flags:?} rejected {}:\n{}",
        dir.join(source).display(),
        String::from_utf8_lossy(&out.stderr)
    );
    obj
}

#[test]
fn generated_c_compiles_warning_free_on_every_compiler() {
    for case in cases() {
        let dir = temp_dir(&format!("warn-{}", case.name));
        for (arena, no_libm) in [(ArenaMode::Caller, false), (ArenaMode::Static, true)] {
            let options = COptions {
                name: "net".into(),
                arena,
                no_libm,
                ..COptions::default()
            };
            write_program(&case.graph, &options, &dir);
            compile_object("gcc", &["-O2"], &dir, "net.c");
            compile_object("clang", &["-O2"], &dir, "net.c");
            compile_object("arm-none-eabi-gcc", CORTEX_M4, &dir, "net.c");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A minimal firmware `main` that runs the model once on static buffers (f32 I/O).
fn firmware_main(graph: &Graph) -> String {
    let mut m = String::from(
        "#include \"net.h\"\nstatic uint8_t arena[NET_ARENA_BYTES] __attribute__((aligned(16)));\n",
    );
    let mut args = vec!["arena".to_string()];
    for (dir, ids) in [("IN", graph.inputs()), ("OUT", graph.outputs())] {
        for (i, &v) in ids.iter().enumerate() {
            assert_eq!(
                graph.value(v).ty.dtype,
                kiln_ir::DType::F32,
                "test models have f32 I/O"
            );
            let name = format!("{}{i}", dir.to_lowercase());
            m.push_str(&format!("static float {name}[NET_{dir}{i}_ELEMS];\n"));
            args.push(name);
        }
    }
    m.push_str(&format!(
        "int main(void) {{ return net_run({}); }}\n",
        args.join(", ")
    ));
    m
}

/// Firmware links the generated code against newlib or picolibc: every libm symbol it needs
/// resolves in both (Cortex-M4, hard float).
#[test]
fn links_with_newlib_and_picolibc() {
    // picolibc's default linker script has a small flash: give it the mps2-an386 memory map.
    let picolibc_map = [
        "-Wl,--defsym=__flash=0",
        "-Wl,--defsym=__flash_size=0x400000",
        "-Wl,--defsym=__ram=0x20000000",
        "-Wl,--defsym=__ram_size=0x400000",
    ];
    for case in cases() {
        let dir = temp_dir(&format!("libc-{}", case.name));
        write_program(
            &case.graph,
            &COptions {
                name: "net".into(),
                ..COptions::default()
            },
            &dir,
        );
        std::fs::write(dir.join("main.c"), firmware_main(&case.graph)).expect("main.c");
        for (specs, extra) in [
            ("--specs=nosys.specs", &[][..]),
            ("--specs=picolibc.specs", &picolibc_map[..]),
        ] {
            let out = Command::new("arm-none-eabi-gcc")
                .arg(specs)
                .args(WARNINGS)
                .args(CORTEX_M4)
                .args(extra)
                .arg(dir.join("main.c"))
                .arg(dir.join("net.c"))
                .arg("-lm")
                .arg("-o")
                .arg(dir.join("net.elf"))
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "arm-none-eabi-gcc is not installed ({e}); run scripts/setup-toolchains.sh"
                    )
                });
            assert!(
                out.status.success(),
                "{} with {specs}:\n{}",
                case.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn undefined_symbols(obj: &Path) -> Vec<String> {
    let out = Command::new("nm").arg("-u").arg(obj).output().expect("nm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

#[test]
fn only_allowed_symbols_are_undefined() {
    for case in cases() {
        let dir = temp_dir(&format!("nm-{}", case.name));
        for no_libm in [false, true] {
            write_program(
                &case.graph,
                &COptions {
                    no_libm,
                    ..COptions::default()
                },
                &dir,
            );
            let obj = compile_object("gcc", &["-O2"], &dir, "model.c");
            for sym in undefined_symbols(&obj) {
                let allowed =
                    MEM.contains(&sym.as_str()) || (!no_libm && LIBM.contains(&sym.as_str()));
                assert!(allowed, "{} (no_libm={no_libm}) needs '{sym}'", case.name);
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn arena_is_within_five_percent_of_the_lower_bound() {
    for case in cases() {
        let program = emit_c(&case.graph, &COptions::default()).expect("emit");
        let plan = &program.plan;
        println!(
            "{}: arena {} lower bound {} naive {}",
            case.name, plan.arena_bytes, plan.lower_bound_bytes, plan.naive_bytes
        );
        assert!(plan.arena_bytes >= plan.lower_bound_bytes);
        assert!(
            plan.arena_bytes as f64 <= plan.lower_bound_bytes as f64 * 1.05,
            "{}: arena {} vs lower bound {}",
            case.name,
            plan.arena_bytes,
            plan.lower_bound_bytes
        );
    }
}

#[test]
fn output_is_byte_deterministic() {
    for case in cases().into_iter().take(4) {
        let a = emit_c(&case.graph, &COptions::default())
            .expect("emit")
            .files;
        let b = emit_c(&case.graph, &COptions::default())
            .expect("emit")
            .files;
        assert_eq!(a, b, "{}", case.name);
    }
}

/// Two models with different prefixes link into one program; both give their references.
#[test]
fn two_models_link_into_one_program() {
    let root = common::repo_root().join("tests/models");
    let dir = temp_dir("two");
    let mut main = String::from(
        "#include <stdio.h>\n#include <stdlib.h>\n#include \"mlp.h\"\n#include \"cnn.h\"\n",
    );
    main.push_str("static float read_f32(FILE *f) { float v = 0.0f; if (fread(&v, 4, 1, f) != 1) exit(3); return v; }\n");
    main.push_str("int main(int argc, char **argv) {\n    static uint8_t arena_a[MLP_ARENA_BYTES > CNN_ARENA_BYTES ? MLP_ARENA_BYTES : CNN_ARENA_BYTES] __attribute__((aligned(16)));\n");
    main.push_str("    static float x[64], y_mlp[10], y_cnn[10];\n    FILE *f = fopen(argv[1], \"rb\");\n    (void)argc;\n    for (int i = 0; i < 64; ++i) x[i] = read_f32(f);\n    fclose(f);\n");
    main.push_str(
        "    if (mlp_run(arena_a, x, y_mlp) != 0 || cnn_run(arena_a, x, y_cnn) != 0) return 4;\n",
    );
    main.push_str("    for (int i = 0; i < 10; ++i) printf(\"%.9g %.9g\\n\", y_mlp[i], y_cnn[i]);\n    return 0;\n}\n");
    std::fs::write(dir.join("main.c"), main).expect("write main");
    let mut graphs = Vec::new();
    for (model, prefix) in [("digits_mlp", "mlp"), ("digits_cnn", "cnn")] {
        let bytes = std::fs::read(root.join(model).join("model.onnx")).expect("model");
        let graph = kiln_frontend::import_model(&bytes, &Default::default())
            .expect("import")
            .graph;
        write_program(
            &graph,
            &COptions {
                name: prefix.into(),
                ..COptions::default()
            },
            &dir,
        );
        graphs.push(graph);
    }
    let exe = dir.join("two");
    let out = Command::new("cc")
        .args(["-std=c99", "-O2", "-o"])
        .arg(&exe)
        .args([dir.join("main.c"), dir.join("mlp.c"), dir.join("cnn.c")])
        .arg("-lm")
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = common::read_npy(&root.join("digits_mlp/input_0.npy"));
    let raw: Vec<u8> = x
        .as_f32()
        .expect("f32")
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("x.bin"), raw).expect("write input");
    let run = Command::new(&exe)
        .arg(dir.join("x.bin"))
        .output()
        .expect("run");
    assert!(run.status.success());
    let text = String::from_utf8_lossy(&run.stdout);
    let rows: Vec<(f32, f32)> = text
        .lines()
        .map(|l| {
            let mut it = l
                .split_whitespace()
                .map(|v| v.parse::<f32>().expect("float"));
            (it.next().expect("mlp"), it.next().expect("cnn"))
        })
        .collect();
    let cnn_input = x.clone().reshaped(vec![1, 1, 8, 8]).expect("reshape");
    let want_mlp = kiln_ir::interp::run(&graphs[0], std::slice::from_ref(&x)).expect("interp");
    let want_cnn = kiln_ir::interp::run(&graphs[1], &[cnn_input]).expect("interp");
    for (i, (m, c)) in rows.iter().enumerate() {
        let (wm, wc) = (
            want_mlp[0].as_f32().expect("f32")[i],
            want_cnn[0].as_f32().expect("f32")[i],
        );
        assert!(
            (m - wm).abs() < 1e-4 && (c - wc).abs() < 1e-4,
            "row {i}: {m} {c} vs {wm} {wc}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A small network built directly in the IR, so the snapshot stays short and reviewable.
fn small_network() -> Graph {
    use kiln_ir::{DType, Op, TensorType};
    let mut g = Graph::new("small");
    let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 1, 4, 4]));
    let w = g.add_const(
        "conv.weight",
        Tensor::from_f32(
            vec![2, 1, 3, 3],
            (0..18).map(|i| (i as f32 - 9.0) / 8.0).collect(),
        )
        .expect("w"),
    );
    let b = g.add_const(
        "conv.bias",
        Tensor::from_f32(vec![2], vec![0.25, -0.5]).expect("b"),
    );
    let conv = Op::Conv {
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
        activation: Default::default(),
    };
    let c = g
        .add_node("conv", conv, vec![x, w, b], vec!["c".into()])
        .expect("conv");
    let c = g.node(c).outputs[0];
    let r = g
        .add_node("relu", Op::Relu, vec![c], vec!["r".into()])
        .expect("relu");
    let r = g.node(r).outputs[0];
    let p = g
        .add_node("pool", Op::GlobalAveragePool, vec![r], vec!["p".into()])
        .expect("pool");
    let p = g.node(p).outputs[0];
    let f = g
        .add_node(
            "flatten",
            Op::Reshape { shape: vec![1, 2] },
            vec![p],
            vec!["f".into()],
        )
        .expect("reshape");
    let f = g.node(f).outputs[0];
    let fw = g.add_const(
        "fc.weight",
        Tensor::from_f32(vec![3, 2], vec![1.0, -1.0, 0.5, 0.5, -2.0, 1.0]).expect("fw"),
    );
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
        activation: Default::default(),
    };
    let y = g
        .add_node("fc", gemm, vec![f, fw], vec!["logits".into()])
        .expect("gemm");
    let y = g.node(y).outputs[0];
    let s = g
        .add_node(
            "softmax",
            Op::Softmax {
                axis: 1,
                coerce_2d: false,
            },
            vec![y],
            vec!["probs".into()],
        )
        .expect("softmax");
    let s = g.node(s).outputs[0];
    g.set_outputs(vec![s]);
    g
}

#[test]
fn generated_c_snapshot() {
    let graph = small_network();
    let program = emit_c(
        &graph,
        &COptions {
            name: "small".into(),
            ..COptions::default()
        },
    )
    .expect("emit");
    let x = Tensor::from_f32(
        vec![1, 1, 4, 4],
        (0..16).map(|i| (i as f32) / 16.0 - 0.3).collect(),
    )
    .expect("x");
    let want = kiln_ir::interp::run(&graph, std::slice::from_ref(&x)).expect("interp");
    let got = run_c(&graph, &[x], &COptions::default(), &HostOptions::default()).expect("run C");
    assert_close("small", &got, &want);
    for (name, text) in &program.files {
        if name != "kiln_runtime.h" {
            insta::assert_snapshot!(format!("c_{name}"), text);
        }
    }
}

/// The `--no-libm` approximations meet the maximum errors `kiln_runtime.h` documents.
#[test]
fn no_libm_approximations_meet_their_documented_error() {
    let dir = temp_dir("nolibm");
    let root = common::repo_root();
    let exe = dir.join("accuracy");
    let out = Command::new("cc")
        .args(WARNINGS)
        .args(["-O2", "-I"])
        .arg(root.join("runtime"))
        .arg(root.join("tests/c/no_libm_accuracy.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-lm")
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run");
    println!("{}", String::from_utf8_lossy(&run.stdout));
    assert!(
        run.status.success(),
        "an approximation exceeds its documented error: {}",
        String::from_utf8_lossy(&run.stdout)
    );
    let _ = std::fs::remove_dir_all(dir);
}
