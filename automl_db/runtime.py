"""What the generated query modules use: strict argument checking, parameter types, row bases.

Arguments are checked before anything reaches the server, by pydantic's `validate_call` in strict
mode: no float, str or bool where an integer is declared, integers within their column's range,
timezone-aware datetimes only, enums as enum members, text that is valid UTF-8 without NUL, and JSON
that is JSON (no Decimal, set, NaN, number beyond a double's range...) no deeper than
MAX_JSON_DEPTH and no longer than MAX_JSON_BYTES, the bounds the database keeps too (domain
bounded_jsonb). A refusal is InvalidInput naming the parameter, and nothing was sent.

Every generated function runs its statement through one of the helpers below (fetch_one, fetch_all,
fetch_value, execute, run_script, and their _async twins): they alone fetch and build rows, and
turn failures into the typed errors of automl_db.errors (a server error by `translate`, a value the
code cannot represent as DataUnreadable). They always pass psycopg a parameter mapping (an empty one
when the statement has no parameter), so `%%` in the SQL is always a literal `%`, as codegen prepared
it; a value query's value is validated as the generated function's declared type.
"""

import functools
import inspect
import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import partial
from operator import is_not, itemgetter
from types import NoneType, UnionType
from typing import Annotated, Any, LiteralString, ParamSpec, TypeVar, Union, cast, get_args, get_origin
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, Connection, pq
from psycopg.abc import Buffer
from psycopg.adapt import Loader, Transformer
from psycopg.rows import scalar_row
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import Jsonb, JsonbLoader, JsonLoader
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    validate_call,
)
from pydantic_core import from_json

from automl_db.errors import DataUnreadable, InvalidInput, translate

__all__ = ["Int2", "Int4", "Int8", "JsonParam", "Label", "Row", "Text", "checked", "execute", "execute_async",
           "fetch_all", "fetch_all_async", "fetch_one", "fetch_one_async", "fetch_value", "fetch_value_async",
           "run_script", "run_script_async", "scalar_row", "unreadable"]

#: No value in a JSON argument may sit more than this many arrays or objects below the top.
MAX_JSON_DEPTH = 32
#: Longest JSON argument, in bytes of its text (the database bounds its stored form to 1 MiB).
MAX_JSON_BYTES = 1_048_576
#: Largest magnitude of a JSON number: what a double holds, so every reader can read it back.
MAX_JSON_NUMBER = 1e308
_MAX_JSON_INT = int(MAX_JSON_NUMBER)

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)
#: The parameters of a statement, by name (None: it has none). The generated functions pass their
#: locals(): their arguments, and conn, which no placeholder names (psycopg reads only the keys the
#: statement's %(name)s placeholders name).
Params = dict[str, Any] | None


def _params(params: Params) -> dict[str, Any]:
    """Always a mapping, so psycopg always reads the SQL as a parameterized query: `%%` is a literal
    `%` whether or not the statement has parameters, as codegen prepared it."""
    return {} if params is None else params


def _failure(name: str, exc: psycopg.Error) -> Exception:
    """A server error as its typed error; a value psycopg could not load (a date of 'infinity', say:
    no sqlstate, raised on this side) as DataUnreadable."""
    if exc.sqlstate is None and isinstance(exc, psycopg.DataError):
        return unreadable(name, exc)
    return translate(exc)


class Row(BaseModel):
    """Base of the generated row models: immutable pydantic models, built from what psycopg read
    (see _Rows)."""

    model_config = ConfigDict(frozen=True)


class Label(StrEnum):
    """Base of the generated enums. A label the database holds that this code does not know yet (a
    newer migration added it) reads as a member of its own instead of failing the whole row; so
    `Label(value)` accepts any string: use `parse()` to check a value from outside, and arguments of
    the generated functions accept declared members only."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member

    @classmethod
    def parse(cls, value: str) -> "Label":
        """The declared member whose label is value; ValueError for any other string."""
        for member in cls.__members__.values():
            if member.value == value:
                return member
        raise ValueError(f"{value!r} is not a {cls.__name__} ({', '.join(m.value for m in cls.__members__.values())})")

    @property
    def declared(self) -> bool:
        """Whether this is one of the labels the code was generated with."""
        return self._name_ in type(self).__members__


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL (\\x00)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid UTF-8 ({exc.reason} at position {exc.start})") from None
    return value


def _json(value: Any) -> Jsonb:
    """A JSON argument, checked and serialized once: pydantic models are dumped first. None is refused:
    a required parameter is never NULL (an optional one, `JsonParam | None`, takes None before this)."""
    if value is None:
        raise ValueError("a required JSON argument may not be None (JSON null is not SQL NULL here)")
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")  # explicit nulls kept: what was read is written back
    stack: list[tuple[Any, int, str]] = [(value, 0, "$")]
    while stack:  # iterative: a 10,000-level document must not exhaust Python's recursion
        item, level, path = stack.pop()
        if level > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels (at {path})")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int | float):
            # ints compare exactly: float(10**400) would itself overflow
            if (isinstance(item, int) and abs(item) > _MAX_JSON_INT) or (isinstance(item, float) and not (
                    math.isfinite(item) and abs(item) <= MAX_JSON_NUMBER)):
                raise ValueError(f"JSON numbers are finite and within ±{MAX_JSON_NUMBER:g} (at {path})")
        elif isinstance(item, str):
            _text(item)
        elif isinstance(item, list | tuple):
            stack.extend((element, level + 1, f"{path}[{i}]") for i, element in enumerate(item))
        elif isinstance(item, dict):
            for key, element in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"JSON object keys are strings, not {type(key).__name__} (at {path})")
                _text(key)
                stack.append((element, level + 1, f"{path}.{key}"))
        else:
            raise ValueError(f"{type(item).__name__} is not a JSON value (at {path})")
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_JSON_BYTES:
        raise ValueError(f"JSON is longer than {MAX_JSON_BYTES:,} bytes")
    return Jsonb(text, dumps=_as_is)


def _as_is(text: Any) -> str:
    return cast(str, text)


def unreadable(query: str, exc: BaseException) -> DataUnreadable:
    """The typed error of a result the generated code could not turn into Python values."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataUnreadable(f"{query}(): a row could not be read: {type(exc).__name__}: {first}")


Text = Annotated[str, AfterValidator(_text)]
Int2 = Annotated[int, Field(ge=-(2**15), le=2**15 - 1)]
Int4 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int8 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
#: A JSON argument: any JSON-compatible value or pydantic model; sent as jsonb.
JsonParam = Annotated[Any, PlainValidator(_json)]

_STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)


def checked(function: Callable[P, R]) -> Callable[P, R]:
    """Validate the arguments of a generated query function before it runs (see module doc).

    The check runs on a stub with the function's signature, so an error raised inside the function
    (a row that fails its model, say) is never mistaken for a bad argument."""

    def stub(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs

    stub.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    stub.__annotations__ = {k: v for k, v in function.__annotations__.items() if k != "return"}
    validate = validate_call(config=_STRICT)(stub)
    name = function.__name__

    def arguments(args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        try:
            args, kwargs = validate(*args, **kwargs)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = error["loc"][0] if error["loc"] else "?"
            parameter = "conn" if where == 0 else str(where)
            raise InvalidInput(f"{name}(): argument {parameter}: {error['msg']}", parameter=parameter) from None
        for parameter, value in kwargs.items():  # a label read back from the future is not an argument
            if isinstance(value, Label) and not value.declared:
                raise InvalidInput(f"{name}(): argument {parameter}: {value.value!r} is not a {type(value).__name__}",
                                   parameter=parameter)
        return args, kwargs

    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = arguments(args, kwargs)
            return await function(*args, **kwargs)

        return cast(Callable[P, R], checked_async)

    @functools.wraps(function)
    def checked_sync(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = arguments(args, kwargs)
        return function(*args, **kwargs)

    return cast(Callable[P, R], checked_sync)


# Running the statements: every generated function calls one of these.


#: Python types a column's value already has when psycopg's default loader read it: codegen maps
#: each PostgreSQL type to the type psycopg loads it as (codegen.SCALARS), so validating such a value
#: again would only repeat the check. (Not Decimal: numeric holds NaN and infinities, which a
#: Decimal field refuses; nor jsonb read as any JSON, `Json`, which holds JSON's null as None.)
_LOADED_AS_DECLARED = (UUID, str, int, bool, float, datetime, date, timedelta, bytes)
#: Where codegen writes the row models: only they are built without validation (see _Rows).
_GENERATED = "automl_db.rows"
_NOT_NONE = partial(is_not, None)


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without its None member, whether it had one)."""
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], len(members) < len(get_args(annotation))
    return annotation, False


class _Rows:
    """A psycopg row factory making a model's rows; a generated model's are built straight from the
    values psycopg loaded.

    A generated row model (automl_db.rows) comes from its columns' catalog types, and psycopg loads
    each column as the Python type codegen declared for that catalog type: pydantic's validation of
    such a row only re-checks what is already true, after psycopg built a dict for it (bench:
    "Typed client"). So only what psycopg does not hand over as declared is
    done: a label becomes its enum member, anything else that is not plain (a shaped JSON column, a
    numeric, a list) is validated, a NULL in a column the model declares non-null is refused. After
    the fetch, each plain column's first non-NULL value is checked against its declared type (a
    loader registered on the connection reads every value of its type otherwise): if one differs,
    or the result's columns are not the model's fields, the rows are validated by pydantic after
    all. Any other model (validators, constraints, settings of its own) is always validated."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.trusted = model.__module__ == _GENERATED
        self.fields = set(model.model_fields)
        self.labels: list[tuple[str, dict[Any, Any], type[Label]]] = []
        self.convert: list[tuple[str, Callable[[Any], Any]]] = []
        self.plain: dict[str, type] = {}
        self.required: list[str] = []
        for name, field in model.model_fields.items():
            kind, nullable = _without_none(field.annotation)
            if kind in _LOADED_AS_DECLARED:
                self.plain[name] = kind
            elif isinstance(kind, type) and issubclass(kind, Label):
                self.labels.append((name, kind._value2member_map_, kind))
            else:  # validated whole, its None included (Any, JSON, holds JSON's null as None)
                if kind is not Any:
                    self.convert.append((name, TypeAdapter(cast(Any, field.annotation)).validate_python))
                continue
            if not nullable:
                self.required.append(name)
        names = list(self.plain)
        self.pick_plain: Callable[[dict[str, Any]], Any] = (
            itemgetter(*names) if len(names) > 1 else lambda row: [row[name] for name in names])
        #: The plain columns' value types in a first row -> the columns NULL there (whose first
        #: value elsewhere decides), or None when a value is not of its declared type.
        self.first_rows: dict[tuple[type, ...], tuple[tuple[str, type], ...] | None] = {}
        self.makers: dict[tuple[bytes | None, ...], Callable[[Sequence[Any]], Any]] = {}
        #: Whether a column may hold JSON (a field neither plain nor a label): only then is it read by _Json.
        self.json = len(self.plain) + len(self.labels) < len(self.fields)

    def __call__(self, cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> Callable[[Sequence[Any]], Any]:
        result = cur.pgresult
        # The result's column names as libpq has them (cur.description builds an object per column).
        key = tuple(map(result.fname, range(result.nfields))) if result is not None else ()
        if (maker := self.makers.get(key)) is None:
            names = tuple((name or b"").decode(cur.connection.info.encoding) for name in key)
            maker = self._maker(names)
            if all(name is None or name.isascii() for name in key):  # the same names in any encoding
                self.makers[key] = maker
        return maker

    def _maker(self, names: tuple[str, ...]) -> Callable[[Sequence[Any]], Any]:
        """How a row of these columns is made (once per model and column order)."""
        model = self.model
        if not self.trusted or sorted(names) != sorted(self.fields):
            return lambda values: model.model_validate(dict(zip(names, values, strict=True)))
        new, set_slot, convert, labels = model.__new__, object.__setattr__, self.convert, self.labels
        required = [names.index(name) for name in self.required]
        # By identity, in C: `None in values` would call each UUID's Python __eq__.
        pick = itemgetter(*required) if len(required) > 1 else lambda values: [values[i] for i in required]
        nones = (None,) * len(required)
        # One set for all these rows: pydantic changes a frozen model's set only on a copy of it.
        fields_set = set(names)

        def build(values: Sequence[Any]) -> Any:
            if not all(map(is_not, pick(values), nones)):
                null = next(names[i] for i in required if values[i] is None)
                raise ValueError(f"column {null} is NULL, and {model.__name__}.{null} is not optional")
            row = dict(zip(names, values, strict=False))
            for name, members, label in labels:
                if (value := row[name]) is not None:
                    row[name] = members.get(value) or label(value)
            for name, to in convert:
                row[name] = to(row[name])
            made = new(model)
            set_slot(made, "__dict__", row)
            set_slot(made, "__pydantic_fields_set__", fields_set)
            set_slot(made, "__pydantic_extra__", None)
            set_slot(made, "__pydantic_private__", None)
            return made

        return build

    def _plan(self, found: tuple[type, ...]) -> tuple[tuple[str, type], ...] | None:
        """What a first row with these plain value types leaves to check: its NULL columns, or None
        when a value is not of its declared type."""
        declared = list(self.plain.items())
        if any(kind is not NoneType and kind is not want for kind, (_, want) in zip(found, declared, strict=True)):
            return None
        return tuple((name, want) for kind, (name, want) in zip(found, declared, strict=True) if kind is NoneType)

    def settle(self, rows: list[Any]) -> list[Any]:
        """The rows, or, if a plain column's first non-NULL value is not of its declared type, the
        rows validated by pydantic. What the first row says is kept per pattern of its value types,
        so most results cost one tuple of types and one lookup."""
        if not rows or not self.trusted:
            return rows
        found = tuple(map(type, self.pick_plain(rows[0].__dict__)))
        if found not in self.first_rows:
            self.first_rows[found] = self._plan(found)
        later = self.first_rows[found]
        if later is not None and len(rows) > 1:
            rest = [row.__dict__ for row in rows[1:]]
            for name, declared in later:
                value = next(filter(_NOT_NONE, map(itemgetter(name), rest)), None)
                if value is not None and type(value) is not declared:
                    later = None
                    break
        if later is None:
            return [self.model.model_validate(row.__dict__) for row in rows]
        return rows


@functools.cache
def _rows(model: type[BaseModel]) -> _Rows:
    return _Rows(model)


class _Json(Loader):
    """json and jsonb read by pydantic-core's JSON parser (in Rust: about a tenth of json.loads's
    time on a small document, most of a jsonb column's reading time), and by json.loads where it
    refuses (nesting deeper than its limit), so what is read is what json.loads would read."""

    def load(self, data: Buffer) -> Any:
        text = data if isinstance(data, bytes) else bytes(data)
        try:
            return from_json(text)
        except ValueError:
            return json.loads(text)


C = TypeVar("C", psycopg.Cursor[Any], psycopg.AsyncCursor[Any])
_STOCK_JSON = ((3802, JsonbLoader), (114, JsonLoader))  # jsonb, json


def _reading(cur: C, json: bool = True) -> C:
    """A generated query's cursor: the connection's loaders, and JSON read by _Json when the result
    may hold JSON and the connection reads it with psycopg's own loader (one the service set, with
    its own `loads`, is kept). On this cursor only: the connection's statements are the service's."""
    if json:
        for oid, stock in _STOCK_JSON:
            if cur.adapters.get_loader(oid, pq.Format.TEXT) is stock:
                cur.adapters.register_loader(oid, _Json)
    return cur


class _Timestamptz(TimestamptzLoader):
    """Reads what Python's datetime cannot hold, 'infinity', '-infinity', years past 9999 and BC
    dates, as datetime.max / datetime.min (UTC) instead of failing the whole row; anything else it
    cannot read still fails."""

    def load(self, data: Any) -> datetime:
        try:
            return super().load(data)
        except psycopg.DataError:
            text = bytes(data)
            if text == b"-infinity" or text.endswith(b" BC"):
                return datetime.min.replace(tzinfo=UTC)
            if text == b"infinity" or _LATE_YEAR.match(text):
                return datetime.max.replace(tzinfo=UTC)
            raise


_LATE_YEAR = re.compile(rb"[0-9]{5,}-")


def _reread(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], rows: int | None = None) -> list[Any]:
    """The result's rows (the first `rows`) read again from what was received, with the timestamptz
    loader above: psycopg's own loaders, in C, refused a value. Only then, since a loader written in
    Python costs a microsecond per value (half a 1,000-row listing's time)."""
    result = cur.pgresult
    if result is None or cur.description is None:
        raise psycopg.DataError("no result to read")
    # The connection's encoding and adapters, one loader more; it runs nothing.
    context: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any] = (
        _reading(psycopg.Cursor(cur.connection)) if isinstance(cur, psycopg.Cursor)
        else _reading(psycopg.AsyncCursor(cur.connection)))
    context.adapters.register_loader("timestamptz", _Timestamptz)
    reader = Transformer(context)
    reader.set_pgresult(result)
    make_row = cur.row_factory(cur)  # type: ignore[arg-type]
    return reader.load_rows(0, min(result.ntuples, rows if rows is not None else result.ntuples), make_row)


def _refused(exc: psycopg.DataError) -> bool:
    """A value a loader refused on this side (no SQLSTATE: not the server's error)."""
    return exc.sqlstate is None


def _one(cur: psycopg.Cursor[Any]) -> Any:
    try:
        return cur.fetchone()
    except psycopg.DataError as exc:
        if not _refused(exc):
            raise
        return next(iter(_reread(cur, 1)), None)


def _all(cur: psycopg.Cursor[Any]) -> list[Any]:
    try:
        return cur.fetchall()
    except psycopg.DataError as exc:
        if not _refused(exc):
            raise
        return _reread(cur)


async def _one_async(cur: psycopg.AsyncCursor[Any]) -> Any:
    try:
        return await cur.fetchone()
    except psycopg.DataError as exc:
        if not _refused(exc):
            raise
        return next(iter(_reread(cur, 1)), None)


async def _all_async(cur: psycopg.AsyncCursor[Any]) -> list[Any]:
    try:
        return await cur.fetchall()
    except psycopg.DataError as exc:
        if not _refused(exc):
            raise
        return _reread(cur)


def fetch_one(conn: Connection[Any], query: LiteralString, params: Params, model: type[M], name: str) -> M | None:
    """The first row of the result as a model, or None when there is none."""
    try:
        rows = _rows(model)
        cur = _reading(conn.cursor(row_factory=rows), rows.json)
        cur.execute(query, _params(params))
        row = _one(cur)
        return None if row is None else cast(M, rows.settle([row])[0])
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


def fetch_all(conn: Connection[Any], query: LiteralString, params: Params, model: type[M], name: str) -> list[M]:
    """Every row of the result as models."""
    try:
        rows = _rows(model)
        cur = _reading(conn.cursor(row_factory=rows), rows.json)
        cur.execute(query, _params(params))
        return cast(list[M], rows.settle(_all(cur)))
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    """The validator of a value query's declared type (one per type)."""
    return TypeAdapter(kind)


def fetch_value(conn: Connection[Any], query: LiteralString, params: Params, name: str, kind: Any = Any) -> Any | None:
    """The first column of the first row, or None when there is no row, validated as kind (the
    generated function's return annotation: an enum member, a JSON shape's model...)."""
    try:
        cur = _reading(conn.cursor(row_factory=scalar_row))
        cur.execute(query, _params(params))
        return _adapter(kind).validate_python(_one(cur))
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


def execute(conn: Connection[Any], query: LiteralString, params: Params, name: str) -> int:
    """Run a statement; the number of rows it touched."""
    try:
        return conn.execute(query, _params(params)).rowcount
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


def script_text(query: LiteralString) -> LiteralString:
    """A script's SQL as psycopg would read it with parameters (`%%` is `%`): a script of several
    statements cannot be sent with a parameter mapping, so the unescaping is done here."""
    return query.replace("%%", "%")


def run_script(conn: Connection[Any], query: LiteralString) -> None:
    """Run a script of one or more statements without parameters."""
    try:
        conn.execute(script_text(query))
    except psycopg.Error as exc:
        raise translate(exc) from exc


async def fetch_one_async(conn: AsyncConnection[Any], query: LiteralString, params: Params, model: type[M],
                          name: str) -> M | None:
    """fetch_one on an async connection."""
    try:
        rows = _rows(model)
        cur = _reading(conn.cursor(row_factory=rows), rows.json)
        await cur.execute(query, _params(params))
        row = await _one_async(cur)
        return None if row is None else cast(M, rows.settle([row])[0])
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


async def fetch_all_async(conn: AsyncConnection[Any], query: LiteralString, params: Params, model: type[M],
                          name: str) -> list[M]:
    """fetch_all on an async connection."""
    try:
        rows = _rows(model)
        cur = _reading(conn.cursor(row_factory=rows), rows.json)
        await cur.execute(query, _params(params))
        return cast(list[M], rows.settle(await _all_async(cur)))
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


async def fetch_value_async(conn: AsyncConnection[Any], query: LiteralString, params: Params, name: str,
                            kind: Any = Any) -> Any | None:
    """fetch_value on an async connection."""
    try:
        cur = _reading(conn.cursor(row_factory=scalar_row))
        await cur.execute(query, _params(params))
        return _adapter(kind).validate_python(await _one_async(cur))
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


async def execute_async(conn: AsyncConnection[Any], query: LiteralString, params: Params, name: str) -> int:
    """execute on an async connection."""
    try:
        return (await conn.execute(query, _params(params))).rowcount
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


async def run_script_async(conn: AsyncConnection[Any], query: LiteralString) -> None:
    """run_script on an async connection."""
    try:
        await conn.execute(script_text(query))
    except psycopg.Error as exc:
        raise translate(exc) from exc
