#!/usr/bin/env python3
"""Regenerate the Core ML `.proto` files in `proto/` from the descriptors coremltools ships.

coremltools 9.0 ships `coremltools/proto/*_pb2.py`, each embedding a serialized
`google.protobuf.FileDescriptorProto` (the compiled form of Apple's `mlmodel/format/*.proto`,
BSD-3-Clause). This script extracts those descriptors *without importing the modules* (one of them,
`NamedParameters_pb2.py`, is too old to import under protobuf >= 4) and writes them back as `.proto`
text: syntax, package, imports (incl. `import public`), file options, messages with fields, maps,
oneofs, proto3 `optional`, packed options, reserved ranges/names, nested messages and enums, in
declaration order.

It also writes the shipped descriptors as a `FileDescriptorSet` to
`fixtures/coreml/proto/coremltools-9.0.descriptor-set.binpb`; the `coreml-proto` crate's tests
compile `proto/` with protox and check that every regenerated file gives a descriptor equal to the
shipped one (ignoring json_name and source info). When `grpc_tools` is importable, this script runs
the same comparison itself with protoc.

Usage: python scripts/gen_proto.py [--coremltools-dir DIR] [--out proto] [--check-only]
Requires: protobuf (any 4.x+), coremltools 9.0 installed (only its files are read).
"""
import argparse
import ast
import importlib.util
import os
import sys

from google.protobuf import descriptor_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FD = descriptor_pb2.FieldDescriptorProto

HEADER = """\
// Core ML model specification: {name}
//
// Regenerated from the compiled descriptors shipped in coremltools 9.0
// (coremltools/proto/{module}.py) by scripts/gen_proto.py; do not edit by hand.
// Interface definitions of Apple's mlmodel/format/{name}.
// Copyright (c) 2017-2023, Apple Inc. All rights reserved. BSD-3-Clause, see proto/LICENSE.

"""

LICENSE = """\
The .proto files in this directory are interface definitions regenerated (by scripts/gen_proto.py)
from the compiled protobuf descriptors shipped with coremltools 9.0. They describe the Core ML model
format defined by Apple's mlmodel/format/*.proto and are distributed under coremltools' license:

Copyright (c) 2017-2023, Apple Inc. All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted
provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of conditions
   and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice, this list of
   conditions and the following disclaimer in the documentation and/or other materials provided
   with the distribution.

3. Neither the name of the copyright holder(s) nor the names of any contributors may be used to
   endorse or promote products derived from this software without specific prior written
   permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR
CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF
THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""

SCALAR = {
    FD.TYPE_DOUBLE: "double", FD.TYPE_FLOAT: "float", FD.TYPE_INT64: "int64",
    FD.TYPE_UINT64: "uint64", FD.TYPE_INT32: "int32", FD.TYPE_FIXED64: "fixed64",
    FD.TYPE_FIXED32: "fixed32", FD.TYPE_BOOL: "bool", FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes", FD.TYPE_UINT32: "uint32", FD.TYPE_SFIXED32: "sfixed32",
    FD.TYPE_SFIXED64: "sfixed64", FD.TYPE_SINT32: "sint32", FD.TYPE_SINT64: "sint64",
}
MAX_FIELD = 536870912  # exclusive end of "to max"


# --------------------------------------------------------------------------- extraction
def serialized_descriptor(py_path):
    """The serialized FileDescriptorProto embedded in a generated *_pb2.py file (no import)."""
    tree = ast.parse(open(py_path, encoding="utf-8").read(), py_path)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fname = getattr(node.func, "attr", getattr(node.func, "id", ""))
        # new style: descriptor_pool.Default().AddSerializedFile(b'...')
        if fname == "AddSerializedFile" and node.args and isinstance(node.args[0], ast.Constant):
            return node.args[0].value
        # old style: FileDescriptor(..., serialized_pb=_b('...'))
        for kw in node.keywords:
            if kw.arg == "serialized_pb":
                v = kw.value
                if isinstance(v, ast.Call) and v.args and isinstance(v.args[0], ast.Constant):
                    v = v.args[0]
                if isinstance(v, ast.Constant):
                    val = v.value
                    return val if isinstance(val, bytes) else val.encode("latin1")
    raise SystemExit("no serialized descriptor found in %s" % py_path)


def load_descriptors(proto_dir):
    files = {}
    for fn in sorted(os.listdir(proto_dir)):
        if not fn.endswith("_pb2.py"):
            continue
        fd = descriptor_pb2.FileDescriptorProto.FromString(
            serialized_descriptor(os.path.join(proto_dir, fn)))
        files[fd.name] = (fn[:-3], fd)
    return files


# --------------------------------------------------------------------------- symbol table
def collect_symbols(files):
    """Every fully-qualified symbol (packages, messages, enums, enum values, fields) -> kind."""
    syms = {}

    def add_pkg(pkg):
        parts = pkg.split(".")
        for i in range(1, len(parts) + 1):
            syms.setdefault(".".join(parts[:i]), "package")

    def add_enum(prefix, e):
        syms[prefix + e.name] = "enum"
        for v in e.value:  # enum values are siblings of the enum (C++ scoping)
            syms.setdefault(prefix + v.name, "enumvalue")

    def add_msg(prefix, m):
        full = prefix + m.name
        syms[full] = "message"
        for f in m.field:
            syms.setdefault(full + "." + f.name, "field")
        for o in m.oneof_decl:
            syms.setdefault(full + "." + o.name, "oneof")
        for n in m.nested_type:
            add_msg(full + ".", n)
        for e in m.enum_type:
            add_enum(full + ".", e)

    for _, fd in files.values():
        add_pkg(fd.package)
        for m in fd.message_type:
            add_msg(fd.package + ".", m)
        for e in fd.enum_type:
            add_enum(fd.package + ".", e)
    return syms


AGGREGATE = {"package", "message", "enum"}


def resolve(syms, scope, name):
    """Resolve a relative name the way protoc does: innermost scope first, first component decides."""
    first, _, rest = name.partition(".")
    parts = scope.split(".") if scope else []
    for i in range(len(parts), -1, -1):
        base = ".".join(parts[:i])
        cand = (base + "." + first) if base else first
        kind = syms.get(cand)
        if kind is None:
            continue
        if not rest:
            if kind in ("message", "enum"):
                return cand
            continue  # not a type: protoc keeps looking outward
        if kind not in AGGREGATE:
            continue
        full = cand + "." + rest
        return full if full in syms else None
    return None


def type_ref(syms, scope, full_name):
    """Shortest name for `full_name` (leading dot) that resolves back to it from `scope`."""
    target = full_name.lstrip(".")
    parts = target.split(".")
    for i in range(len(parts) - 1, -1, -1):
        cand = ".".join(parts[i:])
        if resolve(syms, scope, cand) == target:
            return cand
    return "." + target


# --------------------------------------------------------------------------- printing
def fmt_option_value(field, value):
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if field.type == field.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == field.TYPE_STRING:
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    return str(value)


def options_list(opts):
    return [(f.name, fmt_option_value(f, v)) for f, v in opts.ListFields()]


def fmt_reserved_ranges(ranges):
    out = []
    for r in ranges:
        if r.end - 1 == r.start:
            out.append(str(r.start))
        elif r.end >= MAX_FIELD:
            out.append("%d to max" % r.start)
        else:
            out.append("%d to %d" % (r.start, r.end - 1))
    return out


class Printer:
    def __init__(self, syms):
        self.syms = syms
        self.lines = []

    def emit(self, depth, text):
        self.lines.append(("    " * depth + text) if text else "")

    def field_type(self, scope, f, nested_maps):
        if f.type in (FD.TYPE_MESSAGE, FD.TYPE_ENUM, FD.TYPE_GROUP):
            return type_ref(self.syms, scope, f.type_name)
        return SCALAR[f.type]

    def field_line(self, scope, f, nested_maps, in_oneof):
        opts = ["%s = %s" % kv for kv in options_list(f.options)]
        suffix = (" [" + ", ".join(opts) + "]") if opts else ""
        if f.label == FD.LABEL_REPEATED and f.type == FD.TYPE_MESSAGE and f.type_name in nested_maps:
            entry = nested_maps[f.type_name]
            k = self.field_type(scope, entry.field[0], nested_maps)
            v = self.field_type(scope, entry.field[1], nested_maps)
            return "map<%s, %s> %s = %d%s;" % (k, v, f.name, f.number, suffix)
        label = ""
        if f.label == FD.LABEL_REPEATED:
            label = "repeated "
        elif f.label == FD.LABEL_REQUIRED:
            label = "required "
        elif f.proto3_optional:
            label = "optional "
        elif not in_oneof and self.syntax == "proto2":
            label = "optional "
        return "%s%s %s = %d%s;" % (label, self.field_type(scope, f, nested_maps), f.name,
                                   f.number, suffix)

    def enum(self, depth, e):
        self.emit(depth, "enum %s {" % e.name)
        for k, v in options_list(e.options):
            self.emit(depth + 1, "option %s = %s;" % (k, v))
        for v in e.value:
            opts = ["%s = %s" % kv for kv in options_list(v.options)]
            suffix = (" [" + ", ".join(opts) + "]") if opts else ""
            self.emit(depth + 1, "%s = %d%s;" % (v.name, v.number, suffix))
        if e.reserved_range:
            self.emit(depth + 1, "reserved %s;" % ", ".join(
                str(r.start) if r.start == r.end else "%d to %d" % (r.start, r.end)
                for r in e.reserved_range))
        if e.reserved_name:
            self.emit(depth + 1, "reserved %s;" % ", ".join('"%s"' % n for n in e.reserved_name))
        self.emit(depth, "}")

    def message(self, depth, scope_prefix, m):
        full = scope_prefix + m.name
        self.emit(depth, "message %s {" % m.name)
        inner = depth + 1
        for k, v in options_list(m.options):
            if k != "map_entry":
                self.emit(inner, "option %s = %s;" % (k, v))
        nested_maps = {"." + full + "." + n.name: n for n in m.nested_type if n.options.map_entry}
        entry_index = {"." + full + "." + n.name: i for i, n in enumerate(m.nested_type)}
        # protoc appends a map's entry type to nested_type when it parses the map field, so nested
        # messages declared before that entry in the descriptor must be printed before the field.
        pending = [i for i, n in enumerate(m.nested_type) if not n.options.map_entry]

        def flush_nested(before):
            while pending and pending[0] < before:
                self.emit(0, "")
                self.message(inner, full + ".", m.nested_type[pending.pop(0)])
                self.emit(0, "")

        emitted_oneofs = set()
        for f in m.field:
            if f.type_name in nested_maps and f.label == FD.LABEL_REPEATED:
                flush_nested(entry_index[f.type_name])
            real_oneof = f.HasField("oneof_index") and not f.proto3_optional
            if not real_oneof:
                self.emit(inner, self.field_line(full, f, nested_maps, False))
                continue
            idx = f.oneof_index
            if idx in emitted_oneofs:
                continue
            emitted_oneofs.add(idx)
            self.emit(inner, "oneof %s {" % m.oneof_decl[idx].name)
            for g in m.field:
                if g.HasField("oneof_index") and g.oneof_index == idx and not g.proto3_optional:
                    self.emit(inner + 1, self.field_line(full, g, nested_maps, True))
            self.emit(inner, "}")
        if m.reserved_range:
            self.emit(inner, "reserved %s;" % ", ".join(fmt_reserved_ranges(m.reserved_range)))
        if m.reserved_name:
            self.emit(inner, "reserved %s;" % ", ".join('"%s"' % n for n in m.reserved_name))
        if m.extension_range:
            self.emit(inner, "extensions %s;" % ", ".join(fmt_reserved_ranges(m.extension_range)))
        for e in m.enum_type:
            self.emit(0, "")
            self.enum(inner, e)
        for i in pending:
            self.emit(0, "")
            self.message(inner, full + ".", m.nested_type[i])
        self.emit(depth, "}")

    def file(self, module, fd):
        if fd.extension or fd.service:
            raise SystemExit("%s: extensions/services are not supported by this generator" % fd.name)
        self.syntax = fd.syntax or "proto2"
        self.lines = []
        text = HEADER.format(name=fd.name, module=module)
        self.emit(0, 'syntax = "%s";' % self.syntax)
        self.emit(0, "")
        public = set(fd.public_dependency)
        weak = set(fd.weak_dependency)
        for i, dep in enumerate(fd.dependency):
            kind = "public " if i in public else ("weak " if i in weak else "")
            self.emit(0, 'import %s"%s";' % (kind, dep))
        if fd.dependency:
            self.emit(0, "")
        for k, v in options_list(fd.options):
            self.emit(0, "option %s = %s;" % (k, v))
        if fd.options.ListFields():
            self.emit(0, "")
        self.emit(0, "package %s;" % fd.package)
        prefix = fd.package + "." if fd.package else ""
        for e in fd.enum_type:
            self.emit(0, "")
            self.enum(0, e)
        for m in fd.message_type:
            self.emit(0, "")
            self.message(0, prefix, m)
        return text + "\n".join(self.lines) + "\n"


# --------------------------------------------------------------------------- verification
def normalized(fd):
    fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
    fd.ClearField("source_code_info")

    def strip_msg(m):
        for f in m.field:
            f.ClearField("json_name")
        for n in m.nested_type:
            strip_msg(n)

    for m in fd.message_type:
        strip_msg(m)
    return fd.SerializeToString(deterministic=True)


def verify_with_protoc(out_dir, files):
    if importlib.util.find_spec("grpc_tools") is None:
        print("grpc_tools not installed: skipping the protoc round trip here "
              "(cargo test -p coreml-proto checks it with protox)")
        return True
    import tempfile

    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.binpb")
        args = ["protoc", "-I" + out_dir, "--descriptor_set_out=" + out] + sorted(files)
        if protoc.main(args) != 0:
            print("protoc failed on the regenerated files")
            return False
        got = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    ok = True
    for fd in got.file:
        if normalized(fd) != normalized(files[fd.name][1]):
            print("MISMATCH: %s" % fd.name)
            ok = False
    print("protoc round trip: %d files, %s" % (len(got.file), "all equal" if ok else "MISMATCH"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--coremltools-dir", help="directory of the coremltools package")
    ap.add_argument("--out", default=os.path.join(ROOT, "proto"))
    ap.add_argument("--descriptor-set",
                    default=os.path.join(ROOT, "fixtures", "coreml", "proto",
                                         "coremltools-9.0.descriptor-set.binpb"))
    args = ap.parse_args()

    ct_dir = args.coremltools_dir
    if ct_dir is None:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("coremltools is not installed; pass --coremltools-dir")
        ct_dir = list(spec.submodule_search_locations)[0]
    version_file = os.path.join(ct_dir, "version.py")
    if os.path.exists(version_file):
        src = open(version_file).read()
        if '"9.0"' not in src and "'9.0'" not in src:
            print("warning: coremltools at %s is not 9.0" % ct_dir)

    files = load_descriptors(os.path.join(ct_dir, "proto"))
    syms = collect_symbols(files)
    os.makedirs(args.out, exist_ok=True)
    printer = Printer(syms)
    for name, (module, fd) in sorted(files.items()):
        with open(os.path.join(args.out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(printer.file(module, fd))
    with open(os.path.join(args.out, "LICENSE"), "w", encoding="utf-8", newline="\n") as f:
        f.write(LICENSE)

    fds = descriptor_pb2.FileDescriptorSet()
    for name in sorted(files):
        fds.file.add().CopyFrom(files[name][1])
    os.makedirs(os.path.dirname(args.descriptor_set), exist_ok=True)
    with open(args.descriptor_set, "wb") as f:
        f.write(fds.SerializeToString(deterministic=True))
    print("wrote %d .proto files to %s and %s" % (len(files), args.out, args.descriptor_set))
    return 0 if verify_with_protoc(args.out, files) else 1


if __name__ == "__main__":
    sys.exit(main())
