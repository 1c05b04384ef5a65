"""Parse lme4's mixed-model formula language into a fixed part and random-effects terms.

The fixed part is handed to formulaic as text; the random part ``(lhs | g)``, ``(lhs || g)``, nested
``g1/g2`` and interaction ``g1:g2`` grouping factors are expanded here exactly as lme4 (reformulas'
``findbars`` and ``expandDoubleVerts``) expands them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FormulaError

__all__ = ["ParsedFormula", "RandomTerm", "parse_formula", "split_top_level"]

_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(lhs | g1:g2:...)`` after expansion.

    Attributes
    ----------
    lhs : str
        The model formula (right-hand side only) of the varying coefficients, e.g. ``"1 + Days"``.
    factors : tuple of str
        Column names whose interaction is the grouping factor (one name for a plain factor).
    structure : str
        The covariance structure (:mod:`sparselmm.covstruct`): ``"us"`` (unstructured, the default and
        lme4's), ``"diag"``, ``"cs"``, ``"ar1"`` or ``"toep"``, written as glmmTMB writes them, ``diag(x | g)``.
    """

    lhs: str
    factors: tuple[str, ...]
    structure: str = "us"

    @property
    def group_name(self) -> str:
        """The grouping factor's name as lme4 prints it, e.g. ``"batch:cask"``."""
        return ":".join(self.factors)

    def __str__(self) -> str:
        if self.structure != "us":
            return f"{self.structure}({self.lhs} | {self.group_name})"
        return f"({self.lhs} | {self.group_name})"


@dataclass(frozen=True)
class ParsedFormula:
    """A mixed-model formula split into response, fixed part and random terms."""

    formula: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]

    @property
    def fixed_formula(self) -> str:
        """The fixed-effects formula with response, ready for formulaic."""
        return f"{self.response} ~ {self.fixed}"


def _point_at(text: str, pos: int, message: str) -> FormulaError:
    """A FormulaError whose message shows the formula with a caret under position ``pos``."""
    return FormulaError(f"{message}\n    {text}\n    {' ' * pos}^")


def _outside_quotes(text: str):
    """``(position, character)`` of every character outside quoted names and strings (the quotes too are
    left out); an unterminated quote is a :class:`FormulaError`."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        else:
            yield i, ch
    if quote:
        raise FormulaError(f"Unterminated quote {quote} in formula {text!r}.")


def _check_parentheses(text: str) -> None:
    depth = 0
    opened: list[int] = []
    for i, ch in _outside_quotes(text):
        if ch == "(":
            depth += 1
            opened.append(i)
        elif ch == ")":
            if depth == 0:
                raise _point_at(text, i, "Unbalanced parentheses: this ')' has no matching '('.")
            depth -= 1
            opened.pop()
    if opened:
        raise _point_at(text, opened[-1], "Unbalanced parentheses: this '(' is never closed.")


def _check_power(text: str) -> None:
    """Refuse ``^`` where Python evaluates it (inside a call such as ``I(x^2)``, or in the response).

    There ``^`` is Python's bitwise xor, not R's power: ``I(x^2)`` fails on a float column and silently
    gives ``x XOR 2`` on an integer one. Between terms, ``(a + b)^2`` keeps its formula meaning.
    """
    calls: list[tuple[bool, int]] = []  # for each open '(': is it a function call, where its name starts
    in_response = True
    for i, ch in _outside_quotes(text):
        if ch == "(":
            name = _NAME_BEFORE.search(text, 0, i)
            calls.append((name is not None, name.start() if name else i))
        elif ch == ")" and calls:
            calls.pop()
        elif ch == "~" and not calls:
            in_response = False
        elif ch == "^" and (in_response or any(is_call for is_call, _ in calls)):
            if in_response:
                fix = text[: text.index("~")].strip().replace("^", "**") if "~" in text else "y**2"
                what = f"In the response, which is evaluated as Python, '^' is bitwise xor: write {fix}"
            else:
                start = next(pos for is_call, pos in calls if is_call)
                end = _closing(text, start)
                fix = text[start:end].replace("^", "**")
                what = f"Inside {text[start:end]} '^' is Python's bitwise xor, not a power: write {fix}"
            raise _point_at(text, i, f"{what} (Python's power operator is '**').")


_NAME_BEFORE = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*\s*$")


def _closing(text: str, start: int) -> int:
    """End (exclusive) of the call that starts at ``start``: one past its matching ')'."""
    depth = 0
    for j in range(text.index("(", start), len(text)):
        depth += text[j] == "("
        depth -= text[j] == ")"
        if depth == 0:
            return j + 1
    return len(text)


def split_top_level(text: str, separators: str) -> list[tuple[str, str]]:
    """Split ``text`` at the characters in ``separators`` that are outside parentheses and quotes.

    Returns a list of ``(separator, piece)`` pairs; the first separator is ``""``.
    """
    pieces: list[tuple[str, str]] = []
    depth = 0
    quote = None
    start = 0
    sep = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in separators:
            pieces.append((sep, text[start:i]))
            sep = ch
            start = i + 1
    pieces.append((sep, text[start:]))
    return pieces


def _find_top_level_bar(inner: str) -> tuple[int, int] | None:
    """Position and width (1 for ``|``, 2 for ``||``) of the bar at depth 0 of ``inner``, if any."""
    depth = 0
    quote = None
    i = 0
    while i < len(inner):
        ch = inner[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return (i, 2) if inner[i + 1 : i + 2] == "|" else (i, 1)
        i += 1
    return None


def _is_wrapped(piece: str) -> bool:
    """True when ``piece`` is one parenthesised expression, ``( ... )``."""
    if not (piece.startswith("(") and piece.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(piece):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(piece) - 1:
            return False
    return True


def _strip_backticks(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == "`":
        return name[1:-1]
    return name


def _expand_grouping(group: str, term_text: str) -> list[tuple[str, ...]]:
    """``a/b/c`` → ``[(c, b, a), (b, a), (a,)]`` (lme4's order and naming); ``a:b`` → ``[(a, b)]``."""
    group = group.strip()
    while _is_wrapped(group):
        group = group[1:-1].strip()
    if not group:
        raise FormulaError(f"Random-effects term {term_text} has no grouping factor after the bar.")
    nests = [p for _, p in split_top_level(group, "/")]
    chain: list[str] = []
    expanded: list[tuple[str, ...]] = []
    for nest in nests:
        raw_parts = [p.strip() for _, p in split_top_level(nest, ":")]
        parts = [_strip_backticks(p) for p in raw_parts]
        for raw, part in zip(raw_parts, parts):
            if not part or (raw == part and not _NAME.fullmatch(part)):
                raise FormulaError(
                    f"Grouping factor {group!r} in {term_text} is not understood: use column names "
                    "combined with ':' (interaction) or '/' (nesting), e.g. (1 | school/class)."
                )
        chain = parts + chain
        expanded.append(tuple(chain))
    # lme4 lists the innermost grouping first and names it inner-first: a/b -> (b:a), (a).
    return expanded[::-1]


def split_lhs_terms(lhs: str) -> tuple[bool, list[str]]:
    """Split a random-term lhs into (has_intercept, non-intercept terms), as for ``||`` expansion."""
    has_intercept = True
    terms: list[str] = []
    for sign, piece in split_top_level(lhs, "+-"):
        piece = piece.strip()
        if not piece:
            continue
        if piece == "1":
            has_intercept = sign != "-"
        elif piece == "0":
            has_intercept = False
        elif sign == "-":
            raise FormulaError(f"Cannot expand '- {piece}' inside a '||' random-effects term.")
        else:
            terms.append(piece)
    return has_intercept, terms


def _parse_random_term(inner: str, text: str, structure: str = "us") -> list[RandomTerm]:
    bar = _find_top_level_bar(inner)
    assert bar is not None
    pos, width = bar
    lhs = inner[:pos].strip()
    group = inner[pos + width :].strip()
    if not lhs:
        raise FormulaError(
            f"Random-effects term ({text}) has nothing before the bar: write e.g. (1 | g) for a random intercept."
        )
    if _find_top_level_bar(group) is not None:
        raise FormulaError(f"Random-effects term ({text}) has more than one bar.")
    groupings = _expand_grouping(group, f"({text})")
    if width == 1:
        return [RandomTerm(lhs, g, structure) for g in groupings]
    if structure != "us":
        raise FormulaError(
            f"'||' inside {text}: write {structure}({lhs} | {group}) "
            "(the structure sets the covariance; diag() makes the effects independent)."
        )
    has_intercept, terms = split_lhs_terms(lhs)
    lhs_pieces = (["1"] if has_intercept else []) + [f"0 + {t}" for t in terms]
    out = [RandomTerm(piece, g) for piece in lhs_pieces for g in groupings]
    if not out:
        raise FormulaError(f"Random-effects term ({text}) has no terms on the left of '||'.")
    return out


_CALL = re.compile(r"([A-Za-z_.][A-Za-z0-9_.]*)\s*\(")
# glmmTMB's covariance structures this package fits (sparselmm.covstruct holds their maps θ → factor)
STRUCTURES = ("us", "diag", "cs", "ar1", "toep")
# glmmTMB's other structures: named in the error so that a user of them learns they are not here yet
_GLMMTMB_ONLY = ("ou", "exp", "gau", "mat", "rr", "homdiag", "homcs", "hetar1", "propto")


def structured_term(piece: str) -> tuple[str, str] | None:
    """``(name, inner)`` when ``piece`` is one call ``name(...)`` whose argument holds a top-level bar
    (a covariance-structure term such as ``diag(x | g)``), or a call of a structure's name at all;
    otherwise None."""
    m = _CALL.match(piece)
    if m is None or not _is_wrapped(piece[m.end() - 1 :]):
        return None
    inner = piece[m.end() : -1].strip()
    while _is_wrapped(inner):
        inner = inner[1:-1].strip()
    if _find_top_level_bar(inner) is None and m.group(1) not in STRUCTURES:
        return None
    return m.group(1), inner


# a bare (or backticked) column name, or C(...) of one: what can be the single time factor of ar1
_FACTOR_TERM = re.compile(r"`[^`]+`|[A-Za-z_.][A-Za-z0-9_.]*|C\(.*\)")


def check_structured_lhs(name: str, lhs: str, term: str) -> None:
    """Refuse what the formula alone shows is wrong for structure ``name``: ``ar1`` needs ``0 + f``, a single
    time factor and no intercept (glmmTMB 1.1 stops on anything but a single factor and warns on an intercept).

    Raises
    ------
    sparselmm.FormulaError
        An ``ar1`` term with an intercept or with other than one variable.
    """
    if name != "ar1":
        return
    has_intercept, pieces = split_lhs_terms(lhs)
    if has_intercept:
        example = term.replace(lhs, f"0 + {pieces[0]}", 1) if len(pieces) == 1 else "ar1(0 + f | g)"
        raise FormulaError(
            f"The AR(1) term {term} has an intercept: ar1 is over the levels of one time factor, so write "
            f"{example} (an intercept would add a common effect to every time, which AR(1) does not model)."
        )
    if len(pieces) != 1 or not _FACTOR_TERM.fullmatch(pieces[0]):
        raise FormulaError(
            f"The AR(1) term {term} must have a single time factor and nothing else, ar1(0 + f | g) (f a factor "
            "whose levels are the unit-spaced times, in order); for several variables use toep(), cs() or us()."
        )


def _structured_terms(name: str, inner: str, piece: str, text: str) -> list[RandomTerm]:
    """The random terms of a covariance-structure term ``name(inner)`` (``piece``) of formula ``text``."""
    at = text.index(piece) if piece in text else 0
    if name not in STRUCTURES:
        extra = " (a glmmTMB structure not available here yet)" if name in _GLMMTMB_ONLY else ""
        raise _point_at(
            text,
            at,
            f"Unknown covariance structure {name!r}{extra} in {piece}: use one of {STRUCTURES}, "
            "e.g. diag(1 + x | g), or a plain term (1 + x | g).",
        )
    if _find_top_level_bar(inner) is None:
        raise _point_at(
            text, at, f"{name}() must wrap a random-effects term with a bar, e.g. {name}(1 + x | g), not {piece}."
        )
    terms = _parse_random_term(inner, f"{name}({inner})", name)
    check_structured_lhs(name, terms[0].lhs, piece)
    return terms


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed-effects part and expanded random-effects terms.

    Parameters
    ----------
    formula : str
        For example ``"Reaction ~ Days + (Days | Subject)"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    FormulaError
        If the formula is not a string, is empty, is unbalanced, has no response or no random term.
    """
    if not isinstance(formula, str):
        raise FormulaError(f"The formula must be a string such as 'y ~ x + (1 | g)', not {type(formula).__name__}.")
    text = " ".join(formula.split())
    if not text:
        raise FormulaError("The formula is empty: write e.g. 'y ~ x + (1 | g)'.")
    _check_parentheses(text)
    _check_power(text)
    sides = split_top_level(text, "~")
    if len(sides) != 2:
        if len(sides) == 1:
            raise FormulaError(f"The formula {text!r} has no '~': write 'response ~ predictors'.")
        raise _point_at(text, text.index("~", text.index("~") + 1), "The formula has more than one '~'.")
    response, rhs = sides[0][1].strip(), sides[1][1].strip()
    if not response:
        raise FormulaError(f"The formula {text!r} has no response on the left of '~'.")
    if not rhs:
        raise FormulaError(f"The formula {text!r} has nothing on the right of '~'.")
    fixed: list[str] = []
    random: list[RandomTerm] = []
    for sign, piece in split_top_level(rhs, "+-"):
        piece = piece.strip()
        if not piece:
            if sign == "-" or not fixed and not random:
                continue  # leading sign, e.g. "y ~ -1 + ..."
            raise FormulaError(f"Empty term in {text!r}: check for a doubled '+'.")
        if _is_wrapped(piece) and _find_top_level_bar(piece[1:-1]) is not None:
            if sign == "-":
                raise FormulaError(f"A random-effects term cannot be subtracted: '- {piece}' in {text!r}.")
            random.extend(_parse_random_term(piece[1:-1].strip(), piece[1:-1].strip()))
        elif (call := structured_term(piece)) is not None:
            if sign == "-":
                raise FormulaError(f"A random-effects term cannot be subtracted: '- {piece}' in {text!r}.")
            random.extend(_structured_terms(*call, piece, text))
        elif "|" in piece:
            raise _point_at(
                text,
                text.index(piece) if piece in text else 0,
                "A '|' must stand inside a parenthesised random-effects term such as (1 | g).",
            )
        else:
            fixed.append(f"{'- ' if sign == '-' else '+ ' if fixed else ''}{piece}")
    if not random:
        raise FormulaError(
            f"No random-effects terms in {text!r}: add one such as (1 | group). For a model without "
            "random effects use a fixed-effects regression instead (e.g. statsmodels' ols or glm)."
        )
    fixed_text = " ".join(fixed).strip()
    if not fixed_text or fixed_text.startswith("-"):
        fixed_text = f"1 {fixed_text}".strip()
    return ParsedFormula(text, response, fixed_text, tuple(random))


# ---- R's update(): a new formula from an old one and a template with '.' -------------------------------
_DOT = re.compile(r"(?<![A-Za-z0-9_.])\.(?![A-Za-z0-9_.])")


def _fixed_terms(piece: str) -> list[str]:
    """The terms a fixed-effects expression stands for (``a*b`` → ``a``, ``b``, ``a:b``), by formulaic."""
    from formulaic import Formula

    try:
        terms = Formula(piece)
    except Exception as err:  # formulaic's own parse errors
        raise FormulaError(f"Could not read the term {piece!r} of the updated formula: {err}") from None
    return [str(t) for t in terms if str(t) != "1"]


def _same_term(a: str, b: str, random: bool) -> bool:
    """Random terms are equal up to spaces; fixed terms up to the order of an interaction's factors."""
    if random:
        return re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b)
    return sorted(x.strip() for x in a.split(":")) == sorted(x.strip() for x in b.split(":"))


def update_formula(old: str, new: str) -> str:
    """R's ``update.formula``: ``new`` with ``.`` standing for the corresponding side of ``old``.

    ``"~ . - x"`` drops the fixed-effect term ``x`` (the terms of ``a*b`` are ``a``, ``b`` and ``a:b``, so
    ``"~ . - a:b"`` keeps the main effects); ``"~ . + (1 | g)"`` adds a random-effects term and
    ``"~ . - (1 | g)"`` removes one as written; ``"log(.) ~ ."`` changes the response; ``"~ . - 1"`` drops
    the intercept. A side of ``new`` that is missing or is ``.`` keeps ``old``'s.

    Raises
    ------
    sparselmm.FormulaError
        ``new`` has no ``~``, or removes a term the model does not have.
    """
    if not isinstance(new, str) or "~" not in new:
        raise FormulaError(f"The update {new!r} is not a formula: write e.g. '~ . - x' or '. ~ . + (1 | g)'.")
    old_parsed = parse_formula(old)
    old_lhs, old_rhs = (s.strip() for s in old_parsed.formula.split("~", 1))
    new_lhs, new_rhs = (s.strip() for s in new.split("~", 1))
    lhs = _DOT.sub(old_lhs, new_lhs) if new_lhs else old_lhs
    rhs_pieces: list[tuple[str, str]] = []
    for sign, piece in split_top_level(new_rhs, "+-"):
        piece = piece.strip()
        if piece == ".":
            if sign == "-":
                raise FormulaError(f"'- .' in the update {new!r} would remove every term: write the new formula.")
            rhs_pieces += [(s, p.strip()) for s, p in split_top_level(old_rhs, "+-")]
        elif piece:
            rhs_pieces.append((sign, piece))
    intercept = True
    fixed: list[str] = []
    random: list[str] = []
    for sign, piece in rhs_pieces:
        if not piece:
            continue
        if piece in ("0", "1"):
            intercept = (piece == "1") != (sign == "-")
            continue
        is_random = _is_wrapped(piece) and _find_top_level_bar(piece[1:-1]) is not None
        is_random = is_random or structured_term(piece) is not None
        bucket = random if is_random else fixed
        items = [piece] if is_random else _fixed_terms(piece)
        for item in items:
            present = [x for x in bucket if _same_term(x, item, is_random)]
            if sign == "-":
                if not present:
                    kind = "random-effects" if is_random else "fixed-effect"
                    raise FormulaError(
                        f"The update removes the {kind} term {item!r}, which the model does not have "
                        f"(its formula: {old_parsed.formula})."
                    )
                bucket.remove(present[0])
            elif not present:
                bucket.append(item)
    parts = ([] if intercept else ["0"]) + fixed + random
    return f"{lhs} ~ {' + '.join(parts) if parts else '1'}"
