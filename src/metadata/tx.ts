/**
 * What a metadata back end offers the code that runs inside one of its transactions. The shapes
 * follow the directory's sql.js helpers (`src/roles/directory/sql.ts`): `?` placeholders and rows
 * as arrays, so that the same statements can serve both back ends.
 */

/** A value bound to a `?` placeholder. */
export type Param = string | number | Uint8Array | null;

/**
 * A column's value: integers (also PostgreSQL's bigint, refused beyond 2^53), floating point numbers
 * and times (timestamps, as milliseconds since 1970) are numbers; booleans are 1 or 0, as SQLite
 * gives them; text, numeric and json are strings; bytea is a Uint8Array (a Buffer). Other types
 * come back as the client library reads them.
 */
export type Value = string | number | Uint8Array | null;

/** One row: its values in the order of the statement's columns. */
export type Row = Value[];

/**
 * The statements of one transaction. Each waits for its answer; run them one after another
 * (awaiting each), never several at once. `sql` uses `?` for parameters; a `?` inside a string
 * literal, a quoted name or a comment is left alone. PostgreSQL operators spelt with `?` (jsonb)
 * cannot be used.
 */
export interface Tx {
  /** Every row of a query. */
  all(sql: string, params?: Param[]): Promise<Row[]>;
  /** The first row of a query, or undefined when there is none. */
  get(sql: string, params?: Param[]): Promise<Row | undefined>;
  /** Runs a statement and answers how many rows it inserted, changed or deleted. */
  run(sql: string, params?: Param[]): Promise<number>;
}
