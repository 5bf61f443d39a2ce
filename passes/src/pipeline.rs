//! The pass pipeline: the `Pass` trait, the pass table, `-O` levels, and the runner.
//!
//! The runner owns everything that is not a rewrite: it runs the passes of a level in table
//! order, repeats the whole list until nothing changes (a bounded fixed point), runs the IR
//! verifier after every pass in debug builds and once after the whole pipeline in every build,
//! times each pass, and collects IR dumps.

use std::time::Instant;

use kiln_ir::{Graph, IrError};

/// One graph rewrite.
pub trait Pass {
    /// The name users type (`--dump-ir-after NAME`).
    fn name(&self) -> &'static str;
    /// Rewrites `graph`; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError>;
}

/// Optimization level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum OptLevel {
    /// No passes.
    O0,
    /// Clean-up, QDQ lowering to integer ops, constant folding and BatchNormalization folding.
    O1,
    /// Everything.
    #[default]
    O2,
}

/// What to run and what to record.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    pub level: OptLevel,
    /// Dump the IR after this pass (a pass name, or `all`).
    pub dump_after: Option<String>,
    /// Time each pass (durations are always recorded; this asks callers to print them).
    pub time_passes: bool,
}

/// One run of one pass.
#[derive(Clone, Debug)]
pub struct PassRun {
    pub name: &'static str,
    pub changed: bool,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub duration: std::time::Duration,
}

/// Everything the runner recorded.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub runs: Vec<PassRun>,
    /// (pass name, IR text dump after it), in run order.
    pub dumps: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass '{name}' (valid: {})", .valid.join(", "))]
    UnknownPass {
        name: String,
        valid: Vec<&'static str>,
    },
    #[error("pass '{pass}' failed: {source}")]
    Failed {
        pass: &'static str,
        #[source]
        source: IrError,
    },
    #[error("pass '{pass}' broke the graph: {source}")]
    Broken {
        pass: &'static str,
        #[source]
        source: IrError,
    },
    #[error("the optimized graph is broken (an optimizer bug; -O0 avoids it): {source}")]
    BrokenPipeline {
        #[source]
        source: IrError,
    },
}

/// The pipeline: each pass with the lowest level that runs it, in run order. One line per pass.
macro_rules! declare_passes {
    ($($level:ident => $pass:expr,)*) => {
        fn pipeline() -> Vec<(OptLevel, Box<dyn Pass>)> {
            vec![$((OptLevel::$level, Box::new($pass) as Box<dyn Pass>)),*]
        }
    };
}

declare_passes! {
    O1 => crate::remove_identity::RemoveIdentity,
    O1 => crate::dead_code::DeadCode,
    // Before constant folding, which would turn dequantized weights into float constants.
    O1 => crate::quant::lower_qdq::LowerQdq,
    O1 => crate::const_fold::ConstFold,
    O2 => crate::transpose::TransposeCleanup,
    O2 => crate::matmul_add::MatMulAddToGemm,
    O1 => crate::fold_batchnorm::FoldBatchNorm,
    O2 => crate::fold_pad::FoldPad,
    O2 => crate::fuse_layernorm::FuseLayerNorm,
    O2 => crate::fuse_gelu::FuseGelu,
    O2 => crate::fuse_activation::FuseActivation,
    // Last: on the folded, fused graph, where a zero channel's constant value is known.
    O2 => crate::prune::exact::ExactPrune,
}

/// Upper bound on pipeline repetitions; every pass shrinks or canonicalizes, so this is rarely hit.
const MAX_ROUNDS: usize = 4;

/// The names of the passes `level` runs, in order (each once).
pub fn pass_names(level: OptLevel) -> Vec<&'static str> {
    let mut names = Vec::new();
    for (min, pass) in pipeline() {
        if level >= min && !names.contains(&pass.name()) {
            names.push(pass.name());
        }
    }
    names
}

/// Runs the passes of `options.level` on `graph`.
pub fn optimize(graph: &mut Graph, options: &PassOptions) -> Result<PassReport, PassError> {
    if let Some(name) = &options.dump_after {
        let valid = pass_names(OptLevel::O2);
        if name != "all" && !valid.contains(&name.as_str()) {
            return Err(PassError::UnknownPass {
                name: name.clone(),
                valid,
            });
        }
    }
    let passes: Vec<Box<dyn Pass>> = pipeline()
        .into_iter()
        .filter(|(min, _)| options.level >= *min)
        .map(|(_, p)| p)
        .collect();
    let mut report = PassReport::default();
    for _ in 0..MAX_ROUNDS {
        let mut any = false;
        for pass in &passes {
            let nodes_before = graph.node_count();
            let start = Instant::now();
            let changed = pass.run(graph).map_err(|source| PassError::Failed {
                pass: pass.name(),
                source,
            })?;
            let duration = start.elapsed();
            if cfg!(debug_assertions) {
                kiln_ir::verify::verify(graph).map_err(|source| PassError::Broken {
                    pass: pass.name(),
                    source,
                })?;
            }
            report.runs.push(PassRun {
                name: pass.name(),
                changed,
                nodes_before,
                nodes_after: graph.node_count(),
                duration,
            });
            if let Some(want) = &options.dump_after {
                if want == "all" || want == pass.name() {
                    report
                        .dumps
                        .push((pass.name().to_string(), kiln_ir::dump::to_text(graph)));
                }
            }
            any |= changed;
        }
        if !any {
            break;
        }
    }
    // Release builds skip the per-pass check above; this one always runs, so a pass bug ends
    // here as an error instead of reaching a backend as a graph that reads undefined values.
    kiln_ir::verify::verify(graph).map_err(|source| PassError::BrokenPipeline { source })?;
    Ok(report)
}
