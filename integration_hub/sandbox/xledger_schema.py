"""The Xledger sandbox's GraphQL schema, generated from introspected metadata where there is any.

Why generated: the adapter and the sandbox were once written from the same guesses, so a field
invented in both passed every test. ``AddGLImportItemsInput`` is therefore built at import time
from ``specs/xledger/glImportItems/create/metadata.json`` (the field list that
grasp-labs/ds-provider-xledger-py-lib introspected from Xledger's live schema; see
``specs/xledger/SOURCE.md``): every field and type there, nothing else. The node types of
``glImportItemErrors`` and ``journalEntries`` come from those entities' read metadata the same way.
What no public source tells is ours and marked as such below: the names of the nested input
types, the scalar used for ``datetime``, the filter arguments and the read types of accounts,
employees and GL import items.

Flattened names in the metadata (``transactionSource_code``) stand for nested input objects
(``transactionSource: {code: …}``). :class:`SchemaChanges` alters the generated input the way
a tenant's schema might drift (a field dropped, renamed, retyped, made required, turned into an
enum), so that the adapter's schema check can be tested against a changed schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from graphql import GraphQLSchema, build_schema

SPEC_PACKAGE = "integration_hub.sandbox"
SPEC_DIR = "specs/xledger"
CREATE_METADATA = "glImportItems/create/metadata.json"
ERRORS_METADATA = "glImportItemErrors/read/metadata.json"
JOURNAL_METADATA = "journalEntries/read/metadata.json"

INPUT_TYPE = "AddGLImportItemsInput"
NODE_INPUT_TYPE = "AddGLImportItemsInputNode"
"""The node's type name as the public Go client (omniboost/go-xledger) declares it."""
DATETIME_SCALAR = "DateTime"
"""Our choice: the metadata says ``datetime``; the real scalar's name is not public."""

SCALARS: Mapping[str, str] = {
    "int": "Int",
    "int64": "Int",
    "string": "String",
    "float": "Float",
    "boolean": "Boolean",
    "bool": "Boolean",
    "datetime": DATETIME_SCALAR,
    "datetime[ns]": DATETIME_SCALAR,
    "datetime64[ns]": DATETIME_SCALAR,
}
"""Metadata type (the library's pandas-style names) -> GraphQL scalar."""


@dataclass(frozen=True)
class SchemaChanges:
    """How a company's ``AddGLImportItemsInput`` differs from the introspected one.

    Names are the metadata's flattened names; a name also matches every field nested under it
    (``jobLevel`` drops ``jobLevel_dbId``, ``jobLevel_dbSubId``, …).
    """

    drop: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    """old name -> new name (``{"trRegNumber": "voucherNumber"}``)."""
    retype: Mapping[str, str] = field(default_factory=dict)
    """leaf name -> GraphQL scalar (``{"trRegNumber": "Int"}``)."""
    require: tuple[str, ...] = ()
    """names made NON_NULL (a leaf, or a nested object as a whole)."""
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """leaf name -> the only values it takes (it becomes a GraphQL enum)."""

    @classmethod
    def from_json(cls, data: Any) -> SchemaChanges:
        """From the control endpoint's JSON (lists for tuples); ValueError on a bad shape."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("schema_changes must be an object")
        unknown = sorted(set(data) - {"drop", "rename", "retype", "require", "enums"})
        if unknown:
            raise ValueError(f"unknown schema change(s): {', '.join(unknown)}")
        try:
            return cls(
                drop=tuple(str(n) for n in data.get("drop", ())),
                rename={str(k): str(v) for k, v in dict(data.get("rename", {})).items()},
                retype={str(k): str(v) for k, v in dict(data.get("retype", {})).items()},
                require=tuple(str(n) for n in data.get("require", ())),
                enums={
                    str(k): tuple(str(v) for v in values)
                    for k, values in dict(data.get("enums", {})).items()
                },
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"schema_changes: {exc}") from None

    def renamed(self, name: str) -> str:
        """``name`` after :attr:`rename` (a renamed object renames what is nested in it)."""
        for old, new in self.rename.items():
            if _under(name, old):
                return new + name[len(old) :]
        return name

    def key(self) -> str:
        """A canonical text of the changes (the schema cache's key; mappings do not hash)."""
        return json.dumps(
            {
                "drop": sorted(self.drop),
                "rename": sorted(self.rename.items()),
                "retype": sorted(self.retype.items()),
                "require": sorted(self.require),
                "enums": sorted((k, list(v)) for k, v in self.enums.items()),
            }
        )

    def __bool__(self) -> bool:
        return bool(self.drop or self.rename or self.retype or self.require or self.enums)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + "_")


@lru_cache(maxsize=8)
def metadata_fields(relative: str) -> tuple[tuple[str, str], ...]:
    """(flattened name, metadata type) of every field in one copied metadata file."""
    text = resources.files(SPEC_PACKAGE).joinpath(f"{SPEC_DIR}/{relative}").read_text("utf-8")
    document = json.loads(text)
    return tuple((str(f["name"]), str(f["type"])) for f in document["fields"])


def _tree(fields: list[tuple[str, str]]) -> dict[str, Any]:
    """Flattened names -> nested dict; a leaf holds its GraphQL type text."""
    root: dict[str, Any] = {}
    for name, type_text in fields:
        *parents, leaf = name.split("_")
        node = root
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{name}: {part} is both a field and a nested object")
            node = child
        if leaf in node:
            raise ValueError(f"{name} is listed twice")
        node[leaf] = type_text
    return root


def _cap(name: str) -> str:
    return name[:1].upper() + name[1:]


def _emit(
    keyword: str,
    type_name: str,
    tree: Mapping[str, Any],
    name_of: Callable[[tuple[str, ...]], str],
    out: list[str],
    required: frozenset[str] = frozenset(),
    path: tuple[str, ...] = (),
) -> None:
    """SDL of ``type_name`` and, depth first, of every nested object type under it;
    ``required`` names (flattened) nested objects that are NON_NULL."""
    lines = []
    for name, value in tree.items():
        if isinstance(value, dict):
            child_path = (*path, name)
            child = name_of(child_path)
            _emit(keyword, child, value, name_of, out, required, child_path)
            bang = "!" if "_".join(child_path) in required else ""
            lines.append(f"  {name}: {child}{bang}")
        else:
            lines.append(f"  {name}: {value}")
    out.append(f"{keyword} {type_name} {{\n" + "\n".join(lines) + "\n}")


def _scalar(type_text: str) -> str:
    try:
        return SCALARS[type_text]
    except KeyError:
        raise ValueError(f"metadata type {type_text!r} has no GraphQL scalar") from None


def input_sdl(changes: SchemaChanges | None = None) -> str:
    """``AddGLImportItemsInput`` (``clientId`` and ``node``), the node type and its nested
    input objects, from the create metadata with ``changes`` applied."""
    changes = changes or SchemaChanges()
    fields: list[tuple[str, str]] = []
    enums: list[str] = []
    for name, meta_type in metadata_fields(CREATE_METADATA):
        if any(_under(name, dropped) for dropped in changes.drop):
            continue
        type_text = changes.retype.get(name) or _scalar(meta_type)
        if name in changes.enums:
            type_text = "GLImportItem" + "".join(_cap(p) for p in name.split("_")) + "Enum"
            enums.append(f"enum {type_text} {{ {' '.join(changes.enums[name])} }}")
        if name in changes.require:
            type_text += "!"
        fields.append((changes.renamed(name), type_text))
    out: list[str] = []
    _emit(
        "input",
        NODE_INPUT_TYPE,
        _tree(fields),
        lambda path: "GLImportItem" + "".join(_cap(p) for p in path) + "Input",
        out,
        frozenset(changes.renamed(name) for name in changes.require),
    )
    # clientId pairs an answer's edge (or error) with the input; the introspected list leaves
    # it out on purpose (SOURCE.md), and Xledger's answers carry it.
    out.append(f"input {INPUT_TYPE} {{\n  clientId: String\n  node: {NODE_INPUT_TYPE}\n}}")
    return "\n".join([*enums, *out])


def object_sdl(type_name: str, relative: str) -> str:
    """An output node type (and its nested object types) from a read metadata file."""
    tree = _tree([(name, _scalar(t)) for name, t in metadata_fields(relative)])
    out: list[str] = []
    _emit("type", type_name, tree, lambda path: type_name + "".join(_cap(p) for p in path), out)
    return "\n".join(out)


ACCOUNT_FLAGS = (
    "asset",
    "balanceSheet",
    "cost",
    "credit",
    "equity",
    "finance",
    "liabilities",
    "revenue",
)
"""The account's flags that the public account read metadata names (``accounts/read``); their
type is not published there, and omniboost/go-xledger reads them as booleans."""


HAND_WRITTEN_SDL = f"""
scalar {DATETIME_SCALAR}
type Query {{
  accounts(first: Int, after: String): AccountConnection!
  employees(first: Int, after: String): EmployeeConnection!
  glImportItems(first: Int, after: String, filter: GLImportItemFilter): GLImportItemConnection!
  glImportItemErrors(
    first: Int, after: String, filter: GLImportItemErrorFilter
  ): GLImportItemErrorConnection!
  journalEntries(first: Int, after: String, filter: JournalEntryFilter): JournalEntryConnection!
}}
type Mutation {{ addGLImportItems(inputs: [{INPUT_TYPE}!]!): AddGLImportItemsPayload }}
type PageInfo {{ hasNextPage: Boolean!  hasPreviousPage: Boolean! }}
type Account {{
  dbId: Int!  code: String!  description: String  posting: Boolean!
  {" ".join(f"{flag}: Boolean!" for flag in ACCOUNT_FLAGS)}
}}
type AccountEdge {{ cursor: String!  node: Account! }}
type AccountConnection {{ edges: [AccountEdge!]!  pageInfo: PageInfo! }}
type Employee {{ dbId: Int!  code: String!  description: String  email: String }}
type EmployeeEdge {{ cursor: String!  node: Employee! }}
type EmployeeConnection {{ edges: [EmployeeEdge!]!  pageInfo: PageInfo! }}
type ObjectRef {{ dbId: Int  code: String  description: String }}
type JobLevelRef {{ dbId: Int  dbSubId: Int  code: String }}
type GLImportItem {{
  dbId: Int!  extIdentifier: String  invoiceNumber: String  text: String  amount: String
  postedDate: String  trRegNumber: Int  account: ObjectRef  subledger: ObjectRef
  glObject1: ObjectRef  transactionSource: ObjectRef  jobLevel: JobLevelRef
  createdAt: {DATETIME_SCALAR}  modifiedAt: {DATETIME_SCALAR}
}}
type GLImportItemEdge {{ cursor: String!  node: GLImportItem! }}
type GLImportItemConnection {{ edges: [GLImportItemEdge!]!  pageInfo: PageInfo! }}
type GLImportItemErrorEdge {{ cursor: String!  node: GLImportItemError! }}
type GLImportItemErrorConnection {{ edges: [GLImportItemErrorEdge!]!  pageInfo: PageInfo! }}
type JournalEntryEdge {{ cursor: String!  node: JournalEntry! }}
type JournalEntryConnection {{ edges: [JournalEntryEdge!]!  pageInfo: PageInfo! }}
input GLImportItemFilter {{
  dbId: Int  extIdentifier: String  modifiedAt_gte: {DATETIME_SCALAR}
}}
input GLImportItemErrorFilter {{
  dbId: Int  transactionDbId: Int  createdAt_gte: {DATETIME_SCALAR}
}}
input JournalEntryFilter {{
  dbId: String  extIdentifier: String  modifiedAt_gte: {DATETIME_SCALAR}
}}
type AddGLImportItemEdge {{ clientId: String  node: GLImportItem! }}
type AddGLImportItemsPayload {{ edges: [AddGLImportItemEdge!]! }}
"""
"""Our own, as no public source shows them: the read types of accounts, employees and GL import
items (fields the public clients select), the connections (``pageInfo`` has only what the
public query templates ask for, so a client must page with each edge's ``cursor``) and the
filters, which take the shapes public clients use: plain equality and ``<time field>_gte``."""


def schema_sdl(changes: SchemaChanges | None = None) -> str:
    return "\n".join(
        [
            HAND_WRITTEN_SDL,
            input_sdl(changes),
            object_sdl("GLImportItemError", ERRORS_METADATA),
            object_sdl("JournalEntry", JOURNAL_METADATA),
        ]
    )


_SCHEMAS: dict[str, GraphQLSchema] = {}


def build_xledger_schema(changes: SchemaChanges | None = None) -> GraphQLSchema:
    """The sandbox schema (one per set of changes); graphql-core serves its introspection."""
    changes = changes or SchemaChanges()
    key = changes.key()
    if key not in _SCHEMAS:
        _SCHEMAS[key] = build_schema(schema_sdl(changes))
    return _SCHEMAS[key]
