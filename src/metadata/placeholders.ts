/**
 * Rewrites `?` placeholders as PostgreSQL's `$1`, `$2`, ... in order. A `?` inside a string literal
 * ('...', E'...'), a dollar-quoted string ($$...$$, $tag$...$tag$), a quoted name ("...") or a
 * comment (-- and nested /* *\/) is text, not a placeholder, and is left as it is.
 */
export function numberPlaceholders(sql: string): string {
  let cached = rewritten.get(sql);
  if (cached === undefined) {
    cached = rewrite(sql);
    // Statements are a fixed set in practice; the bound only keeps generated SQL from growing the map for ever.
    if (rewritten.size >= 2000) rewritten.clear();
    rewritten.set(sql, cached);
  }
  return cached;
}

const rewritten = new Map<string, string>();

function rewrite(sql: string): string {
  let out = "";
  let n = 0;
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    const end = skipQuoted(sql, i);
    if (end > i) {
      out += sql.slice(i, end);
      i = end;
    } else if (c === "?") {
      out += `$${++n}`;
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Where the literal, quoted name or comment starting at `i` ends; `i` itself when none starts there. */
function skipQuoted(sql: string, i: number): number {
  const c = sql[i];
  const next = sql[i + 1];
  if (c === "'") {
    // E'...' strings allow backslash escapes; standard strings only doubled quotes.
    const escapes = i > 0 && /[eE]/.test(sql[i - 1]!) && (i < 2 || !/[\w$]/.test(sql[i - 2]!));
    return closeQuote(sql, i + 1, "'", escapes);
  }
  if (c === '"') return closeQuote(sql, i + 1, '"', false);
  if (c === "-" && next === "-") {
    const nl = sql.indexOf("\n", i);
    return nl < 0 ? sql.length : nl + 1;
  }
  if (c === "/" && next === "*") {
    let depth = 0;
    for (let j = i; j < sql.length; j++) {
      const two = sql.slice(j, j + 2);
      if (two === "/*") {
        depth++;
        j++;
      } else if (two === "*/") {
        depth--;
        j++;
        if (depth === 0) return j + 1;
      }
    }
    return sql.length;
  }
  if (c === "$" && (i === 0 || !/[\w$]/.test(sql[i - 1]!))) {
    const tag = /^\$([A-Za-z_][\w]*)?\$/.exec(sql.slice(i));
    if (tag) {
      const close = sql.indexOf(tag[0], i + tag[0].length);
      return close < 0 ? sql.length : close + tag[0].length;
    }
  }
  return i;
}

function closeQuote(sql: string, from: number, quote: string, backslash: boolean): number {
  for (let j = from; j < sql.length; j++) {
    if (backslash && sql[j] === "\\") j++;
    else if (sql[j] === quote) {
      if (sql[j + 1] === quote) j++;
      else return j + 1;
    }
  }
  return sql.length;
}
