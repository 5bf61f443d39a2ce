//! kiln's ONNX frontend: decodes `.onnx` files with `onnx-protobuf` and lowers them to the IR.
//!
//! This is the only crate that knows ONNX's wire format.

pub mod error;
pub mod functions;
pub mod import;
pub mod ops;
pub mod survey;
pub mod tensor;

pub use error::FrontendError;
pub use import::{import_model, ImportOptions, Model};
pub use ops::supported_ops;
pub use survey::{survey, Survey};
pub use tensor::load_tensor_pb;
