#!/usr/bin/env python3
# Needs the PyPI packages `jsonschema` (>= 4.0) and `pyyaml`:
#     pip install jsonschema pyyaml
"""Checks JSON answers of the coordinator's web UI against docs/api/openapi.yaml.

Usage: python check_openapi.py SPEC.yaml RESPONSES_DIR [--all]

RESPONSES_DIR holds one file per answer, named after the request:
    GET__api__jobs.json                 GET /api/jobs
    GET__api__jobs__{id}.json           GET /api/jobs/{id} (the literal template; a
                                        concrete segment such as job-3f2a matches it too)
    GET__api__workers.json              GET /api/workers
    SSE__api__jobs__{id}__events.json   the JSON `data` of one event of the stream
                                        GET /api/jobs/{id}/events
A `~tag` before `.json` (GET__api__jobs~page2.json) allows several answers of one
request. A GET file is checked against the operation's 200 `application/json`
schema; an SSE file against the schema its 200 `text/event-stream` media type names
in `x-event-data-schema`.

The spec is kept true in both directions: besides the schema's own rules, an object
may hold no property its schema does not declare (every object schema counts as
`additionalProperties: false` unless it says otherwise), and every `required`
property must be there. OpenAPI 3.0's `nullable` becomes a JSON Schema null type
(also through `$ref` and `allOf`); `allOf` members are merged into one object
schema, so the closed-object rule sees all their properties; integers must be
JSON integers (`1.0` is not one).

The spec is checked first: every `$ref` resolves, the schemas use only OpenAPI 3.0
keywords, path templates have their path parameters, examples match their schemas,
every event stream names its data schema. With `--all`, every JSON or SSE operation
of the spec must also have at least one file.

One line per problem (file: JSON pointer: message) and exit status 1; otherwise
`openapi: N responses match` and 0. Exit status 2 for a usage error.
"""

import json
import os
import re
import sys
from urllib.parse import unquote

try:
    import jsonschema
    import yaml
except ImportError as missing:
    print(f"openapi: the Python package for {missing.name!r} is missing: pip install jsonschema pyyaml")
    sys.exit(2)

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TYPES = ("integer", "number", "string", "boolean", "array", "object")
# The Schema Object keywords of OpenAPI 3.0 (besides x-* extensions).
SCHEMA_KEYWORDS = {
    "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "maxProperties", "minProperties", "required", "enum", "type", "allOf", "oneOf",
    "anyOf", "not", "items", "properties", "additionalProperties", "description",
    "format", "default", "nullable", "discriminator", "readOnly", "writeOnly", "xml",
    "externalDocs", "example", "deprecated", "$ref",
}
# Keywords copied unchanged into JSON Schema.
PLAIN_KEYWORDS = (
    "title", "description", "format", "default", "multipleOf", "maxLength", "minLength",
    "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties",
    "enum", "readOnly", "writeOnly", "deprecated",
)
SSE_TYPE = "text/event-stream"
EVENT_SCHEMA = "x-event-data-schema"
COMPONENT_SCHEMA = "#/components/schemas/"
OR_NULL = "x-check-openapi-or-null"  # set on merged allOf schemas that also take null
WHERE = "x-check-openapi-where"  # where a merged allOf schema's properties are in the spec


class SpecError(Exception):
    pass


# ---------------------------------------------------------------- JSON pointers


def pointer(parts):
    """RFC 6901 JSON pointer of a path (a list of keys and indexes)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def show(parts):
    return pointer(parts) or "(root)"


def resolve(doc, ref):
    """The value a local `$ref` points at; SpecError when it does not resolve."""
    if not isinstance(ref, str):
        raise SpecError(f"$ref must be a string, not {ref!r}")
    if not ref.startswith("#"):
        raise SpecError(f"$ref {ref!r} is not local to this file (not supported)")
    fragment = unquote(ref[1:])
    if fragment == "":
        return doc
    if not fragment.startswith("/"):
        raise SpecError(f"$ref {ref!r} is not a JSON pointer")
    node = doc
    for raw in fragment[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise SpecError(f"$ref {ref!r} does not resolve (no {key!r})")
    return node


def ref_parts(ref):
    return [p.replace("~1", "/").replace("~0", "~") for p in unquote(ref[1:]).split("/")[1:]]


# ---------------------------------------------------------------- loading


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (PyYAML keeps the last silently)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_spec(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=UniqueKeyLoader)


# ---------------------------------------------------------------- OpenAPI 3.0 -> JSON Schema


class Converter:
    """Turns the spec's schemas into one JSON Schema (2020-12) document of `$defs`.

    A `$ref` to `#/components/schemas/Name` becomes `#/$defs/Name`; any other local
    `$ref` to a schema gets a def named after its pointer. Problems with the spec are
    collected in `problems` as (JSON pointer in the spec, message).
    """

    def __init__(self, spec):
        self.spec = spec
        self.defs = {}
        self.pending = []
        self.problems = []
        self.examples = []  # (where, converted schema, example)

    def problem(self, where, message):
        if (show(where), message) not in self.problems:
            self.problems.append((show(where), message))

    def def_name(self, ref):
        if ref.startswith(COMPONENT_SCHEMA) and "/" not in ref[len(COMPONENT_SCHEMA):]:
            return unquote(ref[len(COMPONENT_SCHEMA):])
        return ref[2:] if ref.startswith("#/") else ref

    def ref(self, ref, where):
        """A JSON Schema reference for an OpenAPI schema `$ref`, converting its target once."""
        try:
            resolve(self.spec, ref)
        except SpecError as e:
            self.problem(where, str(e))
            return {}
        name = self.def_name(ref)
        if name not in self.defs:
            self.defs[name] = None  # reserved: a cycle of refs ends here
            self.pending.append((name, ref))
        return {"$ref": "#/$defs/" + name.replace("~", "~0").replace("/", "~1")}

    def finish(self):
        while self.pending:
            name, ref = self.pending.pop()
            if self.defs.get(name) is None:
                self.defs[name] = self.convert(resolve(self.spec, ref), ref_parts(ref), name)

    def add(self, name, schema, where):
        """Converts `schema` (found at `where`) into the def `name`, once."""
        if self.defs.get(name) is not None:
            return name
        self.defs[name] = self.convert(schema, where, name)
        self.finish()
        return name

    # -- allOf

    def flatten(self, schema, where, stack=()):
        """`schema` with its `allOf` members (and theirs) merged into it."""
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in stack:
                raise SpecError(f"allOf goes round in a circle through {ref!r}")
            target = resolve(self.spec, ref)
            flat = self.flatten(target, ref_parts(ref), stack + (ref,))
            if schema.get("nullable") is True and isinstance(flat, dict):
                flat = dict(flat, **{OR_NULL: True})
            return flat
        if "allOf" not in schema:
            return schema
        members = schema["allOf"]
        if not isinstance(members, list) or not members:
            raise SpecError("allOf must be a non-empty list of schemas")
        own = {k: v for k, v in schema.items() if k != "allOf"}
        flat_members = [self.flatten(m, where + ["allOf", i], stack) for i, m in enumerate(members)]
        merged = {}
        origins = {}
        part_wheres = [ref_parts(m["$ref"]) if isinstance(m, dict) and "$ref" in m else where + ["allOf", i]
                       for i, m in enumerate(members)] + [where]
        for i, member in enumerate(members):
            if isinstance(member, dict) and "$ref" not in member:
                for key in member:
                    if key not in SCHEMA_KEYWORDS and not key.startswith("x-"):
                        self.problem(where + ["allOf", i, key],
                                     f"{key!r} is not an OpenAPI 3.0 schema keyword")
        for part, part_where in zip(flat_members + [own], part_wheres):
            if not isinstance(part, dict):
                raise SpecError("an allOf member is not a schema object")
            for name in part.get("properties") or {}:
                origins.setdefault(name, (part.get(WHERE) or {}).get(name, part_where + ["properties", name]))
            for key, value in part.items():
                if key in ("nullable", "example") or key.startswith("x-"):
                    continue
                if key not in merged:
                    merged[key] = value
                elif key == "properties":
                    props = dict(merged[key])
                    for name, sub in value.items():
                        props[name] = {"allOf": [props[name], sub]} if name in props else sub
                    merged[key] = props
                elif key == "required":
                    merged[key] = list(merged[key]) + [r for r in value if r not in merged[key]]
                elif key in ("title", "description", "default", "deprecated", "readOnly", "writeOnly"):
                    pass  # annotations: the first one stays
                elif merged[key] == value:
                    pass
                elif key in ("items", "not") or (key == "additionalProperties"
                                                 and isinstance(value, dict)
                                                 and isinstance(merged[key], dict)):
                    merged[key] = {"allOf": [merged[key], value]}
                else:
                    raise SpecError(f"allOf members disagree on {key!r}: {merged[key]!r} vs {value!r}")
        # null passes when the composing schema says so (`allOf: [$ref], nullable: true`:
        # "this or null"), or when every member allows it.
        def allows_null(m):
            return isinstance(m, dict) and (m.get("nullable") is True or m.get(OR_NULL) is True)
        if own.get("nullable") is True and "type" in own:
            merged["nullable"] = True  # next to its own type: adds null to the type
        elif own.get("nullable") is True or all(allows_null(m) for m in flat_members):
            merged.pop("nullable", None)
            merged[OR_NULL] = True
        merged[WHERE] = origins
        return merged

    # -- one schema

    def convert(self, schema, where, label):
        if not isinstance(schema, dict):
            self.problem(where, f"a schema must be an object, not {schema!r}")
            return {}
        if "$ref" in schema:
            target = self.ref(schema["$ref"], where + ["$ref"])
            if schema.get("nullable") is True:
                return {"anyOf": [target, {"type": "null"}]}
            return target  # OpenAPI 3.0 ignores the other siblings of $ref
        for key in schema:
            if key not in SCHEMA_KEYWORDS and not key.startswith("x-"):
                self.problem(where + [key], f"{key!r} is not an OpenAPI 3.0 schema keyword")
        if "allOf" in schema:
            try:
                schema = self.flatten(schema, where)
            except SpecError as e:
                self.problem(where + ["allOf"], str(e))
                return {}
        out = {}
        for key in PLAIN_KEYWORDS:
            if key in schema:
                out[key] = schema[key]
        for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            if bound in schema:
                if schema.get(exclusive) is True:
                    out[exclusive] = schema[bound]
                else:
                    out[bound] = schema[bound]
            if exclusive in schema and not isinstance(schema[exclusive], bool):
                self.problem(where + [exclusive], f"{exclusive} must be a boolean in OpenAPI 3.0")
        nullable = schema.get("nullable", False)
        if not isinstance(nullable, bool):
            self.problem(where + ["nullable"], "nullable must be a boolean")
            nullable = False
        kind = schema.get("type")
        if kind is not None:
            if kind not in TYPES:
                self.problem(where + ["type"], f"type must be one of {', '.join(TYPES)}, not {kind!r}")
                kind = None
            else:
                # OpenAPI 3.0.3: nullable adds null to the type only; an enum must list null itself.
                out["type"] = [kind, "null"] if nullable else kind
        if kind == "array" and "items" not in schema:
            self.problem(where, "an array schema must have items")
        if "items" in schema:
            out["items"] = self.convert(schema["items"], where + ["items"], label + "[]")
        properties = schema.get("properties")
        if properties is not None:
            if not isinstance(properties, dict):
                self.problem(where + ["properties"], "properties must be a map")
                properties = {}
            origins = schema.get(WHERE) or {}
            out["properties"] = {
                name: self.convert(sub, origins.get(name, where + ["properties", name]), f"{label}.{name}")
                for name, sub in properties.items()
            }
        required = schema.get("required")
        if required is not None:
            if not isinstance(required, list) or not required or not all(isinstance(r, str) for r in required):
                self.problem(where + ["required"], "required must be a non-empty list of property names")
            else:
                out["required"] = required
        is_object = kind == "object" or (kind is None and ("properties" in schema or "required" in schema))
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            out["additionalProperties"] = (
                extra if isinstance(extra, bool)
                else self.convert(extra, where + ["additionalProperties"], label + ".*"))
        elif is_object:
            out["additionalProperties"] = False
        if out.get("additionalProperties") is False and isinstance(required, list):
            for name in required:
                if name not in (properties or {}):
                    self.problem(where + ["required"],
                                 f"required property {name!r} is not among the properties")
        if is_object:
            out["$comment"] = label  # named in messages about this object
            if kind is None:  # properties without a type: meant for objects only
                out["type"] = ["object", "null"] if nullable else "object"
        for key in ("oneOf", "anyOf"):
            if key in schema:
                subs = schema[key]
                if not isinstance(subs, list) or not subs:
                    self.problem(where + [key], f"{key} must be a non-empty list of schemas")
                else:
                    out[key] = [self.convert(s, where + [key, i], label) for i, s in enumerate(subs)]
        if "not" in schema:
            out["not"] = self.convert(schema["not"], where + ["not"], label)
        if schema.get(OR_NULL) is True or (
                nullable and kind is None and any(k in out for k in ("oneOf", "anyOf", "enum", "not"))):
            out = {"anyOf": [out, {"type": "null"}]}
        if "example" in schema and all(w != where + ["example"] for w, _, _ in self.examples):
            self.examples.append((where + ["example"], out, schema["example"]))
        return out


# ---------------------------------------------------------------- validators


def _strict_integer(checker, instance):
    return isinstance(instance, int) and not isinstance(instance, bool)


BaseValidator = jsonschema.Draft202012Validator
Validator = jsonschema.validators.extend(
    BaseValidator,
    type_checker=BaseValidator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


def schema_name(schema):
    return schema.get("$comment", "?") if isinstance(schema, dict) else "?"


def short(text, limit=200):
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(error):
    """One (JSON pointer, message) per problem of a jsonschema error."""
    path = list(error.absolute_path)
    if error.validator in ("anyOf", "oneOf") and error.context:
        # A nullable wrapper, or a choice: report the branches that are not just `null`
        # (when the value is not null), when exactly one such branch is left.
        branches = error.validator_value
        keep = [i for i, b in enumerate(branches)
                if not (error.instance is not None and b == {"type": "null"})]
        if len(keep) == 1:
            lines = []
            for sub in error.context:
                if sub.relative_schema_path and sub.relative_schema_path[0] == keep[0]:
                    lines.extend(describe(sub))
            if lines:
                return lines
        best = jsonschema.exceptions.best_match(error.context)
        return [(show(path), short(f"{error.message}; closest: {best.message}"))]
    if error.validator == "additionalProperties" and error.validator_value is False:
        declared = error.schema.get("properties", {})
        extras = [k for k in error.instance if k not in declared]
        return [(show(path + [k]), f"property not declared in the spec (schema {schema_name(error.schema)})")
                for k in extras]
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return [(show(path + [k]), f"required property missing (schema {schema_name(error.schema)})")
                for k in missing]
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [(show(path), short(f"{as_json(error.instance)} is not of type {expected}"))]
    if error.validator == "enum":
        return [(show(path), short(f"{as_json(error.instance)} is not one of {as_json(error.validator_value)}"))]
    return [(show(path), short(error.message))]


def as_json(value):
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def problems_of(validator, instance):
    found = []
    for error in validator.iter_errors(instance):
        for line in describe(error):
            if line not in found:
                found.append(line)
    return sorted(found)


# ---------------------------------------------------------------- the spec


def walk_refs(node, where, spec, problems):
    if isinstance(node, dict):
        in_map = bool(where) and where[-1] in ("properties", "schemas", "paths", "responses")
        for key, value in node.items():
            if key == "$ref" and not in_map:
                try:
                    resolve(spec, value)
                except SpecError as e:
                    problems.append((show(where + ["$ref"]), str(e)))
            elif key != "example" or in_map:  # an example is a literal value, not spec
                walk_refs(value, where + [key], spec, problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            walk_refs(value, where + [i], spec, problems)


def deref(spec, node):
    """A `$ref`erenced object (parameters, responses, ...), followed through refs."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        if node["$ref"] in seen:
            raise SpecError(f"$ref {node['$ref']!r} refers to itself")
        seen.add(node["$ref"])
        node = resolve(spec, node["$ref"])
    return node


def json_media(content):
    for media, value in (content or {}).items():
        base = media.split(";")[0].strip().lower()
        if base == "application/json" or base.endswith("+json"):
            return value
    return None


class Spec:
    def __init__(self, spec):
        self.spec = spec
        self.problems = []
        self.conv = Converter(spec)
        self.targets = {}  # (kind, method, path) -> def name; kind is "json" or "sse"
        self.check()

    def problem(self, where, message):
        self.problems.append((show(where), message))

    def check(self):
        spec = self.spec
        if not isinstance(spec, dict):
            self.problem([], "the spec is not a YAML map")
            return
        if not re.fullmatch(r"3\.0\.\d+", str(spec.get("openapi", ""))):
            self.problem(["openapi"], f"expected an OpenAPI 3.0.x version, found {spec.get('openapi')!r}")
        info = spec.get("info")
        if not isinstance(info, dict) or not isinstance(info.get("title"), str) \
                or not isinstance(info.get("version"), str):
            self.problem(["info"], "info needs a string title and version")
        paths = spec.get("paths")
        if not isinstance(paths, dict):
            self.problem(["paths"], "paths must be a map")
            return
        walk_refs(spec, [], spec, self.problems)
        if self.problems:
            return  # the rest follows refs
        components = spec.get("components") or {}
        schemes = (components.get("securitySchemes") or {})
        for name, schema in (components.get("schemas") or {}).items():
            self.conv.add(name, schema, ["components", "schemas", name])
        self.check_security(spec.get("security"), ["security"], schemes)
        operation_ids = {}
        for path, item in paths.items():
            where = ["paths", path]
            if not isinstance(path, str) or not path.startswith("/"):
                self.problem(where, "a path must start with /")
                continue
            try:
                item = deref(spec, item)
            except SpecError as e:
                self.problem(where, str(e))
                continue
            if not isinstance(item, dict):
                self.problem(where, "a path item must be a map")
                continue
            shared = self.parameters(item.get("parameters"), where + ["parameters"])
            for method, operation in item.items():
                if method not in METHODS:
                    if method not in ("parameters", "summary", "description", "servers") \
                            and not str(method).startswith("x-"):
                        self.problem(where + [method], f"{method!r} is not an HTTP method of a path item")
                    continue
                self.check_operation(path, method, operation, where + [method], shared, schemes,
                                     operation_ids)
        for kind in ("parameters", "headers"):
            for name, value in (components.get(kind) or {}).items():
                value = deref(spec, value)
                if isinstance(value, dict) and "schema" in value:
                    self.conv.add(f"components/{kind}/{name}", value["schema"],
                                  ["components", kind, name, "schema"])
        self.conv.finish()
        self.problems.extend(self.conv.problems)
        root = {"$defs": self.conv.defs}
        try:
            Validator.check_schema(root)
        except jsonschema.exceptions.SchemaError as e:
            self.problem([], f"the schemas do not make a valid JSON Schema: {e.message}")
            return
        for where, schema, example in self.conv.examples:
            validator = Validator(dict(schema, **root))
            for at, message in problems_of(validator, example):
                self.problems.append((show(where) + (at if at != "(root)" else ""),
                                      f"the example does not match its schema: {message}"))

    def check_security(self, requirements, where, schemes):
        if requirements is None:
            return
        if not isinstance(requirements, list):
            self.problem(where, "security must be a list")
            return
        for i, requirement in enumerate(requirements):
            for name in (requirement or {}):
                if name not in schemes:
                    self.problem(where + [i, name], f"no security scheme {name!r} in components")

    def parameters(self, params, where):
        found = {}
        for i, param in enumerate(params or []):
            try:
                param = deref(self.spec, param)
            except SpecError as e:
                self.problem(where + [i], str(e))
                continue
            if not isinstance(param, dict) or "name" not in param or "in" not in param:
                self.problem(where + [i], "a parameter needs name and in")
                continue
            if param["in"] == "path" and param.get("required") is not True:
                self.problem(where + [i], f"path parameter {param['name']!r} must be required: true")
            found[(param["name"], param["in"])] = param
        return found

    def check_operation(self, path, method, operation, where, shared, schemes, operation_ids):
        spec = self.spec
        if not isinstance(operation, dict):
            self.problem(where, "an operation must be a map")
            return
        op_id = operation.get("operationId")
        if op_id is not None:
            if op_id in operation_ids:
                self.problem(where + ["operationId"], f"operationId {op_id!r} is also used at {operation_ids[op_id]}")
            operation_ids[op_id] = show(where)
        params = dict(shared)
        params.update(self.parameters(operation.get("parameters"), where + ["parameters"]))
        templated = set(re.findall(r"\{([^}/]+)\}", path))
        declared = {name for (name, place) in params if place == "path"}
        for name in sorted(templated - declared):
            self.problem(where, f"path parameter {{{name}}} is not declared")
        for name in sorted(declared - templated):
            self.problem(where, f"path parameter {name!r} is not in the path")
        self.check_security(operation.get("security"), where + ["security"], schemes)
        responses = operation.get("responses")
        if not isinstance(responses, dict) or not responses:
            self.problem(where + ["responses"], "an operation needs responses")
            return
        for code, response in responses.items():
            at = where + ["responses", str(code)]
            if not re.fullmatch(r"[1-5](\d\d|XX)|default", str(code)):
                self.problem(at, f"{code!r} is not a response code")
            response = deref(spec, response)
            if not isinstance(response, dict) or not isinstance(response.get("description"), str):
                self.problem(at, "a response needs a description")
                continue
            for header, value in (response.get("headers") or {}).items():
                value = deref(spec, value)
                if isinstance(value, dict) and "schema" in value:
                    self.conv.add(f"{method.upper()} {path} {code} header {header}", value["schema"],
                                  at + ["headers", header, "schema"])
            for media, value in (response.get("content") or {}).items():
                if not isinstance(value, dict):
                    self.problem(at + ["content", media], "a media type must be a map")
                    continue
                if "schema" in value:
                    name = self.conv.add(f"{method.upper()} {path} {code} {media}", value["schema"],
                                         at + ["content", media, "schema"])
                    if str(code) == "200" and value is json_media(response["content"]):
                        self.targets[("json", method, path)] = name
                if media.split(";")[0].strip() == SSE_TYPE:
                    if EVENT_SCHEMA not in value:
                        self.problem(at + ["content", media],
                                     f"an event stream must name its data schema in {EVENT_SCHEMA}")
                    elif str(code) == "200":
                        self.targets[("sse", method, path)] = self.conv.add(
                            f"{method.upper()} {path} event data", value[EVENT_SCHEMA],
                            at + ["content", media, EVENT_SCHEMA])
        body = operation.get("requestBody")
        if body is not None:
            body = deref(spec, body)
            for media, value in ((body or {}).get("content") or {}).items():
                if isinstance(value, dict) and "schema" in value:
                    self.conv.add(f"{method.upper()} {path} request {media}", value["schema"],
                                  where + ["requestBody", "content", media, "schema"])

    def match_path(self, path):
        """The spec's path template for a concrete or templated path, or None."""
        paths = self.spec["paths"]
        if path in paths:
            return path
        found = []
        for template in paths:
            pattern = "".join(
                "[^/]+" if re.fullmatch(r"\{[^}/]+\}", part) else re.escape(part)
                for part in re.split(r"(\{[^}/]+\})", template))
            if re.fullmatch(pattern, path):
                literal = len(re.sub(r"\{[^}/]+\}", "", template))
                found.append((literal, template))
        return max(found)[1] if found else None

    def validator(self, name):
        return Validator({"$defs": self.conv.defs,
                          "$ref": "#/$defs/" + name.replace("~", "~0").replace("/", "~1")})


# ---------------------------------------------------------------- the answers

FILE_NAME = re.compile(r"(?P<method>[A-Z]+)__(?P<path>.*?)(?:~(?P<tag>[^~]*))?\.json")


def check_file(spec, directory, file_name, covered):
    """Problems of one answer file, as (pointer, message)."""
    match = FILE_NAME.fullmatch(file_name)
    if not match:
        return [("(root)", "the file name is not METHOD__path__segments[~tag].json")]
    method = match["method"]
    path = "/" + "/".join(match["path"].split("__")) if match["path"] else "/"
    kind, http = ("sse", "get") if method == "SSE" else ("json", method.lower())
    shown = f"{method} {path}"
    template = spec.match_path(path)
    if template is None:
        return [("(root)", f"{shown}: the path is not in the spec")]
    item = deref(spec.spec, spec.spec["paths"][template])
    if http not in item:
        return [("(root)", f"{shown}: the spec has no {method if kind == 'json' else 'GET'} for {template}")]
    target = spec.targets.get((kind, http, template))
    if target is None:
        what = (f"no 200 {SSE_TYPE} response naming {EVENT_SCHEMA}" if kind == "sse"
                else "no 200 application/json response with a schema")
        return [("(root)", f"{shown}: the spec has {what} for {template}")]
    covered.add((kind, http, template))
    try:
        with open(os.path.join(directory, file_name), encoding="utf-8") as f:
            instance = json.load(f)
    except (OSError, ValueError) as e:
        return [("(root)", f"not readable JSON: {e}")]
    return problems_of(spec.validator(target), instance)


def main(argv):
    args = [a for a in argv[1:] if a != "--all"]
    want_all = "--all" in argv[1:]
    if len(args) != 2:
        print("usage: check_openapi.py SPEC.yaml RESPONSES_DIR [--all]", file=sys.stderr)
        return 2
    spec_path, directory = args
    try:
        raw = load_spec(spec_path)
    except (OSError, yaml.YAMLError) as e:
        print(f"{spec_path}: (root): not readable YAML: {short(str(e).replace(chr(10), ' '), 300)}")
        return 1
    spec = Spec(raw)
    if spec.problems:
        for where, message in dict.fromkeys(spec.problems):
            print(f"{spec_path}: {where}: {message}")
        return 1
    try:
        files = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except OSError as e:
        print(f"{directory}: (root): {e}")
        return 1
    if not files:
        print(f"{directory}: (root): no response files (*.json)")
        return 1
    failed = False
    covered = set()
    for name in files:
        for where, message in check_file(spec, directory, name, covered):
            print(f"{name}: {where}: {message}")
            failed = True
    if want_all:
        for kind, method, path in sorted(set(spec.targets) - covered):
            prefix = "SSE" if kind == "sse" else method.upper()
            print(f"{spec_path}: {pointer(['paths', path, method])}: no response file covers "
                  f"{prefix} {path}")
            failed = True
    if failed:
        return 1
    print(f"openapi: {len(files)} responses match")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
