"""A stand-in Dagger engine on 127.0.0.1 for the module's registration: the SDK connects to it through its
public session variables (DAGGER_SESSION_PORT / DAGGER_SESSION_TOKEN, as the engine runs a module), fetches
this schema, and sends its queries; every query is recorded and each `id` answered with a fresh ID, so the
registration query can be read back as data (IDs replaced by the chains that made them).

The schema holds only the fields module registration uses (written for this test from the SDK's query
builder; the engine's own schema is larger). A field the SDK asked for and this schema lacks fails the
query build, loudly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from typing import Any

import graphql
from graphql import FieldNode, GraphQLObjectType, OperationDefinitionNode

SDL = """
scalar ModuleID
scalar TypeDefID
scalar FunctionID
scalar SourceMapID
scalar JSON

enum TypeDefKind {
  STRING_KIND INTEGER_KIND FLOAT_KIND BOOLEAN_KIND SCALAR_KIND LIST_KIND OBJECT_KIND INTERFACE_KIND
  INPUT_KIND VOID_KIND ENUM_KIND
}
enum FunctionCachePolicy { Default PerSession Never }

type Query {
  version: String!
  module: Module!
  typeDef: TypeDef!
  function(name: String!, returnType: TypeDefID!): Function!
}

type Module {
  id: ModuleID!
  withDescription(description: String!): Module!
  withObject(object: TypeDefID!): Module!
  withInterface(iface: TypeDefID!): Module!
  withEnum(enum: TypeDefID!): Module!
}

type TypeDef {
  id: TypeDefID!
  withObject(name: String!, description: String = "", sourceMap: SourceMapID, deprecated: String): TypeDef!
  withInterface(name: String!, description: String = "", sourceMap: SourceMapID): TypeDef!
  withField(name: String!, typeDef: TypeDefID!, description: String = "", sourceMap: SourceMapID,
            deprecated: String): TypeDef!
  withFunction(function: FunctionID!): TypeDef!
  withConstructor(function: FunctionID!): TypeDef!
  withKind(kind: TypeDefKind!): TypeDef!
  withOptional(optional: Boolean!): TypeDef!
  withListOf(elementType: TypeDefID!): TypeDef!
  withScalar(name: String!, description: String = ""): TypeDef!
  withEnum(name: String!, description: String = "", sourceMap: SourceMapID): TypeDef!
}

type Function {
  id: FunctionID!
  withDescription(description: String!): Function!
  withCachePolicy(policy: FunctionCachePolicy!, timeToLive: String): Function!
  withDeprecated(reason: String): Function!
  withCheck: Function!
  withGenerator: Function!
  withUp: Function!
  withArg(name: String!, typeDef: TypeDefID!, description: String = "", defaultValue: JSON,
          defaultPath: String = "", ignore: [String!] = [], sourceMap: SourceMapID, deprecated: String,
          defaultAddress: String = ""): Function!
}
"""
SCHEMA = graphql.build_schema(SDL)
TOKEN = "fake-engine-session"


class Recorder:
    """Every query the SDK sent, as chains of {"type", "field", "args"}; an ID maps to the chain that made it."""

    def __init__(self) -> None:
        self.chains: dict[str, list[dict[str, Any]]] = {}
        self.queries = 0
        self.lock = threading.Lock()

    def answer(self, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
        document = graphql.parse(query)
        operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        if any(isinstance(s, FieldNode) and s.name.value.startswith("__") for s in operation.selection_set.selections):
            return graphql.graphql_sync(SCHEMA, query, variable_values=variables).formatted
        with self.lock:
            self.queries += 1
            data: dict[str, Any] = {}
            self._walk(operation.selection_set.selections, SCHEMA.query_type, data, [], variables or {})
        return {"data": data}

    def _walk(self, selections: Any, parent: Any, out: dict[str, Any], chain: list[dict[str, Any]],
              variables: dict[str, Any]) -> None:
        for node in selections:
            assert isinstance(node, FieldNode), node
            name = node.name.value
            field = parent.fields[name]
            args = {a.name.value: graphql.value_from_ast_untyped(a.value, variables) for a in node.arguments or ()}
            step = {"type": parent.name, "field": name, "args": args}
            key = node.alias.value if node.alias else name
            if name == "id":
                new_id = f"{parent.name}:{len(self.chains)}"
                self.chains[new_id] = chain
                out[key] = new_id
                continue
            if name == "version":  # what the SDK checks on connecting: the engine it is pinned to
                out[key] = f"v{version('dagger-io')}"
                continue
            target = graphql.get_named_type(field.type)
            assert isinstance(target, GraphQLObjectType) and node.selection_set is not None, name
            inner: dict[str, Any] = {}
            self._walk(node.selection_set.selections, target, inner, [*chain, step], variables)
            out[key] = inner

    def expand(self, value: Any) -> Any:
        """`value` with every recorded ID replaced by the chain of selections that made it."""
        if isinstance(value, str) and value in self.chains:
            return [self.expand_step(s) for s in self.chains[value]]
        if isinstance(value, list):
            return [self.expand(v) for v in value]
        return value

    def expand_step(self, step: dict[str, Any]) -> dict[str, Any]:
        return {**step, "args": {k: self.expand(v) for k, v in step["args"].items()}}


@contextmanager
def fake_engine() -> Iterator[tuple[Recorder, int]]:
    """Serve the stand-in engine on 127.0.0.1 (a free port) while the block runs."""
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            answer = json.dumps(recorder.answer(body["query"], body.get("variables"))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
