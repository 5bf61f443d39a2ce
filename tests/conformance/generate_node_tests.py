"""Writes the ONNX backend node tests into a directory, from the case definitions the `onnx`
package ships (its wheel carries the generators, not the data).

Layout, as in onnx's own test data: OUT/<case>/model.onnx and
OUT/<case>/test_data_set_<k>/{input,output}_<i>.pb. A case whose inputs or outputs are not plain
tensors (sequences, optionals, maps) gets a file NON_TENSOR_IO instead of data sets.

Usage: generate_node_tests.py OUT_DIR
"""

import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node


def write_case(case, out_dir: str) -> None:
    case_dir = os.path.join(out_dir, case.name)
    os.makedirs(case_dir, exist_ok=True)
    onnx.save(case.model, os.path.join(case_dir, "model.onnx"))
    arrays = [a for inputs, outputs in case.data_sets for a in list(inputs) + list(outputs)]
    if not all(isinstance(a, (np.ndarray, np.generic, onnx.TensorProto)) for a in arrays):
        open(os.path.join(case_dir, "NON_TENSOR_IO"), "w").close()
        return
    model_inputs = [i.name for i in case.model.graph.input]
    model_outputs = [o.name for o in case.model.graph.output]
    for k, (inputs, outputs) in enumerate(case.data_sets):
        data_dir = os.path.join(case_dir, f"test_data_set_{k}")
        os.makedirs(data_dir, exist_ok=True)
        for kind, names, values in (("input", model_inputs, inputs), ("output", model_outputs, outputs)):
            for i, value in enumerate(values):
                name = names[i] if i < len(names) else ""
                if isinstance(value, onnx.TensorProto):
                    tensor = value
                else:
                    tensor = numpy_helper.from_array(np.asarray(value), name)
                with open(os.path.join(data_dir, f"{kind}_{i}.pb"), "wb") as f:
                    f.write(tensor.SerializeToString())


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    for case in cases:
        write_case(case, out_dir)
    print(f"wrote {len(cases)} node test cases (onnx {onnx.__version__}) to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
