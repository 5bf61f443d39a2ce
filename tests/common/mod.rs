//! Helpers shared by the integration tests: locating Python, comparing tensors.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use kiln_ir::{Tensor, TensorData};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter with onnx/onnxruntime/numpy: `$KILN_PYTHON`, else the repo's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_PYTHON") {
        return PathBuf::from(p);
    }
    repo_root().join(".venv/bin/python")
}

/// The model directories (each holding `model.onnx`) directly under `root`, sorted; none if
/// `root` is absent.
pub fn model_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("model.onnx").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The repository's own models (`tests/models/*`), checked to be all there.
pub fn repo_models() -> Vec<PathBuf> {
    let root = repo_root().join("tests/models");
    let dirs = model_dirs(&root);
    assert!(
        dirs.len() >= 7,
        "expected the repo's models in {}",
        root.display()
    );
    dirs
}

/// The repository's models, then the float MLPerf Tiny models when `../shared` is present (the
/// model set every benchmark reports).
pub fn float_models() -> Vec<PathBuf> {
    let mut dirs = model_dirs(&repo_root().join("tests/models"));
    if let Some(shared) = shared_models_dir() {
        dirs.extend(
            model_dirs(&shared)
                .into_iter()
                .filter(|d| !d.to_string_lossy().ends_with("_int8")),
        );
    }
    dirs
}

/// The MLPerf Tiny reference models shared beside the repository, if present.
pub fn shared_models_dir() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/models/mlcommons_tiny_onnx");
    dir.is_dir().then_some(dir)
}

/// The trained MLPerf Tiny int8 models (`*_int8` beside the repository), sorted; none, with a
/// note on stdout, when `../shared` is absent.
pub fn mlperf_int8_models() -> Vec<PathBuf> {
    match shared_models_dir() {
        Some(root) => model_dirs(&root)
            .into_iter()
            .filter(|d| d.to_string_lossy().ends_with("_int8"))
            .collect(),
        None => {
            println!("SKIPPED: ../shared/models/mlcommons_tiny_onnx is absent");
            Vec::new()
        }
    }
}

pub fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    kiln_ir::npy::read(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Compares `got` with `want`: exact for integers and bool; for f32, |g - w| <= atol + rtol*|w|
/// with NaN matching NaN and infinities matching exactly. Returns a description of the first
/// mismatch.
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!(
            "dtype {} != expected {}",
            got.dtype(),
            want.dtype()
        ));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} != expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    match (got.data(), want.data()) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                let ok = if a.is_nan() || b.is_nan() {
                    a.is_nan() && b.is_nan()
                } else if a.is_infinite() || b.is_infinite() {
                    a == b
                } else {
                    (f64::from(a) - f64::from(b)).abs() <= atol + rtol * f64::from(b).abs()
                };
                if !ok {
                    return Err(format!("element {i}: got {a}, expected {b}"));
                }
            }
            Ok(())
        }
        (g, w) => {
            if g == w {
                Ok(())
            } else {
                let i = (0..g.len())
                    .find(|&i| g.get_f64(i) != w.get_f64(i))
                    .unwrap_or(0);
                Err(format!(
                    "element {i}: got {}, expected {}",
                    g.get_f64(i),
                    w.get_f64(i)
                ))
            }
        }
    }
}

/// Largest |got - want| over all elements (f32 tensors), and the largest |want|.
pub fn max_abs_diff(got: &Tensor, want: &Tensor) -> (f32, f32) {
    let (Some(g), Some(w)) = (got.as_f32(), want.as_f32()) else {
        return (f32::INFINITY, 0.0);
    };
    let diff = g
        .iter()
        .zip(w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let mag = w.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    (diff, mag)
}

/// `run` over every job on all cores (each worker takes the next job), results in job order.
pub fn parallel_map<J: Sync, R: Send>(jobs: &[J], run: impl Fn(&J) -> R + Sync) -> Vec<R> {
    let rows: std::sync::Mutex<Vec<(usize, R)>> = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let row = run(job);
                if let Ok(mut r) = rows.lock() {
                    r.push((i, row));
                }
            });
        }
    });
    let mut rows = rows.into_inner().unwrap_or_default();
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}
