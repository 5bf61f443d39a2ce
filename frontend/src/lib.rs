//! kiln's ONNX frontend: decodes `.onnx` files with `onnx-protobuf` and lowers them to the IR,
//! and writes IR graphs back as ONNX models (`export/`).
//!
//! This is the only crate that knows ONNX's wire format.

pub mod error;
pub mod export;
pub mod functions;
pub mod import;
pub mod ops;
pub mod survey;
pub mod tensor;

pub use error::FrontendError;
pub use export::{export_model, ExportError};
pub use import::{import_model, ImportOptions, Model};
pub use ops::supported_ops;
pub use survey::{survey, Survey};
pub use tensor::load_tensor_pb;
