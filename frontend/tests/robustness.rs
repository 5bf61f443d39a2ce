//! Structured fuzzing: seeded mutants of real models must never make the importer or the
//! reference interpreter panic. Bad input gets an error; a panic is a test failure that prints
//! the mutation and the panic message.
//!
//! Seeds are every `model.onnx` under `tests/models/`, `tests/frontend_models/` and (when the
//! conformance test and `quantized_ops.rs` have generated them) the supported ONNX node tests
//! and the quantized-op models. Mutants change one attribute, dimension, input, data type or
//! data buffer. The run is deterministic: the same seed list gives the same mutants.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_frontend::{FrontendError, ImportOptions};
use kiln_ir::{Tensor, TensorType};
use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
use onnx_protobuf::{type_proto, ModelProto, TensorProto};
use protobuf::Message;

/// Mutants per run; sized so the test takes about a minute in a debug build.
const MUTANTS: usize = 40_000;
/// Graph inputs and outputs larger than this are not run (the point is shape logic, not speed).
/// Attempts to find an applicable mutation for one mutant.
const MAX_TRIES: usize = 20;
const MAX_RUN_ELEMENTS: usize = 1 << 22;
const MAX_RUN_OUTPUT_BYTES: usize = 64 << 20;

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const INTS: &[i64] = &[-1, 0, 1, 2, 7, -7, 1 << 31, 1 << 40, i64::MIN, i64::MAX];
const FLOATS: &[f32] = &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 0.0, 1e30];
const DIMS: &[i64] = &[0, -1, 1, 2, 3, 1 << 20, 1 << 33, i64::MAX];
/// Element type codes: supported ones and a few that are not.
const DATA_TYPES: &[i32] = &[0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 99];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn model_files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            model_files_under(&p, out);
        } else if p.file_name().is_some_and(|n| n == "model.onnx") {
            out.push(p);
        }
    }
}

/// A seed model, with node-test inputs that must be constants bound as initializers.
struct Seed {
    path: PathBuf,
    model: ModelProto,
}

fn load_seeds() -> Vec<Seed> {
    let root = workspace_root();
    let mut files = Vec::new();
    model_files_under(&root.join("tests/models"), &mut files);
    model_files_under(&root.join("tests/frontend_models"), &mut files);
    // The quantized-op models, when `quantized_ops.rs` has generated them.
    model_files_under(&root.join("target/quantized-op-cases"), &mut files);
    let mut seeds: Vec<Seed> = files
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).ok()?;
            let model = ModelProto::parse_from_bytes(&bytes).ok()?;
            Some(Seed { path, model })
        })
        .collect();
    let node_tests = root.join("target/onnx-node-tests");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&node_tests)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort();
    for version in versions {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&version)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        cases.sort();
        seeds.extend(cases.iter().filter_map(|case| node_test_seed(case)));
    }
    seeds
}

fn node_test_seed(case: &Path) -> Option<Seed> {
    if case.join("NON_TENSOR_IO").exists() {
        return None;
    }
    let path = case.join("model.onnx");
    let bytes = std::fs::read(&path).ok()?;
    let survey = kiln_frontend::survey(&bytes).ok()?;
    if !survey.is_supported() {
        return None;
    }
    let mut model = ModelProto::parse_from_bytes(&bytes).ok()?;
    bind_needed_constants(&mut model, &survey.inputs, &case.join("test_data_set_0"));
    Some(Seed { path, model })
}

/// Turns graph inputs the frontend needs as constants into initializers holding their test
/// values, so that mutants reach the lowering of shape-taking ops (as the conformance runner
/// does with `const_inputs`).
fn bind_needed_constants(model: &mut ModelProto, input_names: &[String], set: &Path) {
    let load = |i: usize| -> Option<TensorProto> {
        let bytes = std::fs::read(set.join(format!("input_{i}.pb"))).ok()?;
        TensorProto::parse_from_bytes(&bytes).ok()
    };
    for _ in 0..4 {
        let Ok(bytes) = model.write_to_bytes() else {
            return;
        };
        let Err(FrontendError::NeedsConstant { input, .. }) =
            kiln_frontend::import_model(&bytes, &ImportOptions::default())
        else {
            return;
        };
        let graph = model.graph.mut_or_insert_default();
        let bound =
            |g: &onnx_protobuf::GraphProto, n: &str| g.initializer.iter().any(|t| t.name == n);
        let wanted: Vec<usize> = match input_names.iter().position(|n| *n == input) {
            Some(i) if !bound(graph, &input) => vec![i],
            // Computed inside the graph from integer inputs: bind all of those.
            _ => (0..input_names.len())
                .filter(|&i| !bound(graph, &input_names[i]))
                .filter(|&i| load(i).is_some_and(|t| matches!(t.data_type, 6 | 7)))
                .collect(),
        };
        if wanted.is_empty() {
            return;
        }
        for i in wanted {
            if let Some(mut t) = load(i) {
                t.name = input_names[i].clone();
                graph.initializer.push(t);
            }
        }
    }
}

/// Applies one random mutation; returns its description, or None if the chosen kind does not
/// apply to this model.
fn mutate(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let kind = rng.below(14);
    if kind == 13 {
        let v = *rng.pick(&[0i64, 1, 6, 7, 10, 13, 18, 21, 99, -1]);
        let op = model
            .opset_import
            .iter_mut()
            .find(|o| o.domain.is_empty())?;
        op.version = v;
        return Some(format!("opset version -> {v}"));
    }
    let graph = model.graph.as_mut()?;
    match kind {
        0..=5 => {
            if graph.node.is_empty() {
                return None;
            }
            let n = rng.below(graph.node.len());
            let node = &mut graph.node[n];
            let at = format!("node '{}' ({})", node.name, node.op_type);
            if node.attribute.is_empty() {
                return None;
            }
            let a = rng.below(node.attribute.len());
            let what = mutate_attribute(&mut node.attribute, a, rng)?;
            Some(format!("{at}: {what}"))
        }
        6..=7 => {
            if graph.node.is_empty() {
                return None;
            }
            let n = rng.below(graph.node.len());
            let names: Vec<String> = graph
                .node
                .iter()
                .flat_map(|n| n.output.iter().cloned())
                .chain(graph.input.iter().map(|i| i.name.clone()))
                .chain(graph.initializer.iter().map(|t| t.name.clone()))
                .collect();
            let node = &mut graph.node[n];
            let at = format!("node '{}' ({})", node.name, node.op_type);
            let k = node.input.len();
            let what = match rng.below(5) {
                0 if k > 0 => {
                    let i = rng.below(k);
                    node.input.remove(i);
                    format!("drop input {i}")
                }
                1 if k > 1 => {
                    let (i, j) = (rng.below(k), rng.below(k));
                    node.input.swap(i, j);
                    format!("swap inputs {i} and {j}")
                }
                2 if k > 0 => {
                    let i = rng.below(k);
                    node.input[i] = String::new();
                    format!("input {i} renamed to ''")
                }
                3 if k > 0 && !names.is_empty() => {
                    let i = rng.below(k);
                    let other = rng.pick(&names).clone();
                    node.input[i] = other.clone();
                    format!("input {i} -> '{other}'")
                }
                4 if !names.is_empty() => {
                    let other = rng.pick(&names).clone();
                    node.input.push(other.clone());
                    format!("extra input '{other}'")
                }
                _ => return None,
            };
            Some(format!("{at}: {what}"))
        }
        8..=10 => {
            if graph.initializer.is_empty() {
                return None;
            }
            let i = rng.below(graph.initializer.len());
            let t = &mut graph.initializer[i];
            let at = format!("initializer '{}'", t.name);
            let what = mutate_tensor(t, rng)?;
            Some(format!("{at}: {what}"))
        }
        11 => {
            // A Constant node's value.
            let consts: Vec<usize> = (0..graph.node.len())
                .filter(|&n| graph.node[n].op_type == "Constant")
                .collect();
            if consts.is_empty() {
                return None;
            }
            let n = *rng.pick(&consts);
            let node = graph.node.get_mut(n)?;
            let at = format!("node '{}' (Constant)", node.name);
            let a = node.attribute.iter().position(|a| a.t.is_some())?;
            let what = mutate_tensor(node.attribute[a].t.mut_or_insert_default(), rng)?;
            Some(format!("{at}: value {what}"))
        }
        _ => {
            if graph.input.is_empty() {
                return None;
            }
            let i = rng.below(graph.input.len());
            let vi = &mut graph.input[i];
            let at = format!("graph input '{}'", vi.name);
            let Some(type_proto::Value::TensorType(tt)) =
                vi.type_.as_mut().and_then(|t| t.value.as_mut())
            else {
                return None;
            };
            if rng.below(4) == 0 {
                let dt = *rng.pick(DATA_TYPES);
                tt.elem_type = dt;
                return Some(format!("{at}: elem_type -> {dt}"));
            }
            let shape = tt.shape.as_mut()?;
            match rng.below(5) {
                0 => {
                    shape.dim.pop();
                    return Some(format!("{at}: drop last dim"));
                }
                1 => {
                    let mut dim = onnx_protobuf::tensor_shape_proto::Dimension::new();
                    dim.value = Some(Dim::DimValue(*rng.pick(&[1, 2, 3])));
                    shape.dim.push(dim);
                    return Some(format!("{at}: append a dim"));
                }
                _ => {}
            }
            if shape.dim.is_empty() {
                return None;
            }
            let d = rng.below(shape.dim.len());
            let v = *rng.pick(DIMS);
            shape.dim[d].value = Some(Dim::DimValue(v));
            Some(format!("{at}: dim {d} -> {v}"))
        }
    }
}

fn mutate_attribute(
    attrs: &mut Vec<onnx_protobuf::AttributeProto>,
    a: usize,
    rng: &mut Rng,
) -> Option<String> {
    let name = attrs[a].name.clone();
    match rng.below(9) {
        8 => {
            // Right name, wrong kind of value.
            let code = *rng.pick(&[0, 1, 2, 3, 6, 7]);
            attrs[a].type_ = protobuf::EnumOrUnknown::from_i32(code);
            return Some(format!("attribute '{name}' type -> {code}"));
        }
        0 => {
            attrs.remove(a);
            return Some(format!("drop attribute '{name}'"));
        }
        1 => {
            let copy = attrs[a].clone();
            attrs.push(copy);
            return Some(format!("duplicate attribute '{name}'"));
        }
        _ => {}
    }
    let attr = &mut attrs[a];
    // AttributeType codes: FLOAT=1, INT=2, STRING=3, TENSOR=4, FLOATS=6, INTS=7, STRINGS=8.
    Some(match attr.type_.value() {
        1 => {
            let v = *rng.pick(FLOATS);
            attr.f = v;
            format!("attribute '{name}' -> {v}")
        }
        2 => {
            let v = *rng.pick(INTS);
            attr.i = v;
            format!("attribute '{name}' -> {v}")
        }
        3 => {
            let v = rng.pick(&["", "garbage", "NOTSET", "\u{0}\u{ff}", "SAME_LOWER"]);
            attr.s = v.as_bytes().to_vec();
            format!("attribute '{name}' -> {v:?}")
        }
        4 => {
            let what = mutate_tensor(attr.t.mut_or_insert_default(), rng)?;
            format!("attribute '{name}' tensor {what}")
        }
        6 => match rng.below(3) {
            0 => {
                attr.floats.pop();
                format!("attribute '{name}' drop last element")
            }
            _ if !attr.floats.is_empty() => {
                let i = rng.below(attr.floats.len());
                let v = *rng.pick(FLOATS);
                attr.floats[i] = v;
                format!("attribute '{name}'[{i}] -> {v}")
            }
            _ => return None,
        },
        7 => match rng.below(4) {
            0 => {
                attr.ints.pop();
                format!("attribute '{name}' drop last element")
            }
            1 => {
                let v = *rng.pick(INTS);
                attr.ints.push(v);
                format!("attribute '{name}' append {v}")
            }
            _ if !attr.ints.is_empty() => {
                let i = rng.below(attr.ints.len());
                let v = *rng.pick(INTS);
                attr.ints[i] = v;
                format!("attribute '{name}'[{i}] -> {v}")
            }
            _ => return None,
        },
        8 => {
            attr.strings.push(b"garbage".to_vec());
            format!("attribute '{name}' append string")
        }
        _ => return None,
    })
}

/// Bytes per element for ONNX type codes the tests produce (0 for unknown ones).
fn elem_size(data_type: i32) -> usize {
    match data_type {
        1 | 6 => 4,
        2 | 3 | 9 => 1,
        5 | 10 => 2,
        7 | 11 => 8,
        _ => 0,
    }
}

fn mutate_tensor(t: &mut TensorProto, rng: &mut Rng) -> Option<String> {
    match rng.below(6) {
        0 | 1 => {
            if t.dims.is_empty() {
                return None;
            }
            let d = rng.below(t.dims.len());
            let v = *rng.pick(DIMS);
            t.dims[d] = v;
            let consistent = rng.below(2) == 0;
            if consistent {
                resize_data(t);
            }
            Some(format!("dim {d} -> {v} (data consistent: {consistent})"))
        }
        2 => {
            let dt = *rng.pick(DATA_TYPES);
            t.data_type = dt;
            Some(format!("data_type -> {dt}"))
        }
        3 => {
            if t.raw_data.is_empty() {
                return None;
            }
            let keep = rng.below(t.raw_data.len());
            t.raw_data.truncate(keep);
            Some(format!("raw_data truncated to {keep} bytes"))
        }
        _ => {
            // Shapes, axes and pads reach kiln as small integer tensors: poison one value.
            let v = *rng.pick(INTS);
            let i;
            if !t.int64_data.is_empty() {
                i = rng.below(t.int64_data.len());
                t.int64_data[i] = v;
            } else if t.data_type == 7 && t.raw_data.len() >= 8 {
                i = rng.below(t.raw_data.len() / 8);
                t.raw_data[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            } else if t.data_type == 6 && t.raw_data.len() >= 4 {
                i = rng.below(t.raw_data.len() / 4);
                t.raw_data[i * 4..i * 4 + 4].copy_from_slice(&(v as i32).to_le_bytes());
            } else if !t.int32_data.is_empty() {
                i = rng.below(t.int32_data.len());
                t.int32_data[i] = v as i32;
            } else {
                return None;
            }
            Some(format!("element {i} -> {v}"))
        }
    }
}

/// Makes the data length match the dims, when that is a reasonable size.
fn resize_data(t: &mut TensorProto) {
    let numel = t
        .dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?));
    let Some(n) = numel.filter(|&n| n <= 1 << 20) else {
        return;
    };
    if !t.raw_data.is_empty() {
        t.raw_data.resize(n * elem_size(t.data_type), 0);
    } else if !t.float_data.is_empty() || t.data_type == 1 {
        t.float_data.resize(n, 0.0);
    } else if !t.int64_data.is_empty() || t.data_type == 7 {
        t.int64_data.resize(n, 0);
    } else {
        t.int32_data.resize(n, 0);
    }
}

/// Overrides for exploring beyond the default run (`KILN_FUZZ_MUTANTS`, `KILN_FUZZ_SEED`).
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // The kiln frames say where the panic came from when it was raised in std.
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        let kiln_frames: Vec<&str> = trace
            .lines()
            .map(str::trim)
            .filter(|l| {
                l.starts_with("at ") && (l.contains("ir/src/") || l.contains("frontend/src/"))
            })
            .take(3)
            .collect();
        if let Ok(mut m) = PANIC_MESSAGE.lock() {
            *m = Some(format!("{at}: {payload} [{}]", kiln_frames.join(" <- ")));
        }
    }));
}

fn take_panic_message() -> String {
    PANIC_MESSAGE
        .lock()
        .ok()
        .and_then(|mut m| m.take())
        .unwrap_or_default()
}

fn small_enough_to_run(graph: &kiln_ir::Graph) -> bool {
    let ty = |v| &graph.value(v).ty;
    let inputs_ok = graph
        .inputs()
        .iter()
        .all(|&v| ty(v).numel() < MAX_RUN_ELEMENTS);
    let outputs_ok = graph
        .outputs()
        .iter()
        .all(|&v| ty(v).numel() < MAX_RUN_ELEMENTS);
    let out_bytes: usize = graph
        .outputs()
        .iter()
        .map(|&v| ty(v).size_bytes())
        .fold(0, usize::saturating_add);
    inputs_ok && outputs_ok && out_bytes < MAX_RUN_OUTPUT_BYTES
}

enum Outcome {
    Rejected,
    Imported,
    Ran,
}

fn check_mutant(bytes: &[u8]) -> Outcome {
    let Ok(model) = kiln_frontend::import_model(bytes, &ImportOptions::default()) else {
        return Outcome::Rejected;
    };
    let graph = &model.graph;
    if !small_enough_to_run(graph) {
        return Outcome::Imported;
    }
    let inputs: Vec<Tensor> = graph
        .inputs()
        .iter()
        .map(|&v| {
            let ty = &graph.value(v).ty;
            Tensor::zeros(&TensorType::new(ty.dtype, ty.shape.clone()))
        })
        .collect();
    // Errors are fine; only panics fail.
    let _ = kiln_ir::interp::run(graph, &inputs);
    Outcome::Ran
}

#[test]
fn mutants_never_panic() {
    let seeds = load_seeds();
    assert!(!seeds.is_empty(), "no seed models found");
    install_panic_hook();
    let start = Instant::now();
    let mutants = env_or("KILN_FUZZ_MUTANTS", MUTANTS as u64) as usize;
    let mut rng = Rng(env_or("KILN_FUZZ_SEED", 0x9E37_79B9_7F4A_7C15) | 1);
    let (mut rejected, mut imported, mut ran, mut skipped) = (0usize, 0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for _ in 0..mutants {
        let seed = &seeds[rng.below(seeds.len())];
        let mut model = seed.model.clone();
        // Most mutants change one thing; some change two, to get past the first check.
        let wanted = 1 + usize::from(rng.below(4) == 0);
        let mut mutations = Vec::new();
        for _ in 0..MAX_TRIES {
            if mutations.len() == wanted {
                break;
            }
            mutations.extend(mutate(&mut model, &mut rng));
        }
        if mutations.is_empty() {
            skipped += 1;
            continue;
        }
        let mutation = mutations.join("; ");
        let Ok(bytes) = model.write_to_bytes() else {
            skipped += 1;
            continue;
        };
        let t0 = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| check_mutant(&bytes)));
        let what = format!("{}: {mutation}", seed.path.display());
        let took = t0.elapsed();
        if took > slowest.0 {
            slowest = (took, what.clone());
        }
        match result {
            Ok(Outcome::Rejected) => rejected += 1,
            Ok(Outcome::Imported) => imported += 1,
            Ok(Outcome::Ran) => ran += 1,
            Err(_) => failures.push(format!("{what}\n    panic: {}", take_panic_message())),
        }
    }
    let _ = panic::take_hook();
    println!(
        "{} seeds, {mutants} mutants: {rejected} rejected, {} imported ({ran} also ran), {skipped} not applicable, {} panicked, {:.1?}",
        seeds.len(),
        imported + ran,
        failures.len(),
        start.elapsed()
    );
    println!("slowest mutant: {:.1?} {}", slowest.0, slowest.1);
    assert!(
        failures.is_empty(),
        "{} mutants panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
