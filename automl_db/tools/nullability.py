"""Whether each result column of a query can be NULL, read from the query's parse tree (pglast,
PostgreSQL's own parser) and the catalog; used by automl_db.tools.codegen.

An answer per column: True (may be NULL), False (never NULL) or None (cannot tell: codegen then asks
for an override). The rules, most specific first:

* a column of a relation on the nullable side of a LEFT, RIGHT or FULL join may be NULL;
* otherwise a table or view column is NULL when the catalog allows it (attnotnull), a CTE's or a
  subquery's column as that query's column, a set operation's (UNION...) when any branch's may be;
* literals: NULL may be, any other never; parameters: the ones marked optional may be, the others
  never (their Python type refuses None); casts keep their operand's answer;
* under GROUP BY ROLLUP / CUBE / GROUPING SETS, the grouped expressions may be NULL (the rows of the
  sets that leave them out);
* coalesce, greatest and least are NULL only when all their arguments may be; CASE when any branch
  may be (a CASE without ELSE may be); IS [NOT] NULL, IS [NOT] DISTINCT FROM, EXISTS, ARRAY(...),
  now(), current_timestamp and the like never; a scalar subquery may be (it can find no row);
* count() and the ranking window functions (row_number, rank...) never; other aggregates and window
  functions may be (no row in the group, no row at the offset);
* concat_ws and format are NULL exactly when their first argument is;
* the JSON operators -> ->> #> #>> may be NULL (a missing key); other operators, and strict
  functions, are NULL when an operand may be; with operands that are never NULL, an operator is
  never NULL only when listed in NON_NULL_OPERATORS (comparison, arithmetic, ||, LIKE, regular
  expressions, containment...; `x = any(array)` cannot be told: the array may hold a NULL), a
  function only when listed in NEVER_NULL_FOR_NON_NULL (a function may return NULL from anything);
  anything else cannot be told.

Array elements (Analyzer.elements): array_agg(x) holds NULLs when x may be NULL, ARRAY[...] when one
of its elements may be; an array from anywhere else (a table column, a function) is typed as holding
none: PostgreSQL keeps no such constraint, so that is an assumption of the generated code.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import JoinType, SetOperation, SubLinkType

Null = bool | None
Columns = list[tuple[str, Null]]

#: Functions that never return NULL, whatever their arguments.
NEVER_NULL = frozenset({"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
                        "gen_random_uuid", "random", "concat", "pg_backend_pid",
                        "txid_current", "current_schema", "current_database", "version"})
#: Strict functions that return a value for every non-NULL argument.
NEVER_NULL_FOR_NON_NULL = frozenset({"cardinality", "length", "char_length", "octet_length", "lower", "upper",
                                     "abs", "round", "trunc", "floor", "ceil", "md5", "btrim", "trim",
                                     "date_trunc", "to_jsonb", "jsonb_typeof", "jsonb_build_object",
                                     "jsonb_build_array", "lpad", "rpad", "left", "right", "replace"})
#: Functions NULL exactly when their first argument is (concat_ws's separator, format's format string).
NULL_WITH_FIRST_ARGUMENT = frozenset({"concat_ws", "format"})
#: Window functions that number rows: never NULL.
RANKING = frozenset({"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile"})
#: Operators whose result may be NULL for non-NULL operands.
MAYBE_NULL_OPERATORS = frozenset({"->", "->>", "#>", "#>>"})
#: The built-in operators known to return a value for non-NULL operands: comparison, arithmetic,
#: concatenation, pattern matching (LIKE, ILIKE, SIMILAR TO, regular expressions), BETWEEN, IN, and
#: containment / overlap / key existence. Any other operator with non-NULL operands cannot be told
#: (jsonb @@, geometric #... return NULL for some inputs).
NON_NULL_OPERATORS = frozenset({
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "|/", "@",
    "~~", "!~~", "~~*", "!~~*", "~", "!~", "~*", "!~*",
    "BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC",
    "@>", "<@", "&&", "?", "?|", "?&",
})


@dataclass(frozen=True)
class Relation:
    """A FROM item in scope: its alias, its columns (None when unknown) and whether an outer join
    may fill it with NULLs."""

    alias: str
    columns: Columns | None
    outer: bool = False


@dataclass
class Analyzer:
    """relations: (schema, name) -> [(column, nullable)] of the catalog's tables and views;
    search_path: schemas an unqualified name is looked up in; functions: name -> (strict, kind),
    kind as pg_proc.prokind (f function, a aggregate, w window), strict None when overloads disagree;
    optional: the $n numbers of parameters that may be None."""

    relations: dict[tuple[str, str], Columns]
    search_path: Sequence[str]
    functions: dict[str, tuple[bool | None, str]]
    optional: set[int] = field(default_factory=set)
    #: the expressions of the ROLLUP / CUBE / GROUPING SETS of the SELECT being read: NULL in the
    #: rows of the sets that leave them out
    _grouped: list[ast.Node] = field(default_factory=list)

    def columns(self, stmt: ast.Node | None) -> Columns | None:
        """The result columns of a statement (name, nullable), or None when their list is unknown."""
        return self._outputs(stmt, {})

    def elements(self, stmt: ast.Node | None) -> list[Null] | None:
        """Whether the elements of each result column (an array) can be NULL, where the expression
        tells (array_agg(x): as x; ARRAY[...]: as its elements), else None; None for the whole list when
        the statement is not a plain SELECT (a set operation, a star...)."""
        if not isinstance(stmt, ast.SelectStmt) or stmt.op != SetOperation.SETOP_NONE or stmt.valuesLists:
            return None
        ctes: dict[str, Columns | None] = {}
        if stmt.withClause is not None:
            for cte in stmt.withClause.ctes or ():
                columns = None if stmt.withClause.recursive else self._outputs(cte.ctequery, ctes)
                ctes[cte.ctename] = _renamed(columns, cte.aliascolnames)
        scope = self._from(stmt.fromClause or (), ctes, outer=False)
        found: list[Null] = []
        for target in stmt.targetList or ():
            value = target.val
            if isinstance(value, ast.ColumnRef) and value.fields and isinstance(value.fields[-1], ast.A_Star):
                return None
            found.append(self._element(value, scope))
        return found

    def _element(self, node: ast.Node | None, scope: list[Relation]) -> Null:
        if isinstance(node, ast.TypeCast | ast.CollateClause):
            return self._element(node.arg, scope)
        if isinstance(node, ast.A_ArrayExpr):
            return _any_may(*(self._expr(e, scope) for e in node.elements or ()))
        if isinstance(node, ast.FuncCall) and _name((node.funcname or ("",))[-1]) == "array_agg" and node.args:
            return self._expr(node.args[0], scope)
        if isinstance(node, ast.CoalesceExpr):
            return _any_may(*(self._element(a, scope) for a in node.args or ()))
        return None

    # statements

    def _outputs(self, stmt: ast.Node | None, ctes: dict[str, Columns | None]) -> Columns | None:
        with_clause = getattr(stmt, "withClause", None)
        if with_clause is not None:
            ctes = dict(ctes)
            for cte in with_clause.ctes or ():
                found = None if with_clause.recursive else self._outputs(cte.ctequery, ctes)
                ctes[cte.ctename] = _renamed(found, cte.aliascolnames)
        if isinstance(stmt, ast.SelectStmt):
            return self._select(stmt, ctes)
        if isinstance(stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            if stmt.returningClause is None or stmt.relation is None:
                return [] if stmt.returningClause is None else None
            scope = [self._range_var(stmt.relation, ctes, outer=False)]
            extra = stmt.fromClause if isinstance(stmt, ast.UpdateStmt) else (
                stmt.usingClause if isinstance(stmt, ast.DeleteStmt) else None)
            scope += self._from(extra or (), ctes, outer=False)
            return self._targets(stmt.returningClause.exprs or (), scope)
        return None

    def _select(self, stmt: ast.SelectStmt, ctes: dict[str, Columns | None]) -> Columns | None:
        if stmt.op != SetOperation.SETOP_NONE:
            left, right = self._outputs(stmt.larg, ctes), self._outputs(stmt.rarg, ctes)
            if left is None or right is None or len(left) != len(right):
                return None
            return [(name, _any_may(a, b)) for (name, a), (_, b) in zip(left, right, strict=True)]
        if stmt.valuesLists:
            rows = [list(row) for row in stmt.valuesLists]
            return [(f"column{i + 1}", _any_may(*(self._expr(row[i], []) for row in rows)))
                    for i in range(len(rows[0]))]
        scope = self._from(stmt.fromClause or (), ctes, outer=False)
        outer_grouped, self._grouped = self._grouped, _grouping_sets(stmt.groupClause or ())
        try:
            return self._targets(stmt.targetList or (), scope)
        finally:
            self._grouped = outer_grouped

    def _targets(self, targets: Iterable[ast.ResTarget], scope: list[Relation]) -> Columns | None:
        out: Columns = []
        for target in targets:
            value = target.val
            if isinstance(value, ast.ColumnRef) and value.fields and isinstance(value.fields[-1], ast.A_Star):
                expanded = self._star(value, scope)
                if expanded is None:
                    return None
                grouped = {_name(g.fields[-1]) for g in self._grouped if isinstance(g, ast.ColumnRef) and g.fields}
                out += [(name, True if name in grouped else null) for name, null in expanded]
            else:
                out.append((target.name or _derived_name(value), self._expr(value, scope)))
        return out

    def _star(self, ref: ast.ColumnRef, scope: list[Relation]) -> Columns | None:
        fields = ref.fields or ()
        if len(fields) == 1:
            relations = scope
        else:
            relations = [r for r in scope if r.alias == _name(fields[-2])]
            if len(relations) != 1:
                return None
        out: Columns = []
        for relation in relations:
            if relation.columns is None:
                return None
            out += [(name, True if relation.outer else null) for name, null in relation.columns]
        return out

    # FROM

    def _from(self, items: Iterable[ast.Node], ctes: dict[str, Columns | None], outer: bool) -> list[Relation]:
        scope: list[Relation] = []
        for item in items:
            if isinstance(item, ast.RangeVar):
                scope.append(self._range_var(item, ctes, outer))
            elif isinstance(item, ast.RangeSubselect):
                found = self._outputs(item.subquery, ctes)
                scope.append(Relation(_alias(item.alias, "?subquery?"),
                                      _renamed(found, item.alias.colnames if item.alias else None), outer))
            elif isinstance(item, ast.RangeFunction):
                names = [_name(n) for n in item.alias.colnames or ()] if item.alias else []
                scope.append(Relation(_alias(item.alias, "?function?"), [(n, None) for n in names] or None, outer))
            elif isinstance(item, ast.JoinExpr):
                kind = item.jointype
                sides = [(item.larg, (JoinType.JOIN_RIGHT, JoinType.JOIN_FULL)),
                         (item.rarg, (JoinType.JOIN_LEFT, JoinType.JOIN_FULL))]
                for side, nullable_when in sides:
                    scope += self._from([side] if side is not None else [], ctes, outer or kind in nullable_when)
            else:
                scope.append(Relation("?unknown?", None, outer))
        return scope

    def _range_var(self, item: ast.RangeVar, ctes: dict[str, Columns | None], outer: bool) -> Relation:
        relname = item.relname or ""
        columns: Columns | None
        if item.schemaname is None and relname in ctes:
            columns = ctes[relname]
        else:
            schemas = [item.schemaname] if item.schemaname else self.search_path
            columns = next((self.relations[(s, relname)] for s in schemas if (s, relname) in self.relations), None)
        return Relation(_alias(item.alias, relname), _renamed(columns, item.alias.colnames if item.alias else None),
                        outer)

    # expressions

    def _column(self, ref: ast.ColumnRef, scope: list[Relation]) -> Null:
        names = [_name(f) for f in ref.fields or ()]
        if len(names) == 1:
            having = [r for r in scope if r.columns is not None and any(n == names[0] for n, _ in r.columns)]
            unknown = [r for r in scope if r.columns is None]
            if len(having) > 1 and not unknown:  # a column JOIN ... USING merged: told when its sources agree
                answers = {self._column(ast.ColumnRef(fields=(ast.String(r.alias), ast.String(names[0]))), [r])
                           for r in having}
                return answers.pop() if len(answers) == 1 else None
            if len(having) == 1 and not unknown:
                relation = having[0]
            elif not having and len(unknown) == 1:
                relation = unknown[0]
            else:
                return None
        elif len(names) == 2:
            matching = [r for r in scope if r.alias == names[0]]
            if len(matching) != 1:
                return None
            relation = matching[0]
        else:
            return None
        if relation.outer:
            return True
        if relation.columns is None:
            return None
        found = [null for name, null in relation.columns if name == names[-1]]
        return found[0] if len(found) == 1 else None

    def _expr(self, node: ast.Node | None, scope: list[Relation]) -> Null:
        if node is None:
            return True
        if self._grouped and _in_grouping_set(node, self._grouped):
            return True  # the rows of the sets that leave it out hold NULL
        if isinstance(node, ast.A_Const):
            return bool(node.isnull)
        if isinstance(node, ast.ParamRef):
            return node.number in self.optional
        if isinstance(node, ast.TypeCast | ast.CollateClause):
            return self._expr(node.arg, scope)
        if isinstance(node, ast.ColumnRef):
            return self._column(node, scope)
        if isinstance(node, ast.CoalesceExpr | ast.MinMaxExpr):
            return _all_may(*(self._expr(a, scope) for a in node.args or ()))
        if isinstance(node, ast.CaseExpr):
            results = [w.result for w in node.args or ()] + [node.defresult]
            return _any_may(*(self._expr(r, scope) for r in results))
        if isinstance(node, ast.NullTest | ast.BooleanTest | ast.SQLValueFunction | ast.A_ArrayExpr | ast.RowExpr
                      | ast.GroupingFunc):
            return False
        if isinstance(node, ast.SubLink):
            if node.subLinkType in (SubLinkType.EXISTS_SUBLINK, SubLinkType.ARRAY_SUBLINK):
                return False
            return True if node.subLinkType == SubLinkType.EXPR_SUBLINK else None
        if isinstance(node, ast.BoolExpr):
            return _strict(self._expr(a, scope) for a in node.args or ())
        if isinstance(node, ast.A_Expr):
            return self._operator(node, scope)
        if isinstance(node, ast.FuncCall):
            return self._call(node, scope)
        return None

    def _operator(self, node: ast.A_Expr, scope: list[Relation]) -> Null:
        kind = node.kind.name if node.kind is not None else ""
        if kind in ("AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT"):
            return False
        if kind == "AEXPR_NULLIF":
            return True
        operator = _name(node.name[-1]) if node.name else ""
        if operator in MAYBE_NULL_OPERATORS:
            return True
        right = node.rexpr if isinstance(node.rexpr, list | tuple) else [node.rexpr]
        operands = [node.lexpr, *right] if node.lexpr is not None else right
        found = _strict(self._expr(o, scope) for o in operands)
        if kind in ("AEXPR_OP_ANY", "AEXPR_OP_ALL") and found is False:
            return None  # x = any(array): NULL when the array holds a NULL and no element matches
        if found is False and operator not in NON_NULL_OPERATORS:
            return None  # an operator not known to return a value for every non-NULL operand
        return found

    def _call(self, node: ast.FuncCall, scope: list[Relation]) -> Null:
        name = _name((node.funcname or ("",))[-1])
        strict, kind = self.functions.get(name, (None, "f"))
        if name == "count" or (node.over is not None and name in RANKING):
            return False
        if node.over is not None or kind in ("a", "w"):
            return True
        if name in NEVER_NULL:
            return False
        if name in NULL_WITH_FIRST_ARGUMENT and node.args:
            return self._expr(node.args[0], scope)
        arguments = _strict(self._expr(a, scope) for a in node.args or ())
        if strict and arguments is True:
            return True
        if strict and arguments is False and name in NEVER_NULL_FOR_NON_NULL:
            return False
        return None


def _grouping_sets(clause: Iterable[ast.Node]) -> list[ast.Node]:
    """The expressions inside the ROLLUP / CUBE / GROUPING SETS of a GROUP BY clause."""
    found: list[ast.Node] = []
    stack = [item for item in clause if isinstance(item, ast.GroupingSet)]
    while stack:
        item = stack.pop()
        for member in item.content or ():
            if isinstance(member, ast.GroupingSet):
                stack.append(member)
            elif isinstance(member, ast.RowExpr):  # rollup((a, b))
                found += list(member.args or ())
            else:
                found.append(member)
    return found


def _in_grouping_set(node: ast.Node, grouped: list[ast.Node]) -> bool:
    """Whether node is one of the grouped expressions (a column: by its name, whatever its qualifier)."""
    if isinstance(node, ast.ColumnRef) and node.fields:
        return any(isinstance(g, ast.ColumnRef) and g.fields and _name(g.fields[-1]) == _name(node.fields[-1])
                   for g in grouped)
    return any(node == g for g in grouped)


def _name(node: ast.Node) -> str:
    return str(getattr(node, "sval", "*"))


def _renamed(columns: Columns | None, names: Sequence[ast.Node] | None) -> Columns | None:
    """Columns under the names an alias list gives them (the first len(names) of them)."""
    if columns is None or not names:
        return columns
    given = [_name(n) for n in names]
    return [(given[i] if i < len(given) else name, null) for i, (name, null) in enumerate(columns)]


def _alias(alias: ast.Alias | None, default: str) -> str:
    return alias.aliasname or default if alias else default


def _derived_name(node: ast.Node | None) -> str:
    """The name PostgreSQL gives an unaliased result column (enough of its rules for lookups)."""
    if isinstance(node, ast.ColumnRef) and node.fields:
        return _name(node.fields[-1])
    if isinstance(node, ast.FuncCall) and node.funcname:
        return _name(node.funcname[-1])
    if isinstance(node, ast.TypeCast):
        inner = _derived_name(node.arg)
        names = node.typeName.names if node.typeName else None
        return inner if inner != "?column?" or not names else _name(names[-1])
    return "?column?"


def _strict(values: Iterable[Null]) -> Null:
    """NULL when any operand is: True if one may be, False if none may be, else None."""
    found = list(values)
    if any(v is True for v in found):
        return True
    return False if all(v is False for v in found) else None


def _any_may(*values: Null) -> Null:
    return _strict(values)


def _all_may(*values: Null) -> Null:
    """coalesce(): NULL only when every argument is."""
    if any(v is False for v in values):
        return False
    return True if all(v is True for v in values) else None

