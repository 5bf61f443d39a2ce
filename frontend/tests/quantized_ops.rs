//! The quantized ops kiln imports, against onnxruntime: every `com.microsoft` QLinear op, and
//! QLinearConv, QLinearMatMul, MatMulInteger and ConvInteger in forms the ONNX node tests leave
//! out (per-channel weights, bias, broadcasting, `channels_last`, int8 and uint8).
//!
//! `quantized/make_cases.py` writes each model with onnxruntime's outputs (numpy's for the one
//! form onnxruntime refuses) and the largest difference allowed, in units of the last place,
//! with the reason (`tolerance.txt`); each runs through kiln's reference interpreter. Also: the
//! QDQ form each QLinear op imports as, the integer ops' weights, and the errors for ops and
//! types kiln does not import.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln_frontend::{import_model, FrontendError};
use kiln_ir::{Graph, Op, Tensor};
use onnx_protobuf::{
    tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::Message;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The Python interpreter with onnx/onnxruntime/numpy: `$KILN_PYTHON`, else the repo's `.venv`.
fn python() -> PathBuf {
    std::env::var_os("KILN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// The generated cases (made once per run: the tests share them).
fn cases() -> &'static [PathBuf] {
    static CASES: OnceLock<Vec<PathBuf>> = OnceLock::new();
    CASES.get_or_init(generate)
}

fn generate() -> Vec<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let out = target.join("quantized-op-cases");
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/quantized/make_cases.py");
    let status = Command::new(python())
        .arg(script)
        .arg(&out)
        .status()
        .expect("running make_cases.py (set KILN_PYTHON or run scripts/setup-python.sh)");
    assert!(status.success(), "make_cases.py failed");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("the cases directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    dirs
}

fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    kiln_ir::npy::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn numbered(dir: &Path, stem: &str) -> Vec<Tensor> {
    (0..)
        .map(|i| dir.join(format!("{stem}_{i}.npy")))
        .take_while(|p| p.exists())
        .map(|p| read_npy(&p))
        .collect()
}

/// The largest difference allowed, in units of the last place (the first word of
/// `tolerance.txt`).
fn tolerance(dir: &Path) -> i64 {
    let text = std::fs::read_to_string(dir.join("tolerance.txt")).expect("tolerance.txt");
    text.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .expect("tolerance.txt starts with a number")
}

/// Compares integer tensors: (largest difference, number of elements that differ), or why they
/// cannot be compared.
fn int_difference(got: &Tensor, want: &Tensor) -> Result<(i64, usize), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!(
            "got {} {:?}, onnxruntime {} {:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
    }
    let (Some(g), Some(w)) = (got.to_i64_vec(), want.to_i64_vec()) else {
        return Err(format!("{} is not an integer type", got.dtype()));
    };
    let diffs: Vec<i64> = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).collect();
    Ok((
        diffs.iter().copied().max().unwrap_or(0),
        diffs.iter().filter(|&&d| d != 0).count(),
    ))
}

#[test]
fn quantized_ops_match_onnxruntime() {
    let cases = cases();
    assert!(cases.len() >= 30, "expected the cases, got {}", cases.len());
    let mut problems = Vec::new();
    for dir in cases {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let bytes = std::fs::read(dir.join("model.onnx")).expect("model.onnx");
        let graph = match import_model(&bytes, &Default::default()) {
            Ok(m) => m.graph,
            Err(e) => {
                problems.push(format!("{name}: import: {e}"));
                continue;
            }
        };
        let outputs = match kiln_ir::interp::run(&graph, &numbered(dir, "input")) {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("{name}: run: {e}"));
                continue;
            }
        };
        let allowed = tolerance(dir);
        for (k, (got, want)) in outputs.iter().zip(numbered(dir, "output")).enumerate() {
            match int_difference(got, &want) {
                Ok((max, differ)) => {
                    println!(
                        "{name}: output {k}: {differ} of {} elements differ, by at most {max}",
                        want.numel()
                    );
                    if max > allowed {
                        problems.push(format!(
                            "{name}: output {k} differs by {max} (allowed {allowed}) in {differ} elements"
                        ));
                    }
                }
                Err(e) => problems.push(format!("{name}: output {k}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The ops of the graph's nodes, in topological order.
fn op_names(graph: &Graph) -> Vec<&'static str> {
    graph
        .topo_order()
        .expect("acyclic")
        .into_iter()
        .map(|n| graph.node(n).op.name())
        .collect()
}

/// The case's imported graph, from the generated models.
fn imported(name: &str) -> Graph {
    let dir = cases()
        .iter()
        .find(|d| d.ends_with(name))
        .unwrap_or_else(|| panic!("no case {name}"));
    let bytes = std::fs::read(dir.join("model.onnx")).expect("model.onnx");
    import_model(&bytes, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .graph
}

#[test]
fn qlinear_ops_import_as_their_qdq_form() {
    let conv = imported("qlinearconv_u8_per_channel_bias");
    assert_eq!(
        op_names(&conv),
        [
            "DequantizeLinear",
            "DequantizeLinear",
            "DequantizeLinear",
            "Conv",
            "QuantizeLinear"
        ]
    );
    let nodes: Vec<_> = conv
        .topo_order()
        .expect("acyclic")
        .into_iter()
        .map(|n| conv.node(n).clone())
        .collect();
    // x per tensor, w per output channel, the bias per channel with scale x_scale * w_scale.
    assert_eq!(
        nodes[0].op,
        Op::DequantizeLinear {
            axis: None,
            block_size: 0
        }
    );
    assert_eq!(
        nodes[1].op,
        Op::DequantizeLinear {
            axis: Some(0),
            block_size: 0
        }
    );
    assert_eq!(nodes[2].inputs.len(), 2, "the bias has no zero point input");
    let value = |v| conv.value(v).const_tensor().expect("constant").clone();
    let x_scale = value(nodes[0].inputs[1]).as_f32().expect("f32")[0];
    let w_scale = value(nodes[1].inputs[1]);
    let b_scale = value(nodes[2].inputs[1]);
    let want: Vec<f32> = w_scale
        .as_f32()
        .expect("f32")
        .iter()
        .map(|w| x_scale * w)
        .collect();
    assert_eq!(b_scale.as_f32().expect("f32"), want.as_slice());
    assert_eq!(
        conv.node(conv.topo_order().expect("acyclic")[4]).name,
        "QLinearConv:y",
        "the last node carries the ONNX node's name"
    );

    for (case, ops) in [
        (
            "qlinearadd_uint8",
            &[
                "DequantizeLinear",
                "DequantizeLinear",
                "Add",
                "QuantizeLinear",
            ][..],
        ),
        (
            "qlinearmul_int8",
            &[
                "DequantizeLinear",
                "DequantizeLinear",
                "Mul",
                "QuantizeLinear",
            ],
        ),
        (
            "qlinearsigmoid_int8",
            &["DequantizeLinear", "Sigmoid", "QuantizeLinear"],
        ),
        (
            "qlinearleakyrelu_uint8",
            &["DequantizeLinear", "LeakyRelu", "QuantizeLinear"],
        ),
        (
            "qlinearconcat_int8",
            &[
                "DequantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "Concat",
                "QuantizeLinear",
            ],
        ),
        (
            "qlinearaveragepool_uint8",
            &["DequantizeLinear", "AveragePool", "QuantizeLinear"],
        ),
        (
            "qlinearglobalaveragepool_int8_channels_last",
            &[
                "Transpose",
                "DequantizeLinear",
                "GlobalAveragePool",
                "QuantizeLinear",
                "Transpose",
            ],
        ),
        (
            "qlinearmatmul_u8_per_column",
            &[
                "DequantizeLinear",
                "DequantizeLinear",
                "MatMul",
                "QuantizeLinear",
            ],
        ),
        ("matmulinteger_u8_i8_per_column", &["QMatMul"]),
        (
            "matmulinteger_i8_vector",
            &["Reshape", "QMatMul", "Reshape"],
        ),
        ("convinteger_u8_padded", &["QConv"]),
    ] {
        assert_eq!(op_names(&imported(case)), ops, "{case}");
    }
}

#[test]
fn integer_weights_are_stored_narrow_with_their_zero_point_subtracted() {
    // The weights' dtype after `w - w_zero_point`, and the op's input zero point.
    for (case, dtype) in [
        ("convinteger_u8_i8_strided", kiln_ir::DType::I8),
        ("convinteger_u8_padded", kiln_ir::DType::I16),
    ] {
        let graph = imported(case);
        let node = graph.node(graph.topo_order().expect("acyclic")[0]);
        assert!(
            matches!(
                node.op,
                Op::QConv {
                    x_zero_point: 9,
                    output: None,
                    ..
                }
            ),
            "{case}: {:?}",
            node.op
        );
        assert_eq!(graph.value(node.inputs[1]).ty.dtype, dtype, "{case}");
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals, on models built here.

fn value_info(name: &str, elem_type: i32, shape: &[i64]) -> ValueInfoProto {
    let mut dims = TensorShapeProto::new();
    for &d in shape {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.value = Some(tensor_shape_proto::dimension::Value::DimValue(d));
        dims.dim.push(dim);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = elem_type;
    tensor.shape = Some(dims).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    vi.type_ = Some(ty).into();
    vi
}

const UINT8: i32 = 2;
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;

/// A model of one node whose inputs are graph inputs `(name, type, shape)`.
fn one_node(
    domain: &str,
    op: &str,
    inputs: &[(&str, i32, &[i64])],
    output: (i32, &[i64]),
) -> Vec<u8> {
    let mut node = NodeProto::new();
    node.name = "n".into();
    node.op_type = op.into();
    node.domain = domain.into();
    node.input = inputs.iter().map(|(n, _, _)| n.to_string()).collect();
    node.output = vec!["y".into()];
    let mut graph = GraphProto::new();
    graph.name = "g".into();
    graph.node.push(node);
    graph.input = inputs
        .iter()
        .map(|(n, t, s)| value_info(n, *t, s))
        .collect();
    graph.output.push(value_info("y", output.0, output.1));
    let mut model = ModelProto::new();
    model.ir_version = 8;
    for (domain, version) in [("", 13), ("com.microsoft", 1)] {
        let mut o = OperatorSetIdProto::new();
        o.domain = domain.into();
        o.version = version;
        model.opset_import.push(o);
    }
    model.graph = Some(graph).into();
    model.write_to_bytes().expect("serializable")
}

fn import_error(bytes: &[u8]) -> FrontendError {
    match import_model(bytes, &Default::default()) {
        Ok(_) => panic!("imported a model kiln must refuse"),
        Err(e) => e,
    }
}

#[test]
fn other_com_microsoft_ops_are_refused_by_name() {
    let bytes = one_node(
        "com.microsoft",
        "FusedGemm",
        &[("a", FLOAT, &[2, 2]), ("b", FLOAT, &[2, 2])],
        (FLOAT, &[2, 2]),
    );
    let e = import_error(&bytes);
    let text = e.to_string();
    assert!(e.is_unsupported(), "{text}");
    assert!(
        text.contains("'n' (FusedGemm)") && text.contains("com.microsoft"),
        "{text}"
    );
    assert!(
        text.contains("QLinearAdd"),
        "names what kiln imports: {text}"
    );
    // A com.microsoft name in the default domain is still unknown there.
    let bytes = one_node(
        "",
        "QLinearSigmoid",
        &[
            ("x", UINT8, &[4]),
            ("s", FLOAT, &[]),
            ("z", UINT8, &[]),
            ("t", FLOAT, &[]),
            ("w", UINT8, &[]),
        ],
        (UINT8, &[4]),
    );
    assert!(import_error(&bytes).to_string().contains("unknown op"));
}

#[test]
fn unsupported_types_are_refused_with_node_op_and_reason() {
    // An int32 operand: kiln imports the op for int8 and uint8.
    let bytes = one_node(
        "com.microsoft",
        "QLinearSigmoid",
        &[
            ("x", 6, &[4]),
            ("x_scale", FLOAT, &[]),
            ("x_zero_point", 6, &[]),
            ("y_scale", FLOAT, &[]),
        ],
        (6, &[4]),
    );
    let text = import_error(&bytes).to_string();
    assert!(
        text.contains("'n' (QLinearSigmoid)") && text.contains("int8 and uint8"),
        "{text}"
    );
    // float16 scales.
    let bytes = one_node(
        "",
        "QLinearMatMul",
        &[
            ("a", UINT8, &[2, 3]),
            ("a_scale", FLOAT16, &[]),
            ("a_zero_point", UINT8, &[]),
            ("b", UINT8, &[3, 2]),
            ("b_scale", FLOAT16, &[]),
            ("b_zero_point", UINT8, &[]),
            ("y_scale", FLOAT16, &[]),
            ("y_zero_point", UINT8, &[]),
        ],
        (UINT8, &[2, 2]),
    );
    let text = import_error(&bytes).to_string();
    assert!(
        text.contains("'n' (QLinearMatMul)") && text.contains("float16"),
        "{text}"
    );
}

#[test]
fn integer_ops_need_constant_weights() {
    let bytes = one_node(
        "",
        "MatMulInteger",
        &[("a", UINT8, &[2, 3]), ("b", UINT8, &[3, 2])],
        (6, &[2, 2]),
    );
    match import_error(&bytes) {
        FrontendError::NeedsConstant { node, input, .. } => {
            assert_eq!((node.as_str(), input.as_str()), ("n", "b"))
        }
        e => panic!("expected NeedsConstant, got {e}"),
    }
}
