#!/usr/bin/env python3
"""Check a Core ML `.mlpackage` (ML Program) with coremltools 9.0, read-only.

Usage: python scripts/validate_mlpackage.py PKG.mlpackage [--materialize] [--allow-fp32-states]
       [--shared-with TWIN.mlpackage] [--quiet]

Exit status 0 when every check passes, 1 otherwise (each problem is printed as `FAIL: ...`),
2 for usage errors. The package is never modified: the manifest is parsed here instead of through
`ModelPackage(path)` (whose destructor rewrites Manifest.json); only the static, read-only
`ModelPackage.isValid` is called.

Checks
  manifest     fileFormatVersion (three integers <= 1.0.0), itemInfoEntries (path/name/author/
               description strings, relative paths that exist under Data/), rootModelIdentifier.
  model        model.mlmodel parses as CoreML.Specification.Model; Type is mlProgram; every
               function's opset matches the specification version; Program.version == 1.
  description  inputs / states / outputs match each function's signature (names, order, dtypes,
               fixed shapes); multi-function form (functions + defaultFunctionName, empty
               top-level lists) when the description uses it.
  states       every state is an fp16 tensor with a static shape (Core ML's rule, enforced by
               coremltools' exporter); --allow-fp32-states also accepts fp32 states (verification
               builds that only the CPU interpreter runs).
  structure    every op has a string-scalar `name` attribute; names are defined once per function
               and before use; block outputs are defined; const ops carry exactly name + val.
  weights      weight.bin header (version 2), every record (sentinel, known dtype code, payload
               64-aligned right after its record, inside the file, padding bits), and every
               BlobFileValue (points at a record, record dtype == proto dtype, size and padding
               match the element count); each blob is read back through coremltools' BlobReader
               and compared with the file bytes. Every record must be referenced by the program,
               or, with --shared-with TWIN (a package written around the same weight file, e.g.
               the decode chunk a prefill chunk shares it with), by TWIN's program; the two
               weight files must then be byte-identical.
  pymil        the program is rebuilt with coremltools.converters.mil.frontend.milproto.load
               (type-domain checks and type inference of every op) and the inferred type of every
               op output is compared with the type declared in the proto.
  materialize  (--materialize) every constexpr_* op is decompressed; shape, dtype and finiteness
               are checked.
"""
import argparse
import collections
import json
import logging
import os
import struct
import sys
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402

from coremltools.proto import MIL_pb2, Model_pb2  # noqa: E402

PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)
    print("FAIL: " + msg)


OPSET = {6: "CoreML5", 7: "CoreML6", 8: "CoreML7", 9: "CoreML8", 10: "CoreML9"}
DT = MIL_pb2.DataType
BITS = {DT.BOOL: 8, DT.FLOAT16: 16, DT.FLOAT32: 32, DT.FLOAT64: 64, DT.BFLOAT16: 16,
        DT.INT4: 4, DT.INT8: 8, DT.INT16: 16, DT.INT32: 32, DT.INT64: 64, DT.UINT1: 1,
        DT.UINT2: 2, DT.UINT3: 3, DT.UINT4: 4, DT.UINT6: 6, DT.UINT8: 8, DT.UINT16: 16,
        DT.UINT32: 32, DT.UINT64: 64, DT.FLOAT8E4M3FN: 8, DT.FLOAT8E5M2: 8}
# MIL DataType -> (blob dtype code, BlobReader method)
BLOB = {DT.FLOAT16: (1, "read_fp16_data"), DT.FLOAT32: (2, "read_float_data"),
        DT.UINT8: (3, "read_uint8_data"), DT.INT8: (4, "read_int8_data"), DT.BFLOAT16: (5, None),
        DT.INT16: (6, "read_int16_data"), DT.UINT16: (7, "read_uint16_data"),
        DT.INT4: (8, "read_int4_data"), DT.UINT1: (9, "read_uint1_data"),
        DT.UINT2: (10, "read_uint2_data"), DT.UINT4: (11, "read_uint4_data"),
        DT.UINT3: (12, "read_uint3_data"), DT.UINT6: (13, "read_uint6_data"),
        DT.INT32: (14, "read_int32_data"), DT.UINT32: (15, "read_uint32_data"),
        DT.FLOAT8E4M3FN: (16, None), DT.FLOAT8E5M2: (17, None)}
SUB_BYTE = {DT.INT4, DT.UINT1, DT.UINT2, DT.UINT3, DT.UINT4, DT.UINT6}
KNOWN_CODES = {code for code, _ in BLOB.values()}
ARRAY_TO_MIL = {65568: DT.FLOAT32, 65552: DT.FLOAT16, 65600: DT.FLOAT64, 131104: DT.INT32,
                131080: DT.INT8}
WEIGHT_REF = "@model_path/weights/weight.bin"


def dt_name(code):
    try:
        return DT.Name(code)
    except ValueError:
        return "?%d" % code


# ----------------------------------------------------------------------------------- manifest
def check_manifest(pkg):
    path = os.path.join(pkg, "Manifest.json")
    try:
        with open(path, "rb") as f:
            man = json.loads(f.read())
    except (OSError, ValueError) as e:
        problem("Manifest.json unreadable: %s" % e)
        return None
    if not isinstance(man, dict):
        problem("Manifest.json is not a JSON object")
        return None
    version = man.get("fileFormatVersion")
    parts = str(version).split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        problem("fileFormatVersion %r is not major.minor.patch" % (version,))
    elif [int(p) for p in parts] > [1, 0, 0]:
        problem("fileFormatVersion %s is newer than 1.0.0" % version)
    items = man.get("itemInfoEntries")
    if not isinstance(items, dict):
        problem("itemInfoEntries is not an object")
        return None
    for ident, item in items.items():
        if not isinstance(item, dict):
            problem("item %s is not an object" % ident)
            continue
        for key in ("path", "name", "author", "description"):
            if not isinstance(item.get(key), str):
                problem("item %s: %r missing or not a string" % (ident, key))
        p = item.get("path", "")
        if not isinstance(p, str) or p.startswith("/") or ".." in p.split("/"):
            problem("item %s: path %r is not relative to Data/" % (ident, p))
        elif not os.path.exists(os.path.join(pkg, "Data", p)):
            problem("item %s: Data/%s does not exist" % (ident, p))
    root = man.get("rootModelIdentifier")
    if root not in items:
        problem("rootModelIdentifier %r is not an item" % (root,))
        return None
    try:
        from coremltools.libmodelpackage import ModelPackage

        if not ModelPackage.isValid(pkg):
            problem("libmodelpackage ModelPackage.isValid() is False")
    except ImportError:
        pass
    model_file = os.path.join(pkg, "Data", items[root]["path"])
    if not os.path.isfile(model_file):
        problem("root item %s is not a file" % items[root]["path"])
        return None
    return model_file


# ------------------------------------------------------------------------------- type helpers
def tensor_sig(vt):
    kind = vt.WhichOneof("type")
    if kind == "tensorType":
        t = vt.tensorType
        dims = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None
                     for d in t.dimensions)
        if t.rank != len(dims):
            problem("tensor type rank %d has %d dimensions" % (t.rank, len(dims)))
        return (dt_name(t.dataType), dims)
    if kind == "stateType":
        return ("state",) + tensor_sig(vt.stateType.wrappedType)
    return (kind, None)


def all_blocks(block):
    yield block
    for op in block.operations:
        for b in op.blocks:
            yield from all_blocks(b)


def walk_values(value, where, out):
    """Collect (where, Value) for every BlobFileValue inside a Value."""
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        out.append((where, value))
    elif kind == "immediateValue":
        imm = value.immediateValue
        k = imm.WhichOneof("value")
        if k in ("tuple", "list"):
            for i, v in enumerate(getattr(imm, k).values):
                walk_values(v, "%s[%d]" % (where, i), out)
        elif k == "dictionary":
            for i, kv in enumerate(imm.dictionary.values):
                walk_values(kv.key, "%s.key[%d]" % (where, i), out)
                walk_values(kv.value, "%s.value[%d]" % (where, i), out)


# ---------------------------------------------------------------------------- model + description
def check_model(model):
    if model.WhichOneof("Type") != "mlProgram":
        problem("Model.Type is %r, not mlProgram" % model.WhichOneof("Type"))
        return False
    sv = model.specificationVersion
    prog = model.mlProgram
    if sv not in OPSET:
        problem("specificationVersion %d is not an ML Program version" % sv)
    if prog.version != 1:
        problem("Program.version is %d, expected 1" % prog.version)
    if prog.docString:
        problem("Program.docString is not empty")
    for name, f in prog.functions.items():
        if OPSET.get(sv) and f.opset != OPSET[sv]:
            problem("function %s: opset %s, specificationVersion %d needs %s"
                    % (name, f.opset, sv, OPSET[sv]))
        if f.opset not in f.block_specializations:
            problem("function %s: no block specialization for opset %s" % (name, f.opset))
    return True


def feature_sig(feat):
    ft = feat.type
    kind = ft.WhichOneof("Type")
    if kind == "multiArrayType":
        a = ft.multiArrayType
        return ("tensor", ARRAY_TO_MIL.get(a.dataType), tuple(a.shape), a)
    if kind == "stateType":
        a = ft.stateType.arrayType
        return ("state", ARRAY_TO_MIL.get(a.dataType), tuple(a.shape), a)
    return (kind, None, None, None)


def check_feature_list(fname, what, feats, actual):
    if [f.name for f in feats] != [n for n, _ in actual]:
        problem("function %s: described %s %s, program has %s"
                % (fname, what, [f.name for f in feats], [n for n, _ in actual]))
        return
    for feat, (name, vt) in zip(feats, actual):
        kind, dtype, shape, arr = feature_sig(feat)
        sig = tensor_sig(vt)
        want_kind = "state" if sig[0] == "state" else "tensor"
        if kind != want_kind:
            problem("function %s: %s %s is described as %s, program has %s"
                    % (fname, what, name, kind, want_kind))
            continue
        pdtype, pdims = (sig[1], sig[2]) if sig[0] == "state" else sig
        if dtype is None or dt_name(dtype) != pdtype:
            problem("function %s: %s %s described as %s, program has %s"
                    % (fname, what, name, dtype and dt_name(dtype), pdtype))
        fixed = None not in pdims
        if fixed and shape and arr.WhichOneof("ShapeFlexibility") is None and shape != pdims:
            problem("function %s: %s %s described with shape %s, program has %s"
                    % (fname, what, name, list(shape), list(pdims)))


def check_states(model, allow_fp32):
    """Core ML states wrap a static fp16 tensor; returns {function: [(name, dtype, shape)]}."""
    allowed = {DT.FLOAT16} | ({DT.FLOAT32} if allow_fp32 else set())
    found = {}
    for fname, f in model.mlProgram.functions.items():
        states = []
        for i in f.inputs:
            if i.type.WhichOneof("type") != "stateType":
                continue
            wrapped = i.type.stateType.wrappedType
            if wrapped.WhichOneof("type") != "tensorType":
                problem("function %s: state %s does not wrap a tensor" % (fname, i.name))
                continue
            t = wrapped.tensorType
            dims = [d.constant.size if d.WhichOneof("dimension") == "constant" else None
                    for d in t.dimensions]
            if None in dims:
                problem("function %s: state %s has a flexible shape" % (fname, i.name))
            if t.dataType not in allowed:
                problem("function %s: state %s is %s; Core ML states are FLOAT16 only%s"
                        % (fname, i.name, dt_name(t.dataType),
                           "" if allow_fp32 else " (--allow-fp32-states for verification builds)"))
            states.append((i.name, dt_name(t.dataType), dims))
        found[fname] = states
    return found


def check_description(model):
    desc, prog = model.description, model.mlProgram
    if desc.functions:
        if desc.input or desc.output or desc.state:
            problem("multi-function description also has top-level inputs/outputs/states")
        names = [f.name for f in desc.functions]
        if desc.defaultFunctionName not in names:
            problem("defaultFunctionName %r is not a described function" % desc.defaultFunctionName)
        if model.specificationVersion < 9:
            problem("multi-function models need specificationVersion >= 9")
        described = {f.name: f for f in desc.functions}
    else:
        described = {"main": desc}
    for name in prog.functions:
        if name not in described:
            problem("function %s is not described" % name)
    for name, fd in described.items():
        if name not in prog.functions:
            problem("description names function %s, the program has no such function" % name)
            continue
        f = prog.functions[name]
        block = f.block_specializations.get(f.opset)
        inputs = [(i.name, i.type) for i in f.inputs if i.type.WhichOneof("type") != "stateType"]
        states = [(i.name, i.type) for i in f.inputs if i.type.WhichOneof("type") == "stateType"]
        check_feature_list(name, "inputs", fd.input, inputs)
        check_feature_list(name, "states", fd.state, states)
        if block is None:
            continue
        declared = {i.name: i.type for i in f.inputs}
        for op in block.operations:
            for o in op.outputs:
                declared[o.name] = o.type
        outs = []
        for o in block.outputs:
            if o not in declared:
                problem("function %s: output %s is not defined" % (name, o))
            else:
                outs.append((o, declared[o]))
        if len(outs) == len(block.outputs):
            check_feature_list(name, "outputs", fd.output, outs)


# ------------------------------------------------------------------------------------ structure
def string_scalar(value):
    t = value.type.tensorType
    imm = value.immediateValue
    return (value.type.WhichOneof("type") == "tensorType" and t.dataType == DT.STRING
            and t.rank == 0 and imm.WhichOneof("value") == "tensor"
            and imm.tensor.WhichOneof("value") == "strings" and len(imm.tensor.strings.values) == 1)


def check_block(fname, block, defined, counts):
    for i in block.inputs:
        if i.name in defined:
            problem("function %s: block input %s redefines a name" % (fname, i.name))
        defined.add(i.name)
    for idx, op in enumerate(block.operations):
        counts[op.type] += 1
        where = "function %s op #%d (%s)" % (fname, idx, op.type)
        if "name" not in op.attributes or not string_scalar(op.attributes["name"]):
            problem("%s: missing string `name` attribute" % where)
        else:
            where = "function %s op %s (%s)" % (fname, op.attributes["name"].immediateValue
                                                .tensor.strings.values[0], op.type)
        if op.type == "const":
            if set(op.attributes) != {"name", "val"} or op.inputs:
                problem("%s: const must have exactly the attributes name, val and no inputs" % where)
            elif len(op.outputs) == 1 and tensor_sig(op.outputs[0].type) != tensor_sig(
                    op.attributes["val"].type):
                problem("%s: output type differs from the type of val" % where)
        for param, arg in op.inputs.items():
            for b in arg.arguments:
                if b.WhichOneof("binding") == "name" and b.name not in defined:
                    problem("%s: input %s uses undefined name %s" % (where, param, b.name))
                elif b.WhichOneof("binding") is None:
                    problem("%s: input %s has an empty binding" % (where, param))
        for nested in op.blocks:
            check_block(fname, nested, set(defined), counts)
        for o in op.outputs:
            if o.name in defined:
                problem("%s: output %s redefines a name" % (where, o.name))
            defined.add(o.name)
    for o in block.outputs:
        if o not in defined:
            problem("function %s: block output %s is undefined" % (fname, o))


def check_structure(prog):
    counts = collections.Counter()
    for name, f in prog.functions.items():
        block = f.block_specializations.get(f.opset)
        if block is None:
            continue
        if block.inputs:
            problem("function %s: the function block must not have inputs" % name)
        check_block(name, block, {i.name for i in f.inputs}, counts)
    return counts


# -------------------------------------------------------------------------------------- weights
def read_records(path):
    with open(path, "rb") as f:
        data = f.read()
    records = {}
    if len(data) < 64:
        problem("weight.bin: %d bytes, no storage header" % len(data))
        return data, records
    count, version = struct.unpack_from("<II", data, 0)
    if version != 2:
        problem("weight.bin: storage version %d, expected 2" % version)
        return data, records
    offset = 64
    for i in range(count):
        if offset + 64 > len(data):
            problem("weight.bin: record #%d at %d is outside the file" % (i, offset))
            break
        sentinel, code, size, data_off, pad = struct.unpack_from("<IIQQQ", data, offset)
        if sentinel != 0xDEADBEEF:
            problem("weight.bin: bad sentinel %#x at %d" % (sentinel, offset))
            break
        if code not in KNOWN_CODES:
            problem("weight.bin: unknown dtype code %d at %d" % (code, offset))
        if data_off != offset + 64:
            problem("weight.bin: record at %d has data offset %d, expected %d"
                    % (offset, data_off, offset + 64))
        if data_off + size > len(data):
            problem("weight.bin: payload of record %d runs past the end of the file" % offset)
            break
        records[offset] = (code, size, data_off, pad)
        offset = (data_off + size + 63) // 64 * 64
    return data, records


def blob_values_of(model):
    """(where, value) of every blob-file value the program references."""
    blob_values = []
    prog = model.mlProgram
    for fname, f in prog.functions.items():
        block = f.block_specializations.get(f.opset)
        if block is None:
            continue
        for b in all_blocks(block):
            for op in b.operations:
                for k, v in op.attributes.items():
                    walk_values(v, "function %s op %s attribute %s" % (fname, op.type, k),
                                blob_values)
                for param, arg in op.inputs.items():
                    for i, binding in enumerate(arg.arguments):
                        if binding.WhichOneof("binding") == "value":
                            walk_values(binding.value, "function %s op %s input %s[%d]"
                                        % (fname, op.type, param, i), blob_values)
    return blob_values


def twin_offsets(twin, data):
    """Blob offsets the twin package's program references (its weight file must equal ours)."""
    model_file = os.path.join(twin, "Data", "com.apple.CoreML", "model.mlmodel")
    weight_file = os.path.join(twin, "Data", "com.apple.CoreML", "weights", "weight.bin")
    try:
        model = Model_pb2.Model()
        with open(model_file, "rb") as f:
            model.ParseFromString(f.read())
        with open(weight_file, "rb") as f:
            same = f.read() == data
    except Exception as e:  # noqa: BLE001
        problem("--shared-with %s: %s" % (twin, e))
        return set()
    if not same:
        problem("--shared-with %s: its weights/weight.bin differs from this package's" % twin)
        return set()
    return {v.blobFileValue.offset for _, v in blob_values_of(model)}


def check_weights(model, weights_dir, twin=None):
    blob_values = blob_values_of(model)
    path = os.path.join(weights_dir, "weight.bin") if weights_dir else None
    if not blob_values:
        return 0, 0
    if path is None or not os.path.isfile(path):
        problem("the program references %d blobs but weights/weight.bin is missing"
                % len(blob_values))
        return 0, 0
    data, records = read_records(path)
    try:
        from coremltools.libmilstoragepython import _BlobStorageReader

        reader = _BlobStorageReader(path)
    except ImportError:
        reader = None
        problem("coremltools BlobReader (libmilstoragepython) is not importable")
    used = set()
    for where, v in blob_values:
        bf = v.blobFileValue
        if bf.fileName != WEIGHT_REF:
            problem("%s: blob file %r, expected %r" % (where, bf.fileName, WEIGHT_REF))
            continue
        rec = records.get(bf.offset)
        if rec is None:
            problem("%s: offset %d is not a blob record" % (where, bf.offset))
            continue
        used.add(bf.offset)
        code, size, data_off, pad = rec
        t = v.type.tensorType
        if t.dataType not in BLOB:
            problem("%s: %s cannot be a blob" % (where, dt_name(t.dataType)))
            continue
        want_code, method = BLOB[t.dataType]
        if code != want_code:
            problem("%s: record dtype code %d, proto dtype %s needs %d"
                    % (where, code, dt_name(t.dataType), want_code))
            continue
        n = 1
        for d in t.dimensions:
            n *= d.constant.size
        bits = BITS[t.dataType] * n
        want_size, want_pad = (bits + 7) // 8, (-bits) % 8 if t.dataType in SUB_BYTE else 0
        if size != want_size or pad != want_pad:
            problem("%s: record holds %d bytes (%d padding bits), %d elements need %d (%d)"
                    % (where, size, pad, n, want_size, want_pad))
            continue
        if reader is not None and method is not None:
            try:
                arr = np.asarray(getattr(reader, method)(bf.offset))
            except Exception as e:  # noqa: BLE001
                problem("%s: coremltools BlobReader failed: %s" % (where, e))
                continue
            if arr.size != n:
                problem("%s: BlobReader returned %d elements, expected %d" % (where, arr.size, n))
            elif t.dataType not in SUB_BYTE and arr.tobytes() != data[data_off:data_off + size]:
                problem("%s: BlobReader bytes differ from the file" % where)
            elif t.dataType in SUB_BYTE:
                width = BITS[t.dataType]
                packed = np.frombuffer(data[data_off:data_off + size], dtype=np.uint8)
                bitstream = np.unpackbits(packed, bitorder="little")[: n * width]
                vals = bitstream.reshape(n, width) @ (1 << np.arange(width))
                got = arr.astype(np.int64).reshape(-1) & ((1 << width) - 1)
                if not np.array_equal(vals, got):
                    problem("%s: BlobReader values differ from the LSB-first packed bytes" % where)
    unused = set(records) - used
    if unused and twin is not None:
        unused -= twin_offsets(twin, data)
    if unused:
        problem("weight.bin: %d blob records are not referenced by the program%s"
                % (len(unused), "" if twin is None else " nor by " + twin))
    return len(records), len(data)


# -------------------------------------------------------------------------------------- pymil
def pymil_sig(t):
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    if types.is_state(t):
        return ("state",) + pymil_sig(t.wrapped_type())
    if types.is_tensor(t):
        shape = tuple(None if is_symbolic(d) else int(d) for d in t.get_shape())
        return (types.builtin_to_string(t.get_primitive()), shape)
    if types.is_scalar(t) or t is types.str:
        return (types.builtin_to_string(t), ())
    return (str(t), None)


def proto_sig(vt):
    from coremltools.converters.mil.frontend.milproto.helper import proto_to_types

    return pymil_sig(proto_to_types(vt))


def check_pymil(model, weights_dir, materialize):
    from coremltools.converters.mil.frontend.milproto.load import load

    try:
        prog = load(model, specification_version=model.specificationVersion,
                    file_weights_dir=weights_dir or "")
    except Exception as e:  # noqa: BLE001
        problem("pymil rebuild failed: %s: %s" % (type(e).__name__, e))
        return 0, 0
    compared = materialized = 0
    for fname, f in model.mlProgram.functions.items():
        if fname not in prog.functions:
            problem("pymil program lacks function %s" % fname)
            continue
        vars_by_name = {}

        def collect(block):
            for op in block.operations:
                for o in op.outputs:
                    vars_by_name[o.name] = o
                for b in op.blocks:
                    collect(b)

        collect(prog.functions[fname])
        block = f.block_specializations.get(f.opset)
        for b in all_blocks(block):
            for op in b.operations:
                for o in op.outputs:
                    var = vars_by_name.get(o.name)
                    if var is None:
                        problem("function %s: pymil has no value %s (%s)" % (fname, o.name, op.type))
                        continue
                    want, got = proto_sig(o.type), pymil_sig(var.sym_type)
                    compared += 1
                    if want != got:
                        problem("function %s op %s: declared %s, coremltools infers %s"
                                % (fname, o.name, want, got))
        if materialize:
            for op in prog.functions[fname].operations:
                if not op.op_type.startswith("constexpr_"):
                    continue
                try:
                    vals = op.materialized_val_inference()
                except Exception as e:  # noqa: BLE001
                    problem("materialize %s (%s): %s" % (op.name, op.op_type, e))
                    continue
                materialized += 1
                vals = vals if isinstance(vals, tuple) else (vals,)
                for out, val in zip(op.outputs, vals):
                    val = np.asarray(val)
                    shape = tuple(out.shape)
                    if val.shape != shape:
                        problem("materialize %s: shape %s, declared %s" % (op.name, val.shape, shape))
                    if val.dtype.kind == "f" and not np.all(np.isfinite(val)):
                        problem("materialize %s: non-finite values" % op.name)
    return compared, materialized


# ---------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description="Check a Core ML .mlpackage with coremltools 9.0")
    ap.add_argument("package")
    ap.add_argument("--materialize", action="store_true",
                    help="also decompress every constexpr_* op")
    ap.add_argument("--allow-fp32-states", action="store_true",
                    help="accept fp32 states (verification builds Core ML would not load)")
    ap.add_argument("--shared-with", metavar="TWIN",
                    help="the package whose weight file this one shares: records only TWIN "
                         "references are accepted")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    pkg = args.package
    if not os.path.isdir(pkg):
        print("FAIL: %s is not a directory" % pkg)
        return 1

    model_file = check_manifest(pkg)
    if model_file is None:
        print("FAILED: %d problem(s)" % len(PROBLEMS))
        return 1
    model = Model_pb2.Model()
    try:
        with open(model_file, "rb") as f:
            model.ParseFromString(f.read())
    except Exception as e:  # noqa: BLE001
        problem("model.mlmodel does not parse: %s" % e)
        print("FAILED: %d problem(s)" % len(PROBLEMS))
        return 1
    if not check_model(model):
        print("FAILED: %d problem(s)" % len(PROBLEMS))
        return 1
    check_description(model)
    states = check_states(model, args.allow_fp32_states)
    counts = check_structure(model.mlProgram)
    weights_dir = os.path.join(os.path.dirname(model_file), "weights")
    weights_dir = weights_dir if os.path.isdir(weights_dir) else None
    blobs, weight_bytes = check_weights(model, weights_dir, args.shared_with)
    compared, materialized = check_pymil(model, weights_dir, args.materialize)

    if not args.quiet:
        print("package:   %s" % pkg)
        print("functions: %s (spec %d)" % (", ".join(model.mlProgram.functions),
                                            model.specificationVersion))
        print("ops:       %d  %s" % (sum(counts.values()),
                                     ", ".join("%s=%d" % kv for kv in sorted(counts.items()))))
        print("weights:   %d blobs, %d bytes" % (blobs, weight_bytes))
        for fname, st in sorted(states.items()):
            if st:
                print("states:    %s: %s" % (fname, ", ".join(
                    "%s %s%s" % (n, d, list(sh)) for n, d, sh in st)))
        print("types:     %d op outputs compared with coremltools' inference" % compared)
        if args.materialize:
            print("constexpr: %d ops materialized" % materialized)
    if PROBLEMS:
        print("FAILED: %d problem(s)" % len(PROBLEMS))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
