//! kiln's graph IR: typed tensors with static shapes, a closed op set, a verifier, a stable text
//! dump, and the reference interpreter that defines what every op means.

pub mod dtype;
pub mod dump;
pub mod error;
pub mod fixed_point;
pub mod graph;
pub mod interp;
pub mod npy;
pub mod op;
pub mod ops;
pub mod tensor;
pub mod verify;

pub use dtype::DType;
pub use error::{IrError, OpError};
pub use graph::{Graph, Node, NodeId, QuantParams, Value, ValueDef, ValueId};
pub use op::{Activation, Op, QOut};
pub use tensor::{Tensor, TensorData, TensorType};
