"""What the generated query modules use: strict argument checking, parameter types, row bases.

Arguments are checked before anything reaches the server, by pydantic's `validate_call` in strict
mode: no float, str or bool where an integer is declared, integers within their column's range,
timezone-aware datetimes only, enums as enum members, text that is valid UTF-8 without NUL, and JSON
that is JSON (no Decimal, set, NaN, number beyond a double's range...) no deeper than
MAX_JSON_DEPTH and no longer than MAX_JSON_BYTES, the bounds the database keeps too (domain
bounded_jsonb). A refusal is InvalidInput naming the parameter, and nothing was sent.

Every generated function runs its statement through one of the helpers below (fetch_one, fetch_all,
fetch_value, execute, run_script, and their _async twins): they alone fetch and validate rows, and
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
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, LiteralString, ParamSpec, TypeVar, cast

import psycopg
from psycopg import AsyncConnection, Connection
from psycopg.adapt import Transformer
from psycopg.rows import dict_row, scalar_row
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import Jsonb
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
    """Base of the generated row models: immutable pydantic models, validated when read."""

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


@functools.cache
def _list_of(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    """A list is validated in one call: cheaper than one model_validate per row."""
    return TypeAdapter(list[model])  # type: ignore[valid-type]


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
    context = psycopg.Cursor(cur.connection) if isinstance(cur, psycopg.Cursor) else psycopg.AsyncCursor(
        cur.connection)  # the connection's encoding and adapters, one loader more; it runs nothing
    context.adapters.register_loader("timestamptz", _Timestamptz)
    reader = Transformer(context)
    reader.set_pgresult(result)
    names = [column.name for column in cur.description]
    make_row: Callable[[Sequence[Any]], Any] = (
        (lambda values: values[0]) if cur.row_factory is scalar_row
        else (lambda values: dict(zip(names, values, strict=True))))
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
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(query, _params(params))
        row = _one(cur)
        return None if row is None else model.model_validate(row)
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


def fetch_all(conn: Connection[Any], query: LiteralString, params: Params, model: type[M], name: str) -> list[M]:
    """Every row of the result as models."""
    try:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(query, _params(params))
        return cast(list[M], _list_of(model).validate_python(_all(cur)))
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
        cur = conn.cursor(row_factory=scalar_row)
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
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, _params(params))
        row = await _one_async(cur)
        return None if row is None else model.model_validate(row)
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


async def fetch_all_async(conn: AsyncConnection[Any], query: LiteralString, params: Params, model: type[M],
                          name: str) -> list[M]:
    """fetch_all on an async connection."""
    try:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, _params(params))
        return cast(list[M], _list_of(model).validate_python(await _all_async(cur)))
    except psycopg.Error as exc:
        raise _failure(name, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise unreadable(name, exc) from exc


async def fetch_value_async(conn: AsyncConnection[Any], query: LiteralString, params: Params, name: str,
                            kind: Any = Any) -> Any | None:
    """fetch_value on an async connection."""
    try:
        cur = conn.cursor(row_factory=scalar_row)
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
