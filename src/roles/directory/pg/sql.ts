import type { Param, Row, Tx } from "../../../metadata/tx.js";

/** `n` placeholders, comma-separated. */
export const marks = (n: number) => Array.from({ length: n }, () => "?").join(",");

/** A list cut into parts that keep a statement's parameters well below PostgreSQL's 65,535. */
export function slices<T>(list: T[], size = 500): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

/**
 * Every row of `sql` for the values of `list`: `sql` holds `IN (*)`, which becomes a placeholder per value,
 * run once per slice of the list; `before` binds the placeholders ahead of it.
 */
export async function allIn(tx: Tx, sql: string, list: string[], before: Param[] = []): Promise<Row[]> {
  const rows: Row[] = [];
  for (const part of slices([...new Set(list)])) rows.push(...(await tx.all(sql.replace("IN (*)", `IN (${marks(part.length)})`), [...before, ...part])));
  return rows;
}
