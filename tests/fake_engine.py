"""A stand-in Dagger engine on 127.0.0.1: the SDK connects to it through its public session variables
(DAGGER_SESSION_PORT / DAGGER_SESSION_TOKEN, as the engine runs a module), fetches this schema, and sends
its queries. Every query is recorded and each `id` answered with a fresh ID, so what the module would
have asked the engine (its registration, a container graph) can be read back as data, IDs replaced by
the chains that made them. A scalar leaf (stdout, publish, …) is answered by `Recorder.answers`.

The schema holds only the fields the module and its registration use (written for these tests from the
SDK's query builder; the engine's own schema is far larger). A field the SDK asks for and this schema
lacks fails the query build, loudly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
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
  host: Host!
  container: Container!
  cacheVolume(key: String!): CacheVolume!
  setSecret(name: String!, plaintext: String!): Secret!
}

scalar HostID
scalar DirectoryID
scalar ContainerID
scalar SecretID
scalar CacheVolumeID
scalar FileID
input BuildArg { name: String!, value: String! }

type Host { id: HostID!  directory(path: String!, exclude: [String!], include: [String!]): Directory! }
type Secret { id: SecretID! }
type CacheVolume { id: CacheVolumeID! }
type File { id: FileID!  contents: String! }
type Directory {
  id: DirectoryID!
  dockerBuild(dockerfile: String = "Dockerfile", buildArgs: [BuildArg!] = [], target: String = ""): Container!
  exists(path: String!): Boolean!
  file(path: String!): File!
}
type Container {
  id: ContainerID!
  from(address: String!): Container!
  withEnvVariable(name: String!, value: String!): Container!
  withMountedCache(path: String!, cache: CacheVolumeID!, source: DirectoryID): Container!
  withDirectory(path: String!, source: DirectoryID!, exclude: [String!], include: [String!]): Container!
  withWorkdir(path: String!): Container!
  withExec(args: [String!]!): Container!
  withRegistryAuth(address: String!, username: String!, secret: SecretID!): Container!
  stdout: String!
  publish(address: String!): String!
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
        self.leaves: list[list[dict[str, Any]]] = []  # every query but an `id`, its leaf last
        self.answers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "version": lambda _args: f"v{version('dagger-io')}",  # what the SDK checks on connecting
            "stdout": lambda _args: "ok\n",
            "publish": lambda args: f"{args['address']}@sha256:{'ab' * 32}",
            "exists": lambda _args: False,
            "contents": lambda _args: "",
        }
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
            target = graphql.get_named_type(field.type)
            if not isinstance(target, GraphQLObjectType):
                self.leaves.append([*chain, step])
                out[key] = self.answers[name](args)
                continue
            assert node.selection_set is not None, name
            inner: dict[str, Any] = {}
            self._walk(node.selection_set.selections, target, inner, [*chain, step], variables)
            out[key] = inner

    def executed(self) -> list[list[dict[str, Any]]]:
        """The queries that asked for a value (not an ID), oldest first, IDs expanded."""
        return [[self.expand_step(s) for s in chain] for chain in self.leaves if chain[-1]["field"] != "version"]

    def chain_of(self, object_id: str) -> list[dict[str, Any]]:
        return list(self.expand(object_id))

    def expand(self, value: Any) -> Any:
        """`value` with every recorded ID replaced by the chain of selections that made it."""
        if isinstance(value, str) and value in self.chains:
            return [self.expand_step(s) for s in self.chains[value]]
        if isinstance(value, list):
            return [self.expand(v) for v in value]
        if isinstance(value, dict):
            return {k: self.expand(v) for k, v in value.items()}
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
