//! What the importer asks for to get static shapes, on models built here: dimensions written
//! as -1 or 0 are dynamic (the error names the input and the `--input-shape` to give), other
//! negative dimensions are invalid, initializers keep their 0-sized dimensions, a value that
//! must be a compile-time constant names the graph inputs to bind, and bound inputs
//! (`ImportOptions::const_inputs`) become constants of the declared type.

use std::collections::HashMap;

use kiln_frontend::{import_model, FrontendError, ImportOptions};
use kiln_ir::{DType, Tensor};
use onnx_protobuf::{
    tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::Message;

const FLOAT: i32 = 1;
const INT64: i32 = 7;

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

fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = name.into();
    n.op_type = op.into();
    n.input = inputs.iter().map(|i| i.to_string()).collect();
    n.output = vec![output.into()];
    n
}

/// `n` with the integer attribute `name`.
fn with_int(mut n: NodeProto, name: &str, value: i64) -> NodeProto {
    let mut a = onnx_protobuf::AttributeProto::new();
    a.name = name.into();
    a.type_ = onnx_protobuf::attribute_proto::AttributeType::INT.into();
    a.i = value;
    n.attribute.push(a);
    n
}

fn int64_initializer(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = INT64;
    t.dims = dims.to_vec();
    t.int64_data = values.to_vec();
    t
}

fn float_initializer(name: &str, dims: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = FLOAT;
    t.dims = dims.to_vec();
    t
}

/// An opset-13 model; its output `y` is declared with a dynamic shape of `out_rank` dims.
fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
    out_rank: usize,
) -> Vec<u8> {
    let mut graph = GraphProto::new();
    graph.name = "g".into();
    graph.node = nodes;
    graph.input = inputs;
    graph.initializer = initializers;
    graph
        .output
        .push(value_info("y", FLOAT, &vec![-1; out_rank]));
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut o = OperatorSetIdProto::new();
    o.version = 13;
    m.opset_import.push(o);
    m.graph = Some(graph).into();
    m.write_to_bytes().expect("serializable")
}

fn relu_on(dims: &[i64]) -> Vec<u8> {
    model(
        vec![node("relu", "Relu", &["x"], "y")],
        vec![value_info("x", FLOAT, dims)],
        vec![],
        dims.len(),
    )
}

/// `y = Relu(Reshape(x, shape))` with `shape` a graph input declared `i64[shape_dims]`.
fn reshape_with_shape_input(shape_dims: &[i64]) -> Vec<u8> {
    model(
        vec![
            node("reshape", "Reshape", &["x", "shape"], "r"),
            node("relu", "Relu", &["r"], "y"),
        ],
        vec![
            value_info("x", FLOAT, &[2, 3, 4]),
            value_info("shape", INT64, shape_dims),
        ],
        vec![],
        2,
    )
}

fn options(shapes: &[(&str, &[usize])], consts: &[(&str, Tensor)]) -> ImportOptions {
    ImportOptions {
        input_shapes: shapes
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect(),
        const_inputs: consts
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect::<HashMap<_, _>>(),
    }
}

fn error(bytes: &[u8], options: &ImportOptions) -> FrontendError {
    match import_model(bytes, options) {
        Ok(_) => panic!("imported a model kiln must refuse"),
        Err(e) => e,
    }
}

fn i64s(values: &[i64]) -> Tensor {
    Tensor::from_i64(vec![values.len()], values.to_vec()).expect("tensor")
}

#[test]
fn dims_written_as_minus_one_or_zero_ask_for_input_shape() {
    let bytes = relu_on(&[-1, 3, 0]);
    let e = error(&bytes, &ImportOptions::default());
    let FrontendError::Input { name, reason } = &e else {
        panic!("expected an input error, got {e}");
    };
    assert_eq!(name, "x");
    for fragment in [
        "dimension 0 is dynamic (-1)",
        "dimension 2 is 0, which exporters write for a dynamic size",
        "give them with --input-shape x=D0,3,D2",
        "(0 there for an input that really is empty)",
    ] {
        assert!(reason.contains(fragment), "lacks '{fragment}': {reason}");
    }
    assert!(!reason.contains("negative"), "{reason}");
    // --input-shape gives the sizes; 0 there is taken at its word.
    for dims in [[2, 3, 5], [2, 3, 0]] {
        let m = import_model(&bytes, &options(&[("x", &dims)], &[])).expect("imports");
        let x = m.graph.inputs()[0];
        assert_eq!(m.graph.value(x).ty.shape, dims);
    }
}

#[test]
fn other_negative_dims_are_invalid() {
    let e = error(&relu_on(&[1, -3]), &ImportOptions::default());
    assert!(
        e.to_string()
            .contains("input 'x': dimension 1 is negative (-3)"),
        "{e}"
    );
}

#[test]
fn initializers_keep_zero_sized_dims() {
    // Concat with an empty initializer: a real 0-sized tensor, not a dynamic dimension.
    let bytes = model(
        vec![with_int(
            node("concat", "Concat", &["x", "empty"], "y"),
            "axis",
            1,
        )],
        vec![value_info("x", FLOAT, &[2, 3])],
        vec![float_initializer("empty", &[2, 0])],
        2,
    );
    let m = import_model(&bytes, &ImportOptions::default()).expect("imports");
    let y = m.graph.outputs()[0];
    assert_eq!(m.graph.value(y).ty.shape, [2, 3]);
}

#[test]
fn needs_constant_names_the_graph_inputs_to_bind() {
    // The shape is itself a graph input.
    let e = error(&reshape_with_shape_input(&[2]), &ImportOptions::default());
    let FrontendError::NeedsConstant { input, sources, .. } = &e else {
        panic!("expected NeedsConstant, got {e}");
    };
    assert_eq!(
        (input.as_str(), sources.as_slice()),
        ("shape", &["shape".to_string()][..])
    );
    assert!(
        e.to_string().ends_with(
            "input 'shape' must be a compile-time constant (kiln compiles for static shapes); \
             bake it into the model with --const-input shape=FILE.npy"
        ),
        "{e}"
    );
    // The shape is computed from a graph input `s` and from `Shape(x)` (static, so not a
    // source): `s` is what to bind.
    let bytes = model(
        vec![
            node("shape_of_x", "Shape", &["x"], "xs"),
            node("first", "Gather", &["xs", "zero"], "d0"),
            node("plus", "Add", &["s", "one"], "s1"),
            with_int(node("cat", "Concat", &["d0", "s1"], "target"), "axis", 0),
            node("reshape", "Reshape", &["x", "target"], "y"),
        ],
        vec![
            value_info("x", FLOAT, &[2, 3, 4]),
            value_info("s", INT64, &[1]),
        ],
        vec![
            int64_initializer("zero", &[1], &[0]),
            int64_initializer("one", &[1], &[1]),
        ],
        2,
    );
    let e = error(&bytes, &ImportOptions::default());
    let FrontendError::NeedsConstant { input, sources, .. } = &e else {
        panic!("expected NeedsConstant, got {e}");
    };
    assert_eq!(
        (input.as_str(), sources.as_slice()),
        ("target", &["s".to_string()][..])
    );
    assert!(
        e.to_string().contains(
            "it is computed from graph input 's': bake that into the model with --const-input s=FILE.npy"
        ),
        "{e}"
    );
    // Binding it resolves the shape: 2 x (11 + 1) = 24 elements.
    let m = import_model(&bytes, &options(&[], &[("s", i64s(&[11]))])).expect("imports");
    assert_eq!(m.graph.inputs().len(), 1);
    assert_eq!(m.graph.value(m.graph.outputs()[0]).ty.shape, [2, 12]);
}

#[test]
fn const_inputs_become_constants_of_the_declared_type() {
    // Declared i64[2]; and declared with a dynamic length, which any length matches.
    for declared in [[2], [-1]] {
        let bytes = reshape_with_shape_input(&declared);
        let m = import_model(&bytes, &options(&[], &[("shape", i64s(&[4, 6]))])).expect("imports");
        let g = &m.graph;
        let names: Vec<&str> = g
            .inputs()
            .iter()
            .map(|&v| g.value(v).name.as_str())
            .collect();
        assert_eq!(names, ["x"]);
        assert_eq!(g.value(g.outputs()[0]).ty.shape, [4, 6]);
    }
    let bytes = reshape_with_shape_input(&[2]);
    let wrong_dtype = Tensor::from_f32(vec![2], vec![4.0, 6.0]).expect("tensor");
    assert_eq!(wrong_dtype.dtype(), DType::F32);
    for (name, value, fragment) in [
        (
            "shape",
            wrong_dtype,
            "input 'shape': the --const-input value is f32[2] but the model declares i64[2]",
        ),
        (
            "shape",
            i64s(&[2, 3, 4]),
            "input 'shape': the --const-input value is i64[3] but the model declares i64[2]",
        ),
        (
            "nope",
            i64s(&[4, 6]),
            "input 'nope': --const-input names an input the model does not have (its inputs: x, shape)",
        ),
    ] {
        let e = error(&bytes, &options(&[], &[(name, value)]));
        assert!(e.to_string().contains(fragment), "{e}");
    }
}
