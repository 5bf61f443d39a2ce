//! `kiln compare`: one model on several targets under several named configurations (sets of
//! compile flags). Every (target, config) pair is built and run on its QEMU board in
//! parallel, through the same library calls as `kiln verify` (and, with labelled data, `kiln
//! eval` on the host build of each config), and one table shows flash, RAM, stack,
//! instructions, error and accuracy. A pair that fails is a row with its error. `--svg` and
//! `--html` draw the results (`report_svg.rs`, `report_html.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_backends::c::COptions;
use kiln_ir::Tensor;
use kiln_targets::compare::compare_outputs;
use kiln_targets::{Board, BoardOptions, BoardRun, Target, TargetError};
use serde::Serialize;

use super::compile::CodegenArgs;
use super::eval::{evaluate, real_outputs, Accuracy, EvalBackend};
use super::load::{prepare, Prepared};
use super::profile::{layer_profile, layers_json, profiling, Profile};
use super::report_table::{csv, errors, table};
use super::run::bind_inputs;
use super::verify::reference_outputs;
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Targets, comma-separated (the names `kiln verify --target` takes); TARGET@BOARD runs a
    /// target on another of its boards (e.g. rv32imac@sifive_e).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "cortex-m4,cortex-m55,rv32imac"
    )]
    targets: Vec<String>,
    /// Configurations, comma-separated: O0, O1, O2 (graph and code optimization levels), Os
    /// (-O2 with the C compiled for size, --cflag=-Os), int8 (-O2 --quantize int8, calibrated
    /// on --calibrate), or NAME=FLAGS with any of `kiln verify`'s compile flags, e.g.
    /// tile8="--oc-tile 8".
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "O0,O2,Os"
    )]
    configs: Vec<String>,
    /// One more configuration NAME=FLAGS (repeatable; its flags may contain commas).
    #[arg(long = "config", value_name = "NAME=FLAGS")]
    extra_configs: Vec<String>,
    /// Calibration data for the configurations that quantize (as `kiln compile --calibrate`).
    #[arg(long, value_name = "DATA")]
    calibrate: Vec<String>,
    /// Labelled samples ([N, ...] .npy): each config's top-1 on its host build, as `kiln eval
    /// --backend c` measures it.
    #[arg(long, value_name = "X.npy", requires = "labels")]
    data: Option<PathBuf>,
    /// Labels for --data: a .npy of N class indices.
    #[arg(long, value_name = "Y.npy", requires = "data")]
    labels: Option<PathBuf>,
    /// Evaluate at most N samples of --data.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Input of the board runs (as `kiln verify --input`); default: the seeded random input.
    #[arg(long = "input", value_name = "[NAME=]FILE.npy")]
    inputs: Vec<String>,
    /// How to print the results.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also draw flash against instructions, one point per pair, as an SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also write a self-contained HTML page: the table, the scatter plot and each pair's
    /// instructions per layer (implies --layers).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also profile every pair per layer (a second, profiling build each, as `kiln profile`);
    /// JSON rows then carry their layers.
    #[arg(long)]
    layers: bool,
    /// Pairs built and run at once (default: the number of cores).
    #[arg(short = 'j', long, value_name = "N")]
    jobs: Option<usize>,
    /// Time limit for each emulator run, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text columns.
    Table,
    /// A GitHub-flavoured Markdown table.
    Markdown,
    /// Comma-separated values with a header line (units in the column names).
    Csv,
    /// One JSON document (fields in the README).
    Json,
}

/// The compile flags a configuration may set: those `kiln verify` takes.
#[derive(Debug, Parser)]
#[command(name = "config", no_binary_name = true, disable_help_flag = true)]
struct ConfigFlags {
    #[command(flatten)]
    codegen: CodegenArgs,
    #[command(flatten)]
    opt: super::OptArgs,
    #[command(flatten)]
    quant: super::quantize::QuantArgs,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
    /// Extra flag for the cross compiler.
    #[arg(long = "cflag", allow_hyphen_values = true)]
    cflags: Vec<String>,
}

/// A named configuration and its flags.
#[derive(Debug)]
pub struct Config {
    pub name: String,
    /// The flags as written (for reports).
    pub flags: Vec<String>,
    parsed: Result<ConfigFlags, String>,
}

/// The flags of the built-in configurations.
fn builtin(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "O0" => &["-O0"],
        "O1" => &["-O1"],
        "O2" => &["-O2"],
        "Os" => &["-O2", "--cflag=-Os"],
        "int8" => &["-O2", "--quantize", "int8"],
        _ => return None,
    })
}

/// Splits a flag string at whitespace; single or double quotes group words.
fn split_flags(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for ch in text.chars() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(ch),
            None if ch == '"' || ch == '\'' => {
                quote = Some(ch);
                word.get_or_insert_with(String::new);
            }
            None if ch.is_whitespace() => words.extend(word.take()),
            None => word.get_or_insert_with(String::new).push(ch),
        }
    }
    if quote.is_some() {
        return Err(format!("unbalanced quote in '{text}'"));
    }
    words.extend(word);
    Ok(words)
}

/// Parses one `--configs` item; `calibrate` is handed to the configurations that quantize
/// without calibration data of their own.
fn parse_config(spec: &str, calibrate: &[String]) -> Config {
    let (name, flags) = match spec.split_once('=') {
        Some((name, flags)) => (name.trim().to_string(), split_flags(flags)),
        None => {
            let name = spec.trim().to_string();
            let flags = builtin(&name)
                .map(|f| f.iter().map(|s| s.to_string()).collect())
                .ok_or_else(|| {
                    format!("unknown configuration '{name}': use O0, O1, O2, Os, int8 or NAME=FLAGS (e.g. tile8=\"--oc-tile 8\")")
                });
            (name, flags)
        }
    };
    let flags_for_report = flags.clone().unwrap_or_default();
    let parsed = flags.and_then(|flags| {
        let mut parsed = ConfigFlags::try_parse_from(&flags)
            .map_err(|e| format!("configuration '{name}': {}", e.to_string().trim()))?;
        if parsed.quant.quantize.is_some() && parsed.quant.calibrate.is_empty() {
            if calibrate.is_empty() {
                return Err(format!(
                    "configuration '{name}' quantizes and needs calibration data: add --calibrate DATA"
                ));
            }
            parsed.quant.calibrate = calibrate.to_vec();
        }
        Ok(parsed)
    });
    Config {
        name,
        flags: flags_for_report,
        parsed,
    }
}

/// A configuration prepared for its board runs (target-independent work, done once).
struct Built {
    prepared: Prepared,
    c: COptions,
    cflags: Vec<String>,
    inputs: Vec<Tensor>,
    /// What `kiln verify` checks against.
    expected: Vec<Tensor>,
    /// The float model's outputs, for an integer build whose inputs the float model takes.
    float_expected: Option<Vec<Tensor>>,
    macs: u64,
    io_bytes: u64,
    accuracy: Option<Result<Accuracy, String>>,
}

fn build_config(
    args: &CompareArgs,
    flags: &ConfigFlags,
    bars: &[ProgressBar],
) -> anyhow::Result<Built> {
    let level = flags.opt.level_or(kiln_passes::OptLevel::O2);
    let c = flags.codegen.c_options(level)?;
    let prepared = prepare(
        &args.model,
        &flags.opt,
        &flags.quant,
        &flags.prune,
        kiln_passes::OptLevel::O2,
    )?;
    let graph = &prepared.model.graph;
    let (inputs, _) = bind_inputs(graph, &args.inputs)?;
    let expected = reference_outputs(&prepared, &inputs)?;
    let imported = &prepared.imported_graph;
    let same_inputs = imported.inputs().len() == inputs.len()
        && imported
            .inputs()
            .iter()
            .zip(&inputs)
            .all(|(&v, t)| imported.value(v).ty.dtype == t.dtype());
    let float_expected = if prepared.is_integer() && same_inputs {
        Some(
            kiln_ir::interp::run(imported, &inputs)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("the float reference failed")?,
        )
    } else {
        None
    };
    let macs = kiln_passes::summarize(graph)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .macs;
    let io_bytes = graph
        .inputs()
        .iter()
        .chain(graph.outputs())
        .map(|&v| graph.value(v).ty.size_bytes() as u64)
        .sum();
    let accuracy = match (&args.data, &args.labels) {
        (Some(data), Some(labels)) => {
            for bar in bars {
                bar.set_message("evaluating the host build on --data");
            }
            Some(
                evaluate(
                    &prepared,
                    &flags.opt,
                    data,
                    labels,
                    EvalBackend::C,
                    &c,
                    args.limit,
                )
                .map_err(|e| format!("{e:#}")),
            )
        }
        _ => None,
    };
    Ok(Built {
        c,
        cflags: flags.cflags.clone(),
        inputs,
        expected,
        float_expected,
        macs,
        io_bytes,
        accuracy,
        prepared,
    })
}

/// One row of the results: everything measured for one (target, config) pair. Serialized as
/// is for `--format json` (the README documents every field); sizes are bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub target: String,
    pub board: String,
    pub config: String,
    pub flags: String,
    /// `ok`, `mismatch` (ran, but the outputs fail `kiln verify`'s check) or `error`.
    pub status: &'static str,
    pub error: Option<String>,
    pub flash_bytes: Option<u64>,
    pub code_bytes: Option<u64>,
    pub weight_bytes: Option<u64>,
    pub rodata_bytes: Option<u64>,
    pub data_bytes: Option<u64>,
    pub ram_bytes: Option<u64>,
    pub static_ram_bytes: Option<u64>,
    pub arena_bytes: Option<u64>,
    pub io_bytes: Option<u64>,
    pub stack_bytes: Option<u64>,
    pub instructions: Option<u64>,
    pub macs: Option<u64>,
    pub instructions_per_mac: Option<f64>,
    pub max_abs_error_vs_float: Option<f64>,
    pub check_passed: Option<bool>,
    pub check_max_abs_error: Option<f64>,
    pub check_tolerance: Option<f64>,
    pub eval_samples: Option<usize>,
    pub top1: Option<f64>,
    pub float_top1: Option<f64>,
    pub eval_error: Option<String>,
    pub fits: Option<bool>,
    pub board_flash_bytes: u64,
    pub board_ram_bytes: u64,
    /// With `--layers`: the sum of the layers' instructions in the profiling build.
    pub layers_instructions: Option<u64>,
    pub layers: Option<serde_json::Value>,
    #[serde(skip)]
    pub profile: Option<Profile>,
}

impl Record {
    fn empty(target: &Target, board: &Board, config: &Config) -> Record {
        Record {
            target: target.name.to_string(),
            board: board.name.to_string(),
            config: config.name.clone(),
            flags: config.flags.join(" "),
            status: "error",
            error: None,
            flash_bytes: None,
            code_bytes: None,
            weight_bytes: None,
            rodata_bytes: None,
            data_bytes: None,
            ram_bytes: None,
            static_ram_bytes: None,
            arena_bytes: None,
            io_bytes: None,
            stack_bytes: None,
            instructions: None,
            macs: None,
            instructions_per_mac: None,
            max_abs_error_vs_float: None,
            check_passed: None,
            check_max_abs_error: None,
            check_tolerance: None,
            eval_samples: None,
            top1: None,
            float_top1: None,
            eval_error: None,
            fits: None,
            board_flash_bytes: board.flash.length,
            board_ram_bytes: board.ram.length,
            layers_instructions: None,
            layers: None,
            profile: None,
        }
    }

    /// A pair that ran (and, when asked, profiled).
    fn measured(&mut self, built: &Built, run: &BoardRun, profile: Option<Profile>) {
        let s = &run.sizes;
        let prefix = format!("{}_w", built.c.name);
        let weights = run
            .symbols
            .iter()
            .filter(|sym| {
                !sym.code
                    && sym
                        .name
                        .strip_prefix(&prefix)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|sym| sym.size)
            .sum();
        let check = compare_outputs(&run.outputs, &built.expected);
        let graph = &built.prepared.model.graph;
        let vs_float = if !built.prepared.is_integer() {
            Some(check.max_abs_error)
        } else {
            built.float_expected.as_ref().map(|want| {
                max_abs_diff(
                    &real_outputs(graph, &run.outputs),
                    &real_outputs(&built.prepared.imported_graph, want),
                )
            })
        };
        self.status = if check.passed { "ok" } else { "mismatch" };
        self.flash_bytes = Some(run.flash_bytes());
        self.code_bytes = Some(s.text);
        self.weight_bytes = Some(weights);
        self.rodata_bytes = Some(s.rodata);
        self.data_bytes = Some(s.data);
        self.ram_bytes = Some(run.ram_bytes());
        self.static_ram_bytes = Some(s.static_ram_bytes());
        self.arena_bytes = Some(run.arena_bytes);
        self.io_bytes = Some(built.io_bytes);
        self.stack_bytes = Some(run.stack_bytes);
        self.instructions = Some(run.instructions);
        self.macs = Some(built.macs);
        self.instructions_per_mac =
            (built.macs > 0).then(|| run.instructions as f64 / built.macs as f64);
        self.max_abs_error_vs_float = vs_float;
        self.check_passed = Some(check.passed);
        self.check_max_abs_error = Some(check.max_abs_error);
        self.check_tolerance = Some(check.tolerance);
        self.fits = (!run.board.user_mode).then(|| {
            run.flash_bytes() <= run.board.flash.length && run.ram_bytes() <= run.board.ram.length
        });
        self.layers_instructions = profile.as_ref().map(Profile::layers_sum);
        self.layers = profile.as_ref().map(layers_json);
        self.profile = profile;
    }

    fn accuracy(&mut self, accuracy: &Option<Result<Accuracy, String>>) {
        match accuracy {
            Some(Ok(a)) => {
                self.eval_samples = Some(a.samples);
                self.top1 = Some(a.top1);
                self.float_top1 = a.float.as_ref().map(|f| f.top1);
            }
            Some(Err(e)) => self.eval_error = Some(e.clone()),
            None => {}
        }
    }
}

/// Largest |a - b| over all outputs; a NaN on one side only counts as infinite.
fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let mut max = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        if x.len() != y.len() {
            return f64::INFINITY;
        }
        for (p, q) in x.iter().zip(y) {
            let e = if p.is_nan() && q.is_nan() {
                0.0
            } else {
                (p - q).abs()
            };
            max = max.max(if e.is_nan() { f64::INFINITY } else { e });
        }
    }
    max
}

/// Builds, runs (and with `layers` profiles) one pair.
fn run_pair(
    built: &Built,
    target: &'static Target,
    board: &'static Board,
    timeout: Duration,
    layers: bool,
    bar: &ProgressBar,
    record: &mut Record,
) {
    let options = BoardOptions {
        cflags: built.cflags.clone(),
        timeout,
        ..BoardOptions::default()
    };
    let graph = &built.prepared.model.graph;
    bar.set_message("building and running on the board");
    let run =
        match kiln_targets::run_on_board(graph, &built.inputs, &built.c, target, board, &options) {
            Ok(run) => run,
            Err(e) => {
                if matches!(e, TargetError::DoesNotFit { .. }) {
                    record.fits = Some(false);
                }
                record.error = Some(e.to_string());
                return;
            }
        };
    let profile = if layers {
        bar.set_message("profiling layers");
        let c = profiling(&built.c);
        match kiln_targets::run_on_board(graph, &built.inputs, &c, target, board, &options)
            .map_err(anyhow::Error::new)
            .and_then(|p| layer_profile(graph, &built.c, &p))
        {
            Ok(p) => Some(p),
            Err(e) => {
                record.error = Some(format!("the layer profile failed: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    record.measured(built, &run, profile);
}

/// Work for the pool: prepare a configuration, or run a pair whose configuration is ready.
enum Task {
    Prepare(usize),
    Pair(usize),
}

enum ConfigState {
    Pending,
    Running,
    Ready,
}

struct Queue {
    next_prepare: usize,
    pairs: Vec<usize>,
    states: Vec<ConfigState>,
}

pub fn compare(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut pairs_spec: Vec<(&'static Target, &'static Board)> = Vec::new();
    for spec in &args.targets {
        let (t, b) = match spec.split_once('@') {
            Some((t, b)) => (t.trim(), Some(b.trim())),
            None => (spec.trim(), None),
        };
        pairs_spec.push(kiln_targets::resolve(t, b).map_err(anyhow::Error::new)?);
    }
    let mut configs: Vec<Config> = args
        .configs
        .iter()
        .chain(&args.extra_configs)
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_config(s, &args.calibrate))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for c in &mut configs {
        if !seen.insert(c.name.clone()) {
            c.parsed = Err(format!("configuration '{}' is given twice", c.name));
        }
    }
    if configs.is_empty() || pairs_spec.is_empty() {
        anyhow::bail!("nothing to compare: give --targets and --configs");
    }
    // A configuration that does not parse is the user's typo, not a failed pair: say so before
    // building anything.
    let bad: Vec<&str> = configs
        .iter()
        .filter_map(|c| c.parsed.as_ref().err().map(String::as_str))
        .collect();
    if !bad.is_empty() {
        anyhow::bail!("{}", bad.join("; "));
    }
    if args.inputs.is_empty() && args.format != Format::Json {
        eprintln!("note: no --input given: the boards run the seeded random input of `kiln run`");
    }
    // Pairs in table order: by target, then by configuration.
    let pairs: Vec<(usize, usize)> = (0..pairs_spec.len())
        .flat_map(|t| (0..configs.len()).map(move |c| (t, c)))
        .collect();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let layers = args.layers || args.html.is_some();
    super::progress::hide_nested();
    let multi = MultiProgress::new();
    let width = pairs_spec
        .iter()
        .map(|(t, _)| t.name.len())
        .max()
        .unwrap_or(0)
        + configs.iter().map(|c| c.name.len()).max().unwrap_or(0)
        + 3;
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {{prefix:<{width}}} {{elapsed:>4}} {{wide_msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<ProgressBar> = pairs
        .iter()
        .map(|&(t, c)| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{} / {}", pairs_spec[t].0.name, configs[c].name));
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(150));
            bar
        })
        .collect();
    let built: Vec<OnceLock<Result<Built, String>>> =
        configs.iter().map(|_| OnceLock::new()).collect();
    let records: Vec<Mutex<Option<Record>>> = pairs.iter().map(|_| Mutex::new(None)).collect();
    let queue = Mutex::new(Queue {
        next_prepare: 0,
        pairs: (0..pairs.len()).collect(),
        states: configs.iter().map(|_| ConfigState::Pending).collect(),
    });
    let ready = Condvar::new();
    let timeout = Duration::from_secs(args.timeout);
    let next_task = || -> Option<Task> {
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if q.next_prepare < configs.len() {
                let i = q.next_prepare;
                q.next_prepare += 1;
                q.states[i] = ConfigState::Running;
                return Some(Task::Prepare(i));
            }
            let runnable = q
                .pairs
                .iter()
                .position(|&p| matches!(q.states[pairs[p].1], ConfigState::Ready));
            if let Some(pos) = runnable {
                return Some(Task::Pair(q.pairs.remove(pos)));
            }
            if q.pairs.is_empty() {
                return None;
            }
            q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.min(pairs.len()) {
            s.spawn(|| {
                while let Some(task) = next_task() {
                    match task {
                        Task::Prepare(ci) => {
                            let config_bars: Vec<ProgressBar> = pairs
                                .iter()
                                .zip(&bars)
                                .filter(|((_, c), _)| *c == ci)
                                .map(|(_, b)| b.clone())
                                .collect();
                            for bar in &config_bars {
                                bar.set_message("preparing the configuration");
                            }
                            let result = match &configs[ci].parsed {
                                Ok(flags) => build_config(args, flags, &config_bars)
                                    .map_err(|e| format!("{e:#}")),
                                Err(e) => Err(e.clone()),
                            };
                            for bar in &config_bars {
                                bar.set_message("waiting for a free job");
                            }
                            let _ = built[ci].set(result);
                            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                            q.states[ci] = ConfigState::Ready;
                            ready.notify_all();
                        }
                        Task::Pair(pi) => {
                            let (ti, ci) = pairs[pi];
                            let (target, board) = pairs_spec[ti];
                            let bar = &bars[pi];
                            let mut record = Record::empty(target, board, &configs[ci]);
                            match built[ci].get() {
                                Some(Ok(b)) => {
                                    record.accuracy(&b.accuracy);
                                    run_pair(b, target, board, timeout, layers, bar, &mut record);
                                }
                                Some(Err(e)) => record.error = Some(e.clone()),
                                None => record.error = Some("not prepared".into()),
                            }
                            bar.finish_with_message(match &record.error {
                                Some(e) => {
                                    format!("failed: {}", e.lines().next().unwrap_or_default())
                                }
                                None => format!(
                                    "done: {} instructions, {} bytes of flash",
                                    record.instructions.unwrap_or(0),
                                    record.flash_bytes.unwrap_or(0)
                                ),
                            });
                            *records[pi].lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
                        }
                    }
                }
            });
        }
    });
    let _ = multi.clear();
    let records: Vec<Record> = records
        .into_iter()
        .filter_map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let elapsed = started.elapsed();
    let model = args.model.model.display().to_string();
    match args.format {
        Format::Table => print!("{}", table(&records, false)),
        Format::Markdown => print!("{}", table(&records, true)),
        Format::Csv => print!("{}", csv(&records)),
        Format::Json => {
            let doc = serde_json::json!({
                "schema": "kiln-compare/1",
                "model": model,
                "targets": pairs_spec.iter().map(|(t, b)| serde_json::json!({"target": t.name, "board": b.name})).collect::<Vec<_>>(),
                "configs": configs.iter().map(|c| serde_json::json!({"name": c.name, "flags": c.flags.join(" ")})).collect::<Vec<_>>(),
                "rows": records,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    if args.format != Format::Json && args.format != Format::Csv {
        print!("{}", errors(&records));
    }
    let scatter = || super::report_svg::scatter(&records, &model);
    if let Some(path) = &args.svg {
        super::load::write_atomically(path, scatter()?.as_bytes())?;
    }
    if let Some(path) = &args.html {
        let page = super::report_html::page(&model, &records, &scatter()?);
        super::load::write_atomically(path, page.as_bytes())?;
    }
    eprintln!(
        "{} pairs ({} targets x {} configs) in {:.1} s with {} jobs",
        records.len(),
        pairs_spec.len(),
        configs.len(),
        elapsed.as_secs_f64(),
        jobs
    );
    Ok(if records.iter().all(|r| r.status == "ok") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::super::report_table::CSV_FIELDS;
    use super::*;

    #[test]
    fn csv_fields_are_the_record_fields() {
        let config = parse_config("O2", &[]);
        let (t, b) = kiln_targets::resolve("cortex-m4", None).unwrap();
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(Record::empty(t, b, &config))
        else {
            panic!("a record serializes to an object");
        };
        let mut fields: Vec<&str> = CSV_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(fields, map.keys().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn splits_flags_with_quotes() {
        assert_eq!(
            split_flags("--oc-tile 8  --cflag='-Os -g'").unwrap(),
            vec!["--oc-tile", "8", "--cflag=-Os -g"]
        );
        assert!(split_flags("--cflag='-Os").is_err());
    }

    #[test]
    fn parses_builtin_and_user_configs() {
        let c = parse_config("Os", &[]);
        assert_eq!(c.flags, vec!["-O2", "--cflag=-Os"]);
        assert_eq!(c.parsed.unwrap().cflags, vec!["-Os"]);
        let c = parse_config("tile8=--oc-tile 8 -O1", &[]);
        assert_eq!(c.name, "tile8");
        assert!(c.parsed.is_ok());
        assert!(parse_config("int8", &[]).parsed.is_err());
        assert!(parse_config("int8", &["c.npy".into()]).parsed.is_ok());
        assert!(parse_config("bogus", &[]).parsed.is_err());
        assert!(parse_config("x=--no-such-flag", &[]).parsed.is_err());
    }
}
